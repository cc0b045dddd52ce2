//! Whole-cluster scenarios on the virtual clock, one per behaviour, with the faults written
//! out instead of drawn from a seed. Each checks every invariant as the sweep does, and
//! then what an operator would look at: who is master, and how fast it got there.

use pgha_core::{Isolation, OperatorRequest, Reason, SplitBrainRule, State, Timestamp, Topology};
use pgha_sim::{Fault, Outcome, Rng, Scenario, TraceItem, run_scenario};

const SEC: u64 = 1000;

fn ha(fast: bool, faults: Vec<(u64, Fault)>) -> Scenario {
    cluster(2, Topology::Ha, fast, faults)
}

fn cluster(nodes: usize, topology: Topology, fast: bool, faults: Vec<(u64, Fault)>) -> Scenario {
    let end = faults.iter().map(|&(t, _)| t).max().unwrap_or(30 * SEC) + SEC;
    Scenario {
        nodes,
        topology,
        split_brain: SplitBrainRule::BothStop,
        isolation: Isolation::KeepServing,
        fast,
        restart_with_data: false,
        vip: true,
        proxy: true,
        action_failure: 0.0,
        faults: faults.into_iter().map(|(t, f)| (Timestamp(t), f)).collect(),
        faults_end: Timestamp(end),
    }
}

fn run(sc: Scenario) -> Outcome {
    let out = run_scenario(1, sc, Rng::new(1), true);
    assert!(out.ok(), "{}", out.report(120));
    out
}

/// The transitions of node `i` into `to`, with their times.
fn entered(out: &Outcome, i: usize, to: fn(&State) -> bool) -> Vec<(Timestamp, Reason)> {
    out.world
        .trace
        .iter()
        .filter_map(|l| match &l.item {
            TraceItem::Transition(n, t) if *n == i && to(&t.to) && !to(&t.from) => {
                Some((l.at, t.reason))
            }
            _ => None,
        })
        .collect()
}

fn master_at_end(out: &Outcome) -> usize {
    let m = out.world.masters();
    assert_eq!(m.len(), 1, "masters at the end: {m:?}");
    m[0]
}

#[test]
fn a_fresh_two_node_cluster_bootstraps_with_db0_as_master_and_db1_streaming() {
    let out = run(ha(false, vec![]));
    assert_eq!(master_at_end(&out), 0);
    assert!(matches!(out.world.state_of(1), Some(State::Replica { .. })));
    let cloned = entered(&out, 1, |s| matches!(s, State::Cloning { .. }));
    assert_eq!(cloned.len(), 1);
}

#[test]
fn a_killed_master_host_is_replaced_within_the_detection_bound_with_the_seed_timings() {
    // SIGKILL of the master's postgres and its daemon at 60 s; the daemon stays down.
    let kill = 60 * SEC;
    let out = run(ha(
        false,
        vec![
            (kill, Fault::KillPostgres(0)),
            (kill, Fault::CrashDaemon(0)),
            (200 * SEC, Fault::RestartDaemon(0)),
        ],
    ));
    let promoted = entered(&out, 1, |s| *s == State::Master);
    let (at, _) = promoted[0];
    // connect_timeout × psql_error_count + probe_interval + 2 s, the end-to-end test's bound.
    let bound = 5 * SEC * 3 + SEC + 2 * SEC;
    let took = at.since(Timestamp(kill));
    eprintln!("seed timings, master host killed: promoted after {took} ms");
    assert!(took <= bound, "promotion took {took} ms");
    // A refused master is declared dead in about psql_error_count probe intervals.
    assert!(
        took <= 3 * SEC + 500,
        "a refused master took {took} ms to replace"
    );
    // The old master rejoined as a replica of the new one, on the new timeline.
    assert_eq!(master_at_end(&out), 1);
    assert!(matches!(out.world.state_of(0), Some(State::Replica { .. })));
}

#[test]
fn the_fast_profile_replaces_a_killed_master_in_under_a_second() {
    let kill = 30 * SEC;
    let out = run(ha(
        true,
        vec![
            (kill, Fault::KillPostgres(0)),
            (kill, Fault::CrashDaemon(0)),
            (60 * SEC, Fault::RestartDaemon(0)),
        ],
    ));
    let (at, _) = entered(&out, 1, |s| *s == State::Master)[0];
    let took = at.since(Timestamp(kill));
    eprintln!("fast profile, master host killed: promoted after {took} ms");
    assert!(took < SEC, "fast profile took {took} ms");
}

#[test]
fn a_hung_master_is_replaced_and_steps_down_when_it_resumes() {
    let hang = 60 * SEC;
    let out = run(ha(
        false,
        vec![(hang, Fault::Hang(0)), (100 * SEC, Fault::Resume(0))],
    ));
    let (at, reason) = entered(&out, 1, |s| *s == State::Master)[0];
    let took = at.since(Timestamp(hang));
    assert!(
        took <= 5 * SEC * 3 + SEC + 2 * SEC,
        "hung master took {took} ms to replace"
    );
    eprintln!("seed timings, master hung: promoted after {took} ms");
    assert!(matches!(reason, Reason::Done { .. }));
    let promoting = entered(&out, 1, |s| matches!(s, State::Promoting { .. }));
    assert!(matches!(promoting[0].1, Reason::MasterUnreachable { .. }));
    // The hung node's own daemon saw its postgres fail and stepped down; it rejoins.
    assert_eq!(master_at_end(&out), 1);
}

