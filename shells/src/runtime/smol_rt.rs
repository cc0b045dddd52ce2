//! The `smol` runtime: the main loop races the next message against an `async-io` timer set
//! to the core's next deadline; probes and the workers are blocking work on `smol`'s blocking
//! pool (the `postgres` stack and the programs are synchronous).

use std::time::Duration;

use async_io::Timer;
use smol::channel::{Receiver, Sender as Tx};

use super::Msg;
use crate::daemon::{Daemon, Stop};
use crate::driver::{self, Effects, Job, Runtime, Sender};

struct Smol {
    tx: Tx<Msg>,
    rx: Receiver<Msg>,
}

impl Runtime for Smol {
    fn next(&mut self, timeout: Duration) -> Result<Option<Msg>, ()> {
        let msg = smol::block_on(smol::future::or(
            async { self.rx.recv().await.ok() },
            async {
                Timer::after(timeout).await;
                None
            },
        ));
        if msg.is_none() && self.rx.is_closed() {
            return Err(());
        }
        Ok(msg)
    }

    fn spawn(&self, _name: &'static str, job: Job) -> std::io::Result<()> {
        smol::unblock(job).detach();
        Ok(())
    }

    fn sender(&self) -> Sender {
        let tx = self.tx.clone();
        std::sync::Arc::new(move |m| tx.try_send(m).is_ok())
    }
}

/// Runs the daemon until `Msg::Stop` arrives on `rx` (or an error stops it); the journal's
/// last row of the run says why. Returns why.
pub fn run<E: Effects>(d: Daemon, eff: E, tx: Tx<Msg>, rx: Receiver<Msg>) -> Stop {
    driver::run(d, eff, &mut Smol { tx, rx })
}
