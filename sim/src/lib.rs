//! # pgha-sim: thousands of fault schedules against the real core
//!
//! A simulated cluster (two nodes in the HA topology, three to five in the star) whose daemons
//! are real [`pgha_core::Node`]s, on a virtual clock, with simulated PostgreSQL servers (WAL
//! position, timelines with their history, start, stop, promote and basebackup that take
//! time and can fail, asynchronous replication with a lag), a simulated network (delay, loss,
//! two-way and one-way partitions, heal), process faults (postgres crash, a hung server, a hung
//! postmaster whose backends keep committing, daemon crash and restart, a power cut of every
//! host, operator requests), and a client that writes through its sessions and records every
//! acknowledged write. One seed decides everything: the same seed gives the same trace.
//!
//! After every step the invariants are checked (see [`World`] and docs/simulator.md):
//! 1. two masters that can see each other never both accept writes for longer than the
//!    split-brain bound;
//! 2. no automatic promotion while the master answers as healthy and reachable;
//! 3. no basebackup while the local postgres runs, no initdb on a node that held data; no
//!    end to a wait for a master, and no local step-down, while that master (or the local
//!    postgres) was up, full or not;
//! 4. the VIP is held by at most one node in sight of the other (beyond the same bound);
//! 5. timelines only grow: no node runs as master on a timeline older than one it followed;
//! 6. once the faults stop, within [`settle_ms`], exactly one master, after an operator
//!    `recover` of any node the split-brain rule fenced;
//! 7. no write acknowledged after another node promoted off its branch by a hung master whose
//!    daemon watched it long enough, nor by an isolated master with `isolation = fence`;
//! 8. at the end, every acknowledged write on the final master's history, except what
//!    asynchronous replication loses at a failover and the conceded cases ([`World::check_writes`]);
//! 9. the timeline split-brain rule never stops both masters.
//!
//! Run one seed with `PGHA_SIM_SEED=1234 cargo test -p pgha-sim --test sim -- one_seed`.
//!
//! The etcd-lease mode (issue 13) has a simulation of its own: real `Lease` machines against a
//! model of etcd ([`etcd`], [`lease_world`], [`run_lease_seed`]; docs/simulator.md, "The lease
//! simulation").

mod actions;
mod clients;
pub mod etcd;
mod faults;
mod invariants;
pub mod lease_world;
mod network;
mod postgres;
mod rng;
mod script;
mod world;

pub use clients::Write;
pub use faults::{Fault, scenario};
pub use invariants::{Stale, Violation};
pub use postgres::{
    Branch, BranchKind, PgData, PgRole, PgRun, Phase, Postgres, REPLICATION_LAG_MS,
};
pub use rng::Rng;
pub use world::{NodeRun, Scenario, Stats, TraceItem, TraceLine, World};

pub use lease_world::{LeaseFault, LeaseOutcome, LeaseScenario, LeaseStats, LeaseWorld};

use pgha_core::{OperatorRequest, Timestamp};

/// The outcome of one seed.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub scenario: Scenario,
    pub violations: Vec<Violation>,
    pub stats: Stats,
    pub end: Timestamp,
    pub world: World,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The seed, the scenario, the violations and the last `lines` lines of the trace.
    pub fn report(&self, lines: usize) -> String {
        let mut s = format!(
            "seed {} (rerun: PGHA_SIM_SEED={} cargo test -p pgha-sim --test sim -- one_seed --nocapture)\n",
            self.seed, self.seed
        );
        s.push_str(&format!(
            "scenario: {} nodes {:?} split-brain {:?} isolation {:?} fast {} restart_with_data {} action_failure {}\nfaults: {:?}\n",
            self.scenario.nodes,
            self.scenario.topology,
            self.scenario.split_brain,
            self.scenario.isolation,
            self.scenario.fast,
            self.scenario.restart_with_data,
            self.scenario.action_failure,
            self.scenario.faults
        ));
        for v in &self.violations {
            s.push_str(&format!("VIOLATION at {}: {}\n", v.at, v.what));
        }
        let trace = &self.world.trace;
        let from = trace.len().saturating_sub(lines);
        for l in &trace[from..] {
            s.push_str(&format!(
                "{:>10} {}\n",
                l.at.to_string(),
                describe(&self.world, &l.item)
            ));
        }
        s
    }
}

fn describe(w: &World, item: &TraceItem) -> String {
    match item {
        TraceItem::Input(i, input) => format!("db{i} <- {input:?}"),
        TraceItem::Command(i, c) => format!("db{i} -> #{} {:?}", c.id.0, c.kind),
        TraceItem::Transition(i, t) => format!(
            "db{i} {} -> {}: {}",
            t.from.name(),
            t.to.name(),
            t.reason.describe(&w.nodes[*i].config)
        ),
        TraceItem::Fault(f) => format!("FAULT {f:?}"),
        TraceItem::Note(i, n) => format!("db{i} note: {n}"),
    }
}

/// How long after the faults end the cluster has to settle on one master: the grace wait
/// with its stagger, three detection windows, and room for clones and starts.
pub fn settle_ms(s: &Scenario) -> u64 {
    let t = timings(s.fast);
    // Twice the transition bound: a replica that is not streaming is re-cloned after it.
    let transition_bound = if s.fast { 10_000 } else { 30_000 };
    t.grace_ms
        + t.grace_stagger_ms * (s.nodes as u64 - 1)
        + 3 * (3 * t.connect_timeout_ms + t.probe_interval_ms)
        + 2 * transition_bound
        + 30_000
}

