//! Realistic journals for the tests: scripted two-node incidents driven through Recorders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pgha_journal::testkit::{Cluster, Pg};

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pgha-journal-{}-{name}", std::process::id()));
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
