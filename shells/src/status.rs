//! The daemon's status, typed: what `GET /status` (and every health endpoint) serves. The
//! daemon keeps it as core types (a [`Role`], a [`State`], a [`Timestamp`], a
//! [`ProbeResult`], a [`Transition`]); it becomes JSON only at the HTTP edge, through the
//! `Serialize` impls here, with the field names and strings the API has always had
//! (docs/daemon.md; `shells/testdata/status-*.json` pin them).
//!
//! The other side: what the command line reads of a daemon's answer ([`StatusReply`],
//! [`HealthReply`], [`OperatorAnswer`]), parsed into typed structs, so an odd answer is an
//! error naming the daemon, never a panic nor a silent "-".

use std::net::SocketAddr;
use std::path::PathBuf;

use pgha_core::{PeerReport, ProbeResult, Role, State, Timeline, Timestamp, Transition};
use serde::{Deserialize, Serialize, Serializer};

use crate::config::FileConfig;
use crate::effectors::ProbeDetail;

/// A probe's result as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeView {
    pub result: ProbeResult,
    /// A replica's WAL receiver streams.
    pub streaming: bool,
    /// The peer a replica's `primary_conninfo` names, by name (`None`: none, or no peer).
    pub upstream: Option<String>,
    /// Milliseconds from the probe's answer to the status's refresh.
    pub age_ms: u64,
}

impl ProbeView {
    /// A probe result without details (tests).
    #[cfg(test)]
    pub fn of(result: ProbeResult, streaming: bool) -> ProbeView {
        ProbeView {
            result,
            streaming,
            upstream: None,
            age_ms: 0,
        }
    }
}

/// One peer in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub api: SocketAddr,
    pub last_probe: Option<ProbeView>,
    /// The peer daemon's last report of itself (its `/status` field `report`), when it gave
    /// one at its last daemon probe.
    pub last_report: Option<PeerReport>,
}

/// A transition as the status and the operator replies show it: the core's record, with its
/// reason described (peer names, settings) once, when it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionView {
    pub transition: Transition,
    /// [`pgha_core::Reason::describe`] of its reason.
    pub described: String,
}

/// What `GET /status` returns, and what the health endpoints decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    /// `node.index`: a daemon that sees a peer claim its own index halts (two nodes
    /// configured with one index would both bootstrap and lead).
    pub index: u32,
    pub role: Role,
    pub state: State,
    pub paused: bool,
    pub timeline: Option<Timeline>,
    /// The daemon's monotonic clock at the last refresh: its uptime.
    pub uptime: Timestamp,
    pub local: Option<ProbeView>,
    /// Bytes a replica is behind its upstream's last reported position.
    pub lag_bytes: Option<u64>,
    pub peers: Vec<PeerView>,
    pub last_transition: Option<TransitionView>,
    pub journal: PathBuf,
    pub runtime: String,
    /// What this daemon tells its peers of itself: the core's [`pgha_core::Node::report`] as
    /// is, so a peer compares it with its own like with like (`ProbePeerDaemon`).
    pub report: PeerReport,
}

impl Status {
    /// The status of a daemon before its first input: role none, state init.
    pub fn initial(cfg: &FileConfig, runtime: &str, report: PeerReport) -> Status {
        Status {
            name: cfg.node.name.clone(),
            index: cfg.index,
            role: Role::None,
            state: State::Init,
            paused: false,
            timeline: None,
            uptime: Timestamp::ZERO,
            local: None,
            lag_bytes: None,
            peers: Vec::new(),
            last_transition: None,
            journal: cfg.journal.clone(),
            runtime: runtime.to_string(),
            report,
        }
    }

    /// The local postgres's probe result, if it was probed.
    pub fn local_result(&self) -> Option<ProbeResult> {
        self.local.as_ref().map(|l| l.result)
    }
}

