//! The `threads` runtime: the main loop waits on a channel with `recv_timeout` until the
//! core's next deadline; probes run on threads of their own (concurrently, each bounded by
//! `connect_timeout`); actions run one at a time, in the order polled, on one worker thread.

use std::sync::mpsc::{self, RecvTimeoutError};

use pgha_core::{Command, Event, Input};

use super::{Msg, handle, run_action, wait_for};
use crate::daemon::{Daemon, Step};
use crate::effectors::{Effectors, ProbeTarget};

/// Runs the daemon until `Msg::Stop` arrives on `rx` (or every sender is gone).
pub fn run(
    mut d: Daemon,
    eff: Effectors,
    tx: mpsc::Sender<Msg>,
    rx: mpsc::Receiver<Msg>,
) -> Result<(), String> {
    let (action_tx, action_rx) = mpsc::channel::<Command>();
    {
        let eff = eff.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
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
            })
            .map_err(|e| format!("cannot start the action worker: {e}"))?;
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

    let facts = eff.local_facts();
    log::info!("local facts: {facts:?}");
    carry(d.step(Input::Event(Event::Started(facts)))?);
    loop {
        let wait = wait_for(d.now(), d.next_deadline());
        let msg = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match handle(&mut d, msg)? {
            Some(step) => carry(step),
            None => break,
        }
    }
    d.close();
    Ok(())
}
