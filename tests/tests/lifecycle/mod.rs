//! Issue 10: the daemon's life. One daemon per data dir and per journal, signals (SIGHUP is
//! not fatal, every stop is journaled with its cause), a journal that cannot be written
//! refuses the start before anything starts, and `pgha demo` cleans up after SIGINT.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgha_tests::{Cluster, Extra, Slot, chown_postgres, http, pgha_bin, port_free, wait_for};

use super::bootstrapped;

/// Runs `cmd` with a time limit (killed past it): its exit code (None when killed) and its
/// stdout and stderr.
fn run_bounded(mut cmd: Command, limit: Duration) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!(
        "pgha-e2e-bounded-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out");
    let file = std::fs::File::create(&out).unwrap();
    // A process group of its own, so a runaway (runuser and the pgha under it) is killed
    // whole.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        if start.elapsed() > limit {
            let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
            let _ = nix::sys::signal::kill(group, Signal::SIGKILL);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (code, text)
}

/// `pgha run --config CONFIG` as the postgres user.
fn pgha_run(config: &Path, rt: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"])
        .arg(pgha_bin())
        .args(["run", "--runtime", rt, "--config"])
        .arg(config)
        .env("RUST_LOG", "info");
    cmd
}

/// The last run of `journal`: its number of steps and its stop row (code, cause).
fn last_run_stop(journal: &Path) -> (usize, Option<(String, String)>) {
    let f = pgha_journal::JournalFile::read(journal).expect("the journal reads back");
    let run = f.runs.last().expect("a run");
    (
        run.steps.len(),
        run.stop.as_ref().map(|s| (s.code.clone(), s.cause.clone())),
    )
}

fn a_second_daemon_on_the_same_data_dir_or_journal_is_refused_naming_the_holder(rt: &'static str) {
    let mut c = Cluster::new("locks", rt, 2);
    c.start(0);
    wait_for(Duration::from_secs(30), "db0's API", || c.status(0));
    let holder = c.daemon_pid(0).expect("db0's pid");
    let good = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    let api0 = c.nodes[0].api;
    // Ports 2 and 3 of the cluster's block are nobody's.
    let other_api = SocketAddr::new(api0.ip(), api0.port() + 2);
    let with_api = good.replace(
        &format!("api = \"{api0}\""),
        &format!("api = \"{other_api}\""),
    );
    let journal0 = c.nodes[0].journal.display().to_string();
    let data0 = format!("data_dir = \"{}\"", c.nodes[0].data_dir.display());
    let other_journal = c.dir.join("other.journal");
    let other_data = c.dir.join("other-data");
    let cases = [
        (
            "same data dir",
            with_api.replace(&journal0, other_journal.to_str().unwrap()),
            "node.data_dir",
        ),
        (
            "same journal",
            with_api.replace(&data0, &format!("data_dir = \"{}\"", other_data.display())),
            "journal.path",
        ),
    ];
    for (what, text, key) in cases {
        assert_ne!(text, good, "{what}: the config did not change");
        let path = c
            .dir
            .join(format!("second-{}.toml", what.replace(' ', "-")));
        std::fs::write(&path, &text).unwrap();
        chown_postgres(&path);
        let (code, out) = run_bounded(pgha_run(&path, rt), Duration::from_secs(20));
        assert_eq!(
            code,
            Some(2),
            "{what}: the second daemon was not refused: {out}"
        );
        assert!(out.contains(key), "{what}: no {key}: {out}");
        assert!(
            out.contains(&format!("pid {holder}")),
            "{what}: the holder's pid: {out}"
        );
        assert!(
            out.contains(c.nodes[0].config.to_str().unwrap()),
            "{what}: the holder's config: {out}"
        );
        assert!(
            out.contains(&api0.to_string()),
            "{what}: the holder's API: {out}"
        );
        // Refused before anything: no journal, no data dir, nothing on its API.
        assert!(!other_journal.exists(), "{what}: a journal was created");
        assert!(!other_data.exists(), "{what}: a data dir was created");
        assert!(http(other_api, "GET", "/health").is_err());
    }
    // The first daemon runs on, undisturbed: same process, its API answers, one run.
    assert_eq!(c.daemon_exited(0), None, "db0's daemon exited");
    assert_eq!(c.daemon_pid(0), Some(holder));
    assert!(c.status(0).is_some(), "db0's API does not answer");
    let f = pgha_journal::JournalFile::read(&c.nodes[0].journal).unwrap();
    assert_eq!(f.runs.len(), 1, "another run was appended to db0's journal");
    // The lock files are pgha's own, 0600.
    use std::os::unix::fs::PermissionsExt;
    for lock in [
        format!("{}.pgha-lock", c.nodes[0].data_dir.display()),
        format!("{journal0}.lock"),
    ] {
        let mode = std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{lock}");
    }
}

