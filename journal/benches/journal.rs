//! Journal benchmark (not a timed test): durable appends per second, replayed inputs and
//! transitions per second, and journal bytes per day at default settings. The journals are
//! the simulator's scripted HA pair (`World::ha_pair`) recorded as the tests record them.
//!
//! `cargo bench -p pgha-journal --bench journal` (figures in docs/benchmarks.md).
//! `PGHA_BENCH_DIR` chooses where the files go (default: the system temp dir; use the disk
//! the daemon's journal will live on).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use pgha_journal::{Header, JournalFile, Options, Recorder, replay};
use pgha_sim::World;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{Cluster, WALL_BASE};

fn inputs(w: &World) -> usize {
    w.runs.iter().map(|r| r.inputs.len()).sum()
}

fn dir() -> PathBuf {
    let base = std::env::var_os("PGHA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("pgha-journal-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

fn main() {
    let d = dir();

    // 1. Durable appends: a steady-state HA pair for 10 simulated minutes after its
    //    bootstrap, every step one fsynced transaction.
    let dd = d.join("durable");
    std::fs::create_dir_all(&dd).expect("dir");
    let mut w = common::bootstrap(|_| {});
    w.run_for(600_000);
    let steps = inputs(&w);
    let t = Instant::now();
    let c = common::record(black_box(w), Some(&dd), &Options::default(), WALL_BASE);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "durable appends: {steps} steps (one transaction each, synchronous=FULL) in {secs:.2} s = {:.0} steps/s",
        steps as f64 / secs
    );
    drop(c);

    // 2. Bytes per day: 1 simulated hour of steady state at default settings
    //    (probe_interval 1 s, 2 nodes), not fsynced (the bytes are the same): the journals of
    //    the bootstrap alone subtracted from those of the bootstrap and the hour (the same
    //    seed: the same first inputs).
    let options = Options {
        durable: false,
        ..Options::default()
    };
    let used = |c: &Cluster| -> Vec<u64> {
        (0..2)
            .map(|i| c.recorder(i).used_bytes().expect("bytes"))
            .collect()
    };
    let (bd, bootd) = (d.join("bytes"), d.join("bytes-bootstrap"));
    for dir in [&bd, &bootd] {
        std::fs::create_dir_all(dir).expect("dir");
    }
    let boot = common::bootstrap(|_| {});
    let steps0 = inputs(&boot);
    let before = used(&common::record(boot, Some(&bootd), &options, WALL_BASE));
    let mut w = common::bootstrap(|_| {});
    w.run_for(3_600_000);
    let steps = inputs(&w) - steps0;
    let c = common::record(w, Some(&bd), &options, WALL_BASE);
    let after = used(&c);
    for i in 0..2 {
        let per_hour = after[i] - before[i];
        println!(
            "db{i}: {} bytes/hour in steady state = {:.1} MB/day",
            per_hour,
            per_hour as f64 * 24.0 / 1e6
        );
    }
    println!(
        "steady state: {:.2} inputs/s per node",
        steps as f64 / 3600.0 / 2.0
    );
    drop(c);
    let f = JournalFile::read(bd.join("db1.journal")).expect("read");
    println!(
        "db1 journal: {} rows, file {} bytes",
        f.rows,
        std::fs::metadata(bd.join("db1.journal"))
            .map(|m| m.len())
            .unwrap_or(0)
    );

    // 3. Replay: the steady-state hour (read + verify + decode, then replay), and
    //    transition-heavy simulator journals.
    let t = Instant::now();
    let f = JournalFile::read(black_box(bd.join("db1.journal"))).expect("read");
    let secs = t.elapsed().as_secs_f64();
    println!(
        "read + verify + decode (steady hour): {} rows in {secs:.3} s = {:.0} rows/s",
        f.rows,
        f.rows as f64 / secs
    );
    let t = Instant::now();
    let r = replay::replay(black_box(&f)).expect("replay");
    let secs = t.elapsed().as_secs_f64();
    assert!(r.identical());
    println!(
        "replay (steady hour): {} inputs, {} transitions in {secs:.3} s = {:.0} inputs/s",
        r.inputs,
        r.transitions,
        r.inputs as f64 / secs
    );
    let mut files = Vec::new();
    for seed in 0..200 {
        let o = pgha_sim::run_seed(seed, true);
        for run in &o.world.runs {
            let mut rec = Recorder::in_memory(Header::new(run.config.clone(), "")).expect("rec");
            for &(now, input) in &run.inputs {
                rec.step(now, WALL_BASE + now.0, input).expect("step");
            }
            files.push(rec.read().expect("read"));
        }
    }
    let t = Instant::now();
    let (mut inputs, mut transitions) = (0, 0);
    for f in &files {
        let r = replay::replay(black_box(f)).expect("replay");
        assert!(r.identical());
        inputs += r.inputs;
        transitions += r.transitions;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "replay (200 simulator seeds, {} runs): {inputs} inputs, {transitions} transitions in {secs:.3} s = {:.0} inputs/s, {:.0} transitions/s",
        files.len(),
        inputs as f64 / secs,
        transitions as f64 / secs
    );
    let _ = std::fs::remove_dir_all(&d);
}
