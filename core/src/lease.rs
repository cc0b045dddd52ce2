//! The etcd lease's decisions (issue 13, being built: not wired into [`Node`](crate::Node)
//! yet). A sans-IO state machine like the node: [`LeaseEvent`]s in, [`LeaseCommand`]s for
//! the shell (which only talks to etcd) and [`LeaseDecision`]s for the node out, time as a
//! parameter, every deadline derived from the state ([`Lease::timers`]).
//!
//! ## The safety rule
//!
//! The holder of the leader key may write only until its own deadline:
//!
//! > deadline = (the time the last renewal that succeeded was **sent**) + the granted TTL −
//! > [`LeaseConfig::margin_ms`]
//!
//! and [`LeaseDecision::MustStopWriting`] comes at the first call at or after it, whether or
//! not etcd answers. etcd starts a lease's TTL again when it *processes* a keepalive, which is
//! never before it was sent: so the key cannot expire (and no other node can take it) before
//! `sent + TTL`, and the margin is the time the node has to demote or fence. The send time is
//! the `now` of the call that issued the command, which is never later than the real send.
//! A late answer to an old renewal extends the deadline only to its own send time + TTL;
//! errors and timeouts ("could not tell") extend nothing and take nothing away. See
//! docs/core.md, "The lease (etcd mode, being built)".
//!
//! ## Drain contract
//!
//! As the node's: after each [`Lease::handle`] or [`Lease::handle_timeout`], drain
//! [`Lease::poll_output`] until `None` (decisions and commands, in order; journal each, send
//! each command), then wait for the earliest of [`Lease::poll_timeout`] and the next etcd
//! answer. `now` never goes backwards. The output queue is allocated once; a steady state
//! (renewals, reads) allocates nothing.
//!
//! Candidate choice ([`choose_candidate`], [`eligibility`]) is a pure function of the members'
//! records: the node asks it, then tells the lease whether to race for the key
//! ([`LeaseEvent::Candidate`]).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{Lsn, Timeline, Timestamp};

/// The most bytes of a member's (or data centre's) name.
pub const NAME_MAX: usize = 63;

/// A member's or a data centre's name: 1 to [`NAME_MAX`] bytes of UTF-8 without control
/// characters. Fixed-size, so events and decisions stay `Copy` and never allocate. Encoded as
/// a string; compared as one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    len: u8,
    bytes: [u8; NAME_MAX],
}

impl Name {
    /// `text` as a name, if it is one (a leader key holding anything else is
    /// [`LeaderKey::Unreadable`]).
    pub fn new(text: &str) -> Option<Name> {
        if text.is_empty() || text.len() > NAME_MAX || text.chars().any(char::is_control) {
            return None;
        }
        let mut bytes = [0; NAME_MAX];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Name {
            len: text.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Name::new(&text).ok_or_else(|| serde::de::Error::custom("not a member name"))
    }
}

/// The lease's timings, in milliseconds (the `[etcd]` keys `ttl`, `loop_wait`,
/// `retry_timeout`, and the margin the node needs to stop writing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseConfig {
    /// The TTL asked for when granting the lease (etcd may grant more; the granted one counts).
    pub ttl_ms: u64,
    /// A renewal round (keepalive, and the leader key's renewal while holding it, or a read of
    /// it otherwise) starts every `loop_wait`.
    pub loop_wait_ms: u64,
    /// An etcd request unanswered this long counts as "could not tell" (the shell tries the
    /// endpoints in turn within it).
    pub retry_timeout_ms: u64,
    /// The holder stops writing this long before its lease can expire: at least the time a
    /// demote or fence takes to complete, plus the clocks' rate difference over a TTL.
    pub margin_ms: u64,
}

impl LeaseConfig {
    /// A failed request is tried again after this pause (a quarter of `loop_wait`, 100 ms to
    /// 1 s): an error that comes back at once does not spin.
    pub fn retry_pause_ms(&self) -> u64 {
        (self.loop_wait_ms / 4).clamp(100, 1000)
    }

    /// Checks the timings: `loop_wait + 2 × retry_timeout <= ttl` (the `[etcd]` rule,
    /// `EtcdTimings`), `margin > 0`, and `loop_wait + retry_timeout + margin <= ttl` (a
    /// healthy holder's renewal is answered by its deadline; an answer at the deadline itself
    /// still counts, since an input is applied before the deadline is checked). `margin = retry_timeout` with `ttl = loop_wait + 2 × retry_timeout` puts the
    /// deadline at `loop_wait + retry_timeout` after the last successful renewal was sent.
    pub fn validate(&self) -> Result<(), LeaseConfigError> {
        let c = self;
        if c.loop_wait_ms == 0 || c.retry_timeout_ms == 0 {
            return Err(LeaseConfigError::Zero);
        }
        if c.loop_wait_ms
            .saturating_add(c.retry_timeout_ms.saturating_mul(2))
            > c.ttl_ms
        {
            return Err(LeaseConfigError::TtlTooShort);
        }
        if c.margin_ms == 0
            || c.loop_wait_ms
                .saturating_add(c.retry_timeout_ms)
                .saturating_add(c.margin_ms)
                > c.ttl_ms
        {
            return Err(LeaseConfigError::Margin);
        }
        Ok(())
    }
}