/// The view of a probe's detail found at `at`, seen at `now`; a replica's upstream is named
/// after the peer of `cfg`.
pub fn view(cfg: &FileConfig, now: Timestamp, at: Timestamp, d: &ProbeDetail) -> ProbeView {
    let upstream = match d.result {
        ProbeResult::Replica { upstream, .. } => {
            upstream.and_then(|p| cfg.peer(p)).map(|p| p.name.clone())
        }
        _ => None,
    };
    ProbeView {
        result: d.result,
        streaming: d.streaming,
        upstream,
        age_ms: now.since(at),
    }
}

/// A transition, its reason described with `cfg`.
pub fn render(t: &Transition, cfg: &pgha_core::Config) -> TransitionView {
    TransitionView {
        transition: *t,
        described: t.reason.describe(cfg).to_string(),
    }
}

// ---- The HTTP edge: JSON with the API's field names and strings. ----

#[derive(Serialize)]
struct ProbeJson<'a> {
    result: &'static str,
    timeline: Option<Timeline>,
    lsn: Option<String>,
    lsn_bytes: Option<u64>,
    streaming: bool,
    upstream: Option<&'a str>,
    age_ms: Option<u64>,
}

impl Serialize for ProbeView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let lsn = match self.result {
            ProbeResult::Master { lsn, .. } => Some(lsn),
            ProbeResult::Replica { replay_lsn, .. } => Some(replay_lsn),
            _ => None,
        };
        ProbeJson {
            result: self.result.name(),
            timeline: self.result.timeline(),
            lsn: lsn.map(|l| l.to_string()),
            lsn_bytes: lsn.map(|l| l.0),
            streaming: self.streaming,
            upstream: self.upstream.as_deref(),
            age_ms: Some(self.age_ms),
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
struct PeerJson<'a> {
    name: &'a str,
    host: &'a str,
    port: u16,
    api: String,
    last_probe: &'a Option<ProbeView>,
    last_report: &'a Option<PeerReport>,
}

impl Serialize for PeerView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PeerJson {
            name: &self.name,
            host: &self.host,
            port: self.port,
            api: self.api.to_string(),
            last_probe: &self.last_probe,
            last_report: &self.last_report,
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
struct TransitionJson<'a> {
    at_ms: u64,
    from: &'static str,
    to: &'static str,
    reason_code: &'static str,
    reason: &'a str,
}

impl Serialize for TransitionView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = &self.transition;
        TransitionJson {
            at_ms: t.at.as_millis(),
            from: t.from.name(),
            to: t.to.name(),
            reason_code: t.reason.code(),
            reason: &self.described,
        }
        .serialize(s)
    }
}

#[derive(Serialize)]
struct StatusJson<'a> {
    name: &'a str,
    index: u32,
    role: &'static str,
    state: &'static str,
    paused: bool,
    timeline: Option<Timeline>,
    uptime_ms: u64,
    local: &'a Option<ProbeView>,
    lag_bytes: Option<u64>,
    peers: &'a [PeerView],
    last_transition: &'a Option<TransitionView>,
    journal: String,
    runtime: &'a str,
    report: &'a PeerReport,
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StatusJson {
            name: &self.name,
            index: self.index,
            role: self.role.name(),
            state: self.state.name(),
            paused: self.paused,
            timeline: self.timeline,
            uptime_ms: self.uptime.as_millis(),
            local: &self.local,
            lag_bytes: self.lag_bytes,
            peers: &self.peers,
            last_transition: &self.last_transition,
            journal: self.journal.display().to_string(),
            runtime: &self.runtime,
            report: &self.report,
        }
        .serialize(s)
    }
}

// ---- The client side: what the command line reads of a daemon's answers. ----

/// A role by its name (`none`, `master`, `replica`), as the API writes it.
fn role_by_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
    let name = String::deserialize(d)?;
    [Role::None, Role::Master, Role::Replica]
        .into_iter()
        .find(|r| r.name() == name)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown role {name:?}")))
}

