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
        totals.thawed_late += s.thawed_late;
        totals.settle_ms = totals.settle_ms.max(s.settle_ms);
        if !out.ok() {
            failures.push(seed);
            if failures.len() == 1 {
                eprintln!("{}", run_lease_seed(seed, true).report(150));
            }
        }
    }
    eprintln!(
        "{count} lease seeds in {:.1} s: {} steps, {} etcd requests, {} MayLead, {} MustStopWriting, {} answers after their timeout, {} etcd elections, {} hosts thawed past their deadline (conceded), longest settle after the heal {} ms",
        started.elapsed().as_secs_f64(),
        totals.steps,
        totals.requests,
        totals.leads,
        totals.stops,
        totals.late_replies,
        totals.elections,
        totals.thawed_late,
        totals.settle_ms
    );
    assert!(
        failures.is_empty(),
        "{} of {count} lease seeds failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(20)]
    );
}

/// `PGHA_SIM_SEED=n` runs seed n with its trace; `PGHA_SIM_GHOSTS=1` lets a crashed run's
/// requests reach etcd.
#[test]
fn one_lease_seed() {
    let seed = env_u64("PGHA_SIM_SEED").unwrap_or(7);
    let ghosts = env_u64("PGHA_SIM_GHOSTS") == Some(1);
    let out = pgha_sim::lease_world::run_with(seed, true, ghosts);
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

fn assert_seeds_pass(seeds: &[u64], ghosts: bool) {
    for &seed in seeds {
        let out = pgha_sim::lease_world::run_with(seed, true, ghosts);
        assert!(out.ok(), "{}", out.report(200));
    }
}

/// The first lease bug the simulation found (docs/simulator.md, "What the lease simulation
/// found"), fixed: a `Delete` (then guarded by `value == me` only) sent at a step-down, timed
/// out, retried and answered, was applied late, after the same member took the key again, and
/// deleted the new tenure's key while the member wrote. A delete now compares the key's
/// mod_revision with the version it saw, which a key taken again never has.
#[test]
fn a_late_delete_from_a_step_down_does_not_remove_the_members_next_key() {
    assert_seeds_pass(&[65568, 90213, 13776, 44437, 97869], false);
}

/// The second lease bug the simulation found, fixed: a `Renew` (then guarded by `value == me`
/// only) sent by a run that then crashed reached etcd after the restarted run confirmed the key
/// with its new lease, bound the key back to the dead run's lease, and the key went when that
/// lease expired (32806) or was revoked (27775) while the new run wrote. A renewal now compares
/// the key's lease with the run's own (and its create_revision with the key the run took), a
/// confirm the key's mod_revision with the version it read.
#[test]
fn a_renewal_from_a_crashed_run_does_not_bind_the_key_to_its_dying_lease() {
    assert_seeds_pass(&[32806, 27775, 102840], true);
}
