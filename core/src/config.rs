//! The settings the core's decisions depend on. The shell reads TOML into its own config and
//! derives this one; the journal records it so a replay uses exactly the settings that applied.

use serde::{Deserialize, Serialize};

/// The largest number of peers a node can have (a cluster of at most 8 nodes). Peer tables
/// are fixed arrays of this size, so nothing grows with the cluster at run time.
pub const MAX_PEERS: usize = 7;

/// The largest `psql_error_count` accepted: a bound on evidence arrays and on detection time.
pub const MAX_ERROR_COUNT: u32 = 64;

/// How the cluster is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Topology {
    /// Replication disabled: one node, always master.
    Standalone,
    /// Exactly two nodes with automatic failover (the seed's HA topology).
    Ha,
    /// One master and its replicas; promotion is left to the operator.
    Star,
}

/// What a master does when it sees another master.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitBrainRule {
    /// The seed's rule: both masters release the VIP, stop postgres and stay fenced until an
    /// operator runs `recover`. Downtime rather than diverging data.
    BothStop,
    /// The node on the older timeline steps down and re-clones from the newer one, which keeps
    /// serving. On equal timelines both stop, as with `BothStop`.
    OlderTimelineStepsDown,
}

impl SplitBrainRule {
    pub const fn name(self) -> &'static str {
        match self {
            SplitBrainRule::BothStop => "both-stop",
            SplitBrainRule::OlderTimelineStepsDown => "older-timeline-steps-down",
        }
    }
}

/// What a master does when it loses touch with the replica that could replace it (two-node
/// HA only: no third party can say whether the replica or the master is cut off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// Stop postgres after `master_give_up` without an answer from the replica (postgres or
    /// daemon), before the replica could promote: no write is acknowledged that a promotion
    /// would lose. A dead replica then costs write availability until it answers again.
    Fence,
    /// Keep serving (the seed's behaviour): a dead replica costs nothing, but during a
    /// partition the isolated master acknowledges writes that are lost when the replica
    /// promotes.
    KeepServing,
}

impl Isolation {
    pub const fn name(self) -> &'static str {
        match self {
            Isolation::Fence => "fence",
            Isolation::KeepServing => "keep-serving",
        }
    }
}

/// A peer as the core knows it: a name for reasons, and its bootstrap index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    pub name: String,
    pub index: u32,
}

/// Every setting the core's decisions depend on. Durations are milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub name: String,
    /// Bootstrap order: index 0 inits the first master.
    pub index: u32,
    pub peers: Vec<PeerConfig>,
    pub topology: Topology,
    /// How long a node with data waits for a peer to report master before it leads.
    pub grace_ms: u64,
    /// Added to `grace_ms` once per index, so two nodes restarted together do not both elect
    /// themselves: index 0 leads first and the other sees it as master.
    pub grace_stagger_ms: u64,
    /// The bound on one probe, connect to answer.
    pub connect_timeout_ms: u64,
    /// Consecutive failed probes of the master before the replica promotes.
    pub psql_error_count: u32,
    pub probe_interval_ms: u64,
    /// How long "starting up" or "shutting down" is tolerated before it counts as a failure.
    pub transition_bound_ms: u64,
    pub split_brain: SplitBrainRule,
    /// How long a master goes without a sign of life from its own postgres (then it kills
    /// it, backends included) or, with [`Isolation::Fence`], from the replica that could
    /// replace it (then it stops serving). Must end before the replica's takeover bound:
    /// see [`Config::validate`] and docs/core.md, "The give-up inequality".
    pub master_give_up_ms: u64,
    pub isolation: Isolation,
    /// Whether a VIP is configured (the core then emits acquire and release commands).
    pub vip: bool,
    /// Whether a proxy (PgBouncer) is configured (pause, repoint, resume commands).
    pub proxy: bool,
    /// Whether hooks are configured (role-change hook commands).
    pub hooks: bool,
}

impl Config {
    /// A node with every setting at its default ([`crate::settings::SETTINGS`]), without a
    /// VIP, a proxy or hooks.
    pub fn new(name: &str, index: u32, peers: Vec<PeerConfig>, topology: Topology) -> Config {
        let mut c = Config {
            name: name.to_string(),
            index,
            peers,
            topology,
            grace_ms: 0,
            grace_stagger_ms: 0,
            connect_timeout_ms: 0,
            psql_error_count: 0,
            probe_interval_ms: 0,
            transition_bound_ms: 0,
            split_brain: SplitBrainRule::OlderTimelineStepsDown,
            master_give_up_ms: 0,
            isolation: Isolation::Fence,
            vip: false,
            proxy: false,
            hooks: false,
        };
        c.fill_defaults(|_| false);
        c
    }

