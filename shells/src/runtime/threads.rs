//! The `threads` runtime: the main loop waits on a channel with `recv_timeout` until the
//! core's next deadline; probes run on threads of their own (concurrently, each bounded by
//! `connect_timeout`); actions run one at a time, in the order polled, on one worker thread.

use std::sync::mpsc::{self, RecvTimeoutError};

use pgha_core::Command;

use super::{Flow, Msg, handle, run_action, started, wait_for};
use crate::daemon::{Daemon, Step, Stop};
use crate::effectors::{Effectors, ProbeTarget};

/// Runs the daemon until `Msg::Stop` arrives on `rx` (or an error stops it); the journal's
/// last row of the run says why. Returns why.
pub fn run(mut d: Daemon, eff: Effectors, tx: mpsc::Sender<Msg>, rx: mpsc::Receiver<Msg>) -> Stop {
    let stop = drive(&mut d, eff, tx, rx);
    d.close(&stop);
    stop
}

fn drive(d: &mut Daemon, eff: Effectors, tx: mpsc::Sender<Msg>, rx: mpsc::Receiver<Msg>) -> Stop {
    let (action_tx, action_rx) = mpsc::channel::<Command>();
    {
        let eff = eff.clone();
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("pgha-actions".into())
            .spawn(move || {
                for c in action_rx {
                    let (outcome, duration_ms) = run_action(&eff, c.id, c.kind);
                    if tx
                        .send(Msg::Done {
                            id: c.id,
                            outcome,
                            duration_ms,
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            return Stop::Error(format!("cannot start the action worker: {e}"));
        }
    }
    let carry = |step: Step| {
        for c in step.commands {
            match ProbeTarget::of(c.kind) {
                Some(target) => {
                    let eff = eff.clone();
                    let tx = tx.clone();
                    let spawned =
                        std::thread::Builder::new()
                            .name("pgha-probe".into())
                            .spawn(move || {
                                let detail = eff.probe(target);
                                let _ = tx.send(Msg::Probe { id: c.id, detail });
                            });
                    if let Err(e) = spawned {
                        // The core times the probe out at connect_timeout.
                        log::error!("cannot start a probe thread: {e}");
                    }
                }
                None => {
                    let _ = action_tx.send(c);
                }
            }
        }
    };

    let mut flow = started(d, eff.local_facts());
    loop {
        match flow {
            Flow::Carry(step) => carry(step),
            Flow::Stop(stop) => return stop,
        }
        let wait = wait_for(d.now(), d.next_deadline());
        let msg = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                return Stop::Error("the main loop's channel closed".into());
            }
        };
        flow = handle(d, msg);
    }
}
