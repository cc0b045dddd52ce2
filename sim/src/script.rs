//! Scripted runs: a cluster whose faults the caller writes out, applied at once between runs
//! of the clock, instead of a schedule drawn from a seed. The journal's tests and benchmark
//! record such runs into journals (each [`NodeRun`](crate::NodeRun) is one daemon run).
//!
//! ```
//! use pgha_sim::{Fault, World};
//! let mut w = World::ha_pair(1, |_| {});
//! w.inject(Fault::RestartDaemon(0));
//! w.inject(Fault::RestartDaemon(1));
//! w.run_for(30_000); // db0 master, db1 its replica
//! w.inject(Fault::KillPostgres(0));
//! w.run_for(30_000); // db1 promoted
//! assert!(w.violations.is_empty());
//! assert_eq!(w.masters(), vec![1]);
//! ```

use pgha_core::{Config, Isolation, SplitBrainRule, Timestamp, Topology};

use crate::faults::Fault;
use crate::rng::Rng;
use crate::world::{Scenario, World};

impl World {
    /// Two nodes of the HA topology, `db0` and `db1`, each with `Config::ha_pair`'s settings
    /// (no VIP, proxy or hooks) and `tune` applied; no injected action failures; the trace and
    /// the per-run inputs recorded. No daemon runs yet: [`Fault::RestartDaemon`] starts one.
    /// `seed` draws the network delays and the actions' durations.
    pub fn ha_pair(seed: u64, tune: impl Fn(&mut Config)) -> World {
        let sc = Scenario {
            nodes: 2,
            topology: Topology::Ha,
            split_brain: SplitBrainRule::OlderTimelineStepsDown,
            isolation: Isolation::Fence,
            fast: false,
            restart_with_data: false,
            vip: false,
            proxy: false,
            action_failure: 0.0,
            faults: Vec::new(),
            faults_end: Timestamp::ZERO,
        };
        let mut w = World::new(seed, sc, Rng::new(seed), true);
        for (i, node) in w.nodes.iter_mut().enumerate() {
            let mut config = Config::ha_pair(
                &format!("db{i}"),
                i as u32,
                &format!("db{}", 1 - i),
                1 - i as u32,
            );
            tune(&mut config);
            node.config = config;
        }
        w
    }

    /// Applies a fault now, as a schedule would at this moment.
    pub fn inject(&mut self, f: Fault) {
        self.apply_fault(f);
    }

    /// Runs for `ms` more (see [`World::run_until`]).
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now.plus(ms);
        self.run_until(t);
    }
}
