//! Simulated seeds per minute and simulated core inputs per second.
//!
//! `cargo bench -p pgha-sim --bench seeds`

use std::time::Instant;

fn main() {
    let runs = 5;
    let seeds = 2_000u64;
    let mut per_min = Vec::new();
    let mut inputs_per_s = Vec::new();
    let mut virtual_s = 0.0;
    for r in 0..runs {
        let t = Instant::now();
        let mut inputs = 0;
        for seed in r * seeds..(r + 1) * seeds {
            let out = pgha_sim::run_seed(seed, false);
            assert!(
                out.ok(),
                "seed {seed} failed: rerun it with PGHA_SIM_SEED={seed}"
            );
            inputs += out.stats.inputs;
            if r == 0 {
                virtual_s += out.end.as_millis() as f64 / 1000.0;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        per_min.push(seeds as f64 / secs * 60.0);
        inputs_per_s.push(inputs as f64 / secs);
    }
    per_min.sort_by(|a, b| a.partial_cmp(b).unwrap());
    inputs_per_s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "simulator: {runs} runs of {seeds} seeds: median {:.0} seeds/min (min {:.0}, max {:.0}); \
         median {:.2} M core inputs/s; {:.0} s of virtual cluster time per seed on average",
        per_min[per_min.len() / 2],
        per_min[0],
        per_min[per_min.len() - 1],
        inputs_per_s[inputs_per_s.len() / 2] / 1e6,
        virtual_s / seeds as f64
    );
}
