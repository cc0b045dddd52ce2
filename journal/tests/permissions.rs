//! The journal holds the node's history and configuration: only its owner may read it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn header() -> pgha_journal::Header {
    pgha_journal::Header::new(pgha_core::Config::ha_pair("db0", 0, "db1", 1), "")
}

fn step(r: &mut pgha_journal::Recorder) {
    let facts = pgha_core::LocalFacts {
        data_dir: pgha_core::DataDir::Empty { held_data: false },
        postgres_running: false,
        fenced: false,
    };
    let input = pgha_core::Input::Event(pgha_core::Event::Started(facts));
    r.step(pgha_core::Timestamp(0), 0, input).expect("step");
}

#[test]
fn a_new_journal_and_its_wal_and_shm_files_are_created_0600() {
    let dir = common::tempdir("perm-new");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join("db0.journal");
    let mut r = pgha_journal::Recorder::create(&path, header()).expect("create");
    step(&mut r);
    for suffix in ["", "-wal", "-shm"] {
        let p = with_suffix(&path, suffix);
        assert!(p.exists(), "{} missing", p.display());
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    drop(r);
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn a_world_readable_journal_of_an_older_pgha_is_made_private_when_opened() {
    let dir = common::tempdir("perm-old");
    let path = dir.join("db0.journal");
    let mut r = pgha_journal::Recorder::create(&path, header()).expect("create");
    step(&mut r);
    drop(r);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut r = pgha_journal::Recorder::open_append(&path, header()).expect("open");
    step(&mut r);
    for suffix in ["", "-wal", "-shm"] {
        let p = with_suffix(&path, suffix);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}
