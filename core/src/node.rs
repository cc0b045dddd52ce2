//! The state machine of one pgha node.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::reason::{AfterStop, Failures, Reason, State, Transition};
use crate::{
    Command, CommandId, CommandKind, Config, DataDir, DataPosition, Event, Hook, Isolation,
    LocalFacts, Lsn, MAX_PEERS, OperatorRequest, PeerId, PeerReport, ProbeResult, ProxyTarget,
    Role, SplitBrainRule, Standing, StartAs, StopMode, Timeline, Timer, TimerTable, Timestamp,
    Topology,
};

#[doc(hidden)]
pub mod legacy;

/// The most commands one input can produce: a probe per server and a handful of actions.
/// The queue is allocated once at this size; the drain contract keeps it from growing.
pub const COMMAND_QUEUE: usize = 32;
/// The most transitions one input can produce.
pub const TRANSITION_QUEUE: usize = 8;

/// One probed server: the probe in flight, when the next is due, and the failure run.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Slot {
    /// The probe in flight and the deadline after which it counts as a timeout.
    in_flight: Option<(CommandId, Timestamp)>,
    next_due: Timestamp,
    failures: Failures,
    /// When the server first answered "starting up" or "shutting down" in the current run.
    transitional_since: Option<Timestamp>,
    last: Option<(Timestamp, ProbeResult)>,
    /// The last sign of life: an answer, "too many clients", or "starting up" / "shutting
    /// down" within the transition bound. What the give-up deadlines count from.
    alive_at: Option<Timestamp>,
    /// The role of the last answer (master or replica), kept through failures.
    role: Role,
}

/// One peer's daemon: the report probe in flight, when the next is due, and its last report.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct DaemonSlot {
    in_flight: Option<(CommandId, Timestamp)>,
    next_due: Timestamp,
    /// The last result (`None` inside: it did not answer) and when it came.
    last: Option<(Timestamp, Option<PeerReport>)>,
    /// When it last answered.
    answered_at: Option<Timestamp>,
    /// The role and standing of its last report, kept through silences.
    seen: Option<(Role, Standing)>,
}

/// What a probe result means for the run of failures, after the transition bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    /// Answered master or replica.
    Up,
    /// Starting up or shutting down, within the bound: neither a failure nor an answer.
    Transitional,
    Failed,
    /// Alive but overloaded (too many connections, out of resources): it proves the server
    /// runs, so it ends a run of failures, but says nothing of its role or position.
    Alive,
}

/// One output of the core, as [`Node::poll_output`] yields it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A state change (or a request handled in place), with its reason.
    Transition(Transition),
    /// A command for the shell.
    Command(Command),
}

/// What one input produced: the transitions (to journal and log) and the commands to carry
/// out, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub transitions: Vec<Transition>,
    pub commands: Vec<Command>,
    /// For an operator request, the core's answer to it; `None` for any other input.
    pub answer: Option<OperatorAnswer>,
}

/// The core's answer to an operator request: accepted, or refused with the reason the
/// refusal's transition gives (the state is then unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OperatorAnswer {
    pub request: OperatorRequest,
    /// `None`: accepted.
    pub refusal: Option<Reason>,
}

impl OperatorAnswer {
    pub fn accepted(&self) -> bool {
        self.refusal.is_none()
    }

    /// The answer of an operator request that produced `transitions`: every request is
    /// handled by a transition ([`Node::handle`] of [`Event::Operator`]), and a refused one's
    /// reason is a refusal ([`Reason::is_refusal`]).
    fn of(request: OperatorRequest, transitions: &[Transition]) -> OperatorAnswer {
        let refusal = match transitions.iter().find(|t| t.reason.is_refusal()) {
            Some(t) => Some(t.reason),
            None if transitions.is_empty() => Some(Reason::OperatorRefused { request }),
            None => None,
        };
        OperatorAnswer { request, refusal }
    }
}

/// One pgha node's decisions. See the crate documentation for the drain contract.
///
/// Serde derives let the journal store a snapshot of a node between two inputs (queues
/// drained), so a pruned journal still replays exactly.
#[derive(Debug, Serialize, Deserialize)]
pub struct Node {
    config: Config,
    state: State,
    paused: bool,
    next_id: u64,
    commands: VecDeque<Command>,
    transitions: VecDeque<Transition>,
    local: Slot,
    peers: [Slot; MAX_PEERS],
    /// The action the current state waits for.
    awaiting: Option<(CommandId, CommandKind)>,
    data: Option<DataDir>,
    local_timeline: Option<Timeline>,
    vip_held: bool,
    /// The VIP command in flight, and whether it acquires.
    vip_pending: Option<(CommandId, bool)>,
    /// When a failed step is retried, or a found master may be acted on again.
    retry_at: Option<Timestamp>,
    state_since: Timestamp,
    last_transition: Option<Transition>,
    /// The role when the current input began, to emit the role-change hook once.
    role_at_input: Role,
    /// Since when the local replica has been on an older timeline than its master.
    behind_since: Option<Timestamp>,
    /// Since when the local replay position has not moved, with it and the master's position
    /// then.
    stalled: Option<(Timestamp, Lsn, Lsn)>,
    /// The peers' daemons, probed for their reports.
    daemons: [DaemonSlot; MAX_PEERS],
    /// An operator's `recover --force`: until master or replica again, lead or re-clone
    /// whatever the peers' data.
    force: bool,
}

