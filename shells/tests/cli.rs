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