/// Why a [`LeaseConfig`] is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseConfigError {
    /// `loop_wait` or `retry_timeout` is zero.
    Zero,
    /// `loop_wait + 2 × retry_timeout > ttl`.
    TtlTooShort,
    /// The margin is zero, or `loop_wait + retry_timeout + margin > ttl`.
    Margin,
}

impl std::fmt::Display for LeaseConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeaseConfigError::Zero => "etcd.loop_wait and etcd.retry_timeout must be positive",
            LeaseConfigError::TtlTooShort => {
                "etcd.loop_wait + 2 x etcd.retry_timeout must not exceed etcd.ttl"
            }
            LeaseConfigError::Margin => {
                "the stop margin must be positive and etcd.loop_wait + etcd.retry_timeout + margin must not exceed etcd.ttl"
            }
        })
    }
}

impl std::error::Error for LeaseConfigError {}

/// An etcd lease ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseId(pub i64);

/// The id the lease gives each request; its answer names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// The leader key as etcd showed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderKey {
    /// No key; `revision` is the store's revision the read (or the watch event) was at.
    Absent { revision: u64 },
    /// The key holds this member's name; `revision` is its mod_revision, `created` its
    /// create_revision (each take of the key creates it anew, at a new create_revision).
    Held {
        holder: Name,
        revision: u64,
        created: u64,
    },
    /// The key holds something that is not a member name (someone else's data under the
    /// prefix): nobody may lead, and nobody can take it either.
    Unreadable { revision: u64 },
}

impl LeaderKey {
    pub fn revision(self) -> u64 {
        match self {
            LeaderKey::Absent { revision }
            | LeaderKey::Held { revision, .. }
            | LeaderKey::Unreadable { revision } => revision,
        }
    }

    fn held_by(self, name: Name) -> bool {
        matches!(self, LeaderKey::Held { holder, .. } if holder == name)
    }
}

/// Why an etcd request has no answer. Every one of them means "could not tell", never "no".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EtcdFault {
    /// No endpoint answered within `retry_timeout`.
    Unreachable,
    /// A definite refusal (an HTTP 4xx, a put on a revoked lease).
    Refused,
    /// Only members on an older raft term than one already seen answered.
    StaleTerm,
    /// An answer that could not be read.
    BadReply,
}

/// What an etcd request the lease asked for came back with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EtcdReply {
    /// [`LeaseOp::Grant`]: the lease and the TTL etcd granted.
    Granted { lease: LeaseId, ttl_ms: u64 },
    /// [`LeaseOp::KeepAlive`]: the lease lives, with this TTL from when etcd processed it.
    Alive { ttl_ms: u64 },
    /// [`LeaseOp::KeepAlive`]: etcd does not know the lease (expired or revoked).
    Gone,
    /// A leader-key txn's compare held; `revision` is the store's revision after it.
    TxnSucceeded { revision: u64 },
    /// A leader-key txn's compare failed; the key as its failure branch read it.
    TxnFailed { key: LeaderKey },
    /// [`LeaseOp::ReadKey`]: the key.
    Key(LeaderKey),
    /// [`LeaseOp::Revoke`] done.
    Revoked,
    /// No answer: could not tell.
    Error(EtcdFault),
}

/// Every input the lease accepts (a journal can record them as they are).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseEvent {
    /// The first input: start the renewal rounds.
    Start,
    /// The answer to request `id`.
    Reply { id: RequestId, reply: EtcdReply },
    /// The shell's watch of the leader key saw it change.
    Watched(LeaderKey),
    /// Whether this node is the one eligible candidate now ([`choose_candidate`]): only a
    /// candidate takes an absent key, or keeps one that holds its name without having taken
    /// it in this run.
    Candidate(bool),
    /// The node has stopped writing and gives the key up (a clean step-down): delete the
    /// version of it last seen, if it holds my name ([`LeaseOp::Delete`]). The lease (and the
    /// member's records) stays.
    Release,
    /// The node shuts down, having stopped writing: revoke the lease (etcd deletes every key
    /// bound to it). No more requests after this.
    Shutdown,
}

