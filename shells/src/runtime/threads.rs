//! The `threads` runtime: the main loop waits on a channel with `recv_timeout` until the
//! core's next deadline; probes and the workers run on threads of their own.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use super::Msg;
use crate::daemon::{Daemon, Stop};
use crate::driver::{self, Effects, Job, Runtime, Sender};

struct Threads {
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
}

impl Runtime for Threads {
    fn next(&mut self, timeout: Duration) -> Result<Option<Msg>, ()> {
        match self.rx.recv_timeout(timeout) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(()),
        }
    }

    fn spawn(&self, name: &'static str, job: Job) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(job)
            .map(|_| ())
    }

    fn sender(&self) -> Sender {
        let tx = self.tx.clone();
        std::sync::Arc::new(move |m| tx.send(m).is_ok())
    }
}

/// Runs the daemon until `Msg::Stop` arrives on `rx` (or an error stops it); the journal's
/// last row of the run says why. Returns why.
pub fn run<E: Effects>(d: Daemon, eff: E, tx: mpsc::Sender<Msg>, rx: mpsc::Receiver<Msg>) -> Stop {
    driver::run(d, eff, &mut Threads { tx, rx })
}
