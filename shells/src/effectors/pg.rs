//! PostgreSQL's programs and files: initdb, pg_ctl, pg_basebackup, pg_controldata, standby
//! configuration, and the markers kept next to the data dir.
//!
//! Markers live beside the data dir (`<data_dir>.pgha-fenced`, `<data_dir>.pgha-held`,
//! `<data_dir>.pgha-sysid`), not in it, so a re-clone that replaces the data dir keeps them;
//! they are created 0600.
//!
//! pgha never discards data it cannot prove is its own: a data dir is "empty" only when absent
//! or without any entry; a re-clone replaces a cluster only when its system identifier is the
//! source's or the one pgha recorded when it created the data (initdb, clone); the replaced
//! data is set aside (`[postgres] keep_discarded`), not deleted. And it signals or adopts only
//! a postmaster proven to serve this data dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgha_core::{DataDir, Failure, LocalFacts, Lsn, PeerId, StartAs, StopMode};

use super::probe::{self, SqlFailure, Target};
use crate::config::{FileConfig, sibling};
use crate::error::{DaemonError, DataDirProblem};

pub fn fence_marker(c: &FileConfig) -> PathBuf {
    sibling(&c.data_dir, "pgha-fenced")
}

pub fn held_marker(c: &FileConfig) -> PathBuf {
    sibling(&c.data_dir, "pgha-held")
}

fn clone_dir(c: &FileConfig) -> PathBuf {
    sibling(&c.data_dir, "pgha-clone")
}

fn old_dir(c: &FileConfig) -> PathBuf {
    sibling(&c.data_dir, "pgha-old")
}

/// `<data_dir>.pgha-sysid`: the system identifier of the cluster pgha created in the data dir
/// (initdb, clone), its proof that the data there is its own.
pub fn sysid_marker(c: &FileConfig) -> PathBuf {
    sibling(&c.data_dir, "pgha-sysid")
}

const DISCARDED: &str = "pgha-discarded-";

/// `<data_dir>.pgha-discarded-r<run>-c<command>`: where the basebackup command `command` of
/// the journal's run `run` set aside the data it replaced (`pgha explain` names it so too).
pub fn discarded_dir(data_dir: &Path, run: u64, command: u64) -> PathBuf {
    sibling(data_dir, &format!("{DISCARDED}r{run}-c{command}"))
}

fn bin(c: &FileConfig, program: &str) -> Command {
    Command::new(c.bin_dir.join(program))
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

pub fn local_target(c: &FileConfig) -> Target {
    Target {
        host: c.node.host.clone(),
        port: c.node.port,
        user: c.pg.user.clone(),
        password: c.pg.password.clone(),
        dbname: c.pg.dbname.clone(),
        application_name: format!("pgha-{}", c.node.name),
    }
}

pub fn peer_target(c: &FileConfig, peer: PeerId) -> Option<Target> {
    let p = c.peer(peer)?;
    Some(Target {
        host: p.host.clone(),
        port: p.port,
        user: c.pg.user.clone(),
        password: c.pg.password.clone(),
        dbname: c.pg.dbname.clone(),
        application_name: format!("pgha-{}", c.node.name),
    })
}

/// Whether the data dir holds a cluster.
pub fn has_cluster(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file()
}

/// Whether a directory is empty: absent, or a directory without a single entry.
pub fn is_empty_dir(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// A few entry names of a directory, for an error message.
fn some_entries(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .take(4)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.join(", ")
}

/// Checks, before anything starts, that the daemon can use the data dir: it is empty or
/// holds a PostgreSQL cluster (never foreign files, which initdb or a clone would destroy),
/// and it and its directory (where the markers, the copy and the set-aside data go) are
/// writable by the daemon's user. The error names `node.data_dir` and says what to do.
pub fn preflight(c: &FileConfig) -> Result<(), DaemonError> {
    use nix::unistd::{AccessFlags, access};
    let d = &c.data_dir;
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {}", nix::unistd::geteuid()));
    let writable = |p: &Path| access(p, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
    let refuse = |problem| {
        Err(DaemonError::DataDir {
            path: d.clone(),
            problem,
        })
    };
    if d.exists() {
        if !has_cluster(d) && !is_empty_dir(d) {
            return refuse(DataDirProblem::Foreign {
                entries: some_entries(d),
            });
        }
        if !writable(d) {
            return refuse(DataDirProblem::NotWritable { user });
        }
    }
    if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty())
        && !writable(parent)
    {
        return refuse(DataDirProblem::ParentNotWritable {
            parent: parent.to_path_buf(),
            user,
        });
    }
    Ok(())
}

/// `(state, ppid)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut it = rest.split_whitespace();
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

fn same_path(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Whether `pid` is alive and not a zombie.
fn is_alive(pid: i32) -> bool {
    pid > 0
        && matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Ok(()) | Err(nix::errno::Errno::EPERM)
        )
        && proc_stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

/// Whether `pid` is a live postgres process of any cluster (for the socket's lock file,
/// which another cluster on the same port may hold: never removed while one lives).
fn is_live_postgres(pid: i32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    is_alive(pid) && (cmdline.contains("postgres") || cmdline.contains("postmaster"))
}

/// Whether `pid` is the postmaster serving `dir`: alive, not a zombie, running a `postgres`
/// program, with `dir` as its working directory (the postmaster chdirs into its data dir),
/// and not a child of a process working there too (a backend). A PID reused by any other
/// process, even one of the postgres user that calls itself "postgres", is not.
pub fn is_our_postmaster(dir: &Path, pid: i32) -> bool {
    if !is_alive(pid) {
        return false;
    }
    let in_dir =
        |p: i32| std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|cwd| same_path(&cwd, dir));
    let runs_postgres = |p: i32| {
        std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|exe| {
            exe.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .is_some_and(|n| n.starts_with("postgres") || n.starts_with("postmaster"))
        })
    };
    if !in_dir(pid) || !runs_postgres(pid) {
        return false;
    }
    match proc_stat(pid) {
        Some((_, ppid)) => !(ppid > 1 && in_dir(ppid) && runs_postgres(ppid)),
        None => false,
    }
}

fn pid_in(file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// The PID in `postmaster.pid` when that process is the postmaster of this data dir
/// ([`is_our_postmaster`]); a stale file whose PID was reused by another process is not.
pub fn running_postmaster(dir: &Path) -> Option<i32> {
    let pid = pid_in(&dir.join("postmaster.pid"))?;
    is_our_postmaster(dir, pid).then_some(pid)
}

/// Removes lock files left by a postmaster that is gone. PostgreSQL itself ignores a lock
/// whose PID is dead, but not one whose PID is an unreaped zombie (a SIGKILLed postmaster
/// whose parent has not reaped it yet) or was reused by another live process, and then
/// refuses to start.
fn clear_stale_locks(c: &FileConfig) {
    let pidfile = c.data_dir.join("postmaster.pid");
    if let Some(pid) = pid_in(&pidfile)
        && !is_our_postmaster(&c.data_dir, pid)
    {
        log::info!(
            "removing stale {} (pid {pid} is not a postmaster of this data dir)",
            pidfile.display()
        );
        let _ = std::fs::remove_file(&pidfile);
    }
    let dir =
        c.pg.socket_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/run/postgresql"));
    let socket = dir.join(format!(".s.PGSQL.{}", c.node.port));
    let lock = dir.join(format!(".s.PGSQL.{}.lock", c.node.port));
    if let Some(pid) = pid_in(&lock)
        && !is_live_postgres(pid)
    {
        log::info!("removing stale {} (pid {pid} is gone)", lock.display());
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&lock);
    }
}

/// What `pg_controldata` says of the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    pub timeline: u32,
    pub lsn: Lsn,
    /// "in production", "shut down", "shutting down" or "in crash recovery".
    pub primary_state: bool,
    /// "Database system identifier".
    pub sysid: Option<u64>,
}

