//! Hand-written scenarios, one per behaviour of the seed design, on a virtual clock.
//! Each drives one `Node` directly: the test plays the shell and the rest of the cluster.

mod common;

use common::*;
use pgha_core::*;

#[test]
fn index_zero_with_an_empty_data_dir_inits_and_starts_as_master() {
    let mut s = Shell::new(ha(0));
    s.start(empty());
    assert!(matches!(s.state(), State::Discovering { .. }));
    // One round of peer probes first: the peer refuses.
    s.answer_probes(None, Some(ProbeResult::Refused));
    assert!(!s.has_pending(|k| *k == CommandKind::InitDataDir));
    s.advance_to(6 * SEC + 1);
    assert_eq!(s.state(), State::Initializing);
    s.complete(|k| *k == CommandKind::InitDataDir);
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Master
        }
    );
    s.complete(|k| matches!(k, CommandKind::StartPostgres(StartAs::Master)));
    s.answer_probes(master(1), None);
    assert_eq!(s.state(), State::Master);
    assert!(s.has_pending(|k| *k == CommandKind::AcquireVip));
}

#[test]
fn index_zero_clones_a_master_that_already_exists_instead_of_running_initdb() {
    let mut s = Shell::new(ha(0));
    s.start(empty());
    s.answer_probes(None, master(3));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
    assert!(
        s.all_commands
            .iter()
            .all(|c| c.kind != CommandKind::InitDataDir)
    );
}

#[test]
fn a_node_with_a_higher_index_waits_for_a_master_then_clones_and_follows_it() {
    let mut s = Shell::new(ha(1));
    s.start(empty());
    assert_eq!(s.state(), State::WaitingForMaster);
    s.run(60 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::WaitingForMaster,
        "waits as long as it takes"
    );
    s.answer_probes(None, master(1));
    s.run(SEC, None, master(1));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
    s.complete(|k| matches!(k, CommandKind::Basebackup { .. }));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Replica {
                upstream: PeerId(0)
            }
        }
    );
    s.complete(|k| matches!(k, CommandKind::StartPostgres(_)));
    s.answer_probes(replica(1), None);
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
}

#[test]
fn a_node_that_held_data_never_runs_initdb_again() {
    let mut s = Shell::new(ha(0));
    s.start(LocalFacts {
        data_dir: DataDir::Empty { held_data: true },
        postgres_running: false,
        fenced: false,
    });
    s.run(120 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(s.state(), State::WaitingForMaster);
    assert!(
        s.all_commands
            .iter()
            .all(|c| c.kind != CommandKind::InitDataDir)
    );
    assert!(matches!(
        s.transitions[0].reason,
        Reason::BootstrapWait {
            held_data: true,
            ..
        }
    ));
}

#[test]
fn a_restarted_node_follows_a_peer_that_reports_master_within_grace() {
    let mut s = Shell::new(ha(1));
    s.start(with_data(1, false));
    s.run(3 * SEC, None, Some(ProbeResult::Refused));
    assert!(matches!(s.state(), State::Electing { .. }));
    s.run(SEC, None, master(1));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Replica {
                upstream: PeerId(0)
            }
        }
    );
}

#[test]
fn a_restarted_node_that_was_master_re_clones_rather_than_follow_a_new_timeline() {
    let mut s = Shell::new(ha(0));
    s.start(with_data(1, true));
    s.run(SEC, None, master(2));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
    assert!(matches!(
        s.last_reason(),
        Reason::MustClone {
            local: Some((1, true)),
            ..
        }
    ));
}

#[test]
fn grace_expiry_with_no_master_seen_makes_the_node_lead_on_its_own_data() {
    let mut s = Shell::new(ha(0));
    s.start(with_data(1, false));
    s.run(14 * SEC, None, Some(ProbeResult::Refused));
    assert!(matches!(s.state(), State::Electing { .. }));
    s.run(2 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Master
        }
    );
    let Reason::GraceExpired { grace_ms, last, .. } = s.last_reason() else {
        panic!("{:?}", s.last_reason())
    };
    assert_eq!(grace_ms, 15 * SEC);
    assert_eq!(last[0], Some(ProbeResult::Refused));
}

