//! The journal's errors. Each names the file, and where it applies the row (`seq`) or key.

use std::path::PathBuf;

/// Everything that can go wrong opening, writing, verifying or replaying a journal.
#[derive(Debug)]
pub enum JournalError {
    /// SQLite failed (I/O, a locked or malformed database).
    Sqlite {
        file: PathBuf,
        source: rusqlite::Error,
    },
    /// The file is not a pgha journal (no or wrong `meta` table).
    NotAJournal {
        file: PathBuf,
        detail: String,
    },
    /// The file was written by a newer codec than this pgha understands.
    NewerCodec {
        file: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A row failed verification: bad checksum, broken chain, missing row, undecodable payload.
    Corrupt {
        file: PathBuf,
        seq: Option<u64>,
        detail: String,
    },
    /// The journal ends before its recorded head: rows were cut off the end.
    Truncated {
        file: PathBuf,
        last_seq: Option<u64>,
        head_seq: u64,
    },
    /// `create` on a file that exists, or `open_append` on one that does not.
    Exists {
        file: PathBuf,
    },
    Missing {
        file: PathBuf,
    },
    /// A previous write failed; the recorder refuses further steps (the node moved on without
    /// its record being durable, so the daemon must restart and start a new run).
    Poisoned,
    /// A `--set key=value` that the configuration refuses.
    Setting {
        key: String,
        detail: String,
    },
    /// A query that names nothing in the journal (for example `why 999`).
    NotFound {
        what: String,
    },
    /// A file-system step around the database failed (creating it, its permissions).
    Io {
        file: PathBuf,
        detail: String,
    },
}

impl JournalError {
    pub(crate) fn sqlite(file: &std::path::Path, source: rusqlite::Error) -> JournalError {
        // A file that is not a database at all surfaces as NOTADB.
        if let rusqlite::Error::SqliteFailure(e, _) = &source {
            match e.code {
                rusqlite::ErrorCode::NotADatabase => {
                    return JournalError::NotAJournal {
                        file: file.to_path_buf(),
                        detail: "not an SQLite database".into(),
                    };
                }
                rusqlite::ErrorCode::DatabaseCorrupt => {
                    return JournalError::Corrupt {
                        file: file.to_path_buf(),
                        seq: None,
                        detail: format!("SQLite reports the file damaged ({source})"),
                    };
                }
                _ => {}
            }
        }
        JournalError::Sqlite {
            file: file.to_path_buf(),
            source,
        }
    }
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::Sqlite { file, source } => write!(f, "{}: {source}", file.display()),
            JournalError::NotAJournal { file, detail } => {
                write!(f, "{}: not a pgha journal ({detail})", file.display())
            }
            JournalError::NewerCodec {
                file,
                found,
                supported,
            } => write!(
                f,
                "{}: written by a newer pgha (codec version {found}; this pgha reads up to {supported}): upgrade pgha to read it",
                file.display()
            ),
            JournalError::Corrupt {
                file,
                seq: Some(seq),
                detail,
            } => write!(f, "{}: row {seq}: corrupt: {detail}", file.display()),
            JournalError::Corrupt {
                file,
                seq: None,
                detail,
            } => write!(f, "{}: corrupt: {detail}", file.display()),
            JournalError::Truncated {
                file,
                last_seq,
                head_seq,
            } => match last_seq {
                Some(l) => write!(
                    f,
                    "{}: truncated: the last row is {l} but the journal's head says {head_seq}",
                    file.display()
                ),
                None => write!(
                    f,
                    "{}: truncated: no rows but the journal's head says {head_seq}",
                    file.display()
                ),
            },
            JournalError::Exists { file } => write!(f, "{}: already exists", file.display()),
            JournalError::Missing { file } => write!(f, "{}: no such journal", file.display()),
            JournalError::Poisoned => write!(
                f,
                "an earlier journal write failed; restart the daemon to begin a new run"
            ),
            JournalError::Setting { key, detail } => write!(f, "--set {key}: {detail}"),
            JournalError::NotFound { what } => write!(f, "{what}"),
            JournalError::Io { file, detail } => write!(f, "{}: {detail}", file.display()),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Sqlite { source, .. } => Some(source),
            _ => None,
        }
    }
}
