//! A server that answers "too many connections" (or any SQLSTATE class 53 error) is alive:
//! `ProbeResult::Overloaded`. These scenarios drive one `Node` on a virtual clock through every
//! state that probes, with the test playing the shell and the rest of the cluster.

use std::cell::Cell;

mod common;

use common::*;
use pgha_core::*;

const FULL: Option<ProbeResult> = Some(ProbeResult::Overloaded);

const REPLICA: State = State::Replica {
    upstream: PeerId(0),
};

#[test]
fn a_master_whose_own_probes_all_say_overloaded_stays_master() {
    // The failover: 100 sessions fill max_connections, the master's own probes get
    // "sorry, too many clients already", and it stopped itself in immediate mode.
    let mut s = running_master();
    let before = s.all_commands.len();
    s.run(60 * SEC, FULL, replica(1));
    assert_eq!(s.state(), State::Master);
    assert!(!s.ever(|k| matches!(k, CommandKind::StopPostgres(_))));
    assert!(
        s.all_commands[before..]
            .iter()
            .all(|c| c.kind != CommandKind::ReleaseVip)
    );
    assert_eq!(s.node.local_last().map(|(_, r)| r), FULL);
    // Released: the next answer is the master's as before.
    s.run(2 * SEC, master(1), replica(1));
    assert_eq!(s.state(), State::Master);
}

#[test]
fn a_replica_whose_master_answers_overloaded_never_promotes() {
    let mut s = running_replica();
    s.run(60 * SEC, replica(1), FULL);
    assert_eq!(s.state(), REPLICA);
    assert!(!s.ever(|k| *k == CommandKind::Promote));
}

#[test]
fn a_replica_whose_own_probes_say_overloaded_stays_replica() {
    let mut s = running_replica();
    s.run(60 * SEC, FULL, master(1));
    assert_eq!(s.state(), REPLICA);
    assert!(!s.ever(|k| matches!(k, CommandKind::StopPostgres(_))));
}

#[test]
fn an_overloaded_answer_ends_a_run_of_failures() {
    // Two timeouts, then the master answers "too many clients": it is alive, so the next
    // two timeouts start a new run and never reach psql_error_count (3).
    let mut s = running_replica();
    let round = Cell::new(0u32);
    s.run_with(120 * SEC, |target| match target {
        None => replica(1),
        Some(_) => {
            let n = round.get();
            round.set(n + 1);
            if n % 3 == 2 { FULL } else { None }
        }
    });
    assert!(
        round.get() > 20,
        "only {} probes of the master",
        round.get()
    );
    assert_eq!(s.state(), REPLICA);
    assert!(!s.ever(|k| *k == CommandKind::Promote));
}

#[test]
fn a_full_master_that_then_dies_is_still_replaced() {
    let mut s = running_replica();
    s.run(30 * SEC, replica(1), FULL);
    s.run(3 * SEC + 100, replica(1), Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Promoting {
            upstream: PeerId(0)
        }
    );
    let Some(Reason::MasterUnreachable { failures, .. }) = s.reasons().last().copied() else {
        panic!("{:?}", s.reasons())
    };
    assert_eq!(failures.count, 3);
    assert_eq!(failures.last, Some(ProbeResult::Refused));
}

#[test]
fn a_full_master_whose_own_postgres_then_dies_steps_down() {
    let mut s = running_master();
    s.run(30 * SEC, FULL, replica(1));
    s.run(3 * SEC + 100, Some(ProbeResult::Refused), replica(1));
    assert!(
        matches!(s.state(), State::SteppingDown { .. }),
        "{:?}",
        s.state()
    );
    assert!(matches!(s.reasons().last(), Some(Reason::LocalDown { .. })));
}

#[test]
fn a_started_postgres_that_is_full_is_waited_for_not_declared_down() {
    let mut s = Shell::new(ha(1));
    s.handle(Event::Started(with_data(1, false)));
    s.run(10, None, master(1));
    s.complete(|k| matches!(k, CommandKind::StartPostgres(_)));
    assert!(matches!(s.state(), State::WaitingForLocal { .. }));
    s.run(60 * SEC, FULL, master(1));
    assert!(matches!(s.state(), State::WaitingForLocal { .. }));
    assert!(!s.ever(|k| matches!(k, CommandKind::StopPostgres(_))));
    s.run(SEC, replica(1), master(1));
    assert_eq!(s.state(), REPLICA);
}

#[test]
fn a_full_postgres_started_as_master_that_sees_another_master_applies_the_split_brain_rule() {
    // It cannot say its role, but it was started as master: a peer master in sight is a
    // split-brain now, not once a probe gets through.
    let mut s = Shell::new(both_stop(ha(0)));
    s.handle(Event::Started(with_data(1, true)));
    s.run(16 * SEC, None, Some(ProbeResult::Refused));
    s.complete(|k| matches!(k, CommandKind::StartPostgres(StartAs::Master)));
    s.run(2 * SEC, FULL, master(1));
    assert!(
        matches!(
            s.state(),
            State::SteppingDown {
                then: AfterStop::Fence
            }
        ),
        "{:?}",
        s.state()
    );
    assert!(matches!(
        s.reasons().last(),
        Some(Reason::SplitBrain { .. })
    ));
}

