//! Prints one line per seed: its end time, statistics and a hash of its whole trace. Two
//! builds that print the same lines ran every seed alike: what a reshape of the core or the
//! simulator must show (`FIRST`, default 0; `COUNT`, default 2,000):
//! `cargo run --release -p pgha-sim --example digest > before.txt`.

use std::hash::{DefaultHasher, Hash, Hasher};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let first = env_u64("FIRST", 0);
    let count = env_u64("COUNT", 2_000);
    for seed in first..first + count {
        let out = pgha_sim::run_seed(seed, true);
        // DefaultHasher::new() has fixed keys: the same trace hashes alike in every run.
        let mut h = DefaultHasher::new();
        format!("{:?}", out.world.trace).hash(&mut h);
        println!(
            "{seed}\t{}\t{}\t{:016x}\t{:?}",
            out.end.as_millis(),
            out.world.trace.len(),
            h.finish(),
            out.stats
        );
    }
}