#[test]
fn a_fast_profile_hung_master_is_replaced_in_under_two_and_a_half_seconds() {
    let hang = 30 * SEC;
    let out = run(ha(
        true,
        vec![(hang, Fault::Hang(0)), (40 * SEC, Fault::Resume(0))],
    ));
    let (at, _) = entered(&out, 1, |s| *s == State::Master)[0];
    let took = at.since(Timestamp(hang));
    eprintln!("fast profile, master hung: promoted after {took} ms");
    assert!(took < 2500, "fast profile hung master took {took} ms");
}

#[test]
fn both_nodes_restarted_with_their_data_elect_one_master_and_the_other_follows() {
    let mut sc = ha(false, vec![]);
    sc.restart_with_data = true;
    let out = run(sc);
    assert_eq!(master_at_end(&out), 0);
    let (_, reason) = entered(&out, 0, |s| matches!(s, State::Starting { .. }))[0];
    assert!(matches!(reason, Reason::GraceExpired { .. }));
    // db1 followed db0 with its own data: no clone.
    assert!(entered(&out, 1, |s| matches!(s, State::Cloning { .. })).is_empty());
}

#[test]
fn a_forced_split_brain_stops_both_and_recover_restores_one_master() {
    let out = run(ha(false, vec![(60 * SEC, Fault::ExternalPromote(1))]));
    // Each master that sees the other stops and stays fenced; which sees the other first is
    // a race (as with real servers): one or both are fenced, each once.
    let mut fenced = 0;
    for i in 0..2 {
        let n = entered(&out, i, |s| *s == State::Fenced).len();
        assert!(n <= 1, "db{i} was fenced {n} times");
        fenced += n;
    }
    assert!(fenced >= 1, "no split-brain stop");
    // The simulated operator recovered the fenced node(s): one master, the other follows.
    let m = master_at_end(&out);
    assert!(matches!(
        out.world.state_of(1 - m),
        Some(State::Replica { .. })
    ));
}

#[test]
fn under_the_timeline_rule_a_forced_split_brain_keeps_the_newer_timeline_serving() {
    let mut sc = ha(false, vec![(60 * SEC, Fault::ExternalPromote(1))]);
    sc.split_brain = SplitBrainRule::OlderTimelineStepsDown;
    let out = run(sc);
    assert!(
        entered(&out, 1, |s| *s == State::Fenced).is_empty(),
        "the newer timeline never stops"
    );
    assert!(entered(&out, 0, |s| *s == State::Fenced).is_empty());
    assert_eq!(master_at_end(&out), 1);
    assert!(matches!(out.world.state_of(0), Some(State::Replica { .. })));
}

#[test]
fn a_daemon_killed_and_restarted_while_postgres_runs_changes_nothing() {
    let out = run(ha(
        false,
        vec![
            (60 * SEC, Fault::CrashDaemon(0)),
            (62 * SEC, Fault::RestartDaemon(0)),
        ],
    ));
    assert!(
        entered(&out, 1, |s| matches!(s, State::Promoting { .. })).is_empty(),
        "no failover"
    );
    assert_eq!(master_at_end(&out), 0);
    let starts = out.world.trace.iter().filter(|l| {
        matches!(&l.item, TraceItem::Command(0, c) if matches!(c.kind, pgha_core::CommandKind::StartPostgres(_) | pgha_core::CommandKind::StopPostgres(_)))
    });
    assert_eq!(starts.count(), 1, "only the bootstrap start");
}

#[test]
fn a_three_node_star_follows_an_operator_switchover_on_a_new_timeline() {
    // `pgha promote --force` on db1: db0 steps down first, then db1 is promoted.
    let out = run(cluster(
        3,
        Topology::Star,
        false,
        vec![
            (60 * SEC, Fault::Operator(0, OperatorRequest::StepDown)),
            (70 * SEC, Fault::Operator(1, OperatorRequest::Promote)),
        ],
    ));
    assert_eq!(master_at_end(&out), 1);
    for i in [0, 2] {
        assert!(
            matches!(out.world.state_of(i), Some(State::Replica { .. })),
            "db{i} follows db1"
        );
    }
    assert!(!entered(&out, 0, |s| *s == State::SteppedDown).is_empty());
    for i in 0..3 {
        assert!(entered(&out, i, |s| *s == State::Fenced).is_empty());
    }
}