pub fn parse_controldata(text: &str) -> Option<Control> {
    let mut timeline = None;
    let mut lsn = Lsn(0);
    let mut state = None;
    let mut sysid = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "Latest checkpoint's TimeLineID" => timeline = v.parse().ok(),
            "Latest checkpoint location" => {
                if let Some((hi, lo)) = v.split_once('/')
                    && let (Ok(hi), Ok(lo)) =
                        (u64::from_str_radix(hi, 16), u64::from_str_radix(lo, 16))
                {
                    lsn = Lsn((hi << 32) | lo);
                }
            }
            "Database cluster state" => state = Some(v.to_string()),
            "Database system identifier" => sysid = v.parse().ok(),
            _ => {}
        }
    }
    let state = state?;
    Some(Control {
        timeline: timeline?,
        lsn,
        primary_state: matches!(
            state.as_str(),
            "in production" | "shut down" | "shutting down" | "in crash recovery"
        ),
        sysid,
    })
}

fn controldata(c: &FileConfig) -> Option<Control> {
    controldata_of(c, &c.data_dir)
}

fn controldata_of(c: &FileConfig, dir: &Path) -> Option<Control> {
    let mut cmd = bin(c, "pg_controldata");
    cmd.arg("-D").arg(dir).env("LC_ALL", "C");
    let out = super::process::run("pg_controldata", cmd, ms(c.timeouts.command_ms)).ok()?;
    parse_controldata(&out.stdout)
}

fn write_marker(path: &Path, what: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // 0600: markers say what pgha did to this node; nobody else reads or writes them.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(format!("{what}\n").as_bytes())?;
    drop(f);
    // The marker must survive a crash: sync the file and its directory.
    std::fs::File::open(path)?.sync_all()?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn mark_held(c: &FileConfig) {
    let m = held_marker(c);
    if !m.exists()
        && let Err(e) = write_marker(
            &m,
            "this node has held PostgreSQL data: it never runs initdb again",
        )
    {
        log::warn!("cannot write {}: {e}", m.display());
    }
}

/// Records the system identifier of the cluster now in the data dir as pgha's own.
fn record_sysid(c: &FileConfig, sysid: Option<u64>) {
    let Some(id) = sysid.or_else(|| controldata(c).and_then(|x| x.sysid)) else {
        log::warn!(
            "cannot read the system identifier of {}",
            c.data_dir.display()
        );
        return;
    };
    let m = sysid_marker(c);
    if let Err(e) = write_marker(&m, &id.to_string()) {
        log::warn!("cannot write {}: {e}", m.display());
    }
}

fn recorded_sysid(c: &FileConfig) -> Option<u64> {
    std::fs::read_to_string(sysid_marker(c))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Gathers the facts the core starts from. Also finishes a data-dir swap that a crash
/// interrupted (the old data dir is put back when the new one never arrived).
pub fn local_facts(c: &FileConfig) -> LocalFacts {
    let old = old_dir(c);
    if !has_cluster(&c.data_dir) && has_cluster(&old) {
        log::warn!(
            "{} is missing but {} holds a cluster (an interrupted re-clone): putting it back",
            c.data_dir.display(),
            old.display()
        );
        let _ = std::fs::remove_dir(&c.data_dir);
        if let Err(e) = std::fs::rename(&old, &c.data_dir) {
            log::error!("cannot restore {}: {e}", old.display());
        }
    }
    // Markers written by older versions were 0644: make them private.
    for m in [fence_marker(c), held_marker(c), sysid_marker(c)] {
        use std::os::unix::fs::PermissionsExt;
        if m.exists() {
            let _ = std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o600));
        }
    }
    let fenced = fence_marker(c).exists();
    let postgres_running = running_postmaster(&c.data_dir).is_some();
    let data_dir = if has_cluster(&c.data_dir) {
        mark_held(c);
        let standby = c.data_dir.join("standby.signal").exists();
        match controldata(c) {
            Some(ctl) => DataDir::Present {
                timeline: ctl.timeline,
                lsn: ctl.lsn,
                was_master: ctl.primary_state && !standby,
            },
            None => {
                log::warn!(
                    "pg_controldata could not read {}: treating the data as unable to follow",
                    c.data_dir.display()
                );
                DataDir::Present {
                    timeline: 0,
                    lsn: Lsn(0),
                    was_master: true,
                }
            }
        }
    } else {
        DataDir::Empty {
            held_data: held_marker(c).exists(),
        }
    };
    LocalFacts {
        data_dir,
        postgres_running,
        fenced,
    }
}