    /// The seed release's defaults for a node of a two-node HA cluster.
    pub fn ha_pair(name: &str, index: u32, peer: &str, peer_index: u32) -> Config {
        let peer = PeerConfig {
            name: peer.to_string(),
            index: peer_index,
        };
        Config::new(name, index, vec![peer], Topology::Ha)
    }

    /// The least time from a replica's last answer from its master to its promotion when
    /// every probe of the master times out (a hung postmaster, a blackholed link): failed
    /// probes run one at a time and each takes `connect_timeout`.
    pub fn takeover_bound_ms(&self) -> u64 {
        u64::from(self.psql_error_count).saturating_mul(self.connect_timeout_ms)
    }

    /// What a master's give-up must leave for its stop (killing the backends, released VIP):
    /// half a `connect_timeout`, at most 2 s.
    pub fn stop_allowance_ms(&self) -> u64 {
        (self.connect_timeout_ms / 2).min(2_000)
    }

    /// The default `master_give_up`: the takeover bound less one probe interval (the master's
    /// last sign of life may come that much later than the replica's) and the stop allowance.
    /// 12 s with the seed's timings (3 x 5 s, 1 s), 1.05 s with 3 x 0.5 s, 0.2 s.
    pub fn default_master_give_up_ms(
        psql_error_count: u32,
        connect_timeout_ms: u64,
        probe_interval_ms: u64,
    ) -> u64 {
        let takeover = u64::from(psql_error_count).saturating_mul(connect_timeout_ms);
        takeover
            .saturating_sub(probe_interval_ms)
            .saturating_sub((connect_timeout_ms / 2).min(2_000))
    }

    pub fn peer_name(&self, peer: crate::PeerId) -> &str {
        self.peers
            .get(peer.index())
            .map(|p| p.name.as_str())
            .unwrap_or("?")
    }

    /// Checks the settings. Errors make the configuration unusable; warnings name settings
    /// that risk a needless failover or split-brain.
    pub fn validate(&self) -> Result<Vec<ConfigWarning>, ConfigError> {
        if self.peers.len() > MAX_PEERS {
            return Err(ConfigError::TooManyPeers {
                count: self.peers.len(),
            });
        }
        match self.topology {
            Topology::Standalone if !self.peers.is_empty() => {
                return Err(ConfigError::TopologyPeers {
                    topology: self.topology,
                    peers: self.peers.len(),
                });
            }
            Topology::Ha if self.peers.len() != 1 => {
                return Err(ConfigError::TopologyPeers {
                    topology: self.topology,
                    peers: self.peers.len(),
                });
            }
            Topology::Star if self.peers.is_empty() => {
                return Err(ConfigError::TopologyPeers {
                    topology: self.topology,
                    peers: 0,
                });
            }
            _ => {}
        }
        for (i, p) in self.peers.iter().enumerate() {
            if p.index == self.index {
                return Err(ConfigError::DuplicateIndex {
                    index: p.index,
                    name: p.name.clone(),
                });
            }
            if p.name == self.name || self.peers[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError::DuplicateName {
                    name: p.name.clone(),
                });
            }
            if self.peers[..i].iter().any(|q| q.index == p.index) {
                return Err(ConfigError::DuplicateIndex {
                    index: p.index,
                    name: p.name.clone(),
                });
            }
        }
        for setting in crate::settings::SETTINGS {
            setting.check(setting.get(self))?;
        }
        // The give-up inequality: a master must give up (kill its backends, or fence when
        // isolated) before its replica can promote, and must not give up between two healthy
        // probes.
        if self.master_give_up_ms <= self.probe_interval_ms {
            return Err(ConfigError::GiveUpTooSoon {
                give_up_ms: self.master_give_up_ms,
                probe_interval_ms: self.probe_interval_ms,
            });
        }
        if self.topology == Topology::Ha
            && self.master_give_up_ms + self.probe_interval_ms + self.stop_allowance_ms()
                > self.takeover_bound_ms()
        {
            return Err(ConfigError::GiveUpTooLate {
                give_up_ms: self.master_give_up_ms,
                probe_interval_ms: self.probe_interval_ms,
                stop_allowance_ms: self.stop_allowance_ms(),
                takeover_ms: self.takeover_bound_ms(),
            });
        }
        let mut warnings = Vec::new();
        if self.connect_timeout_ms < self.probe_interval_ms {
            warnings.push(ConfigWarning::ConnectTimeoutBelowInterval);
        }
        if self.topology == Topology::Ha && self.psql_error_count < 2 {
            warnings.push(ConfigWarning::SingleFailurePromotes);
        }
        if self.topology == Topology::Ha
            && self.grace_ms < self.connect_timeout_ms * u64::from(self.psql_error_count)
        {
            warnings.push(ConfigWarning::GraceBelowDetection);
        }
        Ok(warnings)
    }

    /// The bound on how long two masters that can see each other both accept writes:
    /// the next probe, its answer, and the stop (the shell bounds a stop by `stop_bound_ms`).
    pub fn split_brain_bound_ms(&self, stop_bound_ms: u64) -> u64 {
        self.probe_interval_ms + self.connect_timeout_ms + stop_bound_ms
    }

    /// Changes one setting by its configuration key (seconds, fractions allowed, for
    /// durations), for what-if replay. The error names the key or the value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let setting = crate::settings::find(key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.to_string(),
        })?;
        let v = setting.parse(value)?;
        // A give-up left at its default follows the timings it derives from.
        let give_up = &crate::settings::MASTER_GIVE_UP;
        let give_up_default = give_up.get(self) == give_up.default_in(self);
        setting.set(self, v)?;
        if give_up_default && setting.key != give_up.key {
            let d = give_up.default_in(self);
            give_up.set(self, d)?;
        }
        self.validate().map(|_| ())
    }
}

