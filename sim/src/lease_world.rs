//! The lease simulation (issue 13): three to five real [`pgha_core::lease::Lease`] machines
//! against the modelled etcd ([`crate::etcd`]), on a virtual clock, with fault injection and
//! the invariants checked after every step. One seed decides everything.
//!
//! Time: the simulator's clock is "true" time, and etcd's (leases are timed on it). Each
//! node's clock runs at its own rate, `1 + ppm / 10^6` with `|ppm| <= ρ`, from its own
//! offset; the lease is called with the node's clock. The safety argument assumes
//! `margin >= stop + (TTL − margin) × ρ / (1 − ρ)`: the scenarios draw
//! `ρ = margin / (4 × TTL)` and a stop time (from `MustStopWriting` to the last write) of up to
//! `margin / 2`.
//!
//! A node writes ([`LeaseWorld::writing`]) from `MayLead` until the stop it was told of has
//! taken effect (a draw in `0..=margin/2` after `MustStopWriting`), or until it stopped on its
//! own before a `Release` or `Shutdown`. A crash is the host's (postgres with it: no writes
//! after it); a pause freezes the whole host (no writes, no reaction) and on resume the
//! daemon first handles what queued up, then its timers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use pgha_core::Timestamp;
use pgha_core::lease::{
    EtcdFault, EtcdReply, LeaderKey, Lease, LeaseCommand, LeaseConfig, LeaseDecision, LeaseEvent,
    LeaseOp, LeaseOutput, Name, RequestId,
};

use crate::etcd::Etcd;
use crate::rng::Rng;

const SEC: u64 = 1000;

/// A fault of the lease simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseFault {
    /// The link between node `i` and etcd is cut (both ways).
    Cut(usize),
    Heal(usize),
    /// Every message between a node and etcd is lost with this chance (percent).
    Loss(u8),
    /// Node `i`'s host dies (daemon and postgres).
    Crash(usize),
    /// Node `i` starts again with a fresh lease.
    Restart(usize),
    /// Node `i` stops writing, then shuts down (revoking its lease), then is down.
    Shutdown(usize),
    /// Node `i`'s host freezes for this long (a GC-like or VM pause).
    Pause(usize, u64),
    /// etcd loses its leader; the election takes this long.
    EtcdElection(u64),
    /// Node `i` is (or is not) the eligible candidate.
    Candidate(usize, bool),
    /// Node `i` steps down: stops writing, then releases the key.
    StepDown(usize),
}

/// What a seed simulates.
#[derive(Clone, Debug)]
pub struct LeaseScenario {
    pub nodes: usize,
    pub config: LeaseConfig,
    /// The longest time from `MustStopWriting` to the last write.
    pub stop_max_ms: u64,
    /// Each node's clock rate offset, parts per million, and its clock's reading at time 0.
    pub ppm: Vec<i64>,
    pub offset: Vec<u64>,
    /// The chance, percent, that a message is held up for up to twice `retry_timeout`.
    pub slow_pct: u64,
    pub faults: Vec<(u64, LeaseFault)>,
    pub faults_end: u64,
    /// A request a crashed run sent still reaches etcd (and is applied) when it arrives: off
    /// in the sweep, see docs/simulator.md ("What the lease simulation found").
    pub ghosts: bool,
}

/// The timings a seed draws from: (ttl, loop_wait, retry_timeout, margin) in seconds.
const TIMINGS: [(u64, u64, u64, u64); 3] = [(10, 2, 3, 1), (30, 10, 10, 2), (6, 1, 2, 1)];

