//! The one shell driver both runtimes share: it feeds the core (through the journal), carries
//! out what the core asks through an [`Effects`] implementation, and answers operators. What
//! it does, in the core's drain-loop order (`pgha_core`'s crate documentation):
//!
//! * probes run concurrently, each on a job of its own; a probe's target travels with its
//!   result back to the core;
//! * actions run one at a time, in the order the core issued them, on one action worker, each
//!   with its time limit; the role-change hook is such an action;
//! * after an action, its per-command hook (`[hooks] on_promote`, ...) is queued to a hooks
//!   worker that runs them in order, so a slow hook never delays the next action; every hook
//!   carries its command's [`HookContext`], and its outcome returns to the core
//!   ([`Event::HookDone`]) to be journaled;
//! * an operator request is answered with the core's answer ([`pgha_core::OperatorAnswer`]).
//!
//! A runtime ([`Runtime`]) only says how to wait for the next message and where blocking
//! work runs: `threads` (threads and a channel) and `smol` (an async timer and channel, the
//! blocking pool). No policy here.

use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use pgha_core::{
    Command, CommandId, CommandKind, Event, Failure, Hook, HookExit, HookOutcome, HookRun, Input,
    LocalFacts, OperatorRequest, StderrTail, Timestamp,
};
use serde::Serialize;

use crate::daemon::{Daemon, Step, Stop, TransitionView, render};
use crate::effectors::{Effectors, HookCall, HookContext, ProbeTarget, Probed};
use crate::error::DaemonError;

/// What the driver needs of the world: the real one is [`Effectors`]; tests use a fake.
/// Every method blocks; the driver calls them off the main loop (except `local_facts`).
pub trait Effects: Clone + Send + Sync + 'static {
    /// The facts the core starts from.
    fn local_facts(&self) -> LocalFacts;
    /// One probe, bounded by `connect_timeout` as a whole.
    fn probe(&self, target: ProbeTarget) -> Probed;
    /// One action (not a probe, not a hook).
    fn act(&self, id: CommandId, kind: CommandKind) -> Result<(), Failure>;
    /// The hook `call` names, when `[hooks]` configures it.
    fn run_hook(&self, call: &HookCall) -> Option<HookOutcome>;
    /// An action's time limit; past it the action counts as [`Failure::Timeout`].
    fn time_limit(&self, kind: CommandKind) -> Duration;
}

impl Effects for Effectors {
    fn local_facts(&self) -> LocalFacts {
        Effectors::local_facts(self)
    }
    fn probe(&self, target: ProbeTarget) -> Probed {
        Effectors::probe(self, target)
    }
    fn act(&self, id: CommandId, kind: CommandKind) -> Result<(), Failure> {
        Effectors::act(self, id, kind)
    }
    fn run_hook(&self, call: &HookCall) -> Option<HookOutcome> {
        Effectors::run_hook(self, call)
    }
    fn time_limit(&self, kind: CommandKind) -> Duration {
        Effectors::time_limit(self, kind)
    }
}

/// A message to the main loop.
#[derive(Debug)]
pub enum Msg {
    /// A probe's result, with what it probed.
    Probe {
        id: CommandId,
        target: ProbeTarget,
        probed: Probed,
    },
    /// An action finished.
    Done {
        id: CommandId,
        outcome: Result<(), Failure>,
        duration_ms: u64,
    },
    /// A hook finished.
    Hook { hook: HookRun, outcome: HookOutcome },
    Operator {
        request: OperatorRequest,
        reply: mpsc::Sender<OperatorReply>,
    },
    /// End the main loop; the journal's `stop` row gives the cause.
    Stop(Stop),
}

/// Sends a message to the main loop; false once it is gone.
pub type Sender = Arc<dyn Fn(Msg) -> bool + Send + Sync>;

/// Blocking work run off the main loop.
pub type Job = Box<dyn FnOnce() + Send>;

