//! Lists the failing seeds of a range with their first violation, one a line: what a mutation
//! check needs (docs/simulator.md). `FIRST` (default 0) and `COUNT` (default 10,000):
//! `cargo run --release -p pgha-sim --example failing_seeds > failing.txt`.

use pgha_sim::env_u64;

fn main() {
    let first = env_u64("FIRST", 0);
    let count = env_u64("COUNT", 10_000);
    let mut failing = 0;
    for seed in first..first + count {
        let out = pgha_sim::run_seed(seed, false);
        if let Some(v) = out.violations.first() {
            failing += 1;
            println!("{seed}\t{}\t{}", v.at, v.what);
        }
    }
    eprintln!("{failing} of {count} seeds failed");
}