/// The etcd-lease mode's timings (issue 13, `[etcd]`), read through
/// [`crate::settings::ETCD_SETTINGS`]. Durations are milliseconds.
///
/// Not a field of [`Config`] yet: `Config` is journaled (every run header, every snapshot),
/// so a new field changes the journal codec, and nothing decides with these yet (`pgha run`
/// refuses a file with `[etcd]` until the mode exists). The lease rules take them as they
/// are; when the mode's driver runs, they join `Config` with the codec bump that brings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdTimings {
    /// The leader lease's time to live (etcd grants whole seconds: a fraction is rounded up
    /// when granting, so the lease in etcd never ends before the master counts it ended).
    pub ttl_ms: u64,
    /// Time between two renewals.
    pub loop_wait_ms: u64,
    /// The bound on one etcd request over all endpoints.
    pub retry_timeout_ms: u64,
}

impl Default for EtcdTimings {
    /// Every timing at its default ([`crate::settings::ETCD_SETTINGS`]).
    fn default() -> EtcdTimings {
        let mut t = EtcdTimings {
            ttl_ms: 0,
            loop_wait_ms: 0,
            retry_timeout_ms: 0,
        };
        t.fill_defaults(|_| false);
        t
    }
}

impl EtcdTimings {
    /// Checks each timing against its bounds, then the lease inequality
    /// `loop_wait + 2 x retry_timeout <= ttl` (Patroni's): from the last renewal it sent, a
    /// master waits `loop_wait`, spends up to `retry_timeout` on the next renewal, and has one
    /// more `retry_timeout` to stop accepting writes, all before its lease can expire and a
    /// replica take the leader key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for setting in crate::settings::ETCD_SETTINGS {
            setting.check(setting.get(self))?;
        }
        if self
            .loop_wait_ms
            .saturating_add(self.retry_timeout_ms.saturating_mul(2))
            > self.ttl_ms
        {
            return Err(ConfigError::EtcdLeaseTooShort {
                ttl_ms: self.ttl_ms,
                loop_wait_ms: self.loop_wait_ms,
                retry_timeout_ms: self.retry_timeout_ms,
            });
        }
        Ok(())
    }
}