#[test]
fn the_higher_index_waits_longer_so_two_restarted_nodes_do_not_both_lead() {
    let mut s = Shell::new(ha(1));
    s.start(with_data(1, false));
    s.run(16 * SEC, None, Some(ProbeResult::Refused));
    assert!(
        matches!(s.state(), State::Electing { .. }),
        "index 1 still waits at 16 s"
    );
    s.run(SEC, None, master(1));
    assert!(matches!(
        s.state(),
        State::Starting {
            target: StartAs::Replica { .. }
        }
    ));
}

#[test]
fn a_replica_promotes_after_psql_error_count_failed_probes_of_the_master() {
    let mut s = running_replica();
    s.run(5 * SEC, replica(1), master(1));
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    let t0 = s.now.as_millis();
    // The probe issued at the end of the healthy window was answered healthy: three more.
    s.run(2 * SEC + 100, replica(1), Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        },
        "two failures are not enough"
    );
    s.run(SEC, replica(1), Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Promoting {
            upstream: PeerId(0)
        }
    );
    let Reason::MasterUnreachable { failures, .. } = s.last_reason() else {
        panic!()
    };
    assert_eq!(failures.count, 3);
    assert!(failures.times()[0].as_millis() >= t0);
    s.complete(|k| *k == CommandKind::Promote);
    assert_eq!(s.state(), State::Master);
    assert!(s.has_pending(|k| *k == CommandKind::AcquireVip));
}

#[test]
fn a_hung_master_is_declared_dead_after_psql_error_count_timeouts() {
    let mut s = running_replica();
    s.run(2 * SEC, replica(1), master(1));
    // Probes of the master are never answered: each times out after connect_timeout (5 s).
    s.run(14 * SEC, replica(1), None);
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        },
        "two timeouts are not enough"
    );
    s.run(2 * SEC, replica(1), None);
    assert_eq!(
        s.state(),
        State::Promoting {
            upstream: PeerId(0)
        }
    );
    let Reason::MasterUnreachable { failures, .. } = s.last_reason() else {
        panic!()
    };
    assert_eq!(failures.last, Some(ProbeResult::Timeout));
}

#[test]
fn a_master_that_is_starting_up_does_not_make_the_replica_promote() {
    // The seed release's fault: "starting up" was read as "not master" and promoted the
    // replica, which then tripped the split-brain stop and took both nodes down.
    let mut s = running_replica();
    s.run(20 * SEC, replica(1), Some(ProbeResult::StartingUp));
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    s.run(2 * SEC, replica(1), master(1));
    s.run(20 * SEC, replica(1), Some(ProbeResult::ShuttingDown));
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
}

#[test]
fn a_master_stuck_starting_up_beyond_the_transition_bound_counts_as_failed() {
    let mut s = running_replica();
    s.run(30 * SEC, replica(1), Some(ProbeResult::StartingUp));
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    s.run(4 * SEC, replica(1), Some(ProbeResult::StartingUp));
    assert_eq!(
        s.state(),
        State::Promoting {
            upstream: PeerId(0)
        }
    );
}

#[test]
fn one_good_answer_resets_the_count_of_failures() {
    let mut s = running_replica();
    for _ in 0..10 {
        s.run(1100, replica(1), Some(ProbeResult::Refused));
        s.run(900, replica(1), master(1));
    }
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
}

