//! Issue 11: no acknowledged write lost to a hung master, a split-brain race, or a restart.
//! One test per rule, on a virtual clock; the simulator and the end-to-end tests check the
//! same rules against whole clusters.

mod common;

use common::*;
use pgha_core::*;

fn report(
    index: u32,
    role: Role,
    standing: Standing,
    data: Option<(u32, u64, bool)>,
) -> PeerReport {
    PeerReport {
        index,
        role,
        standing,
        data: data.map(|(timeline, lsn, was_master)| DataPosition {
            timeline,
            lsn: Lsn(lsn),
            was_master,
        }),
        upstream: None,
        upstream_failures: 0,
    }
}

fn reason_codes(s: &Shell) -> Vec<&'static str> {
    s.transitions.iter().map(|t| t.reason.code()).collect()
}

/// The time of the first transition with this reason code.
fn when(s: &Shell, code: &str) -> Option<u64> {
    s.transitions
        .iter()
        .find(|t| t.reason.code() == code)
        .map(|t| t.at.as_millis())
}

#[test]
fn the_default_give_up_leaves_the_stop_allowance_before_the_takeover_bound() {
    let c = Config::ha_pair("db0", 0, "db1", 1);
    assert_eq!(c.master_give_up_ms, 12_000);
    assert_eq!(c.takeover_bound_ms(), 15_000);
    assert!(
        c.master_give_up_ms + c.probe_interval_ms + c.stop_allowance_ms() <= c.takeover_bound_ms()
    );
    assert_eq!(Config::default_master_give_up_ms(3, 500, 200), 1_050);
    assert!(c.validate().is_ok());
}

#[test]
fn a_give_up_that_could_come_after_the_replica_promotes_is_a_config_error() {
    let mut c = Config::ha_pair("db0", 0, "db1", 1);
    c.master_give_up_ms = 13_000;
    let e = c.validate().unwrap_err();
    assert!(matches!(e, ConfigError::GiveUpTooLate { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("replication.master_give_up") && text.contains("15 s"),
        "{text}"
    );
    c.master_give_up_ms = 1_000;
    assert!(matches!(
        c.validate(),
        Err(ConfigError::GiveUpTooSoon { .. })
    ));
    // psql_error_count 1 with fast timings leaves no room at all.
    let mut c = Config::ha_pair("db0", 0, "db1", 1).fast();
    c.psql_error_count = 1;
    c.master_give_up_ms =
        Config::default_master_give_up_ms(1, c.connect_timeout_ms, c.probe_interval_ms);
    assert!(c.validate().is_err());
}

#[test]
fn what_if_replay_of_other_timings_moves_a_default_give_up_with_them() {
    let mut c = Config::ha_pair("db0", 0, "db1", 1);
    c.set("replication.probe_interval", "0.2").unwrap();
    c.set("replication.connect_timeout", "0.5").unwrap();
    assert_eq!(c.master_give_up_ms, 1_050);
}

#[test]
fn a_master_whose_postgres_hangs_kills_it_before_the_replica_could_promote() {
    let mut s = running_master();
    let c = s.node.config().clone();
    s.run(3 * SEC, master(1), replica(1));
    let last_alive = s.node.local_last().unwrap().0.as_millis();
    // The postmaster hangs: local probes time out; the replica's postgres still answers.
    s.run(20 * SEC, None, replica(1));
    let gave_up = when(&s, "local_silent").expect("the master gives up");
    assert!(
        gave_up <= last_alive + c.master_give_up_ms + 1,
        "{gave_up} {last_alive}"
    );
    // The replica's last answer from the master came at the latest one probe interval before
    // the hang's first silent probe; it cannot promote before takeover_bound after it.
    assert!(gave_up + c.stop_allowance_ms() < last_alive + c.takeover_bound_ms());
    let t = s
        .transitions
        .iter()
        .find(|t| t.reason.code() == "local_silent")
        .unwrap();
    assert_eq!(
        t.to,
        State::SteppingDown {
            then: AfterStop::Elect
        }
    );
    assert!(s.ever(|k| *k == CommandKind::StopPostgres(StopMode::Immediate)));
}

#[test]
fn a_master_whose_postgres_is_full_never_gives_up() {
    let mut s = running_master();
    s.run(60 * SEC, Some(ProbeResult::Overloaded), replica(1));
    assert_eq!(s.state(), State::Master);
    assert!(!reason_codes(&s).contains(&"local_silent"));
}

#[test]
fn a_paused_master_does_not_give_up() {
    let mut s = running_master();
    s.handle(Event::Operator(OperatorRequest::Pause));
    s.run(60 * SEC, None, replica(1));
    assert_eq!(s.state(), State::Master);
}

#[test]
fn a_master_cut_off_from_its_replica_stops_before_the_replica_could_promote() {
    let mut s = running_master();
    let c = s.node.config().clone();
    s.run(3 * SEC, master(1), replica(1));
    let contact = s.node.peer_last(PeerId(0)).unwrap().0.as_millis();
    // A blackholed link: neither the replica's postgres nor its daemon answers.
    s.run(20 * SEC, master(1), None);
    let stopped = when(&s, "isolated").expect("the master isolates itself");
    assert!(stopped <= contact + c.master_give_up_ms + 1);
    assert!(stopped + c.stop_allowance_ms() < contact + c.takeover_bound_ms());
    s.complete(|k| matches!(k, CommandKind::StopPostgres(StopMode::Immediate)));
    assert_eq!(s.state(), State::Isolated);
    assert!(!s.node.vip_held());
}

#[test]
fn an_isolated_master_that_hears_its_replica_again_leads_again() {
    let mut s = running_master();
    s.run(SEC, master(1), replica(1));
    s.run(20 * SEC, master(1), None);
    s.complete(|k| matches!(k, CommandKind::StopPostgres(_)));
    assert_eq!(s.state(), State::Isolated);
    // The partition heals before the replica promoted: it still answers as a replica.
    s.reports[0] = Some(report(
        1,
        Role::Replica,
        Standing::Following,
        Some((1, 100, false)),
    ));
    s.run(2 * SEC, None, replica(1));
    assert!(reason_codes(&s).contains(&"peer_reachable"));
    s.run(5 * SEC, None, replica(1));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Master
        }
    );
}

