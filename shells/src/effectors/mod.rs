//! Effectors: the shell's hands. Each carries out one [`CommandKind`] against the real
//! PostgreSQL (programs with time limits, SQL with a bound over the whole exchange) and
//! returns a typed outcome; none decides anything.

pub mod pg;
pub mod probe;
pub mod process;

use std::sync::Arc;
use std::time::Duration;

use pgha_core::{CommandKind, Failure, LocalFacts, PeerId};

use crate::config::FileConfig;
pub use probe::ProbeDetail;

/// What a probe command targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeTarget {
    Local,
    Peer(PeerId),
}

impl ProbeTarget {
    pub fn of(kind: CommandKind) -> Option<ProbeTarget> {
        match kind {
            CommandKind::ProbeLocal => Some(ProbeTarget::Local),
            CommandKind::ProbePeer(p) => Some(ProbeTarget::Peer(p)),
            _ => None,
        }
    }
}

/// Carries out commands for one node. Cheap to clone; safe to share across threads.
#[derive(Debug, Clone)]
pub struct Effectors {
    cfg: Arc<FileConfig>,
}

impl Effectors {
    pub fn new(cfg: Arc<FileConfig>) -> Effectors {
        Effectors { cfg }
    }

    /// The facts the core starts from.
    pub fn local_facts(&self) -> LocalFacts {
        pg::local_facts(&self.cfg)
    }

    /// One probe, bounded by `connect_timeout` as a whole.
    pub fn probe(&self, target: ProbeTarget) -> ProbeDetail {
        let limit = Duration::from_millis(self.cfg.core.connect_timeout_ms);
        let t = match target {
            ProbeTarget::Local => pg::local_target(&self.cfg),
            ProbeTarget::Peer(p) => match pg::peer_target(&self.cfg, p) {
                Some(t) => t,
                None => {
                    return ProbeDetail {
                        result: pgha_core::ProbeResult::OtherError,
                        streaming: false,
                    };
                }
            },
        };
        let cfg = &self.cfg;
        let peer_of = |host: &str, port: u16| {
            cfg.peers
                .iter()
                .position(|p| p.port == port && same_host(&p.host, host))
                .map(|i| PeerId(i as u8))
        };
        probe::probe(&t, limit, &peer_of)
    }

    /// The time limit of an action; the runtime reports [`Failure::Timeout`] past it (the
    /// effector itself kills its program there).
    pub fn time_limit(&self, kind: CommandKind) -> Duration {
        let t = &self.cfg.timeouts;
        let ms = match kind {
            CommandKind::InitDataDir => t.initdb_ms,
            CommandKind::StartPostgres(_) => t.start_ms,
            CommandKind::StopPostgres(_) => t.stop_ms,
            CommandKind::Basebackup { .. } => t.basebackup_ms,
            CommandKind::Promote => t.promote_ms,
            _ => t.command_ms,
        };
        // A margin over the effector's own limit, so the effector reports first.
        Duration::from_millis(ms + 5_000)
    }

    /// Carries out one action (any command but a probe).
    pub fn act(&self, kind: CommandKind) -> Result<(), Failure> {
        let c = &self.cfg;
        match kind {
            CommandKind::InitDataDir => pg::initdb(c),
            CommandKind::StartPostgres(target) => pg::start(c, target),
            CommandKind::StopPostgres(mode) => pg::stop(c, mode),
            CommandKind::Basebackup { from } => pg::basebackup(c, from),
            CommandKind::Promote => pg::promote(c),
            CommandKind::Follow { upstream } => pg::follow(c, upstream),
            CommandKind::Fence => pg::set_fence(c, true),
            CommandKind::Unfence => pg::set_fence(c, false),
            CommandKind::AcquireVip
            | CommandKind::ReleaseVip
            | CommandKind::RepointProxy(_)
            | CommandKind::PauseProxy
            | CommandKind::ResumeProxy
            | CommandKind::RunHook(_) => {
                log::debug!("{}: nothing configured to do", kind.name());
                Ok(())
            }
            CommandKind::ProbeLocal | CommandKind::ProbePeer(_) => Err(Failure::Refused),
        }
    }
}

/// Whether a host name from the configuration and one reported by postgres name the same
/// server (loopback spellings are treated as one).
fn same_host(a: &str, b: &str) -> bool {
    let norm = |h: &str| match h {
        "localhost" | "::1" => "127.0.0.1".to_string(),
        h => h.to_string(),
    };
    norm(a) == norm(b)
}
