//! The simulated world: postgres servers, a network, daemons running real `pgha_core::Node`s,
//! faults, and the invariant checks run after every step.

use std::collections::VecDeque;

use pgha_core::{
    Command, CommandId, CommandKind, Config, DataDir, Event, Failure, Input, Isolation, LocalFacts,
    Lsn, Node, OperatorRequest, PeerConfig, PeerId, PeerReport, ProbeResult, Reason,
    SplitBrainRule, StartAs, State, StopMode, Timestamp, Topology, Transition,
};

use crate::rng::Rng;

/// The longest simulated stop of a running server.
pub const STOP_MAX_MS: u64 = 1_000;
/// The longest one-way network delay.
const DELAY_MAX_MS: u64 = 20;
/// The most nodes a scenario has.
const MAX_NODES: usize = 5;
/// A moment per ordered pair of nodes.
type PerPair = [[Option<Timestamp>; MAX_NODES]; MAX_NODES];
/// Asynchronous replication: a replica receives what its master wrote this long ago (what a
/// master that dies abruptly has not yet shipped is on no other node). A clean (fast) stop
/// ships everything first.
pub const REPLICATION_LAG_MS: u64 = 100;

/// One copy of a cluster's data. `branch` names the history it is on: a promotion starts a
/// new branch and remembers where it forked from, so the simulator knows which copies can
/// still follow which master (PostgreSQL's timeline history, made exact).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgData {
    pub timeline: u32,
    pub lsn: u64,
    pub branch: u32,
    pub ancestry: Vec<(u32, u64)>,
    pub was_master: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgRole {
    Master,
    Replica { upstream: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    StartingUp,
    Up,
    ShuttingDown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgRun {
    pub role: PgRole,
    pub phase: Phase,
}

/// An action being carried out by a node's shell.
#[derive(Clone, Copy, Debug)]
struct Running {
    cmd: Command,
    started: Timestamp,
    finish: Timestamp,
    /// Decided when it started: an injected failure.
    inject: Option<Failure>,
    /// The daemon that issued it (results to an older daemon are dropped).
    daemon: u32,
}

#[derive(Debug)]
pub struct SimNode {
    pub config: Config,
    pub core: Option<Node>,
    /// Bumped on each daemon start; results for an older daemon are dropped.
    pub daemon: u32,
    pub data: Option<PgData>,
    pub held_data: bool,
    pub fence_marker: bool,
    pub pg: Option<PgRun>,
    /// The postmaster is stopped (SIGSTOP): no new connection, no answer, a `pg_ctl stop`
    /// takes effect when it resumes.
    pub hung: bool,
    /// Every process of the server is stopped too (its backends and walsenders): nothing is
    /// written or shipped. Without it a hung postmaster's backends keep serving the client
    /// sessions they already have, and its walsenders keep streaming.
    pub frozen: bool,
    /// An immediate stop killed the backends of the hung postmaster (the shell kills every
    /// process of the cluster): nothing is written or shipped until it runs again.
    pub backends_killed: bool,
    kill_backends_at: Option<Timestamp>,
    /// When its postgres last became a master (started as one, or promoted).
    master_since: Timestamp,
    /// When the postmaster last hung, and last resumed.
    hung_at: Option<Timestamp>,
    resumed_at: Option<Timestamp>,
    /// The client has sessions open on this node's postgres.
    pub sessions: bool,
    /// When this node last acquired the VIP (a counter): new sessions go to the latest.
    vip_seq: u64,
    /// What its walsenders shipped: all up to `shipped`, not yet the positions in `unshipped`.
    shipped: u64,
    unshipped: VecDeque<(Timestamp, u64)>,
    /// When the current daemon started.
    daemon_started: Timestamp,
    /// When an operator last resumed its paused daemon.
    resumed_pause_at: Option<Timestamp>,
    /// The nodes whose daemon this node's core could ask when it last decided to lead.
    lead_in_sight: u32,
    /// The timeline split-brain rule fenced it, and it has not left `fenced` since.
    timeline_rule_fenced: bool,
    /// Its last promotion was the core's own (not an operator's).
    promote_automatic: bool,
    /// The simulated operator ran `recover --force` on it: the next re-clone's discarded data
    /// is the operator's choice.
    forced: bool,
    /// Client sessions fill every connection slot: a probe of the running server gets
    /// "too many clients" (it is alive). Commands are unaffected: the shell promotes and
    /// reloads with `pg_ctl` when SQL cannot connect, and basebackups use walsender slots.
    pub exhausted: bool,
    /// pg_ctl stop signalled a stopped (hung) postmaster: it stops as soon as it resumes.
    stop_signalled: bool,
    pub vip: bool,
    queue: VecDeque<Command>,
    current: Option<Running>,
    /// PeerId(k) of this node is node `peer_of[k]`.
    peer_of: Vec<usize>,
    pub daemon_down: bool,
    /// The highest master timeline this node has followed or been (for the timeline check).
    followed_timeline: u32,
}

/// A fault the schedule injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    KillPostgres(usize),
    Hang(usize),
    Resume(usize),
    CrashDaemon(usize),
    RestartDaemon(usize),
    Partition(usize, usize),
    Heal(usize, usize),
    LossOn(u32),
    LossOff,
    Operator(usize, OperatorRequest),
    /// `pg_promote()` run on the node's postgres outside pgha (a replica becomes a second
    /// master): what the split-brain rule exists for.
    ExternalPromote(usize),
    /// Client sessions fill the node's connection slots (they stay full across restarts of
    /// its postgres: the applications reconnect), until [`Fault::Release`].
    Exhaust(usize),
    Release(usize),
    /// SIGSTOP of the postmaster only: no new connection, no answer, but the backends already
    /// connected keep committing and the walsenders keep streaming, until [`Fault::Resume`].
    HangPostmaster(usize),
    /// Connections from the first node to the second time out (its probes, its daemon's
    /// reports, its replication stream and basebackups); the other way works. Healed by
    /// [`Fault::Heal`].
    PartitionOneWay(usize, usize),
    /// Every host loses power: postgres, daemons, running actions and VIPs are gone, the data
    /// stays. [`Fault::RestartDaemon`] powers a node on.
    PowerCut,
}

/// One line of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceItem {
    Input(usize, Input),
    Command(usize, Command),
    Transition(usize, Transition),
    Fault(Fault),
    Note(usize, &'static str),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    pub at: Timestamp,
    pub item: TraceItem,
}

/// One daemon lifetime of one node: what a journal of that run holds.
#[derive(Clone, Debug)]
pub struct NodeRun {
    pub node: usize,
    pub config: Config,
    pub inputs: Vec<(Timestamp, Input)>,
    pub commands: Vec<Command>,
    pub transitions: Vec<Transition>,
}

/// Why a write was acknowledged on a branch after another node promoted off it (a write
/// the promoted node's history can never hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// Violation (issue 11 item 1): its postmaster hung and its daemon, watching, did not
    /// kill the backends within `master_give_up + probe_interval + stop allowance`.
    Hung,
    /// Violation (item 4): isolation = fence, and it could not reach the promoted node for
    /// `master_give_up` before the promotion.
    Isolated,
    /// Violation: in sight both ways longer than the split-brain bound.
    Seen,
    /// Violation: in sight both ways, within the split-brain bound (a race: e.g. it led while
    /// the peer promoted).
    Race,
    /// Conceded: an operator's or an outside promotion.
    ByHand,
    /// Conceded: it led (after the promotion) while the promoted node's daemon was out of
    /// its sight: a dead or cut-off peer, two histories, one lost whatever the rule.
    LedBlind,
    /// Conceded: its daemon was down, paused, or (re)started around the promotion (docs/core.md,
    /// known limits).
    DaemonDown,
    /// Conceded: isolation = keep-serving and the link was cut (the documented trade-off).
    KeepServing,
    /// Conceded: the promoted node was gone (neither its daemon nor its postgres answering):
    /// nothing told the writer of the promotion.
    PeerDown,
    /// Conceded: probe loss (the promoted node may have promoted beside a reachable master).
    Loss,
    /// Conceded: a server full (out of sight of the split-brain rule, docs/core.md).
    Full,
    /// Conceded: a cut link (or one just healed) the writer could not act on: one-way (it
    /// reached the promoted node, which could not reach it), or begun less than
    /// `master_give_up` before the promotion.
    OneWay,
}

impl Stale {
    pub const COUNT: usize = 12;
    /// Every cause, in the order of [`Stats::stale`].
    pub const ALL: [Stale; Stale::COUNT] = [
        Stale::Hung,
        Stale::Isolated,
        Stale::Seen,
        Stale::Race,
        Stale::ByHand,
        Stale::LedBlind,
        Stale::DaemonDown,
        Stale::KeepServing,
        Stale::PeerDown,
        Stale::Loss,
        Stale::Full,
        Stale::OneWay,
    ];

