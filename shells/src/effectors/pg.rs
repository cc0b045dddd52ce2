//! PostgreSQL's programs and files: initdb, pg_ctl, pg_basebackup, pg_controldata, standby
//! configuration, and the markers kept next to the data dir.
//!
//! Markers live beside the data dir (`<data_dir>.pgha-fenced`, `<data_dir>.pgha-held`), not in
//! it, so a re-clone that replaces the data dir keeps them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgha_core::{DataDir, Failure, LocalFacts, Lsn, PeerId, StartAs, StopMode};

use super::probe::{self, SqlFailure, Target};
use crate::config::{FileConfig, sibling};

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

/// Whether `pid` is a live postgres process (not a zombie, not a reused PID).
fn is_live_postgres(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    };
    // A zombie has an empty command line; a reused PID names another program.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    alive && (cmdline.contains("postgres") || cmdline.contains("postmaster"))
}

fn pid_in(file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// The PID in `postmaster.pid` when that process is alive and is a postgres.
pub fn running_postmaster(dir: &Path) -> Option<i32> {
    let pid = pid_in(&dir.join("postmaster.pid"))?;
    is_live_postgres(pid).then_some(pid)
}

/// Removes lock files left by a postmaster that is gone. PostgreSQL itself ignores a lock
/// whose PID is dead, but not one whose PID is an unreaped zombie (a SIGKILLed postmaster
/// whose parent has not reaped it yet), and then refuses to start.
fn clear_stale_locks(c: &FileConfig) {
    let pidfile = c.data_dir.join("postmaster.pid");
    if let Some(pid) = pid_in(&pidfile)
        && !is_live_postgres(pid)
    {
        log::info!("removing stale {} (pid {pid} is gone)", pidfile.display());
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
}

pub fn parse_controldata(text: &str) -> Option<Control> {
    let mut timeline = None;
    let mut lsn = Lsn(0);
    let mut state = None;
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
    })
}

fn controldata(c: &FileConfig) -> Option<Control> {
    let mut cmd = bin(c, "pg_controldata");
    cmd.arg("-D").arg(&c.data_dir).env("LC_ALL", "C");
    let out = super::process::run("pg_controldata", cmd, ms(c.timeouts.command_ms)).ok()?;
    parse_controldata(&out.stdout)
}

fn write_marker(path: &Path, what: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{what}\n"))?;
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

/// `pg_basebackup -X stream -R` into `<data_dir>.pgha-clone`; only once it is complete does
/// it replace the data dir (rename the old one aside, rename the copy in, remove the old).
pub fn basebackup(c: &FileConfig, from: PeerId) -> Result<(), Failure> {
    let p = c.peer(from).ok_or(Failure::Refused)?.clone();
    if running_postmaster(&c.data_dir).is_some() {
        log::error!(
            "basebackup refused: postgres runs on {}",
            c.data_dir.display()
        );
        return Err(Failure::Refused);
    }
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
    write_standby_config(c, &clone, from)?;
    // The copy is complete: swap it in.
    let old = old_dir(c);
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| io("removing a stale old copy", e))?;
    }
    if c.data_dir.exists() {
        std::fs::rename(&c.data_dir, &old).map_err(|e| io("moving the old data dir aside", e))?;
    }
    std::fs::rename(&clone, &c.data_dir).map_err(|e| io("moving the copy in place", e))?;
    if let Some(parent) = c.data_dir.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    mark_held(c);
    if old.exists()
        && let Err(e) = std::fs::remove_dir_all(&old)
    {
        log::warn!("cannot remove the old data dir {}: {e}", old.display());
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
