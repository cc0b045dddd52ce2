//! A digest per seed (its whole recorded trace, stats, violations and writes), to show a
//! refactor of the simulator keeps every draw: `FIRST=0 COUNT=2000 cargo run --release -p pgha-sim --example seed_digest`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use pgha_sim::env_u64;

fn main() {
    let first = env_u64("FIRST", 0);
    let count = env_u64("COUNT", 2_000);
    let mut all = DefaultHasher::new();
    for seed in first..first + count {
        let out = pgha_sim::run_seed(seed, true);
        let mut h = DefaultHasher::new();
        format!("{:?}", out.world.trace).hash(&mut h);
        format!("{:?}", out.world.writes).hash(&mut h);
        format!("{:?} {:?} {:?}", out.stats, out.violations, out.end).hash(&mut h);
        for r in &out.world.runs {
            format!("{:?}", r.inputs).hash(&mut h);
        }
        let d = h.finish();
        d.hash(&mut all);
        println!("{seed}\t{d:016x}");
    }
    eprintln!("all {:016x}", all.finish());
}
