//! The simulated world: its nodes (daemons running real `pgha_core::Node`s beside their
//! postgres), the virtual clock and the driver loop that steps it. The concerns it drives live
//! beside it: postgres, actions, network, faults, invariants, clients.

use std::collections::VecDeque;

use pgha_core::{
    Command, CommandKind, Config, Event, Input, Isolation, LocalFacts, Node, PeerConfig, PeerId,
    ProbeResult, SplitBrainRule, State, Timestamp, Topology, Transition,
};

use crate::actions::Running;
use crate::clients::Write;
use crate::faults::Fault;
use crate::invariants::{Stale, Violation};
use crate::network::{DELAY_MAX_MS, Delivery, Parked};
use crate::postgres::{Branch, BranchKind, PgData, Postgres};
use crate::rng::Rng;

/// The most nodes a scenario has.
pub(crate) const MAX_NODES: usize = 5;

/// A moment per ordered pair of nodes.
pub(crate) type PerPair = [[Option<Timestamp>; MAX_NODES]; MAX_NODES];

#[derive(Debug)]
pub struct SimNode {
    pub config: Config,
    pub core: Option<Node>,
    /// Bumped on each daemon start; results for an older daemon are dropped.
    pub daemon: u32,
    /// Its postgres server and data directory.
    pub pg: Postgres,
    pub fence_marker: bool,
    /// When its postgres last became a master (started as one, or promoted).
    pub(crate) master_since: Timestamp,
    /// When the postmaster last hung, and last resumed.
    pub(crate) hung_at: Option<Timestamp>,
    pub(crate) resumed_at: Option<Timestamp>,
    /// The client has sessions open on this node's postgres.
    pub sessions: bool,
    /// When this node last acquired the VIP (a counter): new sessions go to the latest.
    pub(crate) vip_seq: u64,
    /// When the current daemon started.
    pub(crate) daemon_started: Timestamp,
    /// When an operator last resumed its paused daemon.
    pub(crate) resumed_pause_at: Option<Timestamp>,
    /// The nodes whose daemon this node's core could ask when it last decided to lead.
    pub(crate) lead_in_sight: u32,
    /// The timeline split-brain rule fenced it, and it has not left `fenced` since.
    pub(crate) timeline_rule_fenced: bool,
    /// Its last promotion was the core's own (not an operator's).
    pub(crate) promote_automatic: bool,
    /// The simulated operator ran `recover --force` on it: the next re-clone's discarded data
    /// is the operator's choice.
    pub(crate) forced: bool,
    pub vip: bool,
    pub(crate) queue: VecDeque<Command>,
    pub(crate) current: Option<Running>,
    /// PeerId(k) of this node is node `peer_of[k]`.
    pub(crate) peer_of: Vec<usize>,
    pub daemon_down: bool,
    /// The highest master timeline this node has followed or been (for the timeline check).
    pub(crate) followed_timeline: u32,
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

/// The simulated cluster.
#[derive(Debug)]
pub struct World {
    pub now: Timestamp,
    pub nodes: Vec<SimNode>,
    pub scenario: Scenario,
    pub(crate) rng: Rng,
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) parked: Vec<Parked>,
    pub(crate) seq: u64,
    pub(crate) partitioned: Vec<(usize, usize)>,
    /// One-way partitions: (from, to).
    pub(crate) one_way: Vec<(usize, usize)>,
    pub(crate) loss: Option<u32>,
    pub(crate) pending_faults: VecDeque<(Timestamp, Fault)>,
    pub(crate) next_branch: u32,
    pub trace: Vec<TraceLine>,
    pub runs: Vec<NodeRun>,
    pub(crate) run_of: Vec<usize>,
    /// Per ordered pair: since when x has had a clean view of master y.
    pub(crate) clean_since: PerPair,
    /// Per pair: since when both are masters that can see each other.
    pub(crate) both_master_since: PerPair,
    pub(crate) vip_both_since: PerPair,
    /// Per node: since when its postgres has been up (running, not hung, neither starting up
    /// nor shutting down), full or not.
    pub(crate) local_up_since: Vec<Option<Timestamp>>,
    /// Per ordered pair: since when x's core could ask y's daemon (running, reachable, no loss).
    pub(crate) daemon_in_sight_since: PerPair,
    /// Per ordered pair: since when connections from x to y time out.
    pub(crate) cut_since: PerPair,
    /// Per ordered pair: when x last could not see y clearly (a cut either way, loss, either
    /// server full).
    pub(crate) murky_at: PerPair,
    /// When probe loss, and each server's being full, were last seen.
    pub(crate) lossy_at: Option<Timestamp>,
    pub(crate) full_at: Vec<Option<Timestamp>>,
    /// When each node was last gone: daemon down and postgres not an up master.
    pub(crate) gone_at: Vec<Option<Timestamp>>,
    /// The history's branches, by id.
    pub branches: Vec<Branch>,
    /// Every write acknowledged to the client.
    pub writes: Vec<Write>,
    /// Data replaced by re-clones (the shell sets it aside), with whether the operator forced it.
    pub set_aside: Vec<(PgData, bool)>,
    pub(crate) vip_seq: u64,
    pub violations: Vec<Violation>,
    pub(crate) last_lsn_tick: Timestamp,
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

pub(crate) fn node_config(s: &Scenario, i: usize, peer_of: &[usize]) -> Config {
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
                pg: Postgres::default(),
                fence_marker: false,
                master_since: Timestamp::ZERO,
                hung_at: None,
                resumed_at: None,
                sessions: false,
                vip_seq: 0,
                daemon_started: Timestamp::ZERO,
                resumed_pause_at: None,
                lead_in_sight: 0,
                promote_automatic: false,
                timeline_rule_fenced: false,
                forced: false,
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
                node.pg.data = Some(PgData {
                    timeline: 1,
                    lsn: if i == 0 { 1000 } else { 900 },
                    branch: 1,
                    ancestry: Vec::new(),
                    was_master: i == 0,
                });
                node.pg.held_data = true;
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

    pub(crate) fn log(&mut self, item: TraceItem) {
        if self.record {
            self.trace.push(TraceLine { at: self.now, item });
        }
    }

    pub(crate) fn violation(&mut self, what: String) {
        if self.violations.len() < 16 {
            self.violations.push(Violation { at: self.now, what });
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start_daemon(i);
        }
    }

    pub(crate) fn facts(&self, i: usize) -> LocalFacts {
        let n = &self.nodes[i];
        LocalFacts {
            data_dir: n.pg.data_dir(),
            postgres_running: n.pg.run.is_some(),
            fenced: n.fence_marker,
        }
    }

    pub(crate) fn start_daemon(&mut self, i: usize) {
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

    pub(crate) fn crash_daemon(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.core = None;
        node.daemon_down = true;
        node.queue.clear();
        // A running action's process lives on and finishes; its result reaches no one.
    }

    /// Feeds one input to node `i`'s core and carries out what it asks.
    pub(crate) fn feed(&mut self, i: usize, input: Input) {
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

    pub(crate) fn dispatch(&mut self, i: usize, cmd: Command) {
        match cmd.kind {
            CommandKind::ProbeLocal if self.nodes[i].pg.hung && self.nodes[i].pg.run.is_some() => {
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
                if self.nodes[target].pg.hung && self.nodes[target].pg.run.is_some() {
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

    /// The next moment anything happens, if anything will.
    pub(crate) fn next_time(&self) -> Option<Timestamp> {
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
            if let Some(t) = n.pg.kill_backends_at {
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

    pub(crate) fn step(&mut self) {
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
            if self.nodes[i].pg.kill_backends_at.is_some_and(|t| t <= now) {
                let node = &mut self.nodes[i];
                node.pg.kill_backends_at = None;
                if node.pg.run.is_some() {
                    node.pg.backends_killed = true;
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