    pub fn is_violation(self) -> bool {
        matches!(
            self,
            Stale::Hung | Stale::Isolated | Stale::Seen | Stale::Race
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Stale::Hung => "its postmaster hung and its daemon did not kill the backends first",
            Stale::Isolated => {
                "isolation = fence, and it could not reach that node since before it could promote"
            }
            Stale::Seen => {
                "it has seen the promoted node clearly for longer than the split-brain bound"
            }
            Stale::Race => "it is in sight of the promoted node (within the split-brain bound)",
            Stale::ByHand => "a promotion by hand",
            Stale::LedBlind => "it led while the promoted node was out of its sight",
            Stale::DaemonDown => "its daemon was down, paused or restarted",
            Stale::KeepServing => "isolation = keep-serving across a cut link",
            Stale::Loss => "probe loss",
            Stale::PeerDown => "the promoted node was down",
            Stale::Full => "a full server",
            Stale::OneWay => "a cut it could not notice (one-way, or begun after it could fence)",
        }
    }
}

/// What the simulated cluster looks like and which faults the seed may draw.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub nodes: usize,
    pub topology: Topology,
    pub split_brain: SplitBrainRule,
    pub isolation: Isolation,
    pub fast: bool,
    /// Start from existing data (node 0 last master) instead of empty data dirs.
    pub restart_with_data: bool,
    pub vip: bool,
    pub proxy: bool,
    /// Per-action chance of an injected failure.
    pub action_failure: f64,
    pub faults: Vec<(Timestamp, Fault)>,
    /// When the last fault has happened and everything is healed.
    pub faults_end: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub at: Timestamp,
    pub what: String,
}

#[derive(Debug)]
struct Delivery {
    at: Timestamp,
    seq: u64,
    node: usize,
    daemon: u32,
    id: CommandId,
    peer: Option<PeerId>,
    result: ProbeResult,
    /// A peer daemon's report (`Some`: this delivery answers a `ProbePeerDaemon`).
    report: Option<Option<PeerReport>>,
}

/// A probe waiting on a stopped postmaster.
#[derive(Debug, Clone, Copy)]
struct Parked {
    node: usize,
    daemon: u32,
    id: CommandId,
    peer: Option<PeerId>,
    target: usize,
    expires: Timestamp,
}

/// The simulated cluster.
#[derive(Debug)]
pub struct World {
    pub now: Timestamp,
    pub nodes: Vec<SimNode>,
    pub scenario: Scenario,
    rng: Rng,
    deliveries: Vec<Delivery>,
    parked: Vec<Parked>,
    seq: u64,
    partitioned: Vec<(usize, usize)>,
    /// One-way partitions: (from, to).
    one_way: Vec<(usize, usize)>,
    loss: Option<u32>,
    pending_faults: VecDeque<(Timestamp, Fault)>,
    next_branch: u32,
    pub trace: Vec<TraceLine>,
    pub runs: Vec<NodeRun>,
    run_of: Vec<usize>,
    /// Per ordered pair: since when x has had a clean view of master y.
    clean_since: PerPair,
    /// Per pair: since when both are masters that can see each other.
    both_master_since: PerPair,
    vip_both_since: PerPair,
    /// Per node: since when its postgres has been up (running, not hung, neither starting up
    /// nor shutting down), full or not.
    local_up_since: Vec<Option<Timestamp>>,
    /// Per ordered pair: since when x's core could ask y's daemon (running, reachable, no loss).
    daemon_in_sight_since: PerPair,
    /// Per ordered pair: since when connections from x to y time out.
    cut_since: PerPair,
    /// Per ordered pair: when x last could not see y clearly (a cut either way, loss, either
    /// server full).
    murky_at: PerPair,
    /// When probe loss, and each server's being full, were last seen.
    lossy_at: Option<Timestamp>,
    full_at: Vec<Option<Timestamp>>,
    /// When each node was last gone: daemon down and postgres not an up master.
    gone_at: Vec<Option<Timestamp>>,
    /// The history's branches, by id.
    pub branches: Vec<Branch>,
    /// Every write acknowledged to the client.
    pub writes: Vec<Write>,
    /// Data replaced by re-clones (the shell sets it aside), with whether the operator forced it.
    pub set_aside: Vec<(PgData, bool)>,
    vip_seq: u64,
    pub violations: Vec<Violation>,
    last_lsn_tick: Timestamp,
    pub stats: Stats,
    /// Whether to keep the full trace and per-run logs (the journal tests need them; a quick
    /// sweep only needs the violations).
    pub record: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub steps: u64,
    pub inputs: u64,
    pub promotions: u64,
    pub split_brain_stops: u64,
    pub clones: u64,
    pub recovers: u64,
    /// Writes acknowledged to the client.
    pub writes: u64,
    /// Of those, missing from the final master: acknowledged before the promotion that left
    /// them behind and not yet shipped (asynchronous replication).
    pub writes_unshipped: u64,
    /// Missing, and acknowledged after a promotion in a case the core cannot prevent or that
    /// is documented (keep-serving, a dead or restarted daemon, a one-way partition, loss).
    pub writes_conceded: u64,
    /// Missing, and discarded by the operator (`recover --force`, a promotion by hand) or by a
    /// node that led while the writer was out of its sight.
    pub writes_operator: u64,
    /// Writes acknowledged after another node promoted off their branch, by [`Stale`] cause.
    pub stale: [u64; Stale::COUNT],
}

impl SimNode {
    /// The node a peer id of this node names.
    pub fn peer_index(&self, peer: PeerId) -> usize {
        self.peer_of[peer.index()]
    }
}

/// How a branch of history began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchKind {
    /// initdb (or the data a seed starts from).
    Initdb,
    /// `pg_promote()` of a replica: `automatic` when the core promoted on its own (not an
    /// operator's `promote`, not a promotion outside pgha).
    Promotion { automatic: bool },
    /// A master wrote on data behind the furthest copy of its history (a node led on less
    /// than all of it: one timeline, two histories). `in_sight`: the nodes whose daemon its
    /// core could ask when it decided to lead (a bit per node).
    Diverged { in_sight: u32 },
}

/// One branch of the cluster's history (see [`PgData::branch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Branch {
    /// The branch and position it forked from.
    pub parent: Option<(u32, u64)>,
    pub created: Timestamp,
    /// The node whose data started it.
    pub by: usize,
    pub kind: BranchKind,
    /// The furthest position any copy reached on it.
    pub tip: u64,
}

/// Positions `from + 1 ..= to` of `branch`, acknowledged to the client by `node` at `at`
/// (one write per position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub node: usize,
    pub branch: u32,
    pub from: u64,
    pub to: u64,
    /// When the first and the last of them were acknowledged.
    pub at: Timestamp,
    pub until: Timestamp,
    /// Acknowledged after another node promoted off this branch: why (see
    /// `World::stale_write`). Missing at the end, a violation unless the cause is conceded.
    pub stale: Option<Stale>,
}

