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
