//! What both runtimes share: the core behind its journal (one call per input), the clock,
//! logging of transitions, and the status snapshot the HTTP API serves. No policy here.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pgha_core::{CommandId, Event, Input, OperatorRequest, ProbeResult, Timestamp};

use crate::config::FileConfig;
use crate::effectors::{HookContext, ProbeDetail, ProbeTarget, Probed};
use crate::error::DaemonError;
use crate::status::view;
pub use crate::status::{PeerView, Status, TransitionView, render};

/// What one input produced: transitions (already journaled and logged) and the commands to
/// carry out, in order. The core's own type, as the journal returns it.
pub use pgha_core::Step;

/// The core behind its journal: one call per input, journaled durably (input and outputs in
/// one transaction) before its outputs are returned.
struct Driver {
    recorder: pgha_journal::Recorder,
}

impl Driver {
    /// Opens the journal and writes the run's header at once: a journal that cannot be
    /// written (read-only, full disk) is found here, before anything starts.
    fn open(cfg: &FileConfig, config_text: String) -> Result<Driver, DaemonError> {
        let header = pgha_journal::Header::new(cfg.core.clone(), config_text);
        let named = |source| DaemonError::JournalOpen {
            path: cfg.journal.clone(),
            source,
        };
        let mut recorder = pgha_journal::Recorder::open(&cfg.journal, header)
            .map_err(named)?
            .with_options(cfg.journal_options.clone());
        recorder.begin(Timestamp::ZERO, wall_ms()).map_err(named)?;
        Ok(Driver { recorder })
    }

    fn step(&mut self, now: Timestamp, input: Input) -> Result<Step, DaemonError> {
        self.recorder
            .step(now, wall_ms(), input)
            .map_err(|source| DaemonError::JournalWrite {
                path: self.recorder.path().to_path_buf(),
                source,
            })
    }

    fn node(&self) -> &pgha_core::Node {
        self.recorder.node()
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why a daemon stops; journaled as the run's `stop` row and logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A signal asked it to (`SIGTERM`, `SIGINT`, `SIGQUIT`): exit 0.
    Signal(String),
    /// A runtime error (the journal could not be written, a panic): exit 1.
    Error(String),
    /// It refused to start after the journal was open (e.g. the API address in use): exit 2.
    Refused(String),
}

impl Stop {
    /// The `stop` row's `reason_code`.
    pub fn code(&self) -> &'static str {
        match self {
            Stop::Signal(_) => "signal",
            Stop::Error(_) => "error",
            Stop::Refused(_) => "refused",
        }
    }

    pub fn cause(&self) -> &str {
        match self {
            Stop::Signal(s) | Stop::Error(s) | Stop::Refused(s) => s,
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Signal(s) => write!(f, "stopped by {s}"),
            Stop::Error(e) => write!(f, "stopped on an error: {e}"),
            Stop::Refused(e) => write!(f, "refused to start: {e}"),
        }
    }
}

/// The last panic's message, for the journal's `stop` row of a daemon that panicked.
static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Records a panic's message (the daemon's panic hook calls it).
pub fn note_panic(message: String) {
    if let Ok(mut p) = PANIC.lock() {
        *p = Some(message);
    }
}

/// A runtime's handle on the node: the journaled core, the clock and the status.
pub struct Daemon {
    cfg: Arc<FileConfig>,
    driver: Driver,
    epoch: Instant,
    status: Arc<Mutex<Status>>,
    local_detail: Option<(Timestamp, ProbeDetail)>,
    peer_detail: Vec<Option<(Timestamp, ProbeDetail)>>,
    /// Set once the run's `stop` row is written (or given up on).
    closed: bool,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("node", &self.cfg.node.name)
            .finish()
    }
}

impl Daemon {
    /// Opens the journal (appending a new run) and prepares the status.
    pub fn open(
        cfg: Arc<FileConfig>,
        config_text: String,
        runtime: &str,
    ) -> Result<Daemon, DaemonError> {
        let driver = Driver::open(&cfg, config_text)?;
        let status = Status::initial(&cfg, runtime, driver.node().report());
        let n = cfg.peers.len();
        Ok(Daemon {
            cfg,
            driver,
            epoch: Instant::now(),
            status: Arc::new(Mutex::new(status)),
            local_detail: None,
            peer_detail: vec![None; n],
            closed: false,
        })
    }

    pub fn config(&self) -> &Arc<FileConfig> {
        &self.cfg
    }

    pub fn status_handle(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    /// The monotonic clock, in milliseconds since the daemon started.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.epoch.elapsed().as_millis() as u64)
    }

    /// The journal's run number of this daemon's run.
    pub fn run_number(&self) -> u64 {
        self.driver.recorder.run()
    }

    /// The core's state now.
    pub fn state(&self) -> pgha_core::State {
        self.driver.node().state()
    }

