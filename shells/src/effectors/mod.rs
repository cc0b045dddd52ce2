//! Effectors: the shell's hands. Each carries out one [`CommandKind`] against the real
//! PostgreSQL (programs with time limits, SQL with a bound over the whole exchange) and
//! returns a typed outcome; none decides anything.

pub mod pg;
pub mod probe;
pub mod process;
pub mod routing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgha_core::{CommandId, CommandKind, Failure, Hook, LocalFacts, PeerId, PeerReport};

use crate::config::FileConfig;
use crate::daemon::Status;
pub use probe::ProbeDetail;

type HookJob = (
    Arc<FileConfig>,
    &'static str,
    String,
    Vec<(&'static str, String)>,
);

/// The worker that runs per-command hooks in order.
static HOOKS: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<HookJob>>> =
    std::sync::OnceLock::new();

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
    /// The daemon's status (role, timeline, last reason) for the hooks' environment.
    status: Option<Arc<Mutex<Status>>>,
    /// The journal's run number: with a command's id, it names what a re-clone set aside.
    run: u64,
}

impl Effectors {
    pub fn new(cfg: Arc<FileConfig>) -> Effectors {
        Effectors {
            cfg,
            status: None,
            run: 0,
        }
    }

    pub fn with_run(mut self, run: u64) -> Effectors {
        self.run = run;
        self
    }

    pub fn with_status(mut self, status: Arc<Mutex<Status>>) -> Effectors {
        self.status = Some(status);
        self
    }

    /// PGHA_ROLE, PGHA_TIMELINE, PGHA_REASON (one line) and PGHA_STATE from the status.
    fn hook_env(&self, role: Option<pgha_core::Role>) -> Vec<(&'static str, String)> {
        let s = self
            .status
            .as_ref()
            .and_then(|s| s.lock().ok().map(|s| s.clone()));
        let (srole, state, timeline, reason) = match &s {
            Some(s) => (
                s.role.name().to_string(),
                s.state.name().to_string(),
                s.timeline.map(|t| t.to_string()).unwrap_or_default(),
                s.last_transition
                    .as_ref()
                    .map(|t| t.described.replace(['\n', '\r'], " "))
                    .unwrap_or_default(),
            ),
            None => Default::default(),
        };
        vec![
            (
                "PGHA_ROLE",
                role.map(|r| r.name().to_string()).unwrap_or(srole),
            ),
            ("PGHA_STATE", state),
            ("PGHA_TIMELINE", timeline),
            ("PGHA_REASON", reason),
        ]
    }

    /// The per-command hook key of a command kind (`[hooks] on_promote`, ...).
    fn hook_key(kind: CommandKind) -> Option<&'static str> {
        Some(match kind {
            CommandKind::InitDataDir => "on_initdb",
            CommandKind::StartPostgres(_) => "on_start",
            CommandKind::StopPostgres(_) => "on_stop",
            CommandKind::Basebackup { .. } => "on_clone",
            CommandKind::Promote => "on_promote",
            CommandKind::Follow { .. } => "on_follow",
            CommandKind::Fence => "on_fence",
            CommandKind::Unfence => "on_unfence",
            CommandKind::AcquireVip => "on_vip_up",
            CommandKind::ReleaseVip => "on_vip_down",
            _ => return None,
        })
    }

    /// Queues the `[hooks]` command configured for after `kind`, if any, with the command's
    /// outcome in PGHA_OUTCOME. The hooks run in order on a worker of their own, so a slow
    /// hook never delays the next action (a VIP, a promotion); a failure is logged and does
    /// not change the command's outcome.
    pub fn after_hook(&self, kind: CommandKind, outcome: &Result<(), Failure>) {
        let Some(key) = Self::hook_key(kind) else {
            return;
        };
        let Some((_, cmd)) = self.cfg.hooks.after.iter().find(|(k, _)| *k == key) else {
            return;
        };
        let mut env = self.hook_env(None);
        env.push(("PGHA_COMMAND", kind.name().to_string()));
        env.push((
            "PGHA_OUTCOME",
            match outcome {
                Ok(()) => "ok".to_string(),
                Err(f) => format!("{f:?}"),
            },
        ));
        let job: HookJob = (self.cfg.clone(), key, cmd.clone(), env);
        let sent = HOOKS
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel::<HookJob>();
                let _ = std::thread::Builder::new()
                    .name("pgha-hooks".into())
                    .spawn(move || {
                        for (cfg, key, cmd, env) in rx {
                            let _ = routing::run_hook(&cfg, key, &cmd, &env);
                        }
                    });
                Mutex::new(tx)
            })
            .lock()
            .map(|tx| tx.send(job).is_ok())
            .unwrap_or(false);
        if !sent {
            log::warn!("hook {key}: the hook worker is gone; not run");
        }
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

    /// Carries out one action (any command but a probe); `id` is the command's.
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
            CommandKind::RunHook(Hook::RoleChange { role }) => match &c.hooks.on_role_change {
                Some(cmd) => {
                    let mut env = self.hook_env(Some(role));
                    env.push(("PGHA_COMMAND", kind.name().to_string()));
                    routing::run_hook(c, "on_role_change", cmd, &env)
                }
                None => Ok(()),
            },
            CommandKind::ProbeLocal
            | CommandKind::ProbePeer(_)
            | CommandKind::ProbePeerDaemon(_) => Err(Failure::Refused),
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