#[test]
fn an_isolated_master_that_finds_the_replica_promoted_rejoins_it() {
    let mut s = running_master();
    s.run(SEC, master(1), replica(1));
    s.run(20 * SEC, master(1), None);
    s.complete(|k| matches!(k, CommandKind::StopPostgres(_)));
    s.run(2 * SEC, None, master(2));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
}

#[test]
fn a_master_whose_replica_cannot_see_it_stops_before_the_replica_promotes() {
    // A one-way partition: this master hears the replica, the replica's probes of it time out.
    let mut s = running_master();
    s.run(SEC, master(1), replica(1));
    let mut r = report(1, Role::Replica, Standing::Following, Some((1, 100, false)));
    r.upstream = Some(0);
    r.upstream_failures = 1;
    s.reports[0] = Some(r);
    s.run(2 * SEC, master(1), replica(1));
    assert_eq!(s.state(), State::Master, "one failure of three: not yet");
    r.upstream_failures = 2;
    s.reports[0] = Some(r);
    s.run(2 * SEC, master(1), replica(1));
    assert!(reason_codes(&s).contains(&"replica_losing_sight"));
    s.complete(|k| matches!(k, CommandKind::StopPostgres(StopMode::Immediate)));
    assert_eq!(s.state(), State::Isolated);
    // While the replica still counts failures of it, it stays stopped; once the replica
    // promoted, it rejoins it.
    s.run(5 * SEC, None, replica(1));
    assert_eq!(s.state(), State::Isolated);
    s.run(2 * SEC, None, master(2));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
}

#[test]
fn a_replica_whose_postgres_is_down_but_whose_daemon_answers_does_not_isolate_the_master() {
    // A replica being re-cloned or restarted: its postgres refuses, its daemon answers.
    let mut s = running_master();
    s.run(SEC, master(1), replica(1));
    s.reports[0] = Some(report(1, Role::None, Standing::Following, None));
    s.run(60 * SEC, master(1), Some(ProbeResult::Refused));
    assert_eq!(s.state(), State::Master);
}

#[test]
fn with_isolation_keep_serving_a_master_cut_off_from_its_replica_keeps_serving() {
    let mut c = ha(0);
    c.isolation = Isolation::KeepServing;
    let mut s = running_master_with(c);
    s.run(SEC, master(1), replica(1));
    s.run(60 * SEC, master(1), None);
    assert_eq!(s.state(), State::Master);
}