pub fn initdb(c: &FileConfig) -> Result<(), Failure> {
    if !has_cluster(&c.data_dir) && !is_empty_dir(&c.data_dir) {
        log::error!(
            "initdb refused: {} holds files that are not a PostgreSQL cluster ({})",
            c.data_dir.display(),
            some_entries(&c.data_dir)
        );
        return Err(Failure::ForeignFiles);
    }
    if has_cluster(&c.data_dir) {
        log::error!(
            "initdb refused: {} already holds a cluster",
            c.data_dir.display()
        );
        return Err(Failure::Refused);
    }
    if held_marker(c).exists() {
        log::error!(
            "initdb refused: {} says this node held data before",
            held_marker(c).display()
        );
        return Err(Failure::Refused);
    }
    let mut cmd = bin(c, "initdb");
    cmd.arg("-D")
        .arg(&c.data_dir)
        .arg("-U")
        .arg(&c.pg.user)
        .args(&c.pg.initdb_args);
    super::process::run("initdb", cmd, ms(c.timeouts.initdb_ms))?;
    mark_held(c);
    record_sysid(c, None);
    Ok(())
}

fn quote_conf(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

fn conninfo_value(v: &str) -> String {
    if v.is_empty() || v.contains([' ', '\'', '\\']) {
        format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
    } else {
        v.to_string()
    }
}

fn primary_conninfo(c: &FileConfig, upstream: PeerId) -> Result<String, Failure> {
    let p = c.peer(upstream).ok_or(Failure::Refused)?;
    let mut s = format!(
        "host={} port={} user={} application_name={}",
        conninfo_value(&p.host),
        p.port,
        conninfo_value(&c.pg.user),
        conninfo_value(&c.node.name)
    );
    if let Some(pw) = &c.pg.password {
        s.push_str(&format!(" password={}", conninfo_value(pw)));
    }
    Ok(s)
}

/// Writes the standby configuration into `dir`: `standby.signal`, and `primary_conninfo`
/// and `recovery_target_timeline = 'latest'` in `postgresql.auto.conf`.
fn write_standby_config(c: &FileConfig, dir: &Path, upstream: PeerId) -> Result<(), Failure> {
    let auto = dir.join("postgresql.auto.conf");
    let existing = std::fs::read_to_string(&auto).unwrap_or_default();
    let mut text: String = existing
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("primary_conninfo") && !t.starts_with("recovery_target_timeline")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "primary_conninfo = {}\nrecovery_target_timeline = 'latest'\n",
        quote_conf(&primary_conninfo(c, upstream)?)
    ));
    let tmp = dir.join("postgresql.auto.conf.pgha-tmp");
    let io = |e: std::io::Error| {
        log::error!("standby configuration in {}: {e}", dir.display());
        Failure::Io
    };
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &auto).map_err(io)?;
    std::fs::write(dir.join("standby.signal"), "").map_err(io)?;
    Ok(())
}

pub fn start(c: &FileConfig, target: StartAs) -> Result<(), Failure> {
    if !has_cluster(&c.data_dir) {
        log::error!("start refused: {} holds no cluster", c.data_dir.display());
        return Err(Failure::Refused);
    }
    match target {
        StartAs::Master => {
            let signal = c.data_dir.join("standby.signal");
            if signal.exists() {
                std::fs::remove_file(&signal).map_err(|e| {
                    log::error!("cannot remove {}: {e}", signal.display());
                    Failure::Io
                })?;
            }
        }
        StartAs::Replica { upstream } => write_standby_config(c, &c.data_dir, upstream)?,
    }
    if running_postmaster(&c.data_dir).is_some() {
        log::info!("postgres already runs on {}", c.data_dir.display());
        return Ok(());
    }
    clear_stale_locks(c);
    let mut opts = format!(
        "-p {} -c listen_addresses={} -c cluster_name={}",
        c.node.port,
        shell_quote(c.pg.listen_addresses.as_deref().unwrap_or(&c.node.host)),
        shell_quote(&c.node.name)
    );
    if let Some(dir) = &c.pg.socket_dir {
        opts.push_str(&format!(
            " -c unix_socket_directories={}",
            shell_quote(&dir.display().to_string())
        ));
    }
    let mut cmd = pg_ctl(c, "start", c.timeouts.start_ms);
    cmd.arg("-l").arg(&c.pg.log_file).arg("-o").arg(opts);
    let r = super::process::run("pg_ctl start", cmd, ms(c.timeouts.start_ms + 2_000)).map(|_| ());
    if r.is_err() {
        log_tail(&c.pg.log_file, 8);
    }
    r
}

