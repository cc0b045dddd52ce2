//! The shapes older journals encoded, and their conversion into today's types.
//!
//! The journal (`pgha-journal`, `codec.rs`) stores [`Config`] in every run header and the
//! whole [`Node`] in every snapshot, serde-encoded. When their shapes change, its codec
//! version goes up and it decodes older payloads with the mirrors here. Only the journal picks
//! a mirror, by the codec version a payload names; this module does no I/O and knows no
//! encoding (the mirrors only derive `Deserialize`). A mirror lists the old fields in their old
//! order, with the types they had (enums that only gained variants at their end are shared).
//!
//! Codec 1 (pgha 0.1.0 up to the master give-up and peer daemon reports): `Config` without
//! `master_give_up_ms` and `isolation`; `Node` without `daemons` and `force`, its probe slots
//! without `alive_at` and `role`.

use std::collections::VecDeque;

use serde::Deserialize;

use super::{COMMAND_QUEUE, DaemonSlot, Node, Slot, TRANSITION_QUEUE};
use crate::reason::{Failures, State, Transition};
use crate::{
    Command, CommandId, CommandKind, Config, DataDir, Isolation, Lsn, MAX_PEERS, PeerConfig,
    ProbeResult, Role, SplitBrainRule, Timeline, Timestamp, Topology,
};

/// [`Config`] as codec 1 encoded it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ConfigV1 {
    pub name: String,
    pub index: u32,
    pub peers: Vec<PeerConfig>,
    pub topology: Topology,
    pub grace_ms: u64,
    pub grace_stagger_ms: u64,
    pub connect_timeout_ms: u64,
    pub psql_error_count: u32,
    pub probe_interval_ms: u64,
    pub transition_bound_ms: u64,
    pub split_brain: SplitBrainRule,
    pub vip: bool,
    pub proxy: bool,
    pub hooks: bool,
}

impl ConfigV1 {
    /// Today's [`Config`] for what the old pgha did: it had no `master_give_up` setting
    /// (the default derived from its timings stands in) and kept an isolated master serving
    /// ([`Isolation::KeepServing`]); its split-brain rule is kept as recorded.
    pub fn into_config(self) -> Config {
        Config {
            master_give_up_ms: Config::default_master_give_up_ms(
                self.psql_error_count,
                self.connect_timeout_ms,
                self.probe_interval_ms,
            ),
            isolation: Isolation::KeepServing,
            name: self.name,
            index: self.index,
            peers: self.peers,
            topology: self.topology,
            grace_ms: self.grace_ms,
            grace_stagger_ms: self.grace_stagger_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            psql_error_count: self.psql_error_count,
            probe_interval_ms: self.probe_interval_ms,
            transition_bound_ms: self.transition_bound_ms,
            split_brain: self.split_brain,
            vip: self.vip,
            proxy: self.proxy,
            hooks: self.hooks,
        }
    }
}

/// A probe slot as codec 1 encoded it.
#[derive(Clone, Copy, Debug, Deserialize)]
struct SlotV1 {
    in_flight: Option<(CommandId, Timestamp)>,
    next_due: Timestamp,
    failures: Failures,
    transitional_since: Option<Timestamp>,
    last: Option<(Timestamp, ProbeResult)>,
}

impl From<SlotV1> for Slot {
    fn from(s: SlotV1) -> Slot {
        Slot {
            in_flight: s.in_flight,
            next_due: s.next_due,
            failures: s.failures,
            transitional_since: s.transitional_since,
            last: s.last,
            alive_at: None,
            role: Role::None,
        }
    }
}

/// [`Node`] as codec 1 encoded it (a journal snapshot).
#[derive(Debug, Deserialize)]
pub struct NodeV1 {
    config: ConfigV1,
    state: State,
    paused: bool,
    next_id: u64,
    commands: VecDeque<Command>,
    transitions: VecDeque<Transition>,
    local: SlotV1,
    peers: [SlotV1; MAX_PEERS],
    awaiting: Option<(CommandId, CommandKind)>,
    data: Option<DataDir>,
    local_timeline: Option<Timeline>,
    vip_held: bool,
    vip_pending: Option<(CommandId, bool)>,
    retry_at: Option<Timestamp>,
    state_since: Timestamp,
    last_transition: Option<Transition>,
    role_at_input: Role,
    behind_since: Option<Timestamp>,
    stalled: Option<(Timestamp, Lsn, Lsn)>,
}

impl NodeV1 {
    /// Today's node for the recorded one: the fields codec 1 did not have take the values
    /// of a node that never heard of them: no sign of life nor role noted on a probe slot,
    /// no peer daemon probed, no `recover --force` pending.
    pub fn into_node(self) -> Node {
        let mut commands = self.commands;
        commands.reserve(COMMAND_QUEUE.saturating_sub(commands.len()));
        let mut transitions = self.transitions;
        transitions.reserve(TRANSITION_QUEUE.saturating_sub(transitions.len()));
        Node {
            config: self.config.into_config(),
            state: self.state,
            paused: self.paused,
            next_id: self.next_id,
            commands,
            transitions,
            local: self.local.into(),
            peers: self.peers.map(Slot::from),
            awaiting: self.awaiting,
            data: self.data,
            local_timeline: self.local_timeline,
            vip_held: self.vip_held,
            vip_pending: self.vip_pending,
            retry_at: self.retry_at,
            state_since: self.state_since,
            last_transition: self.last_transition,
            role_at_input: self.role_at_input,
            behind_since: self.behind_since,
            stalled: self.stalled,
            daemons: [DaemonSlot::default(); MAX_PEERS],
            force: false,
        }
    }
}
