//! The two runtimes that drive the core: `threads` (blocking threads and a channel) and
//! `smol` (async timers, blocking work through `smol::unblock`). Both follow the drain loop of
//! `pgha_core`'s crate documentation; neither decides anything.

pub mod smol_rt;
pub mod threads;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use pgha_core::{CommandId, CommandKind, Failure, OperatorRequest};
use serde::Serialize;

use pgha_core::{Event, Input};

use crate::daemon::{Daemon, Step, Stop, TransitionView, render};
use crate::effectors::{Effectors, Probed};
use crate::error::DaemonError;

/// A message to a runtime's main loop.
#[derive(Debug)]
pub enum Msg {
    Probe {
        id: CommandId,
        detail: Probed,
    },
    Done {
        id: CommandId,
        outcome: Result<(), Failure>,
        duration_ms: u64,
    },
    Operator {
        request: OperatorRequest,
        reply: mpsc::Sender<OperatorReply>,
    },
    /// End the main loop; the journal's `stop` row gives the cause.
    Stop(Stop),
}

/// What the daemon did with an operator request.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorReply {
    pub request: String,
    pub accepted: bool,
    pub transitions: Vec<TransitionView>,
    pub role: String,
    pub state: String,
}

impl OperatorReply {
    pub fn new(
        request: OperatorRequest,
        step: &Step,
        cfg: &pgha_core::Config,
        state: pgha_core::State,
    ) -> OperatorReply {
        let refused = step.transitions.iter().any(|t| t.reason.is_refusal());
        OperatorReply {
            request: request.name().to_string(),
            accepted: !refused && !step.transitions.is_empty(),
            transitions: step.transitions.iter().map(|t| render(t, cfg)).collect(),
            role: state.role().name().to_string(),
            state: state.name().to_string(),
        }
    }
}

/// What the main loop does next.
#[derive(Debug)]
pub enum Flow {
    /// Carry out the step's commands and go on.
    Carry(Step),
    /// Stop, for this reason.
    Stop(Stop),
}

impl From<Result<Step, DaemonError>> for Flow {
    fn from(r: Result<Step, DaemonError>) -> Flow {
        match r {
            Ok(step) => Flow::Carry(step),
            Err(e) => Flow::Stop(Stop::Error(e.to_string())),
        }
    }
}

/// Feeds one message to the core (a timer when `msg` is `None`) and says what to do next:
/// carry out a step, or stop (asked to, or the journal could not be written). Operator
/// requests are answered here with what they produced.
pub fn handle(d: &mut Daemon, msg: Option<Msg>) -> Flow {
    match msg {
        None => d.step(Input::Timeout).into(),
        Some(Msg::Stop(stop)) => Flow::Stop(stop),
        Some(Msg::Probe { id, detail }) => d.probe_done(id, detail).into(),
        Some(Msg::Done {
            id,
            outcome,
            duration_ms,
        }) => d
            .step(Input::Event(Event::CommandDone {
                id,
                outcome,
                duration_ms,
            }))
            .into(),
        Some(Msg::Operator { request, reply }) => {
            let step = d.operator(request);
            if let Ok(step) = &step {
                let answer = OperatorReply::new(request, step, &d.config().core, d.state());
                let _ = reply.send(answer);
            }
            step.into()
        }
    }
}

/// The first step of both runtimes: the local facts, fed as `Event::Started`.
pub fn started(d: &mut Daemon, facts: pgha_core::LocalFacts) -> Flow {
    log::info!("local facts: {facts:?}");
    d.step(Input::Event(Event::Started(facts))).into()
}

/// Carries out one action with its time limit, then queues its `[hooks]` command: what
/// both runtimes' action workers run for every action (blocking; the smol runtime runs it
/// through `smol::unblock`), so neither can skip a hook. The effector bounds its own
/// programs; this bound is the backstop. Returns the outcome and duration.
pub fn run_action(eff: &Effectors, id: CommandId, kind: CommandKind) -> (Result<(), Failure>, u64) {
    let start = Instant::now();
    let limit = eff.time_limit(kind);
    let (tx, rx) = mpsc::channel();
    let e = eff.clone();
    let spawned = std::thread::Builder::new()
        .name("pgha-action".into())
        .spawn(move || {
            let _ = tx.send(e.act(id, kind));
        });
    let outcome = match spawned {
        Err(e) => {
            log::error!("{}: cannot start a thread: {e}", kind.name());
            Err(Failure::Io)
        }
        Ok(_) => match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(_) => {
                log::error!(
                    "{}: no outcome within {:.0} s",
                    kind.name(),
                    limit.as_secs_f64()
                );
                Err(Failure::Timeout)
            }
        },
    };
    eff.after_hook(kind, &outcome);
    let ms = start.elapsed().as_millis() as u64;
    match outcome {
        Ok(()) => log::debug!("{} succeeded in {ms} ms", kind.name()),
        Err(f) => log::warn!("{} failed after {ms} ms: {f:?}", kind.name()),
    }
    (outcome, ms)
}

/// Milliseconds until `deadline` from `now`, capped so a loop wakes now and then.
pub fn wait_for(now: pgha_core::Timestamp, deadline: Option<pgha_core::Timestamp>) -> Duration {
    match deadline {
        Some(d) => Duration::from_millis(d.since(now)),
        None => Duration::from_secs(3600),
    }
}