/// Logs the last lines of postgres's log file (why a start failed).
fn log_tail(path: &Path, lines: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    for l in &all[all.len().saturating_sub(lines)..] {
        log::warn!("{}: {l}", path.display());
    }
}

/// `pg_ctl <action> -D data_dir -w -t <limit>`.
fn pg_ctl(c: &FileConfig, action: &str, limit_ms: u64) -> Command {
    let mut cmd = bin(c, "pg_ctl");
    cmd.arg(action)
        .arg("-D")
        .arg(&c.data_dir)
        .arg("-w")
        .arg("-t")
        .arg(limit_ms.div_ceil(1000).max(1).to_string());
    cmd
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub fn stop(c: &FileConfig, mode: StopMode) -> Result<(), Failure> {
    // A stopped postmaster (SIGSTOP, state T) can act on no shutdown request, while its
    // backends keep committing for the sessions they serve: a fast stop would wait for it
    // until its time limit. Kill the cluster as an immediate stop does; the walsenders still
    // get their drain, so what was acknowledged reaches the replica (issue 11).
    let frozen = mode == StopMode::Fast
        && running_postmaster(&c.data_dir)
            .is_some_and(|pid| proc_stat(pid).is_some_and(|(state, _)| state == 'T'));
    if frozen {
        log::warn!(
            "fast stop of {}: the postmaster is stopped (SIGSTOP) and cannot act on it while              its backends may still commit: killing the cluster instead",
            c.data_dir.display()
        );
    }
    if mode == StopMode::Immediate || frozen {
        match kill_cluster(c) {
            Some(r) => return r,
            None => log::warn!(
                "immediate stop: no process runs {} in {} but postmaster.pid names a live \
                 postmaster there (another binary?): asking it with pg_ctl",
                c.bin_dir.join("postgres").display(),
                c.data_dir.display()
            ),
        }
    }
    if running_postmaster(&c.data_dir).is_none() {
        log::info!("postgres is not running on {}", c.data_dir.display());
        return Ok(());
    }
    let mut cmd = pg_ctl(c, "stop", c.timeouts.stop_ms);
    cmd.arg("-m").arg(match mode {
        StopMode::Fast => "fast",
        StopMode::Immediate => "immediate",
    });
    let r = super::process::run("pg_ctl stop", cmd, ms(c.timeouts.stop_ms + 2_000)).map(|_| ());
    if r.is_err() && running_postmaster(&c.data_dir).is_none() {
        return Ok(());
    }
    r
}

/// How long the processes of a killed cluster may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// What one process of this cluster is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PgKind {
    /// Its parent is not one of the cluster's processes: the postmaster (or a backend it left
    /// behind when it died).
    Postmaster,
    /// A WAL sender: streams WAL already flushed (acknowledged commits) to a replica.
    Walsender,
    /// A client backend, a background worker or an auxiliary process.
    Backend,
}

impl PgKind {
    fn name(self) -> &'static str {
        match self {
            PgKind::Postmaster => "postmaster",
            PgKind::Walsender => "walsender",
            PgKind::Backend => "backend",
        }
    }
}

/// Whether a postgres child's command line (its ps display, `postgres: [cluster_name: ]
/// walsender user host(port) state`) is a WAL sender's.
fn is_walsender(cmdline: &[u8]) -> bool {
    let text = String::from_utf8_lossy(cmdline).replace('\0', " ");
    let Some(rest) = text.trim().strip_prefix("postgres:") else {
        return false;
    };
    let mut words = rest.split_whitespace();
    match words.next() {
        Some("walsender") => true,
        Some(w) if w.ends_with(':') => words.next() == Some("walsender"),
        _ => false,
    }
}

/// The processes proven to be this cluster's postgres, with their kinds: each runs the
/// configured `postgres` binary (`/proc/<pid>/exe`, resolved) in this data dir
/// (`/proc/<pid>/cwd`: the postmaster chdirs there and its children inherit it). Zombies
/// have neither and are not listed.
fn cluster_processes(c: &FileConfig, binary: &Path) -> Vec<(i32, PgKind)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<(i32, i32)> = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
        if exe != binary
            || !std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| same_path(&cwd, &c.data_dir))
        {
            continue;
        }
        if let Some((_, ppid)) = proc_stat(pid) {
            found.push((pid, ppid));
        }
    }
    found
        .iter()
        .map(|&(pid, ppid)| {
            let kind = if !found.iter().any(|&(p, _)| p == ppid) {
                PgKind::Postmaster
            } else if is_walsender(
                &std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            ) {
                PgKind::Walsender
            } else {
                PgKind::Backend
            };
            (pid, kind)
        })
        .collect()
}

/// Sends `sig` to each of `pids`; the ones it reached.
fn signal_all(pids: &[i32], sig: nix::sys::signal::Signal) -> Vec<i32> {
    pids.iter()
        .copied()
        .filter(|&p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig).is_ok())
        .collect()
}

