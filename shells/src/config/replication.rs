//! `[replication]`: the cluster's shape and the core's settings. The settings are read
//! through the core's table ([`pgha_core::settings::SETTINGS`]): a key of `[replication]`
//! is `enabled`, `topology`, or one of the table's, read in the table's unit and checked
//! against its bounds.

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use pgha_core::settings::{self, Field, Setting};
use pgha_core::{PeerConfig, SplitBrainRule, Topology};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::{ConfigError, FileConfig, err};

/// `[replication]` as written: `enabled`, `topology`, and the core's settings given.
#[derive(Debug, Clone)]
pub(super) struct RawReplication {
    pub(super) enabled: bool,
    pub(super) topology: Option<String>,
    pub(super) given: Vec<(&'static Setting, Given)>,
}

/// A value of a core setting as the file has it.
#[derive(Debug, Clone)]
pub(super) enum Given {
    Seconds(f64),
    Count(u32),
    Name(String),
}

/// The keys of `[replication]`: the shell's two, then the table's.
fn keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        ["enabled", "topology"]
            .into_iter()
            .chain(
                settings::SETTINGS
                    .iter()
                    .filter(|s| s.section() == "replication")
                    .map(|s| s.name()),
            )
            .collect()
    })
}

enum Key {
    Enabled,
    Topology,
    Setting(&'static Setting),
}

/// Reads a key, refusing an unknown one where the parser can still say its line.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key of [replication]")
            }
            fn visit_str<E: de::Error>(self, k: &str) -> Result<Key, E> {
                match k {
                    "enabled" => Ok(Key::Enabled),
                    "topology" => Ok(Key::Topology),
                    _ => settings::SETTINGS
                        .iter()
                        .find(|s| s.section() == "replication" && s.name() == k)
                        .map(|s| Key::Setting(s))
                        .ok_or_else(|| E::unknown_field(k, keys())),
                }
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> Deserialize<'de> for RawReplication {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawReplication;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct RawReplication")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReplication, A::Error> {
                let mut enabled = None;
                let mut topology = None;
                let mut given = Vec::new();
                while let Some(key) = map.next_key_seed(KeySeed)? {
                    match key {
                        Key::Enabled => enabled = Some(map.next_value()?),
                        Key::Topology => topology = Some(map.next_value()?),
                        Key::Setting(s) => {
                            let v = match s.field {
                                Field::Ms { .. } => Given::Seconds(map.next_value()?),
                                Field::Count { .. } => Given::Count(map.next_value()?),
                                Field::Choice { .. } => Given::Name(map.next_value()?),
                            };
                            given.push((s, v));
                        }
                    }
                }
                Ok(RawReplication {
                    enabled: enabled.ok_or_else(|| de::Error::missing_field("enabled"))?,
                    topology,
                    given,
                })
            }
        }
        d.deserialize_struct("RawReplication", keys(), V)
    }
}

impl RawReplication {
    fn gives(&self, s: &Setting) -> bool {
        self.given.iter().any(|(g, _)| g.key == s.key)
    }
}

/// The topology `enabled`, `topology` and the number of peers make.
fn topology(file: &Path, repl: &RawReplication, peers: usize) -> Result<Topology, ConfigError> {
    Ok(match (repl.enabled, repl.topology.as_deref()) {
        (false, None | Some("standalone")) => Topology::Standalone,
        (false, Some(t)) => {
            return Err(err(
                file,
                format!(
                    "replication.topology = {t:?} but replication.enabled = false (standalone)"
                ),
            ));
        }
        (true, Some("ha")) => Topology::Ha,
        (true, Some("star")) => Topology::Star,
        (true, Some(t)) => {
            return Err(err(
                file,
                format!("replication.topology = {t:?}: expected \"ha\" or \"star\""),
            ));
        }
        (true, None) if peers == 1 => Topology::Ha,
        (true, None) => Topology::Star,
    })
}

/// What routing the core commands: a VIP, a proxy, role-change hooks.
#[derive(Debug, Clone, Copy)]
pub(super) struct Routing {
    pub(super) vip: bool,
    pub(super) proxy: bool,
    pub(super) hooks: bool,
}

