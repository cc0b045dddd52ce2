//! The vocabulary of the core: time, identities, probe results, events and commands.
//!
//! Every type here is `Copy` or owns no heap memory, so an event or a command never allocates.
//! All derive serde with externally tagged enums: the journal stores them as they are.

use serde::{Deserialize, Serialize};

/// A point on the caller's monotonic clock, in milliseconds. The core never reads a clock:
/// every call takes `now`, and the core only compares and adds these values.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + ms`, saturating: a deadline never wraps into the past.
    pub fn plus(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, 0 when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A peer, as its position in [`crate::Config::peers`]. At most [`crate::MAX_PEERS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId(pub u8);

impl PeerId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A PostgreSQL timeline ID.
pub type Timeline = u32;

/// A WAL position (`pg_lsn` as a 64-bit number).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What one probe of a PostgreSQL server found. Typed, never text: the seed release matched
/// psql's error text and took "starting up" for a dead master, which promoted the replica and
/// then stopped both nodes on the split-brain rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeResult {
    /// `pg_is_in_recovery()` is false.
    Master { timeline: Timeline, lsn: Lsn },
    /// `pg_is_in_recovery()` is true. `upstream` is the peer its `primary_conninfo` names, when
    /// the shell could map it to one.
    Replica {
        timeline: Timeline,
        replay_lsn: Lsn,
        upstream: Option<PeerId>,
    },
    /// The server answered "the database system is starting up".
    StartingUp,
    /// The server answered "the database system is shutting down".
    ShuttingDown,
    /// The connection was refused: nothing listens.
    Refused,
    /// No answer within `connect_timeout` (connect, startup and query together).
    Timeout,
    /// The server rejected our credentials.
    AuthFailed,
    /// Any other error.
    OtherError,
    /// The server answered but lacks the resources to serve the probe now: SQLSTATE class 53
    /// ("sorry, too many clients already", "remaining connection slots are reserved", "too
    /// many connections for role", out of memory, disk full, ...). Only a running postmaster
    /// answers so: the server is alive, but its role and position are unknown. Appended last
    /// so journals written before it still decode.
    Overloaded,
}

impl ProbeResult {
    /// True for an answer from a running server that says what it is.
    pub fn is_answer(self) -> bool {
        matches!(
            self,
            ProbeResult::Master { .. } | ProbeResult::Replica { .. }
        )
    }

    /// True while a server is changing state: not a failure while it lasts less than
    /// `replication.transition_bound`.
    pub fn is_transitional(self) -> bool {
        matches!(self, ProbeResult::StartingUp | ProbeResult::ShuttingDown)
    }

    pub fn timeline(self) -> Option<Timeline> {
        match self {
            ProbeResult::Master { timeline, .. } | ProbeResult::Replica { timeline, .. } => {
                Some(timeline)
            }
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ProbeResult::Master { .. } => "master",
            ProbeResult::Replica { .. } => "replica",
            ProbeResult::StartingUp => "starting up",
            ProbeResult::ShuttingDown => "shutting down",
            ProbeResult::Refused => "connection refused",
            ProbeResult::Timeout => "timeout",
            ProbeResult::AuthFailed => "authentication failed",
            ProbeResult::OtherError => "error",
            ProbeResult::Overloaded => "overloaded",
        }
    }
}

/// The local data directory as the shell found it before the core starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataDir {
    /// No cluster in the data directory. `held_data` is true when this node has held a cluster
    /// before (the shell keeps a marker outside the data dir): such a node never runs initdb
    /// again, since an empty master would silently replace the real data.
    Empty { held_data: bool },
    /// A cluster is there. `was_master` is true when its control file says it last ran as a
    /// primary ("in production" or "shut down", not "in archive recovery"): such data may have
    /// diverged from a newer master and is re-cloned rather than followed.
    Present {
        timeline: Timeline,
        lsn: Lsn,
        was_master: bool,
    },
}

/// Local facts gathered by the shell at start, the first event the core receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalFacts {
    pub data_dir: DataDir,
    /// A postgres is already running on the data dir (its postmaster.pid is live): the daemon
    /// adopts it rather than restarting it.
    pub postgres_running: bool,
    /// The persisted fence marker is set: a split-brain stop happened and no operator has run
    /// `recover` since.
    pub fenced: bool,
}

/// An identifier the core gives each command; results name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CommandId(pub u64);

/// Why a command failed, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// The command ran past its time limit and was killed.
    Timeout,
    /// The process exited with this code.
    Exit(i32),
    /// The process was killed by this signal.
    Signal(i32),
    /// The process could not be started, or an I/O step around it failed.
    Io,
    /// The command was refused before it ran (for example a precondition the shell checks).
    Refused,
    /// A re-clone was refused: the local data holds a cluster whose system identifier is not
    /// the source's (`local`, `source`; 0 when unreadable) and pgha never recorded it as its
    /// own. Replacing it could destroy another cluster's data.
    ForeignCluster { local: u64, source: u64 },
    /// The data dir holds files that are not a PostgreSQL cluster: refused to replace or
    /// initialise it (pgha only ever discards data it can prove is its own).
    ForeignFiles,
    /// A peer's daemon reports the same bootstrap index as this node (a configuration
    /// mistake: both would bootstrap and lead).
    SameIndex { peer: PeerId },
}

/// An operator's request, sent to the running daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorRequest {
    /// Clear a split-brain fence: become master unless a peer already is, else rejoin it.
    Recover,
    /// Promote this replica on purpose (the star topology's manual promotion).
    Promote,
    /// Suspend automatic actions (promotion, split-brain stops, step-downs); probes go on.
    Pause,
    /// Resume automatic actions.
    Resume,
    /// Leave the master role on purpose, for a switchover: stop postgres in fast mode (which
    /// ships all WAL to the connected standby first), then never lead on its own until a new
    /// master appears (it rejoins it) or an operator recovers it. Refused unless a peer
    /// answers as a healthy replica.
    StepDown,
    /// `recover --force`: as [`OperatorRequest::Recover`] (also from `stepped_down` and
    /// `isolated`), and until this node is master or replica again it may lead or re-clone
    /// whatever the peers' data: a re-clone may then discard data that is ahead of the master
    /// it follows (set aside per `[postgres] keep_discarded`, as every replaced data dir).
    ForceRecover,
}

impl OperatorRequest {
    pub fn name(self) -> &'static str {
        match self {
            OperatorRequest::Recover => "recover",
            OperatorRequest::Promote => "promote",
            OperatorRequest::Pause => "pause",
            OperatorRequest::Resume => "resume",
            OperatorRequest::StepDown => "step-down",
            OperatorRequest::ForceRecover => "recover --force",
        }
    }
}

/// Every input the core accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The first event: what the shell found locally at start.
    Started(LocalFacts),
    /// The result of a [`CommandKind::ProbeLocal`].
    LocalProbe { id: CommandId, result: ProbeResult },
    /// The result of a [`CommandKind::ProbePeer`].
    PeerProbe {
        id: CommandId,
        peer: PeerId,
        result: ProbeResult,
    },
    /// A non-probe command finished.
    CommandDone {
        id: CommandId,
        outcome: Result<(), Failure>,
        duration_ms: u64,
    },
    /// An operator's request.
    Operator(OperatorRequest),
    /// The result of a [`CommandKind::ProbePeerDaemon`]: the peer daemon's own report of
    /// itself, or `None` when it did not answer (within `connect_timeout`, in 64 KiB) with one.
    PeerDaemon {
        id: CommandId,
        peer: PeerId,
        report: Option<PeerReport>,
    },
    /// A user hook finished: which one, and how it ended. Changes no decision: the core takes
    /// it so the journal records it (and `pgha explain` shows it). Appended last so journals
    /// written before it still decode.
    HookDone { hook: HookRun, outcome: HookOutcome },
}

/// Which user hook ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookRun {
    /// `[hooks] on_role_change`: the action `id`, a [`CommandKind::RunHook`] of
    /// [`Hook::RoleChange`] to `role`.
    RoleChange { id: CommandId, role: Role },
    /// A per-command hook (`[hooks] on_promote`, ...; [`CommandKind::hook_key`]), run after
    /// the action `id` of `kind` finished.
    After { id: CommandId, kind: CommandKind },
}

impl HookRun {
    /// The hook's key in `[hooks]`.
    pub fn key(self) -> &'static str {
        match self {
            HookRun::RoleChange { .. } => "on_role_change",
            HookRun::After { kind, .. } => kind.hook_key().unwrap_or("hook"),
        }
    }

    /// The command the hook ran for (or as).
    pub fn command(self) -> CommandId {
        match self {
            HookRun::RoleChange { id, .. } | HookRun::After { id, .. } => id,
        }
    }
}

/// How a hook's program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookExit {
    /// It exited with this code (0: success).
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It still ran at `[hooks] timeout` and was killed.
    TimedOut,
    /// It could not be started (or waited for).
    SpawnFailed,
}

/// What a hook did: how it ended, how long it took, and the end of what it wrote to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookOutcome {
    pub exit: HookExit,
    pub duration_ms: u64,
    pub stderr: StderrTail,
}

impl HookOutcome {
    pub fn succeeded(&self) -> bool {
        self.exit == HookExit::Code(0)
    }

    /// The outcome as a command's (the role-change hook is an action).
    pub fn result(&self) -> Result<(), Failure> {
        match self.exit {
            HookExit::Code(0) => Ok(()),
            HookExit::Code(c) => Err(Failure::Exit(c)),
            HookExit::Signal(s) => Err(Failure::Signal(s)),
            HookExit::TimedOut => Err(Failure::Timeout),
            HookExit::SpawnFailed => Err(Failure::Io),
        }
    }
}

/// The most bytes of a hook's stderr an event keeps: its last ones.
pub const STDERR_TAIL: usize = 160;

/// The end of a program's stderr, at most [`STDERR_TAIL`] bytes of UTF-8 (cut at a character
/// boundary, surrounding whitespace trimmed): fixed-size, so an event stays `Copy` and never
/// allocates. Encoded as a string.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StderrTail {
    len: u8,
    bytes: [u8; STDERR_TAIL],
}

impl Default for StderrTail {
    fn default() -> Self {
        StderrTail {
            len: 0,
            bytes: [0; STDERR_TAIL],
        }
    }
}

impl StderrTail {
    /// The last [`STDERR_TAIL`] bytes of `text`, trimmed.
    pub fn of(text: &str) -> StderrTail {
        let text = text.trim();
        let mut start = text.len().saturating_sub(STDERR_TAIL);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let tail = text[start..].trim_start().as_bytes();
        let mut t = StderrTail::default();
        t.bytes[..tail.len()].copy_from_slice(tail);
        t.len = tail.len() as u8;
        t
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for StderrTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for StderrTail {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StderrTail {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(StderrTail::of(&text))
    }
}

/// Where a node's data is: what the election and the split-brain rule compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    pub timeline: Timeline,
    /// The local postgres's last reported position (a master's WAL position, a replica's
    /// replay position), else the control file's latest checkpoint.
    pub lsn: Lsn,
    /// The data last ran as a master: on its timeline it holds every write it acknowledged.
    pub was_master: bool,
}

impl DataPosition {
    /// The order of "more advanced": the newer timeline, then (on one timeline) data that ran
    /// as master (a replica of it holds at most what it shipped), then the further position.
    pub fn rank(self) -> (Timeline, bool, Lsn) {
        (self.timeline, self.was_master, self.lsn)
    }
}

/// How a peer stands, as its daemon reports it (`PeerReport::standing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    /// Master, or being made one (promoting, or started as master and not yet answering).
    Leading,
    /// Waiting to lead on its own data at the end of its wait (electing, discovering).
    Electing,
    /// A replica, or becoming one (cloning, starting as replica, waiting for a master).
    Following,
    /// Will not lead by itself until an operator or a master acts: fenced, halted, stepped
    /// down, isolated.
    Held,
    /// Anything else (starting up, stopping).
    Busy,
}

/// What a pgha daemon says of itself to its peers (`GET /status`, field `report`): the
/// core's own view, so peers compare like with like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// Its `node.index`.
    pub index: u32,
    /// What its postgres is (or is being made).
    pub role: Role,
    pub standing: Standing,
    /// Its data; `None` when its data dir is empty or not yet known.
    pub data: Option<DataPosition>,
    /// A replica's upstream (the index of the node it follows) and its current run of failed
    /// probes of it: a master whose replica can no longer see it (a one-way partition) knows
    /// the replica is counting towards a promotion. (Defaults let a peer's JSON without them
    /// still parse.)
    #[serde(default)]
    pub upstream: Option<u32>,
    #[serde(default)]
    pub upstream_failures: u32,
}