/// The immediate stop: kills every process of this cluster without asking the postmaster,
/// which may be hung (SIGSTOPped, swapped out) while its backends keep committing; pg_ctl
/// cannot reach it then. In order: SIGSTOP the postmaster (no new backend is forked); SIGKILL
/// every other process but the WAL senders (no commit after this point); give the WAL
/// senders a short drain (100 ms, at most half the stop allowance) so WAL already flushed,
/// acknowledged writes included, reaches the replica; SIGKILL everything left, the postmaster
/// too; wait (at most [`KILL_WAIT`]) until none is left. Crash semantics, as `pg_ctl stop -m
/// immediate`: the next start recovers from WAL. Nothing in the data dir is removed (a stale
/// `postmaster.pid` stays; postgres and [`clear_stale_locks`] handle it). `None`: no process
/// runs the configured binary here, yet `postmaster.pid` names a live postmaster (another
/// binary): the caller asks it with pg_ctl.
fn kill_cluster(c: &FileConfig) -> Option<Result<(), Failure>> {
    use nix::sys::signal::Signal;
    let start = std::time::Instant::now();
    let binary = std::fs::canonicalize(c.bin_dir.join("postgres"))
        .unwrap_or_else(|_| c.bin_dir.join("postgres"));
    let of = |procs: &[(i32, PgKind)], want: &[PgKind]| -> Vec<i32> {
        procs
            .iter()
            .filter(|(_, k)| want.contains(k))
            .map(|&(p, _)| p)
            .collect()
    };
    let first = cluster_processes(c, &binary);
    if first.is_empty() {
        if running_postmaster(&c.data_dir).is_some() {
            return None;
        }
        log::info!("postgres is not running on {}", c.data_dir.display());
        return Some(Ok(()));
    }
    let all = [PgKind::Walsender, PgKind::Backend, PgKind::Postmaster];
    let named = |procs: &[(i32, PgKind)], pids: &[i32]| -> String {
        let v: Vec<String> = procs
            .iter()
            .filter(|(p, _)| pids.contains(p))
            .map(|(p, k)| format!("{p} ({})", k.name()))
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    };
    let stopped = signal_all(&of(&first, &[PgKind::Postmaster]), Signal::SIGSTOP);
    // Again, now that no new process can be forked.
    let procs = cluster_processes(c, &binary);
    let backends = signal_all(&of(&procs, &[PgKind::Backend]), Signal::SIGKILL);
    let walsenders = of(&procs, &[PgKind::Walsender]);
    let drain = if walsenders.is_empty() {
        0
    } else {
        100.min(c.core.stop_allowance_ms() / 2)
    };
    std::thread::sleep(ms(drain));
    let mut left = cluster_processes(c, &binary);
    let rest = signal_all(&of(&left, &all), Signal::SIGKILL);
    let deadline = start + KILL_WAIT;
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(ms(5));
        left = cluster_processes(c, &binary);
        // A process the rounds above missed (none should be) is killed too.
        signal_all(&of(&left, &all), Signal::SIGKILL);
    }
    let took = start.elapsed().as_millis();
    if !left.is_empty() {
        log::error!(
            "immediate stop of {}: still there {took} ms after SIGKILL: {}",
            c.data_dir.display(),
            named(&left, &of(&left, &all))
        );
        return Some(Err(Failure::Timeout));
    }
    log::info!(
        "immediate stop of {}: SIGSTOP to {}; SIGKILL to {}; after a {drain} ms drain, SIGKILL \
         to {}; none left after {took} ms",
        c.data_dir.display(),
        named(&first, &stopped),
        named(&procs, &backends),
        named(&procs, &rest).replace("none", "nothing more"),
    );
    Some(Ok(()))
}

/// Whether the local data may be replaced by a copy of `from`, whose system identifier is
/// `source` when already known. `Ok(None)`: nothing to replace, or data pgha recorded as its
/// own; `Ok(Some(id))`: the local cluster's identifier, to compare with the copy's when the
/// source's could not be asked; `Err`: another cluster's data, or foreign files.
fn may_replace(c: &FileConfig, source: Option<u64>) -> Result<Option<u64>, Failure> {
    if !has_cluster(&c.data_dir) {
        if !is_empty_dir(&c.data_dir) {
            log::error!(
                "basebackup refused: {} holds files that are not a PostgreSQL cluster ({})",
                c.data_dir.display(),
                some_entries(&c.data_dir)
            );
            return Err(Failure::ForeignFiles);
        }
        return Ok(None);
    }
    let local = controldata(c).and_then(|x| x.sysid);
    let recorded = recorded_sysid(c);
    match (local, recorded) {
        // Data pgha created here (an unreadable control file of it too).
        (Some(l), Some(r)) if l == r => return Ok(None),
        (None, Some(_)) => return Ok(None),
        _ => {}
    }
    match (local, source) {
        (Some(l), Some(s)) if l == s => Ok(None),
        (l, Some(s)) => {
            log::error!(
                "basebackup refused: {} holds a cluster with system identifier {} but the source's is {s}, \
                 and pgha never recorded it as this node's ({}): not replacing another cluster's data",
                c.data_dir.display(),
                l.map(|l| l.to_string())
                    .unwrap_or_else(|| "(unreadable)".into()),
                sysid_marker(c).display()
            );
            Err(Failure::ForeignCluster {
                local: l.unwrap_or(0),
                source: s,
            })
        }
        (l, None) => Ok(Some(l.unwrap_or(0))),
    }
}

/// The system identifier of a peer's cluster (`pg_control_system()`), when it answers.
fn source_sysid(c: &FileConfig, from: PeerId) -> Option<u64> {
    let t = peer_target(c, from)?;
    match probe::query_one(
        &t,
        ms(c.timeouts.command_ms.min(10_000)),
        "select system_identifier::text from pg_control_system()",
    ) {
        Ok(Some(v)) => v.parse().ok(),
        Ok(None) => None,
        Err(e) => {
            log::warn!("system identifier of {}: {e}", t.host);
            None
        }
    }
}