impl World {
    pub fn new(seed: u64, scenario: Scenario, rng: Rng, record: bool) -> World {
        let n = scenario.nodes;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let peer_of: Vec<usize> = (0..n).filter(|&j| j != i).collect();
            let config = node_config(&scenario, i, &peer_of);
            nodes.push(SimNode {
                config,
                core: None,
                daemon: 0,
                data: None,
                held_data: false,
                fence_marker: false,
                pg: None,
                hung: false,
                frozen: false,
                backends_killed: false,
                kill_backends_at: None,
                master_since: Timestamp::ZERO,
                hung_at: None,
                resumed_at: None,
                sessions: false,
                vip_seq: 0,
                shipped: 0,
                unshipped: VecDeque::new(),
                daemon_started: Timestamp::ZERO,
                resumed_pause_at: None,
                lead_in_sight: 0,
                promote_automatic: false,
                timeline_rule_fenced: false,
                forced: false,
                exhausted: false,
                stop_signalled: false,
                vip: false,
                queue: VecDeque::new(),
                current: None,
                peer_of,
                daemon_down: true,
                followed_timeline: 0,
            });
        }
        let mut next_branch = 1;
        // Branch ids index this (0 unused; 1 is the data a seed may start from).
        let origin = Branch {
            parent: None,
            created: Timestamp::ZERO,
            by: 0,
            kind: BranchKind::Initdb,
            tip: if scenario.restart_with_data { 1000 } else { 0 },
        };
        let branches = vec![origin, origin];
        if scenario.restart_with_data {
            for (i, node) in nodes.iter_mut().enumerate() {
                node.data = Some(PgData {
                    timeline: 1,
                    lsn: if i == 0 { 1000 } else { 900 },
                    branch: 1,
                    ancestry: Vec::new(),
                    was_master: i == 0,
                });
                node.held_data = true;
            }
            next_branch = 2;
        }
        let _ = seed;
        let pending_faults = scenario.faults.iter().copied().collect();
        World {
            now: Timestamp::ZERO,
            nodes,
            scenario,
            rng,
            deliveries: Vec::new(),
            parked: Vec::new(),
            seq: 0,
            partitioned: Vec::new(),
            one_way: Vec::new(),
            loss: None,
            pending_faults,
            next_branch,
            trace: Vec::new(),
            runs: Vec::new(),
            run_of: vec![usize::MAX; n],
            clean_since: [[None; MAX_NODES]; MAX_NODES],
            both_master_since: [[None; MAX_NODES]; MAX_NODES],
            vip_both_since: [[None; MAX_NODES]; MAX_NODES],
            local_up_since: vec![None; n],
            daemon_in_sight_since: [[None; MAX_NODES]; MAX_NODES],
            cut_since: [[None; MAX_NODES]; MAX_NODES],
            murky_at: [[None; MAX_NODES]; MAX_NODES],
            lossy_at: None,
            full_at: vec![None; n],
            gone_at: vec![None; n],
            branches,
            writes: Vec::new(),
            set_aside: Vec::new(),
            vip_seq: 0,
            violations: Vec::new(),
            last_lsn_tick: Timestamp::ZERO,
            stats: Stats::default(),
            record,
        }
    }

    fn log(&mut self, item: TraceItem) {
        if self.record {
            self.trace.push(TraceLine { at: self.now, item });
        }
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 16 {
            self.violations.push(Violation { at: self.now, what });
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_daemon(i);
        }
    }

    fn facts(&self, i: usize) -> LocalFacts {
        let n = &self.nodes[i];
        LocalFacts {
            data_dir: match &n.data {
                None => DataDir::Empty {
                    held_data: n.held_data,
                },
                Some(d) => DataDir::Present {
                    timeline: d.timeline,
                    lsn: Lsn(d.lsn),
                    was_master: d.was_master,
                },
            },
            postgres_running: n.pg.is_some(),
            fenced: n.fence_marker,
        }
    }

    fn start_daemon(&mut self, i: usize) {
        let facts = self.facts(i);
        let node = &mut self.nodes[i];
        node.daemon += 1;
        node.daemon_down = false;
        node.daemon_started = self.now;
        node.core = Some(Node::new(node.config.clone()));
        node.queue.clear();
        if self.record {
            self.run_of[i] = self.runs.len();
            self.runs.push(NodeRun {
                node: i,
                config: self.nodes[i].config.clone(),
                inputs: Vec::new(),
                commands: Vec::new(),
                transitions: Vec::new(),
            });
        }
        self.feed(i, Input::Event(Event::Started(facts)));
    }

    fn crash_daemon(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.core = None;
        node.daemon_down = true;
        node.queue.clear();
        // A running action's process lives on and finishes; its result reaches no one.
    }

    /// Feeds one input to node `i`'s core and carries out what it asks.
    fn feed(&mut self, i: usize, input: Input) {
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        self.stats.inputs += 1;
        let step = core.step(self.now, input);
        let (transitions, cmds) = (step.transitions, step.commands);
        if self.record {
            self.trace.push(TraceLine {
                at: self.now,
                item: TraceItem::Input(i, input),
            });
            let run = &mut self.runs[self.run_of[i]];
            run.inputs.push((self.now, input));
            run.commands.extend_from_slice(&cmds);
            run.transitions.extend_from_slice(&transitions);
        }
        for t in transitions {
            self.log(TraceItem::Transition(i, t));
            self.on_transition(i, t);
        }
        for c in cmds {
            self.log(TraceItem::Command(i, c));
            self.dispatch(i, c);
        }
    }

    fn on_transition(&mut self, i: usize, t: Transition) {
        if let State::Promoting { .. } = t.to {
            self.nodes[i].promote_automatic = !matches!(t.reason, Reason::Operator { .. });
        }
        // What a node deciding to lead could know: the daemons in sight for a whole round.
        if t.to
            == (State::Starting {
                target: StartAs::Master,
            })
        {
            let cfg = &self.nodes[i].config;
            let window = cfg.connect_timeout_ms + cfg.probe_interval_ms + 2 * DELAY_MAX_MS + 1;
            let mut mask = 0;
            for j in 0..self.nodes.len() {
                if self.daemon_in_sight_since[i][j].is_some_and(|s| self.now.since(s) > window) {
                    mask |= 1 << j;
                }
            }
            self.nodes[i].lead_in_sight = mask;
        }
        if let State::Promoting { upstream } = t.to
            && !matches!(t.from, State::Promoting { .. })
        {
            self.stats.promotions += 1;
            let automatic = !matches!(t.reason, Reason::Operator { .. });
            let u = self.nodes[i].peer_of[upstream.index()];
            if automatic && let Some(since) = self.clean_since[i][u] {
                let cfg = &self.nodes[i].config;
                let window = cfg.connect_timeout_ms + cfg.probe_interval_ms + 2 * DELAY_MAX_MS + 1;
                if self.now.since(since) > window {
                    self.violation(format!(
                        "node {i} promoted while master {u} answered as healthy and reachable since {since}"
                    ));
                }
            }
        }
        // A node never leads on its own data, nor runs initdb, while a peer was an up master
        // in sight of it for the whole window in which a probe must have found it: alive but
        // unreadable (full) is not "no master".
        if matches!(
            t.reason,
            Reason::GraceExpired { .. } | Reason::NoMasterFound { .. }
        ) {
            let cfg = &self.nodes[i].config;
            let window = cfg.connect_timeout_ms + cfg.probe_interval_ms + 2 * DELAY_MAX_MS + 1;
            for j in 0..self.nodes.len() {
                if let Some(since) = self.clean_since[i][j]
                    && self.now.since(since) > window
                {
                    self.violation(format!(
                        "node {i} ended its wait for a master ({}) while node {j} was an up master in sight since {since}",
                        t.reason.code()
                    ));
                }
            }
        }
        // A node never declares its own postgres down while it was up for the whole window in
        // which the failed probes must have happened: a full server is alive.
        if let Reason::LocalDown { failures } = t.reason
            && let Some(since) = self.local_up_since[i]
        {
            let cfg = &self.nodes[i].config;
            let window = cfg.connect_timeout_ms + cfg.probe_interval_ms + 2 * DELAY_MAX_MS + 1;
            if self.now.since(since) > window {
                self.violation(format!(
                    "node {i} declared its postgres down (last {:?}) while it was up since {since}",
                    failures.last
                ));
            }
        }
        // A split-brain decision must rest on the node's true timeline, not a stale one.
        if let Reason::SplitBrain {
            local_timeline: Some(l),
            ..
        } = t.reason
            && let Some(d) = &self.nodes[i].data
            && d.timeline != l
        {
            let truth = d.timeline;
            self.violation(format!(
                "node {i} decided split-brain on timeline {l}, but its data is on timeline {truth}"
            ));
        }
        if let (
            State::SteppingDown {
                then: pgha_core::AfterStop::Fence,
            },
            Reason::SplitBrain { peer, rule, .. },
        ) = (t.to, t.reason)
        {
            self.stats.split_brain_stops += 1;
            // The timeline rule keeps one master: it never stops both (both-stop does, by
            // design: an outage until an operator acts).
            let p = self.nodes[i].peer_index(peer);
            if rule == SplitBrainRule::OlderTimelineStepsDown {
                self.nodes[i].timeline_rule_fenced = true;
                if self.nodes[p].timeline_rule_fenced {
                    self.violation(format!(
                        "the split-brain rule {} stopped both node {i} and node {p}",
                        rule.name()
                    ));
                }
            }
        } else if !matches!(
            t.to,
            State::Fenced
                | State::SteppingDown {
                    then: pgha_core::AfterStop::Fence
                }
        ) {
            self.nodes[i].timeline_rule_fenced = false;
        }
        if let State::Cloning { .. } = t.to {
            self.stats.clones += 1;
        }
    }

    fn dispatch(&mut self, i: usize, cmd: Command) {
        match cmd.kind {
            CommandKind::ProbeLocal if self.nodes[i].hung && self.nodes[i].pg.is_some() => {
                self.park(i, cmd.id, None, i);
            }
            CommandKind::ProbeLocal => {
                let result = self.probe_result(i, i);
                if let Some(result) = result {
                    // A busy local server can answer later than a peer does.
                    let d = self.rng.range(1, 2 * DELAY_MAX_MS);
                    self.deliver(i, cmd.id, None, result, d);
                }
            }
            CommandKind::ProbePeer(p) => {
                let target = self.nodes[i].peer_of[p.index()];
                if self.dropped(i, target) {
                    return; // never answers: the core times it out
                }
                if self.nodes[target].hung && self.nodes[target].pg.is_some() {
                    self.park(i, cmd.id, Some(p), target);
                    return;
                }
                if let Some(result) = self.probe_result(i, target) {
                    let d = self.rng.range(1, DELAY_MAX_MS) + self.rng.range(1, DELAY_MAX_MS);
                    self.deliver(i, cmd.id, Some(p), result, d);
                }
            }
            CommandKind::ProbePeerDaemon(p) => {
                let target = self.nodes[i].peer_of[p.index()];
                if self.dropped(i, target) {
                    return; // never answers: the core times it out
                }
                // A dead daemon's port refuses at once: no report.
                let report = self.nodes[target].core.as_ref().map(Node::report);
                let d = self.rng.range(1, DELAY_MAX_MS) + self.rng.range(1, DELAY_MAX_MS);
                self.seq += 1;
                self.deliveries.push(Delivery {
                    at: self.now.plus(d),
                    seq: self.seq,
                    node: i,
                    daemon: self.nodes[i].daemon,
                    id: cmd.id,
                    peer: Some(p),
                    result: ProbeResult::Refused,
                    report: Some(report),
                });
            }
            _ => {
                self.nodes[i].queue.push_back(cmd);
                self.start_next_action(i);
            }
        }
    }

    /// A connection to a stopped postmaster waits in its listen queue: the probe is answered
    /// when it resumes (or refused when it is killed), if the prober still waits then.
    fn park(&mut self, node: usize, id: CommandId, peer: Option<PeerId>, target: usize) {
        let daemon = self.nodes[node].daemon;
        let timeout = self.nodes[node].config.connect_timeout_ms;
        self.parked.push(Parked {
            node,
            daemon,
            id,
            peer,
            target,
            expires: self.now.plus(timeout),
        });
    }

    /// Answers the probes parked on node `target`'s postgres, which runs again (or is gone).
    fn unpark(&mut self, target: usize) {
        let now = self.now;
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            if p.target != target {
                self.parked.push(p);
                continue;
            }
            if p.expires <= now || self.nodes[p.node].daemon != p.daemon {
                continue;
            }
            if p.peer.is_some() && self.cut(p.node, target) {
                continue;
            }
            if let Some(result) = self.probe_result(p.node, target) {
                let d = self.rng.range(1, DELAY_MAX_MS) + self.rng.range(1, DELAY_MAX_MS);
                self.deliver(p.node, p.id, p.peer, result, d);
            }
        }
    }

    /// Whether a request from `i` to `target` is lost: a cut link, or drawn from the loss
    /// rate (the draw is made only when the link is up, as before).
    fn dropped(&mut self, i: usize, target: usize) -> bool {
        self.cut(i, target)
            || self
                .loss
                .is_some_and(|pct| self.rng.range(1, 100) <= u64::from(pct))
    }

    fn deliver(
        &mut self,
        node: usize,
        id: CommandId,
        peer: Option<PeerId>,
        result: ProbeResult,
        delay: u64,
    ) {
        self.seq += 1;
        let d = Delivery {
            at: self.now.plus(delay),
            seq: self.seq,
            node,
            daemon: self.nodes[node].daemon,
            id,
            peer,
            result,
            report: None,
        };
        self.deliveries.push(d);
    }

    /// The link between `a` and `b` is cut in at least one direction: they cannot see each
    /// other both ways.
    fn link_down(&self, a: usize, b: usize) -> bool {
        self.partitioned
            .iter()
            .chain(&self.one_way)
            .any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
    }

    /// Connections from `from` to `to` time out.
    fn cut(&self, from: usize, to: usize) -> bool {
        self.partitioned
            .iter()
            .any(|&(x, y)| (x, y) == (from, to) || (x, y) == (to, from))
            || self.one_way.contains(&(from, to))
    }

    /// Both directions are cut: neither node can reach the other.
    fn cut_both(&self, a: usize, b: usize) -> bool {
        self.cut(a, b) && self.cut(b, a)
    }

    /// What a probe from `from` of `target` finds now; `None` for no answer at all.
    fn probe_result(&self, from: usize, target: usize) -> Option<ProbeResult> {
        let t = &self.nodes[target];
        let Some(run) = t.pg else {
            return Some(ProbeResult::Refused);
        };
        if t.hung {
            return None;
        }
        if t.exhausted && run.phase == Phase::Up {
            return Some(ProbeResult::Overloaded);
        }
        let data = t.data.as_ref()?;
        Some(match run.phase {
            Phase::StartingUp => ProbeResult::StartingUp,
            Phase::ShuttingDown => ProbeResult::ShuttingDown,
            Phase::Up => match run.role {
                PgRole::Master => ProbeResult::Master {
                    timeline: data.timeline,
                    lsn: Lsn(data.lsn),
                },
                PgRole::Replica { upstream } => {
                    let upstream = self.nodes[from]
                        .peer_of
                        .iter()
                        .position(|&n| n == upstream)
                        .map(|k| PeerId(k as u8));
                    ProbeResult::Replica {
                        timeline: data.timeline,
                        replay_lsn: Lsn(data.lsn),
                        upstream,
                    }
                }
            },
        })
    }

    fn action_duration(&mut self, i: usize, kind: CommandKind) -> u64 {
        match kind {
            // A stopped postmaster's cluster is killed, whatever the mode (see the dispatch).
            CommandKind::StopPostgres(_) if self.nodes[i].hung => self.rng.range(20, 200),
            CommandKind::InitDataDir => self.rng.range(200, 800),
            CommandKind::StartPostgres(_) => self.rng.range(200, 1500),
            CommandKind::StopPostgres(StopMode::Fast) => self.rng.range(100, STOP_MAX_MS),
            CommandKind::StopPostgres(StopMode::Immediate) => self.rng.range(20, 200),
            CommandKind::Basebackup { .. } => self.rng.range(300, 3000),
            CommandKind::Promote => self.rng.range(80, 200),
            CommandKind::Follow { .. } => self.rng.range(10, 50),
            _ => self.rng.range(1, 20),
        }
    }

    fn start_next_action(&mut self, i: usize) {
        if self.nodes[i].current.is_some() {
            return;
        }
        let Some(cmd) = self.nodes[i].queue.pop_front() else {
            return;
        };
        let dur = self.action_duration(i, cmd.kind);
        let failable = matches!(
            cmd.kind,
            CommandKind::InitDataDir
                | CommandKind::StartPostgres(_)
                | CommandKind::StopPostgres(_)
                | CommandKind::Basebackup { .. }
                | CommandKind::Promote
        );
        let inject = if failable && self.rng.chance(self.scenario.action_failure) {
            Some(Failure::Exit(1))
        } else {
            None
        };
        // Effects and checks at the start of an action.
        match cmd.kind {
            CommandKind::Basebackup { .. } if self.nodes[i].pg.is_some() => {
                self.violation(format!(
                    "node {i}: basebackup started while its postgres runs"
                ));
            }
            CommandKind::InitDataDir if self.nodes[i].held_data => {
                self.violation(format!("node {i}: initdb on a node that held data"));
            }
            CommandKind::StartPostgres(as_)
                if self.nodes[i].pg.is_none()
                    && self.nodes[i].data.is_some()
                    && inject.is_none() =>
            {
                let role = match as_ {
                    StartAs::Master => PgRole::Master,
                    StartAs::Replica { upstream } => PgRole::Replica {
                        upstream: self.nodes[i].peer_of[upstream.index()],
                    },
                };
                self.nodes[i].pg = Some(PgRun {
                    role,
                    phase: Phase::StartingUp,
                });
                if role == PgRole::Master {
                    self.nodes[i].master_since = self.now;
                }
            }
            CommandKind::StopPostgres(_) => {
                if self.nodes[i].hung {
                    if self.nodes[i].pg.is_some() {
                        // The shell kills every process of a stopped postmaster's cluster,
                        // the postmaster too (SIGKILL reaches a stopped process), for a fast
                        // stop as well: the postmaster could never act on it. The backends
                        // die within the stop's time; the stop then succeeds.
                        self.nodes[i].kill_backends_at = Some(self.now.plus(dur));
                    }
                } else if let Some(run) = self.nodes[i].pg.as_mut() {
                    run.phase = Phase::ShuttingDown;
                }
            }
            _ => {}
        }
        let daemon = self.nodes[i].daemon;
        self.nodes[i].current = Some(Running {
            cmd,
            started: self.now,
            finish: self.now.plus(dur),
            inject,
            daemon,
        });
    }

    /// Applies the effect of a finished action and reports it.
    fn finish_action(&mut self, i: usize) {
        let Some(run) = self.nodes[i].current.take() else {
            return;
        };
        let outcome = self.apply_action(i, run);
        if run.daemon == self.nodes[i].daemon && self.nodes[i].core.is_some() {
            let duration_ms = self.now.since(run.started);
            self.feed(
                i,
                Input::Event(Event::CommandDone {
                    id: run.cmd.id,
                    outcome,
                    duration_ms,
                }),
            );
        }
        self.start_next_action(i);
    }

    fn apply_action(&mut self, i: usize, run: Running) -> Result<(), Failure> {
        let kind = run.cmd.kind;
        if let Some(f) = run.inject {
            // A failed start leaves nothing running; a failed stop leaves it running.
            if let CommandKind::StopPostgres(_) = kind
                && let Some(r) = self.nodes[i].pg.as_mut()
            {
                r.phase = Phase::Up;
            }
            return Err(f);
        }
        let n = self.nodes.len();
        match kind {
            CommandKind::InitDataDir => {
                if self.nodes[i].data.is_some() {
                    return Err(Failure::Refused);
                }
                let branch = self.new_branch(i, BranchKind::Initdb);
                self.nodes[i].data = Some(PgData {
                    timeline: 1,
                    lsn: 100,
                    branch,
                    ancestry: Vec::new(),
                    was_master: false,
                });
                self.nodes[i].held_data = true;
                Ok(())
            }
            CommandKind::StartPostgres(as_) => {
                let node = &mut self.nodes[i];
                match node.pg {
                    Some(PgRun {
                        phase: Phase::StartingUp,
                        role,
                    }) if node.data.is_some() => {
                        node.pg = Some(PgRun {
                            role,
                            phase: Phase::Up,
                        });
                        if let Some(d) = node.data.as_mut() {
                            d.was_master = role == PgRole::Master;
                        }
                        let _ = as_;
                        self.reset_wal(i);
                        Ok(())
                    }
                    _ => Err(Failure::Exit(1)),
                }
            }
            CommandKind::StopPostgres(mode) => {
                if self.nodes[i].hung {
                    // Killed (see the dispatch): gone, with its sessions.
                    self.stop_pg(i);
                    return Ok(());
                }
                if mode == StopMode::Fast && self.nodes[i].pg.is_some() {
                    // A clean shutdown waits for its walsenders to ship everything.
                    self.reset_wal(i);
                    self.stream_to_replicas(i);
                }
                self.stop_pg(i);
                Ok(())
            }
            CommandKind::Basebackup { from } => {
                let src = self.nodes[i].peer_of[from.index()];
                let ok = !self.cut(i, src)
                    && !self.nodes[src].hung
                    && matches!(
                        self.nodes[src].pg,
                        Some(PgRun {
                            role: PgRole::Master,
                            phase: Phase::Up
                        })
                    );
                if !ok || self.nodes[i].pg.is_some() {
                    return Err(Failure::Exit(1));
                }
                let mut copy = self.nodes[src].data.clone().ok_or(Failure::Exit(1))?;
                copy.was_master = false;
                // The replaced data is set aside (`keep_discarded`).
                let forced = std::mem::take(&mut self.nodes[i].forced);
                if let Some(old) = self.nodes[i].data.replace(copy) {
                    self.set_aside.push((old, forced));
                }
                self.reset_wal(i);
                self.nodes[i].held_data = true;
                self.nodes[i].followed_timeline = 0;
                Ok(())
            }
            CommandKind::Promote => self.promote_pg(i, self.nodes[i].promote_automatic),
            CommandKind::Follow { upstream } => {
                let u = self.nodes[i].peer_of[upstream.index()];
                match self.nodes[i].pg.as_mut() {
                    Some(PgRun {
                        role: PgRole::Replica { upstream },
                        ..
                    }) => {
                        *upstream = u;
                        Ok(())
                    }
                    _ => Err(Failure::Exit(1)),
                }
            }
            CommandKind::AcquireVip => {
                self.vip_seq += 1;
                self.nodes[i].vip_seq = self.vip_seq;
                self.nodes[i].vip = true;
                Ok(())
            }
            CommandKind::ReleaseVip => {
                self.nodes[i].vip = false;
                Ok(())
            }
            CommandKind::Fence => {
                self.nodes[i].fence_marker = true;
                Ok(())
            }
            CommandKind::Unfence => {
                self.nodes[i].fence_marker = false;
                Ok(())
            }
            _ => {
                let _ = n;
                Ok(())
            }
        }
    }

    /// `pg_promote()` on node `i`'s postgres: a running, answering replica becomes master on
    /// a new timeline.
    fn promote_pg(&mut self, i: usize, automatic: bool) -> Result<(), Failure> {
        let node = &self.nodes[i];
        let ok = !node.hung
            && matches!(
                node.pg,
                Some(PgRun {
                    role: PgRole::Replica { .. },
                    phase: Phase::Up
                })
            );
        if !ok {
            return Err(Failure::Exit(1));
        }
        let branch = self.new_branch(i, BranchKind::Promotion { automatic });
        let node = &mut self.nodes[i];
        if let Some(d) = node.data.as_mut() {
            d.ancestry.push((d.branch, d.lsn));
            d.branch = branch;
            d.timeline += 1;
            d.was_master = true;
        }
        node.pg = Some(PgRun {
            role: PgRole::Master,
            phase: Phase::Up,
        });
        node.master_since = self.now;
        // The new master ships its own writes from here; its replicas have the rest.
        self.reset_wal(i);
        Ok(())
    }

    /// Starts a branch of history from node `i`'s data (from nothing for initdb).
    fn new_branch(&mut self, i: usize, kind: BranchKind) -> u32 {
        self.next_branch += 1;
        let parent = self.nodes[i].data.as_ref().map(|d| (d.branch, d.lsn));
        let tip = self.nodes[i].data.as_ref().map_or(0, |d| d.lsn);
        while self.branches.len() < self.next_branch as usize {
            let unused = self.branches[0];
            self.branches.push(unused);
        }
        self.branches.push(Branch {
            parent: if kind == BranchKind::Initdb {
                None
            } else {
                parent
            },
            created: self.now,
            by: i,
            kind,
            tip,
        });
        self.next_branch
    }

    fn apply_fault(&mut self, f: Fault) {
        self.log(TraceItem::Fault(f));
        match f {
            Fault::KillPostgres(i) => {
                self.stop_pg(i);
                self.unpark(i);
            }
            Fault::Hang(i) => {
                let now = self.now;
                let node = &mut self.nodes[i];
                if node.pg.is_some() {
                    if !node.hung {
                        node.hung_at = Some(now);
                    }
                    node.hung = true;
                    node.frozen = true;
                }
            }
            Fault::Resume(i) => {
                let now = self.now;
                let node = &mut self.nodes[i];
                if node.hung {
                    node.resumed_at = Some(now);
                }
                node.hung = false;
                node.frozen = false;
                if std::mem::take(&mut node.stop_signalled) {
                    // The signal pg_ctl sent is delivered now: the server stops, and a pg_ctl
                    // still waiting sees it go.
                    self.stop_pg(i);
                    if let Some(r) = self.nodes[i].current.as_mut()
                        && matches!(r.cmd.kind, CommandKind::StopPostgres(_))
                    {
                        r.finish = now;
                    }
                }
                self.unpark(i);
            }
            Fault::CrashDaemon(i) => {
                if !self.nodes[i].daemon_down {
                    self.crash_daemon(i);
                }
            }
            Fault::RestartDaemon(i) => {
                if self.nodes[i].daemon_down {
                    self.start_daemon(i);
                }
            }
            Fault::Partition(a, b) => {
                if !self.cut_both(a, b) {
                    self.partitioned.push((a, b));
                }
            }
            Fault::Heal(a, b) => {
                self.partitioned
                    .retain(|&(x, y)| (x, y) != (a, b) && (x, y) != (b, a));
                self.one_way
                    .retain(|&(x, y)| (x, y) != (a, b) && (x, y) != (b, a));
            }
            Fault::Exhaust(i) => self.nodes[i].exhausted = true,
            Fault::Release(i) => self.nodes[i].exhausted = false,
            Fault::LossOn(p) => self.loss = Some(p),
            Fault::LossOff => self.loss = None,
            Fault::Operator(i, req) => {
                if matches!(
                    req,
                    OperatorRequest::Recover | OperatorRequest::ForceRecover
                ) {
                    self.stats.recovers += 1;
                }
                if req == OperatorRequest::ForceRecover {
                    self.nodes[i].forced = true;
                }
                if req == OperatorRequest::Resume {
                    self.nodes[i].resumed_pause_at = Some(self.now);
                }
                self.feed(i, Input::Event(Event::Operator(req)));
            }
            Fault::ExternalPromote(i) => {
                let _ = self.promote_pg(i, false);
            }
            Fault::HangPostmaster(i) => {
                if self.nodes[i].pg.is_some() && !self.nodes[i].hung {
                    self.nodes[i].hung = true;
                    self.nodes[i].hung_at = Some(self.now);
                }
            }
            Fault::PartitionOneWay(a, b) => {
                if !self.cut(a, b) {
                    self.one_way.push((a, b));
                }
            }
            Fault::PowerCut => {
                // Connections waiting on a stopped postmaster die with the hosts.
                self.parked.clear();
                for i in 0..self.nodes.len() {
                    self.stop_pg(i);
                    if !self.nodes[i].daemon_down {
                        self.crash_daemon(i);
                    }
                    let node = &mut self.nodes[i];
                    // The host is off: no action finishes, no address is held.
                    node.current = None;
                    node.vip = false;
                }
            }
        }
    }

    /// Node `i`'s postgres is gone (killed, stopped, powered off), with its sessions.
    fn stop_pg(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.pg = None;
        node.hung = false;
        node.frozen = false;
        node.stop_signalled = false;
        node.backends_killed = false;
        node.kill_backends_at = None;
        node.sessions = false;
    }

    /// Ends every fault: heals links, stops loss, resumes hung servers, restarts daemons.
    pub fn heal_all(&mut self) {
        let pairs = std::mem::take(&mut self.partitioned);
        for (a, b) in pairs {
            self.log(TraceItem::Fault(Fault::Heal(a, b)));
        }
        let pairs = std::mem::take(&mut self.one_way);
        for (a, b) in pairs {
            self.log(TraceItem::Fault(Fault::Heal(a, b)));
        }
        self.apply_fault(Fault::LossOff);
        for i in 0..self.nodes.len() {
            if self.nodes[i].hung {
                self.apply_fault(Fault::Resume(i));
            }
            if self.nodes[i].exhausted {
                self.apply_fault(Fault::Release(i));
            }
            if self.nodes[i].daemon_down {
                self.apply_fault(Fault::RestartDaemon(i));
            }
        }
    }

    /// Schedules a fault at `at`, kept in time order.
    pub fn schedule(&mut self, at: Timestamp, fault: Fault) {
        let pos = self
            .pending_faults
            .iter()
            .position(|&(t, _)| t > at)
            .unwrap_or(self.pending_faults.len());
        self.pending_faults.insert(pos, (at, fault));
    }

    /// The next moment anything happens, if anything will.
    fn next_time(&self) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut consider = |t: Timestamp| next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
        for n in &self.nodes {
            if let Some(t) = n.core.as_ref().and_then(Node::poll_timeout) {
                consider(t);
            }
            if let Some(r) = n.current {
                consider(r.finish);
            }
        }
        for d in &self.deliveries {
            consider(d.at);
        }
        if let Some(&(t, _)) = self.pending_faults.front() {
            consider(t);
        }
        for n in &self.nodes {
            if let Some(t) = n.kill_backends_at {
                consider(t);
            }
        }
        next
    }

    /// Runs until `until`, one step per moment where something happens.
    pub fn run_until(&mut self, until: Timestamp) {
        // A bound on steps: a bug that spins at one instant must fail, not hang.
        let mut steps_at_same_time = 0u32;
        while let Some(t) = self.next_time() {
            if t > until {
                break;
            }
            let t = t.max(self.now);
            if t == self.now {
                steps_at_same_time += 1;
                if steps_at_same_time > 10_000 {
                    self.violation("livelock: 10000 steps without time advancing".to_string());
                    return;
                }
            } else {
                steps_at_same_time = 0;
            }
            self.now = t;
            self.step();
            if !self.violations.is_empty() {
                return;
            }
        }
        self.now = self.now.max(until);
        self.advance_replication();
    }

    fn step(&mut self) {
        self.stats.steps += 1;
        let now = self.now;
        self.advance_replication();
        while let Some(&(t, f)) = self.pending_faults.front() {
            if t > now {
                break;
            }
            self.pending_faults.pop_front();
            self.apply_fault(f);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].kill_backends_at.is_some_and(|t| t <= now) {
                let node = &mut self.nodes[i];
                node.kill_backends_at = None;
                if node.pg.is_some() {
                    node.backends_killed = true;
                    node.sessions = false;
                    self.log(TraceItem::Note(i, "backends killed"));
                }
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].current.is_some_and(|r| r.finish <= now) {
                self.finish_action(i);
            }
        }
        // Deliveries due now, in the order they were sent.
        let mut due: Vec<Delivery> = Vec::new();
        let mut k = 0;
        while k < self.deliveries.len() {
            if self.deliveries[k].at <= now {
                due.push(self.deliveries.swap_remove(k));
            } else {
                k += 1;
            }
        }
        due.sort_by_key(|d| d.seq);
        for d in due {
            if self.nodes[d.node].daemon != d.daemon {
                continue;
            }
            let event = match (d.peer, d.report) {
                (Some(peer), Some(report)) => Event::PeerDaemon {
                    id: d.id,
                    peer,
                    report,
                },
                (None, _) => Event::LocalProbe {
                    id: d.id,
                    result: d.result,
                },
                (Some(peer), None) => Event::PeerProbe {
                    id: d.id,
                    peer,
                    result: d.result,
                },
            };
            self.feed(d.node, Input::Event(event));
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i]
                .core
                .as_ref()
                .and_then(Node::poll_timeout)
                .is_some_and(|t| t <= now)
            {
                self.feed(i, Input::Timeout);
            }
        }
        self.update_sessions();
        self.check_invariants();
    }

    /// The client: sessions end with their server (stopped, shutting down, killed, a
    /// replica); new ones go where the VIP points (its latest holder), if that server is an
    /// up master that accepts connections.
    fn update_sessions(&mut self) {
        let mut vip: Option<usize> = None;
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            let master_up = matches!(
                n.pg,
                Some(PgRun {
                    role: PgRole::Master,
                    phase: Phase::Up
                })
            );
            if !master_up || n.backends_killed {
                n.sessions = false;
            }
            if n.vip && vip.is_none_or(|v| self.nodes[v].vip_seq < self.nodes[i].vip_seq) {
                vip = Some(i);
            }
        }
        if let Some(v) = vip {
            let n = &self.nodes[v];
            if !n.exhausted && !n.backends_killed && self.master_up(v) {
                self.nodes[v].sessions = true;
            }
        }
    }

    /// Masters write (the client's sessions, acknowledged); replicas that can stream receive
    /// what was written `REPLICATION_LAG_MS` ago and follow timeline switches.
    fn advance_replication(&mut self) {
        let elapsed = self.now.since(self.last_lsn_tick);
        self.last_lsn_tick = self.now;
        let now = self.now;
        for i in 0..self.nodes.len() {
            let add = elapsed / 10;
            if add == 0 || !self.writing(i) {
                continue;
            }
            self.fork_if_behind(i);
            let node = &mut self.nodes[i];
            let Some(d) = node.data.as_mut() else {
                continue;
            };
            let (from, branch) = (d.lsn, d.branch);
            d.lsn += add;
            let to = d.lsn;
            node.unshipped.push_back((now, to));
            let tip = &mut self.branches[branch as usize].tip;
            *tip = (*tip).max(to);
            if self.nodes[i].sessions {
                self.record_write(i, branch, from, to);
            }
        }
        for i in 0..self.nodes.len() {
            let Some(PgRun {
                role: PgRole::Replica { upstream },
                phase: Phase::Up,
            }) = self.nodes[i].pg
            else {
                continue;
            };
            if self.master_shipping(upstream) {
                let upto = self.shipped(upstream);
                self.receive(i, upstream, upto);
            }
        }
    }

    /// Whether node `i`'s postgres writes: an up master not frozen (a hung postmaster's
    /// backends write only for the sessions they serve).
    fn writing(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        self.master_shipping(i)
            && n.pg.is_some_and(|r| r.phase == Phase::Up)
            && (!n.hung || n.sessions)
    }

    /// Whether node `i`'s walsenders ship WAL to the replicas already connected.
    fn master_shipping(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        matches!(
            n.pg,
            Some(PgRun {
                role: PgRole::Master,
                ..
            })
        ) && !n.frozen
            && !n.backends_killed
    }

    /// What node `i` has shipped: all it wrote up to `REPLICATION_LAG_MS` ago.
    fn shipped(&mut self, i: usize) -> u64 {
        let now = self.now;
        let n = &mut self.nodes[i];
        while let Some(&(t, lsn)) = n.unshipped.front() {
            if t.plus(REPLICATION_LAG_MS) > now {
                break;
            }
            n.shipped = lsn;
            n.unshipped.pop_front();
        }
        n.shipped
    }

    /// Everything node `i`'s data holds counts as shipped (a new run, a clean stop).
    fn reset_wal(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.unshipped.clear();
        n.shipped = n.data.as_ref().map_or(0, |d| d.lsn);
    }

    /// Ships all of master `m`'s WAL to the replicas streaming from it (a clean stop).
    fn stream_to_replicas(&mut self, m: usize) {
        let upto = self.shipped(m);
        for i in 0..self.nodes.len() {
            if self.nodes[i].pg
                == Some(PgRun {
                    role: PgRole::Replica { upstream: m },
                    phase: Phase::Up,
                })
            {
                self.receive(i, m, upto);
            }
        }
    }

    /// Replica `i` receives its upstream's WAL up to `upto`, if it can connect and its data is
    /// on the upstream's history.
    fn receive(&mut self, i: usize, upstream: usize, upto: u64) {
        // A replica whose postmaster alone is stopped keeps receiving and replaying.
        if self.nodes[i].frozen || self.cut(i, upstream) {
            return;
        }
        let (Some(m), Some(r)) = (
            self.nodes[upstream].data.as_ref(),
            self.nodes[i].data.as_ref(),
        ) else {
            return;
        };
        let upto = upto.min(m.lsn);
        let follows = (r.branch == m.branch && r.lsn <= m.lsn)
            || m.ancestry
                .iter()
                .any(|&(b, fork)| b == r.branch && r.lsn <= fork);
        if !follows {
            return;
        }
        let tl = m.timeline;
        if r.branch == m.branch {
            if upto > r.lsn
                && let Some(r) = self.nodes[i].data.as_mut()
            {
                r.lsn = upto;
                r.was_master = false;
            }
        } else {
            let copy = PgData {
                lsn: upto.max(r.lsn),
                was_master: false,
                ..m.clone()
            };
            self.nodes[i].data = Some(copy);
        }
        self.nodes[i].followed_timeline = self.nodes[i].followed_timeline.max(tl);
    }

    /// A master about to write on data behind the furthest copy of its history (it led on
    /// less than all of it) starts a branch: one timeline, two histories.
    fn fork_if_behind(&mut self, i: usize) {
        let Some(d) = self.nodes[i].data.as_ref() else {
            return;
        };
        if d.lsn >= self.branches[d.branch as usize].tip {
            return;
        }
        let in_sight = self.nodes[i].lead_in_sight;
        let branch = self.new_branch(i, BranchKind::Diverged { in_sight });
        if let Some(d) = self.nodes[i].data.as_mut() {
            d.ancestry.push((d.branch, d.lsn));
            d.branch = branch;
        }
    }

    /// Records positions `from+1..=to` of `branch` acknowledged by node `i` now, with why
    /// they were acknowledged if another node promoted off that branch before
    /// (`World::stale_write`); a hung or isolated writer is a violation at once.
    fn record_write(&mut self, i: usize, branch: u32, from: u64, to: u64) {
        let now = self.now;
        self.stats.writes += to - from;
        let stale = self.stale_write(i, branch).map(|(why, m, at)| {
            self.stats.stale[why as usize] += to - from;
            // What the give-up deadlines guarantee, whatever becomes of the promoted node.
            if matches!(why, Stale::Hung | Stale::Isolated) {
                self.violation(format!(
                    "node {i} acknowledged writes on branch {branch} {} ms after node {m} promoted off it: {}",
                    now.since(at),
                    why.describe()
                ));
            }
            why
        });
        let last_branch_at = self.branches.last().map_or(Timestamp::ZERO, |b| b.created);
        if let Some(w) = self.writes.last_mut()
            && w.node == i
            && w.branch == branch
            && w.to == from
            && w.stale == stale
            && last_branch_at < w.at
        {
            w.to = to;
            w.until = now;
            return;
        }
        self.writes.push(Write {
            node: i,
            branch,
            from,
            to,
            at: now,
            until: now,
            stale,
        });
    }

    /// A write acknowledged by node `i` on `branch` now, after another node promoted off that
    /// branch, can never be on the promoted node's history: why it happened ([`Stale`]), with
    /// the promoted node and when it promoted. `None`: not such a write. The first matching
    /// cause decides, in this order: a promotion by hand, the writer's daemon down or paused,
    /// a hang its daemon watched long enough (`master_give_up + probe_interval + stop
    /// allowance`) before the promotion, a daemon (re)started within the takeover bound of it,
    /// isolation = fence and no way to reach the promoted node for `master_give_up` before it,
    /// a lead taken while the promoted node's daemon was out of sight, the promoted node gone,
    /// keep-serving across a cut, loss, a full server, another cut (one-way, or too recent to
    /// fence), else in sight both ways: within the split-brain bound of the latest of the
    /// promotion, the link clearing and the writer becoming master (a race), or beyond it.
    fn stale_write(&self, i: usize, branch: u32) -> Option<(Stale, usize, Timestamp)> {
        let now = self.now;
        let info = self.branches.iter().find(|b| {
            b.by != i
                && b.created < now
                && matches!(b.kind, BranchKind::Promotion { .. })
                && b.parent.is_some_and(|(p, _)| p == branch)
        })?;
        let (m, at) = (info.by, info.created);
        let verdict = |s: Stale| Some((s, m, at));
        if info.kind != (BranchKind::Promotion { automatic: true }) {
            return verdict(Stale::ByHand);
        }
        let node = &self.nodes[i];
        let cfg = &node.config;
        // Paused, or resumed too recently to have acted (a pause suspends the give-up and
        // isolation deadlines; after a resume they fire at once, and the stop takes its time).
        let just_resumed = node.resumed_pause_at.is_some_and(|r| {
            r.plus(cfg.stop_allowance_ms() + cfg.probe_interval_ms) >= now
                && r.plus(cfg.takeover_bound_ms()) >= at
        });
        if node.core.as_ref().is_none_or(|c| c.paused()) || just_resumed {
            return verdict(Stale::DaemonDown);
        }
        // A hang: the daemon that watched it must have killed the backends by `master_give_up
        // + probe_interval + stop allowance` after it began (the give-up inequality puts that
        // before the replica's takeover bound). A promotion sooner than that had another
        // cause (a partition, below).
        if let Some(h) = node.hung_at.filter(|&h| h >= node.master_since) {
            let watched = h.max(node.daemon_started);
            let killed_by = watched
                .plus(cfg.master_give_up_ms + cfg.probe_interval_ms + cfg.stop_allowance_ms());
            let hung_then = node.hung || node.resumed_at.is_some_and(|r| r >= at);
            if hung_then && killed_by <= at {
                return verdict(Stale::Hung);
            }
        }
        if node.daemon_started.plus(cfg.takeover_bound_ms()) > at {
            // A daemon (re)started around the promotion does not know the peer (docs/core.md,
            // known limits).
            return verdict(Stale::DaemonDown);
        }
        let peer = node
            .peer_of
            .iter()
            .position(|&n| n == m)
            .map(|k| PeerId(k as u8));
        if peer.is_some_and(|p| {
            node.core
                .as_ref()
                .is_some_and(|c| c.peer_heard(p).is_none())
        }) {
            // Nor does one that never heard from it since it started (docs/core.md, known
            // limits: a lone node may lead on its data).
            return verdict(Stale::DaemonDown);
        }
        if cfg.isolation == Isolation::Fence
            && self.cut_since[i][m].is_some_and(|t| t.plus(cfg.master_give_up_ms) <= at)
        {
            // A cut hid that the promoted node had become a replica (it was last seen as a
            // master: a one-way cut while it re-cloned): fence mode watches only peers known
            // to be able to promote (docs/core.md, known limits).
            if peer.is_some_and(|p| node.core.as_ref().is_some_and(|c| !c.peer_could_promote(p))) {
                return verdict(Stale::OneWay);
            }
            return verdict(Stale::Isolated);
        }
        if node.master_since > at && node.lead_in_sight & (1 << m) == 0 {
            return verdict(Stale::LedBlind);
        }
        let bound = self.split_brain_bound();
        let recent = |t: Option<Timestamp>| t.is_some_and(|t| now.since(t) <= bound);
        if recent(self.gone_at[m]) {
            return verdict(Stale::PeerDown);
        }
        if cfg.isolation == Isolation::KeepServing && recent(self.murky_at[i][m]) {
            return verdict(Stale::KeepServing);
        }
        if recent(self.lossy_at) {
            return verdict(Stale::Loss);
        }
        if recent(self.full_at[i]) || recent(self.full_at[m]) {
            return verdict(Stale::Full);
        }
        if recent(self.murky_at[i][m]) {
            return verdict(Stale::OneWay);
        }
        // In sight both ways: the split-brain rule must stop it within its bound of the
        // latest of the promotion, the link clearing, and its own start as master.
        let since = at
            .max(self.murky_at[i][m].unwrap_or(Timestamp::ZERO))
            .max(node.master_since);
        if now.since(since) > bound {
            return verdict(Stale::Seen);
        }
        verdict(Stale::Race)
    }

    /// After the run, with `m` the one master: every write acknowledged to the client is on
    /// its history, except the writes asynchronous replication loses at a failover (acknowledged
    /// before the promotion that left them behind, not yet shipped), writes conceded when they
    /// were acknowledged (see `World::stale_write`), and writes an operator discarded (a
    /// forced re-clone, a promotion by hand) or a node that led while the writer was out of its
    /// sight left behind. Anything else missing is a violation: counted as "offline" when a
    /// data dir or a set-aside copy still holds it, "gone" otherwise.
    pub fn check_writes(&mut self, m: usize) {
        let Some(fin) = self.nodes[m].data.clone() else {
            return;
        };
        let mut chain = fin.ancestry.clone();
        chain.push((fin.branch, fin.lsn));
        let on_chain = |b: u32| chain.iter().position(|&(x, _)| x == b);
        let all_others = |by: usize| ((1u32 << self.nodes.len()) - 1) & !(1 << by);
        let mut failures: Vec<String> = Vec::new();
        let (mut offline, mut gone) = (0, 0);
        for w in &self.writes {
            let k = on_chain(w.branch);
            let kept = k.map_or(0, |k| chain[k].1.min(w.to).saturating_sub(w.from));
            let lost = (w.to - w.from).saturating_sub(kept);
            if lost == 0 {
                continue;
            }
            let first = w.from + kept + 1;
            if w.stale.is_some_and(|s| !s.is_violation()) {
                self.stats.writes_conceded += lost;
                continue;
            }
            if self
                .set_aside
                .iter()
                .any(|(d, forced)| *forced && holds(d, w.branch, first))
            {
                self.stats.writes_operator += lost;
                continue;
            }
            // Which branch left these writes behind, and how it began.
            let left_by = match k {
                Some(k) => match chain.get(k + 1) {
                    Some(&(c, _)) => Some(self.branches[c as usize]),
                    // The final master is on this branch behind them: it has not written yet
                    // since it led on that data.
                    None => Some(Branch {
                        parent: Some((w.branch, chain[k].1)),
                        created: self.now,
                        by: m,
                        kind: BranchKind::Diverged {
                            in_sight: self.nodes[m].lead_in_sight,
                        },
                        tip: 0,
                    }),
                },
                None => None,
            };
            let verdict: Result<bool, String> = match left_by {
                _ if let Some(why) = w.stale => Err(format!(
                    "acknowledged after a promotion off their branch: {}",
                    why.describe()
                )),
                Some(c) => match c.kind {
                    BranchKind::Promotion { .. } if w.until <= c.created => Ok(true),
                    BranchKind::Promotion { .. } => Err(format!(
                        "acknowledged by node {} after node {} promoted at {}",
                        w.node, c.by, c.created
                    )),
                    BranchKind::Diverged { in_sight } if in_sight & (1 << w.node) == 0 => Ok(false),
                    _ => Err(format!(
                        "node {} led at {} on data behind node {}'s, whose daemon was in sight",
                        c.by, c.created, w.node
                    )),
                },
                None => {
                    // A side branch lost: the first branch of its line off the final history.
                    let mut b = w.branch;
                    let side = loop {
                        match self.branches[b as usize].parent {
                            Some((a, _)) if on_chain(a).is_none() => b = a,
                            Some(_) => break Some(b),
                            None => break None,
                        }
                    };
                    match side.map(|b| (b, self.branches[b as usize])) {
                        None => Err("on a history unrelated to the final master's".to_string()),
                        Some((_, s)) if s.kind == (BranchKind::Promotion { automatic: false }) => {
                            Ok(false)
                        }
                        Some((_, s)) if matches!(s.kind, BranchKind::Diverged { in_sight } if in_sight != all_others(s.by)) => {
                            Ok(false)
                        }
                        Some((b, s)) => Err(format!(
                            "on branch {b} that node {} started at {} ({:?}), which the final history left behind",
                            s.by, s.created, s.kind
                        )),
                    }
                }
            };
            match verdict {
                Ok(true) => self.stats.writes_unshipped += lost,
                Ok(false) => self.stats.writes_operator += lost,
                Err(why) => {
                    let held = self
                        .nodes
                        .iter()
                        .filter_map(|n| n.data.as_ref())
                        .chain(self.set_aside.iter().map(|(d, _)| d))
                        .any(|d| holds(d, w.branch, first));
                    if held {
                        offline += lost;
                    } else {
                        gone += lost;
                    }
                    if failures.len() < 4 {
                        failures.push(format!(
                            "{lost} writes of node {} on branch {} ({}..={}, at {}..{}): {why}",
                            w.node, w.branch, first, w.to, w.at, w.until
                        ));
                    }
                }
            }
        }
        if !failures.is_empty() {
            self.violation(format!(
                "acknowledged writes missing from master {m}'s history ({offline} offline, {gone} gone): {}",
                failures.join("; ")
            ));
        }
    }

    fn master_up(&self, i: usize) -> bool {
        !self.nodes[i].hung
            && matches!(
                self.nodes[i].pg,
                Some(PgRun {
                    role: PgRole::Master,
                    phase: Phase::Up
                })
            )
    }

    fn check_invariants(&mut self) {
        let n = self.nodes.len();
        let now = self.now;
        if self.loss.is_some() {
            self.lossy_at = Some(now);
        }
        for i in 0..n {
            if self.nodes[i].exhausted {
                self.full_at[i] = Some(now);
            }
            if self.nodes[i].daemon_down && !self.master_up(i) {
                self.gone_at[i] = Some(now);
            }
            let up = !self.nodes[i].hung && self.nodes[i].pg.is_some_and(|r| r.phase == Phase::Up);
            self.local_up_since[i] = if up {
                self.local_up_since[i].or(Some(now))
            } else {
                None
            };
            // Timelines only grow: a node never runs as master on a timeline older than one it
            // has followed since its last clone.
            if self.master_up(i)
                && let Some(d) = &self.nodes[i].data
                && d.timeline < self.nodes[i].followed_timeline
                && self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.state() == State::Master)
            {
                let (tl, followed) = (d.timeline, self.nodes[i].followed_timeline);
                self.violation(format!(
                    "node {i} is master on timeline {tl} after following timeline {followed}"
                ));
            }
        }
        // Per pair, from what is cut, up and full now.
        let mut cut = [[false; MAX_NODES]; MAX_NODES];
        for &(a, b) in &self.partitioned {
            cut[a][b] = true;
            cut[b][a] = true;
        }
        for &(a, b) in &self.one_way {
            cut[a][b] = true;
        }
        let loss = self.loss.is_some();
        let mut master_up = [false; MAX_NODES];
        for (j, up) in master_up.iter_mut().enumerate().take(n) {
            *up = self.master_up(j);
        }
        let since = |s: Option<Timestamp>, on: bool| if on { s.or(Some(now)) } else { None };
        for (i, row) in cut.iter().enumerate().take(n) {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let reach = !row[j] && !loss;
                self.clean_since[i][j] = since(self.clean_since[i][j], master_up[j] && reach);
                self.daemon_in_sight_since[i][j] = since(
                    self.daemon_in_sight_since[i][j],
                    !self.nodes[j].daemon_down && reach,
                );
                self.cut_since[i][j] = since(self.cut_since[i][j], row[j]);
                if row[j] || cut[j][i] || loss || self.nodes[i].exhausted || self.nodes[j].exhausted
                {
                    self.murky_at[i][j] = Some(now);
                }
            }
        }
        for a in 0..n {
            for b in (a + 1)..n {
                // A full server cannot tell its peer its role: like a partition, it is out
                // of sight for the split-brain check (docs/simulator.md).
                let see = !self.link_down(a, b)
                    && self.loss.is_none()
                    && !self.nodes[a].exhausted
                    && !self.nodes[b].exhausted;
                let acting =
                    |w: &World, x: usize| w.nodes[x].core.as_ref().is_some_and(|c| !c.paused());
                let both = see
                    && self.master_up(a)
                    && self.master_up(b)
                    && acting(self, a)
                    && acting(self, b);
                self.both_master_since[a][b] = if both {
                    self.both_master_since[a][b].or(Some(now))
                } else {
                    None
                };
                let bound = self.split_brain_bound();
                if let Some(since) = self.both_master_since[a][b]
                    && now.since(since) > bound
                {
                    self.violation(format!(
                        "nodes {a} and {b} both master and in sight of each other for {} ms (bound {bound} ms)",
                        now.since(since)
                    ));
                }
                // A dead daemon cannot release its VIP (the new master's gratuitous ARP takes
                // the traffic); the daemon releases it when it starts again.
                let vips = see
                    && self.nodes[a].vip
                    && self.nodes[b].vip
                    && acting(self, a)
                    && acting(self, b);
                self.vip_both_since[a][b] = if vips {
                    self.vip_both_since[a][b].or(Some(now))
                } else {
                    None
                };
                // A hung master keeps its VIP until its own daemon sees the local postgres
                // fail (psql_error_count probes), which no peer can speed up.
                let c = &self.nodes[0].config;
                let vip_bound = bound
                    + u64::from(c.psql_error_count) * (c.connect_timeout_ms + c.probe_interval_ms);
                if let Some(since) = self.vip_both_since[a][b]
                    && now.since(since) > vip_bound
                {
                    self.violation(format!(
                        "nodes {a} and {b} both hold the VIP in sight of each other"
                    ));
                }
            }
        }
    }

    /// How long two masters in sight of each other may both accept writes: a local probe to
    /// see its own role, a peer probe and its answer, the stop.
    pub fn split_brain_bound(&self) -> u64 {
        let c = &self.nodes[0].config;
        2 * c.probe_interval_ms + c.connect_timeout_ms + 2 * DELAY_MAX_MS + STOP_MAX_MS + 500
    }

    /// Nodes whose core is master and whose postgres is an up master.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.master_up(i)
                    && self.nodes[i]
                        .core
                        .as_ref()
                        .is_some_and(|c| c.state() == State::Master)
            })
            .collect()
    }

    /// Nodes stopped by an operator's step-down (a switchover) and waiting for a new master.
    pub fn stepped_down(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.state() == State::SteppedDown)
            })
            .collect()
    }

    pub fn fenced(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.state() == State::Fenced)
            })
            .collect()
    }

    pub fn state_of(&self, i: usize) -> Option<State> {
        self.nodes[i].core.as_ref().map(Node::state)
    }
}