/// One call on a [`crate::Node`]: what the journal records and replay feeds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// [`crate::Node::handle`] with this event.
    Event(Event),
    /// [`crate::Node::handle_timeout`].
    Timeout,
}

/// How postgres should be started.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartAs {
    Master,
    /// As a streaming replica of this peer, with `recovery_target_timeline = 'latest'`.
    Replica {
        upstream: PeerId,
    },
}

/// How postgres should be stopped (`pg_ctl stop -m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopMode {
    Fast,
    Immediate,
}

/// Where the proxy should send writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyTarget {
    Local,
    Peer(PeerId),
}

/// A role as the world sees it: what the local postgres is (or is being made).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    #[default]
    None,
    Master,
    Replica,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::None => "none",
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

/// User hooks the core asks the shell to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hook {
    /// The local role changed to this one.
    RoleChange { role: Role },
}

/// What the core asks the shell to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    /// `initdb` the (empty) data dir.
    InitDataDir,
    StartPostgres(StartAs),
    StopPostgres(StopMode),
    /// `pg_basebackup` from this peer into a fresh directory that replaces the data dir only
    /// once complete: a failed copy leaves the old data dir as it was.
    Basebackup {
        from: PeerId,
    },
    /// `pg_promote()` on the local replica.
    Promote,
    /// Point the running local replica at another upstream (rewrite `primary_conninfo`, reload).
    Follow {
        upstream: PeerId,
    },
    ProbeLocal,
    ProbePeer(PeerId),
    AcquireVip,
    ReleaseVip,
    RepointProxy(ProxyTarget),
    PauseProxy,
    ResumeProxy,
    /// Persist the split-brain fence marker (before postgres is stopped, so a crash keeps it).
    Fence,
    /// Clear the fence marker (operator `recover`).
    Unfence,
    RunHook(Hook),
    /// Ask each peer's daemon (its API's `/status`) for its index: fails with
    /// [`Failure::SameIndex`] when a peer claims this node's own index. Emitted before this
    /// node may bootstrap or lead; an unreachable peer is not a failure.
    CheckPeerIndex,
    /// Ask this peer's daemon for its [`PeerReport`] (`GET /status`, bounded by
    /// `connect_timeout` and 64 KiB). A probe: runs concurrently, answered by
    /// [`Event::PeerDaemon`].
    ProbePeerDaemon(PeerId),
}

