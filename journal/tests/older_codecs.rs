//! Journals written by an older pgha (codec 1: committed fixtures written at commit 58cacff,
//! see `tests/fixtures/codec1/README.md`) still open, explain, replay and what-if.

mod common;

use std::path::{Path, PathBuf};

use pgha_core::{Config, DataDir, Event, Input, Isolation, LocalFacts, SplitBrainRule, Timestamp};
use pgha_journal::explain::{self, WhyTarget};
use pgha_journal::store::Store;
use pgha_journal::{CODEC_VERSION, Header, JournalFile, Recorder, codec, replay, whatif};

fn fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/codec1")
        .join(name)
}

/// A copy of a fixture directory: reading a WAL-mode journal creates files beside it.
fn fixture(name: &str, test: &str) -> PathBuf {
    let dir = common::tempdir(&format!("codec1-{test}"));
    for e in std::fs::read_dir(fixtures(name))
        .expect("fixture dir")
        .flatten()
    {
        std::fs::copy(e.path(), dir.join(e.file_name())).expect("copy");
    }
    dir
}

fn read(dir: &Path, node: &str) -> JournalFile {
    JournalFile::read(common::journal_path(dir, node)).expect("a codec 1 journal opens")
}

fn promote(test: &str) -> (PathBuf, Vec<JournalFile>) {
    let dir = fixture("promote", test);
    let fs = vec![read(&dir, "db0"), read(&dir, "db1")];
    (dir, fs)
}

#[test]
fn a_codec_1_journal_opens_with_the_old_pghas_behaviour_in_its_headers() {
    let (_dir, fs) = promote("open");
    assert_eq!(fs[1].runs.len(), 2, "db1's daemon was restarted once");
    for f in &fs {
        for run in &f.runs {
            let h = &run.header;
            assert_eq!((h.codec_version, h.pgha_version.as_str()), (1, "0.1.0"));
            assert_eq!(
                h.config.split_brain,
                SplitBrainRule::BothStop,
                "as recorded"
            );
            assert_eq!(h.config.isolation, Isolation::KeepServing);
            assert_eq!(
                h.config.master_give_up_ms, 12_000,
                "derived from 3 x 5 s, 1 s"
            );
            assert_eq!(run.older_writer().as_deref(), Some("codec 1 / pgha 0.1.0"));
            // Every snapshot in the run decodes, through the codec 1 node.
            assert!(!run.snapshots.is_empty());
            for s in &run.snapshots {
                let snap = codec::decode_snapshot(&s.bytes).expect("a codec 1 snapshot");
                assert_eq!(&snap.header, h);
            }
        }
    }
}

#[test]
fn explain_of_a_codec_1_journal_reads_as_the_pgha_that_wrote_it_explained_it() {
    let (dir, fs) = promote("explain");
    let text = |s: String| s.replace(&dir.display().to_string(), "<dir>");
    let want = |f: &str| std::fs::read_to_string(fixtures("promote").join(f)).expect("expected");
    // Written by `pgha explain` of 58cacff on these files.
    assert_eq!(
        text(explain::render_timeline(&fs)),
        want("explain-by-codec1.txt")
    );
    assert_eq!(
        text(explain::render_failovers(&fs)),
        want("explain-failovers-by-codec1.txt")
    );
    let promotion = explain::timeline(&fs)
        .into_iter()
        .find(|e| e.code == "master_unreachable")
        .expect("the promotion");
    let w = explain::why(
        &fs,
        &WhyTarget::Seq {
            node: Some("db1".into()),
            seq: promotion.seq,
        },
    )
    .expect("why");
    let why = explain::render_why(&w);
    assert!(why.contains("failure counter: 3 consecutive"), "{why}");
    // The what-if behind "what would have prevented it" runs today's core on the old run.
    assert!(
        why.contains(
            "what-if with replication.psql_error_count=5: it would have promoted at 10:30:35.012"
        ),
        "{why}"
    );
}

#[test]
fn replay_of_a_codec_1_journal_lists_its_runs_as_not_replayed_rather_than_diverged() {
    let (_dir, fs) = promote("replay");
    for f in &fs {
        let r = replay::replay(f).expect("replay");
        assert!(r.identical(), "no divergence is claimed: {r}");
        assert_eq!(r.skipped.len(), f.runs.len(), "{r}");
        assert_eq!(r.inputs, 0);
        let text = r.to_string();
        assert!(text.contains("nothing replayed"), "{text}");
        assert!(
            text.contains("run 1 not replayed: written by codec 1 / pgha 0.1.0"),
            "{text}"
        );
        assert!(text.contains("peer daemon probes"), "{text}");
    }
}