/// Draws a seed's scenario.
pub fn lease_scenario(rng: &mut Rng) -> LeaseScenario {
    let nodes = rng.range(3, 5) as usize;
    let (ttl, loop_wait, retry, margin) = rng.pick(&TIMINGS);
    let config = LeaseConfig {
        ttl_ms: ttl * SEC,
        loop_wait_ms: loop_wait * SEC,
        retry_timeout_ms: retry * SEC,
        margin_ms: margin * SEC,
    };
    let rho = drift_bound_ppm(&config);
    let drift = rng.chance(0.7);
    let ppm = (0..nodes)
        .map(|_| {
            if drift {
                rng.range(0, 2 * rho) as i64 - rho as i64
            } else {
                0
            }
        })
        .collect();
    let offset = (0..nodes).map(|_| rng.range(0, 1_000_000)).collect();
    let faults_end = rng.range(30, 120) * SEC;
    let n = rng.range(3, 25);
    let mut faults = Vec::new();
    for _ in 0..n {
        let at = rng.range(0, faults_end);
        let i = rng.range(0, nodes as u64 - 1) as usize;
        let f = match rng.range(0, 9) {
            0 | 1 => {
                let heal = (at + rng.range(100, 3 * config.ttl_ms)).min(faults_end);
                faults.push((heal, LeaseFault::Heal(i)));
                LeaseFault::Cut(i)
            }
            2 => LeaseFault::Loss(rng.pick(&[0, 5, 20, 50])),
            3 => {
                let back = (at + rng.range(100, 2 * config.ttl_ms)).min(faults_end);
                faults.push((back, LeaseFault::Restart(i)));
                LeaseFault::Crash(i)
            }
            4 => {
                let back = (at + rng.range(1000, 2 * config.ttl_ms)).min(faults_end);
                faults.push((back, LeaseFault::Restart(i)));
                LeaseFault::Shutdown(i)
            }
            5 => LeaseFault::Pause(i, rng.range(50, 2 * config.ttl_ms)),
            6 => LeaseFault::EtcdElection(rng.range(100, 3000)),
            7 => LeaseFault::Candidate(i, rng.chance(0.5)),
            8 => LeaseFault::StepDown(i),
            _ => LeaseFault::Candidate(i, true),
        };
        faults.push((at, f));
    }
    faults.sort_by_key(|f| f.0);
    LeaseScenario {
        nodes,
        config,
        stop_max_ms: config.margin_ms / 2,
        ppm,
        offset,
        slow_pct: rng.pick(&[0, 2, 10]),
        faults,
        faults_end,
        ghosts: false,
    }
}

/// ρ, the clocks' rate bound the scenarios keep within (parts per million): `margin / (4 ×
/// TTL)`, so that `(TTL − margin) × ρ / (1 − ρ) <= margin / 4`.
pub fn drift_bound_ppm(c: &LeaseConfig) -> u64 {
    c.margin_ms * 1_000_000 / (4 * c.ttl_ms)
}

/// How long after the faults end one node must lead: the old key may live a TTL past its
/// last keepalive (two, when an election at the end extends it), then a round to see it
/// gone, a retry, and the race.
pub fn lease_settle_ms(c: &LeaseConfig) -> u64 {
    3 * c.ttl_ms + 4 * c.loop_wait_ms + 4 * c.retry_timeout_ms + 5 * SEC
}

#[derive(Clone, Copy, Debug)]
enum Ev {
    /// A request reaches etcd.
    ToEtcd {
        node: usize,
        inc: u32,
        id: RequestId,
        op: LeaseOp,
    },
    /// An input reaches a node's daemon.
    ToNode {
        node: usize,
        inc: u32,
        event: LeaseEvent,
    },
    Fault(LeaseFault),
    ElectionEnd,
    /// Another key of the cluster is written.
    Bump,
}

/// What a node does once its stop has taken effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Then {
    Nothing,
    Release,
    Shutdown,
}

#[derive(Debug)]
pub struct LeaseNode {
    pub name: Name,
    /// `None`: down.
    pub lease: Option<Lease>,
    inc: u32,
    ppm: i64,
    offset: u64,
    pub cut: bool,
    pub paused_until: Option<u64>,
    inbox: Vec<LeaseEvent>,
    candidate: bool,
    /// Told to stop (or stopping on its own): writes until then.
    stop_at: Option<u64>,
    then: Then,
    /// Stopped writing on its own, the lease not told yet or told (Release, Shutdown).
    quiesced: bool,
    /// A down time after a shutdown.
    down_at: Option<u64>,
    /// True send times of requests awaiting an answer.
    sent: Vec<(RequestId, u64)>,
    /// The latest true send time + granted TTL among the renewals this run heard succeed.
    pub confirmed_until: u64,
    /// It thawed from a freeze past its deadline: the writes of its stop window are the
    /// freeze's (conceded, counted), not the lease's.
    thawed_late: bool,
}

