//! The `smol` runtime: one async main loop that races the next message against an
//! `async-io` timer set to the core's next deadline; probes and actions are blocking work run
//! through `smol::unblock` (the `postgres` stack and the programs are synchronous). Probes run
//! concurrently; actions run one at a time on one task, each raced against its time limit.

use std::time::Instant;

use async_io::Timer;
use pgha_core::{Command, Event, Failure, Input};
use smol::channel::{Receiver, Sender};

use super::{Msg, handle, wait_for};
use crate::daemon::{Daemon, Step};
use crate::effectors::{Effectors, ProbeTarget};

/// Runs the daemon until `Msg::Stop` arrives on `rx`.
pub fn run(
    mut d: Daemon,
    eff: Effectors,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
) -> Result<(), String> {
    smol::block_on(async move {
        let (action_tx, action_rx) = smol::channel::unbounded::<Command>();
        {
            let eff = eff.clone();
            let tx = tx.clone();
            smol::spawn(async move {
                while let Ok(c) = action_rx.recv().await {
                    let start = Instant::now();
                    let limit = eff.time_limit(c.kind);
                    let e = eff.clone();
                    let (id, kind) = (c.id, c.kind);
                    let work = smol::unblock(move || e.act(id, kind));
                    let outcome = smol::future::or(work, async move {
                        Timer::after(limit).await;
                        log::error!(
                            "{}: no outcome within {:.0} s",
                            kind.name(),
                            limit.as_secs_f64()
                        );
                        Err(Failure::Timeout)
                    })
                    .await;
                    let duration_ms = start.elapsed().as_millis() as u64;
                    if let Err(f) = outcome {
                        log::warn!("{} failed after {duration_ms} ms: {f:?}", kind.name());
                    }
                    if tx
                        .send(Msg::Done {
                            id: c.id,
                            outcome,
                            duration_ms,
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .detach();
        }
        let carry = |step: Step| {
            for c in step.commands {
                match ProbeTarget::of(c.kind) {
                    Some(target) => {
                        let eff = eff.clone();
                        let tx = tx.clone();
                        smol::spawn(async move {
                            let detail = smol::unblock(move || eff.probe(target)).await;
                            let _ = tx.send(Msg::Probe { id: c.id, detail }).await;
                        })
                        .detach();
                    }
                    None => {
                        let _ = action_tx.try_send(c);
                    }
                }
            }
        };

        let facts = {
            let eff = eff.clone();
            smol::unblock(move || eff.local_facts()).await
        };
        log::info!("local facts: {facts:?}");
        carry(d.step(Input::Event(Event::Started(facts)))?);
        loop {
            let wait = wait_for(d.now(), d.next_deadline());
            let msg = smol::future::or(async { rx.recv().await.ok() }, async {
                Timer::after(wait).await;
                None
            })
            .await;
            if msg.is_none() && rx.is_closed() {
                break;
            }
            match handle(&mut d, msg)? {
                Some(step) => carry(step),
                None => break,
            }
        }
        d.close();
        Ok(())
    })
}
