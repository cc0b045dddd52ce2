//! Effectors: the shell's hands. Each carries out one [`CommandKind`] against the real
//! PostgreSQL (programs with time limits, SQL with a bound over the whole exchange) and
//! returns a typed outcome; none decides anything.

pub mod pg;
pub mod probe;
pub mod process;
pub mod routing;

use std::sync::Arc;
use std::time::Duration;

use pgha_core::{
    CommandId, CommandKind, Failure, HookOutcome, HookRun, LocalFacts, PeerId, PeerReport, Role,
};

use crate::config::FileConfig;
pub use probe::ProbeDetail;

/// The node as a hook's environment tells it (`PGHA_ROLE`, `PGHA_STATE`, `PGHA_TIMELINE`,
/// `PGHA_REASON`): as it was when the core issued the command the hook runs for. It travels
/// with the command, so a hook needs nothing global.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookContext {
    pub role: Role,
    pub state: &'static str,
    pub timeline: Option<u32>,
    /// The last transition's reason, on one line.
    pub reason: String,
}

/// One hook to run: which, with its command's context and, for a per-command hook, the
/// command's outcome (`PGHA_OUTCOME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCall {
    pub hook: HookRun,
    pub ctx: HookContext,
    pub outcome: Option<Result<(), Failure>>,
}

/// What a probe command targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeTarget {
    /// The local postgres.
    Local,
    /// A peer's postgres.
    Peer(PeerId),
    /// A peer's pgha daemon (its API's `GET /status`).
    PeerDaemon(PeerId),
}

impl ProbeTarget {
    pub fn of(kind: CommandKind) -> Option<ProbeTarget> {
        match kind {
            CommandKind::ProbeLocal => Some(ProbeTarget::Local),
            CommandKind::ProbePeer(p) => Some(ProbeTarget::Peer(p)),
            CommandKind::ProbePeerDaemon(p) => Some(ProbeTarget::PeerDaemon(p)),
            _ => None,
        }
    }
}

/// What a probe found: a postgres's answer, or a peer daemon's report of itself (`None`:
/// no report within `connect_timeout` and 64 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probed {
    Postgres(ProbeDetail),
    Daemon(Option<PeerReport>),
}

/// Carries out commands for one node. Cheap to clone; safe to share across threads.
#[derive(Debug, Clone)]
pub struct Effectors {
    cfg: Arc<FileConfig>,
    /// The journal's run number: with a command's id, it names what a re-clone set aside.
    run: u64,
}

impl Effectors {
    pub fn new(cfg: Arc<FileConfig>) -> Effectors {
        Effectors { cfg, run: 0 }
    }

    pub fn with_run(mut self, run: u64) -> Effectors {
        self.run = run;
        self
    }

    /// Runs the hook `call` names, if `[hooks]` configures it (`None` when not): the program
    /// with `PGHA_ROLE`, `PGHA_STATE`, `PGHA_TIMELINE`, `PGHA_REASON` from the call's
    /// context, `PGHA_COMMAND`, and `PGHA_OUTCOME` after a command. Bounded by
    /// `[hooks] timeout`; its stderr is logged and its end kept in the outcome.
    pub fn run_hook(&self, call: &HookCall) -> Option<HookOutcome> {
        let hooks = &self.cfg.hooks;
        let (key, cmd, role, command) = match call.hook {
            HookRun::RoleChange { role, .. } => (
                "on_role_change",
                hooks.on_role_change.as_ref()?,
                role,
                CommandKind::RunHook(pgha_core::Hook::RoleChange { role }),
            ),
            HookRun::After { kind, .. } => {
                let key = kind.hook_key()?;
                let (_, cmd) = hooks.after.iter().find(|(k, _)| *k == key)?;
                (key, cmd, call.ctx.role, kind)
            }
        };
        let ctx = &call.ctx;
        let mut env = vec![
            ("PGHA_ROLE", role.name().to_string()),
            ("PGHA_STATE", ctx.state.to_string()),
            (
                "PGHA_TIMELINE",
                ctx.timeline.map(|t| t.to_string()).unwrap_or_default(),
            ),
            ("PGHA_REASON", ctx.reason.replace(['\n', '\r'], " ")),
            ("PGHA_COMMAND", command.name().to_string()),
        ];
        if let Some(outcome) = call.outcome {
            env.push((
                "PGHA_OUTCOME",
                match outcome {
                    Ok(()) => "ok".to_string(),
                    Err(f) => format!("{f:?}"),
                },
            ));
        }
        Some(routing::run_hook(&self.cfg, key, cmd, &env))
    }

