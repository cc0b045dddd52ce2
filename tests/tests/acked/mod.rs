//! Issue 11: no acknowledged write is lost in two-node mode. A client records every write the
//! server acknowledged ([`AckWriter`]); each scenario looks for them on the survivor.
//! Every scenario runs under both runtimes.

use std::time::Duration;

use nix::sys::signal::Signal;
use pgha_tests::{AckWriter, Cluster, Extra, Value, ids_on, lost, wait_for};

use super::bootstrapped;

const REJOIN: Duration = Duration::from_secs(60);

/// `pgha explain --json` of every node's journal: the cluster's transitions, by wall clock.
fn timeline(c: &Cluster) -> Vec<Value> {
    let journals: Vec<String> = c
        .nodes
        .iter()
        .map(|n| n.journal.display().to_string())
        .collect();
    let mut args = vec!["explain", "--json"];
    args.extend(journals.iter().map(String::as_str));
    let out = c.pgha(&args);
    assert!(
        out.status.success(),
        "pgha explain --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("explain's JSON");
    v["timeline"].as_array().cloned().unwrap_or_default()
}

/// The position in `timeline` of the first transition of `node` matching `f`.
fn first(timeline: &[Value], node: &str, f: impl Fn(&Value) -> bool) -> Option<usize> {
    timeline.iter().position(|e| e["node"] == node && f(e))
}

fn a_hung_master_stops_its_own_backends_first(rt: &'static str) {
    let c = bootstrapped("hungacked", rt, Extra::default());
    let n0 = &c.nodes[0];
    // A session opened before the hang: its backend keeps committing while the postmaster is
    // stopped, which pg_ctl cannot reach.
    let w = AckWriter::session(&n0.host, n0.pg_port, "t", 1000, Duration::from_millis(2));
    wait_for(
        Duration::from_secs(20),
        "acknowledged writes on db0",
        || (w.count_on(0) >= 20).then_some(()),
    );
    let pm = c.signal_postmaster(0, Signal::SIGSTOP);
    c.wait_state(1, "master", Duration::from_secs(30));
    // db0's daemon killed the postmaster with its backends: nothing may be left to continue
    // (a postmaster still there would now act on the signals it was sent while stopped).
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pm), Signal::SIGCONT);
    wait_for(Duration::from_secs(30), "db0's session to end", || {
        w.ended().then_some(())
    });
    let acked = w.stop();
    let lost = lost(&acked, &ids_on(&c, 1));
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}\n{}",
        lost.len(),
        acked.len(),
        c.logs()
    );
    // The master gave up on its postgres (and killed it) before the replica promoted.
    let t = timeline(&c);
    let silent = first(&t, "db0", |e| e["code"] == "local_silent");
    let promoting = first(&t, "db1", |e| e["to"] == "promoting");
    assert!(
        silent.is_some() && promoting.is_some() && silent < promoting,
        "db0 local_silent at {silent:?}, db1 promoting at {promoting:?}:\n{}",
        serde_json::to_string_pretty(&t).unwrap_or_default()
    );
    assert!(
        c.log(0).contains("immediate stop of") && c.log(0).contains("(walsender)"),
        "{}",
        c.log(0)
    );
    // db0 rejoins the new master.
    let st = c.wait_state(0, "replica", REJOIN);
    assert_eq!(st["local"]["upstream"], "db1", "{st}");
    c.assert_replay(0);
    c.assert_replay(1);
}

both_runtimes! {
    a_hung_master_stops_its_own_backends_before_the_replica_promotes_and_no_acknowledged_write_is_lost => a_hung_master_stops_its_own_backends_first;
}
