//! The lease simulation's sweep (issue 13): `Lease` machines against a modelled etcd, with
//! faults, every invariant after every step (docs/simulator.md, "The lease simulation").

use pgha_sim::run_lease_seed;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

#[test]
fn ten_thousand_lease_seeds_hold_every_invariant() {
    let count = env_u64("PGHA_SIM_SEEDS").unwrap_or(10_000);
    let first = env_u64("PGHA_SIM_FIRST_SEED").unwrap_or(0);
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut totals = pgha_sim::LeaseStats::default();
    for seed in first..first + count {
        let out = run_lease_seed(seed, false);
        let s = out.stats;
        totals.steps += s.steps;
        totals.requests += s.requests;
        totals.leads += s.leads;
        totals.stops += s.stops;
        totals.late_replies += s.late_replies;
        totals.elections += s.elections;
        if !out.ok() {
            failures.push(seed);
            if failures.len() == 1 {
                eprintln!("{}", run_lease_seed(seed, true).report(150));
            }
        }
    }
    eprintln!(
        "{count} lease seeds in {:.1} s: {} steps, {} etcd requests, {} MayLead, {} MustStopWriting, {} answers after their timeout, {} etcd elections",
        started.elapsed().as_secs_f64(),
        totals.steps,
        totals.requests,
        totals.leads,
        totals.stops,
        totals.late_replies,
        totals.elections
    );
    assert!(
        failures.is_empty(),
        "{} of {count} lease seeds failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
}

#[test]
fn one_lease_seed() {
    let seed = env_u64("PGHA_SIM_SEED").unwrap_or(7);
    let out = run_lease_seed(seed, true);
    if std::env::var("PGHA_SIM_SEED").is_ok() {
        eprintln!("{}", out.report(usize::MAX));
    }
    assert!(out.ok(), "{}", out.report(200));
}

#[test]
fn the_same_lease_seed_gives_the_same_trace() {
    for seed in [1, 2, 3, 42, 1234] {
        let a = run_lease_seed(seed, true);
        let b = run_lease_seed(seed, true);
        assert!(!a.world.trace.is_empty());
        assert_eq!(
            a.world.trace, b.world.trace,
            "lease seed {seed} gave two different traces"
        );
        assert_eq!(a.stats, b.stats);
    }
}
