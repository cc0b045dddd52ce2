//! Issue 11: two-node mode and acknowledged writes. Each scenario runs a client that records
//! every write a server acknowledged ([`AckWriter`]) and checks them on the survivor: after a
//! partition (cut and healed between the nodes' forwarders, [`Partition`]), after a healed
//! split brain, and after both daemons restart. Order of events comes from the journals and
//! `/status`, never from durations.

use std::collections::BTreeSet;
use std::time::Duration;

use pgha_core::Transition;
use pgha_tests::partition::Partition;
use pgha_tests::{Ack, AckWriter, Cluster, Extra, ids_on, lost, parse_ids, wait_for};

use super::{BOOT, REJOIN, boot, bootstrapped, kill_master, stdout, stop_daemons};

/// The writer's pause between two acknowledged inserts.
const PACE: Duration = Duration::from_millis(5);
/// Enough for any state change of these scenarios with the fast profile.
const CHANGE: Duration = Duration::from_secs(30);

/// A two-node cluster whose nodes reach each other through a [`Partition`], with
/// `replication.isolation` set, booted (db0 master, db1 replica, table `t`).
fn partitioned(name: &str, rt: &'static str, isolation: &str) -> (Cluster, Partition) {
    let extra = Extra {
        replication: format!("isolation = \"{isolation}\""),
        ..Extra::default()
    };
    let mut c = Cluster::with(name, rt, 2, extra);
    let net = Partition::new(&mut c);
    (boot(c), net)
}

/// Waits until node `i` is a replica streaming from `master`.
fn following(c: &Cluster, i: usize, master: &str) {
    wait_for(
        REJOIN,
        &format!("{} to stream from {master}", c.nodes[i].name),
        || {
            let s = c.status(i)?;
            (s["state"] == "replica" && s["local"]["upstream"] == master).then_some(())
        },
    );
}

/// Every transition in node `i`'s journal, with the wall-clock time of its step.
fn transitions(c: &Cluster, i: usize) -> Vec<(u64, Transition)> {
    let f = pgha_journal::JournalFile::read(&c.nodes[i].journal).expect("read the journal");
    f.runs
        .iter()
        .flat_map(|r| &r.steps)
        .flat_map(|s| s.transitions.iter().map(|t| (s.wall_ms, t.value)))
        .collect()
}

/// When node `i` first entered `state` (its journal's wall clock), if it did.
fn first_entered(c: &Cluster, i: usize, state: &str) -> Option<u64> {
    transitions(c, i)
        .into_iter()
        .find(|(_, t)| t.to.name() == state)
        .map(|(at, _)| at)
}

/// Whether node `i`'s journal has a transition with reason `code`.
fn has_reason(c: &Cluster, i: usize, code: &str) -> bool {
    transitions(c, i)
        .iter()
        .any(|(_, t)| t.reason.code() == code)
}

/// The ids of `acks`.
fn ids(acks: &[Ack]) -> BTreeSet<i64> {
    acks.iter().map(|a| a.id).collect()
}

/// The ids in table `t` of the copy of node `i`'s data its re-clone set aside.
fn ids_set_aside(c: &Cluster, i: usize) -> BTreeSet<i64> {
    let kept = c.set_aside(i);
    let copy = kept
        .last()
        .unwrap_or_else(|| panic!("{} set no data aside\n{}", c.nodes[i].name, c.log(i)));
    parse_ids(c.rows_in_copy(copy, "select id from t"))
        .unwrap_or_else(|e| panic!("{}: {e}", copy.display()))
}

/// The acknowledged ids the new master db1 lacks, each of them in the copy of db0's data its
/// re-clone set aside.
fn lost_and_set_aside(c: &Cluster, acks: &[Ack]) -> BTreeSet<i64> {
    let gone: BTreeSet<i64> = lost(acks, &ids_on(c, 1)).into_iter().collect();
    let aside = ids_set_aside(c, 0);
    assert!(
        gone.is_subset(&aside),
        "lost and not set aside: {:?}",
        gone.difference(&aside)
    );
    gone
}

