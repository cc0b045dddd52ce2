//! Recorded runs replay exactly; what-if replays report differences as decisions.

mod common;

use common::Cluster;
use pgha_journal::{JournalError, JournalFile, Options, Retention, replay, whatif};
use pgha_sim::Fault;

fn replay_all(c: &Cluster) {
    for i in 0..c.recorders.len() {
        let f = c.recorder(i).read().expect("read");
        let r = replay::replay(&f).expect("replay");
        assert!(r.identical(), "{r}");
        assert!(r.transitions > 0 && r.commands > 0, "{r}");
    }
}

#[test]
fn replay_of_a_recorded_promotion_is_identical() {
    replay_all(&common::promote(None));
}

#[test]
fn replay_of_a_recorded_split_brain_stop_is_identical() {
    replay_all(&common::split_brain(None));
}

#[test]
fn replay_of_a_journal_with_several_daemon_runs_replays_each_from_a_fresh_core() {
    let dir = common::tempdir("runs");
    drop(common::grace_expired(Some(&dir)));
    let f = JournalFile::read(common::journal_path(&dir, "db1")).expect("read");
    assert_eq!(f.runs.len(), 2);
    let r = replay::replay(&f).expect("replay");
    assert!(r.identical(), "{r}");
    assert_eq!(r.runs, 2);
}

#[test]
fn a_replay_with_a_different_core_reports_the_first_divergence() {
    // Replaying db1's recording against db0's configuration must diverge at the very start.
    let c = common::promote(None);
    let mut f = c.recorder(1).read().expect("read");
    let other = c.recorder(0).header().config.clone();
    f.runs[0].header.config = other;
    let r = replay::replay(&f).expect("replay");
    let d = r.divergence.expect("diverges");
    assert_eq!(d.run, 1);
    assert!(d.expected.contains("waiting_for_master"), "{d}");
}

#[test]
fn what_if_with_the_recorded_settings_reports_no_difference() {
    for c in [
        common::promote(None),
        common::split_brain(None),
        common::grace_expired(None),
    ] {
        for i in 0..2 {
            let f = c.recorder(i).read().expect("read");
            let r = whatif::what_if(&f, &[]).expect("what-if");
            assert!(r.no_difference(), "{r}");
            // Setting a key to its recorded value is the same.
            let same = vec![("replication.psql_error_count".to_string(), "3".to_string())];
            let r = whatif::what_if(&f, &same).expect("what-if");
            assert!(r.no_difference(), "{r}");
        }
    }
}

#[test]
fn what_if_with_psql_error_count_5_reports_a_later_promotion() {
    let c = common::promote(None);
    let f = c.recorder(1).read().expect("read");
    let set = vec![("replication.psql_error_count".to_string(), "5".to_string())];
    let r = whatif::what_if(&f, &set).expect("what-if");
    let text = r.to_string();
    assert!(!r.no_difference(), "{text}");
    let run = &r.runs[0];
    let orig = run
        .original
        .iter()
        .find(|d| d.what == "promoted")
        .expect("promoted");
    let alt = run
        .alternate
        .iter()
        .find(|d| d.what == "promoted")
        .expect(&text);
    // Two more failed probes at the 1 s probe interval: the recorded answers to db1's probes
    // of db0 at 34.020 s and 35.015 s (the simulated network takes 2-40 ms to answer).
    assert_eq!(alt.mono_ms - orig.mono_ms, 2_007, "{text}");
    assert!(
        text.contains(
            "with psql_error_count=5 it would have promoted at 10:30:35.015 (2.007 s later"
        ),
        "{text}"
    );
}