/// How a runtime waits: what differs between `threads` and `smol`.
pub trait Runtime {
    /// The next message, `Ok(None)` when `timeout` passed without one, `Err(())` once no
    /// sender is left.
    #[allow(clippy::result_unit_err)]
    fn next(&mut self, timeout: Duration) -> Result<Option<Msg>, ()>;
    /// Runs `job` off the main loop (a probe, a worker): concurrently with the loop and with
    /// other jobs.
    fn spawn(&self, name: &'static str, job: Job) -> std::io::Result<()>;
    /// How jobs send messages to the main loop.
    fn sender(&self) -> Sender;
}

/// What the daemon did with an operator request: the core's answer, with the transitions
/// that carried it out (or that say why it was refused) and the state after.
#[derive(Debug, Clone, Serialize)]
pub struct OperatorReply {
    pub request: String,
    pub accepted: bool,
    pub transitions: Vec<TransitionView>,
    pub role: String,
    pub state: String,
}

/// An action for the action worker, with the context its hooks run with.
struct Action {
    command: Command,
    ctx: HookContext,
}

/// Runs the daemon until a [`Msg::Stop`] arrives (or an error stops it): the journal's last
/// row of the run says why. Returns why.
pub fn run<E: Effects, R: Runtime>(mut d: Daemon, eff: E, rt: &mut R) -> Stop {
    let stop = drive(&mut d, eff, rt);
    d.close(&stop);
    stop
}

fn drive<E: Effects, R: Runtime>(d: &mut Daemon, eff: E, rt: &mut R) -> Stop {
    let send = rt.sender();
    let (hook_tx, hook_rx) = mpsc::channel::<HookCall>();
    let (action_tx, action_rx) = mpsc::channel::<Action>();
    let workers: [(&str, Job); 2] = [
        ("pgha-hooks", {
            let (eff, send) = (eff.clone(), send.clone());
            Box::new(move || hook_worker(&eff, hook_rx, &send))
        }),
        ("pgha-actions", {
            let (eff, send) = (eff.clone(), send.clone());
            Box::new(move || action_worker(&eff, action_rx, &hook_tx, &send))
        }),
    ];
    for (name, job) in workers {
        if let Err(e) = rt.spawn(name, job) {
            return Stop::Error(format!("cannot start the {name} worker: {e}"));
        }
    }
    let facts = eff.local_facts();
    log::info!("local facts: {facts:?}");
    let mut next = d.step(Input::Event(Event::Started(facts)));
    loop {
        match next {
            Ok(step) => carry(d, &eff, rt, &send, &action_tx, step),
            Err(e) => return Stop::Error(e.to_string()),
        }
        next = match rt.next(wait_for(d.now(), d.next_deadline())) {
            Ok(None) => d.step(Input::Timeout),
            Ok(Some(msg)) => match handle(d, msg) {
                Ok(step) => step,
                Err(stop) => return stop,
            },
            Err(()) => return Stop::Error("the main loop's channel closed".into()),
        };
    }
}

/// Feeds one message to the core; `Err` to stop (asked to). Operator requests are answered
/// here with the core's answer.
fn handle(d: &mut Daemon, msg: Msg) -> Result<Result<Step, DaemonError>, Stop> {
    Ok(match msg {
        Msg::Stop(stop) => return Err(stop),
        Msg::Probe { id, target, probed } => d.probe_done(id, target, probed),
        Msg::Done {
            id,
            outcome,
            duration_ms,
        } => d.step(Input::Event(Event::CommandDone {
            id,
            outcome,
            duration_ms,
        })),
        Msg::Hook { hook, outcome } => d.step(Input::Event(Event::HookDone { hook, outcome })),
        Msg::Operator { request, reply } => {
            let step = d.operator(request);
            if let Ok(step) = &step {
                let cfg = &d.config().core;
                let state = d.state();
                let _ = reply.send(OperatorReply {
                    request: request.name().to_string(),
                    accepted: step.answer.is_some_and(|a| a.accepted()),
                    transitions: step.transitions.iter().map(|t| render(t, cfg)).collect(),
                    role: state.role().name().to_string(),
                    state: state.name().to_string(),
                });
            }
            step
        }
    })
}

/// Carries out a step's commands: probes on jobs of their own, actions queued to the action
/// worker with the node's context now.
fn carry<E: Effects, R: Runtime>(
    d: &Daemon,
    eff: &E,
    rt: &R,
    send: &Sender,
    actions: &mpsc::Sender<Action>,
    step: Step,
) {
    let mut ctx = None;
    for command in step.commands {
        match ProbeTarget::of(command.kind) {
            Some(target) => {
                let (eff, send) = (eff.clone(), send.clone());
                let job = Box::new(move || {
                    let probed = eff.probe(target);
                    send(Msg::Probe {
                        id: command.id,
                        target,
                        probed,
                    });
                });
                if let Err(e) = rt.spawn("pgha-probe", job) {
                    // The core times the probe out at connect_timeout.
                    log::error!("cannot start a probe: {e}");
                }
            }
            None => {
                let ctx = ctx.get_or_insert_with(|| d.hook_context()).clone();
                let _ = actions.send(Action { command, ctx });
            }
        }
    }
}

/// Runs actions one at a time, in order: each with its time limit, then queues its
/// per-command hook and reports it.
fn action_worker<E: Effects>(
    eff: &E,
    actions: mpsc::Receiver<Action>,
    hooks: &mpsc::Sender<HookCall>,
    send: &Sender,
) {
    for Action { command, ctx } in actions {
        let Command { id, kind } = command;
        let (outcome, duration_ms, hook) = run_action(eff, id, kind, &ctx);
        if kind.hook_key().is_some() {
            let call = HookCall {
                hook: HookRun::After { id, kind },
                ctx,
                outcome: Some(outcome),
            };
            if hooks.send(call).is_err() {
                log::warn!(
                    "hook after {}: the hook worker is gone; not run",
                    kind.name()
                );
            }
        }
        if !send(Msg::Done {
            id,
            outcome,
            duration_ms,
        }) {
            break;
        }
        if let Some((hook, outcome)) = hook {
            send(Msg::Hook { hook, outcome });
        }
    }
}

/// Runs the per-command hooks in order and reports each that ran.
fn hook_worker<E: Effects>(eff: &E, calls: mpsc::Receiver<HookCall>, send: &Sender) {
    for call in calls {
        if let Some(outcome) = eff.run_hook(&call)
            && !send(Msg::Hook {
                hook: call.hook,
                outcome,
            })
        {
            break;
        }
    }
}

/// Carries out one action with its time limit (the effector bounds its own programs; this
/// bound is the backstop): its outcome, duration and, for the role-change hook, the hook's
/// outcome.
fn run_action<E: Effects>(
    eff: &E,
    id: CommandId,
    kind: CommandKind,
    ctx: &HookContext,
) -> (Result<(), Failure>, u64, Option<(HookRun, HookOutcome)>) {
    let start = Instant::now();
    let limit = eff.time_limit(kind);
    let hook = match kind {
        CommandKind::RunHook(Hook::RoleChange { role }) => Some(HookRun::RoleChange { id, role }),
        _ => None,
    };
    let (tx, rx) = mpsc::channel();
    let e = eff.clone();
    let call = hook.map(|hook| HookCall {
        hook,
        ctx: ctx.clone(),
        outcome: None,
    });
    let spawned = std::thread::Builder::new()
        .name("pgha-action".into())
        .spawn(move || {
            let _ = tx.send(match &call {
                // No `on_role_change` configured: nothing to run.
                Some(call) => e
                    .run_hook(call)
                    .map_or((Ok(()), None), |o| (o.result(), Some(o))),
                None => (e.act(id, kind), None),
            });
        });
    let (outcome, ran) = match spawned {
        Err(e) => {
            log::error!("{}: cannot start a thread: {e}", kind.name());
            (Err(Failure::Io), None)
        }
        Ok(_) => match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(_) => {
                log::error!(
                    "{}: no outcome within {:.0} s",
                    kind.name(),
                    limit.as_secs_f64()
                );
                let timed_out = hook.map(|_| HookOutcome {
                    exit: HookExit::TimedOut,
                    duration_ms: start.elapsed().as_millis() as u64,
                    stderr: StderrTail::default(),
                });
                (Err(Failure::Timeout), timed_out)
            }
        },
    };
    let ms = start.elapsed().as_millis() as u64;
    match outcome {
        Ok(()) => log::debug!("{} succeeded in {ms} ms", kind.name()),
        Err(f) => log::warn!("{} failed after {ms} ms: {f:?}", kind.name()),
    }
    (outcome, ms, hook.zip(ran))
}