#[test]
fn a_new_master_does_not_isolate_itself_for_want_of_its_dead_old_master() {
    // After a failover the peer was last seen as a master: it cannot promote.
    let mut s = running_replica();
    s.run(SEC, replica(1), master(1));
    s.run(20 * SEC, replica(1), None);
    s.complete(|k| *k == CommandKind::Promote);
    s.run(60 * SEC, master(2), None);
    assert_eq!(s.state(), State::Master);
}

#[test]
fn of_two_masters_on_one_timeline_the_lower_index_keeps_serving_and_the_other_stops() {
    let mut s = running_master();
    s.run(10 * SEC, master(1), master(1));
    assert_eq!(s.state(), State::Master, "db0 (index 0) keeps serving");
    let mut s = Shell::new(ha(1));
    s.start(with_data(1, true));
    s.run(25 * SEC, None, Some(ProbeResult::Refused));
    s.complete(|k| matches!(k, CommandKind::StartPostgres(StartAs::Master)));
    s.run(SEC, master(1), replica(1));
    assert_eq!(s.state(), State::Master);
    s.run(2 * SEC, master(1), master(1));
    assert_eq!(
        s.state(),
        State::SteppingDown {
            then: AfterStop::Fence
        },
        "db1 (index 1) stops and keeps its data"
    );
}

#[test]
fn a_master_whose_peer_reports_a_newer_timeline_stops_even_if_the_peer_is_fenced() {
    let mut s = running_master();
    s.run(SEC, master(1), replica(1));
    // The peer promoted during a partition and is now fenced or shutting down: its postgres
    // never answers "master" again, but its daemon says its data is on timeline 2.
    s.reports[0] = Some(report(1, Role::None, Standing::Held, Some((2, 500, true))));
    s.run(2 * SEC, master(1), Some(ProbeResult::ShuttingDown));
    assert!(reason_codes(&s).contains(&"peer_on_newer_timeline"));
    s.complete(|k| matches!(k, CommandKind::StopPostgres(_)));
    assert_eq!(
        s.state(),
        State::SteppedDown,
        "never leads on the old timeline"
    );
    s.run(30 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(s.state(), State::SteppedDown);
    s.run(2 * SEC, None, master(2));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
}

#[test]
fn at_the_end_of_grace_a_node_waits_for_a_peer_whose_data_is_more_advanced() {
    // Both restarted together after a failover: db0's data last ran as a replica, db1's as
    // the master with more writes. db0's grace ends first.
    let mut s = Shell::new(ha(0));
    s.start(with_data(2, false));
    s.reports[0] = Some(report(
        1,
        Role::None,
        Standing::Electing,
        Some((2, 900, true)),
    ));
    s.run(40 * SEC, None, Some(ProbeResult::Refused));
    assert!(
        matches!(s.state(), State::Electing { .. }),
        "{:?}",
        s.state()
    );
    assert!(reason_codes(&s).contains(&"peer_ahead"));
    assert!(!s.ever(|k| matches!(k, CommandKind::StartPostgres(_))));
    // db1 leads; db0 follows it (its data ran as a replica on the same timeline).
    s.run(2 * SEC, None, master(2));
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
fn at_the_end_of_grace_a_node_with_the_more_advanced_data_leads_whatever_its_index() {
    let mut s = Shell::new(ha(1));
    s.start(with_data(2, true));
    s.reports[0] = Some(report(
        0,
        Role::None,
        Standing::Electing,
        Some((2, 40, false)),
    ));
    s.run(25 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Master
        }
    );
}

#[test]
fn equal_data_is_led_by_the_lower_index() {
    let mut s = Shell::new(ha(1));
    s.start(with_data(2, true));
    s.reports[0] = Some(report(
        0,
        Role::None,
        Standing::Electing,
        Some((2, 50, true)),
    ));
    s.run(40 * SEC, None, Some(ProbeResult::Refused));
    assert!(reason_codes(&s).contains(&"peer_ahead"));
    let mut s = Shell::new(ha(0));
    s.start(with_data(2, true));
    s.reports[0] = Some(report(
        1,
        Role::None,
        Standing::Electing,
        Some((2, 50, true)),
    ));
    s.run(16 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Master
        }
    );
}

