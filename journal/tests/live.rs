//! Reading a journal while its daemon appends to it: `pgha journal replay` and `pgha explain`
//! run against live journals (the e2e tests do, after every failover).

use pgha_core::{Config, DataDir, Event, Input, LocalFacts, OperatorRequest, Timestamp};
use pgha_journal::{Header, JournalFile, Recorder};

#[test]
fn a_journal_read_while_it_is_being_appended_is_never_reported_corrupt() {
    let dir = std::env::temp_dir().join(format!("pgha-journal-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db0.journal");
    let config = Config::ha_pair("db0", 0, "db1", 1);
    let mut rec = Recorder::create(&path, Header::new(config, "")).unwrap();
    let facts = LocalFacts {
        data_dir: DataDir::Empty { held_data: false },
        postgres_running: false,
        fenced: false,
    };
    rec.step(Timestamp(0), 0, Input::Event(Event::Started(facts)))
        .unwrap();
    let writer = std::thread::spawn(move || {
        // Each operator request is a transition: every step appends rows.
        for i in 1..=400u64 {
            let request = if i % 2 == 0 {
                OperatorRequest::Pause
            } else {
                OperatorRequest::Resume
            };
            rec.step(Timestamp(i), i, Input::Event(Event::Operator(request)))
                .unwrap();
        }
    });
    let mut reads = 0;
    while !writer.is_finished() {
        if let Err(e) = JournalFile::read(&path) {
            panic!("read {reads} of a live journal failed: {e}");
        }
        reads += 1;
    }
    writer.join().unwrap();
    let file = JournalFile::read(&path).unwrap();
    assert!(file.rows > 400, "{} rows", file.rows);
    assert!(reads > 3, "the reader raced the writer only {reads} times");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_begun_before_its_first_step_and_stopped_reads_back_with_its_cause_and_replays() {
    let dir = std::env::temp_dir().join(format!("pgha-journal-stop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("db0.journal");
    let _ = std::fs::remove_file(&path);
    let config = Config::ha_pair("db0", 0, "db1", 1);
    // Run 1: refused to start right after its header was written.
    let mut rec = Recorder::create(&path, Header::new(config.clone(), "")).unwrap();
    rec.begin(Timestamp(0), 1_000).unwrap();
    rec.stop(
        Timestamp(1),
        1_001,
        "refused",
        "node.api 127.0.0.1:1: address in use",
    )
    .unwrap();
    drop(rec);
    // Run 2: one step, then stopped by a signal.
    let mut rec = Recorder::open(&path, Header::new(config, "")).unwrap();
    rec.begin(Timestamp(0), 2_000).unwrap();
    let facts = LocalFacts {
        data_dir: DataDir::Empty { held_data: false },
        postgres_running: false,
        fenced: false,
    };
    rec.step(Timestamp(5), 2_005, Input::Event(Event::Started(facts)))
        .unwrap();
    rec.stop(Timestamp(9), 2_009, "signal", "SIGTERM").unwrap();
    drop(rec);
    let file = JournalFile::read(&path).unwrap();
    assert_eq!(file.runs.len(), 2);
    assert!(file.runs[0].steps.is_empty());
    let stop = file.runs[0].stop.as_ref().expect("run 1 stop");
    assert_eq!(stop.code, "refused");
    assert!(stop.cause.contains("address in use"), "{stop:?}");
    assert_eq!(file.runs[1].steps.len(), 1);
    let stop = file.runs[1].stop.as_ref().expect("run 2 stop");
    assert_eq!(
        (stop.code.as_str(), stop.cause.as_str()),
        ("signal", "SIGTERM")
    );
    let report = pgha_journal::replay::replay(&file).unwrap();
    assert!(report.identical(), "{report}");
    // `pgha explain` shows both ends in its timeline.
    let text = pgha_journal::explain::render_timeline(std::slice::from_ref(&file));
    assert!(
        text.contains("daemon refused to start: node.api 127.0.0.1:1: address in use"),
        "{text}"
    );
    assert!(text.contains("daemon stopped by SIGTERM"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
