//! Running an external program with a time limit: its stderr and stdout are logged, its
//! outcome returned as a typed [`Failure`]. The running child's PID is published so a daemon
//! that is asked to stop can end it.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pgha_core::Failure;

/// The PIDs of the programs running now (at most one action plus the odd helper).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Sends SIGTERM to every program started here that still runs (daemon shutdown).
pub fn terminate_running() {
    let pids = RUNNING.lock().map(|v| v.clone()).unwrap_or_default();
    for pid in pids {
        log::info!("stopping child process {pid}");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

fn forget(pid: u32) {
    if let Ok(mut v) = RUNNING.lock() {
        v.retain(|p| *p != pid);
    }
}

/// The captured output of a finished program.
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: String,
}

/// Runs `cmd` to completion or until `limit`, when it is killed. `what` names it in logs.
pub fn run(what: &str, cmd: Command, limit: Duration) -> Result<Output, Failure> {
    run_capturing(what, cmd, limit).0
}

/// As [`run`], with what the program wrote to stderr (empty when it could not start).
pub fn run_capturing(
    what: &str,
    mut cmd: Command,
    limit: Duration,
) -> (Result<Output, Failure>, String) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    log::debug!("{what}: running {cmd:?}");
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            log::error!("{what}: cannot start {:?}: {e}", cmd.get_program());
            return (Err(Failure::Io), String::new());
        }
    };
    let pid = child.id();
    if let Ok(mut v) = RUNNING.lock() {
        v.push(pid);
    }
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() >= limit => {
                log::warn!(
                    "{what}: still running after {:.1} s, killing it",
                    limit.as_secs_f64()
                );
                let _ = child.kill();
                let _ = child.wait();
                break Err(Failure::Timeout);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                log::error!("{what}: wait failed: {e}");
                let _ = child.kill();
                let _ = child.wait();
                break Err(Failure::Io);
            }
        }
    };
    forget(pid);
    // A program that daemonizes (pg_ctl start) may leave its pipes to the server; do not wait
    // for them longer than a moment.
    let stderr = join_bounded(err_reader);
    let stdout = join_bounded(out_reader);
    // A program's stderr is logged: at debug when it succeeded (initdb's notices), at warn
    // when it failed (the reason).
    let failed = !matches!(&status, Ok(s) if s.success());
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        if failed {
            log::warn!("{what}: {line}");
        } else {
            log::debug!("{what}: {line}");
        }
    }
    let result = match status {
        Err(f) => Err(f),
        Ok(status) if status.success() => Ok(Output { stdout }),
        Ok(status) => match status.signal() {
            Some(sig) => {
                log::warn!("{what}: killed by signal {sig}");
                Err(Failure::Signal(sig))
            }
            None => {
                let code = status.code().unwrap_or(-1);
                for line in stdout.lines().filter(|l| !l.trim().is_empty()).take(20) {
                    log::info!("{what}: {line}");
                }
                log::warn!("{what}: exited with code {code}");
                Err(Failure::Exit(code))
            }
        },
    };
    (result, stderr)
}

fn join_bounded(h: std::thread::JoinHandle<String>) -> String {
    let start = Instant::now();
    while !h.is_finished() {
        if start.elapsed() > Duration::from_millis(500) {
            return String::new();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    h.join().unwrap_or_default()
}