fn node_config(s: &Scenario, i: usize, peer_of: &[usize]) -> Config {
    let t = crate::timings(s.fast);
    let (interval, timeout, grace, stagger) = (
        t.probe_interval_ms,
        t.connect_timeout_ms,
        t.grace_ms,
        t.grace_stagger_ms,
    );
    Config {
        name: format!("db{i}"),
        index: i as u32,
        peers: peer_of
            .iter()
            .map(|&j| PeerConfig {
                name: format!("db{j}"),
                index: j as u32,
            })
            .collect(),
        topology: s.topology,
        grace_ms: grace,
        grace_stagger_ms: stagger,
        connect_timeout_ms: timeout,
        psql_error_count: t.psql_error_count,
        probe_interval_ms: interval,
        transition_bound_ms: if s.fast { 10_000 } else { 30_000 },
        split_brain: s.split_brain,
        master_give_up_ms: t.master_give_up_ms,
        isolation: s.isolation,
        vip: s.vip,
        proxy: s.proxy,
        hooks: true,
    }
}

/// Whether data `d` holds position `p` of branch `b` (its history passes through it).
fn holds(d: &PgData, b: u32, p: u64) -> bool {
    (d.branch == b && p <= d.lsn) || d.ancestry.iter().any(|&(ab, fork)| ab == b && p <= fork)
}