    /// The earliest deadline of the core.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.driver.node().poll_timeout()
    }

    /// Feeds one input through the journal, logs the transitions, refreshes the status and
    /// returns what to carry out.
    pub fn step(&mut self, input: Input) -> Result<Step, DaemonError> {
        let now = self.now();
        let step = self.driver.step(now, input)?;
        let core = &self.cfg.core;
        for t in &step.transitions {
            if t.from == t.to {
                log::info!(
                    "{} ({}): {}",
                    t.to.name(),
                    t.reason.code(),
                    t.reason.describe(core)
                );
            } else {
                log::info!(
                    "{} -> {}: {}",
                    t.from.name(),
                    t.to.name(),
                    t.reason.describe(core)
                );
            }
        }
        for c in step.commands.iter().filter(|c| !c.kind.is_probe()) {
            log::debug!("command {}: {}", c.id.0, c.kind.name());
        }
        self.refresh(now);
        Ok(step)
    }

    /// The node now, as the environment of the hooks of the commands it just issued.
    pub fn hook_context(&self) -> HookContext {
        let node = self.driver.node();
        HookContext {
            role: node.role(),
            state: node.state().name(),
            timeline: node.local_timeline(),
            reason: node
                .last_transition()
                .map(|t| t.reason.describe(&self.cfg.core).to_string())
                .unwrap_or_default(),
        }
    }

    /// Feeds a probe's result (of `target`, the probe command `id`'s) back as the event the
    /// core expects.
    pub fn probe_done(
        &mut self,
        id: CommandId,
        target: ProbeTarget,
        probed: Probed,
    ) -> Result<Step, DaemonError> {
        let now = self.now();
        let event = match (target, probed) {
            (ProbeTarget::PeerDaemon(peer), Probed::Daemon(report)) => {
                Event::PeerDaemon { id, peer, report }
            }
            (ProbeTarget::PeerDaemon(_), Probed::Postgres(_))
            | (ProbeTarget::Local | ProbeTarget::Peer(_), Probed::Daemon(_)) => {
                log::error!("probe {}: a result of the wrong kind; ignored", id.0);
                return Ok(Step::default());
            }
            (ProbeTarget::Local, Probed::Postgres(detail)) => {
                self.local_detail = Some((now, detail));
                Event::LocalProbe {
                    id,
                    result: detail.result,
                }
            }
            (ProbeTarget::Peer(peer), Probed::Postgres(detail)) => {
                if let Some(slot) = self.peer_detail.get_mut(peer.index()) {
                    *slot = Some((now, detail));
                }
                Event::PeerProbe {
                    id,
                    peer,
                    result: detail.result,
                }
            }
        };
        self.step(Input::Event(event))
    }

    /// An operator request: its step, whose transitions say what the daemon did.
    pub fn operator(&mut self, request: OperatorRequest) -> Result<Step, DaemonError> {
        log::info!("operator request: {}", request.name());
        self.step(Input::Event(Event::Operator(request)))
    }

    fn refresh(&mut self, now: Timestamp) {
        let node = self.driver.node();
        let cfg = &self.cfg;
        let local = self.local_detail.map(|(at, d)| view(cfg, now, at, &d));
        let peers: Vec<PeerView> = cfg
            .peers
            .iter()
            .enumerate()
            .map(|(i, p)| PeerView {
                name: p.name.clone(),
                host: p.host.clone(),
                port: p.port,
                api: p.api,
                last_probe: self.peer_detail[i].map(|(at, d)| view(cfg, now, at, &d)),
                last_report: node
                    .peer_report(pgha_core::PeerId(i as u8))
                    .and_then(|(_, r)| r),
            })
            .collect();
        // Lag of a replica: its upstream's last position minus its own replay position.
        let lag_bytes = match (self.local_detail, node.state()) {
            (
                Some((
                    _,
                    ProbeDetail {
                        result: ProbeResult::Replica { replay_lsn, .. },
                        ..
                    },
                )),
                pgha_core::State::Replica { upstream },
            ) => match self.peer_detail.get(upstream.index()).copied().flatten() {
                Some((
                    _,
                    ProbeDetail {
                        result: ProbeResult::Master { lsn, .. },
                        ..
                    },
                )) => Some(lsn.0.saturating_sub(replay_lsn.0)),
                _ => None,
            },
            _ => None,
        };
        let last = node.last_transition().map(|t| render(t, &cfg.core));
        if let Ok(mut s) = self.status.lock() {
            s.role = node.role();
            s.state = node.state();
            s.paused = node.paused();
            s.timeline = node.local_timeline();
            s.uptime = now;
            s.local = local;
            s.lag_bytes = lag_bytes;
            s.peers = peers;
            s.last_transition = last;
            s.report = node.report();
        }
    }

    /// Ends the daemon: logs why, ends the run with a `stop` row saying why, and closes the
    /// journal (every step was already durable).
    pub fn close(mut self, stop: &Stop) {
        self.write_stop(stop);
    }

    fn write_stop(&mut self, stop: &Stop) {
        if self.closed {
            return;
        }
        self.closed = true;
        match stop {
            Stop::Signal(_) => log::info!("{stop} (postgres keeps running)"),
            _ => log::error!("{stop}"),
        }
        let now = self.now();
        match self
            .driver
            .recorder
            .stop(now, wall_ms(), stop.code(), stop.cause())
        {
            Ok(()) => log::info!(
                "journal {} closed: the run's stop row says {} ({})",
                self.cfg.journal.display(),
                stop.code(),
                stop.cause()
            ),
            Err(e) => log::error!(
                "journal {}: cannot record the stop: {e}",
                self.cfg.journal.display()
            ),
        }
    }
}

impl Drop for Daemon {
    /// A daemon dropped without [`Daemon::close`] is unwinding from a panic: the journal
    /// still says so.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let message = PANIC
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .unwrap_or_else(|| "the main loop ended without a cause".into());
        let stop = if std::thread::panicking() {
            Stop::Error(format!("panic: {message}"))
        } else {
            Stop::Error(message)
        };
        self.write_stop(&stop);
    }
}