    /// The facts the core starts from.
    pub fn local_facts(&self) -> LocalFacts {
        pg::local_facts(&self.cfg)
    }

    /// One probe, bounded by `connect_timeout` as a whole.
    pub fn probe(&self, target: ProbeTarget) -> Probed {
        let limit = Duration::from_millis(self.cfg.core.connect_timeout_ms);
        let t = match target {
            ProbeTarget::Local => pg::local_target(&self.cfg),
            ProbeTarget::Peer(p) => match pg::peer_target(&self.cfg, p) {
                Some(t) => t,
                None => {
                    return Probed::Postgres(ProbeDetail {
                        result: pgha_core::ProbeResult::OtherError,
                        streaming: false,
                    });
                }
            },
            ProbeTarget::PeerDaemon(p) => {
                return Probed::Daemon(
                    self.cfg
                        .peer(p)
                        .and_then(|peer| peer_report(peer.api, limit)),
                );
            }
        };
        let cfg = &self.cfg;
        let peer_of = |host: &str, port: u16| {
            cfg.peers
                .iter()
                .position(|p| p.port == port && same_host(&p.host, host))
                .map(|i| PeerId(i as u8))
        };
        Probed::Postgres(probe::probe(&t, limit, &peer_of))
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
            CommandKind::PauseProxy => self
                .cfg
                .pgbouncer
                .as_ref()
                .map_or(t.command_ms, |b| b.pause_timeout_ms),
            CommandKind::RunHook(_) => self.cfg.hooks.timeout_ms,
            _ => t.command_ms,
        };
        // A margin over the effector's own limit, so the effector reports first.
        Duration::from_millis(ms + 5_000)
    }

    /// Carries out one action (any command but a probe or a hook); `id` is the command's.
    pub fn act(&self, id: CommandId, kind: CommandKind) -> Result<(), Failure> {
        let c = &self.cfg;
        match kind {
            CommandKind::InitDataDir => pg::initdb(c),
            CommandKind::StartPostgres(target) => pg::start(c, target),
            CommandKind::StopPostgres(mode) => pg::stop(c, mode),
            CommandKind::Basebackup { from } => pg::basebackup(c, from, self.run, id.0),
            CommandKind::CheckPeerIndex => check_peer_index(c),
            CommandKind::Promote => pg::promote(c),
            CommandKind::Follow { upstream } => pg::follow(c, upstream),
            CommandKind::Fence => pg::set_fence(c, true),
            CommandKind::Unfence => pg::set_fence(c, false),
            CommandKind::AcquireVip => routing::vip_up(c),
            CommandKind::ReleaseVip => routing::vip_down(c),
            CommandKind::RepointProxy(target) => routing::pgbouncer_repoint(c, target),
            CommandKind::PauseProxy => routing::pgbouncer_pause(c),
            CommandKind::ResumeProxy => routing::pgbouncer_resume(c),
            // Probes are not actions; a hook runs through `run_hook`.
            CommandKind::ProbeLocal
            | CommandKind::ProbePeer(_)
            | CommandKind::ProbePeerDaemon(_)
            | CommandKind::RunHook(_) => Err(Failure::Refused),
        }
    }
}