/// A configuration the core cannot run with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    TooManyPeers {
        count: usize,
    },
    TopologyPeers {
        topology: Topology,
        peers: usize,
    },
    DuplicateIndex {
        index: u32,
        name: String,
    },
    DuplicateName {
        name: String,
    },
    /// A value outside its setting's bounds (or not one of its choices).
    OutOfBounds {
        key: &'static str,
        value: String,
    },
    /// A duration that is not a number of seconds from 0 to one year.
    NotSeconds {
        key: &'static str,
        value: String,
    },
    UnknownKey {
        key: String,
    },
    BadValue {
        key: String,
        value: String,
    },
    /// `master_give_up` <= `probe_interval`: a healthy master would give up between probes.
    GiveUpTooSoon {
        give_up_ms: u64,
        probe_interval_ms: u64,
    },
    /// `master_give_up + probe_interval + stop allowance > psql_error_count x
    /// connect_timeout`: the replica could promote before the master gave up.
    GiveUpTooLate {
        give_up_ms: u64,
        probe_interval_ms: u64,
        stop_allowance_ms: u64,
        takeover_ms: u64,
    },
    /// `etcd.loop_wait + 2 x etcd.retry_timeout > etcd.ttl`: a master cut off from etcd could
    /// still accept writes when its lease expires.
    EtcdLeaseTooShort {
        ttl_ms: u64,
        loop_wait_ms: u64,
        retry_timeout_ms: u64,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::TooManyPeers { count } => write!(
                f,
                "{count} peers configured; at most {MAX_PEERS} are supported"
            ),
            ConfigError::TopologyPeers { topology, peers } => match topology {
                Topology::Standalone => write!(
                    f,
                    "replication is disabled but {peers} peers are configured"
                ),
                Topology::Ha => write!(
                    f,
                    "the HA topology needs exactly one peer, {peers} configured"
                ),
                Topology::Star => write!(f, "the star topology needs at least one peer"),
            },
            ConfigError::DuplicateIndex { index, name } => {
                write!(f, "index {index} of peer {name} is used twice")
            }
            ConfigError::DuplicateName { name } => write!(f, "node name {name} is used twice"),
            ConfigError::NotSeconds { key, value } => write!(
                f,
                "{key} = {value}: must be a number of seconds between 0 and one year"
            ),
            ConfigError::OutOfBounds { key, value } => {
                let bounds = crate::settings::bounds_text(key);
                write!(f, "{key} = {value}: {}", bounds.unwrap_or_default())
            }
            ConfigError::UnknownKey { key } => {
                write!(
                    f,
                    "unknown setting {key}; settable: {}",
                    crate::settings::SETTINGS.map(|s| s.key).join(", ")
                )
            }
            ConfigError::BadValue { key, value } => write!(f, "bad value {value:?} for {key}"),
            ConfigError::GiveUpTooSoon {
                give_up_ms,
                probe_interval_ms,
            } => write!(
                f,
                "replication.master_give_up = {} must be longer than replication.probe_interval = {}: a healthy master would give up between two probes (raise psql_error_count or connect_timeout, or lower probe_interval)",
                crate::reason::secs(*give_up_ms),
                crate::reason::secs(*probe_interval_ms)
            ),
            ConfigError::GiveUpTooLate {
                give_up_ms,
                probe_interval_ms,
                stop_allowance_ms,
                takeover_ms,
            } => write!(
                f,
                "replication.master_give_up = {} + probe_interval {} + stop allowance {} exceeds the replica's takeover bound psql_error_count x connect_timeout = {}: a hung or isolated master could still acknowledge writes after the replica promoted; lower master_give_up (or leave it unset for the default)",
                crate::reason::secs(*give_up_ms),
                crate::reason::secs(*probe_interval_ms),
                crate::reason::secs(*stop_allowance_ms),
                crate::reason::secs(*takeover_ms)
            ),
            ConfigError::EtcdLeaseTooShort {
                ttl_ms,
                loop_wait_ms,
                retry_timeout_ms,
            } => write!(
                f,
                "etcd.loop_wait ({}) + 2 x etcd.retry_timeout (2 x {}) = {} exceeds etcd.ttl ({}): a master cut off from etcd could still accept writes when its lease expires and a replica takes the leader key; lower loop_wait or retry_timeout, or raise ttl (the defaults: 10 + 2 x 10 <= 30)",
                crate::reason::secs(*loop_wait_ms),
                crate::reason::secs(*retry_timeout_ms),
                crate::reason::secs(
                    loop_wait_ms.saturating_add(retry_timeout_ms.saturating_mul(2))
                ),
                crate::reason::secs(*ttl_ms)
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A configuration that runs but risks a needless failover or a split-brain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigWarning {
    ConnectTimeoutBelowInterval,
    SingleFailurePromotes,
    GraceBelowDetection,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigWarning::ConnectTimeoutBelowInterval => write!(
                f,
                "replication.connect_timeout is shorter than replication.probe_interval: a slow but healthy master may be declared dead (split-brain risk)"
            ),
            ConfigWarning::SingleFailurePromotes => write!(
                f,
                "replication.psql_error_count < 2: one dropped probe promotes the replica (split-brain risk)"
            ),
            ConfigWarning::GraceBelowDetection => write!(
                f,
                "replication.grace is shorter than connect_timeout x psql_error_count: a restarting node may lead before it could see a live master"
            ),
        }
    }
}
