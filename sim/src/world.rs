//! The simulated world: postgres servers, a network, daemons running real `pgha_core::Node`s,
//! faults, and the invariant checks run after every step.

use std::collections::VecDeque;

use pgha_core::{
    Command, CommandId, CommandKind, Config, DataDir, Event, Failure, Input, Isolation, LocalFacts,
    Lsn, Node, OperatorRequest, PeerConfig, PeerId, PeerReport, ProbeResult, Reason,
    SplitBrainRule, StartAs, State, StopMode, Timestamp, Topology, Transition,
};

use crate::rng::Rng;

/// How long a simulated `pg_ctl stop` waits for a stopped (SIGSTOPped) server before it fails.
const STOP_TIMEOUT_MS: u64 = 10_000;
/// The longest simulated stop of a running server.
pub const STOP_MAX_MS: u64 = 1_000;
/// The longest one-way network delay.
const DELAY_MAX_MS: u64 = 20;

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
    pub hung: bool,
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

/// The simulated cluster.
#[derive(Debug)]
pub struct World {
    pub now: Timestamp,
    pub nodes: Vec<SimNode>,
    pub scenario: Scenario,
    rng: Rng,
    deliveries: Vec<Delivery>,
    seq: u64,
    partitioned: Vec<(usize, usize)>,
    loss: Option<u32>,
    pending_faults: VecDeque<(Timestamp, Fault)>,
    next_branch: u32,
    pub trace: Vec<TraceLine>,
    pub runs: Vec<NodeRun>,
    run_of: Vec<usize>,
    /// Per ordered pair: since when x has had a clean view of master y.
    clean_since: Vec<Vec<Option<Timestamp>>>,
    /// Per pair: since when both are masters that can see each other.
    both_master_since: Vec<Vec<Option<Timestamp>>>,
    vip_both_since: Vec<Vec<Option<Timestamp>>>,
    /// Per node: since when its postgres has been up (running, not hung, neither starting up
    /// nor shutting down), full or not.
    local_up_since: Vec<Option<Timestamp>>,
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
}