#[test]
fn a_master_that_reports_itself_a_replica_is_replaced_at_once_by_the_lower_index() {
    let mut s = Shell::new(ha(0));
    s.start(with_data(1, false));
    s.run(
        SEC,
        None,
        Some(ProbeResult::Master {
            timeline: 1,
            lsn: Lsn(1),
        }),
    );
    s.complete(|k| matches!(k, CommandKind::StartPostgres(_)));
    s.answer_probes(
        Some(ProbeResult::Replica {
            timeline: 1,
            replay_lsn: Lsn(1),
            upstream: Some(PeerId(0)),
        }),
        None,
    );
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    s.run(1100, replica(1), replica(1));
    assert_eq!(
        s.state(),
        State::Promoting {
            upstream: PeerId(0)
        }
    );
    assert!(matches!(s.last_reason(), Reason::MasterIsReplica { .. }));
}

#[test]
fn of_two_replicas_the_higher_index_waits_so_both_never_promote_together() {
    let mut s = running_replica();
    s.run(1100, replica(1), replica(1));
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
}

#[test]
fn a_paused_replica_does_not_promote() {
    let mut s = running_replica();
    s.handle(Event::Operator(OperatorRequest::Pause));
    s.run(30 * SEC, replica(1), Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    s.handle(Event::Operator(OperatorRequest::Resume));
    s.run(3 * SEC + 100, replica(1), Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Promoting {
            upstream: PeerId(0)
        }
    );
}

#[test]
fn two_masters_both_release_the_vip_stop_and_stay_fenced_under_the_seed_rule() {
    let mut s = running_master_with(both_stop(ha(0)));
    s.run(SEC, master(1), Some(ProbeResult::Refused));
    s.run(SEC, master(1), master(2));
    assert_eq!(
        s.state(),
        State::SteppingDown {
            then: AfterStop::Fence
        }
    );
    let order = s.pending_actions();
    let vip = order
        .iter()
        .position(|k| *k == CommandKind::ReleaseVip)
        .unwrap();
    let fence = order.iter().position(|k| *k == CommandKind::Fence).unwrap();
    let stop = order
        .iter()
        .position(|k| matches!(k, CommandKind::StopPostgres(_)))
        .unwrap();
    assert!(
        vip < fence && fence < stop,
        "VIP first, fence marker before the stop: {order:?}"
    );
    s.complete(|k| matches!(k, CommandKind::StopPostgres(_)));
    assert_eq!(s.state(), State::Fenced);
    s.run(60 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(s.state(), State::Fenced, "stays fenced until recover");
}

#[test]
fn under_the_timeline_rule_only_the_older_timeline_steps_down() {
    let mut c = ha(0);
    c.split_brain = SplitBrainRule::OlderTimelineStepsDown;
    let mut s = Shell::new(c);
    s.start(empty());
    s.advance_to(6 * SEC + 1);
    s.complete(|k| *k == CommandKind::InitDataDir);
    s.complete(|k| matches!(k, CommandKind::StartPostgres(_)));
    s.answer_probes(master(3), replica(3));
    // The peer is on an older timeline: this node keeps serving.
    s.run(5 * SEC, master(3), master(2));
    assert_eq!(s.state(), State::Master);
    // The peer is on a newer one: this node steps down and re-clones from it.
    s.run(SEC, master(3), master(4));
    assert_eq!(
        s.state(),
        State::SteppingDown {
            then: AfterStop::Rejoin { from: PeerId(0) }
        }
    );
    s.complete(|k| matches!(k, CommandKind::StopPostgres(_)));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
}

#[test]
fn a_fenced_node_stays_fenced_across_a_daemon_restart_until_recover() {
    let mut s = Shell::new(ha(0));
    s.start(LocalFacts {
        fenced: true,
        ..with_data(2, true)
    });
    assert_eq!(s.state(), State::Fenced);
    s.run(60 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(s.state(), State::Fenced);
    assert!(
        s.all_commands
            .iter()
            .all(|c| !matches!(c.kind, CommandKind::StartPostgres(_)))
    );
    s.handle(Event::Operator(OperatorRequest::Recover));
    assert!(s.has_pending(|k| *k == CommandKind::Unfence));
    // No peer is master: the recovered node leads after one round of probes.
    s.run(7 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Master
        }
    );
}

#[test]
fn recover_on_the_second_node_rejoins_the_recovered_master() {
    let mut s = Shell::new(ha(1));
    s.start(LocalFacts {
        fenced: true,
        ..with_data(2, true)
    });
    s.handle(Event::Operator(OperatorRequest::Recover));
    s.run(SEC, None, master(3));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
}

#[test]
fn a_daemon_restarted_while_postgres_runs_adopts_it_without_a_restart() {
    let mut s = Shell::new(ha(0));
    s.start(LocalFacts {
        postgres_running: true,
        ..with_data(1, true)
    });
    assert_eq!(s.state(), State::WaitingForLocal { expect: None });
    s.run(5 * SEC, master(1), replica(1));
    assert_eq!(s.state(), State::Master);
    assert!(s.all_commands.iter().all(|c| !matches!(
        c.kind,
        CommandKind::StartPostgres(_) | CommandKind::StopPostgres(_)
    )));
}

#[test]
fn a_master_whose_postgres_dies_steps_down_and_elects_again() {
    let mut s = running_master();
    s.run(5 * SEC, master(1), replica(1));
    s.run(3 * SEC, Some(ProbeResult::Refused), replica(1));
    assert_eq!(
        s.state(),
        State::SteppingDown {
            then: AfterStop::Elect
        }
    );
    assert!(s.has_pending(|k| *k == CommandKind::ReleaseVip));
    s.complete(|k| matches!(k, CommandKind::StopPostgres(_)));
    assert!(matches!(s.state(), State::Electing { .. }));
}

#[test]
fn a_failed_basebackup_keeps_the_old_data_and_looks_for_a_master_again() {
    let mut s = Shell::new(ha(1));
    s.start(with_data(1, true));
    s.run(SEC, None, master(2));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
    s.fail(
        |k| matches!(k, CommandKind::Basebackup { .. }),
        Failure::Exit(1),
    );
    assert!(matches!(s.state(), State::Electing { .. }));
    // It does not clone again at once, and never runs initdb.
    assert!(!s.has_pending(|k| matches!(k, CommandKind::Basebackup { .. })));
    s.run(3 * SEC, None, master(2));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
    assert!(
        s.all_commands
            .iter()
            .all(|c| c.kind != CommandKind::InitDataDir)
    );
}

#[test]
fn operator_promote_promotes_a_replica_and_is_refused_elsewhere() {
    let mut s = running_master();
    s.handle(Event::Operator(OperatorRequest::Promote));
    assert_eq!(s.state(), State::Master);
    assert!(matches!(
        s.last_reason(),
        Reason::OperatorRefused {
            request: OperatorRequest::Promote
        }
    ));
    // A replica whose master has stopped answering: promoted (with a healthy master it is
    // refused, see the switchover tests).
    let mut r = running_replica();
    r.run(SEC, replica(1), Some(ProbeResult::Refused));
    r.handle(Event::Operator(OperatorRequest::Promote));
    assert_eq!(
        r.state(),
        State::Promoting {
            upstream: PeerId(0)
        }
    );
}

#[test]
fn a_star_replica_never_promotes_by_itself() {
    let mut s = Shell::new(star_db1());
    s.start(with_data(1, false));
    s.answer_probes(None, master(1));
    s.complete(|k| matches!(k, CommandKind::StartPostgres(_)));
    s.answer_probes(replica(1), None);
    s.run(120 * SEC, replica(1), Some(ProbeResult::Refused));
    assert!(matches!(s.state(), State::Replica { .. }));
    assert!(
        s.all_commands
            .iter()
            .all(|c| c.kind != CommandKind::Promote)
    );
}

#[test]
fn a_star_replica_follows_a_peer_promoted_on_a_newer_timeline() {
    let mut s = Shell::new(star_db1());
    s.start(with_data(1, false));
    // Peer 0 (db0) is master; peer 1 (db2) is down.
    let before = |p: Option<PeerId>| match p {
        None => replica(1),
        Some(PeerId(0)) => master(1),
        Some(_) => Some(ProbeResult::Refused),
    };
    s.answer_with(before);
    s.complete(|k| matches!(k, CommandKind::StartPostgres(_)));
    s.run_with(3 * SEC, before);
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    // db2 was promoted by the operator: timeline 2, while db0 still answers on timeline 1.
    s.run_with(2 * SEC, |p| match p {
        None => replica(1),
        Some(PeerId(0)) => master(1),
        Some(_) => master(2),
    });
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(1)
        }
    );
    assert!(s.all_commands.iter().any(|c| c.kind
        == CommandKind::Follow {
            upstream: PeerId(1)
        }));
}