/// A probe result as a daemon's answer gives it. The result stays its name: the command line
/// compares and prints it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProbeReply {
    pub result: String,
    pub lsn: Option<String>,
    #[serde(default)]
    pub streaming: bool,
    pub upstream: Option<String>,
}

/// A peer as a daemon's answer gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PeerReply {
    pub name: String,
    pub last_probe: Option<ProbeReply>,
}

/// A transition as a daemon's answer gives it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TransitionReply {
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// What the command line reads of a daemon's `GET /status`. The state stays its name
/// ([`State::name`]): a peer may run a newer pgha with a state this one does not know, and
/// the command line only prints and compares it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusReply {
    #[serde(deserialize_with = "role_by_name")]
    pub role: Role,
    pub state: String,
    #[serde(default)]
    pub paused: bool,
    pub timeline: Option<Timeline>,
    pub local: Option<ProbeReply>,
    pub lag_bytes: Option<u64>,
    #[serde(default)]
    pub peers: Vec<PeerReply>,
    pub last_transition: Option<TransitionReply>,
}

impl StatusReply {
    /// The last probe result this daemon shows for its peer `name`.
    pub fn seen(&self, name: &str) -> Option<&str> {
        self.peers
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.last_probe.as_ref())
            .map(|p| p.result.as_str())
    }

    /// Its local postgres's probe result, by name.
    pub fn local_result(&self) -> Option<&str> {
        self.local.as_ref().map(|l| l.result.as_str())
    }
}

/// What `pgha check` reads of a health endpoint's 503: the daemon's state, and whether its
/// postgres answered at all.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HealthReply {
    pub state: String,
    pub local: Option<ProbeReply>,
}