#[test]
fn a_node_waits_for_a_fenced_peer_on_a_newer_timeline_until_recover_force() {
    let mut s = Shell::new(ha(0));
    s.start(with_data(1, true));
    s.reports[0] = Some(report(1, Role::None, Standing::Held, Some((2, 10, true))));
    s.run(60 * SEC, None, Some(ProbeResult::Refused));
    assert!(matches!(s.state(), State::Electing { .. }));
    let Some(Reason::PeerAhead { peer_standing, .. }) = s
        .transitions
        .iter()
        .map(|t| t.reason)
        .find(|r| r.code() == "peer_ahead")
    else {
        panic!("no peer_ahead");
    };
    assert_eq!(peer_standing, Standing::Held);
    let text = s
        .transitions
        .iter()
        .find(|t| t.reason.code() == "peer_ahead")
        .unwrap();
    assert!(
        text.reason
            .describe(s.node.config())
            .to_string()
            .contains("recover --force")
    );
}

#[test]
fn a_node_whose_data_ran_as_master_refuses_to_reclone_from_a_master_behind_it() {
    let mut s = Shell::new(ha(0));
    s.start(with_data(2, true)); // lsn 50
    let behind = Some(ProbeResult::Master {
        timeline: 2,
        lsn: Lsn(40),
    });
    s.run(2 * SEC, None, behind);
    assert_eq!(s.state(), State::Fenced);
    assert!(matches!(s.last_reason(), Reason::PeerBehind { .. }));
    assert!(s.ever(|k| *k == CommandKind::Fence));
    assert!(!s.ever(|k| matches!(k, CommandKind::Basebackup { .. })));
    // An operator's plain recover is refused the same way; recover --force re-clones.
    s.handle(Event::Operator(OperatorRequest::Recover));
    s.run(2 * SEC, None, behind);
    assert_eq!(s.state(), State::Fenced);
    s.handle(Event::Operator(OperatorRequest::ForceRecover));
    s.run(2 * SEC, None, behind);
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
}

#[test]
fn a_node_whose_data_ran_as_master_on_an_older_timeline_still_rejoins_the_new_master() {
    let mut s = Shell::new(ha(0));
    s.start(with_data(1, true));
    s.run(2 * SEC, None, master(2));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
}

#[test]
fn the_report_says_what_the_node_is_and_where_its_data_is() {
    let s = running_master();
    let r = s.node.report();
    assert_eq!(r.index, 0);
    assert_eq!(r.role, Role::Master);
    assert_eq!(r.standing, Standing::Leading);
    assert_eq!(
        r.data,
        Some(DataPosition {
            timeline: 1,
            lsn: Lsn(100),
            was_master: true
        })
    );
    let s = running_replica();
    assert_eq!(s.node.report().standing, Standing::Following);
}

#[test]
fn a_node_whose_grace_ends_while_its_peer_is_still_promoting_waits_for_it() {
    // The old master gave up on its hung postgres; the replica's pg_promote is slow. The old
    // master's data ran as master and ranks higher, yet leading now would make two masters.
    let mut s = Shell::new(ha(0));
    s.start(with_data(1, true));
    s.reports[0] = Some(report(
        1,
        Role::Replica,
        Standing::Leading,
        Some((1, 40, false)),
    ));
    s.run(30 * SEC, None, replica(1));
    assert!(
        matches!(s.state(), State::Electing { .. }),
        "{:?}",
        s.state()
    );
    assert!(reason_codes(&s).contains(&"peer_leading"));
    // The promotion failed: the peer is a replica again; this node leads.
    s.reports[0] = Some(report(
        1,
        Role::Replica,
        Standing::Following,
        Some((1, 40, false)),
    ));
    s.run(10 * SEC, None, replica(1));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Master
        }
    );
}

#[test]
fn a_master_whose_postgres_fails_and_whose_replica_is_about_to_promote_gives_up_at_once() {
    // Lost probes began the replica's failure run before the hang: the give-up deadline,
    // counted from this master's own last answer, would come after the promotion.
    let mut c = ha(0);
    c.isolation = Isolation::KeepServing;
    let mut s = running_master_with(c);
    s.run(SEC, master(1), replica(1));
    let last_alive = s.node.local_last().unwrap().0.as_millis();
    let mut r = report(1, Role::Replica, Standing::Following, Some((1, 100, false)));
    r.upstream = Some(0);
    r.upstream_failures = 2;
    s.reports[0] = Some(r);
    // One local probe times out (5 s), far less than master_give_up (12 s).
    s.run(8 * SEC, None, replica(1));
    let gave_up = when(&s, "local_silent").expect("gives up");
    assert!(gave_up < last_alive + 8 * SEC, "{gave_up} {last_alive}");
}