impl CommandKind {
    /// Probes run concurrently and return as probe events; every other command is an
    /// *action*: the shell runs actions one at a time in the order polled and reports each
    /// with [`Event::CommandDone`].
    pub fn is_probe(self) -> bool {
        matches!(
            self,
            CommandKind::ProbeLocal | CommandKind::ProbePeer(_) | CommandKind::ProbePeerDaemon(_)
        )
    }

    /// The key in `[hooks]` of the hook run after this action (`on_promote`, ...), if any.
    pub fn hook_key(self) -> Option<&'static str> {
        Some(match self {
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

    pub fn name(self) -> &'static str {
        match self {
            CommandKind::InitDataDir => "initdb",
            CommandKind::StartPostgres(StartAs::Master) => "start postgres as master",
            CommandKind::StartPostgres(StartAs::Replica { .. }) => "start postgres as replica",
            CommandKind::StopPostgres(StopMode::Fast) => "stop postgres (fast)",
            CommandKind::StopPostgres(StopMode::Immediate) => "stop postgres (immediate)",
            CommandKind::Basebackup { .. } => "basebackup",
            CommandKind::Promote => "promote",
            CommandKind::Follow { .. } => "follow new upstream",
            CommandKind::ProbeLocal => "probe local",
            CommandKind::ProbePeer(_) => "probe peer",
            CommandKind::AcquireVip => "acquire VIP",
            CommandKind::ReleaseVip => "release VIP",
            CommandKind::RepointProxy(_) => "repoint proxy",
            CommandKind::PauseProxy => "pause proxy",
            CommandKind::ResumeProxy => "resume proxy",
            CommandKind::Fence => "set fence",
            CommandKind::Unfence => "clear fence",
            CommandKind::RunHook(_) => "run hook",
            CommandKind::CheckPeerIndex => "check peer indexes",
            CommandKind::ProbePeerDaemon(_) => "probe peer daemon",
        }
    }
}

/// A command with the id its result will carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: CommandId,
    pub kind: CommandKind,
}