#[test]
fn a_spurious_timeout_call_changes_nothing() {
    let mut s = running_replica();
    s.run(3 * SEC, replica(1), master(1));
    let before = (s.state(), s.pending.len(), s.node.poll_timeout());
    s.node.handle_timeout(s.now);
    s.drain();
    assert_eq!(before, (s.state(), s.pending.len(), s.node.poll_timeout()));
}

#[test]
fn a_late_answer_to_a_timed_out_probe_is_ignored() {
    let mut s = running_replica();
    s.advance_to(s.now.as_millis() + SEC);
    let probe = s.take(|k| matches!(k, CommandKind::ProbePeer(_))).unwrap();
    s.advance_to(s.now.as_millis() + 6 * SEC);
    let n = s.transitions.len();
    s.handle(Event::PeerProbe {
        id: probe.id,
        peer: PeerId(0),
        result: ProbeResult::Refused,
    });
    assert_eq!(s.transitions.len(), n);
    assert_eq!(s.node.peer_last(PeerId(0)).unwrap().1, ProbeResult::Timeout);
}

#[test]
fn every_transition_names_its_reason_in_one_line() {
    let mut s = running_replica();
    s.run(4 * SEC, replica(1), Some(ProbeResult::Refused));
    let config = s.node.config().clone();
    for t in &s.transitions {
        let line = t.reason.describe(&config).to_string();
        assert!(!line.is_empty() && !line.contains('\n'), "{line:?}");
    }
    let line = s.last_reason().describe(&config).to_string();
    assert!(
        line.starts_with("master db0 unreachable: 3 consecutive failures at "),
        "{line}"
    );
}