/// What the shell is asked to do against etcd. Every txn is on the leader key, its compares
/// are [`LeaseOp::compares`] (all must hold), its success branch puts my name bound to the
/// op's lease (a delete for [`LeaseOp::Delete`]), its failure branch gets the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOp {
    /// Grant a lease of `ttl_ms` (rounded up to whole seconds).
    Grant { ttl_ms: u64 },
    /// Keep the lease alive.
    KeepAlive { lease: LeaseId },
    /// Txn: if the key's create_revision == 0, put it = my name bound to `lease`.
    Acquire { lease: LeaseId },
    /// The holder's renewal. Txn: if the key's value == my name, its create_revision ==
    /// `created` (the key this member took or confirmed) and its lease == `lease`, put it =
    /// my name bound to `lease`.
    Renew { lease: LeaseId, created: u64 },
    /// A clean step-down. Txn: if the key's value == my name and its mod_revision == `seen`
    /// (the version last seen; its create_revision is `created`), delete it.
    Delete { seen: u64, created: u64 },
    /// Revoke the lease.
    Revoke { lease: LeaseId },
    /// Range the leader key.
    ReadKey,
    /// Taking over a key that holds my name but was not taken in this run (or whose taking's
    /// answer was lost). Txn: if the key's value == my name and its mod_revision == `seen`
    /// (the very version read; its create_revision is `created`), put it = my name bound to
    /// `lease`.
    Confirm {
        lease: LeaseId,
        seen: u64,
        created: u64,
    },
}

/// One condition of a leader-key txn (etcd's `Compare`, target and `EQUAL`). On an absent key,
/// etcd compares the revisions and the lease with 0 and a value compare fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyCompare {
    /// create_revision == this (0: the key does not exist).
    Created(u64),
    /// mod_revision == this.
    Modified(u64),
    /// value == my name.
    ValueIsMe,
    /// The lease the key is bound to == this.
    Lease(LeaseId),
}

impl LeaseOp {
    /// The compares of a leader-key txn (none for the other requests), in this order.
    pub fn compares(self) -> [Option<KeyCompare>; 3] {
        use KeyCompare::*;
        match self {
            LeaseOp::Acquire { .. } => [Some(Created(0)), None, None],
            LeaseOp::Renew { lease, created } => {
                [Some(ValueIsMe), Some(Created(created)), Some(Lease(lease))]
            }
            LeaseOp::Confirm { seen, created, .. } | LeaseOp::Delete { seen, created } => [
                Some(ValueIsMe),
                Some(Modified(seen)),
                Some(Created(created)),
            ],
            LeaseOp::Grant { .. }
            | LeaseOp::KeepAlive { .. }
            | LeaseOp::Revoke { .. }
            | LeaseOp::ReadKey => [None; 3],
        }
    }

    /// The lease a leader-key txn's success branch binds the key to (`None`: a delete, or not
    /// a leader-key txn).
    pub fn puts_with(self) -> Option<LeaseId> {
        match self {
            LeaseOp::Acquire { lease }
            | LeaseOp::Renew { lease, .. }
            | LeaseOp::Confirm { lease, .. } => Some(lease),
            _ => None,
        }
    }
}

/// A request with the id its answer will carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseCommand {
    pub id: RequestId,
    pub op: LeaseOp,
}

/// Why the holder must stop writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The deadline came without a newer successful renewal: the last one that succeeded was
    /// sent at `last_renewal`, so the lease may expire at `expires`.
    LeaseExpiring {
        last_renewal: Timestamp,
        expires: Timestamp,
    },
    /// etcd says the lease is gone.
    LeaseGone { last_renewal: Timestamp },
    /// The key is not this node's any more (a failed renewal's compare, a read or a watch).
    KeyLost { key: LeaderKey },
    /// The node gave the key up ([`LeaseEvent::Release`]).
    Released,
    /// The node shuts down ([`LeaseEvent::Shutdown`]).
    ShutDown,
}

/// What the node is told. Each is emitted when it changes, not every round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseDecision {
    /// This node holds the key (taken or confirmed at `revision`, a fencing token) and may
    /// write until `until` (the deadline at the time of this decision; renewals push it on).
    MayLead { revision: u64, until: Timestamp },
    /// Demote or fence now: the lease may expire at the margin's end, or the key is not ours.
    MustStopWriting { reason: StopReason },
    /// Another member holds the key.
    LeaderIs { name: Name, revision: u64 },
    /// Nobody holds the key.
    NoLeader { revision: u64 },
    /// The key holds something that is not a member name: nobody may lead.
    KeyUnreadable { revision: u64 },
}

/// One output of [`Lease::poll_output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseOutput {
    Decision(LeaseDecision),
    Command(LeaseCommand),
}

/// One of the lease's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseTimer {
    /// The earliest request unanswered for `retry_timeout`: it counts as "could not tell".
    Answer,
    /// The holder's deadline: stop writing.
    StopWriting,
    /// A failed request is tried again.
    Retry,
    /// The next renewal round.
    Round,
}

impl LeaseTimer {
    /// Every timer, in the order [`Lease::handle_timeout`] acts on them.
    pub const ORDER: [LeaseTimer; 4] = [
        LeaseTimer::Answer,
        LeaseTimer::StopWriting,
        LeaseTimer::Retry,
        LeaseTimer::Round,
    ];
}

/// A deadline per [`LeaseTimer`], or none: derived from the state when asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseTimers {
    slots: [Option<Timestamp>; 4],
}

