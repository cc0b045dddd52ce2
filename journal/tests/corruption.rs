//! Every kind of damage is detected and reported with the file and the row.

mod common;

use std::path::{Path, PathBuf};

use pgha_journal::{JournalError, JournalFile, replay};
use rusqlite::Connection;

/// A closed journal (the WAL checkpointed into the file) of the promote incident.
fn recorded(name: &str) -> PathBuf {
    let dir = common::tempdir(name);
    drop(common::promote(Some(&dir)));
    common::journal_path(&dir, "db1")
}

fn tamper(path: &Path, sql: &str) {
    let c = Connection::open(path).expect("open");
    c.execute_batch(sql).expect("tamper");
}

fn err(path: &Path) -> JournalError {
    match JournalFile::read(path) {
        Ok(_) => panic!("{} read without error", path.display()),
        Err(e) => e,
    }
}

#[test]
fn an_undamaged_journal_verifies() {
    let p = recorded("ok");
    let f = JournalFile::read(&p).expect("read");
    assert!(f.rows > 100);
}

#[test]
fn a_truncated_file_is_reported_as_damaged() {
    let p = recorded("truncated-file");
    let len = std::fs::metadata(&p).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .expect("open");
    f.set_len(len / 2).expect("truncate");
    drop(f);
    let e = err(&p);
    let text = e.to_string();
    assert!(text.contains(&p.display().to_string()), "{text}");
    assert!(
        matches!(
            e,
            JournalError::Corrupt { .. }
                | JournalError::Truncated { .. }
                | JournalError::Sqlite { .. }
        ),
        "{e:?}"
    );
}

#[test]
fn rows_cut_off_the_end_are_reported_as_truncation() {
    let p = recorded("truncated-rows");
    tamper(&p, "DELETE FROM entries WHERE seq > 100");
    let e = err(&p);
    assert!(
        matches!(
            e,
            JournalError::Truncated {
                last_seq: Some(100),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("the last row is 100"), "{e}");
}

#[test]
fn a_flipped_byte_in_a_payload_is_reported_with_its_row() {
    let p = recorded("flipped");
    let c = Connection::open(&p).expect("open");
    let mut payload: Vec<u8> = c
        .query_row("SELECT payload FROM entries WHERE seq = 57", [], |r| {
            r.get(0)
        })
        .expect("payload");
    payload[0] ^= 0x01;
    c.execute("UPDATE entries SET payload = ?1 WHERE seq = 57", [payload])
        .expect("write");
    drop(c);
    let e = err(&p);
    assert!(
        matches!(e, JournalError::Corrupt { seq: Some(57), .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("row 57"), "{e}");
}

#[test]
fn a_deleted_row_is_reported_as_missing() {
    let p = recorded("deleted");
    tamper(&p, "DELETE FROM entries WHERE seq = 42");
    let e = err(&p);
    assert!(
        matches!(e, JournalError::Corrupt { seq: Some(42), .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("row 42 is missing"), "{e}");
}

#[test]
fn an_edited_column_breaks_the_checksum_of_its_row() {
    let p = recorded("edited");
    tamper(
        &p,
        "UPDATE entries SET reason_code = 'operator' WHERE seq = 60",
    );
    let e = err(&p);
    assert!(
        matches!(e, JournalError::Corrupt { seq: Some(60), .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
}

#[test]
fn a_journal_from_a_newer_codec_is_refused() {
    let p = recorded("newer");
    tamper(&p, "UPDATE meta SET value = 99 WHERE key = 'codec_version'");
    let e = err(&p);
    assert!(
        matches!(e, JournalError::NewerCodec { found: 99, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("newer pgha"), "{e}");
}

#[test]
fn a_file_that_is_not_a_journal_is_refused() {
    let dir = common::tempdir("notajournal");
    let text = dir.join("notes.txt");
    std::fs::write(
        &text,
        "hello, this is not sqlite at all, just some text\n".repeat(50),
    )
    .expect("write");
    assert!(
        matches!(err(&text), JournalError::NotAJournal { .. }),
        "{:?}",
        err(&text)
    );
    let other = dir.join("other.db");
    tamper(&other, "CREATE TABLE t (x)");
    assert!(matches!(err(&other), JournalError::NotAJournal { .. }));
    let missing = dir.join("missing.db");
    assert!(matches!(err(&missing), JournalError::Missing { .. }));
    assert!(!missing.exists(), "reading must not create the file");
}

#[test]
fn replay_never_changes_the_file() {
    let p = recorded("readonly");
    let before = std::fs::read(&p).expect("read");
    let report = replay::replay_file(&p).expect("replay");
    assert!(report.identical(), "{report}");
    assert_eq!(std::fs::read(&p).expect("read"), before);
}