/// Moves `dir` (replaced data) to `<data_dir>.pgha-discarded-r<run>-c<id><suffix>` when
/// `[postgres] keep_discarded` > 0, then removes the set-aside copies beyond that many, oldest
/// first; removes it when keep_discarded = 0.
fn set_aside(c: &FileConfig, dir: &Path, run: u64, id: u64, suffix: &str) -> Result<(), Failure> {
    if c.pg.keep_discarded == 0 {
        log::info!(
            "removing the replaced data {} (keep_discarded = 0)",
            dir.display()
        );
        return std::fs::remove_dir_all(dir).map_err(|e| {
            log::warn!("cannot remove {}: {e}", dir.display());
            Failure::Io
        });
    }
    let mut dest = discarded_dir(&c.data_dir, run, id);
    if !suffix.is_empty() {
        dest = PathBuf::from(format!("{}{suffix}", dest.display()));
    }
    std::fs::rename(dir, &dest).map_err(|e| {
        log::error!(
            "cannot set the replaced data {} aside as {}: {e}",
            dir.display(),
            dest.display()
        );
        Failure::Io
    })?;
    log::warn!(
        "the replaced data is kept as {} ([postgres] keep_discarded = {})",
        dest.display(),
        c.pg.keep_discarded
    );
    prune_discarded(c);
    Ok(())
}