#[test]
fn what_if_of_a_codec_1_journal_runs_todays_core_and_says_so() {
    let (_dir, fs) = promote("whatif");
    for f in &fs {
        // Today's core, fed the old recording with its settings, decides the same.
        let r = whatif::what_if(f, &[]).expect("what-if");
        assert!(r.no_difference(), "{r}");
        assert!(
            r.runs.iter().all(|x| x.note.is_some()),
            "the report says an older core wrote the run: {r}"
        );
    }
    let set = vec![("replication.psql_error_count".to_string(), "5".to_string())];
    let r = whatif::what_if(&fs[1], &set).expect("what-if");
    let text = r.to_string();
    assert!(
        text.contains("with psql_error_count=5 it would have promoted at 10:30:35.012 (2 s later"),
        "{text}"
    );
    assert!(
        text.contains("note: written by codec 1 / pgha 0.1.0"),
        "{text}"
    );
}

#[test]
fn a_pruned_codec_1_journal_starts_from_its_converted_snapshot() {
    let dir = fixture("pruned", "pruned");
    let f = read(&dir, "db1");
    let run = &f.runs[0];
    assert!(run.start.is_some(), "the retained rows begin at a snapshot");
    let node = run.start_node().expect("the codec 1 node converts");
    assert_eq!(node.state().name(), "replica");
    assert_eq!(node.config().isolation, Isolation::KeepServing);
    let r = replay::replay(&f).expect("replay");
    assert!(r.identical() && r.skipped.len() == 1, "{r}");
    let w = whatif::what_if(&f, &[]).expect("what-if");
    assert!(w.runs[0].skipped.is_some(), "{w}");
}

#[test]
fn todays_pgha_appends_a_codec_2_run_to_a_codec_1_journal_and_marks_the_file_for_older_readers() {
    let (dir, _) = promote("append");
    let path = common::journal_path(&dir, "db1");
    let header = Header::new(Config::ha_pair("db1", 1, "db0", 0), "");
    let mut rec = Recorder::open_append(&path, header).expect("append to a codec 1 file");
    let facts = LocalFacts {
        data_dir: DataDir::Empty { held_data: false },
        postgres_running: false,
        fenced: false,
    };
    let step = rec
        .step(
            Timestamp(0),
            1_714_559_500_000,
            Input::Event(Event::Started(facts)),
        )
        .expect("step");
    assert!(!step.commands.is_empty());
    drop(rec);
    let f = JournalFile::read(&path).expect("a mixed file reads");
    let codecs: Vec<u32> = f.runs.iter().map(|r| r.header.codec_version).collect();
    assert_eq!(codecs, [1, 1, CODEC_VERSION]);
    assert!(f.runs[2].older_writer().is_none());
    // The new run replays exactly; the old ones are listed.
    let r = replay::replay(&f).expect("replay");
    assert!(
        r.identical() && r.inputs == 1 && r.skipped.len() == 2,
        "{r}"
    );
    assert!(r.to_string().contains(": identical"), "{r}");
    // The file now says codec 2, so the old pgha refuses it ("written by a newer pgha")
    // rather than misreading the new run.
    let store = Store::open_read(&path).expect("open");
    assert_eq!(store.head().codec_version, CODEC_VERSION);
}

#[test]
fn a_codec_1_run_whose_timings_fail_todays_give_up_check_still_opens_and_what_if_says_why_it_skips_it()
 {
    // A codec 1 header (as pgha 58cacff wrote it) with psql_error_count 1 and connect_timeout
    // 1 s: valid then, but the give-up its timings imply today is 0 s (too soon).
    let hex = "03646231036462310101036462300001fb983afb8813fbe80301fbe803fb307500000000195b7265706c69636174696f6e5d0a6772616365203d2031350a05302e312e3001";
    let header: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let dir = common::tempdir("codec1-tight");
    let path = dir.join("db1.journal");
    let mut store = Store::create(&path).expect("create");
    let facts = LocalFacts {
        data_dir: DataDir::Empty { held_data: false },
        postgres_running: false,
        fenced: false,
    };
    let row = |kind, payload| pgha_journal::store::NewRow {
        run: 1,
        wall_ms: 1_714_559_400_000,
        mono_ms: 0,
        node: "db1".into(),
        kind,
        state_before: None,
        state_after: None,
        role: None,
        reason_code: None,
        reason: None,
        payload,
    };
    use pgha_journal::store::Kind;
    store
        .append(&[
            row(Kind::Run, header),
            row(
                Kind::Input,
                codec::encode_input(&Input::Event(Event::Started(facts))),
            ),
        ])
        .expect("append");
    drop(store);
    let f = JournalFile::read(&path).expect("a codec 1 run with tight timings opens");
    let c = &f.runs[0].header.config;
    assert_eq!((c.psql_error_count, c.connect_timeout_ms), (1, 1_000));
    assert!(c.validate().is_err(), "today's give-up check fails");
    let r = replay::replay(&f).expect("replay");
    assert_eq!(r.skipped.len(), 1, "{r}");
    let w = whatif::what_if(&f, &[]).expect("what-if");
    let why = w.runs[0].skipped.as_deref().unwrap_or_default();
    assert!(why.contains("master_give_up"), "{w}");
}