#[test]
fn what_if_with_a_detection_window_longer_than_the_outage_reports_no_promotion() {
    // db0 is unreachable for 17 s: with 3 failures of 5 s timeouts db1 promotes after 16 s;
    // with psql_error_count=5 the 26 s window outlasts the outage. The recording ends soon
    // after the heal (before the split-brain stop it leads to changes what db0 answers).
    let mut w = common::bootstrap(|_| {});
    w.inject(Fault::Partition(0, 1));
    w.run_for(17_000);
    w.inject(Fault::Heal(0, 1));
    w.run_for(2_000);
    let c = common::record(w, None, &Options::default(), common::WALL_BASE);
    let f = c.recorder(1).read().expect("read");
    assert!(
        f.runs[0]
            .steps
            .iter()
            .flat_map(|s| &s.transitions)
            .any(|t| t.value.to.name() == "promoting"),
        "the recording promotes"
    );
    let set = vec![("replication.psql_error_count".to_string(), "5".to_string())];
    let r = whatif::what_if(&f, &set).expect("what-if");
    let text = r.to_string();
    assert!(text.contains("it would not have promoted"), "{text}");
}

#[test]
fn what_if_names_an_unknown_key_or_a_bad_value() {
    let c = common::promote(None);
    let f = c.recorder(1).read().expect("read");
    let e = whatif::what_if(&f, &[("replication.nope".into(), "1".into())]).expect_err("unknown");
    assert!(
        matches!(&e, JournalError::Setting { key, .. } if key == "replication.nope"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("unknown setting replication.nope"),
        "{e}"
    );
    let e = whatif::what_if(&f, &[("replication.grace".into(), "soon".into())]).expect_err("bad");
    assert!(
        e.to_string()
            .contains("bad value \"soon\" for replication.grace"),
        "{e}"
    );
    let e = whatif::what_if(&f, &[("replication.psql_error_count".into(), "0".into())])
        .expect_err("range");
    assert!(e.to_string().contains("psql_error_count"), "{e}");
    assert!(whatif::parse_setting("novalue").is_err());
}

#[test]
fn a_pruned_journal_starts_at_a_snapshot_and_still_replays_exactly() {
    let dir = common::tempdir("retention");
    let mut w = common::bootstrap(|_| {});
    w.run_for(600_000);
    let options = Options {
        snapshot_every_ms: Some(60_000),
        retention: None,
        durable: false,
    };
    let mut c = common::record(w, Some(&dir), &options, common::WALL_BASE);
    let before = c.recorder(1).read().expect("read");
    assert!(
        before.runs[0].snapshots.len() >= 9,
        "snapshots {}",
        before.runs[0].snapshots.len()
    );
    let r = replay::replay(&before).expect("replay");
    assert!(r.identical() && r.snapshots >= 9, "{r}");
    // Keep 5 minutes; the bootstrap incident (first 12 s) is whole outside the window.
    let retention = Retention {
        max_age_ms: Some(300_000),
        max_bytes: None,
        incident_window_ms: 60_000,
    };
    let now = c.wall_now();
    let pruned = c.recorders[1].prune(now, &retention).expect("prune");
    assert!(pruned.deleted_rows > 1000, "{pruned:?}");
    drop(c);
    let after = JournalFile::read(common::journal_path(&dir, "db1")).expect("verified after prune");
    let start = after.runs[0]
        .start
        .as_ref()
        .expect("the retained part starts at a snapshot");
    // A codec 2 snapshot: the peer daemon's last report is part of the node.
    let report = start.peer_report(pgha_core::PeerId(0));
    assert!(
        matches!(report, Some((_, Some(r))) if r.role == pgha_core::Role::Master),
        "{report:?}"
    );
    assert!(after.rows < before.rows);
    let r = replay::replay(&after).expect("replay");
    assert!(r.identical(), "{r}");
}

#[test]
fn retention_never_cuts_inside_an_incident_window() {
    let mut w = common::bootstrap(|_| {});
    w.run_for(60_000);
    let options = Options {
        snapshot_every_ms: Some(10_000),
        retention: None,
        durable: false,
    };
    let mut c = common::record(w, None, &options, common::WALL_BASE);
    let now = c.wall_now();
    // A window of 10 minutes around the bootstrap transitions covers everything recorded.
    let retention = Retention {
        max_age_ms: Some(1_000),
        max_bytes: Some(1),
        incident_window_ms: 600_000,
    };
    let pruned = c.recorders[1].prune(now, &retention).expect("prune");
    assert_eq!(pruned.deleted_rows, 0);
}