/// Milliseconds until `deadline` from `now`, capped so a loop wakes now and then.
fn wait_for(now: Timestamp, deadline: Option<Timestamp>) -> Duration {
    match deadline {
        Some(d) => Duration::from_millis(d.since(now)),
        None => Duration::from_secs(3600),
    }
}

#[cfg(test)]
mod tests {
    //! The driver with a fake [`Effects`]: no root, no PostgreSQL. The core and the journal
    //! are real; the fake records what it is asked and answers as a fresh node's postgres
    //! would (refused until started, then a master).

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use pgha_core::{DataDir, Lsn, ProbeResult};

    use super::*;
    use crate::daemon::Status;
    use crate::effectors::ProbeDetail;
    use crate::testutil::RemoveOnDrop;

    const WAIT: Duration = Duration::from_secs(20);

    #[derive(Default)]
    struct Record {
        /// In order: `act <name>`, `hook <key>`.
        log: Mutex<Vec<String>>,
        hooks: Mutex<Vec<HookCall>>,
        acting: AtomicUsize,
        most_acting: AtomicUsize,
        probing: AtomicUsize,
        most_probing: AtomicUsize,
        /// The first two peer probes wait for each other (up to a bound).
        rendezvous: AtomicUsize,
        started: AtomicBool,
    }