/// The core's configuration: the shape of the cluster, the settings given (each in its
/// table's unit and bounds), the defaults of the rest, checked by
/// [`pgha_core::Config::validate`]; its warnings as text.
pub(super) fn core(
    file: &Path,
    repl: &RawReplication,
    node: (&str, u32),
    peer_cfgs: Vec<PeerConfig>,
    routing: Routing,
    etcd: bool,
) -> Result<(pgha_core::Config, Vec<String>), ConfigError> {
    let peers = peer_cfgs.len();
    if etcd && !repl.enabled {
        return Err(err(
            file,
            "replication.enabled = false with an [etcd] section: the etcd mode replicates; set \
             enabled = true, or remove [etcd] for a standalone master",
        ));
    }
    let topology = match topology(file, repl, peers)? {
        // The etcd mode finds its members through etcd and needs no [[peers]]. Until the mode
        // exists (`pgha run` refuses [etcd]) the core's configuration only stands in for
        // `pgha status` and friends: with no peers, this node alone.
        Topology::Star if etcd && peers == 0 && repl.topology.is_none() => Topology::Standalone,
        t => t,
    };
    let mut core = pgha_core::Config::new(
        node.0,
        node.1,
        if topology == Topology::Standalone {
            Vec::new()
        } else {
            peer_cfgs
        },
        topology,
    );
    for (s, g) in &repl.given {
        let v = match g {
            Given::Seconds(secs) => s.seconds(*secs),
            Given::Count(n) => s.count(*n),
            Given::Name(n) => s.choice(n),
        }
        .and_then(|v| s.set(&mut core, v));
        v.map_err(|e| err(file, e.to_string()))?;
    }
    core.fill_defaults(|s| repl.gives(s));
    core.vip = routing.vip;
    core.proxy = routing.proxy;
    core.hooks = routing.hooks;
    if topology == Topology::Standalone && peers > 0 {
        return Err(err(
            file,
            format!("replication.enabled = false but {peers} [[peers]] are configured"),
        ));
    }
    let warnings = core
        .validate()
        .map_err(|e| core_error(file, e, repl.gives(&settings::MASTER_GIVE_UP)))?
        .into_iter()
        .map(|w| w.to_string())
        .collect();
    Ok((core, warnings))
}

/// A configuration the core refuses, as an error naming the file and every key involved
/// (the give-up inequality names the four timings it compares, and says whether
/// `master_give_up` was set or derived).
fn core_error(file: &Path, e: pgha_core::ConfigError, give_up_set: bool) -> ConfigError {
    use pgha_core::reason::secs;
    let give_up = |ms: u64| {
        if give_up_set {
            format!("replication.master_give_up = {}", secs(ms))
        } else {
            format!(
                "replication.master_give_up (not set: its default psql_error_count x \
                 connect_timeout - probe_interval - min(connect_timeout / 2, 2 s) is {})",
                secs(ms)
            )
        }
    };
    match e {
        pgha_core::ConfigError::GiveUpTooSoon {
            give_up_ms,
            probe_interval_ms,
        } => err(
            file,
            format!(
                "{} must be longer than replication.probe_interval = {}: a healthy master would \
                 give up on its postgres between two probes; raise replication.master_give_up \
                 (at most the limit below), replication.psql_error_count or \
                 replication.connect_timeout, or lower replication.probe_interval",
                give_up(give_up_ms),
                secs(probe_interval_ms)
            ),
        ),
        pgha_core::ConfigError::GiveUpTooLate {
            give_up_ms,
            probe_interval_ms,
            stop_allowance_ms,
            takeover_ms,
        } => err(
            file,
            format!(
                "{} + replication.probe_interval = {} + the stop allowance {} (min(connect_timeout \
                 / 2, 2 s)) exceeds the replica's takeover bound replication.psql_error_count x \
                 replication.connect_timeout = {}: a hung or isolated master could still \
                 acknowledge writes after the replica promoted; set replication.master_give_up \
                 to at most {} (or remove it for its default)",
                give_up(give_up_ms),
                secs(probe_interval_ms),
                secs(stop_allowance_ms),
                secs(takeover_ms),
                secs(
                    takeover_ms
                        .saturating_sub(probe_interval_ms)
                        .saturating_sub(stop_allowance_ms)
                )
            ),
        ),
        other => err(file, other.to_string()),
    }
}

/// What this configuration trades away, for `pgha run` to log at start and `pgha
/// check-config` to print: how a master without its replica behaves (`isolation`), and the
/// race of `split_brain = "both-stop"`. Not errors: the operator chose them, or the defaults.
pub fn tradeoffs(c: &FileConfig) -> Vec<String> {
    use pgha_core::reason::secs;
    let core = &c.core;
    let mut out = Vec::new();
    if core.topology == Topology::Ha {
        out.push(match core.isolation {
            pgha_core::Isolation::Fence => format!(
                "replication.isolation = \"fence\": a dead replica stops writes after \
                 master_give_up ({}) until it answers again (its postgres or its daemon); \
                 \"keep-serving\" keeps writing but loses a partition's writes",
                secs(core.master_give_up_ms)
            ),
            pgha_core::Isolation::KeepServing => format!(
                "replication.isolation = \"keep-serving\": during a partition the isolated \
                 master acknowledges writes that are lost when the replica promotes (up to the \
                 takeover bound, psql_error_count x connect_timeout = {}); \"fence\" (the \
                 default) stops it after master_give_up ({}) instead",
                secs(core.takeover_bound_ms()),
                secs(core.master_give_up_ms)
            ),
        });
    }
    if core.topology != Topology::Standalone && core.split_brain == SplitBrainRule::BothStop {
        out.push(
            "replication.split_brain = \"both-stop\": it races: after a healed partition one \
             master may stop first, be seen stopped by the other, and the other keeps serving \
             (possibly the stale one); \"older-timeline-steps-down\" is the default and \
             stops only the master on the older timeline"
                .to_string(),
        );
    }
    out
}
