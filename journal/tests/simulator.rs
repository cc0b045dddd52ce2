//! The simulator's per-node runs, written through the journal's Recorder, replay exactly.
//! `PGHA_JOURNAL_SIM_SEEDS` sets how many seeds (default 40; each seed's journals are written, read back, replayed and what-if replayed).

mod common;

use pgha_journal::{Header, Recorder, replay};

fn seeds() -> u64 {
    std::env::var("PGHA_JOURNAL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

#[test]
fn every_simulated_seed_journals_and_replays_exactly() {
    let mut journals = 0;
    for seed in 0..seeds() {
        let outcome = pgha_sim::run_seed(seed, true);
        let runs = &outcome.world.runs;
        let nodes = runs.iter().map(|r| r.node).max().map_or(0, |m| m + 1);
        for node in 0..nodes {
            let mut rec: Option<Recorder> = None;
            for run in runs.iter().filter(|r| r.node == node) {
                let header = Header::new(run.config.clone(), "");
                let mut r = match rec.take() {
                    None => Recorder::in_memory(header),
                    Some(r) => r.restart(header),
                }
                .unwrap_or_else(|e| panic!("seed {seed} node {node}: {e}"));
                let (mut ts, mut cs) = (Vec::new(), Vec::new());
                for &(now, input) in &run.inputs {
                    let wall = common::WALL_BASE + now.0 + 7 * node as u64;
                    let step = r
                        .step(now, wall, input)
                        .unwrap_or_else(|e| panic!("seed {seed} node {node}: {e}"));
                    ts.extend(step.transitions);
                    cs.extend(step.commands);
                }
                // The recorder drove its own core: the same outputs as the simulator's.
                assert_eq!(ts, run.transitions, "seed {seed} node {node}: transitions");
                assert_eq!(cs, run.commands, "seed {seed} node {node}: commands");
                rec = Some(r);
            }
            let Some(r) = rec else { continue };
            let f = r
                .read()
                .unwrap_or_else(|e| panic!("seed {seed} node {node}: {e}"));
            let report =
                replay::replay(&f).unwrap_or_else(|e| panic!("seed {seed} node {node}: {e}"));
            assert!(report.identical(), "seed {seed} node {node}: {report}");
            let w = pgha_journal::whatif::what_if(&f, &[])
                .unwrap_or_else(|e| panic!("seed {seed} node {node}: {e}"));
            assert!(w.no_difference(), "seed {seed} node {node}: {w}");
            journals += 1;
        }
    }
    assert!(journals > 0);
}
