//! The command line as a user runs it: the `pgha` binary itself.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn pgha() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pgha"));
    c.env("RUST_LOG", "warn");
    c
}

/// Removes a test's directory when the test ends, passed or failed.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pgha-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A two-node configuration whose APIs nothing answers on.
fn config(dir: &Path) -> PathBuf {
    let text = format!(
        "[node]\nname = \"db0\"\nindex = 0\ndata_dir = \"{d}/db0\"\nhost = \"127.0.0.1\"\nport = 6432\napi = \"127.0.0.1:9\"\n\n\
         [[peers]]\nname = \"db1\"\nhost = \"127.0.0.1\"\nport = 6433\napi = \"127.0.0.1:7\"\n\n\
         [replication]\nenabled = true\n\n[journal]\npath = \"{d}/db0.journal\"\n",
        d = dir.display()
    );
    let p = dir.join("db0.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `cmd` with its stdout a pipe whose reader is already gone.
fn into_closed_pipe(mut cmd: Command) -> (std::process::ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = cmd.stdout(writer).stderr(Stdio::piped()).spawn().unwrap();
    drop(cmd);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), err)
}

#[test]
fn a_cli_command_whose_reader_went_away_ends_quietly_by_sigpipe() {
    let dir = tempdir("pipe");
    let _cleanup = RemoveOnDrop(dir.clone());
    let cfg = config(&dir);
    for args in [
        vec!["status", "--json", "--config"],
        vec!["haproxy-config", "--config"],
    ] {
        let mut cmd = pgha();
        cmd.args(&args).arg(&cfg);
        let (status, err) = into_closed_pipe(cmd);
        assert_eq!(status.signal(), Some(13), "{args:?}: {status:?}\n{err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("backtrace"), "{args:?}: {err}");
    }
}

/// The two-node configuration with an `[etcd]` section (`etcd` lines) and no `index`.
fn etcd_config(dir: &Path, etcd: &str) -> PathBuf {
    let p = config(dir);
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("index = 0\n", "")
        + "\n[etcd]\nendpoints = [\"127.0.0.1:2379\"]\ncluster = \"main\"\n"
        + etcd;
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `cmd` to its end: exit code, stdout, stderr.
fn output(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_an_etcd_section_and_says_that_run_refuses_it() {
    let dir = tempdir("etcd-ok");
    let _cleanup = RemoveOnDrop(dir.clone());
    let cfg = etcd_config(&dir, "ttl = 10\nloop_wait = 2\nretry_timeout = 4\n");
    let (code, out, err) = output(pgha().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, Some(0), "{out}\n{err}");
    for needle in [
        "valid (node db0, etcd mode, 1 peer(s) listed)",
        "etcd: cluster \"main\" (keys under /pgha/main/), endpoints 127.0.0.1:2379; ttl 10 s, \
         loop_wait 2 s, retry_timeout 4 s; primary_dc \"default\"",
        "member: dc \"default\", priority 0, nofailover false",
        "note: etcd mode is not built yet (issue 13): `pgha run` refuses this file (exit 2)",
    ] {
        assert!(out.contains(needle), "{needle}\n{out}");
    }
}

#[test]
fn check_config_exits_2_naming_the_keys_of_a_lease_that_is_too_short() {
    let dir = tempdir("etcd-bad");
    let _cleanup = RemoveOnDrop(dir.clone());
    let cfg = etcd_config(&dir, "ttl = 10\nloop_wait = 4\nretry_timeout = 4\n");
    let (code, out, err) = output(pgha().arg("check-config").arg("--config").arg(&cfg));
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(out.is_empty(), "{out}");
    let want = format!(
        "pgha: {}: etcd.loop_wait (4 s) + 2 x etcd.retry_timeout (2 x 4 s) = 12 s exceeds etcd.ttl (10 s)",
        cfg.display()
    );
    assert!(err.starts_with(&want), "{err}");
}

#[test]
fn run_refuses_an_etcd_configuration_with_exit_2_before_starting_anything() {
    use std::os::unix::process::CommandExt;
    let dir = tempdir("etcd-run");
    let _cleanup = RemoveOnDrop(dir.clone());
    let cfg = etcd_config(&dir, "");
    let mut cmd = pgha();
    cmd.arg("run").arg("--config").arg(&cfg);
    if nix::unistd::geteuid().is_root() {
        // pgha refuses root first; run it as nobody (the file and its directory are
        // world-readable).
        cmd.uid(65534).gid(65534);
    }
    let (code, out, err) = output(&mut cmd);
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(
        err.contains("etcd mode is not built yet (issue 13)") && err.contains("remove [etcd]"),
        "{err}"
    );
    // Nothing was started or created: no journal, no data dir, no lock.
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["db0.toml"]);
}
