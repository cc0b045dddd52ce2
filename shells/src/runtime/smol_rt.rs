//! The `smol` runtime: one async main loop that races the next message against an
//! `async-io` timer set to the core's next deadline; probes and actions are blocking work run
//! through `smol::unblock` (the `postgres` stack and the programs are synchronous). Probes run
//! concurrently; actions run one at a time on one task, each through the same
//! [`run_action`] as the threads runtime (time limit, hook, logging).

use async_io::Timer;
use pgha_core::Command;
use smol::channel::{Receiver, Sender};

use super::{Flow, Msg, handle, run_action, started, wait_for};
use crate::daemon::{Daemon, Step, Stop};
use crate::effectors::{Effectors, ProbeTarget};

/// Runs the daemon until `Msg::Stop` arrives on `rx` (or an error stops it); the journal's
/// last row of the run says why. Returns why.
pub fn run(mut d: Daemon, eff: Effectors, tx: Sender<Msg>, rx: Receiver<Msg>) -> Stop {
    let stop = smol::block_on(drive(&mut d, eff, tx, rx));
    d.close(&stop);
    stop
}

async fn drive(d: &mut Daemon, eff: Effectors, tx: Sender<Msg>, rx: Receiver<Msg>) -> Stop {
    let (action_tx, action_rx) = smol::channel::unbounded::<Command>();
    {
        let eff = eff.clone();
        let tx = tx.clone();
        smol::spawn(async move {
            while let Ok(c) = action_rx.recv().await {
                let e = eff.clone();
                let (outcome, duration_ms) =
                    smol::unblock(move || run_action(&e, c.id, c.kind)).await;
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
    let mut flow = started(d, facts);
    loop {
        match flow {
            Flow::Carry(step) => carry(step),
            Flow::Stop(stop) => return stop,
        }
        let wait = wait_for(d.now(), d.next_deadline());
        let msg = smol::future::or(async { rx.recv().await.ok() }, async {
            Timer::after(wait).await;
            None
        })
        .await;
        if msg.is_none() && rx.is_closed() {
            return Stop::Error("the main loop's channel closed".into());
        }
        flow = handle(d, msg);
    }
}
