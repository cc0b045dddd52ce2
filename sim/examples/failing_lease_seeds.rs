//! Lists the failing seeds of the lease simulation with their first violation, one a line:
//! what a mutation check needs (docs/simulator.md, "The lease simulation"). `FIRST` (default
//! 0), `COUNT` (default 10,000), `GHOSTS=1` to let a crashed run's requests reach etcd:
//! `cargo run --release -p pgha-sim --example failing_lease_seeds > failing.txt`.

use pgha_sim::env_u64;

fn main() {
    let first = env_u64("FIRST", 0);
    let count = env_u64("COUNT", 10_000);
    let ghosts = env_u64("GHOSTS", 0) == 1;
    let mut failing = 0;
    let mut settle = 0;
    for seed in first..first + count {
        let out = pgha_sim::lease_world::run_with(seed, false, ghosts);
        settle = settle.max(out.stats.settle_ms);
        if let Some((at, what)) = out.violations.first() {
            failing += 1;
            println!("{seed}\t{at}\t{what}");
        }
    }
    eprintln!(
        "{failing} of {count} lease seeds failed; the longest settle after the heal: {settle} ms"
    );
}