    #[derive(Clone, Default)]
    struct Fake(Arc<Record>);

    fn busy(now: &AtomicUsize, most: &AtomicUsize) {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(n, Ordering::SeqCst);
    }

    impl Effects for Fake {
        fn local_facts(&self) -> LocalFacts {
            LocalFacts {
                data_dir: DataDir::Empty { held_data: false },
                postgres_running: false,
                fenced: false,
            }
        }

        fn probe(&self, target: ProbeTarget) -> Probed {
            let r = &self.0;
            busy(&r.probing, &r.most_probing);
            if target != ProbeTarget::Local
                && r.rendezvous
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                let since = Instant::now();
                while r.most_probing.load(Ordering::SeqCst) < 2 && since.elapsed() < WAIT {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let result = if r.started.load(Ordering::SeqCst) {
                ProbeResult::Master {
                    timeline: 1,
                    lsn: Lsn(0x300_0000),
                }
            } else {
                ProbeResult::Refused
            };
            r.probing.fetch_sub(1, Ordering::SeqCst);
            match target {
                ProbeTarget::Local => Probed::Postgres(ProbeDetail {
                    result,
                    streaming: false,
                }),
                ProbeTarget::Peer(_) => Probed::Postgres(ProbeDetail {
                    result: ProbeResult::Refused,
                    streaming: false,
                }),
                ProbeTarget::PeerDaemon(_) => Probed::Daemon(None),
            }
        }

        fn act(&self, _id: CommandId, kind: CommandKind) -> Result<(), Failure> {
            let r = &self.0;
            busy(&r.acting, &r.most_acting);
            r.log.lock().unwrap().push(format!("act {}", kind.name()));
            std::thread::sleep(Duration::from_millis(5));
            if kind == CommandKind::StartPostgres(pgha_core::StartAs::Master) {
                r.started.store(true, Ordering::SeqCst);
            }
            r.acting.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }

        fn run_hook(&self, call: &HookCall) -> Option<HookOutcome> {
            let r = &self.0;
            r.log
                .lock()
                .unwrap()
                .push(format!("hook {}", call.hook.key()));
            r.hooks.lock().unwrap().push(call.clone());
            Some(HookOutcome {
                exit: HookExit::Code(if call.hook.key() == "on_start" { 3 } else { 0 }),
                duration_ms: 7,
                stderr: StderrTail::of("a hook's last words"),
            })
        }

        fn time_limit(&self, _kind: CommandKind) -> Duration {
            WAIT
        }
    }

    /// A daemon on a fake world, run by the `rt` runtime on a thread of its own.
    struct Running {
        fake: Fake,
        status: Arc<Mutex<Status>>,
        journal: PathBuf,
        submit: Sender,
        done: std::thread::JoinHandle<Stop>,
        _dir: RemoveOnDrop,
    }