impl LeaseTimers {
    pub fn get(&self, timer: LeaseTimer) -> Option<Timestamp> {
        self.slots[timer as usize]
    }

    /// The earliest deadline, if any timer runs.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.slots.iter().flatten().copied().min()
    }
}

/// The room in the output queue: what one input can produce (five requests, three decisions),
/// twice over.
pub const LEASE_QUEUE: usize = 16;

/// The requests that can be in flight, one of each kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Grant,
    KeepAlive,
    Txn,
    Read,
    Revoke,
}

const KINDS: [Kind; 5] = [
    Kind::Grant,
    Kind::KeepAlive,
    Kind::Txn,
    Kind::Read,
    Kind::Revoke,
];

/// A request sent: its id, when (the `now` of the call that issued it) and what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    id: RequestId,
    at: Timestamp,
    op: LeaseOp,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    in_flight: Option<Sent>,
    /// When the last one of this kind was sent: a kind is sent once per round, and again
    /// after a failure once the retry is due. Cleared to send at once.
    last_sent: Option<Timestamp>,
    /// The send time of the last one that succeeded.
    last_ok: Option<Timestamp>,
}

/// Unanswered keepalives remembered for their late answers.
const KEEPALIVES: usize = 4;

/// What the node was last told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Told {
    Nothing,
    Lead,
    Leader(Name, u64),
    NoLeader(u64),
    Unreadable(u64),
}

/// The lease's state machine for one member. See the module documentation.
#[derive(Debug)]
pub struct Lease {
    config: LeaseConfig,
    me: Name,
    next_id: u64,
    started: bool,
    shut_down: bool,
    lease: Option<LeaseId>,
    /// The latest `send time + granted TTL` among the current lease's successful renewals
    /// (the grant included): the lease cannot expire before it.
    expires: Timestamp,
    /// The send time of that renewal.
    last_renewal: Timestamp,
    /// The key as last seen (`None`: not known).
    key: Option<LeaderKey>,
    /// The highest revision seen: older views are stale.
    seen_revision: u64,
    /// The key is this node's, taken or confirmed by a txn at this revision and not lost since.
    holding: Option<u64>,
    /// The create_revision of the key this run took or confirmed, while it may still be the
    /// key etcd has: renewals and the step-down's delete compare it.
    created: Option<u64>,
    candidate: bool,
    releasing: bool,
    told: Told,
    /// When the current round started.
    round: Timestamp,
    retry_at: Option<Timestamp>,
    slots: [Slot; 5],
    keepalives: [Option<Sent>; KEEPALIVES],
    out: VecDeque<LeaseOutput>,
}

impl Lease {
    /// A lease for the member `me`; it acts from [`LeaseEvent::Start`] on. The configuration
    /// should have passed [`LeaseConfig::validate`].
    pub fn new(config: LeaseConfig, me: Name) -> Lease {
        debug_assert!(config.validate().is_ok(), "{:?}", config.validate());
        Lease {
            config,
            me,
            next_id: 1,
            started: false,
            shut_down: false,
            lease: None,
            expires: Timestamp::ZERO,
            last_renewal: Timestamp::ZERO,
            key: None,
            seen_revision: 0,
            holding: None,
            created: None,
            candidate: false,
            releasing: false,
            told: Told::Nothing,
            round: Timestamp::ZERO,
            retry_at: None,
            slots: [Slot::default(); 5],
            keepalives: [None; KEEPALIVES],
            out: VecDeque::with_capacity(LEASE_QUEUE),
        }
    }

    /// The holder's deadline: the last successful renewal's send time + TTL − margin.
    pub fn deadline(&self) -> Timestamp {
        Timestamp(self.expires.0.saturating_sub(self.config.margin_ms))
    }

    /// The send time of the last renewal (or grant) that succeeded, and the earliest time the
    /// lease may expire by it.
    pub fn last_renewal(&self) -> (Timestamp, Timestamp) {
        (self.last_renewal, self.expires)
    }

    /// True while the node has been told [`LeaseDecision::MayLead`] and not told to stop.
    pub fn may_write(&self) -> bool {
        self.told == Told::Lead
    }

    /// The lease, if one is granted and not known gone.
    pub fn lease_id(&self) -> Option<LeaseId> {
        self.lease
    }

    /// The leader key as last seen.
    pub fn key(&self) -> Option<LeaderKey> {
        self.key
    }

    /// The next output of the last input, until `None`. Allocates nothing.
    pub fn poll_output(&mut self) -> Option<LeaseOutput> {
        self.out.pop_front()
    }

    /// Every deadline the lease keeps, derived from its state.
    pub fn timers(&self) -> LeaseTimers {
        let mut t = LeaseTimers::default();
        for timer in LeaseTimer::ORDER {
            t.slots[timer as usize] = self.timer(timer);
        }
        t
    }