#[test]
fn a_restarted_node_does_not_lead_while_its_peer_is_alive_but_overloaded() {
    // The peer may be the master, only too full to say so: leading on local data would make
    // a second master (and the blind one would lose the writes of the other).
    let mut s = Shell::new(ha(1));
    s.handle(Event::Started(with_data(1, false)));
    // Grace for index 1 is 15 + 5 s; a minute of "too many clients".
    s.run(60 * SEC, None, FULL);
    assert!(
        matches!(s.state(), State::Electing { .. }),
        "{:?}",
        s.state()
    );
    assert!(!s.ever(|k| matches!(k, CommandKind::StartPostgres(_))));
    // One transition names the peer, not one per round.
    let waits = s
        .reasons()
        .iter()
        .filter(|r| matches!(r, Reason::PeerOverloaded { .. }))
        .count();
    assert_eq!(waits, 1, "{:?}", s.reasons());
    let text = Reason::PeerOverloaded { peer: PeerId(0) }
        .describe(s.node.config())
        .to_string();
    assert!(
        text.contains("db0") && text.contains("overloaded"),
        "{text}"
    );
    // Released: it answers master, and the node follows it.
    s.run(SEC, None, master(1));
    assert!(
        matches!(
            s.state(),
            State::Starting {
                target: StartAs::Replica { .. }
            }
        ),
        "{:?}",
        s.state()
    );
}

#[test]
fn a_restarted_node_leads_at_grace_once_its_overloaded_peer_is_gone() {
    let mut s = Shell::new(ha(1));
    s.handle(Event::Started(with_data(1, true)));
    s.run(30 * SEC, None, FULL);
    assert!(matches!(s.state(), State::Electing { .. }));
    // The peer's postgres is gone: at the next deadline the grace rule leads.
    s.run(10 * SEC, None, Some(ProbeResult::Refused));
    assert_eq!(
        s.state(),
        State::Starting {
            target: StartAs::Master
        }
    );
    let Some(Reason::GraceExpired { waited_ms, .. }) = s.reasons().last().copied() else {
        panic!("{:?}", s.reasons())
    };
    assert!(
        waited_ms >= 30 * SEC,
        "the wait is counted from its start: {waited_ms}"
    );
}

#[test]
fn index_zero_does_not_initdb_while_a_peer_is_alive_but_overloaded() {
    let mut s = Shell::new(ha(0));
    s.handle(Event::Started(empty()));
    s.run(30 * SEC, None, FULL);
    assert!(
        matches!(s.state(), State::Discovering { .. }),
        "{:?}",
        s.state()
    );
    assert!(!s.ever(|k| *k == CommandKind::InitDataDir));
    s.run(SEC, None, master(1));
    assert_eq!(s.state(), State::Cloning { from: PeerId(0) });
}

#[test]
fn a_master_whose_peer_answers_overloaded_stays_master() {
    let mut s = running_master();
    s.run(60 * SEC, master(1), FULL);
    assert_eq!(s.state(), State::Master);
    assert!(!s.ever(|k| matches!(k, CommandKind::StopPostgres(_))));
}

#[test]
fn a_star_replica_does_not_leave_a_full_upstream_for_another_master_on_the_same_timeline() {
    let mut s = Shell::new(star_db1());
    s.handle(Event::Started(with_data(1, false)));
    let before = |p: Option<PeerId>| match p {
        None => replica(1),
        Some(PeerId(0)) => master(1),
        Some(_) => Some(ProbeResult::Refused),
    };
    s.run_with(10, before);
    s.complete(|k| matches!(k, CommandKind::StartPostgres(_)));
    s.run_with(3 * SEC, before);
    assert_eq!(s.state(), REPLICA);
    // db0, the upstream, fills up; db2 claims master on the same timeline: nothing says db0
    // is gone, so the replica stays with it.
    s.run_with(10 * SEC, |p| match p {
        None => replica(1),
        Some(PeerId(0)) => FULL,
        Some(_) => master(1),
    });
    assert_eq!(s.state(), REPLICA);
    assert!(!s.ever(|k| matches!(k, CommandKind::Follow { .. })));
    // An operator's promotion of db2 (a newer timeline) is still followed.
    s.run_with(2 * SEC, |p| match p {
        None => replica(1),
        Some(PeerId(0)) => FULL,
        Some(_) => master(2),
    });
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(1)
        }
    );
}

#[test]
fn a_clone_whose_postgres_is_full_at_once_is_known_to_be_on_its_source_timeline() {
    // Old data on timeline 1 that ran as master; db0 is master on timeline 2: re-clone. The
    // clone is full from its first moment, so no local probe tells its timeline: the core
    // must not keep the old data's (a split-brain decision on timeline 1 would be wrong).
    let mut s = Shell::new(ha(1));
    s.handle(Event::Started(with_data(1, true)));
    s.run(10, None, master(2));
    assert!(
        matches!(s.state(), State::Cloning { .. }),
        "{:?}",
        s.state()
    );
    s.complete(|k| matches!(k, CommandKind::Basebackup { .. }));
    assert_eq!(s.node.local_timeline(), Some(2));
    s.complete(|k| matches!(k, CommandKind::StartPostgres(_)));
    s.run(5 * SEC, FULL, master(2));
    assert_eq!(s.node.local_timeline(), Some(2));
    // Its postgres dies before ever answering: what it steps down with is timeline 2 data.
    s.run(4 * SEC, Some(ProbeResult::Refused), master(2));
    assert!(
        matches!(s.state(), State::SteppingDown { .. }),
        "{:?}",
        s.state()
    );
    assert_eq!(s.node.local_timeline(), Some(2));
}
