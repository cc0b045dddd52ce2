//! Client connection exhaustion (issue 10, item 8): superuser sessions fill every slot of
//! `max_connections`, so pgha's own probes get "sorry, too many clients already" (SQLSTATE
//! 53300). That is a live server, not a dead one: no failover, and the health checks keep
//! the full master in the pool.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgha_core::{Event, Input, ProbeResult, State};
use pgha_tests::{Cluster, Extra, http, wait_for};
use postgres::error::SqlState;

use super::bootstrapped;

/// Superuser sessions on node `i` until the server has refused ten attempts in a row with
/// "too many connections" (pgha's probes come and go: their slots are taken as they free
/// up). Held until dropped.
fn fill_connections(c: &Cluster, i: usize) -> Vec<postgres::Client> {
    let mut held = Vec::new();
    let mut refused_in_a_row = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused_in_a_row < 10 {
        assert!(
            Instant::now() < deadline,
            "could not fill {}'s connections within 60 s ({} held)",
            c.nodes[i].name,
            held.len()
        );
        match c.connect(i) {
            Ok(client) => {
                held.push(client);
                refused_in_a_row = 0;
            }
            Err(e) if e.code() == Some(&SqlState::TOO_MANY_CONNECTIONS) => {
                refused_in_a_row += 1;
                std::thread::sleep(Duration::from_millis(30));
            }
            Err(e) => panic!("connect to {}: {e}", c.nodes[i].name),
        }
    }
    eprintln!(
        "{}: {} sessions hold every slot",
        c.nodes[i].name,
        held.len()
    );
    held
}

/// How many inputs of node `i`'s journal match, once the journal can be read.
fn journal_count(c: &Cluster, i: usize, f: impl Fn(&Input) -> bool) -> Option<usize> {
    let j = pgha_journal::JournalFile::read(&c.nodes[i].journal).ok()?;
    Some(
        j.runs
            .iter()
            .flat_map(|r| &r.steps)
            .filter(|s| f(&s.input))
            .count(),
    )
}

fn local_overloaded(i: &Input) -> bool {
    matches!(
        i,
        Input::Event(Event::LocalProbe {
            result: ProbeResult::Overloaded,
            ..
        })
    )
}

fn peer_overloaded(i: &Input) -> bool {
    matches!(
        i,
        Input::Event(Event::PeerProbe {
            result: ProbeResult::Overloaded,
            ..
        })
    )
}

/// Whether node `i`'s journal records a transition into a state that `to` matches.
fn journal_entered(c: &Cluster, i: usize, to: fn(&State) -> bool) -> bool {
    let j = pgha_journal::JournalFile::read(&c.nodes[i].journal).expect("read the journal");
    j.runs
        .iter()
        .flat_map(|r| &r.steps)
        .flat_map(|s| &s.transitions)
        .any(|t| to(&t.value.to) && !to(&t.value.from))
}

/// Waits until node `i`'s journal holds at least `n` inputs that `f` matches: probe rounds
/// counted by the daemon's own record, not by the wall clock.
fn wait_rounds(c: &Cluster, i: usize, n: usize, what: &str, f: fn(&Input) -> bool) -> usize {
    wait_for(
        Duration::from_secs(60),
        &format!("{n} {what} in {}'s journal", c.nodes[i].name),
        || journal_count(c, i, f).filter(|k| *k >= n),
    )
}

pub(crate) fn full_master_is_not_failed_over(rt: &'static str) {
    let c = bootstrapped("full-master", rt, Extra::default());
    let sessions = fill_connections(&c, 0);
    // Both daemons' probes of db0 now get "too many clients": db0's own and db1's.
    let before_local = journal_count(&c, 0, local_overloaded).unwrap_or(0);
    let before_peer = journal_count(&c, 1, peer_overloaded).unwrap_or(0);
    // Twenty probe rounds of each (psql_error_count is 3: the failover took three).
    wait_rounds(
        &c,
        0,
        before_local + 20,
        "overloaded local probes",
        local_overloaded,
    );
    wait_rounds(
        &c,
        1,
        before_peer + 20,
        "overloaded probes of db0",
        peer_overloaded,
    );
    let st = c.status(0).expect("db0's status");
    assert_eq!(st["state"], "master", "{st}\n{}", c.logs());
    assert_eq!(st["local"]["result"], "overloaded", "{st}");
    assert_eq!(c.state(1).as_deref(), Some("replica"), "{}", c.logs());
    // The full master stays in HAProxy's write pool: /primary 200, `pgha check primary` 0.
    let (code, body) = http(c.nodes[0].api, "GET", "/primary").expect("GET /primary");
    assert_eq!(code, 200, "{body}");
    let out = c.pgha(&[
        "check",
        "--config",
        c.nodes[0].config.to_str().unwrap(),
        "primary",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        c.log(0).contains("too many clients"),
        "the daemon's log does not say what happened:\n{}",
        c.log(0)
    );
    drop(sessions);
    // Released: db0 answers as master again, db1 still streams from it.
    c.wait_state(0, "master", Duration::from_secs(20));
    c.sql(0, "insert into t values (3, 'three')");
    c.wait_rows(1, "select count(*) from t", &["3"], Duration::from_secs(20));
    assert_eq!(c.state(1).as_deref(), Some("replica"));
    assert!(
        !journal_entered(&c, 1, |s| matches!(s, State::Promoting { .. })),
        "db1 promoted\n{}",
        c.logs()
    );
    assert!(
        !journal_entered(&c, 0, |s| matches!(s, State::SteppingDown { .. })),
        "db0 stepped down\n{}",
        c.logs()
    );
    assert_eq!(c.status(0).unwrap()["timeline"], 1);
    c.assert_replay(0);
    c.assert_replay(1);
}

pub(crate) fn full_replica_still_promotes(rt: &'static str) {
    let mut c = bootstrapped("full-replica", rt, Extra::default());
    let sessions = fill_connections(&c, 1);
    let before = journal_count(&c, 1, local_overloaded).unwrap_or(0);
    wait_rounds(
        &c,
        1,
        before + 5,
        "overloaded local probes",
        local_overloaded,
    );
    assert_eq!(c.state(1).as_deref(), Some("replica"), "{}", c.logs());
    // The master dies: the full replica must still promote (pg_promote() needs a slot it
    // cannot get; `pg_ctl promote` needs none).
    c.kill_daemon(0);
    c.signal_postmaster(0, Signal::SIGKILL);
    wait_for(Duration::from_secs(30), "db1 to be master", || {
        (c.state(1)? == "master").then_some(())
    });
    drop(sessions);
    c.wait_state(1, "master", Duration::from_secs(20));
    c.sql(1, "insert into t values (3, 'three')");
    assert_eq!(c.try_rows(1, "select count(*) from t").unwrap(), ["3"]);
    assert_eq!(c.status(1).unwrap()["timeline"], 2);
    assert!(
        c.log(1).contains("pg_ctl promote"),
        "the promotion did not go through pg_ctl:\n{}",
        c.log(1)
    );
    c.assert_replay(1);
}