    /// The earliest deadline at which [`Lease::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        LeaseTimer::ORDER
            .iter()
            .filter_map(|&t| self.timer(t))
            .min()
    }

    fn timer(&self, timer: LeaseTimer) -> Option<Timestamp> {
        if !self.started {
            return None;
        }
        match timer {
            LeaseTimer::Answer => self
                .slots
                .iter()
                .filter_map(|s| s.in_flight)
                .map(|s| s.at.plus(self.config.retry_timeout_ms))
                .min(),
            LeaseTimer::StopWriting => (self.told == Told::Lead).then(|| self.deadline()),
            LeaseTimer::Retry if self.shut_down => None,
            LeaseTimer::Retry => self.retry_at,
            LeaseTimer::Round if self.shut_down => None,
            LeaseTimer::Round => Some(self.round.plus(self.config.loop_wait_ms)),
        }
    }

    /// One input.
    pub fn handle(&mut self, now: Timestamp, event: LeaseEvent) {
        self.begin();
        match event {
            LeaseEvent::Start if !self.started => {
                self.started = true;
                self.round = now;
            }
            LeaseEvent::Start => {}
            LeaseEvent::Reply { id, reply } => self.reply(now, id, reply),
            LeaseEvent::Watched(key) => self.observe(key),
            LeaseEvent::Candidate(candidate) => {
                self.candidate = candidate;
                if candidate && matches!(self.key, Some(LeaderKey::Absent { .. })) {
                    self.slot(Kind::Txn).last_sent = None;
                }
            }
            LeaseEvent::Release => {
                self.stop(StopReason::Released);
                self.candidate = false;
                self.releasing = true;
                self.slot(Kind::Txn).last_sent = None;
            }
            LeaseEvent::Shutdown => {
                self.stop(StopReason::ShutDown);
                if !self.shut_down {
                    self.shut_down = true;
                    if let Some(lease) = self.lease.take() {
                        self.send(now, Kind::Revoke, LeaseOp::Revoke { lease });
                    }
                }
            }
        }
        self.settle(now);
    }

    /// Acts on whatever is due at `now`. A call with nothing due changes nothing.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.begin();
        if !self.started {
            return;
        }
        for kind in KINDS {
            let retry = self.config.retry_timeout_ms;
            if let Some(sent) = self.slot(kind).in_flight
                && now >= sent.at.plus(retry)
            {
                self.slot(kind).in_flight = None;
                self.failed(now);
            }
        }
        if !self.shut_down && now >= self.round.plus(self.config.loop_wait_ms) {
            self.round = now;
        }
        self.settle(now);
    }

    fn begin(&mut self) {
        debug_assert!(self.out.is_empty(), "lease outputs not drained");
    }

    /// After every input: the deadline, the requests due, the decisions.
    fn settle(&mut self, now: Timestamp) {
        if self.told == Told::Lead && now >= self.deadline() {
            self.stop(StopReason::LeaseExpiring {
                last_renewal: self.last_renewal,
                expires: self.expires,
            });
        }
        if self.started && !self.shut_down {
            self.pump(now);
        }
        self.decide(now);
    }

    fn slot(&mut self, kind: Kind) -> &mut Slot {
        &mut self.slots[kind as usize]
    }

    /// Whether a request of `kind` may go now: none in flight, and none sent yet this round
    /// (or its retry is due).
    fn may_send(&self, now: Timestamp, kind: Kind) -> bool {
        let s = &self.slots[kind as usize];
        s.in_flight.is_none()
            && (s.last_sent.is_none_or(|t| t < self.round)
                || self.retry_at.is_some_and(|at| now >= at))
    }

    /// Whether `kind` succeeded this round.
    fn done(&self, kind: Kind) -> bool {
        self.slots[kind as usize]
            .last_ok
            .is_some_and(|t| t >= self.round)
    }

    fn pump(&mut self, now: Timestamp) {
        match self.lease {
            None => {
                if self.may_send(now, Kind::Grant) {
                    let ttl_ms = self.config.ttl_ms;
                    self.send(now, Kind::Grant, LeaseOp::Grant { ttl_ms });
                }
            }
            Some(lease) => {
                if !self.done(Kind::KeepAlive) && self.may_send(now, Kind::KeepAlive) {
                    self.send(now, Kind::KeepAlive, LeaseOp::KeepAlive { lease });
                }
            }
        }
        if let Some(op) = self.txn_due(now)
            && self.may_send(now, Kind::Txn)
        {
            self.send(now, Kind::Txn, op);
        }
        if self.holding.is_none() && !self.done(Kind::Read) && self.may_send(now, Kind::Read) {
            self.send(now, Kind::Read, LeaseOp::ReadKey);
        }
        // A step-down with nothing to delete: the key does not hold my name.
        if self.releasing
            && self.slots[Kind::Txn as usize].in_flight.is_none()
            && self.key.is_some_and(|k| !k.held_by(self.me))
        {
            self.releasing = false;
        }
        if self.retry_at.is_some_and(|at| now >= at) {
            self.retry_at = None;
        }
    }

    /// The leader-key txn this node needs now, if any.
    fn txn_due(&self, now: Timestamp) -> Option<LeaseOp> {
        if self.releasing {
            // The version of the key last seen, if it holds my name (else nothing to delete).
            return match self.key? {
                LeaderKey::Held {
                    holder,
                    revision,
                    created,
                } if holder == self.me => Some(LeaseOp::Delete {
                    seen: revision,
                    created,
                }),
                _ => None,
            };
        }
        let lease = self.lease?;
        if self.holding.is_some() {
            let created = self.created?;
            return (!self.done(Kind::Txn)).then_some(LeaseOp::Renew { lease, created });
        }
        match self.key? {
            // Ours without our holding it (a lost answer, a restart, a lapse): a candidate
            // confirms that very version of it. Nobody deletes it before the node says it does
            // not write ([`LeaseEvent::Release`]).
            LeaderKey::Held {
                holder,
                revision,
                created,
            } if holder == self.me && self.candidate => Some(LeaseOp::Confirm {
                lease,
                seen: revision,
                created,
            }),
            LeaderKey::Absent { .. } if self.candidate && now < self.deadline() => {
                Some(LeaseOp::Acquire { lease })
            }
            _ => None,
        }
    }

    fn send(&mut self, now: Timestamp, kind: Kind, op: LeaseOp) {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        let sent = Sent { id, at: now, op };
        let slot = self.slot(kind);
        slot.in_flight = Some(sent);
        slot.last_sent = Some(now);
        if kind == Kind::KeepAlive {
            // A free place, else the oldest's (its late answer is then ignored: safe, it
            // could only have extended the deadline).
            let place = self
                .keepalives
                .iter_mut()
                .min_by_key(|k| k.map_or(0, |k| k.id.0 + 1));
            if let Some(place) = place {
                *place = Some(sent);
            }
        }
        self.out
            .push_back(LeaseOutput::Command(LeaseCommand { id, op }));
    }

    /// A request failed or went unanswered: could not tell. Try again after the pause.
    fn failed(&mut self, now: Timestamp) {
        let at = now.plus(self.config.retry_pause_ms());
        self.retry_at = Some(self.retry_at.map_or(at, |r| r.min(at)));
    }

    /// The request `id` answers, and whether it was still awaited: in flight, or (a
    /// keepalive) remembered for a late answer.
    fn take(&mut self, id: RequestId) -> Option<(Sent, bool)> {
        for kind in KINDS {
            let slot = self.slot(kind);
            if let Some(sent) = slot.in_flight
                && sent.id == id
            {
                slot.in_flight = None;
                self.forget_keepalive(id);
                return Some((sent, true));
            }
        }
        self.keepalives
            .iter_mut()
            .find(|s| s.is_some_and(|s| s.id == id))
            .and_then(Option::take)
            .map(|s| (s, false))
    }

    /// An answered keepalive leaves the memory of those that may still answer late.
    fn forget_keepalive(&mut self, id: RequestId) {
        for k in &mut self.keepalives {
            if k.is_some_and(|k| k.id == id) {
                *k = None;
            }
        }
    }

    fn reply(&mut self, now: Timestamp, id: RequestId, reply: EtcdReply) {
        let Some((sent, awaited)) = self.take(id) else {
            // Too late to know when it was sent: it extends nothing. What it saw of the key
            // still counts (if not older than what is known); a lease granted meanwhile is
            // nobody's.
            match reply {
                EtcdReply::TxnFailed { key } | EtcdReply::Key(key) => self.observe(key),
                EtcdReply::Granted { lease, .. } if self.lease != Some(lease) => {
                    self.send(now, Kind::Revoke, LeaseOp::Revoke { lease });
                }
                _ => {}
            }
            return;
        };
        match (sent.op, reply) {
            (LeaseOp::Grant { .. }, EtcdReply::Granted { lease, ttl_ms }) => {
                if self.lease.is_some() || self.shut_down {
                    self.send(now, Kind::Revoke, LeaseOp::Revoke { lease });
                    return;
                }
                self.lease = Some(lease);
                self.expires = sent.at.plus(ttl_ms);
                self.last_renewal = sent.at;
                self.ok(Kind::Grant, sent.at);
                // The grant is this round's renewal.
                self.ok(Kind::KeepAlive, sent.at);
            }
            (LeaseOp::KeepAlive { lease }, EtcdReply::Alive { ttl_ms }) => {
                if self.lease == Some(lease) {
                    // Only to this request's own send time + TTL, however late it comes.
                    let expires = sent.at.plus(ttl_ms);
                    if expires > self.expires {
                        self.expires = expires;
                        self.last_renewal = sent.at;
                    }
                    self.ok(Kind::KeepAlive, sent.at);
                }
            }
            (LeaseOp::KeepAlive { lease }, EtcdReply::Gone) => {
                if self.lease == Some(lease) {
                    self.stop(StopReason::LeaseGone {
                        last_renewal: self.last_renewal,
                    });
                    self.lease = None;
                    self.expires = Timestamp::ZERO;
                    self.forget_key();
                    self.slot(Kind::Grant).last_sent = None;
                }
            }
            // A txn that bound the key to a lease known gone since: the key went with it.
            (op, EtcdReply::TxnSucceeded { .. })
                if op.puts_with().is_some() && op.puts_with() != self.lease =>
            {
                self.forget_key()
            }
            // The put created the key: its create_revision is the txn's revision.
            (LeaseOp::Acquire { .. }, EtcdReply::TxnSucceeded { revision }) => {
                self.taken(revision, revision, revision);
                self.ok(Kind::Txn, sent.at);
            }
            (
                LeaseOp::Renew { created, .. } | LeaseOp::Confirm { created, .. },
                EtcdReply::TxnSucceeded { revision },
            ) => {
                let token = self.holding.unwrap_or(revision);
                self.taken(token, revision, created);
                self.ok(Kind::Txn, sent.at);
            }
            (LeaseOp::Delete { .. }, EtcdReply::TxnSucceeded { revision }) => {
                self.releasing = false;
                self.holding = None;
                self.created = None;
                self.observe(LeaderKey::Absent { revision });
            }
            (LeaseOp::Acquire { .. } | LeaseOp::Confirm { .. }, EtcdReply::TxnFailed { key }) => {
                self.observe(key)
            }
            (LeaseOp::Renew { .. }, EtcdReply::TxnFailed { key }) => {
                // Not the key this run holds, or not bound to its lease: not ours, whatever
                // the key shows (even a stale view of it).
                self.stop(StopReason::KeyLost { key });
                self.holding = None;
                self.created = None;
                self.observe(key);
                if self.key.is_some_and(|k| k.held_by(self.me)) {
                    self.forget_key();
                }
            }
            (LeaseOp::Delete { .. }, EtcdReply::TxnFailed { key }) => {
                // It deletes only the version it saw. My name at a newer version (a renewal
                // that landed first): delete that one, after the pause. Else nothing to delete.
                self.observe(key);
                if self.key.is_some_and(|k| k.held_by(self.me)) {
                    if awaited {
                        self.failed(now);
                    }
                } else {
                    self.releasing = false;
                }
            }
            (LeaseOp::ReadKey, EtcdReply::Key(key)) => {
                self.observe(key);
                self.ok(Kind::Read, sent.at);
            }
            (LeaseOp::Revoke { .. }, EtcdReply::Revoked) => {}
            // An error, or an answer that does not fit the request: could not tell.
            _ => {
                if awaited {
                    self.failed(now);
                }
            }
        }
    }

    fn ok(&mut self, kind: Kind, sent: Timestamp) {
        let slot = self.slot(kind);
        slot.last_ok = Some(slot.last_ok.map_or(sent, |t| t.max(sent)));
    }

    /// A txn of ours put the key (created at `created`) at `revision`: it is ours, held with
    /// the fencing token `token` unless the node is stepping down.
    fn taken(&mut self, token: u64, revision: u64, created: u64) {
        if !self.releasing {
            self.holding = Some(token);
        }
        self.created = Some(created);
        let me = self.me;
        self.observe(LeaderKey::Held {
            holder: me,
            revision,
            created,
        });
    }

    /// The key is not known any more: read it at once.
    fn forget_key(&mut self) {
        self.key = None;
        self.created = None;
        let read = self.slot(Kind::Read);
        read.last_sent = None;
        read.last_ok = None;
    }

    /// A view of the key, from a read, a watch or a txn's failure branch.
    fn observe(&mut self, key: LeaderKey) {
        if key.revision() < self.seen_revision {
            return; // older than what we know
        }
        self.seen_revision = key.revision();
        self.key = Some(key);
        // Still the key this run took or confirmed? A key with my name created anew is not.
        let ours = matches!(key, LeaderKey::Held { holder, created, .. }
            if holder == self.me && Some(created) == self.created);
        if !ours {
            self.created = None;
            if self.holding.is_some() {
                self.stop(StopReason::KeyLost { key });
                self.holding = None;
            }
        }
        if matches!(key, LeaderKey::Absent { .. }) && self.candidate {
            self.slot(Kind::Txn).last_sent = None;
        }
    }

    /// The node must stop writing (if it was told it may): emitted at once.
    fn stop(&mut self, reason: StopReason) {
        if self.told == Told::Lead {
            self.told = Told::Nothing;
            self.out
                .push_back(LeaseOutput::Decision(LeaseDecision::MustStopWriting {
                    reason,
                }));
        }
        self.holding = None;
    }

    fn decide(&mut self, now: Timestamp) {
        let told = match (self.holding, self.key) {
            (Some(_), _) if now >= self.deadline() || self.shut_down => return,
            (Some(revision), _) => {
                if self.told != Told::Lead {
                    self.told = Told::Lead;
                    let until = self.deadline();
                    self.out
                        .push_back(LeaseOutput::Decision(LeaseDecision::MayLead {
                            revision,
                            until,
                        }));
                }
                return;
            }
            (
                None,
                Some(LeaderKey::Held {
                    holder, revision, ..
                }),
            ) if holder != self.me => Told::Leader(holder, revision),
            (None, Some(LeaderKey::Absent { revision })) => Told::NoLeader(revision),
            (None, Some(LeaderKey::Unreadable { revision })) => Told::Unreadable(revision),
            _ => return,
        };
        let changed = match (self.told, told) {
            // A renewal by the same leader is not news.
            (Told::Leader(a, _), Told::Leader(b, _)) => a != b,
            (Told::NoLeader(_), Told::NoLeader(_)) => false,
            (a, b) => a != b,
        };
        if changed {
            self.told = told;
            let decision = match told {
                Told::Leader(name, revision) => LeaseDecision::LeaderIs { name, revision },
                Told::NoLeader(revision) => LeaseDecision::NoLeader { revision },
                Told::Unreadable(revision) => LeaseDecision::KeyUnreadable { revision },
                Told::Nothing | Told::Lead => return,
            };
            self.out.push_back(LeaseOutput::Decision(decision));
        }
    }
}