#[test]
fn an_operator_promote_beside_a_healthy_master_is_refused_and_changes_nothing() {
    for topology in [Topology::Ha, Topology::Star] {
        let n = if topology == Topology::Ha { 2 } else { 3 };
        let out = run(cluster(
            n,
            topology,
            false,
            vec![(60 * SEC, Fault::Operator(1, OperatorRequest::Promote))],
        ));
        assert_eq!(master_at_end(&out), 0);
        assert!(entered(&out, 1, |s| matches!(s, State::Promoting { .. })).is_empty());
        for i in 0..n {
            assert!(entered(&out, i, |s| *s == State::Fenced).is_empty());
        }
    }
}

#[test]
fn a_star_never_promotes_by_itself_when_its_master_dies() {
    let out = run(cluster(
        3,
        Topology::Star,
        false,
        vec![(60 * SEC, Fault::KillPostgres(0))],
    ));
    for i in [1, 2] {
        assert!(entered(&out, i, |s| matches!(s, State::Promoting { .. })).is_empty());
    }
    // The master's own daemon restarted it (after grace) on its data.
    assert_eq!(master_at_end(&out), 0);
}

#[test]
fn a_partition_heals_into_one_master() {
    let out = run(ha(
        false,
        vec![
            (60 * SEC, Fault::Partition(0, 1)),
            (90 * SEC, Fault::Heal(0, 1)),
        ],
    ));
    // During the partition the replica promoted; on heal the split-brain rule acted, and the
    // operator's recover restored one master.
    assert_eq!(
        entered(&out, 1, |s| matches!(s, State::Promoting { .. })).len(),
        1
    );
    master_at_end(&out);
}

#[test]
fn a_master_whose_connections_are_exhausted_stays_master_and_the_replica_never_promotes() {
    for fast in [false, true] {
        let (at, len) = if fast {
            (30 * SEC, 30 * SEC)
        } else {
            (60 * SEC, 120 * SEC)
        };
        let out = run(ha(
            fast,
            vec![(at, Fault::Exhaust(0)), (at + len, Fault::Release(0))],
        ));
        assert_eq!(out.stats.promotions, 0, "fast {fast}");
        assert!(
            entered(&out, 0, |s| matches!(s, State::SteppingDown { .. })).is_empty(),
            "fast {fast}: the full master stepped down"
        );
        assert_eq!(master_at_end(&out), 0);
        // Both daemons saw it: "overloaded" is what the probes of db0 returned meanwhile.
        let overloaded = out
            .world
            .trace
            .iter()
            .filter(|l| {
                matches!(
                    l.item,
                    TraceItem::Input(
                        _,
                        pgha_core::Input::Event(
                            pgha_core::Event::LocalProbe {
                                result: pgha_core::ProbeResult::Overloaded,
                                ..
                            } | pgha_core::Event::PeerProbe {
                                result: pgha_core::ProbeResult::Overloaded,
                                ..
                            }
                        )
                    )
                )
            })
            .count();
        assert!(
            overloaded > 20,
            "fast {fast}: {overloaded} overloaded probes"
        );
    }
}

#[test]
fn a_full_replica_still_promotes_when_its_master_dies() {
    let out = run(ha(
        true,
        vec![
            (20 * SEC, Fault::Exhaust(1)),
            (30 * SEC, Fault::KillPostgres(0)),
            (30 * SEC, Fault::CrashDaemon(0)),
            (60 * SEC, Fault::Release(1)),
            (60 * SEC, Fault::RestartDaemon(0)),
        ],
    ));
    let (at, _) = entered(&out, 1, |s| *s == State::Master)[0];
    assert!(at.since(Timestamp(30 * SEC)) < SEC, "promoted at {at}");
    assert_eq!(master_at_end(&out), 1);
}

#[test]
fn a_node_restarted_while_its_peer_master_is_full_waits_instead_of_leading() {
    // db1's postgres and daemon die; db0 (master) fills up; db1 restarts with its data and
    // cannot read db0's role for a minute: it must not lead on its own data meanwhile.
    let out = run(ha(
        false,
        vec![
            (50 * SEC, Fault::KillPostgres(1)),
            (50 * SEC, Fault::CrashDaemon(1)),
            (55 * SEC, Fault::Exhaust(0)),
            (60 * SEC, Fault::RestartDaemon(1)),
            (120 * SEC, Fault::Release(0)),
        ],
    ));
    let waits = entered(&out, 1, |s| matches!(s, State::Electing { .. }));
    assert!(!waits.is_empty());
    let reasons: Vec<Reason> = out
        .world
        .trace
        .iter()
        .filter_map(|l| match &l.item {
            TraceItem::Transition(1, t) => Some(t.reason),
            _ => None,
        })
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| matches!(r, Reason::PeerOverloaded { .. })),
        "{reasons:?}"
    );
    assert!(
        !reasons
            .iter()
            .any(|r| matches!(r, Reason::GraceExpired { .. })),
        "{reasons:?}"
    );
    assert_eq!(out.stats.promotions, 0);
    assert_eq!(master_at_end(&out), 0);
    assert!(matches!(out.world.state_of(1), Some(State::Replica { .. })));
}
