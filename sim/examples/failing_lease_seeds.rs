//! Lists the failing seeds of the lease simulation with their first violation, one a line:
//! what a mutation check needs (docs/simulator.md, "The lease simulation"). `FIRST` (default
//! 0) and `COUNT` (default 10,000):
//! `cargo run --release -p pgha-sim --example failing_lease_seeds > failing.txt`.

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
    let count = env_u64("COUNT", 10_000);
    let mut failing = 0;
    for seed in first..first + count {
        let out = pgha_sim::run_lease_seed(seed, false);
        if let Some((at, what)) = out.violations.first() {
            failing += 1;
            println!("{seed}\t{at}\t{what}");
        }
    }
    eprintln!("{failing} of {count} lease seeds failed");
}
