//! Snapshot tests of `pgha explain` for a promote, a split-brain stop, an isolated master's
//! stop and a grace-expired self-election. Regenerate with `UPDATE_SNAPSHOTS=1 cargo test -p pgha-journal --test explain`
//! and review the diff.

mod common;

use std::path::Path;

use common::Cluster;
use pgha_journal::JournalFile;
use pgha_journal::Options;
use pgha_journal::explain::{self, WhyTarget};
use pgha_sim::Fault;

fn files(dir: &Path) -> Vec<JournalFile> {
    ["db0", "db1"]
        .iter()
        .map(|n| JournalFile::read(common::journal_path(dir, n)).expect("read"))
        .collect()
}

fn check(name: &str, dir: &Path, text: &str) {
    let text = text.replace(&dir.display().to_string(), "<dir>");
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, &text).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert!(
        want == text,
        "explain output changed for {name}; rerun with UPDATE_SNAPSHOTS=1 and review.\n--- want\n{want}\n--- got\n{text}"
    );
}

fn why_of(files: &[JournalFile], node: &str, code: &str) -> String {
    let e = explain::timeline(files)
        .into_iter()
        .find(|e| e.node == node && e.code == code)
        .unwrap_or_else(|| panic!("no {code} transition of {node}"));
    let w = explain::why(
        files,
        &WhyTarget::Seq {
            node: Some(node.into()),
            seq: e.seq,
        },
    )
    .expect("why");
    explain::render_why(&w)
}

fn scenario(name: &str, make: fn(Option<&Path>) -> Cluster, node: &str, code: &str) {
    let dir = common::tempdir(&format!("explain-{name}"));
    drop(make(Some(&dir)));
    let fs = files(&dir);
    check(
        &format!("{name}-timeline"),
        &dir,
        &explain::render_timeline(&fs),
    );
    check(
        &format!("{name}-failovers"),
        &dir,
        &explain::render_failovers(&fs),
    );
    check(&format!("{name}-why"), &dir, &why_of(&fs, node, code));
    // The JSON forms parse.
    for j in [explain::timeline_json(&fs), explain::failovers_json(&fs)] {
        let v: serde_json::Value = serde_json::from_str(&j).expect("json");
        assert!(v.is_object());
    }
}

#[test]
fn explain_of_a_promotion_reads_like_an_incident_report() {
    scenario("promote", common::promote, "db1", "master_unreachable");
}

#[test]
fn explain_of_a_split_brain_stop_reads_like_an_incident_report() {
    // db0 sees db1's newer timeline first and steps down for it; db1, still seeing db0 as a
    // master, stops on the both-stop rule.
    scenario("split-brain", common::split_brain, "db1", "split_brain");
}

#[test]
fn explain_of_an_isolated_master_that_fenced_itself_reads_like_an_incident_report() {
    scenario("isolated", common::isolated, "db0", "isolated");
}

#[test]
fn explain_of_a_grace_expired_self_election_reads_like_an_incident_report() {
    scenario(
        "grace-expired",
        common::grace_expired,
        "db1",
        "grace_expired",
    );
}

#[test]
fn why_at_a_time_finds_the_last_state_change_before_it() {
    let dir = common::tempdir("explain-at");
    drop(common::promote(Some(&dir)));
    let fs = files(&dir);
    let at = pgha_journal::time::parse_utc("10:30:33.100", common::WALL_BASE).expect("time");
    let w = explain::why(
        &fs,
        &WhyTarget::At {
            node: Some("db1".into()),
            wall_ms: at,
        },
    )
    .expect("why");
    assert_eq!(w.transition.to, "promoting");
    let e = explain::why(&fs, &WhyTarget::Seq { node: None, seq: 5 }).expect_err("ambiguous");
    assert!(e.to_string().contains("--node"), "{e}");
}

/// Two unrelated clusters' incidents, the second `shift_ms` later on the wall clock and its
/// master killed `delay_ms` later after its bootstrap.
fn two_clusters(
    name: &str,
    shift_ms: u64,
    delay_ms: u64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let d1 = common::tempdir(&format!("{name}-1"));
    let d2 = common::tempdir(&format!("{name}-2"));
    drop(common::promote(Some(&d1)));
    let mut w = common::bootstrap(|_| {});
    w.run_for(delay_ms);
    w.inject(Fault::KillPostgres(0));
    w.run_for(30_000);
    // And back: db0 rejoined as a replica; db1 dies, db0 promotes, db1 sees it.
    w.inject(Fault::KillPostgres(1));
    w.run_for(30_000);
    drop(common::record(
        w,
        Some(&d2),
        &Options::default(),
        common::WALL_BASE + shift_ms,
    ));
    (d1, d2)
}

#[test]
fn the_same_journal_given_twice_is_refused_rather_than_doubled() {
    let dir = common::tempdir("explain-twice");
    drop(common::promote(Some(&dir)));
    let p = common::journal_path(&dir, "db0");
    let fs = vec![
        JournalFile::read(&p).expect("read"),
        JournalFile::read(&p).expect("read"),
    ];
    let e = explain::check_set(&fs).expect_err("the same file twice");
    assert!(e.contains("given twice"), "{e}");
}