/// Waits until node `i`'s data holds every id in `want`.
fn wait_ids(c: &Cluster, i: usize, want: &BTreeSet<i64>) {
    wait_for(
        CHANGE,
        &format!("{} to hold every acknowledged id", c.nodes[i].name),
        || {
            let have = parse_ids(c.try_rows(i, "select id from t")).ok()?;
            want.is_subset(&have).then_some(())
        },
    );
}

/// Waits until `w` has `n` more acknowledged writes than `after`.
fn wait_acked(w: &AckWriter, n: usize, after: usize) {
    wait_for(CHANGE, &format!("{n} acknowledged writes"), || {
        (w.acked().len() >= after + n).then_some(())
    });
}

/// A writer on one session to node `i`'s postgres (what a client connected to the master
/// does), ids from `first` into table `t`.
fn session(c: &Cluster, i: usize, first: i64) -> AckWriter {
    AckWriter::session(&c.nodes[i].host, c.nodes[i].pg_port, "t", first, PACE)
}

/// Cuts the link both ways while `w` writes to db0 (master); returns when db1 is master, with
/// how many writes were acknowledged when that was seen.
fn cut_and_fail_over(c: &Cluster, net: &Partition, w: &AckWriter) -> usize {
    wait_acked(w, 20, 0);
    wait_for(CHANGE, "db1 to replicate the first writes", || {
        (ids_on(c, 1).len() >= 10).then_some(())
    });
    net.cut_between(0, 1);
    c.wait_state(1, "master", CHANGE);
    w.acked().len()
}

// ---- the scenarios ----------------------------------------------------------------------

fn partitioned_master_fences_before_the_promotion(rt: &'static str) {
    let (c, net) = partitioned("fence", rt, "fence");
    let w = session(&c, 0, 1000);
    let before_seen = cut_and_fail_over(&c, &net, &w);
    // Cut off, db0 stopped its postgres (its session with it) and waits, isolated, for news
    // from db1.
    c.wait_state(0, "isolated", CHANGE);
    assert!(has_reason(&c, 0, "isolated"), "{}", c.log(0));
    assert!(c.postmaster_pid(0).is_none(), "isolated db0 runs postgres");
    wait_for(CHANGE, "db0's session to end", || w.ended().then_some(()));
    net.heal_between(0, 1);
    following(&c, 0, "db1");
    assert_eq!(c.state(1).as_deref(), Some("master"));
    let acks = w.stop();
    // The order: db0's postgres was stopped (state isolated) before db1 began to promote.
    let fenced = first_entered(&c, 0, "isolated").expect("db0 never isolated");
    let promoting = first_entered(&c, 1, "promoting").expect("db1 never promoted");
    assert!(
        fenced <= promoting,
        "db0 was isolated at {fenced}, after db1 began promoting at {promoting}\n{}",
        c.explain().unwrap_or_default()
    );
    // So nothing the old master acknowledged came after the promotion ...
    let late = &acks[before_seen..];
    assert!(
        late.is_empty(),
        "acknowledged after the promotion: {late:?}"
    );
    // ... and what the promotion lost (acknowledged between the cut and the fence, never
    // shipped: replication is asynchronous) is in the data db0 set aside.
    let gone = lost_and_set_aside(&c, &acks);
    eprintln!(
        "[{rt}] fence: {} acknowledged, {} missing on the new master (acknowledged after the cut, before the fence), 0 after the promotion",
        acks.len(),
        gone.len()
    );
    c.assert_replay(0);
    c.assert_replay(1);
}

