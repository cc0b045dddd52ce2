//! # pgha-core: every HA decision, and nothing else
//!
//! A sans-IO, deterministic state machine for one node of a PostgreSQL HA cluster, after the
//! PostgreSQL BOSH release's design: bootstrap by index, the `grace` wait for a peer master, a
//! monitor that promotes the replica after `psql_error_count` failed probes of the master, the
//! split-brain stop and the operator's `recover`. It never does I/O, reads a clock, spawns a
//! thread, draws a random number or iterates a hash map; `clippy.toml` forbids them.
//!
//! The etcd-lease mode's decisions (issue 13, being built) live in [`lease`]: the leader key's
//! lease, timed from when each renewal was sent, and the choice of the failover candidate; a
//! sans-IO state machine of its own, not yet wired into [`Node`].
//!
//! ## The determinism contract
//!
//! The outputs of a [`Node`] depend only on its [`Config`] and the sequence of calls made on it
//! with their `now` arguments. Feed a fresh node the same configuration and the same calls and
//! it produces the same commands, transitions and deadlines, bit for bit. The journal records
//! exactly those calls; replay and what-if replay rest on this.
//!
//! ## The drain loop
//!
//! A runtime (a "shell") drives a node like this:
//!
//! 1. Call [`Node::handle`]`(now, Event::Started(facts))` once, with what it found locally.
//! 2. Drain [`Node::poll_output`] until `None`. It yields the transitions first: journal each
//!    and log its reason.
//! 3. Then the commands: journal each, then carry it out. ([`Node::step`] does 1-3's draining
//!    into a [`Step`]; the journal, the shells and the simulator use it.)
//!    Probes ([`CommandKind::is_probe`]) run concurrently; every other command (an *action*)
//!    runs one at a time, in the order polled, each bounded by a time limit.
//! 4. Wait until the earliest of [`Node::poll_timeout`] and the next result or operator request.
//! 5. A result or request: [`Node::handle`]`(now, event)`. A deadline: [`Node::handle_timeout`]`(now)`
//!    (a call with nothing due is a no-op). `now` never goes backwards.
//! 6. Go to 2.
//!
//! Steps 2 and 3 must empty both queues before the next input: the queues are allocated once
//! with room for what one input produces ([`COMMAND_QUEUE`], [`TRANSITION_QUEUE`]), and a debug
//! build asserts that they were drained. In a steady state (a probe result that changes
//! nothing, a timer) the node allocates nothing.
//!
//! ## Timers
//!
//! Every deadline a node keeps has a slot in one [`TimerTable`], one per [`Timer`]: each
//! probe's timeout or next round, the master's give-up, the isolation, the end of a wait, the
//! retry. [`Node::timers`] derives the table from the state when asked (it is never stored, so
//! it cannot go stale and the journal's snapshots do not carry it); [`Node::poll_timeout`] is
//! its earliest slot; [`Node::handle_timeout`] acts on the due slots in [`Timer::order`].
//!
//! ## Time
//!
//! [`Timestamp`] is a monotonic millisecond count chosen by the caller; only differences
//! matter. A probe that has not answered `connect_timeout` after it was issued counts as
//! [`ProbeResult::Timeout`] at that deadline, whatever the shell later reports for it.

mod config;
pub mod lease;
mod node;
pub mod reason;
pub mod settings;
mod timers;
mod types;

pub use config::{
    Config, ConfigError, ConfigWarning, EtcdTimings, Isolation, MAX_ERROR_COUNT, MAX_PEERS,
    PeerConfig, SplitBrainRule, Topology,
};
/// Older journal codecs' shapes of [`Config`] and [`Node`], for the journal's decoders only.
#[doc(hidden)]
pub use node::legacy;
pub use node::{COMMAND_QUEUE, Node, OperatorAnswer, Output, Step, TRANSITION_QUEUE};
pub use reason::{AfterStop, Failures, Reason, State, Transition};
pub use timers::{Timer, TimerTable};
pub use types::*;