/// One line of the trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTraceLine {
    pub at: u64,
    pub text: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseStats {
    pub steps: u64,
    pub requests: u64,
    pub leads: u64,
    pub stops: u64,
    pub late_replies: u64,
    pub elections: u64,
    /// Hosts that thawed from a freeze past their deadline while writing (conceded).
    pub thawed_late: u64,
    /// From the heal to the moment one node led for good, as every node saw it.
    pub settle_ms: u64,
}

/// The lease world.
#[derive(Debug)]
pub struct LeaseWorld {
    pub now: u64,
    pub sc: LeaseScenario,
    pub nodes: Vec<LeaseNode>,
    pub etcd: Etcd,
    rng: Rng,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    events: Vec<Option<Ev>>,
    /// Requests held by an election, processed at its end in arrival order.
    held: Vec<Ev>,
    loss: u8,
    /// The chance (percent) a message is held up; the scenario's until the heal.
    slow_pct: u64,
    record: bool,
    pub trace: Vec<LeaseTraceLine>,
    pub violations: Vec<(u64, String)>,
    pub stats: LeaseStats,
    heal_at: Option<u64>,
    /// Since when one node leads as everyone sees it (after the heal).
    settled_at: Option<u64>,
}

impl LeaseWorld {
    pub fn new(sc: LeaseScenario, rng: Rng, record: bool) -> LeaseWorld {
        let nodes = (0..sc.nodes)
            .map(|i| LeaseNode {
                name: Name::new(&format!("db{i}")).unwrap(),
                lease: None,
                inc: 0,
                ppm: sc.ppm[i],
                offset: sc.offset[i],
                cut: false,
                paused_until: None,
                inbox: Vec::new(),
                candidate: true,
                stop_at: None,
                then: Then::Nothing,
                quiesced: false,
                down_at: None,
                sent: Vec::new(),
                confirmed_until: 0,
                thawed_late: false,
            })
            .collect();
        let mut w = LeaseWorld {
            now: 0,
            sc,
            nodes,
            etcd: Etcd::new(),
            rng,
            heap: BinaryHeap::new(),
            events: Vec::new(),
            held: Vec::new(),
            loss: 0,
            slow_pct: 0,
            record,
            trace: Vec::new(),
            violations: Vec::new(),
            stats: LeaseStats::default(),
            heal_at: None,
            settled_at: None,
        };
        for (at, f) in w.sc.faults.clone() {
            w.push(at, Ev::Fault(f));
        }
        w.slow_pct = w.sc.slow_pct;
        let at = w.rng.range(500, 3000);
        w.push(at, Ev::Bump);
        for i in 0..w.nodes.len() {
            w.restart(i);
        }
        w
    }

    fn push(&mut self, at: u64, ev: Ev) {
        let seq = self.events.len() as u64;
        self.events.push(Some(ev));
        self.heap.push(Reverse((at, seq)));
    }

    fn note(&mut self, text: impl FnOnce() -> String) {
        if self.record {
            let at = self.now;
            self.trace.push(LeaseTraceLine { at, text: text() });
        }
    }

    /// Node `i`'s clock at true time `t`.
    fn local(&self, i: usize, t: u64) -> u64 {
        let n = &self.nodes[i];
        let scaled = (t as i128 * (1_000_000 + n.ppm as i128)) / 1_000_000;
        n.offset + scaled as u64
    }

    /// The first true time at or after now at which node `i`'s clock reads `local`.
    fn true_at(&self, i: usize, local: u64) -> u64 {
        let n = &self.nodes[i];
        let l = local.saturating_sub(n.offset) as i128;
        let mut t = ((l * 1_000_000) / (1_000_000 + n.ppm as i128)) as u64;
        t = t.max(self.now);
        while self.local(i, t) < local {
            t += 1;
        }
        t
    }