#[test]
fn a_replica_left_on_an_older_timeline_than_its_master_re_clones_after_the_bound() {
    let mut s = running_replica();
    // The master moved to timeline 2 and this replica stays on 1: it replayed past the fork.
    s.run(29 * SEC, replica(1), master(2));
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    s.run(3 * SEC, replica(1), master(2));
    assert_eq!(
        s.state(),
        State::SteppingDown {
            then: AfterStop::Rejoin { from: PeerId(0) }
        }
    );
    assert!(matches!(
        s.last_reason(),
        Reason::CannotFollow {
            local_timeline: 1,
            peer_timeline: 2,
            ..
        }
    ));
}

#[test]
fn a_replica_whose_replay_stays_put_while_the_master_writes_on_re_clones() {
    let mut s = running_replica();
    // A master that writes 1000 bytes a second while the replica's replay never moves.
    let mut master_lsn = 100;
    let mut stalled_for = |s: &mut Shell, secs: u32| {
        for _ in 0..secs {
            master_lsn += 1000;
            let m = Some(ProbeResult::Master {
                timeline: 2,
                lsn: Lsn(master_lsn),
            });
            let r = Some(ProbeResult::Replica {
                timeline: 2,
                replay_lsn: Lsn(50),
                upstream: Some(PeerId(0)),
            });
            s.run(SEC, r, m);
        }
    };
    stalled_for(&mut s, 59);
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        },
        "not before twice the transition bound"
    );
    stalled_for(&mut s, 3);
    assert_eq!(
        s.state(),
        State::SteppingDown {
            then: AfterStop::Rejoin { from: PeerId(0) }
        }
    );
    assert!(matches!(s.last_reason(), Reason::NotStreaming { .. }));
}

