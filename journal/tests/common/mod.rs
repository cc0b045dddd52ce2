//! Realistic journals for the tests: two-node incidents scripted on the simulator, each
//! node's daemon runs recorded through Recorders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pgha_core::{Isolation, SplitBrainRule};
use pgha_journal::{Header, Options, Recorder};
use pgha_sim::{Fault, World};

/// 2024-05-01 10:30:00 UTC: the wall clock at the simulator's time 0.
pub const WALL_BASE: u64 = 1_714_559_400_000;

/// A directory for one test, `<tmp>/pgha-journal-tests/<pid>/<name>`. The directories of
/// earlier test processes that are gone are removed first, so test runs never pile up in /tmp
/// (a test process has no hook at its exit to remove its own).
pub fn tempdir(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join("pgha-journal-tests");
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let gone = e
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let d = root.join(std::process::id().to_string()).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A scripted incident: the simulated pair and each node's recorder (its journal).
#[derive(Debug)]
pub struct Cluster {
    pub world: World,
    pub recorders: Vec<Recorder>,
    /// The wall clock at the simulator's time 0.
    pub wall_base: u64,
}

impl Cluster {
    pub fn recorder(&self, i: usize) -> &Recorder {
        &self.recorders[i]
    }

    /// The wall clock now.
    pub fn wall_now(&self) -> u64 {
        self.wall_base + self.world.now.0
    }
}

/// A fresh pair with `Config::ha_pair`'s settings and `tune`, both daemons started and run
/// to steady state (db0 master, db1 its replica): 30 s.
pub fn bootstrap(tune: impl Fn(&mut pgha_core::Config)) -> World {
    let mut w = World::ha_pair(1, tune);
    w.inject(Fault::RestartDaemon(0));
    w.inject(Fault::RestartDaemon(1));
    w.run_for(30_000);
    w
}

/// Writes each node's daemon runs into a journal (`dir/db<i>.journal`, or memory) through a
/// Recorder, one run per daemon start, the wall clock `wall_base` plus the simulator's time.
/// The world must have run without a violation of the simulator's invariants.
pub fn record(world: World, dir: Option<&Path>, options: &Options, wall_base: u64) -> Cluster {
    assert!(world.violations.is_empty(), "{:?}", world.violations);
    let mut recorders = Vec::new();
    for (i, node) in world.nodes.iter().enumerate() {
        let name = &node.config.name;
        let path = dir.map(|d| journal_path(d, name));
        let mut rec: Option<Recorder> = None;
        for run in world.runs.iter().filter(|r| r.node == i) {
            let header = Header::new(run.config.clone(), format!("# pgha.toml of {name}\n"));
            let r = match (rec.take(), &path) {
                (Some(r), None) => r.restart(header),
                (Some(r), Some(p)) => {
                    drop(r);
                    Recorder::open_append(p, header)
                }
                (None, Some(p)) => Recorder::open(p, header),
                (None, None) => Recorder::in_memory(header),
            }
            .expect("journal");
            let mut r = r.with_options(options.clone());
            for &(now, input) in &run.inputs {
                r.step(now, wall_base + now.0, input).expect("step");
            }
            rec = Some(r);
        }
        recorders.push(rec.expect("a daemon run"));
    }
    Cluster {
        world,
        recorders,
        wall_base,
    }
}

fn recorded(world: World, dir: Option<&Path>) -> Cluster {
    record(world, dir, &Options::default(), WALL_BASE)
}

/// db0 master, db1 replica; db0's postgres dies; db1 promotes after 3 failed probes.
pub fn promote(dir: Option<&Path>) -> Cluster {
    let mut w = bootstrap(|_| {});
    w.inject(Fault::KillPostgres(0));
    w.run_for(30_000);
    recorded(w, dir)
}

/// db0 is cut off the network; db1 promotes; the network heals; both masters see each
/// other and both stop (the seed's both-stop rule).
pub fn split_brain(dir: Option<&Path>) -> Cluster {
    // The seed's rule, and a master that keeps serving when cut off: both masters meet.
    let mut w = bootstrap(|c| {
        c.split_brain = SplitBrainRule::BothStop;
        c.isolation = Isolation::KeepServing;
    });
    w.inject(Fault::Partition(0, 1));
    w.run_for(30_000);
    w.inject(Fault::Heal(0, 1));
    w.run_for(30_000);
    recorded(w, dir)
}

/// db0, the master, is cut off the network: with isolation = "fence" (`Config::ha_pair`'s)
/// it stops postgres after master_give_up without news from db1, before db1 can promote; db1
/// promotes; the network heals and db0 follows db1.
pub fn isolated(dir: Option<&Path>) -> Cluster {
    let mut w = bootstrap(|_| {});
    w.inject(Fault::Partition(0, 1));
    w.run_for(30_000);
    w.inject(Fault::Heal(0, 1));
    w.run_for(30_000);
    recorded(w, dir)
}

/// A power cut stops both hosts; only db1 comes back, with its data; no master appears
/// within grace, so db1 leads on its own data.
pub fn grace_expired(dir: Option<&Path>) -> Cluster {
    let mut w = bootstrap(|_| {});
    w.inject(Fault::PowerCut);
    w.run_for(5_000);
    w.inject(Fault::RestartDaemon(1));
    w.run_for(40_000);
    recorded(w, dir)
}

pub fn journal_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.journal"))
}