fn sighup_is_logged_and_ignored_and_a_stop_is_journaled_with_its_cause(rt: &'static str) {
    let mut c = bootstrapped("signals", rt, Extra::default());
    let pid = c.daemon_pid(0).expect("db0's pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP).unwrap();
    wait_for(
        Duration::from_secs(10),
        "db0's log to say it got SIGHUP",
        || c.log(0).contains("SIGHUP received: ignored").then_some(()),
    );
    // It keeps serving: the same process answers /primary 200, and writes go on.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.daemon_exited(0), None, "SIGHUP ended the daemon");
    assert_eq!(c.daemon_pid(0), Some(pid));
    let (code, _) = http(c.nodes[0].api, "GET", "/primary").unwrap();
    assert_eq!(code, 200);
    c.sql(0, "insert into t values (3, 'after the hangup')");
    c.wait_rows(1, "select count(*) from t", &["3"], Duration::from_secs(20));
    // SIGTERM: exit 0, logged, and the run's last row says SIGTERM.
    assert_eq!(c.stop_daemon(0), Some(0), "{}", c.log(0));
    assert!(c.log(0).contains("stopped by SIGTERM"), "{}", c.log(0));
    let (_, stop) = last_run_stop(&c.nodes[0].journal);
    assert_eq!(
        stop,
        Some(("signal".to_string(), "SIGTERM".to_string())),
        "db0's journal"
    );
    c.assert_replay(0);
    // SIGINT too, on the replica.
    let pid1 = c.daemon_pid(1).expect("db1's pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid1), Signal::SIGINT).unwrap();
    wait_for(Duration::from_secs(20), "db1's daemon to exit", || {
        c.daemon_exited(1)
    });
    let (_, stop) = last_run_stop(&c.nodes[1].journal);
    assert_eq!(stop, Some(("signal".to_string(), "SIGINT".to_string())));
    let explained = c
        .explain()
        .expect("pgha explain of journals with stop rows");
    assert!(
        explained.contains("daemon stopped by SIGTERM")
            && explained.contains("daemon stopped by SIGINT"),
        "{explained}"
    );
}

fn an_unwritable_journal_refuses_the_start_with_exit_2_before_anything_starts(rt: &'static str) {
    let c = Cluster::new("badjournal", rt, 2);
    // Existing journals of db0's, one run long: `seed` closed, `live` left as a killed
    // daemon leaves it (its `-wal` and `-shm` beside it), so opening it needs no new space.
    let config = pgha_core::Config::ha_pair("db0", 0, "db1", 1);
    let seed = c.dir.join("seed.journal");
    let live = c.dir.join("live.journal");
    for (path, close) in [(&seed, true), (&live, false)] {
        let header = pgha_journal::Header::new(config.clone(), "");
        let mut r = pgha_journal::Recorder::create(path, header).unwrap();
        r.begin(pgha_core::Timestamp(0), 1).unwrap();
        if !close {
            std::mem::forget(r);
        }
    }
    assert!(c.dir.join("live.journal-wal").exists());
    let api = c.nodes[0].api;
    let journal = c.nodes[0].journal.clone();
    let check = |what: &str, code: Option<i32>, out: &str, file: &Path| {
        assert_eq!(code, Some(2), "{what}: {out}");
        assert!(
            out.contains(file.to_str().unwrap()),
            "{what}: the message does not name the journal: {out}"
        );
        assert!(!out.contains("starting"), "{what}: it started: {out}");
        assert!(!c.nodes[0].data_dir.exists(), "{what}: a data dir");
        assert!(c.postmaster_pid(0).is_none(), "{what}: a postmaster");
        assert!(http(api, "GET", "/health").is_err(), "{what}: an API");
    };

    // A full journal disk: a small tmpfs, filled up, in a mount namespace of its own (the
    // machine's mounts are not touched).
    let disk = c.dir.join("full");
    std::fs::create_dir_all(&disk).unwrap();
    let full_journal = disk.join("db0.journal");
    let text = std::fs::read_to_string(&c.nodes[0].config)
        .unwrap()
        .replace(journal.to_str().unwrap(), full_journal.to_str().unwrap());
    let config = c.dir.join("full.toml");
    std::fs::write(&config, text).unwrap();
    chown_postgres(&c.dir);
    let script = format!(
        "set -e; mount -t tmpfs -o size=512k,mode=0755 pgha-e2e-full {disk}; \
         for f in '' -wal -shm; do cp {live}$f {j}$f; done; chown -R postgres:postgres {disk}; \
         runuser -u postgres -- dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null || true; \
         exec runuser -u postgres -- {pgha} run --runtime {rt} --config {config}",
        disk = disk.display(),
        live = live.display(),
        j = full_journal.display(),
        pgha = pgha_bin().display(),
        config = config.display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("RUST_LOG", "info");
    let (code, out) = run_bounded(cmd, Duration::from_secs(20));
    check("full journal disk", code, &out, &full_journal);

    // A read-only journal file.
    std::fs::copy(&seed, &journal).unwrap();
    chown_postgres(&journal);
    let ro = Command::new("chmod")
        .arg("0444")
        .arg(&journal)
        .status()
        .unwrap();
    assert!(ro.success());
    let (code, out) = run_bounded(pgha_run(&c.nodes[0].config, rt), Duration::from_secs(20));
    check("read-only journal", code, &out, &journal);
    std::fs::remove_file(&journal).unwrap();
}

/// The processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

fn sigint_to_pgha_demo_stops_everything_it_started_and_removes_its_dir(rt: &'static str) {
    let _slot = Slot::take();
    let mut demo = Command::new(pgha_bin())
        .args(["demo", "--runtime", rt])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgha demo");
    let demo_pid = demo.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut ready = false;
    let start = Instant::now();
    while !ready && start.elapsed() < Duration::from_secs(120) {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            ready = line.contains("db1 is a streaming replica");
            seen.push(line);
        }
    }
    if !ready {
        let _ = demo.kill();
        let _ = demo.wait();
        panic!("the demo did not get going: {seen:#?}");
    }
    // "two-node cluster in DIR (postgres on ports A and B, pgha APIs on X and Y)..."
    let first = &seen[0];
    let dir: PathBuf = first
        .split(" in ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no directory in {first:?}"));
    let ports: Vec<u16> = first
        .split(|ch: char| !ch.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .filter(|p| *p > 1000)
        .collect();
    assert!(ports.len() >= 4, "ports in {first:?}: {ports:?}");
    let dir_text = dir.display().to_string();
    let started = processes_mentioning(&dir_text);
    assert!(
        started.len() >= 4,
        "the demo's daemons and postgres servers: {started:?}"
    );
    // SIGINT, as a terminal's ^C would send it, to the demo alone.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(demo_pid), Signal::SIGINT).unwrap();
    let begin = Instant::now();
    let code = loop {
        if let Ok(Some(st)) = demo.try_wait() {
            break st.code();
        }
        if begin.elapsed() > Duration::from_secs(90) {
            let _ = demo.kill();
            let _ = demo.wait();
            panic!("the demo did not exit within 90 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    if let Some(mut e) = demo.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert_eq!(code, Some(130), "exit code after SIGINT; stderr: {err}");
    assert!(err.contains("SIGINT"), "{err}");
    // Nothing left: processes, directory, ports.
    let left = wait_for_gone(&started);
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(processes_mentioning(&dir_text).is_empty());
    assert!(!dir.exists(), "{} was not removed", dir.display());
    for p in &ports[..4] {
        assert!(port_free(*p), "port {p} is still taken");
    }
}

/// The PIDs of `pids` still alive after a generous wait.
fn wait_for_gone(pids: &[i32]) -> Vec<i32> {
    let alive = |p: &i32| Path::new(&format!("/proc/{p}")).exists();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) && pids.iter().any(alive) {
        std::thread::sleep(Duration::from_millis(50));
    }
    pids.iter().copied().filter(alive).collect()
}

both_runtimes! {
    a_second_daemon_on_the_same_data_dir_or_journal_is_refused_naming_the_holder,
    sighup_is_logged_and_ignored_and_a_stop_is_journaled_with_its_cause,
    an_unwritable_journal_refuses_the_start_with_exit_2_before_anything_starts,
    sigint_to_pgha_demo_stops_everything_it_started_and_removes_its_dir,
}