#[test]
fn an_idle_master_ahead_of_its_replica_by_a_segment_switch_is_not_a_stalled_replica() {
    let mut s = running_replica();
    // The master's position jumped once (a WAL segment switch) and then stays: no progress,
    // so nothing says the replica cannot follow.
    let m = Some(ProbeResult::Master {
        timeline: 1,
        lsn: Lsn(16 << 20),
    });
    let r = Some(ProbeResult::Replica {
        timeline: 1,
        replay_lsn: Lsn(100),
        upstream: Some(PeerId(0)),
    });
    s.run(300 * SEC, r, m);
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
}

#[test]
fn a_replica_that_is_stopped_records_replica_data_and_can_follow_again() {
    let mut s = running_replica();
    s.run(2 * SEC, replica(1), master(1));
    s.run(4 * SEC, Some(ProbeResult::Refused), master(1));
    assert_eq!(
        s.state(),
        State::SteppingDown {
            then: AfterStop::Elect
        }
    );
    s.complete(|k| matches!(k, CommandKind::StopPostgres(_)));
    assert!(matches!(s.state(), State::Electing { .. }));
    // Its data was a replica's: it follows the master without a clone.
    s.run(SEC, None, master(1));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Replica {
                upstream: PeerId(0)
            }
        }
    );
}

#[test]
fn a_promoted_replica_probes_its_postgres_at_once_so_health_checks_see_the_new_master() {
    let mut s = running_replica();
    s.run(3 * SEC + 500, replica(1), Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Promoting {
            upstream: PeerId(0)
        }
    );
    s.pending.retain(|c| !c.kind.is_probe());
    s.complete(|k| *k == CommandKind::Promote);
    assert_eq!(s.state(), State::Master);
    assert!(
        s.has_pending(|k| *k == CommandKind::ProbeLocal),
        "{:?}",
        s.pending
    );
    s.answer_probes(master(2), None);
    assert_eq!(s.node.local_timeline(), Some(2));
}

#[test]
fn a_re_clone_over_another_clusters_data_is_refused_and_the_node_halts_doing_nothing() {
    let mut s = Shell::new(ha(1));
    s.start(with_data(1, true));
    s.run(SEC, None, master(1));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
    s.fail(
        |k| matches!(k, CommandKind::Basebackup { .. }),
        Failure::ForeignCluster {
            local: 7,
            source: 9,
        },
    );
    assert_eq!(s.state(), State::Halted);
    assert_eq!(
        s.last_reason(),
        Reason::ForeignCluster {
            peer: PeerId(0),
            local_sysid: 7,
            peer_sysid: 9
        }
    );
    assert_eq!(s.last_reason().code(), "foreign_cluster");
    let text = s.last_reason().describe(s.node.config()).to_string();
    assert!(
        text.contains("7") && text.contains("db0") && text.contains("9"),
        "{text}"
    );
    // Nothing destructive afterwards, whatever the peers say; recover does not undo it.
    let before = s.all_commands.len();
    s.run(60 * SEC, None, master(1));
    s.handle(Event::Operator(OperatorRequest::Recover));
    assert_eq!(s.state(), State::Halted);
    assert!(s.all_commands[before..].iter().all(|c| c.kind.is_probe()));
}

#[test]
fn foreign_files_in_the_data_dir_halt_the_node_instead_of_retrying_initdb() {
    let mut s = Shell::new(ha(0));
    s.start(empty());
    s.advance_to(6 * SEC + 1);
    assert_eq!(s.state(), State::Initializing);
    s.fail(|k| *k == CommandKind::InitDataDir, Failure::ForeignFiles);
    assert_eq!(s.state(), State::Halted);
    s.run(30 * SEC, None, Some(ProbeResult::Refused));
    assert!(
        s.all_commands
            .iter()
            .filter(|c| c.kind == CommandKind::InitDataDir)
            .count()
            == 1
    );
}