/// The timings of a scenario: the core's defaults (the seed's), or its fast profile
/// ([`pgha_core::Config::fast`]). The fast transition bound (10 s) is the simulator's own.
pub fn timings(fast: bool) -> pgha_core::Config {
    let c = pgha_core::Config::ha_pair("db0", 0, "db1", 1);
    if fast { c.fast() } else { c }
}

/// Runs one seed of the lease simulation (issue 13: `Lease` machines against a modelled
/// etcd, docs/simulator.md, "The lease simulation") to the end and checks liveness.
pub fn run_lease_seed(seed: u64, record: bool) -> LeaseOutcome {
    lease_world::run(seed, record)
}

/// Runs one seed to the end and checks liveness. `record` keeps the full trace and the
/// per-run input logs (for journals and for reports).
pub fn run_seed(seed: u64, record: bool) -> Outcome {
    let mut rng = Rng::new(seed);
    let sc = scenario(seed, &mut rng);
    run_scenario(seed, sc, rng, record)
}

/// Runs a given scenario (hand-written tests use this).
pub fn run_scenario(seed: u64, sc: Scenario, rng: Rng, record: bool) -> Outcome {
    let settle = settle_ms(&sc);
    let mut w = World::new(seed, sc.clone(), rng, record);
    w.start_all();
    w.run_until(sc.faults_end);
    if w.violations.is_empty() {
        w.heal_all();
        for i in 0..w.nodes.len() {
            if w.nodes[i].core.as_ref().is_some_and(|c| c.paused()) {
                let now = w.now;
                w.schedule(now, Fault::Operator(i, OperatorRequest::Resume));
            }
        }
        let t = w.now.plus(settle);
        w.run_until(t);
    }
    // A switchover that did not complete (its promote refused or lost to a fault) leaves
    // the stepped-down node waiting with no master: the operator recovers it.
    if w.violations.is_empty() && w.masters().is_empty() {
        for i in w.stepped_down() {
            let now = w.now;
            w.schedule(now, Fault::Operator(i, OperatorRequest::Recover));
        }
        let t = w.now.plus(settle);
        w.run_until(t);
    }
    // The operator's procedure after a split-brain stop: recover the chosen node (the lowest
    // index), let it lead, then recover the others so they rejoin it.
    // A node fenced because the master it found is behind its data is recovered with
    // `--force` (the operator accepts to set its data aside).
    let mut rounds = 0;
    while w.violations.is_empty() && !w.fenced().is_empty() && rounds < w.nodes.len() {
        rounds += 1;
        let first = w.fenced()[0];
        let now = w.now;
        let behind = w.nodes[first]
            .core
            .as_ref()
            .and_then(|c| c.last_transition())
            .is_some_and(|t| matches!(t.reason, pgha_core::Reason::PeerBehind { .. }));
        let req = if behind {
            OperatorRequest::ForceRecover
        } else {
            OperatorRequest::Recover
        };
        w.schedule(now, Fault::Operator(first, req));
        let t = w.now.plus(settle);
        w.run_until(t);
    }
    if w.violations.is_empty() {
        let masters = w.masters();
        if masters.len() != 1 {
            let states: Vec<String> = (0..w.nodes.len())
                .map(|i| {
                    format!(
                        "db{i}={}",
                        w.state_of(i).map(|s| s.name()).unwrap_or("down")
                    )
                })
                .collect();
            let what = format!(
                "liveness: {} masters {:?} {} ms after the faults ended (states: {})",
                masters.len(),
                masters,
                settle,
                states.join(" ")
            );
            let at = w.now;
            w.violations.push(Violation { at, what });
        } else {
            // Every other node streams from the master.
            let m = masters[0];
            w.check_writes(m);
            for i in 0..w.nodes.len() {
                if i == m {
                    continue;
                }
                let following = match (w.state_of(i), w.nodes[i].pg.run) {
                    (Some(pgha_core::State::Replica { upstream }), Some(run)) => {
                        // Streaming, not merely configured: its data is on the master's history.
                        let same_history = match (&w.nodes[i].pg.data, &w.nodes[m].pg.data) {
                            (Some(r), Some(md)) => r.branch == md.branch,
                            _ => false,
                        };
                        run.role == (PgRole::Replica { upstream: m })
                            && w.nodes[i].peer_index(upstream) == m
                            && same_history
                    }
                    _ => false,
                };
                if !following {
                    let what = format!(
                        "liveness: db{i} is not a replica of master db{m} {settle} ms after the faults ended (state {})",
                        w.state_of(i).map(|s| s.name()).unwrap_or("down")
                    );
                    let at = w.now;
                    w.violations.push(Violation { at, what });
                }
            }
        }
    }
    Outcome {
        seed,
        scenario: sc,
        violations: w.violations.clone(),
        stats: w.stats,
        end: w.now,
        world: w,
    }
}

/// An unsigned number from the environment variable `name` (`default` when unset), for the
/// examples' `FIRST`, `COUNT`, `GHOSTS`; a value that is not a number stops with its name.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}