    fn start(name: &str, rt: &str) -> Running {
        let dir =
            std::env::temp_dir().join(format!("pgha-driver-{name}-{rt}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The sample pair, quicker, with hooks.
        let text = crate::config::tests::sample(&dir).replace(
            "grace = 15\nconnect_timeout = 5",
            "grace = 1\nconnect_timeout = 1",
        ) + "\n[hooks]\non_role_change = \"true\"\non_initdb = \"true\"\non_start = \"true\"\n";
        assert!(text.contains("grace = 1\n"), "the sample changed: {text}");
        let (cfg, _) = crate::config::parse(Path::new("test.toml"), &text).unwrap();
        let cfg = Arc::new(cfg);
        let journal = cfg.journal.clone();
        let d = Daemon::open(cfg, text, rt).unwrap();
        let status = d.status_handle();
        let fake = Fake::default();
        fake.0.rendezvous.store(2, Ordering::SeqCst);
        let eff = fake.clone();
        let (submit, done): (Sender, std::thread::JoinHandle<Stop>) = match rt {
            "threads" => {
                let (tx, rx) = mpsc::channel();
                let t2 = tx.clone();
                (
                    Arc::new(move |m| t2.send(m).is_ok()),
                    std::thread::spawn(move || crate::runtime::threads::run(d, eff, tx, rx)),
                )
            }
            _ => {
                let (tx, rx) = smol::channel::unbounded();
                let t2 = tx.clone();
                (
                    Arc::new(move |m| t2.try_send(m).is_ok()),
                    std::thread::spawn(move || crate::runtime::smol_rt::run(d, eff, tx, rx)),
                )
            }
        };
        Running {
            fake,
            status,
            journal,
            submit,
            done,
            _dir: RemoveOnDrop(dir),
        }
    }

    impl Running {
        fn wait_state(&self, state: &str) {
            let since = Instant::now();
            while self.status.lock().unwrap().state.name() != state {
                assert!(since.elapsed() < WAIT, "no {state} within {WAIT:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        /// Waits until `done` holds of the fake's record.
        fn wait_for(&self, what: &str, done: impl Fn(&Record) -> bool) {
            let since = Instant::now();
            while !done(&self.fake.0) {
                assert!(since.elapsed() < WAIT, "no {what} within {WAIT:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }

        fn stop(self) -> (Stop, pgha_journal::JournalFile) {
            (self.submit)(Msg::Stop(Stop::Signal("SIGTERM".into())));
            let stop = self.done.join().unwrap();
            let file = pgha_journal::JournalFile::read(&self.journal).unwrap();
            (stop, file)
        }

        fn operator(&self, request: OperatorRequest) -> OperatorReply {
            let (tx, rx) = mpsc::channel();
            assert!((self.submit)(Msg::Operator { request, reply: tx }));
            rx.recv_timeout(WAIT).unwrap()
        }
    }

    fn inputs(f: &pgha_journal::JournalFile) -> Vec<Input> {
        f.runs
            .iter()
            .flat_map(|r| &r.steps)
            .map(|s| s.input)
            .collect()
    }

    fn actions_issued(f: &pgha_journal::JournalFile) -> Vec<String> {
        f.runs
            .iter()
            .flat_map(|r| &r.steps)
            .flat_map(|s| &s.commands)
            .filter(|c| {
                !c.value.kind.is_probe() && !matches!(c.value.kind, CommandKind::RunHook(_))
            })
            .map(|c| format!("act {}", c.value.kind.name()))
            .collect()
    }

    fn actions_run_one_at_a_time_in_the_order_the_core_issued_them(rt: &str) {
        let run = start("order", rt);
        run.wait_state("master");
        let (stop, file) = run_stop(run);
        assert_eq!(stop, Stop::Signal("SIGTERM".into()));
        let (fake, file) = file;
        let acted: Vec<String> = fake
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("act "))
            .cloned()
            .collect();
        let issued = actions_issued(&file);
        assert!(
            issued.starts_with(&acted) && acted.len() >= 3,
            "{acted:?} vs {issued:?}"
        );
        assert_eq!(fake.most_acting.load(Ordering::SeqCst), 1);
    }

    /// Stops `run`, keeping its fake's record.
    fn run_stop(run: Running) -> (Stop, (Arc<Record>, pgha_journal::JournalFile)) {
        let fake = run.fake.0.clone();
        let (stop, file) = run.stop();
        (stop, (fake, file))
    }

    #[test]
    fn actions_run_one_at_a_time_in_the_order_the_core_issued_them_under_threads() {
        actions_run_one_at_a_time_in_the_order_the_core_issued_them("threads");
    }

    #[test]
    fn actions_run_one_at_a_time_in_the_order_the_core_issued_them_under_smol() {
        actions_run_one_at_a_time_in_the_order_the_core_issued_them("smol");
    }

    #[test]
    fn hooks_run_after_their_command_with_its_context_and_their_outcome_is_journaled() {
        let run = start("hooks", "threads");
        run.wait_state("master");
        run.wait_for("the role-change hook to master", |r| {
            r.hooks.lock().unwrap().iter().any(|c| {
                matches!(c.hook, HookRun::RoleChange { role, .. } if role == pgha_core::Role::Master)
            })
        });
        let (_, (fake, file)) = run_stop(run);
        let log = fake.log.lock().unwrap().clone();
        let at = |l: &str| {
            log.iter()
                .position(|x| x == l)
                .unwrap_or_else(|| panic!("{l} not in {log:?}"))
        };
        assert!(at("act initdb") < at("hook on_initdb"), "{log:?}");
        assert!(
            at("act start postgres as master") < at("hook on_start"),
            "{log:?}"
        );
        let calls = fake.hooks.lock().unwrap().clone();
        let start_hook = calls.iter().find(|c| c.hook.key() == "on_start").unwrap();
        // The context is the node's when the core issued the start, with its outcome.
        assert_eq!(start_hook.ctx.state, "starting");
        assert_eq!(start_hook.outcome, Some(Ok(())));
        let role = calls
            .iter()
            .find(|c| matches!(c.hook, HookRun::RoleChange { .. }))
            .unwrap();
        assert_eq!(role.outcome, None);
        assert!(!role.ctx.reason.is_empty());
        // Every hook's outcome reached the core, and so the journal.
        let done: Vec<(HookRun, HookOutcome)> = inputs(&file)
            .into_iter()
            .filter_map(|i| match i {
                Input::Event(Event::HookDone { hook, outcome }) => Some((hook, outcome)),
                _ => None,
            })
            .collect();
        assert_eq!(done.len(), calls.len(), "{done:?}");
        for c in &calls {
            let (_, o) = done.iter().find(|(h, _)| *h == c.hook).unwrap();
            assert_eq!(
                o.exit,
                HookExit::Code(if c.hook.key() == "on_start" { 3 } else { 0 })
            );
            assert_eq!(o.stderr.as_str(), "a hook's last words");
        }
    }

    #[test]
    fn probes_run_concurrently_and_each_result_reaches_the_core_with_its_target() {
        let run = start("probes", "smol");
        run.wait_state("master");
        let (_, (fake, file)) = run_stop(run);
        assert!(fake.most_probing.load(Ordering::SeqCst) >= 2);
        let inputs = inputs(&file);
        let peer = pgha_core::PeerId(0);
        assert!(inputs.iter().any(|i| matches!(i, Input::Event(Event::PeerProbe { peer: p, result: ProbeResult::Refused, .. }) if *p == peer)));
        assert!(inputs.iter().any(|i| matches!(i, Input::Event(Event::PeerDaemon { peer: p, report: None, .. }) if *p == peer)));
        assert!(inputs.iter().any(|i| matches!(
            i,
            Input::Event(Event::LocalProbe {
                result: ProbeResult::Master { .. },
                ..
            })
        )));
    }

    #[test]
    fn an_operator_request_is_answered_accepted_or_refused_with_the_cores_reason() {
        let run = start("operator", "threads");
        run.wait_state("master");
        // No healthy replica to hand over to: refused, the state unchanged.
        let r = run.operator(OperatorRequest::StepDown);
        assert!(!r.accepted, "{r:?}");
        assert_eq!(r.state, "master");
        assert_eq!(r.transitions.len(), 1, "{r:?}");
        assert_eq!(
            r.transitions[0].transition.reason.code(),
            pgha_core::Reason::StepDownRefusedNoReplica.code()
        );
        let r = run.operator(OperatorRequest::Pause);
        assert!(r.accepted, "{r:?}");
        assert_eq!(r.request, "pause");
        assert!(run.status.lock().unwrap().paused);
        let (stop, _) = run.stop();
        assert_eq!(stop, Stop::Signal("SIGTERM".into()));
    }

    #[test]
    fn a_journal_write_error_stops_the_driver() {
        let run = start("journal", "threads");
        run.wait_state("master");
        // From now on every row the journal appends fails, as on a full disk.
        let c = rusqlite::Connection::open(&run.journal).unwrap();
        c.execute_batch(
            "CREATE TRIGGER full_disk BEFORE INSERT ON entries BEGIN SELECT RAISE(FAIL, 'disk full'); END;",
        )
        .unwrap();
        drop(c);
        // The next input (a probe result, a timer) cannot be journaled: the driver stops.
        let stop = run.done.join().unwrap();
        match stop {
            Stop::Error(e) => assert!(e.contains("disk full"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