/// The set-aside copies of this data dir, oldest first: (run, command, path).
fn discarded(c: &FileConfig) -> Vec<(u64, u64, PathBuf)> {
    let Some(parent) = c.data_dir.parent() else {
        return Vec::new();
    };
    let Some(base) = c
        .data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
    else {
        return Vec::new();
    };
    let prefix = format!("{base}.{DISCARDED}r");
    let mut out: Vec<(u64, u64, PathBuf)> = std::fs::read_dir(parent)
        .map(|it| {
            it.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let rest = name.strip_prefix(&prefix)?;
                    let (run, rest) = rest.split_once("-c")?;
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    Some((run.parse().ok()?, digits.parse().ok()?, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn prune_discarded(c: &FileConfig) {
    let all = discarded(c);
    let extra = all.len().saturating_sub(c.pg.keep_discarded as usize);
    for (_, _, p) in &all[..extra] {
        log::info!(
            "removing {} (more than keep_discarded = {} set-aside copies)",
            p.display(),
            c.pg.keep_discarded
        );
        if let Err(e) = std::fs::remove_dir_all(p) {
            log::warn!("cannot remove {}: {e}", p.display());
        }
    }
}

/// `pg_basebackup -X stream -R` into `<data_dir>.pgha-clone`; only once it is complete does
/// it replace the data dir (rename the old one aside, rename the copy in, then set the old
/// one aside as `<data_dir>.pgha-discarded-r<run>-c<id>`, see [`set_aside`]). Local data is
/// replaced only when it is this cluster's ([`may_replace`]); foreign files never.
pub fn basebackup(c: &FileConfig, from: PeerId, run: u64, id: u64) -> Result<(), Failure> {
    let p = c.peer(from).ok_or(Failure::Refused)?.clone();
    if running_postmaster(&c.data_dir).is_some() {
        log::error!(
            "basebackup refused: postgres runs on {}",
            c.data_dir.display()
        );
        return Err(Failure::Refused);
    }
    let source = if has_cluster(&c.data_dir) {
        source_sysid(c, from)
    } else {
        None
    };
    let unproven = may_replace(c, source)?;
    let clone = clone_dir(c);
    let io = |what: &str, e: std::io::Error| {
        log::error!("basebackup: {what}: {e}");
        Failure::Io
    };
    if clone.exists() {
        std::fs::remove_dir_all(&clone).map_err(|e| io("removing an old partial copy", e))?;
    }
    let mut cmd = bin(c, "pg_basebackup");
    cmd.arg("-h")
        .arg(&p.host)
        .arg("-p")
        .arg(p.port.to_string())
        .arg("-U")
        .arg(&c.pg.user)
        .arg("-D")
        .arg(&clone)
        .arg("-X")
        .arg("stream")
        .arg("-R")
        .arg("-c")
        .arg("fast")
        .arg("-w")
        .args(&c.pg.basebackup_args);
    if let Some(pw) = &c.pg.password {
        cmd.env("PGPASSWORD", pw);
    }
    let r = super::process::run(
        &format!("pg_basebackup from {}", p.name),
        cmd,
        ms(c.timeouts.basebackup_ms),
    );
    if let Err(f) = r {
        let _ = std::fs::remove_dir_all(&clone);
        return Err(f);
    }
    if !has_cluster(&clone) {
        log::error!("basebackup: {} holds no cluster", clone.display());
        return Err(Failure::Io);
    }
    let copied = controldata_of(c, &clone).and_then(|x| x.sysid);
    if let Some(local) = unproven {
        // The source could not be asked before: the copy says whose cluster it is.
        let checked = match copied {
            Some(_) => may_replace(c, copied),
            None => {
                log::error!("basebackup: cannot read the copy's system identifier");
                Err(Failure::Io)
            }
        };
        if let Err(f) = checked {
            let _ = std::fs::remove_dir_all(&clone);
            return Err(f);
        }
        log::debug!("local system identifier {local} is the source's");
    }
    write_standby_config(c, &clone, from)?;
    // The copy is complete: swap it in. A stale old copy (a swap interrupted after the copy
    // was moved in) is replaced data too.
    let old = old_dir(c);
    if old.exists() {
        set_aside(c, &old, run, id, "-stale")?;
    }
    // Last guard: never move foreign files aside to be discarded.
    may_replace(c, copied)?;
    if has_cluster(&c.data_dir) {
        std::fs::rename(&c.data_dir, &old).map_err(|e| io("moving the old data dir aside", e))?;
    } else if c.data_dir.exists() {
        std::fs::remove_dir(&c.data_dir).map_err(|e| io("removing the empty data dir", e))?;
    }
    std::fs::rename(&clone, &c.data_dir).map_err(|e| io("moving the copy in place", e))?;
    if let Some(parent) = c.data_dir.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    mark_held(c);
    record_sysid(c, copied);
    if old.exists() {
        // The copy is in place; the replaced data is kept aside (a failure here leaves it at
        // `.pgha-old`, set aside at the next clone).
        let _ = set_aside(c, &old, run, id, "");
    }
    Ok(())
}

fn sql_failure(what: &str, e: SqlFailure) -> Failure {
    log::warn!("{what}: {e}");
    match e {
        SqlFailure::Probe(pgha_core::ProbeResult::Timeout) => Failure::Timeout,
        _ => Failure::Io,
    }
}

/// A local postgres whose connection slots are full ("too many clients") cannot take pgha's
/// SQL; the programs that signal the postmaster need no slot.
fn no_slot(r: &Result<Option<String>, SqlFailure>) -> bool {
    matches!(
        r,
        Err(SqlFailure::Probe(pgha_core::ProbeResult::Overloaded))
    )
}

pub fn promote(c: &FileConfig) -> Result<(), Failure> {
    let wait = c.timeouts.promote_ms.div_ceil(1000).max(1);
    let r = probe::query_one(
        &local_target(c),
        ms(c.timeouts.promote_ms + 1_000),
        &format!("select pg_promote(true, {wait})::text"),
    );
    if no_slot(&r) {
        // A full replica must still be promotable when its master is gone.
        log::warn!("promote: no free connection slot on the local postgres: pg_ctl promote");
        let cmd = pg_ctl(c, "promote", c.timeouts.promote_ms);
        return super::process::run("pg_ctl promote", cmd, ms(c.timeouts.promote_ms + 2_000))
            .map(|_| ());
    }
    let r = r.map_err(|e| sql_failure("promote", e))?;
    match r.as_deref() {
        Some("true") => Ok(()),
        other => {
            log::warn!("promote: pg_promote returned {other:?}");
            Err(Failure::Exit(1))
        }
    }
}

pub fn follow(c: &FileConfig, upstream: PeerId) -> Result<(), Failure> {
    write_standby_config(c, &c.data_dir, upstream)?;
    let r = probe::query_one(
        &local_target(c),
        ms(c.timeouts.command_ms),
        "select pg_reload_conf()::text",
    );
    if no_slot(&r) {
        log::warn!("follow: no free connection slot on the local postgres: pg_ctl reload");
        let mut cmd = bin(c, "pg_ctl");
        cmd.arg("reload").arg("-D").arg(&c.data_dir);
        return super::process::run("pg_ctl reload", cmd, ms(c.timeouts.command_ms)).map(|_| ());
    }
    r.map_err(|e| sql_failure("follow (reload)", e))?;
    Ok(())
}

pub fn set_fence(c: &FileConfig, on: bool) -> Result<(), Failure> {
    let m = fence_marker(c);
    let r = if on {
        write_marker(
            &m,
            "split-brain fence: pgha keeps postgres stopped until `pgha recover`",
        )
    } else if m.exists() {
        std::fs::remove_file(&m)
    } else {
        Ok(())
    };
    r.map_err(|e| {
        log::error!("fence marker {}: {e}", m.display());
        Failure::Io
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_in(dir: &Path, extra: &str) -> FileConfig {
        let text = format!(
            "{}\n[postgres]\n{extra}\n",
            crate::config::tests::sample(dir)
        );
        crate::config::parse(Path::new("x.toml"), &text).unwrap().0
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgha-pg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn set_aside_copies_beyond_keep_discarded_are_removed_oldest_first() {
        let d = tempdir("prune");
        let c = cfg_in(&d, "keep_discarded = 2");
        for (run, cmd) in [(1, 40), (2, 7), (2, 30), (1, 5)] {
            std::fs::create_dir_all(discarded_dir(&c.data_dir, run, cmd)).unwrap();
        }
        // Not ours: another data dir's copies, a name that does not parse.
        std::fs::create_dir_all(d.join("db00.pgha-discarded-r1-c1")).unwrap();
        std::fs::create_dir_all(d.join("db0.pgha-discarded-x")).unwrap();
        let old = d.join("db0.pgha-old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("PG_VERSION"), "15").unwrap();
        set_aside(&c, &old, 3, 2, "").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "db0.pgha-discarded-r2-c30",
                "db0.pgha-discarded-r3-c2",
                "db0.pgha-discarded-x",
                "db00.pgha-discarded-r1-c1"
            ]
        );
        assert!(d.join("db0.pgha-discarded-r3-c2/PG_VERSION").is_file());
        // keep_discarded = 0: the replaced data goes at once.
        let c = cfg_in(&d, "keep_discarded = 0");
        std::fs::create_dir_all(&old).unwrap();
        set_aside(&c, &old, 4, 1, "").unwrap();
        assert!(!old.exists() && !discarded_dir(&c.data_dir, 4, 1).exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn only_an_absent_or_entry_less_directory_is_empty_and_foreign_files_are_refused() {
        let d = tempdir("empty");
        let c = cfg_in(&d, "");
        assert!(is_empty_dir(&c.data_dir));
        assert!(preflight(&c).is_ok());
        std::fs::create_dir_all(c.data_dir.join("sub")).unwrap();
        assert!(!is_empty_dir(&c.data_dir));
        let e = preflight(&c).unwrap_err().to_string();
        assert!(e.contains("node.data_dir") && e.contains("sub"), "{e}");
        assert_eq!(initdb(&c), Err(Failure::ForeignFiles));
        assert!(c.data_dir.join("sub").is_dir());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_live_process_that_is_not_this_data_dirs_postmaster_is_not_running_postgres() {
        let d = tempdir("pid");
        let c = cfg_in(&d, "");
        std::fs::create_dir_all(&c.data_dir).unwrap();
        // This test process: alive, but not a postgres working in the data dir.
        let me = std::process::id();
        std::fs::write(
            c.data_dir.join("postmaster.pid"),
            format!("{me}\n{}\n", c.data_dir.display()),
        )
        .unwrap();
        assert!(!is_our_postmaster(&c.data_dir, me as i32));
        assert_eq!(running_postmaster(&c.data_dir), None);
        assert!(stop(&c, StopMode::Immediate).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn walsenders_are_told_from_backends_by_their_ps_display() {
        let ws = b"postgres: db0: walsender postgres 127.0.0.1(43210) streaming 0/3000148\0\0";
        assert!(is_walsender(ws));
        assert!(is_walsender(b"postgres: walsender rep [local] idle"));
        assert!(!is_walsender(b"postgres: db0: app appdb 127.0.0.1(5) idle"));
        assert!(!is_walsender(b"postgres: db0: checkpointer "));
        assert!(!is_walsender(b"bash -c walsender"));
    }

    #[test]
    fn a_fast_stop_of_a_stopped_postmaster_kills_it_instead_of_waiting_for_it() {
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        let d = tempdir("fast-kill");
        let _cleanup = crate::testutil::RemoveOnDrop(d.clone());
        let mut c = cfg_in(&d, "");
        std::fs::create_dir_all(&c.data_dir).unwrap();
        // A copy of bash named postgres (its exe then says postgres, as the proof wants), in
        // the data dir: a "postmaster" with no pg_ctl beside it to ask.
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/bash", bin.join("postgres")).unwrap();
        c.bin_dir = bin.clone();
        let mut postmaster = Command::new(bin.join("postgres"))
            .arg0("postgres")
            .args(["-c", "read -t 600 <> /dev/zero; sleep 600"])
            .current_dir(&c.data_dir)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = postmaster.id() as i32;
        std::fs::write(c.data_dir.join("postmaster.pid"), format!("{pid}\n")).unwrap();
        let start = std::time::Instant::now();
        while running_postmaster(&c.data_dir).is_none() && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(running_postmaster(&c.data_dir), Some(pid));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        while proc_stat(pid).is_none_or(|(state, _)| state != 'T')
            && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(stop(&c, StopMode::Fast), Ok(()));
        assert_eq!(postmaster.wait().unwrap().signal(), Some(9));
    }

    #[test]
    fn an_immediate_stop_kills_a_hung_postmasters_children_and_only_this_clusters() {
        use std::os::unix::process::CommandExt;
        use std::process::Stdio;
        let d = tempdir("kill");
        let _cleanup = crate::testutil::RemoveOnDrop(d.clone());
        let mut c = cfg_in(&d, "");
        std::fs::create_dir_all(&c.data_dir).unwrap();
        // A "postgres" binary that is bash: a postmaster with a walsender and a backend, each
        // blocked reading a FIFO, in the data dir.
        let bin = d.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink("/bin/bash", bin.join("postgres")).unwrap();
        c.bin_dir = bin.clone();
        let fifo = d.join("fifo");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let wait = format!("read -t 600 <> {}", fifo.display());
        let script = format!(
            "(exec -a 'postgres: db0: walsender rep 127.0.0.1(1) streaming' bash -c '{wait}') & \
             (exec -a 'postgres: db0: app appdb 127.0.0.1(2) idle' bash -c '{wait}') & {wait}"
        );
        let spawn = |cmd: &mut Command| cmd.stdin(Stdio::null()).spawn().unwrap();
        let mut postmaster = spawn(
            Command::new(bin.join("postgres"))
                .arg0("postgres")
                .args(["-c", &script])
                .current_dir(&c.data_dir),
        );
        // Not this cluster's: bash elsewhere, and another program in the data dir.
        let mut elsewhere = spawn(
            Command::new("/bin/bash")
                .args(["-c", &wait])
                .current_dir(&d),
        );
        let mut sleeper = spawn(Command::new("sleep").arg("600").current_dir(&c.data_dir));
        let binary = std::fs::canonicalize(bin.join("postgres")).unwrap();
        let start = std::time::Instant::now();
        let mut procs = Vec::new();
        while procs.len() < 3 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
            procs = cluster_processes(&c, &binary);
        }
        procs.sort_by_key(|&(_, k)| k.name());
        let kinds: Vec<PgKind> = procs.iter().map(|&(_, k)| k).collect();
        assert_eq!(
            kinds,
            [PgKind::Backend, PgKind::Postmaster, PgKind::Walsender],
            "{procs:?}"
        );
        assert!(procs.iter().any(|&(p, _)| p == postmaster.id() as i32));
        // Hung: stopped, as by SIGSTOP; pg_ctl could not reach it.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(postmaster.id() as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        assert_eq!(stop(&c, StopMode::Immediate), Ok(()));
        assert!(cluster_processes(&c, &binary).is_empty());
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(postmaster.wait().unwrap().signal(), Some(9));
        for other in [&mut elsewhere, &mut sleeper] {
            assert_eq!(
                other.try_wait().unwrap(),
                None,
                "another process was killed"
            );
            let _ = other.kill();
            let _ = other.wait();
        }
        // Nothing left: a second stop finds nothing to do.
        assert_eq!(stop(&c, StopMode::Immediate), Ok(()));
    }

    #[test]
    fn controldata_of_a_shut_down_primary_says_master() {
        let text = "pg_control version number:            1300\n\
            Database cluster state:               shut down\n\
            Latest checkpoint location:           0/3000028\n\
            Latest checkpoint's TimeLineID:       2\n";
        let c = parse_controldata(text).unwrap();
        assert_eq!(c.timeline, 2);
        assert_eq!(c.lsn, Lsn(0x3000028));
        assert!(c.primary_state);
        let r = parse_controldata(&text.replace("shut down", "in archive recovery")).unwrap();
        assert!(!r.primary_state);
    }
}