/// A member's record, as published under its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: Name,
    pub dc: Name,
    pub nofailover: bool,
    /// Higher wins a tie on position.
    pub priority: i32,
    pub timeline: Timeline,
    pub received_lsn: Lsn,
    pub replayed_lsn: Lsn,
}

impl MemberRecord {
    /// Where its data will be once it has replayed what it received.
    pub fn position(&self) -> Lsn {
        self.received_lsn.max(self.replayed_lsn)
    }
}

/// What the cluster's shared keys say about failover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRules {
    pub primary_dc: Name,
    /// The last LSN the master published (`Lsn(0)`: none yet, and no member counts as lagging).
    pub master_lsn: Lsn,
    /// `maximum_lag_on_failover`, in bytes of WAL.
    pub maximum_lag: u64,
}

/// Why a member may not take the leader key, by the first rule it fails (in this order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ineligible {
    /// Outside the primary data centre: never promotes, however long the master is gone.
    OtherDc { dc: Name },
    /// Marked `nofailover`.
    NoFailover,
    /// Behind a newer timeline some member is on.
    OldTimeline {
        timeline: Timeline,
        newest: Timeline,
    },
    /// More than `maximum_lag_on_failover` behind the master's last published LSN.
    Lagging { lag: u64, maximum: u64 },
}