impl Node {
    /// A node in [`State::Init`]; it acts from the [`Event::Started`] event on.
    /// The configuration should have passed [`Config::validate`].
    pub fn new(config: Config) -> Node {
        debug_assert!(
            config.validate().is_ok(),
            "invalid config: {:?}",
            config.validate()
        );
        Node {
            config,
            state: State::Init,
            paused: false,
            next_id: 1,
            commands: VecDeque::with_capacity(COMMAND_QUEUE),
            transitions: VecDeque::with_capacity(TRANSITION_QUEUE),
            local: Slot::default(),
            peers: [Slot::default(); MAX_PEERS],
            awaiting: None,
            data: None,
            local_timeline: None,
            vip_held: false,
            vip_pending: None,
            retry_at: None,
            state_since: Timestamp::ZERO,
            last_transition: None,
            role_at_input: Role::None,
            behind_since: None,
            stalled: None,
            daemons: [DaemonSlot::default(); MAX_PEERS],
            force: false,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn role(&self) -> Role {
        self.state.role()
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The timeline the local postgres last reported.
    pub fn local_timeline(&self) -> Option<Timeline> {
        self.local_timeline
    }

    /// Whether this node believes it holds the VIP.
    pub fn vip_held(&self) -> bool {
        self.vip_held
    }

    pub fn last_transition(&self) -> Option<&Transition> {
        self.last_transition.as_ref()
    }

    /// When the current state was entered.
    pub fn state_since(&self) -> Timestamp {
        self.state_since
    }

    /// The last probe result of a peer and when it arrived.
    pub fn peer_last(&self, peer: PeerId) -> Option<(Timestamp, ProbeResult)> {
        self.peers.get(peer.index()).and_then(|s| s.last)
    }

    /// The last local probe result and when it arrived.
    pub fn local_last(&self) -> Option<(Timestamp, ProbeResult)> {
        self.local.last
    }

    /// The last report of a peer's daemon (`None` inside: it did not answer) and when it came.
    pub fn peer_report(&self, peer: PeerId) -> Option<(Timestamp, Option<PeerReport>)> {
        self.daemons.get(peer.index()).and_then(|s| s.last)
    }

    /// What this node tells its peers of itself (its API's `/status`, field `report`).
    pub fn report(&self) -> PeerReport {
        let standing = match self.state {
            State::Master | State::Promoting { .. } => Standing::Leading,
            State::Starting {
                target: StartAs::Master,
            } => Standing::Leading,
            State::WaitingForLocal { expect } if self.started_as_master(expect) => {
                Standing::Leading
            }
            // An isolated master elects again as soon as it hears a peer.
            State::Discovering { .. }
            | State::Electing { .. }
            | State::Isolated
            | State::SteppingDown {
                then: AfterStop::Isolate,
            } => Standing::Electing,
            State::Replica { .. }
            | State::Cloning { .. }
            | State::Starting { .. }
            | State::WaitingForLocal { .. }
            | State::WaitingForMaster
            | State::SteppingDown {
                then: AfterStop::Rejoin { .. },
            } => Standing::Following,
            State::Fenced
            | State::Halted
            | State::SteppedDown
            | State::SteppingDown {
                then: AfterStop::Fence | AfterStop::WaitForMaster,
            } => Standing::Held,
            State::Init | State::Initializing | State::SteppingDown { .. } => Standing::Busy,
        };
        let (upstream, upstream_failures) = match self.state {
            State::Replica { upstream } => (
                self.config.peers.get(upstream.index()).map(|p| p.index),
                self.peers[upstream.index()].failures.count,
            ),
            _ => (None, 0),
        };
        PeerReport {
            index: self.config.index,
            role: self.role(),
            standing,
            data: self.position(),
            upstream,
            upstream_failures,
        }
    }

    /// Where the local data is: the local postgres's last answer while it runs, else what is
    /// known of the stopped data.
    pub fn position(&self) -> Option<DataPosition> {
        if self.local_active() {
            match self.local.last {
                Some((_, ProbeResult::Master { timeline, lsn })) => {
                    return Some(DataPosition {
                        timeline,
                        lsn,
                        was_master: true,
                    });
                }
                Some((
                    _,
                    ProbeResult::Replica {
                        timeline,
                        replay_lsn,
                        ..
                    },
                )) => {
                    return Some(DataPosition {
                        timeline,
                        lsn: replay_lsn,
                        was_master: false,
                    });
                }
                _ => {}
            }
        }
        match self.data {
            Some(DataDir::Present {
                timeline,
                lsn,
                was_master,
            }) => Some(DataPosition {
                timeline: self.local_timeline.unwrap_or(timeline).max(timeline),
                lsn,
                was_master,
            }),
            _ => None,
        }
    }

    /// The next output of the last input, until `None`: its transitions first (journal and log
    /// them), then its commands in the order to carry them out. Allocates nothing.
    pub fn poll_output(&mut self) -> Option<Output> {
        if let Some(t) = self.transitions.pop_front() {
            return Some(Output::Transition(t));
        }
        self.commands.pop_front().map(Output::Command)
    }

    /// One input and everything it produced: [`Node::apply`], then [`Node::poll_output`]
    /// drained into a [`Step`]. What the journal, the shells and the simulator call.
    pub fn step(&mut self, now: Timestamp, input: crate::Input) -> Step {
        self.apply(now, input);
        let mut step = Step::default();
        while let Some(o) = self.poll_output() {
            match o {
                Output::Transition(t) => step.transitions.push(t),
                Output::Command(c) => step.commands.push(c),
            }
        }
        if let crate::Input::Event(Event::Operator(request)) = input {
            step.answer = Some(OperatorAnswer::of(request, &step.transitions));
        }
        step
    }

    /// Every deadline the node keeps, one slot per [`Timer`]. The table is derived from the
    /// state on each call, never stored: it cannot go stale, and the journal's snapshot of a
    /// node does not carry it.
    pub fn timers(&self) -> TimerTable {
        let mut table = TimerTable::default();
        let peers = self.config.peers.len();
        for timer in Timer::order(peers) {
            table.set(timer, self.deadline(timer));
        }
        table
    }

    /// The earliest deadline at which [`Node::handle_timeout`] has work, if any: the
    /// earliest slot of [`Node::timers`].
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        // The table's minimum, without filling the table.
        Timer::order(self.config.peers.len())
            .filter_map(|t| self.deadline(t))
            .min()
    }

    /// The deadline of one timer: what [`Node::timers`] holds in its slot.
    #[inline(always)]
    fn deadline(&self, timer: Timer) -> Option<Timestamp> {
        // A probe slot: its timeout while in flight (even while the server is not probed any
        // more), else when the next probe is due while it is probed.
        let probe = |in_flight: Option<(CommandId, Timestamp)>, next_due, active| match in_flight {
            Some((_, d)) => Some(d),
            None if active => Some(next_due),
            None => None,
        };
        match timer {
            Timer::LocalProbe => probe(
                self.local.in_flight,
                self.local.next_due,
                self.local_active(),
            ),
            Timer::PeerProbe(p) => {
                let s = &self.peers[p.index()];
                probe(s.in_flight, s.next_due, self.peers_active())
            }
            Timer::DaemonProbe(p) => {
                let s = &self.daemons[p.index()];
                probe(s.in_flight, s.next_due, self.peers_active())
            }
            Timer::LocalGiveUp => self.local_give_up_at(),
            Timer::Isolation => self.isolation_at().map(|(_, t)| t),
            Timer::Wait => match self.state {
                State::Discovering { deadline } | State::Electing { deadline } => Some(deadline),
                _ => None,
            },
            Timer::Retry => self.retry_at,
        }
    }

    /// Acts on whatever is due at `now`, timer by timer in [`Timer::order`]; each timer's
    /// deadline is read again when its turn comes, so an earlier timer's effect (a probe
    /// timeout that ends a state) is seen by the later ones. A call with nothing due changes
    /// nothing.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.begin_input();
        for timer in Timer::order(self.config.peers.len()) {
            if self.deadline(timer).is_some_and(|at| at <= now) {
                self.fire(now, timer);
            }
        }
        self.end_input(now);
    }

    /// One due timer. A probe that is due (not in flight) is issued by `end_input`, so a probe
    /// slot acts here only on a timeout.
    fn fire(&mut self, now: Timestamp, timer: Timer) {
        match timer {
            Timer::LocalProbe => {
                if self.local.in_flight.take().is_some() {
                    self.on_local_probe(now, ProbeResult::Timeout);
                }
            }
            Timer::PeerProbe(p) => {
                if self.peers[p.index()].in_flight.take().is_some() {
                    self.on_peer_probe(now, p, ProbeResult::Timeout);
                }
            }
            Timer::DaemonProbe(p) => {
                if self.daemons[p.index()].in_flight.take().is_some() {
                    self.on_peer_report(now, p, None);
                }
            }
            Timer::LocalGiveUp => {
                let silent_ms = now.since(
                    self.local
                        .alive_at
                        .unwrap_or(self.state_since)
                        .max(self.state_since),
                );
                let reason = Reason::LocalSilent {
                    silent_ms,
                    bound_ms: self.config.master_give_up_ms,
                    last: self.local.last.map(|(_, r)| r),
                };
                self.step_down(now, AfterStop::Elect, StopMode::Immediate, reason);
            }
            Timer::Isolation => {
                let Some((peer, _)) = self.isolation_at() else {
                    return;
                };
                let reason = Reason::Isolated {
                    peer,
                    silent_ms: now.since(self.peer_contact(peer.index())),
                    bound_ms: self.config.master_give_up_ms,
                };
                self.step_down(now, AfterStop::Isolate, StopMode::Immediate, reason);
            }
            Timer::Wait => {
                if self.wait_for_overloaded_peer(now) || self.wait_for_peer_ahead(now) {
                    return;
                }
                match self.state {
                    State::Discovering { .. } => {
                        let waited = now.since(self.state_since);
                        self.init_data_dir(now, Reason::NoMasterFound { waited_ms: waited });
                    }
                    State::Electing { .. } => match self.silent_replica(now) {
                        // Leading now would last until the isolation deadline, already passed:
                        // stay stopped instead, as an isolated master.
                        Some((peer, silent_ms)) => {
                            let reason = Reason::Isolated {
                                peer,
                                silent_ms,
                                bound_ms: self.config.master_give_up_ms,
                            };
                            self.go(now, State::Isolated, reason);
                        }
                        None => self.grace_expired(now),
                    },
                    _ => {}
                }
            }
            Timer::Retry => {
                self.retry_at = None;
                self.retry();
            }
        }
    }

    /// Feeds one recorded call: [`Node::handle`] or [`Node::handle_timeout`].
    pub fn apply(&mut self, now: Timestamp, input: crate::Input) {
        match input {
            crate::Input::Event(event) => self.handle(now, event),
            crate::Input::Timeout => self.handle_timeout(now),
        }
    }

    /// Feeds one event.
    pub fn handle(&mut self, now: Timestamp, event: Event) {
        self.begin_input();
        match event {
            Event::Started(facts) => self.on_started(now, facts),
            Event::LocalProbe { id, result } => {
                if self.local.in_flight.is_some_and(|(i, _)| i == id) {
                    self.local.in_flight = None;
                    self.on_local_probe(now, result);
                }
            }
            Event::PeerProbe { id, peer, result } => {
                if let Some(slot) = self.peers.get_mut(peer.index())
                    && peer.index() < self.config.peers.len()
                    && slot.in_flight.is_some_and(|(i, _)| i == id)
                {
                    slot.in_flight = None;
                    self.on_peer_probe(now, peer, result);
                }
            }
            Event::CommandDone {
                id,
                outcome,
                duration_ms,
            } => self.on_command_done(now, id, outcome, duration_ms),
            Event::Operator(request) => self.on_operator(now, request),
            Event::PeerDaemon { id, peer, report } => {
                if let Some(slot) = self.daemons.get_mut(peer.index())
                    && peer.index() < self.config.peers.len()
                    && slot.in_flight.is_some_and(|(i, _)| i == id)
                {
                    slot.in_flight = None;
                    self.on_peer_report(now, peer, report);
                }
            }
            // Journaled for `pgha explain`; no decision depends on a hook.
            Event::HookDone { .. } => {}
        }
        self.end_input(now);
    }

    // ---- input framing ----------------------------------------------------------------

    fn begin_input(&mut self) {
        debug_assert!(
            self.commands.is_empty() && self.transitions.is_empty(),
            "drain contract: poll_output until None before the next input"
        );
        self.role_at_input = self.state.role();
    }

    fn end_input(&mut self, now: Timestamp) {
        let role = self.state.role();
        if role != self.role_at_input && self.config.hooks {
            self.emit(CommandKind::RunHook(Hook::RoleChange { role }));
        }
        self.issue_probes(now);
        debug_assert!(
            self.commands.len() <= COMMAND_QUEUE,
            "command queue bound exceeded"
        );
        debug_assert!(
            self.transitions.len() <= TRANSITION_QUEUE,
            "transition queue bound exceeded"
        );
    }

    fn emit(&mut self, kind: CommandKind) -> CommandId {
        let id = CommandId(self.next_id);
        self.next_id += 1;
        self.commands.push_back(Command { id, kind });
        id
    }

    /// Emits an action the current state waits for.
    fn emit_awaited(&mut self, kind: CommandKind) {
        let id = self.emit(kind);
        self.awaiting = Some((id, kind));
    }

    fn go(&mut self, now: Timestamp, to: State, reason: Reason) {
        let t = Transition {
            at: now,
            from: self.state,
            to,
            reason,
        };
        if self.state != to {
            self.state_since = now;
            // A run of failures belongs to the state that counted it.
            self.local.failures.clear();
            self.local.transitional_since = None;
            for s in &mut self.peers {
                s.failures.clear();
                s.transitional_since = None;
            }
            self.awaiting = None;
            self.retry_at = None;
            self.behind_since = None;
            self.stalled = None;
            if matches!(to, State::Master | State::Replica { .. }) {
                self.force = false;
            }
        }
        self.state = to;
        self.transitions.push_back(t);
        self.last_transition = Some(t);
    }

    // ---- probes -------------------------------------------------------------------------

    fn local_active(&self) -> bool {
        matches!(
            self.state,
            State::WaitingForLocal { .. } | State::Master | State::Replica { .. }
        )
    }

    fn peers_active(&self) -> bool {
        self.state != State::Init
    }

    fn issue_probes(&mut self, now: Timestamp) {
        let interval = self.config.probe_interval_ms;
        let timeout = self.config.connect_timeout_ms;
        if self.local_active() && self.local.in_flight.is_none() && self.local.next_due <= now {
            let id = self.emit(CommandKind::ProbeLocal);
            self.local.in_flight = Some((id, now.plus(timeout)));
            self.local.next_due = now.plus(interval);
        }
        if self.peers_active() {
            for i in 0..self.config.peers.len() {
                if self.peers[i].in_flight.is_none() && self.peers[i].next_due <= now {
                    let id = self.emit(CommandKind::ProbePeer(PeerId(i as u8)));
                    self.peers[i].in_flight = Some((id, now.plus(timeout)));
                    self.peers[i].next_due = now.plus(interval);
                }
                if self.daemons[i].in_flight.is_none() && self.daemons[i].next_due <= now {
                    let id = self.emit(CommandKind::ProbePeerDaemon(PeerId(i as u8)));
                    self.daemons[i].in_flight = Some((id, now.plus(timeout)));
                    self.daemons[i].next_due = now.plus(interval);
                }
            }
        }
    }

    /// Records a result in a slot and classifies it.
    fn classify(slot: &mut Slot, now: Timestamp, result: ProbeResult, bound_ms: u64) -> Health {
        slot.last = Some((now, result));
        if result.is_answer() {
            slot.failures.clear();
            slot.transitional_since = None;
            slot.alive_at = Some(now);
            slot.role = match result {
                ProbeResult::Master { .. } => Role::Master,
                _ => Role::Replica,
            };
            return Health::Up;
        }
        if result == ProbeResult::Overloaded {
            // Only a running postmaster answers so: not down, whatever came before.
            slot.failures.clear();
            slot.transitional_since = None;
            slot.alive_at = Some(now);
            return Health::Alive;
        }
        if result.is_transitional() {
            let since = *slot.transitional_since.get_or_insert(now);
            if now.since(since) <= bound_ms {
                slot.alive_at = Some(now);
                return Health::Transitional;
            }
        } else {
            slot.transitional_since = None;
        }
        slot.failures.record(now, result);
        Health::Failed
    }

    fn on_local_probe(&mut self, now: Timestamp, result: ProbeResult) {
        self.local_probe_decide(now, result);
        self.check_following(now);
    }

    fn local_probe_decide(&mut self, now: Timestamp, result: ProbeResult) {
        let health = Self::classify(
            &mut self.local,
            now,
            result,
            self.config.transition_bound_ms,
        );
        if let Some(tl) = result.timeline() {
            self.local_timeline = Some(tl);
        }
        // The data's position is its postgres's last answer: what an election compares
        // after a stop, hung or not.
        if let (
            Some(DataDir::Present { lsn, .. }),
            ProbeResult::Master { lsn: at, .. } | ProbeResult::Replica { replay_lsn: at, .. },
        ) = (self.data.as_mut(), result)
        {
            *lsn = at;
        }
        let limit = self.config.psql_error_count;
        match (self.state, result) {
            (State::WaitingForLocal { .. }, ProbeResult::Master { .. }) => {
                self.go(
                    now,
                    State::Master,
                    Reason::LocalAnswered { role: Role::Master },
                );
                self.become_master();
            }
            (State::WaitingForLocal { expect }, ProbeResult::Replica { upstream, .. }) => {
                let expected = match expect {
                    Some(StartAs::Replica { upstream }) => Some(upstream),
                    _ => None,
                };
                let upstream = upstream.or(expected).unwrap_or(PeerId(0));
                self.go(
                    now,
                    State::Replica { upstream },
                    Reason::LocalAnswered {
                        role: Role::Replica,
                    },
                );
            }
            (State::Replica { .. }, ProbeResult::Master { .. }) => {
                // Promoted outside pgha: traffic follows the role, and the split-brain rule
                // applies if the old master still runs.
                self.go(
                    now,
                    State::Master,
                    Reason::LocalAnswered { role: Role::Master },
                );
                self.become_master();
            }
            (State::Master, ProbeResult::Replica { upstream, .. }) => {
                self.release_vip();
                let upstream = upstream.unwrap_or(PeerId(0));
                self.go(
                    now,
                    State::Replica { upstream },
                    Reason::LocalAnswered {
                        role: Role::Replica,
                    },
                );
            }
            (State::Master, _) if health == Health::Up => self.ensure_vip(),
            (State::WaitingForLocal { .. } | State::Master | State::Replica { .. }, _)
                if health == Health::Failed
                    && self.local.failures.count >= limit
                    && !self.paused =>
            {
                let failures = self.local.failures;
                self.step_down(
                    now,
                    AfterStop::Elect,
                    StopMode::Immediate,
                    Reason::LocalDown { failures },
                );
            }
            _ => {}
        }
    }

    fn on_peer_probe(&mut self, now: Timestamp, peer: PeerId, result: ProbeResult) {
        self.peer_probe_decide(now, peer, result);
        self.check_following(now);
    }

    fn peer_probe_decide(&mut self, now: Timestamp, peer: PeerId, result: ProbeResult) {
        let i = peer.index();
        let health = Self::classify(
            &mut self.peers[i],
            now,
            result,
            self.config.transition_bound_ms,
        );
        match self.state {
            State::Discovering { .. }
            | State::WaitingForMaster
            | State::Electing { .. }
            | State::SteppedDown => {
                if let ProbeResult::Master { timeline, lsn } = result
                    && self.retry_at.is_none_or(|t| t <= now)
                {
                    self.master_found(now, peer, timeline, lsn);
                }
            }
            State::Isolated => match result {
                ProbeResult::Master { timeline, lsn } => {
                    self.master_found(now, peer, timeline, lsn)
                }
                // Its postgres answers; unless its daemon last said it is counting failed
                // probes of this node (it may promote), elect.
                _ if health != Health::Failed
                    && !matches!(
                        self.daemons[i].last,
                        Some((_, Some(r))) if r.upstream_failures > 0
                    ) =>
                {
                    self.rejoin_after_isolation(now, peer)
                }
                _ => {}
            },
            State::Master => {
                if let ProbeResult::Master { timeline, .. } = result
                    && !self.paused
                {
                    self.split_brain(now, peer, timeline);
                }
            }
            State::WaitingForLocal { expect } => {
                // A local postgres that is alive but overloaded cannot say its role; it is the
                // master it was started (or found) as. Another master in sight is a
                // split-brain now, not once a probe gets through.
                if let ProbeResult::Master { timeline, .. } = result
                    && !self.paused
                    && matches!(self.local.last, Some((_, ProbeResult::Overloaded)))
                    && self.started_as_master(expect)
                {
                    self.split_brain(now, peer, timeline);
                }
            }
            State::Replica { upstream } if upstream == peer => {
                if self.config.topology != Topology::Ha || self.paused {
                    return;
                }
                if let ProbeResult::Replica { .. } = result {
                    // No master left. Of two replicas, the lower index promotes at once; the
                    // other counts it as a failure, so both never promote together.
                    if self.config.index < self.config.peers[i].index {
                        self.promote(now, upstream, Reason::MasterIsReplica { peer });
                        return;
                    }
                    self.peers[i].failures.record(now, result);
                }
                let failures = self.peers[i].failures;
                if (health == Health::Failed || result.is_answer())
                    && failures.count >= self.config.psql_error_count
                {
                    let reason = Reason::MasterUnreachable {
                        peer,
                        failures,
                        connect_timeout_ms: self.config.connect_timeout_ms,
                    };
                    self.promote(now, upstream, reason);
                }
            }
            State::Replica { upstream } => {
                // Star: another peer is master. Follow it when it is on a newer timeline than
                // the upstream, or the upstream is no longer a healthy master.
                if let ProbeResult::Master { timeline, .. } = result {
                    let up = self.peers[upstream.index()];
                    let up_master_tl = match up.last {
                        Some((_, ProbeResult::Master { timeline, .. }))
                            if up.failures.count == 0 =>
                        {
                            Some(timeline)
                        }
                        // Alive but too full to say: still the master this replica streams
                        // from, on its timeline, as far as anyone can tell.
                        Some((_, ProbeResult::Overloaded)) => self.local_timeline,
                        _ => None,
                    };
                    // Never a master on an older timeline than the local data: it cannot be
                    // followed.
                    let local_tl = self.local_timeline.unwrap_or(0);
                    if up_master_tl.is_none_or(|t| timeline > t) && timeline >= local_tl {
                        self.emit(CommandKind::Follow { upstream: peer });
                        self.go(
                            now,
                            State::Replica { upstream: peer },
                            Reason::NewMaster { peer, timeline },
                        );
                    } else if timeline < local_tl && !self.paused {
                        // The local data's master is gone for good (it answers as a replica,
                        // or fails as long as it takes to declare a master dead): the only
                        // master left is on an older timeline, and cannot be followed.
                        let gone = match up.last {
                            Some((_, ProbeResult::Replica { .. })) => true,
                            _ => up.failures.count >= self.config.psql_error_count,
                        };
                        if gone {
                            let reason = Reason::OrphanedTimeline {
                                peer,
                                local_timeline: local_tl,
                                peer_timeline: timeline,
                            };
                            self.step_down(
                                now,
                                AfterStop::Rejoin { from: peer },
                                StopMode::Fast,
                                reason,
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // ---- decisions ----------------------------------------------------------------------

    /// A replica on its master's timeline whose replay position stays put while the master
    /// writes on is not streaming: its history diverged from the master's on the same
    /// timeline number (two promotions from one timeline). Only progress counts, so an idle
    /// master, or a master position that jumped at a segment switch, never triggers it.
    fn check_streaming(&mut self, now: Timestamp, upstream: PeerId, replay: Lsn, master_lsn: Lsn) {
        match self.stalled {
            Some((_, r0, _)) if replay != r0 => self.stalled = None,
            Some((since, _, m0)) => {
                let stalled_ms = now.since(since);
                if master_lsn > m0
                    && stalled_ms > 2 * self.config.transition_bound_ms
                    && !self.paused
                {
                    let reason = Reason::NotStreaming {
                        peer: upstream,
                        replay_lsn: replay,
                        master_lsn,
                        stalled_ms,
                    };
                    self.step_down(
                        now,
                        AfterStop::Rejoin { from: upstream },
                        StopMode::Fast,
                        reason,
                    );
                }
            }
            None if replay < master_lsn => self.stalled = Some((now, replay, master_lsn)),
            None => {}
        }
    }

    /// A replica that stays on an older timeline than its master cannot follow it (it
    /// replayed past the fork point): after the transition bound, re-clone. PostgreSQL follows
    /// a timeline switch within a second when it can (`recovery_target_timeline = 'latest'`).
    fn check_following(&mut self, now: Timestamp) {
        let State::Replica { upstream } = self.state else {
            return;
        };
        let (local, replay) = match self.local.last {
            Some((
                _,
                ProbeResult::Replica {
                    timeline,
                    replay_lsn,
                    ..
                },
            )) => (timeline, replay_lsn),
            _ => return,
        };
        let (master, master_lsn) = match self.peers[upstream.index()].last {
            Some((_, ProbeResult::Master { timeline, lsn })) => (timeline, lsn),
            _ => return,
        };
        if local >= master {
            self.behind_since = None;
            self.check_streaming(now, upstream, replay, master_lsn);
            return;
        }
        let since = *self.behind_since.get_or_insert(now);
        let behind_ms = now.since(since);
        if behind_ms > self.config.transition_bound_ms && !self.paused {
            let reason = Reason::CannotFollow {
                peer: upstream,
                local_timeline: local,
                peer_timeline: master,
                behind_ms,
            };
            self.step_down(
                now,
                AfterStop::Rejoin { from: upstream },
                StopMode::Fast,
                reason,
            );
        }
    }

    fn on_started(&mut self, now: Timestamp, facts: LocalFacts) {
        if self.state != State::Init {
            return;
        }
        self.data = Some(facts.data_dir);
        // A daemon killed while master leaves its VIP behind, and an adopted postgres may no
        // longer be the master: drop the VIP, and take it again once the local postgres
        // answers as master (a blip of one local probe when a healthy master's daemon restarts).
        self.release_vip();
        if let DataDir::Present { timeline, .. } = facts.data_dir {
            self.local_timeline = Some(timeline);
        }
        if facts.fenced {
            if facts.postgres_running {
                self.step_down(now, AfterStop::Fence, StopMode::Fast, Reason::FencedAtStart);
            } else {
                self.go(now, State::Fenced, Reason::FencedAtStart);
            }
            return;
        }
        if facts.postgres_running {
            self.go(
                now,
                State::WaitingForLocal { expect: None },
                Reason::AdoptRunning,
            );
            return;
        }
        match facts.data_dir {
            DataDir::Empty { held_data: false } if self.config.topology == Topology::Standalone => {
                self.init_data_dir(now, Reason::Standalone);
            }
            DataDir::Empty { held_data: false } if self.config.index == 0 => {
                let deadline =
                    now.plus(self.config.connect_timeout_ms + self.config.probe_interval_ms);
                self.go(
                    now,
                    State::Discovering { deadline },
                    Reason::BootstrapDiscover { index: 0 },
                );
                self.check_peer_index();
            }
            DataDir::Empty { held_data } => {
                let reason = Reason::BootstrapWait {
                    index: self.config.index,
                    held_data,
                };
                self.go(now, State::WaitingForMaster, reason);
            }
            DataDir::Present { .. } if self.config.topology == Topology::Standalone => {
                self.start_postgres(now, StartAs::Master, Reason::Standalone);
            }
            DataDir::Present {
                timeline,
                was_master,
                ..
            } => {
                let reason = Reason::DataPresent {
                    timeline,
                    was_master,
                };
                self.elect_or_wait(now, reason);
            }
        }
    }

    /// Whether the local postgres, not yet heard from, runs as a master: started so, or found
    /// running on data whose control file said it last ran as a master.
    fn started_as_master(&self, expect: Option<StartAs>) -> bool {
        match expect {
            Some(StartAs::Master) => true,
            Some(StartAs::Replica { .. }) => false,
            None => matches!(
                self.data,
                Some(DataDir::Present {
                    was_master: true,
                    ..
                })
            ),
        }
    }

    /// A node with data and postgres stopped: elect (HA, or a star node whose data last ran as
    /// master), or wait for a master (a star replica never leads on its own).
    fn elect_or_wait(&mut self, now: Timestamp, reason: Reason) {
        let was_master = matches!(
            self.data,
            Some(DataDir::Present {
                was_master: true,
                ..
            })
        );
        match self.config.topology {
            Topology::Standalone => self.start_postgres(now, StartAs::Master, reason),
            Topology::Star if !was_master => self.go(now, State::WaitingForMaster, reason),
            _ => {
                let stagger = self
                    .config
                    .grace_stagger_ms
                    .saturating_mul(u64::from(self.config.index));
                let deadline = now.plus(self.config.grace_ms.saturating_add(stagger));
                self.go(now, State::Electing { deadline }, reason);
                self.check_peer_index();
            }
        }
    }

    /// Before this node may bootstrap or lead (discovering, electing): ask the peers' daemons
    /// for their indexes, so two nodes configured with one index say so instead of both
    /// leading. The answer is awaited but never waited for: the state's deadline decides.
    fn check_peer_index(&mut self) {
        if !self.config.peers.is_empty() {
            self.emit_awaited(CommandKind::CheckPeerIndex);
        }
    }

    /// At the end of a wait for a master (discovery, grace): a peer whose last probe found it
    /// alive but overloaded may be the master, only too full to say so. "Could not tell" is
    /// not "no master": wait one more round of probes instead of leading on local data or
    /// running initdb (either would make a second master). Returns true when it waits. One
    /// transition names the peer; later rounds for the same peer only move the deadline.
    fn wait_for_overloaded_peer(&mut self, now: Timestamp) -> bool {
        let Some(i) = self.peers[..self.config.peers.len()]
            .iter()
            .position(|s| matches!(s.last, Some((_, ProbeResult::Overloaded))))
        else {
            return false;
        };
        self.wait_one_round(
            now,
            Reason::PeerOverloaded {
                peer: PeerId(i as u8),
            },
        );
        true
    }

    /// At the end of a wait for a master (grace): a peer whose daemon reports more advanced
    /// data (a newer timeline, whatever its state; or, if it may lead, data that ran as master
    /// or is further on one timeline, the lower index breaking ties) is the one that should
    /// lead. Wait one more round of probes instead of leading on less advanced data. Returns
    /// true when it waits; `recover --force` skips it.
    fn wait_for_peer_ahead(&mut self, now: Timestamp) -> bool {
        if !matches!(self.state, State::Electing { .. }) || self.force {
            return false;
        }
        // A peer that is master or becoming one (a slow pg_promote), or a replica of this node
        // counting failed probes of it towards a promotion, is the master to find, whatever
        // its data: leading beside it would make two.
        // (A star replica never promotes by itself, whatever it counts.)
        let me = self.config.index;
        let ha = self.config.topology == Topology::Ha;
        let leading = (0..self.config.peers.len()).find(|&i| {
            matches!(self.daemons[i].last, Some((_, Some(r)))
                if r.standing == Standing::Leading
                    || (ha && r.upstream == Some(me) && r.upstream_failures > 0))
        });
        if let Some(i) = leading {
            self.wait_one_round(
                now,
                Reason::PeerLeading {
                    peer: PeerId(i as u8),
                },
            );
            return true;
        }
        let local = self.position();
        let mine = local.map(|d| (d.rank(), std::cmp::Reverse(self.config.index)));
        let ahead = (0..self.config.peers.len()).find_map(|i| {
            let (_, Some(r)) = self.daemons[i].last? else {
                return None;
            };
            let d = r.data?;
            let newer_timeline = local.is_none_or(|l| d.timeline > l.timeline);
            // A replica's data (or a copy being made) is its master's business (a replica on a
            // newer timeline than every master cannot follow and is re-cloned); any other
            // peer ahead, held ones too (fenced, stepped down with writes the replica never
            // received), must lead or be recovered first.
            let may_lead = r.standing != Standing::Following;
            let theirs = (d.rank(), std::cmp::Reverse(self.config.peers[i].index));
            let further = mine.is_none_or(|m| theirs > m);
            (may_lead && (newer_timeline || further)).then_some((PeerId(i as u8), d, r.standing))
        });
        let Some((peer, peer_data, peer_standing)) = ahead else {
            return false;
        };
        let reason = Reason::PeerAhead {
            peer,
            peer_data,
            peer_standing,
            local,
        };
        self.wait_one_round(now, reason);
        true
    }

    /// Extends a wait for a master (discovery or election) by one round of probes for
    /// `reason`, journaled once: later rounds for the same reason only move the deadline, and
    /// the wait keeps when it began (the grace reason reports it).
    fn wait_one_round(&mut self, now: Timestamp, reason: Reason) {
        let deadline = now.plus(self.config.connect_timeout_ms + self.config.probe_interval_ms);
        let to = match self.state {
            State::Discovering { .. } => State::Discovering { deadline },
            _ => State::Electing { deadline },
        };
        if self.last_transition.is_some_and(|t| t.reason == reason) {
            self.state = to;
        } else {
            let since = self.state_since;
            self.go(now, to, reason);
            self.state_since = since;
        }
    }

    /// When a master gives up on its own postgres: `master_give_up` after its last sign of
    /// life (or after it became master). A hung postmaster's backends keep committing; the
    /// replica promotes `takeover_bound` after its last answer at the earliest, and the
    /// give-up inequality (Config::validate) puts this deadline, and the kill, before it.
    fn local_give_up_at(&self) -> Option<Timestamp> {
        // Only a replica that promotes by itself races a hung master (HA topology): elsewhere
        // a stalled postgres is left to the failure count, not killed.
        if self.paused || self.config.topology != Topology::Ha {
            return None;
        }
        let applies = match self.state {
            State::Master => true,
            State::WaitingForLocal { expect } => self.started_as_master(expect),
            _ => false,
        };
        if !applies {
            return None;
        }
        let from = self
            .local
            .alive_at
            .map_or(self.state_since, |t| t.max(self.state_since));
        Some(from.plus(self.config.master_give_up_ms))
    }

    /// The last time peer `i` was heard from: its postgres or its daemon answered. Not when
    /// this node became master: the replica's takeover counts from its own last answer, which
    /// may be older (a node that leads while cut off gets no fresh allowance). Only a peer
    /// never heard from counts from the start of the current state.
    fn peer_contact(&self, i: usize) -> Timestamp {
        self.peer_heard(PeerId(i as u8)).unwrap_or(self.state_since)
    }

    /// With isolation = "fence", when this master stops serving for want of news from a peer
    /// that could promote (last seen as a replica, or becoming one): `master_give_up` after
    /// the last answer from its postgres or its daemon. A peer last seen as a master (the
    /// old master after a failover) or held cannot promote, so it never fences this one.
    fn isolation_at(&self) -> Option<(PeerId, Timestamp)> {
        // A postgres started (or adopted) as master that cannot say its role yet (too full)
        // serves its sessions as a master does.
        let serving = match self.state {
            State::Master => true,
            State::WaitingForLocal { expect } => self.started_as_master(expect),
            _ => false,
        };
        if !serving
            || self.paused
            || self.config.topology != Topology::Ha
            || self.config.isolation != Isolation::Fence
        {
            return None;
        }
        (0..self.config.peers.len())
            .filter(|&i| self.could_take_over(i))
            .map(|i| {
                (
                    PeerId(i as u8),
                    self.peer_contact(i).plus(self.config.master_give_up_ms),
                )
            })
            .min_by_key(|&(_, t)| t)
    }

    /// When the last answer from peer `i` (its postgres or its daemon) came in this run; `None`
    /// if it never answered since the daemon started.
    pub fn peer_heard(&self, peer: PeerId) -> Option<Timestamp> {
        let i = peer.index();
        match (
            self.peers.get(i)?.alive_at,
            self.daemons.get(i)?.answered_at,
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// At the end of an election with isolation = "fence": a peer that could promote (last
    /// seen as a replica, or becoming one), heard from in this run but not for
    /// `master_give_up`, may have promoted already: leading would acknowledge writes its
    /// promotion loses. The peer and how long it has been silent. (A peer never heard from
    /// since the daemon started is not counted: a lone node could never lead on its data
    /// after a restart; docs/core.md, known limits.)
    fn silent_replica(&self, now: Timestamp) -> Option<(PeerId, u64)> {
        if self.paused
            || self.force
            || self.config.topology != Topology::Ha
            || self.config.isolation != Isolation::Fence
        {
            return None;
        }
        (0..self.config.peers.len()).find_map(|i| {
            let peer = PeerId(i as u8);
            let heard = self.peer_heard(peer)?;
            let silent = now.since(heard);
            (self.could_take_over(i) && silent >= self.config.master_give_up_ms)
                .then_some((peer, silent))
        })
    }

    /// Whether this node believes `peer` could promote by itself (last seen as a replica, or
    /// becoming one): what isolation = "fence" watches.
    pub fn peer_could_promote(&self, peer: PeerId) -> bool {
        peer.index() < self.config.peers.len() && self.could_take_over(peer.index())
    }

    /// Whether peer `i` could promote by itself: last seen as a replica, or becoming one.
    fn could_take_over(&self, i: usize) -> bool {
        self.peers[i].role == Role::Replica
            || matches!(
                self.daemons[i].seen,
                Some((Role::Replica, _)) | Some((_, Standing::Following))
            )
    }

    fn on_peer_report(&mut self, now: Timestamp, peer: PeerId, report: Option<PeerReport>) {
        let slot = &mut self.daemons[peer.index()];
        slot.last = Some((now, report));
        let Some(r) = report else {
            return;
        };
        slot.answered_at = Some(now);
        slot.seen = Some((r.role, r.standing));
        let limit = self.config.psql_error_count;
        let losing_sight = r.upstream == Some(self.config.index)
            && r.upstream_failures > 0
            && r.upstream_failures + 1 >= limit;
        match self.state {
            State::Master if !self.paused => {
                // A promotion left this timeline behind, whatever the peer does now
                // (shutting down, fenced): never keep serving on it.
                // (Not a replica's: one on a newer timeline than its master cannot follow it
                // and is re-cloned; a promotion shows as leading, or as held once stopped.)
                if let (Some(local), Some(data)) = (self.local_timeline, r.data)
                    && data.timeline > local
                    && r.standing != Standing::Following
                {
                    let reason = Reason::PeerOnNewerTimeline {
                        peer,
                        peer_timeline: data.timeline,
                        local_timeline: local,
                    };
                    self.step_down(now, AfterStop::WaitForMaster, StopMode::Immediate, reason);
                } else if losing_sight
                    && self.config.topology == Topology::Ha
                    && self.config.isolation == Isolation::Fence
                {
                    // One more failed probe and the replica promotes, though this master hears
                    // it: stop now, as when it hears nothing at all.
                    let reason = Reason::ReplicaLosingSight {
                        peer,
                        failures: r.upstream_failures,
                    };
                    self.step_down(now, AfterStop::Isolate, StopMode::Immediate, reason);
                } else if losing_sight
                    && self.config.topology == Topology::Ha
                    && self.local.failures.count > 0
                {
                    // The local postgres is failing its probes too (hung?) and the replica is
                    // one failure from promoting: its run may have begun earlier than this
                    // master's silence (a lost probe), so the give-up deadline may come too
                    // late. Kill the backends now, whatever the isolation rule.
                    let reason = Reason::LocalSilent {
                        silent_ms: now.since(self.local.alive_at.unwrap_or(self.state_since)),
                        bound_ms: self.config.master_give_up_ms,
                        last: self.local.last.map(|(_, r)| r),
                    };
                    self.step_down(now, AfterStop::Elect, StopMode::Immediate, reason);
                }
            }
            // A peer that is (or becomes) master is rejoined when its postgres says so; one
            // still counting failed probes of this node may promote: stay stopped.
            State::Isolated if r.standing != Standing::Leading && r.upstream_failures == 0 => {
                self.rejoin_after_isolation(now, peer)
            }
            _ => {}
        }
    }

    /// An isolated node heard from a peer: one round of probes, as after `recover`: a master
    /// found is followed (or re-cloned), else this node leads, unless a peer is ahead.
    fn rejoin_after_isolation(&mut self, now: Timestamp, peer: PeerId) {
        let deadline = now.plus(self.config.connect_timeout_ms + self.config.probe_interval_ms);
        self.go(
            now,
            State::Electing { deadline },
            Reason::PeerReachable { peer },
        );
        self.check_peer_index();
    }

    fn grace_expired(&mut self, now: Timestamp) {
        let mut last = [None; MAX_PEERS];
        for (i, s) in self.peers[..self.config.peers.len()].iter().enumerate() {
            last[i] = s.last.map(|(_, r)| r);
        }
        let reason = Reason::GraceExpired {
            grace_ms: self.config.grace_ms,
            waited_ms: now.since(self.state_since),
            last,
        };
        self.start_postgres(now, StartAs::Master, reason);
    }

    fn master_found(&mut self, now: Timestamp, peer: PeerId, timeline: Timeline, peer_lsn: Lsn) {
        match self.data {
            Some(DataDir::Present {
                timeline: local,
                was_master,
                lsn,
            }) => {
                if !was_master && local <= timeline {
                    self.start_postgres(
                        now,
                        StartAs::Replica { upstream: peer },
                        Reason::MasterFound { peer, timeline },
                    );
                } else if was_master
                    && !self.force
                    && (timeline < local || (timeline == local && peer_lsn < lsn))
                {
                    // The master is behind data that ran as master here: a re-clone would
                    // discard writes this node acknowledged. An operator decides.
                    let reason = Reason::PeerBehind {
                        peer,
                        peer_timeline: timeline,
                        peer_lsn,
                        local: DataPosition {
                            timeline: local,
                            lsn,
                            was_master,
                        },
                    };
                    self.emit(CommandKind::Fence);
                    self.go(now, State::Fenced, reason);
                } else {
                    let reason = Reason::MustClone {
                        peer,
                        peer_timeline: timeline,
                        local: Some((local, was_master)),
                    };
                    self.clone_from(now, peer, reason);
                }
            }
            _ => self.clone_from(
                now,
                peer,
                Reason::MustClone {
                    peer,
                    peer_timeline: timeline,
                    local: None,
                },
            ),
        }
    }

    fn split_brain(&mut self, now: Timestamp, peer: PeerId, peer_timeline: Timeline) {
        // A star never promotes by itself: a second master there comes from an operator's
        // promote, on a newer timeline, so the older one always yields.
        let rule = match self.config.topology {
            Topology::Star => SplitBrainRule::OlderTimelineStepsDown,
            _ => self.config.split_brain,
        };
        let local_timeline = self.local_timeline;
        let reason = Reason::SplitBrain {
            peer,
            local_timeline,
            peer_timeline,
            rule,
        };
        let after = match (rule, local_timeline) {
            (SplitBrainRule::OlderTimelineStepsDown, Some(l)) if l < peer_timeline => {
                AfterStop::Rejoin { from: peer }
            }
            (SplitBrainRule::OlderTimelineStepsDown, Some(l)) if l > peer_timeline => return,
            // One timeline, two histories (a promotion outside pgha, or two nodes that led on
            // their own data): which holds more acknowledged writes cannot be told from here.
            // Both sides decide alike without a race: the lower index keeps serving, the other
            // stops and keeps its data for an operator.
            (SplitBrainRule::OlderTimelineStepsDown, Some(_))
                if self.config.index < self.config.peers[peer.index()].index =>
            {
                return;
            }
            // Just promoted: the new timeline is known at the next local probe; decide then.
            (SplitBrainRule::OlderTimelineStepsDown, None) => return,
            _ => AfterStop::Fence,
        };
        self.step_down(now, after, StopMode::Fast, reason);
    }

    fn promote(&mut self, now: Timestamp, upstream: PeerId, reason: Reason) {
        if self.config.proxy {
            self.emit(CommandKind::PauseProxy);
        }
        // A local probe issued before the promotion would answer "replica" after it: drop it.
        self.local.in_flight = None;
        self.go(now, State::Promoting { upstream }, reason);
        self.emit_awaited(CommandKind::Promote);
    }

    fn init_data_dir(&mut self, now: Timestamp, reason: Reason) {
        self.go(now, State::Initializing, reason);
        self.emit_awaited(CommandKind::InitDataDir);
    }

    fn clone_from(&mut self, now: Timestamp, peer: PeerId, reason: Reason) {
        self.go(now, State::Cloning { from: peer }, reason);
        self.emit_awaited(CommandKind::Basebackup { from: peer });
    }

    fn start_postgres(&mut self, now: Timestamp, target: StartAs, reason: Reason) {
        self.go(now, State::Starting { target }, reason);
        self.emit_awaited(CommandKind::StartPostgres(target));
    }

    /// Leaves the master role (or stops postgres): VIP first, then the fence marker when
    /// fencing, then the stop. The shell runs actions in this order.
    fn step_down(&mut self, now: Timestamp, then: AfterStop, mode: StopMode, reason: Reason) {
        // What the stopped data will be: a master's (which may have diverged) or a
        // replica's (which can follow); unknown keeps what was known.
        let ran_as = match (self.state, self.local.last) {
            (State::Master, _) | (_, Some((_, ProbeResult::Master { .. }))) => Some(true),
            (
                State::WaitingForLocal {
                    expect: Some(StartAs::Master),
                },
                Some((_, ProbeResult::Overloaded)),
            ) => Some(true),
            (_, Some((_, ProbeResult::Replica { .. }))) => Some(false),
            _ => None,
        };
        if let Some(DataDir::Present {
            timeline,
            lsn,
            was_master,
        }) = self.data
        {
            let timeline = self.local_timeline.unwrap_or(timeline);
            let was_master = ran_as.unwrap_or(was_master);
            // The last position the local postgres told: what elections compare.
            let lsn = match self.local.last {
                Some((_, ProbeResult::Master { lsn, .. })) => lsn,
                Some((_, ProbeResult::Replica { replay_lsn, .. })) => replay_lsn,
                _ => lsn,
            };
            self.data = Some(DataDir::Present {
                timeline,
                lsn,
                was_master,
            });
        }
        self.release_vip();
        if then == AfterStop::Fence {
            self.emit(CommandKind::Fence);
        }
        self.go(now, State::SteppingDown { then }, reason);
        self.emit_awaited(CommandKind::StopPostgres(mode));
    }

    fn become_master(&mut self) {
        self.ensure_vip();
        if self.config.proxy {
            self.emit(CommandKind::RepointProxy(ProxyTarget::Local));
            self.emit(CommandKind::ResumeProxy);
        }
    }

    fn ensure_vip(&mut self) {
        // An acquire queued behind a pending release is fine: actions run in order.
        let acquiring = matches!(self.vip_pending, Some((_, true)));
        if self.config.vip && !self.vip_held && !acquiring {
            self.vip_pending = Some((self.emit(CommandKind::AcquireVip), true));
        }
    }

    fn release_vip(&mut self) {
        if self.config.vip {
            // Released as of now: nothing of ours will claim it again until master.
            self.vip_held = false;
            self.vip_pending = Some((self.emit(CommandKind::ReleaseVip), false));
        }
    }

    fn on_command_done(
        &mut self,
        now: Timestamp,
        id: CommandId,
        outcome: Result<(), crate::Failure>,
        duration_ms: u64,
    ) {
        if let Some((pending, acquire)) = self.vip_pending
            && pending == id
        {
            self.vip_pending = None;
            // A failed acquire is retried at the next healthy local probe.
            self.vip_held = acquire && outcome.is_ok() && self.state == State::Master;
        }
        let Some((awaited, command)) = self.awaiting else {
            return;
        };
        if awaited != id {
            // Side effects (proxy, hooks, fence marker) do not change the state; the journal
            // keeps their outcome.
            return;
        }
        self.awaiting = None;
        let done = Reason::Done {
            command,
            duration_ms,
        };
        let Err(failure) = outcome else {
            match (self.state, command) {
                (State::Initializing, _) => {
                    // A fresh cluster's control file says "shut down", as a master's does.
                    self.data = Some(DataDir::Present {
                        timeline: 1,
                        lsn: crate::Lsn(0),
                        was_master: true,
                    });
                    self.start_postgres(now, StartAs::Master, done);
                }
                (State::Cloning { from }, _) => {
                    let source = self.peers[from.index()]
                        .last
                        .and_then(|(_, r)| r.timeline());
                    // The copy replaced local data: the shell set it aside under a name
                    // derived from this command's id, which the reason names.
                    let reason = match self.data {
                        Some(DataDir::Present { .. }) => Reason::Recloned {
                            from,
                            duration_ms,
                            set_aside: id,
                        },
                        _ => done,
                    };
                    self.data = Some(DataDir::Present {
                        timeline: source.unwrap_or(1),
                        lsn: crate::Lsn(0),
                        was_master: false,
                    });
                    // The copy is on its source's timeline; unknown (not the old data's) when
                    // the source's last probe could not say, e.g. it was full, until the local
                    // postgres answers.
                    self.local_timeline = source;
                    // What the old postgres last said is not this data's.
                    self.local.last = None;
                    self.start_postgres(now, StartAs::Replica { upstream: from }, reason);
                }
                (State::Starting { target }, _) => self.go(
                    now,
                    State::WaitingForLocal {
                        expect: Some(target),
                    },
                    done,
                ),
                (State::Promoting { .. }, _) => {
                    // The promotion started a new timeline, unknown until the next local probe:
                    // probe now, so health checks (HAProxy's /primary) see the new master at
                    // once rather than one probe interval later.
                    // What peers are told meanwhile: data on a newer timeline (at least the
                    // next one; the next local probe says which) that runs as master.
                    if let Some(DataDir::Present { timeline, lsn, .. }) = self.data {
                        let old = self.local_timeline.unwrap_or(timeline).max(timeline);
                        self.data = Some(DataDir::Present {
                            timeline: old + 1,
                            lsn,
                            was_master: true,
                        });
                    }
                    self.local.last = None;
                    self.local_timeline = None;
                    self.local.next_due = now;
                    self.go(now, State::Master, done);
                    self.become_master();
                }
                (State::SteppingDown { then }, _) => match then {
                    AfterStop::Fence => self.go(now, State::Fenced, done),
                    AfterStop::Rejoin { from } => self.clone_from(now, from, done),
                    AfterStop::Elect => self.elect_or_wait(now, done),
                    AfterStop::WaitForMaster => self.go(now, State::SteppedDown, done),
                    AfterStop::Isolate => self.go(now, State::Isolated, done),
                },
                _ => {}
            }
            return;
        };
        // Refusals that protect data pgha cannot prove is its own, or that reveal a
        // configuration mistake: halt, doing nothing destructive, until an operator acts.
        let halt = match (failure, self.state) {
            (crate::Failure::ForeignCluster { local, source }, State::Cloning { from }) => {
                Some(Reason::ForeignCluster {
                    peer: from,
                    local_sysid: local,
                    peer_sysid: source,
                })
            }
            (crate::Failure::ForeignFiles, _) => Some(Reason::ForeignFiles { command }),
            (crate::Failure::SameIndex { peer }, _) => Some(Reason::SameIndex {
                peer,
                index: self.config.index,
            }),
            _ => None,
        };
        if let Some(reason) = halt {
            self.go(now, State::Halted, reason);
            return;
        }
        if command == CommandKind::CheckPeerIndex {
            // Could not tell (a peer unreachable): the state's deadline decides as before.
            return;
        }
        let failed = Reason::CommandFailed { command, failure };
        match self.state {
            // Retried after a pause; a failed initdb leaves no data behind.
            State::Initializing | State::SteppingDown { .. } => {
                self.go(now, self.state, failed);
                self.retry_at = Some(now.plus(self.backoff_ms(now)));
            }
            // The old data dir is intact: look for a master again, after a pause.
            State::Cloning { .. } => {
                match self.data {
                    Some(DataDir::Present { .. }) => self.elect_or_wait(now, failed),
                    _ => self.go(now, State::WaitingForMaster, failed),
                }
                self.retry_at = Some(now.plus(self.retry_ms()));
            }
            State::Starting {
                target: StartAs::Replica { upstream },
            } => {
                // The local data could not follow: clone.
                self.clone_from(now, upstream, failed);
            }
            State::Starting {
                target: StartAs::Master,
            } => {
                self.elect_or_wait(now, failed);
            }
            State::Promoting { upstream } => self.go(now, State::Replica { upstream }, failed),
            _ => {}
        }
    }

    fn retry_ms(&self) -> u64 {
        self.config.probe_interval_ms.max(1000)
    }

    /// The pause before retrying a failed action of a state that keeps retrying it (initdb, a
    /// stop): as long as the state has already lasted, at least [`Node::retry_ms`], at most
    /// a cap (60 s; 10 s for a stop, which may be ending a split-brain). The pauses double,
    /// so a failure that repeats forever costs a few journal rows a minute, not a second.
    fn backoff_ms(&self, now: Timestamp) -> u64 {
        let cap = match self.state {
            State::SteppingDown { .. } => 10_000,
            _ => 60_000,
        };
        now.since(self.state_since)
            .clamp(self.retry_ms(), cap.max(self.retry_ms()))
    }

    /// Re-issues the action that failed; the other retries are gates checked where they apply.
    fn retry(&mut self) {
        match self.state {
            State::Initializing if self.awaiting.is_none() => {
                self.emit_awaited(CommandKind::InitDataDir)
            }
            State::SteppingDown {
                then: AfterStop::WaitForMaster,
            } if self.awaiting.is_none() => {
                // A switchover stops in fast mode only: an immediate stop would not wait for
                // the standby to receive the last WAL.
                self.emit_awaited(CommandKind::StopPostgres(StopMode::Fast));
            }
            State::SteppingDown { .. } if self.awaiting.is_none() => {
                self.emit_awaited(CommandKind::StopPostgres(StopMode::Immediate));
            }
            _ => {}
        }
    }

    fn on_operator(&mut self, now: Timestamp, request: OperatorRequest) {
        let reason = Reason::Operator { request };
        match (request, self.state) {
            (OperatorRequest::Recover | OperatorRequest::ForceRecover, State::Fenced) => {
                self.force = request == OperatorRequest::ForceRecover;
                self.emit(CommandKind::Unfence);
                // One round of probes: a master found is followed, else this node leads.
                let deadline =
                    now.plus(self.config.connect_timeout_ms + self.config.probe_interval_ms);
                self.go(now, State::Electing { deadline }, reason);
            }
            (
                OperatorRequest::Recover | OperatorRequest::ForceRecover,
                State::SteppedDown | State::Isolated,
            ) => {
                self.force = request == OperatorRequest::ForceRecover;
                // As after a fence: one round of probes, a master found is followed, else
                // this node leads.
                let deadline =
                    now.plus(self.config.connect_timeout_ms + self.config.probe_interval_ms);
                self.go(now, State::Electing { deadline }, reason);
            }
            (OperatorRequest::Promote, State::Replica { upstream }) => {
                // Never a second master beside a healthy one: that is a race the split-brain
                // rule would settle by stopping one of them, maybe with acknowledged writes.
                let slot = &self.peers[upstream.index()];
                match slot.last {
                    Some((_, ProbeResult::Master { timeline, .. })) if slot.failures.count == 0 => {
                        let refused = Reason::PromoteRefusedMasterHealthy {
                            peer: upstream,
                            timeline,
                        };
                        self.go(now, self.state, refused);
                    }
                    _ => self.promote(now, upstream, reason),
                }
            }
            (OperatorRequest::StepDown, State::Master) => {
                let n = self.config.peers.len();
                let replica = self.peers[..n].iter().any(|s| {
                    matches!(s.last, Some((_, ProbeResult::Replica { .. })))
                        && s.failures.count == 0
                });
                if replica {
                    // Fast mode: postgres ends the sessions, writes a shutdown checkpoint and
                    // waits until its walsenders shipped all WAL to the connected standby.
                    self.step_down(now, AfterStop::WaitForMaster, StopMode::Fast, reason);
                } else {
                    self.go(now, State::Master, Reason::StepDownRefusedNoReplica);
                }
            }
            (OperatorRequest::Pause, s) => {
                self.paused = true;
                self.go(now, s, reason);
            }
            (OperatorRequest::Resume, s) => {
                self.paused = false;
                self.go(now, s, reason);
            }
            (_, s) => self.go(now, s, Reason::OperatorRefused { request }),
        }
    }
}
