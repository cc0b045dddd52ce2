//! Realistic journals for the tests: scripted two-node incidents driven through Recorders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pgha_journal::testkit::{Cluster, Pg};

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

/// db0 master, db1 replica; db0's postgres dies; db1 promotes after 3 failed probes.
pub fn promote(dir: Option<&Path>) -> Cluster {
    let mut c = Cluster::ha_pair(dir, |_| {});
    c.bootstrap().expect("bootstrap");
    c.kill_postgres(0);
    c.run_for(30_000).expect("run");
    c
}

/// db0 is cut off the network; db1 promotes; the network heals; both masters see each
/// other and both stop (the seed's both-stop rule).
pub fn split_brain(dir: Option<&Path>) -> Cluster {
    // The seed's rule, and a master that keeps serving when cut off: both masters meet.
    let mut c = Cluster::ha_pair(dir, |c| {
        c.split_brain = pgha_core::SplitBrainRule::BothStop;
        c.isolation = pgha_core::Isolation::KeepServing;
    });
    c.bootstrap().expect("bootstrap");
    c.nodes[0].reachable = false;
    c.run_for(30_000).expect("run");
    c.nodes[0].reachable = true;
    c.run_for(30_000).expect("run");
    c
}

/// db0, the master, is cut off the network: with isolation = "fence" (the testkit's default)
/// it stops postgres after master_give_up without news from db1, before db1 can promote; db1
/// promotes; the network heals and db0 follows db1.
pub fn isolated(dir: Option<&Path>) -> Cluster {
    let mut c = Cluster::ha_pair(dir, |_| {});
    c.bootstrap().expect("bootstrap");
    c.nodes[0].reachable = false;
    c.run_for(30_000).expect("run");
    c.nodes[0].reachable = true;
    c.run_for(30_000).expect("run");
    c
}

/// A power cut stops both hosts; only db1 comes back, with its data; no master appears
/// within grace, so db1 leads on its own data.
pub fn grace_expired(dir: Option<&Path>) -> Cluster {
    let mut c = Cluster::ha_pair(dir, |_| {});
    c.bootstrap().expect("bootstrap");
    for i in 0..2 {
        c.crash_daemon(i);
        c.nodes[i].pg = Pg::Down;
    }
    c.run_for(5_000).expect("run");
    c.start(1).expect("restart db1");
    c.run_for(40_000).expect("run");
    c
}

pub fn journal_path(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("{node}.journal"))
}