/// Why no member may take the leader key: how many members fail each rule (each counted by the
/// first it fails).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoCandidate {
    pub members: u32,
    pub other_dc: u32,
    pub nofailover: u32,
    pub old_timeline: u32,
    pub lagging: u32,
}

/// The newest timeline among `members` (0 when there are none).
pub fn newest_timeline(members: &[MemberRecord]) -> Timeline {
    members.iter().map(|m| m.timeline).max().unwrap_or(0)
}

/// Whether `member` may take the leader key, given the newest timeline any member is on.
pub fn eligibility(
    member: &MemberRecord,
    newest: Timeline,
    rules: &FailoverRules,
) -> Result<(), Ineligible> {
    if member.dc != rules.primary_dc {
        return Err(Ineligible::OtherDc { dc: member.dc });
    }
    if member.nofailover {
        return Err(Ineligible::NoFailover);
    }
    if member.timeline < newest {
        return Err(Ineligible::OldTimeline {
            timeline: member.timeline,
            newest,
        });
    }
    let lag = rules.master_lsn.0.saturating_sub(member.position().0);
    if lag > rules.maximum_lag {
        return Err(Ineligible::Lagging {
            lag,
            maximum: rules.maximum_lag,
        });
    }
    Ok(())
}

/// The one member that should take the leader key when it is gone: among the eligible ones
/// ([`eligibility`]), the highest position, then the highest priority, then the first name.
/// Else how many members fail each rule. Allocates nothing.
pub fn choose_candidate<'a>(
    members: &'a [MemberRecord],
    rules: &FailoverRules,
) -> Result<&'a MemberRecord, NoCandidate> {
    let newest = newest_timeline(members);
    let mut best: Option<&MemberRecord> = None;
    let mut none = NoCandidate::default();
    for m in members {
        none.members += 1;
        match eligibility(m, newest, rules) {
            Ok(()) => {
                let rank = |m: &MemberRecord| (m.position(), m.priority, std::cmp::Reverse(m.name));
                if best.is_none_or(|b| rank(m) > rank(b)) {
                    best = Some(m);
                }
            }
            Err(Ineligible::OtherDc { .. }) => none.other_dc += 1,
            Err(Ineligible::NoFailover) => none.nofailover += 1,
            Err(Ineligible::OldTimeline { .. }) => none.old_timeline += 1,
            Err(Ineligible::Lagging { .. }) => none.lagging += 1,
        }
    }
    best.ok_or(none)
}