#[test]
fn a_node_that_learns_a_peer_claims_its_own_index_halts_instead_of_bootstrapping() {
    let mut s = Shell::new(ha(0));
    s.start(empty());
    assert!(s.has_pending(|k| *k == CommandKind::CheckPeerIndex));
    s.fail(
        |k| *k == CommandKind::CheckPeerIndex,
        Failure::SameIndex { peer: PeerId(0) },
    );
    assert_eq!(s.state(), State::Halted);
    assert_eq!(
        s.last_reason(),
        Reason::SameIndex {
            peer: PeerId(0),
            index: 0
        }
    );
    s.run(30 * SEC, None, Some(ProbeResult::Refused));
    assert!(
        s.all_commands
            .iter()
            .all(|c| c.kind != CommandKind::InitDataDir)
    );
    // Electing (data present) checks too.
    let mut s = Shell::new(ha(1));
    s.start(with_data(1, true));
    assert!(s.has_pending(|k| *k == CommandKind::CheckPeerIndex));
    // A peer that cannot be asked is no reason to stop: the grace rule decides as before.
    s.fail(|k| *k == CommandKind::CheckPeerIndex, Failure::Io);
    assert!(matches!(s.state(), State::Electing { .. }));
}

#[test]
fn a_re_clone_that_replaced_local_data_names_the_set_aside_copy_by_its_command_id() {
    let mut s = Shell::new(ha(1));
    s.start(with_data(1, true));
    s.run(SEC, None, master(2));
    let c = s
        .take(|k| matches!(k, CommandKind::Basebackup { .. }))
        .unwrap();
    s.handle(Event::CommandDone {
        id: c.id,
        outcome: Ok(()),
        duration_ms: 100,
    });
    assert_eq!(
        s.last_reason(),
        Reason::Recloned {
            from: PeerId(0),
            duration_ms: 100,
            set_aside: c.id
        }
    );
    // A first clone into an empty data dir replaces nothing.
    let mut s = Shell::new(ha(1));
    s.start(empty());
    s.answer_probes(None, master(1));
    s.complete(|k| matches!(k, CommandKind::Basebackup { .. }));
    assert!(matches!(s.last_reason(), Reason::Done { .. }));
}

#[test]
fn a_failing_initdb_is_retried_with_doubling_pauses_up_to_a_cap() {
    let mut s = Shell::new(ha(0));
    s.start(empty());
    s.advance_to(6 * SEC + 1);
    let mut times = Vec::new();
    while s.now.as_millis() < 600 * SEC {
        if s.has_pending(|k| *k == CommandKind::InitDataDir) {
            times.push(s.now.as_millis());
            s.fail(|k| *k == CommandKind::InitDataDir, Failure::Exit(1));
        }
        let next = s.node.poll_timeout().unwrap().as_millis();
        s.answer_probes(None, Some(ProbeResult::Refused));
        s.advance_to(next.max(s.now.as_millis() + 1));
    }
    // A retry a second would be 600 attempts; doubling to a 60 s cap is a handful.
    assert!(times.len() < 20, "{} attempts: {times:?}", times.len());
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g <= 60 * SEC + 1), "{gaps:?}");
    assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
    assert!(*gaps.last().unwrap() >= 59 * SEC, "{gaps:?}");
}

// ---- switchover: promote refused beside a healthy master, step-down ------------------------