    /// Whether node `i`'s postgres accepts writes now.
    pub fn writing(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        let Some(lease) = &n.lease else { return false };
        if n.paused_until.is_some() {
            return false;
        }
        (lease.may_write() && !n.quiesced) || n.stop_at.is_some_and(|s| self.now < s)
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].lease.is_some() && self.nodes[i].down_at.is_none_or(|d| d > self.now)
    }

    // ---- the node's daemon ----

    fn restart(&mut self, i: usize) {
        let config = self.sc.config;
        let n = &mut self.nodes[i];
        n.inc += 1;
        n.lease = Some(Lease::new(config, n.name));
        n.paused_until = None;
        n.inbox.clear();
        n.stop_at = None;
        n.then = Then::Nothing;
        n.quiesced = false;
        n.down_at = None;
        n.sent.clear();
        n.confirmed_until = 0;
        n.thawed_late = false;
        let candidate = n.candidate;
        self.note(|| format!("db{i} starts"));
        self.input(i, LeaseEvent::Start);
        self.input(i, LeaseEvent::Candidate(candidate));
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.lease = None;
        n.inc += 1;
        n.paused_until = None;
        n.inbox.clear();
        n.stop_at = None;
        n.down_at = None;
    }

    /// One input to node `i`'s lease, its outputs carried out.
    fn input(&mut self, i: usize, event: LeaseEvent) {
        let local = self.local(i, self.now);
        let Some(lease) = self.nodes[i].lease.as_mut() else {
            return;
        };
        lease.handle(Timestamp(local), event);
        self.note(|| format!("db{i} <- {event:?}"));
        self.drain(i, Some(event));
    }

    fn timeout(&mut self, i: usize) {
        let local = self.local(i, self.now);
        let Some(lease) = self.nodes[i].lease.as_mut() else {
            return;
        };
        lease.handle_timeout(Timestamp(local));
        self.drain(i, None);
    }

    fn drain(&mut self, i: usize, event: Option<LeaseEvent>) {
        // The renewal this input confirmed, by its true send time.
        if let Some(LeaseEvent::Reply { id, reply }) = event {
            let n = &mut self.nodes[i];
            let sent = n
                .sent
                .iter()
                .position(|s| s.0 == id)
                .map(|p| n.sent.remove(p));
            let current = n.lease.as_ref().and_then(|l| l.lease_id());
            let ttl = match reply {
                EtcdReply::Alive { ttl_ms } => Some(ttl_ms),
                EtcdReply::Granted { lease, ttl_ms } if current == Some(lease) => Some(ttl_ms),
                _ => None,
            };
            if let (Some((_, at)), Some(ttl)) = (sent, ttl) {
                n.confirmed_until = n.confirmed_until.max(at + ttl);
            }
        }
        while let Some(out) = self.nodes[i].lease.as_mut().and_then(|l| l.poll_output()) {
            match out {
                LeaseOutput::Command(c) => self.send(i, c),
                LeaseOutput::Decision(d) => {
                    self.note(|| format!("db{i} decides {d:?}"));
                    match d {
                        LeaseDecision::MayLead { .. } => {
                            self.stats.leads += 1;
                            let n = &mut self.nodes[i];
                            n.stop_at = None;
                            n.thawed_late = false;
                            n.quiesced = false;
                            n.then = Then::Nothing;
                        }
                        LeaseDecision::MustStopWriting { .. } => {
                            self.stats.stops += 1;
                            let stop = self.rng.range(0, self.sc.stop_max_ms);
                            let now = self.now;
                            let n = &mut self.nodes[i];
                            if !n.quiesced {
                                let at = now + stop;
                                n.stop_at =
                                    Some(n.stop_at.filter(|&s| s > now).map_or(at, |s| s.min(at)));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    // ---- the network between the nodes and etcd ----

    fn lost(&mut self, i: usize) -> bool {
        self.nodes[i].cut || (self.loss > 0 && self.rng.range(1, 100) <= u64::from(self.loss))
    }

    fn delay(&mut self) -> u64 {
        if self.slow_pct > 0 && self.rng.range(1, 100) <= self.slow_pct {
            self.rng.range(1, 2 * self.sc.config.retry_timeout_ms)
        } else {
            self.rng.range(1, 20)
        }
    }

    fn send(&mut self, i: usize, c: LeaseCommand) {
        self.stats.requests += 1;
        self.note(|| format!("db{i} -> #{} {:?}", c.id.0, c.op));
        let now = self.now;
        let inc = self.nodes[i].inc;
        let n = &mut self.nodes[i];
        n.sent.push((c.id, now));
        if n.sent.len() > 64 {
            n.sent.remove(0);
        }
        if self.lost(i) {
            // Sometimes the shell hears at once that no endpoint answers.
            if self.nodes[i].cut && self.rng.chance(0.3) {
                let d = self.rng.range(1, self.sc.config.retry_timeout_ms);
                let event = LeaseEvent::Reply {
                    id: c.id,
                    reply: EtcdReply::Error(EtcdFault::Unreachable),
                };
                self.push(
                    now + d,
                    Ev::ToNode {
                        node: i,
                        inc,
                        event,
                    },
                );
            }
            return;
        }
        let d = self.delay();
        self.push(
            now + d,
            Ev::ToEtcd {
                node: i,
                inc,
                id: c.id,
                op: c.op,
            },
        );
    }

    /// An answer (or watch event) from etcd to node `i`'s run `inc`.
    fn answer(&mut self, i: usize, inc: u32, event: LeaseEvent) {
        if self.lost(i) {
            return;
        }
        let d = self.delay();
        let now = self.now;
        self.push(
            now + d,
            Ev::ToNode {
                node: i,
                inc,
                event,
            },
        );
    }

    fn at_etcd(&mut self, ev: Ev) {
        let Ev::ToEtcd { node, inc, id, op } = ev else {
            return;
        };
        if !self.sc.ghosts && self.nodes[node].inc != inc {
            // The run that sent it is gone: its connection with it.
            return;
        }
        if self.etcd.electing() {
            match self.rng.range(0, 3) {
                0 | 1 => self.held.push(ev),
                2 => {
                    let event = LeaseEvent::Reply {
                        id,
                        reply: EtcdReply::Error(EtcdFault::StaleTerm),
                    };
                    self.answer(node, inc, event);
                }
                _ => {}
            }
            return;
        }
        let name = self.nodes[node].name;
        let reply = self.etcd.answer(self.now, name, op);
        self.note(|| format!("etcd: db{node} #{} {op:?} -> {reply:?}", id.0));
        self.answer(node, inc, LeaseEvent::Reply { id, reply });
        self.watch();
    }

    /// Every watcher hears of a change of the key.
    fn watch(&mut self) {
        if !self.etcd.take_changed() {
            return;
        }
        let view = self.etcd.view();
        for i in 0..self.nodes.len() {
            if self.nodes[i].lease.is_some() {
                let inc = self.nodes[i].inc;
                self.answer(i, inc, LeaseEvent::Watched(view));
            }
        }
    }

    fn at_node(&mut self, i: usize, inc: u32, event: LeaseEvent) {
        if self.nodes[i].inc != inc || !self.up(i) {
            return;
        }
        if let LeaseEvent::Reply { id, .. } = event {
            let local = self.local(i, self.now);
            let late = self.nodes[i].sent.iter().any(|&(s, at)| {
                s == id && local >= self.local(i, at) + self.sc.config.retry_timeout_ms
            });
            if late {
                self.stats.late_replies += 1;
            }
        }
        if self.nodes[i].paused_until.is_some() {
            self.nodes[i].inbox.push(event);
        } else {
            self.input(i, event);
        }
    }

    // ---- faults ----

    fn fault(&mut self, f: LeaseFault) {
        self.note(|| format!("FAULT {f:?}"));
        match f {
            LeaseFault::Cut(i) => self.nodes[i].cut = true,
            LeaseFault::Heal(i) => self.nodes[i].cut = false,
            LeaseFault::Loss(pct) => self.loss = pct,
            LeaseFault::Crash(i) => self.crash(i),
            LeaseFault::Restart(i) => {
                if !self.up(i) {
                    self.crash(i);
                    self.restart(i);
                }
            }
            LeaseFault::Shutdown(i) | LeaseFault::StepDown(i) => {
                let n = &self.nodes[i];
                if n.lease.is_none() || n.paused_until.is_some() || n.then != Then::Nothing {
                    return;
                }
                let then = if matches!(f, LeaseFault::Shutdown(_)) {
                    Then::Shutdown
                } else {
                    Then::Release
                };
                let writing = self.writing(i);
                if !writing && then == Then::Release {
                    return;
                }
                // A node that does not write has nothing to stop.
                let stop = if writing {
                    self.rng.range(0, self.sc.stop_max_ms)
                } else {
                    0
                };
                let now = self.now;
                let n = &mut self.nodes[i];
                n.then = then;
                if n.stop_at.is_none_or(|s| s <= now) {
                    n.stop_at = Some(now + stop);
                }
            }
            LeaseFault::Pause(i, d) => {
                if self.nodes[i].lease.is_some() && self.nodes[i].paused_until.is_none() {
                    self.nodes[i].paused_until = Some(self.now + d);
                }
            }
            LeaseFault::EtcdElection(d) => {
                self.stats.elections += 1;
                let until = self.now + d;
                self.etcd.start_election(until);
                self.push(until, Ev::ElectionEnd);
            }
            LeaseFault::Candidate(i, c) => {
                self.nodes[i].candidate = c;
                if self.nodes[i].paused_until.is_none() {
                    self.input(i, LeaseEvent::Candidate(c));
                }
            }
        }
    }

    fn resume(&mut self, i: usize) {
        let local = self.local(i, self.now);
        let late = self.nodes[i]
            .lease
            .as_ref()
            .is_some_and(|l| l.may_write() && local >= l.deadline().as_millis());
        if late && !self.nodes[i].quiesced {
            self.stats.thawed_late += 1;
            self.nodes[i].thawed_late = true;
        }
        self.nodes[i].paused_until = None;
        self.note(|| format!("db{i} resumes"));
        for event in std::mem::take(&mut self.nodes[i].inbox) {
            self.input(i, event);
        }
        let c = self.nodes[i].candidate;
        self.input(i, LeaseEvent::Candidate(c));
        self.timeout(i);
    }

    /// A node's own stop took effect: it tells its lease what follows.
    fn stopped(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        n.stop_at = None;
        n.thawed_late = false;
        let then = std::mem::replace(&mut n.then, Then::Nothing);
        match then {
            Then::Nothing => {}
            Then::Release => {
                n.quiesced = true;
                n.candidate = false;
                self.input(i, LeaseEvent::Release);
            }
            Then::Shutdown => {
                n.quiesced = true;
                n.down_at = Some(now + 100);
                self.input(i, LeaseEvent::Shutdown);
            }
        }
    }

    /// Ends every fault: links healed, no loss, every node up, awake and a candidate.
    pub fn heal_all(&mut self) {
        self.note(|| "HEAL everything".to_string());
        self.heal_at = Some(self.now);
        self.loss = 0;
        self.slow_pct = 0;
        for i in 0..self.nodes.len() {
            self.nodes[i].cut = false;
            if self.nodes[i].paused_until.is_some() {
                self.resume(i);
            }
            // A node shutting down is down, then started again.
            if !self.up(i)
                || self.nodes[i].down_at.is_some()
                || self.nodes[i].then == Then::Shutdown
            {
                self.crash(i);
                self.nodes[i].candidate = true;
                self.restart(i);
            } else if !self.nodes[i].candidate {
                self.nodes[i].candidate = true;
                self.input(i, LeaseEvent::Candidate(true));
            }
        }
        self.check();
    }

    // ---- the driver ----

    /// The next thing due: (time, class, node) with classes in the order they act at one
    /// instant: a stop taking effect, a shutdown host going down, a pause ending, a node's
    /// timer, a lease expiring, then the queue (deliveries, faults).
    fn next(&self) -> Option<(u64, u8, usize)> {
        let mut best: Option<(u64, u8, usize)> = None;
        let mut consider = |c: (u64, u8, usize)| {
            if best.is_none_or(|b| c < b) {
                best = Some(c);
            }
        };
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(lease) = &n.lease else { continue };
            // A frozen host does nothing until it thaws.
            if let Some(p) = n.paused_until {
                consider((p.max(self.now), 2, i));
                continue;
            }
            if let Some(s) = n.stop_at {
                consider((s.max(self.now), 0, i));
            }
            if let Some(d) = n.down_at {
                consider((d.max(self.now), 1, i));
                continue;
            }
            if let Some(t) = lease.poll_timeout() {
                consider((self.true_at(i, t.as_millis()), 3, i));
            }
        }
        if let Some(e) = self.etcd.next_expiry() {
            consider((e.max(self.now), 4, 0));
        }
        if let Some(Reverse((at, _))) = self.heap.peek() {
            consider((*at, 5, 0));
        }
        best
    }

    /// Runs until `until` (true time), checking the invariants after every step.
    pub fn run_until(&mut self, until: u64) {
        while self.violations.is_empty() {
            let Some((at, class, i)) = self.next() else {
                break;
            };
            if at > until {
                break;
            }
            self.now = at;
            self.stats.steps += 1;
            match class {
                0 => self.stopped(i),
                1 => {
                    self.note(|| format!("db{i} is down"));
                    self.crash(i);
                }
                2 => self.resume(i),
                3 => self.timeout(i),
                4 => {
                    self.etcd.expire(at);
                    self.note(|| "etcd: a lease expires".to_string());
                    self.watch();
                }
                _ => {
                    let Some(Reverse((_, seq))) = self.heap.pop() else {
                        break;
                    };
                    let Some(ev) = self.events[seq as usize].take() else {
                        continue;
                    };
                    match ev {
                        Ev::ToEtcd { .. } => self.at_etcd(ev),
                        Ev::ToNode { node, inc, event } => self.at_node(node, inc, event),
                        Ev::Fault(f) => self.fault(f),
                        Ev::ElectionEnd => {
                            if self.etcd.electing_until.is_some_and(|u| u <= at) {
                                self.etcd.end_election(at);
                                self.note(|| "etcd: a new leader, every lease renewed".into());
                                for ev in std::mem::take(&mut self.held) {
                                    self.at_etcd(ev);
                                }
                            }
                        }
                        Ev::Bump => {
                            self.etcd.bump();
                            let next = at + self.rng.range(500, 3000);
                            self.push(next, Ev::Bump);
                        }
                    }
                }
            }
            if self.stats.steps > 2_000_000 {
                self.violations.push((at, "no progress".into()));
            }
            self.check();
        }
        self.now = self.now.max(until);
    }

    /// The invariants, after every step: (a) a node that writes holds etcd's key (so at most
    /// one writes); (b) it writes only before its last confirmed renewal's true send time +
    /// the granted TTL.
    fn check(&mut self) {
        let now = self.now;
        if self.heal_at.is_some() {
            if !self.one_leader() {
                self.settled_at = None;
            } else if self.settled_at.is_none() {
                self.settled_at = Some(now);
            }
        }
        let holder = self.etcd.holder();
        for i in 0..self.nodes.len() {
            if !self.writing(i) {
                continue;
            }
            let n = &self.nodes[i];
            if n.thawed_late && !n.lease.as_ref().is_some_and(|l| l.may_write()) {
                continue; // conceded: the host froze past its deadline
            }
            if holder != Some(n.name) {
                let what = format!(
                    "(a) db{i} writes while etcd's leader key is {:?} (writing: {:?})",
                    self.etcd.view(),
                    (0..self.nodes.len())
                        .filter(|&j| self.writing(j))
                        .collect::<Vec<_>>()
                );
                self.violations.push((now, what));
                return;
            }
            if now >= n.confirmed_until {
                let what = format!(
                    "(b) db{i} writes at {now} ms, not before its last confirmed renewal's send time + TTL = {} ms",
                    n.confirmed_until
                );
                self.violations.push((now, what));
                return;
            }
        }
    }

    /// Exactly one node writes, it holds the key, and every other node sees it as the leader.
    fn one_leader(&self) -> bool {
        let mut writers = (0..self.nodes.len()).filter(|&i| self.writing(i));
        let (Some(w), None) = (writers.next(), writers.next()) else {
            return false;
        };
        let name = self.nodes[w].name;
        self.etcd.holder() == Some(name)
            && self.nodes.iter().enumerate().all(|(j, n)| {
                j == w
                    || n.lease.as_ref().and_then(|l| l.key()).is_some_and(
                        |k| matches!(k, LeaderKey::Held { holder, .. } if holder == name),
                    )
            })
    }

    /// (c) After the faults healed, within `settle`: one node leads ([`Self::one_leader`]).
    pub fn check_liveness(&mut self, settle: u64) {
        let writers: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.writing(i)).collect();
        if let (true, Some(heal), Some(since)) = (self.one_leader(), self.heal_at, self.settled_at)
        {
            self.stats.settle_ms = since - heal;
        } else {
            let views: Vec<String> = self
                .nodes
                .iter()
                .map(|n| format!("{:?}", n.lease.as_ref().map(|l| l.key())))
                .collect();
            let what = format!(
                "(c) liveness: writers {writers:?} {settle} ms after the faults ended; etcd's key {:?}; views {}",
                self.etcd.view(),
                views.join(" ")
            );
            self.violations.push((self.now, what));
        }
    }
}

/// The outcome of one lease seed.
#[derive(Debug)]
pub struct LeaseOutcome {
    pub seed: u64,
    pub violations: Vec<(u64, String)>,
    pub stats: LeaseStats,
    pub world: LeaseWorld,
}

impl LeaseOutcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The seed, the scenario, the violations and the last `lines` lines of the trace.
    pub fn report(&self, lines: usize) -> String {
        let sc = &self.world.sc;
        let mut s = format!(
            "lease seed {} (rerun: PGHA_SIM_SEED={} cargo test -p pgha-sim --test lease -- one_lease_seed --nocapture)\n",
            self.seed, self.seed
        );
        s.push_str(&format!(
            "{} nodes, {:?}, stop up to {} ms, clock ppm {:?}, slow {} %\nfaults (end {} ms): {:?}\n",
            sc.nodes, sc.config, sc.stop_max_ms, sc.ppm, sc.slow_pct, sc.faults_end, sc.faults
        ));
        for (at, what) in &self.violations {
            s.push_str(&format!("VIOLATION at {at} ms: {what}\n"));
        }
        let trace = &self.world.trace;
        for l in &trace[trace.len().saturating_sub(lines)..] {
            s.push_str(&format!("{:>9} {}\n", l.at, l.text));
        }
        s
    }
}

/// Runs one lease seed: the faults, then everything healed, then the liveness check.
pub fn run(seed: u64, record: bool) -> LeaseOutcome {
    run_with(seed, record, false)
}

/// [`run`], with or without the requests of crashed runs reaching etcd
/// ([`LeaseScenario::ghosts`]).
pub fn run_with(seed: u64, record: bool, ghosts: bool) -> LeaseOutcome {
    let mut rng = Rng::new(seed ^ 0x1EA5E);
    let mut sc = lease_scenario(&mut rng);
    sc.ghosts = ghosts;
    let settle = lease_settle_ms(&sc.config);
    let end = sc.faults_end;
    let mut w = LeaseWorld::new(sc, rng, record);
    w.check();
    w.run_until(end);
    if w.violations.is_empty() {
        w.heal_all();
        w.run_until(end + settle);
    }
    if w.violations.is_empty() {
        w.check_liveness(settle);
    }
    LeaseOutcome {
        seed,
        violations: w.violations.clone(),
        stats: w.stats,
        world: w,
    }
}