/// What the command line reads of an operator request's reply: the transitions it made, or
/// the daemon's error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OperatorAnswer {
    pub error: Option<String>,
    #[serde(default)]
    pub transitions: Vec<TransitionReply>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::{DataPosition, Lsn, PeerId, Reason, Standing, StartAs};

    fn config() -> FileConfig {
        let text = crate::config::tests::sample(&std::env::temp_dir());
        crate::config::parse(std::path::Path::new("x.toml"), &text)
            .unwrap()
            .0
    }

    fn peer(
        cfg: &FileConfig,
        last_probe: Option<ProbeView>,
        report: Option<PeerReport>,
    ) -> PeerView {
        let p = &cfg.peers[0];
        PeerView {
            name: p.name.clone(),
            host: p.host.clone(),
            port: p.port,
            api: p.api,
            last_probe,
            last_report: report,
        }
    }

    /// The last transition of the golden status: a replica's postgres answered.
    fn transition() -> Transition {
        Transition {
            at: Timestamp(5000),
            from: State::Starting {
                target: StartAs::Replica {
                    upstream: PeerId(0),
                },
            },
            to: State::Replica {
                upstream: PeerId(0),
            },
            reason: Reason::LocalAnswered {
                role: Role::Replica,
            },
        }
    }

    /// The JSON of `GET /status` field by field as the API served it before the status was
    /// typed (captured from that code with the same inputs: shells/testdata/).
    #[test]
    fn the_status_json_keeps_its_field_names_and_strings() {
        let cfg = config();
        let replica = State::Replica {
            upstream: PeerId(0),
        };
        let local = ProbeDetail {
            result: ProbeResult::Replica {
                timeline: 2,
                replay_lsn: Lsn(0x1_0000_0060),
                upstream: Some(PeerId(0)),
            },
            streaming: true,
        };
        let master = ProbeDetail {
            result: ProbeResult::Master {
                timeline: 2,
                lsn: Lsn(0x1_0000_00C0),
            },
            streaming: false,
        };
        let t = transition();
        let full = Status {
            name: "db0".into(),
            index: 0,
            role: replica.role(),
            state: replica,
            paused: true,
            timeline: Some(2),
            uptime: Timestamp(12345),
            local: Some(view(&cfg, Timestamp(12345), Timestamp(12000), &local)),
            lag_bytes: Some(96),
            peers: vec![peer(
                &cfg,
                Some(view(&cfg, Timestamp(12345), Timestamp(12300), &master)),
                Some(PeerReport {
                    index: 1,
                    role: Role::Master,
                    standing: Standing::Leading,
                    data: Some(DataPosition {
                        timeline: 2,
                        lsn: Lsn(0x1_0000_00C0),
                        was_master: true,
                    }),
                    upstream: None,
                    upstream_failures: 0,
                }),
            )],
            last_transition: Some(render(&t, &cfg.core)),
            journal: "/golden/db0.journal".into(),
            runtime: "threads".into(),
            report: PeerReport {
                index: 0,
                role: Role::Replica,
                standing: Standing::Following,
                data: Some(DataPosition {
                    timeline: 2,
                    lsn: Lsn(0x1_0000_0060),
                    was_master: false,
                }),
                upstream: Some(1),
                upstream_failures: 2,
            },
        };
        assert_eq!(
            serde_json::to_string_pretty(&full).unwrap(),
            include_str!("../testdata/status-full.json")
        );
        let mut initial = Status::initial(
            &cfg,
            "smol",
            PeerReport {
                index: 0,
                role: Role::None,
                standing: Standing::Busy,
                data: None,
                upstream: None,
                upstream_failures: 0,
            },
        );
        initial.journal = "/golden/db0.journal".into();
        let refused = ProbeDetail {
            result: ProbeResult::Refused,
            streaming: false,
        };
        initial.peers = vec![peer(
            &cfg,
            Some(view(&cfg, Timestamp(10), Timestamp(3), &refused)),
            None,
        )];
        assert_eq!(
            serde_json::to_string(&initial).unwrap(),
            include_str!("../testdata/status-initial.json")
        );
        // And the command line reads it back.
        let back: StatusReply =
            serde_json::from_str(include_str!("../testdata/status-full.json")).unwrap();
        assert_eq!(back.role, Role::Replica);
        assert_eq!(back.state, "replica");
        assert_eq!(back.seen("db1"), Some("master"));
        assert_eq!(back.local_result(), Some("replica"));
        assert_eq!(
            back.last_transition.map(|t| t.reason),
            Some("local postgres answers as replica".to_string())
        );
    }

    #[test]
    fn an_operator_reply_keeps_its_transitions_json() {
        let cfg = config();
        let t = transition();
        let golden: serde_json::Value =
            serde_json::from_str(include_str!("../testdata/operator-reply.json")).unwrap();
        assert_eq!(
            serde_json::to_value(render(&t, &cfg.core)).unwrap(),
            golden["transitions"][0]
        );
        let reply = crate::runtime::OperatorReply {
            request: "promote".into(),
            accepted: true,
            transitions: vec![render(&t, &cfg.core)],
            role: "replica".into(),
            state: "replica".into(),
        };
        assert_eq!(
            serde_json::to_string_pretty(&reply).unwrap(),
            include_str!("../testdata/operator-reply.json")
        );
        let back: OperatorAnswer =
            serde_json::from_str(include_str!("../testdata/operator-reply.json")).unwrap();
        assert_eq!(back.transitions[0].to, "replica");
        assert_eq!(back.error, None);
    }

    #[test]
    fn an_odd_status_answer_is_an_error_saying_what_is_odd() {
        for (body, says) in [
            (r#"{"role":"master"}"#, "missing field `state`"),
            (
                r#"{"role":"leader","state":"master"}"#,
                "unknown role \"leader\"",
            ),
            (
                r#"{"role":"master","state":"master","timeline":"x"}"#,
                "invalid type",
            ),
            (r#"[1,2]"#, "invalid type"),
        ] {
            let e = serde_json::from_str::<StatusReply>(body)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{body}: {e}");
        }
    }
}