#[test]
fn operator_promote_is_refused_while_the_master_is_alive_and_healthy() {
    let mut r = running_replica();
    r.handle(Event::Operator(OperatorRequest::Promote));
    assert_eq!(
        r.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    let reason = r.last_reason();
    assert_eq!(
        reason,
        Reason::PromoteRefusedMasterHealthy {
            peer: PeerId(0),
            timeline: 1
        }
    );
    assert!(reason.is_refusal());
    assert_eq!(reason.code(), "promote_refused_master_healthy");
    let text = reason.describe(r.node.config()).to_string();
    assert!(text.contains("db0") && text.contains("--force"), "{text}");
    assert!(!r.has_pending(|k| *k == CommandKind::Promote));
}

#[test]
fn operator_promote_is_carried_out_once_the_master_has_failed_a_probe() {
    let mut r = running_replica();
    r.run(SEC, replica(1), Some(ProbeResult::Refused));
    r.handle(Event::Operator(OperatorRequest::Promote));
    assert_eq!(
        r.state(),
        State::Promoting {
            upstream: PeerId(0)
        }
    );
    assert_eq!(
        r.last_reason(),
        Reason::Operator {
            request: OperatorRequest::Promote
        }
    );
}

#[test]
fn step_down_stops_the_master_in_fast_mode_and_it_never_leads_until_it_rejoins_the_new_master() {
    let mut s = running_master();
    s.pending.clear();
    s.handle(Event::Operator(OperatorRequest::StepDown));
    assert_eq!(
        s.state(),
        State::SteppingDown {
            then: AfterStop::WaitForMaster
        }
    );
    let kinds = s.pending_actions();
    assert_eq!(
        kinds,
        [
            CommandKind::ReleaseVip,
            CommandKind::StopPostgres(StopMode::Fast)
        ],
        "VIP first, then a fast stop; no fence"
    );
    s.complete(|k| *k == CommandKind::ReleaseVip);
    s.complete(|k| matches!(k, CommandKind::StopPostgres(_)));
    assert_eq!(s.state(), State::SteppedDown);
    // The peer stops answering as a replica while it promotes: long past grace, nothing.
    s.run(60 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(s.state(), State::SteppedDown, "a stepped-down node led");
    assert!(!s.has_pending(|k| matches!(k, CommandKind::StartPostgres(_))));
    // The new master appears: rejoin it (the local data ran as master: re-clone).
    s.run(SEC, None, master(2));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
}

#[test]
fn step_down_is_refused_when_no_peer_answers_as_a_healthy_replica() {
    let mut s = running_master();
    s.run(SEC, master(1), Some(ProbeResult::Refused));
    s.handle(Event::Operator(OperatorRequest::StepDown));
    assert_eq!(s.state(), State::Master);
    assert_eq!(s.last_reason(), Reason::StepDownRefusedNoReplica);
    assert!(s.last_reason().is_refusal());
    let mut r = running_replica();
    r.handle(Event::Operator(OperatorRequest::StepDown));
    assert!(matches!(
        r.last_reason(),
        Reason::OperatorRefused {
            request: OperatorRequest::StepDown
        }
    ));
}

#[test]
fn a_failed_switchover_stop_is_retried_in_fast_mode_never_immediate() {
    let mut s = running_master();
    s.handle(Event::Operator(OperatorRequest::StepDown));
    s.fail(
        |k| matches!(k, CommandKind::StopPostgres(_)),
        Failure::Timeout,
    );
    s.advance_to(s.now.as_millis() + 2 * SEC);
    assert!(s.has_pending(|k| *k == CommandKind::StopPostgres(StopMode::Fast)));
    assert!(!s.has_pending(|k| *k == CommandKind::StopPostgres(StopMode::Immediate)));
}

#[test]
fn recover_makes_a_stepped_down_node_elect_again() {
    let mut s = running_master();
    s.handle(Event::Operator(OperatorRequest::StepDown));
    s.complete(|k| matches!(k, CommandKind::StopPostgres(_)));
    assert_eq!(s.state(), State::SteppedDown);
    s.handle(Event::Operator(OperatorRequest::Recover));
    assert!(matches!(s.state(), State::Electing { .. }));
    s.run(15 * SEC, None, Some(ProbeResult::Refused));
    assert!(
        matches!(
            s.state(),
            State::Starting {
                target: StartAs::Master
            }
        ),
        "{:?}",
        s.state()
    );
}