/// Asks each peer's daemon (`GET /status` on its API, bounded by `connect_timeout` per
/// peer and 64 KiB) for its index: [`Failure::SameIndex`] when one claims this node's own.
/// A peer that does not answer, or answers without an index, is no clash.
fn check_peer_index(c: &FileConfig) -> Result<(), Failure> {
    let limit = Duration::from_millis(c.core.connect_timeout_ms.clamp(100, 5_000));
    for (i, p) in c.peers.iter().enumerate() {
        if let Some(index) = peer_status(p.api, limit).and_then(|s| s["index"].as_u64())
            && index == u64::from(c.index)
        {
            log::error!(
                "peer {} ({}) reports index {index}, this node's own node.index: two nodes with one \
                 index would both bootstrap and lead; fix node.index in one of the configurations",
                p.name,
                p.api
            );
            return Err(Failure::SameIndex {
                peer: PeerId(i as u8),
            });
        }
    }
    Ok(())
}

/// The most bytes of a peer's `GET /status` reply pgha reads.
const PEER_STATUS_MAX: usize = 64 * 1024;

/// A pgha API's `GET /status`, parsed: `None` unless it answers 200 with JSON within `limit`
/// overall (connect, request, reply) and [`PEER_STATUS_MAX`] bytes.
fn peer_status(addr: std::net::SocketAddr, limit: Duration) -> Option<serde_json::Value> {
    let target = crate::client::Target::Tcp(addr);
    let r = crate::client::call_bounded(&target, "GET", "/status", None, limit, PEER_STATUS_MAX)
        .ok()?;
    if r.code != 200 {
        return None;
    }
    serde_json::from_str(&r.body).ok()
}

/// What a peer's daemon says of itself: the field `report` of its `GET /status` (see
/// [`peer_status`]); `None` when it does not answer so.
fn peer_report(addr: std::net::SocketAddr, limit: Duration) -> Option<PeerReport> {
    let mut status = peer_status(addr, limit)?;
    serde_json::from_value(status.get_mut("report")?.take()).ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};

    /// A server that answers one connection with `reply` (after reading the request), or
    /// holds it open without a word when `reply` is `None`.
    fn serve_once(reply: Option<Vec<u8>>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            match reply {
                Some(r) => {
                    let _ = s.write_all(&r);
                }
                None => std::thread::sleep(Duration::from_secs(3)),
            }
        });
        addr
    }

    fn http(code: u16, body: &str) -> Option<Vec<u8>> {
        Some(
            format!(
                "HTTP/1.0 {code} X\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    }

    #[test]
    fn a_peer_daemons_report_is_read_from_its_status_and_anything_else_is_none() {
        let report = PeerReport {
            index: 1,
            role: pgha_core::Role::Master,
            standing: pgha_core::Standing::Leading,
            data: Some(pgha_core::DataPosition {
                timeline: 2,
                lsn: pgha_core::Lsn(0x3000060),
                was_master: true,
            }),
            upstream: None,
            upstream_failures: 0,
        };
        let json = serde_json::to_string(&report).unwrap();
        let limit = Duration::from_millis(500);
        let good = format!("{{\"name\": \"db1\", \"index\": 1, \"report\": {json}}}");
        assert_eq!(
            peer_report(serve_once(http(200, &good)), limit),
            Some(report)
        );
        assert_eq!(
            peer_status(serve_once(http(200, &good)), limit).unwrap()["index"],
            1
        );
        // Not 200, no report, a report of another shape, not JSON, too large, silent, refused.
        let large = format!(
            "{{\"pad\": \"{}\", \"report\": {json}}}",
            "x".repeat(PEER_STATUS_MAX)
        );
        let cases = [
            http(503, &good),
            http(200, "{\"index\": 1}"),
            http(200, "{\"report\": {\"index\": 1}}"),
            http(200, "not json"),
            http(200, &large),
            None,
        ];
        for reply in cases {
            assert_eq!(peer_report(serve_once(reply), limit), None);
        }
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(peer_report(closed, limit), None);
    }
}