fn keep_serving_master_acknowledges_what_the_heal_sets_aside(rt: &'static str) {
    let (c, net) = partitioned("keepserving", rt, "keep-serving");
    let w = session(&c, 0, 1000);
    let before_seen = cut_and_fail_over(&c, &net, &w);
    // Cut off, db0 keeps serving and acknowledging: the partition window.
    wait_acked(&w, 20, before_seen);
    assert_eq!(c.state(0).as_deref(), Some("master"), "{}", c.logs());
    net.heal_between(0, 1);
    // db0 is on the older timeline: it steps down and re-clones from db1.
    following(&c, 0, "db1");
    let acks = w.stop();
    let late = ids(&acks[before_seen..]);
    // Every write acknowledged after the promotion is lost, and kept in the set-aside copy.
    let gone = lost_and_set_aside(&c, &acks);
    assert!(late.is_subset(&gone), "{:?}", late.difference(&gone));
    eprintln!(
        "[{rt}] keep-serving: {} acknowledged, {} lost ({} after the promotion), all in {}",
        acks.len(),
        gone.len(),
        late.len(),
        c.set_aside(0)
            .last()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    c.assert_replay(0);
    c.assert_replay(1);
}

fn stale_master_steps_down_and_the_new_masters_writes_survive(rt: &'static str) {
    let (c, net) = partitioned("stale", rt, "keep-serving");
    net.cut_between(0, 1);
    c.wait_state(1, "master", CHANGE);
    let pm1 = c.postmaster_pid(1).expect("db1's postmaster");
    let w = session(&c, 1, 1000);
    wait_acked(&w, 50, 0);
    // Two masters, each on its side.
    assert_eq!(c.state(0).as_deref(), Some("master"), "{}", c.logs());
    net.heal_between(0, 1);
    following(&c, 0, "db1");
    wait_acked(&w, 20, w.acked().len());
    assert!(!w.ended(), "db1 ended the writer's session\n{}", c.logs());
    let acks = w.stop();
    // Every id the new master acknowledged is on it, and reached the old master.
    let gone = lost(&acks, &ids_on(&c, 1));
    assert!(
        gone.is_empty(),
        "lost {} writes: {gone:?}\n{}",
        gone.len(),
        c.logs()
    );
    wait_ids(&c, 0, &ids(&acks));
    // The new master never stopped: same postmaster, never left the master state.
    assert_eq!(
        c.postmaster_pid(1),
        Some(pm1),
        "db1's postgres was restarted"
    );
    assert_eq!(c.state(1).as_deref(), Some("master"));
    let left: Vec<_> = transitions(&c, 1)
        .into_iter()
        .filter(|(_, t)| t.from.name() == "master")
        .collect();
    assert!(left.is_empty(), "db1 left master: {left:?}");
    let why = transitions(&c, 0)
        .into_iter()
        .rev()
        .find(|(_, t)| t.from.name() == "master")
        .map(|(_, t)| t.reason.code())
        .unwrap_or_default();
    assert!(
        why == "split_brain" || why == "peer_on_newer_timeline",
        "db0 left master for {why:?}:\n{}",
        c.explain().unwrap_or_default()
    );
    eprintln!(
        "[{rt}] stale master: {} acknowledged by the new master, 0 lost; db0 stepped down: {why}",
        acks.len()
    );
    c.assert_replay(0);
    c.assert_replay(1);
}

fn restarted_together_elect_the_more_advanced_data(rt: &'static str) {
    let mut c = bootstrapped("restartahead", rt, Extra::default());
    kill_master(&mut c);
    c.start(0);
    following(&c, 0, "db1");
    let w = session(&c, 1, 1000);
    wait_acked(&w, 20, 0);
    let mut acks = w.stop();
    stop_daemons(&mut c);
    // db0's postgres stops first; db1 acknowledges one more write, then stops: its data,
    // which ran as master, is ahead of db0's.
    c.pg_ctl_stop(0, "fast");
    let last = session(&c, 1, 100_000);
    wait_acked(&last, 1, 0);
    acks.extend(last.stop());
    c.pg_ctl_stop(1, "fast");
    c.start_all();
    c.wait_state(1, "master", BOOT);
    following(&c, 0, "db1");
    let gone = lost(&acks, &ids_on(&c, 1));
    assert!(gone.is_empty(), "lost {gone:?}\n{}", c.logs());
    wait_ids(&c, 0, &ids(&acks));
    // db0, whose grace ends first, deferred to db1 rather than leading.
    assert!(
        has_reason(&c, 0, "peer_ahead"),
        "db0 did not defer to db1:\n{}",
        c.explain().unwrap_or_default()
    );
    let f = pgha_journal::JournalFile::read(&c.nodes[0].journal).unwrap();
    let led = f.runs.last().unwrap().steps.iter().any(|s| {
        s.transitions
            .iter()
            .any(|t| matches!(t.value.to.name(), "master" | "promoting"))
    });
    assert!(!led, "db0 led after the restart\n{}", c.logs());
    c.assert_replay(0);
    c.assert_replay(1);
}

fn ahead_node_refuses_to_re_clone_from_a_master_behind_it(rt: &'static str) {
    let (mut c, net) = partitioned("peerbehind", rt, "fence");
    kill_master(&mut c);
    // db1, now master on timeline 2, acknowledges writes db0 never had; then it stops.
    let w = session(&c, 1, 1000);
    wait_acked(&w, 20, 0);
    let acks = w.stop();
    c.kill_daemon(1);
    c.pg_ctl_stop(1, "fast");
    // db0 comes back alone and leads on its own (older) data. It must not hear db1's daemon
    // (cut): told that db1's data is on a newer timeline, it would step down and db1 would
    // lead, the outcome without an operator; this is the case where the stale master stays.
    net.cut_api(0, 1);
    c.start(0);
    c.wait_state(0, "master", BOOT);
    c.start(1);
    let st = c.wait_state(1, "fenced", BOOT);
    assert_eq!(st["last_transition"]["reason_code"], "peer_behind", "{st}");
    assert!(c.postmaster_pid(1).is_none(), "fenced db1 runs postgres");
    // A plain recover is refused the same way.
    let refusals = || {
        transitions(&c, 1)
            .iter()
            .filter(|(_, t)| t.reason.code() == "peer_behind")
            .count()
    };
    let before = refusals();
    let out = c.pgha_on(1, "recover");
    assert!(out.status.success(), "{}", stdout(&out));
    wait_for(CHANGE, "db1 to refuse again", || {
        (refusals() > before && c.state(1)? == "fenced").then_some(())
    });
    // db1's acknowledged writes are still in its data dir, untouched.
    assert!(c.set_aside(1).is_empty(), "{:?}", c.set_aside(1));
    // `recover --force`: re-cloned from db0, the writes kept in the set-aside copy.
    let cfg = c.nodes[1].config.display().to_string();
    let out = c.pgha(&["recover", "--force", "--config", &cfg]);
    assert!(out.status.success(), "{}", stdout(&out));
    following(&c, 1, "db0");
    let aside = ids_set_aside(&c, 1);
    assert!(
        ids(&acks).is_subset(&aside),
        "not set aside: {:?}",
        ids(&acks).difference(&aside)
    );
    net.heal_between(0, 1);
    c.assert_replay(0);
    c.assert_replay(1);
}

both_runtimes! {
    a_partitioned_master_fences_itself_before_the_replica_promotes_and_acknowledges_nothing_after_it => partitioned_master_fences_before_the_promotion;
    with_isolation_keep_serving_the_partitioned_master_keeps_acknowledging_and_the_heal_sets_those_writes_aside => keep_serving_master_acknowledges_what_the_heal_sets_aside;
    after_a_healed_partition_the_stale_master_on_the_older_timeline_stops_and_rejoins_and_no_acknowledged_write_of_the_new_master_is_lost => stale_master_steps_down_and_the_new_masters_writes_survive;
    both_daemons_restarted_together_after_a_failover_elect_the_node_with_the_more_advanced_data => restarted_together_elect_the_more_advanced_data;
    a_node_whose_data_ran_as_master_never_re_clones_from_a_master_behind_it_until_recover_force => ahead_node_refuses_to_re_clone_from_a_master_behind_it;
}