#[test]
fn journals_of_one_node_name_from_two_clusters_are_refused() {
    let (d1, d2) = two_clusters("explain-samename", 5_000, 0);
    let fs = vec![
        JournalFile::read(common::journal_path(&d1, "db0")).expect("read"),
        JournalFile::read(common::journal_path(&d1, "db1")).expect("read"),
        JournalFile::read(common::journal_path(&d2, "db0")).expect("read"),
    ];
    let e = explain::check_set(&fs).expect_err("two journals of db0");
    assert!(e.contains("both journals of node db0"), "{e}");
}

#[test]
fn clock_bounds_from_unrelated_clusters_are_never_printed_as_an_inverted_interval() {
    // db0 of one cluster beside db1 of another whose incident came a little later: db1's
    // promotion pairs with observations db0 made of a different db1.
    let mut contradictions = 0;
    for (shift, delay) in [
        (1_000, 0),
        (3_000, 20_000),
        (7_000, 60_000),
        (20_000, 5_000),
    ] {
        let (d1, d2) = two_clusters(&format!("explain-unrelated-{shift}"), shift, delay);
        let fs = vec![
            JournalFile::read(common::journal_path(&d1, "db0")).expect("read"),
            JournalFile::read(common::journal_path(&d2, "db1")).expect("read"),
        ];
        for b in explain::clock_bounds(&fs) {
            if let (Some(lo), Some(hi)) = (b.min_ms, b.max_ms) {
                assert_eq!(b.consistent, lo <= hi, "{b:?}");
                let text = b.to_string();
                if lo > hi {
                    contradictions += 1;
                    assert!(text.contains("contradict"), "{text}");
                }
            }
        }
        // The report never states an interval whose lower end is above its upper end.
        let text = explain::render_timeline(&fs);
        for b in explain::clock_bounds(&fs).iter().filter(|b| !b.consistent) {
            assert!(!text.contains(&format!("{}'s clock minus", b.b)), "{text}");
            assert!(text.contains("contradict"), "{text}");
        }
    }
    assert!(
        contradictions > 0,
        "no schedule here produced contradicting observations"
    );
}

#[test]
fn explain_names_where_a_re_clone_set_the_replaced_data_aside() {
    use pgha_core::*;
    let config = Config::ha_pair("db1", 1, "db0", 0);
    let text = "[node]\nname = \"db1\"\ndata_dir = \"/srv/pg/db1\"\n";
    let header = pgha_journal::Header::new(config, text);
    let mut r = pgha_journal::Recorder::in_memory(header).expect("journal");
    let facts = LocalFacts {
        data_dir: DataDir::Present {
            timeline: 1,
            lsn: Lsn(10),
            was_master: true,
        },
        postgres_running: false,
        fenced: false,
    };
    let step = r
        .step(Timestamp(0), 1_000, Input::Event(Event::Started(facts)))
        .expect("step");
    let probe = step
        .commands
        .iter()
        .find(|c| c.kind == CommandKind::ProbePeer(PeerId(0)))
        .expect("a peer probe")
        .id;
    let step = r
        .step(
            Timestamp(10),
            1_010,
            Input::Event(Event::PeerProbe {
                id: probe,
                peer: PeerId(0),
                result: ProbeResult::Master {
                    timeline: 2,
                    lsn: Lsn(100),
                },
            }),
        )
        .expect("step");
    let clone = step
        .commands
        .iter()
        .find(|c| matches!(c.kind, CommandKind::Basebackup { .. }))
        .expect("a re-clone")
        .id;
    r.step(
        Timestamp(500),
        1_500,
        Input::Event(Event::CommandDone {
            id: clone,
            outcome: Ok(()),
            duration_ms: 490,
        }),
    )
    .expect("step");
    let run = r.run();
    let file = r.read().expect("read");
    let entries = explain::timeline(&[file]);
    let e = entries
        .iter()
        .find(|e| e.code == "recloned")
        .expect("a recloned transition");
    let want = format!("/srv/pg/db1.pgha-discarded-r{run}-c{}", clone.0);
    assert!(e.reason.contains(&want), "{} lacks {want}", e.reason);
}

#[test]
fn a_master_that_stops_its_silent_postgres_is_listed_among_the_failovers() {
    // db0's postgres hangs (accepts connections, never answers): db0 kills it after
    // master_give_up, before db1's three 5 s probe timeouts end in a promotion.
    let dir = common::tempdir("explain-silent");
    let mut w = common::bootstrap(|_| {});
    w.inject(Fault::Hang(0));
    w.run_for(30_000);
    drop(common::record(
        w,
        Some(&dir),
        &Options::default(),
        common::WALL_BASE,
    ));
    let fs = files(&dir);
    let text = explain::render_failovers(&fs);
    let stop = explain::failovers(&fs)
        .into_iter()
        .find(|f| f.kind == "silent local postgres stop")
        .unwrap_or_else(|| panic!("no silent-postgres stop:\n{text}"));
    assert_eq!(stop.node, "db0");
    assert!(stop.is_stop() && stop.stopped_utc.is_some(), "{text}");
    assert!(text.contains("silent local postgres stop by db0"), "{text}");
    let why = why_of(&fs, "db0", "local_silent");
    assert!(why.contains("replication.master_give_up = 12 s"), "{why}");
    assert!(
        why.contains("local: master tl 1"),
        "the last answers: {why}"
    );
    assert!(why.contains("sign of life"), "{why}");
}