impl SimNode {
    /// The node a peer id of this node names.
    pub fn peer_index(&self, peer: PeerId) -> usize {
        self.peer_of[peer.index()]
    }
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
            seq: 0,
            partitioned: Vec::new(),
            loss: None,
            pending_faults,
            next_branch,
            trace: Vec::new(),
            runs: Vec::new(),
            run_of: vec![usize::MAX; n],
            clean_since: vec![vec![None; n]; n],
            both_master_since: vec![vec![None; n]; n],
            vip_both_since: vec![vec![None; n]; n],
            local_up_since: vec![None; n],
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
        core.apply(self.now, input);
        let mut transitions: [Option<Transition>; 8] = [None; 8];
        let mut nt = 0;
        while let Some(t) = core.poll_transition() {
            if nt < transitions.len() {
                transitions[nt] = Some(t);
                nt += 1;
            }
        }
        let mut cmds: Vec<Command> = Vec::new();
        while let Some(c) = core.poll_command() {
            cmds.push(c);
        }
        if self.record {
            self.trace.push(TraceLine {
                at: self.now,
                item: TraceItem::Input(i, input),
            });
            let run = &mut self.runs[self.run_of[i]];
            run.inputs.push((self.now, input));
            run.commands.extend_from_slice(&cmds);
            run.transitions
                .extend(transitions[..nt].iter().flatten().copied());
        }
        for t in transitions[..nt].iter().flatten().copied() {
            self.log(TraceItem::Transition(i, t));
            self.on_transition(i, t);
        }
        for c in cmds {
            self.log(TraceItem::Command(i, c));
            self.dispatch(i, c);
        }
    }

    fn on_transition(&mut self, i: usize, t: Transition) {
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
            Reason::SplitBrain { .. },
        ) = (t.to, t.reason)
        {
            self.stats.split_brain_stops += 1;
        }
        if let State::Cloning { .. } = t.to {
            self.stats.clones += 1;
        }
    }

    fn dispatch(&mut self, i: usize, cmd: Command) {
        match cmd.kind {
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
                if self.link_down(i, target) {
                    return; // never answers: the core times it out
                }
                if let Some(pct) = self.loss
                    && self.rng.range(1, 100) <= u64::from(pct)
                {
                    return;
                }
                if let Some(result) = self.probe_result(i, target) {
                    let d = self.rng.range(1, DELAY_MAX_MS) + self.rng.range(1, DELAY_MAX_MS);
                    self.deliver(i, cmd.id, Some(p), result, d);
                }
            }
            CommandKind::ProbePeerDaemon(p) => {
                let target = self.nodes[i].peer_of[p.index()];
                if self.link_down(i, target) {
                    return; // never answers: the core times it out
                }
                if let Some(pct) = self.loss
                    && self.rng.range(1, 100) <= u64::from(pct)
                {
                    return;
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

    fn link_down(&self, a: usize, b: usize) -> bool {
        self.partitioned
            .iter()
            .any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
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

    fn action_duration(&mut self, kind: CommandKind) -> u64 {
        match kind {
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
        let mut dur = self.action_duration(cmd.kind);
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
            }
            CommandKind::StopPostgres(_) => {
                if self.nodes[i].hung {
                    dur = STOP_TIMEOUT_MS;
                    self.nodes[i].stop_signalled = true;
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
                let branch = self.new_branch();
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
                        Ok(())
                    }
                    _ => Err(Failure::Exit(1)),
                }
            }
            CommandKind::StopPostgres(_) => {
                let node = &mut self.nodes[i];
                if node.hung {
                    return Err(Failure::Timeout);
                }
                node.stop_signalled = false;
                node.pg = None;
                Ok(())
            }
            CommandKind::Basebackup { from } => {
                let src = self.nodes[i].peer_of[from.index()];
                let ok = !self.link_down(i, src)
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
                self.nodes[i].data = Some(copy);
                self.nodes[i].held_data = true;
                self.nodes[i].followed_timeline = 0;
                Ok(())
            }
            CommandKind::Promote => self.promote_pg(i),
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
    fn promote_pg(&mut self, i: usize) -> Result<(), Failure> {
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
        let branch = self.new_branch();
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
        Ok(())
    }

    fn new_branch(&mut self) -> u32 {
        self.next_branch += 1;
        self.next_branch
    }

    fn apply_fault(&mut self, f: Fault) {
        self.log(TraceItem::Fault(f));
        match f {
            Fault::KillPostgres(i) => {
                let node = &mut self.nodes[i];
                node.pg = None;
                node.hung = false;
                node.stop_signalled = false;
            }
            Fault::Hang(i) => {
                if self.nodes[i].pg.is_some() {
                    self.nodes[i].hung = true;
                }
            }
            Fault::Resume(i) => {
                let node = &mut self.nodes[i];
                node.hung = false;
                if std::mem::take(&mut node.stop_signalled) {
                    // The signal pg_ctl sent is delivered now: the server stops, and a pg_ctl
                    // still waiting sees it go.
                    node.pg = None;
                    let now = self.now;
                    if let Some(r) = node.current.as_mut()
                        && matches!(r.cmd.kind, CommandKind::StopPostgres(_))
                    {
                        r.finish = now;
                    }
                }
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
                if !self.link_down(a, b) {
                    self.partitioned.push((a, b));
                }
            }
            Fault::Heal(a, b) => self
                .partitioned
                .retain(|&(x, y)| (x, y) != (a, b) && (x, y) != (b, a)),
            Fault::Exhaust(i) => self.nodes[i].exhausted = true,
            Fault::Release(i) => self.nodes[i].exhausted = false,
            Fault::LossOn(p) => self.loss = Some(p),
            Fault::LossOff => self.loss = None,
            Fault::Operator(i, req) => {
                if req == OperatorRequest::Recover {
                    self.stats.recovers += 1;
                }
                self.feed(i, Input::Event(Event::Operator(req)));
            }
            Fault::ExternalPromote(i) => {
                let _ = self.promote_pg(i);
            }
        }
    }

    /// Ends every fault: heals links, stops loss, resumes hung servers, restarts daemons.
    pub fn heal_all(&mut self) {
        let pairs = std::mem::take(&mut self.partitioned);
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
        self.check_invariants();
    }

    /// Masters write; replicas that can stream catch up and follow timeline switches.
    fn advance_replication(&mut self) {
        let elapsed = self.now.since(self.last_lsn_tick);
        self.last_lsn_tick = self.now;
        for n in &mut self.nodes {
            if let (
                Some(PgRun {
                    role: PgRole::Master,
                    phase: Phase::Up,
                }),
                false,
                Some(d),
            ) = (n.pg, n.hung, n.data.as_mut())
            {
                d.lsn += elapsed / 10;
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
            if self.nodes[i].hung || self.nodes[upstream].hung || self.link_down(i, upstream) {
                continue;
            }
            if !matches!(
                self.nodes[upstream].pg,
                Some(PgRun {
                    role: PgRole::Master,
                    phase: Phase::Up
                })
            ) {
                continue;
            }
            let (Some(m), Some(r)) = (
                self.nodes[upstream].data.clone(),
                self.nodes[i].data.as_ref(),
            ) else {
                continue;
            };
            let follows = (r.branch == m.branch && r.lsn <= m.lsn)
                || m.ancestry
                    .iter()
                    .any(|&(b, fork)| b == r.branch && r.lsn <= fork);
            if follows {
                let tl = m.timeline;
                self.nodes[i].data = Some(PgData {
                    was_master: false,
                    ..m
                });
                self.nodes[i].followed_timeline = self.nodes[i].followed_timeline.max(tl);
            }
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
        for i in 0..n {
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
            for j in 0..n {
                if i == j {
                    continue;
                }
                let clean = self.master_up(j) && !self.link_down(i, j) && self.loss.is_none();
                self.clean_since[i][j] = if clean {
                    self.clean_since[i][j].or(Some(now))
                } else {
                    None
                };
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
    let (interval, timeout, grace, stagger) = if s.fast {
        (200, 500, 3_000, 1_000)
    } else {
        (1_000, 5_000, 15_000, 5_000)
    };
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
        psql_error_count: 3,
        probe_interval_ms: interval,
        transition_bound_ms: if s.fast { 10_000 } else { 30_000 },
        split_brain: s.split_brain,
        master_give_up_ms: Config::default_master_give_up_ms(3, timeout, interval),
        isolation: s.isolation,
        vip: s.vip,
        proxy: s.proxy,
        hooks: true,
    }
}
