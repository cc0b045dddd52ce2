//! The SQLite file: schema, the hash chain, appending and verified reading.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::JournalError;
use crate::codec::CODEC_VERSION;

/// The `format` value in the `meta` table of every journal.
pub const FORMAT: &str = "pgha-journal";

/// Bytes kept of each row's SHA-256 (checksum and chain link). 128 bits detect any accidental
/// damage; a deliberate forger could recompute any unkeyed hash anyway.
pub const HASH_LEN: usize = 16;

pub type Hash = [u8; HASH_LEN];

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    seq          INTEGER PRIMARY KEY,
    run          INTEGER NOT NULL,
    wall_ms      INTEGER NOT NULL,
    mono_ms      INTEGER NOT NULL,
    node         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    state_before TEXT,
    state_after  TEXT,
    role         TEXT,
    reason_code  TEXT,
    reason       TEXT,
    payload      BLOB NOT NULL,
    checksum     BLOB NOT NULL,
    prev_hash    BLOB NOT NULL
);
CREATE VIEW IF NOT EXISTS journal AS
    SELECT seq, run, strftime('%Y-%m-%d %H:%M:%f', wall_ms / 1000.0, 'unixepoch') AS wall_utc,
           mono_ms, node, kind, state_before, state_after, role, reason_code, reason
    FROM entries;
CREATE VIEW IF NOT EXISTS runs AS
    SELECT run, seq, strftime('%Y-%m-%d %H:%M:%f', wall_ms / 1000.0, 'unixepoch') AS started_utc,
           node, reason AS pgha_version
    FROM entries WHERE kind = 'run';
";

/// What a row records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The start of a run (one core lifetime): the payload is a [`crate::Header`].
    Run,
    /// One call on the node: the payload is a [`pgha_core::Input`].
    Input,
    /// A transition the input caused: [`pgha_core::Transition`].
    Transition,
    /// A command the input caused: [`pgha_core::Command`].
    Command,
    /// The whole node between two inputs: [`crate::Snapshot`].
    Snapshot,
    /// The end of a run: the daemon stopped (or refused to start) and why. `reason_code` is
    /// `signal`, `error` or `refused`, `reason` the cause in words; the payload is the
    /// same cause as a codec-encoded string.
    Stop,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Run => "run",
            Kind::Input => "input",
            Kind::Transition => "transition",
            Kind::Command => "command",
            Kind::Snapshot => "snapshot",
            Kind::Stop => "stop",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "run" => Kind::Run,
            "input" => Kind::Input,
            "transition" => Kind::Transition,
            "command" => Kind::Command,
            "snapshot" => Kind::Snapshot,
            "stop" => Kind::Stop,
            _ => return None,
        })
    }
}

/// A row to append; the journal assigns `seq` and the hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRow {
    pub run: u64,
    pub wall_ms: u64,
    pub mono_ms: u64,
    pub node: String,
    pub kind: Kind,
    pub state_before: Option<String>,
    pub state_after: Option<String>,
    pub role: Option<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub payload: Vec<u8>,
}

/// A stored row, verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub seq: u64,
    pub row: NewRow,
    pub checksum: Hash,
    pub prev_hash: Hash,
}

fn put_str(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    }
}

/// The row's checksum: SHA-256 over the previous row's hash and every column, truncated.
pub fn row_hash(prev: &Hash, seq: u64, r: &NewRow) -> Hash {
    let mut h = Sha256::new();
    h.update(b"pgha-journal row v1");
    h.update(prev);
    h.update(seq.to_le_bytes());
    h.update(r.run.to_le_bytes());
    h.update(r.wall_ms.to_le_bytes());
    h.update(r.mono_ms.to_le_bytes());
    put_str(&mut h, Some(&r.node));
    put_str(&mut h, Some(r.kind.as_str()));
    put_str(&mut h, r.state_before.as_deref());
    put_str(&mut h, r.state_after.as_deref());
    put_str(&mut h, r.role.as_deref());
    put_str(&mut h, r.reason_code.as_deref());
    put_str(&mut h, r.reason.as_deref());
    h.update((r.payload.len() as u64).to_le_bytes());
    h.update(&r.payload);
    let out = h.finalize();
    let mut hash = [0u8; HASH_LEN];
    hash.copy_from_slice(&out[..HASH_LEN]);
    hash
}

/// The chain's state: the last row and its hash, and where the retained rows begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The last row's seq (0 when empty).
    pub seq: u64,
    /// The last row's checksum (the anchor when empty).
    pub hash: Hash,
    /// The first retained row's seq (1 until retention prunes).
    pub anchor_seq: u64,
    /// The `prev_hash` the first retained row must carry.
    pub anchor_hash: Hash,
    /// `meta.codec_version`: the newest codec that wrote to the file (a pgha that reads only
    /// older ones refuses the file as "written by a newer pgha").
    pub codec_version: u32,
}

/// An open journal file.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    head: Head,
    read_only: bool,
}

/// Takes group and other permissions off a journal written by an older pgha (created 0644),
/// and off its -wal and -shm files.
fn make_private(path: &Path) -> Result<(), JournalError> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_os_string();
        p.push(suffix);
        let p = PathBuf::from(p);
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o700)).map_err(
                |e| JournalError::Io {
                    file: p.clone(),
                    detail: format!("cannot make the journal private (chmod 600): {e}"),
                },
            )?;
        }
    }
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn head(&self) -> Head {
        self.head
    }

    fn err(&self, e: rusqlite::Error) -> JournalError {
        JournalError::sqlite(&self.path, e)
    }

    /// Creates a new journal file (or an in-memory one for `":memory:"`), readable and
    /// writable by its owner only (0600, as are its -wal and -shm files).
    pub fn create(path: &Path) -> Result<Store, JournalError> {
        let memory = path == Path::new(":memory:");
        if !memory && path.exists() {
            return Err(JournalError::Exists {
                file: path.to_path_buf(),
            });
        }
        if !memory {
            // Created private before SQLite opens it: the journal holds the node's history
            // and configuration, and SQLite gives its -wal and -shm files the same mode.
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| JournalError::Io {
                    file: path.to_path_buf(),
                    detail: format!("cannot create the journal: {e}"),
                })?;
        }
        let created = Store::create_private(path);
        if created.is_err() && !memory {
            // Only what this call created: the file did not exist.
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.as_os_str().to_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
        }
        created
    }

    fn create_private(path: &Path) -> Result<Store, JournalError> {
        let memory = path == Path::new(":memory:");
        let conn = if memory {
            Connection::open_in_memory()
        } else {
            Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_CREATE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
        }
        .map_err(|e| JournalError::sqlite(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            head: Head {
                seq: 0,
                hash: [0; HASH_LEN],
                anchor_seq: 1,
                anchor_hash: [0; HASH_LEN],
                codec_version: CODEC_VERSION,
            },
            read_only: false,
        };
        // Pruned pages go back to the file system on `incremental_vacuum` (set before any table).
        store
            .conn
            .pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(|e| JournalError::sqlite(path, e))?;
        store.pragmas()?;
        let tx = store
            .conn
            .transaction()
            .map_err(|e| JournalError::sqlite(path, e))?;
        tx.execute_batch(SCHEMA)
            .map_err(|e| JournalError::sqlite(path, e))?;
        for (k, v) in [
            ("format", rusqlite::types::Value::Text(FORMAT.into())),
            (
                "codec_version",
                rusqlite::types::Value::Integer(i64::from(CODEC_VERSION)),
            ),
            ("head_seq", rusqlite::types::Value::Integer(0)),
            ("head_hash", rusqlite::types::Value::Blob(vec![0; HASH_LEN])),
            ("anchor_seq", rusqlite::types::Value::Integer(1)),
            (
                "anchor_hash",
                rusqlite::types::Value::Blob(vec![0; HASH_LEN]),
            ),
        ] {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                params![k, v],
            )
            .map_err(|e| JournalError::sqlite(path, e))?;
        }
        tx.commit().map_err(|e| JournalError::sqlite(path, e))?;
        Ok(store)
    }

    fn pragmas(&mut self) -> Result<(), JournalError> {
        // WAL: readers (explain, replay) never block the daemon; FULL: a committed step is on
        // disk before its commands are carried out.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| self.err(e))?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// `synchronous = FULL` when durable, else `OFF` (tests and measurements only).
    pub fn set_durable(&mut self, durable: bool) -> Result<(), JournalError> {
        self.conn
            .pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })
            .map_err(|e| self.err(e))
    }

    /// Opens an existing journal for appending; checks the format, the codec version and the
    /// last row against the recorded head (a full check is [`Store::read_verified`]).
    pub fn open_append(path: &Path) -> Result<Store, JournalError> {
        if !path.exists() {
            return Err(JournalError::Missing {
                file: path.to_path_buf(),
            });
        }
        make_private(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| JournalError::sqlite(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            head: Head {
                seq: 0,
                hash: [0; HASH_LEN],
                anchor_seq: 1,
                anchor_hash: [0; HASH_LEN],
                codec_version: CODEC_VERSION,
            },
            read_only: false,
        };
        store.head = store.read_meta()?;
        store.pragmas()?;
        store.check_tail()?;
        Ok(store)
    }

    /// Opens a journal read-only: nothing is ever written to it.
    pub fn open_read(path: &Path) -> Result<Store, JournalError> {
        if !path.exists() {
            return Err(JournalError::Missing {
                file: path.to_path_buf(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| JournalError::sqlite(path, e))?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            head: Head {
                seq: 0,
                hash: [0; HASH_LEN],
                anchor_seq: 1,
                anchor_hash: [0; HASH_LEN],
                codec_version: CODEC_VERSION,
            },
            read_only: true,
        };
        store.head = store.read_meta()?;
        Ok(store)
    }

    fn read_meta(&self) -> Result<Head, JournalError> {
        let not = |detail: &str| JournalError::NotAJournal {
            file: self.path.clone(),
            detail: detail.to_string(),
        };
        let has_meta: Option<String> = self
            .conn
            .query_row(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if has_meta.is_none() {
            return Err(not("no meta table"));
        }
        let get = |key: &str| -> Result<Option<rusqlite::types::Value>, JournalError> {
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))
        };
        use rusqlite::types::Value;
        match get("format")? {
            Some(Value::Text(f)) if f == FORMAT => {}
            Some(_) => return Err(not("meta.format is not pgha-journal")),
            None => return Err(not("no meta.format")),
        }
        let int = |key: &str| -> Result<u64, JournalError> {
            match get(key)? {
                Some(Value::Integer(i)) if i >= 0 => Ok(i as u64),
                _ => Err(JournalError::Corrupt {
                    file: self.path.clone(),
                    seq: None,
                    detail: format!("meta.{key} missing or not a count"),
                }),
            }
        };
        let hash = |key: &str| -> Result<Hash, JournalError> {
            match get(key)? {
                Some(Value::Blob(b)) if b.len() == HASH_LEN => {
                    let mut h = [0; HASH_LEN];
                    h.copy_from_slice(&b);
                    Ok(h)
                }
                _ => Err(JournalError::Corrupt {
                    file: self.path.clone(),
                    seq: None,
                    detail: format!("meta.{key} missing or malformed"),
                }),
            }
        };
        let codec = int("codec_version")?;
        if codec > u64::from(CODEC_VERSION) {
            return Err(JournalError::NewerCodec {
                file: self.path.clone(),
                found: u32::try_from(codec).unwrap_or(u32::MAX),
                supported: CODEC_VERSION,
            });
        }
        Ok(Head {
            seq: int("head_seq")?,
            hash: hash("head_hash")?,
            anchor_seq: int("anchor_seq")?,
            anchor_hash: hash("anchor_hash")?,
            codec_version: u32::try_from(codec).unwrap_or(u32::MAX),
        })
    }

    /// Checks that the last row is the recorded head and that its checksum holds.
    fn check_tail(&self) -> Result<(), JournalError> {
        let last = self.read_rows(Some(self.head.seq.saturating_sub(1).max(1)), None)?;
        let last_seq = last.last().map(|r| r.seq);
        if self.head.seq == 0 {
            if let Some(s) = last_seq {
                return Err(self.corrupt(Some(s), "row after the journal's recorded head"));
            }
            return Ok(());
        }
        match last.iter().find(|r| r.seq == self.head.seq) {
            None => Err(JournalError::Truncated {
                file: self.path.clone(),
                last_seq: self.max_seq()?,
                head_seq: self.head.seq,
            }),
            Some(r) => {
                if row_hash(&r.prev_hash, r.seq, &r.row) != r.checksum
                    || r.checksum != self.head.hash
                {
                    return Err(self.corrupt(Some(r.seq), "checksum mismatch at the head"));
                }
                if last_seq != Some(self.head.seq) {
                    return Err(self.corrupt(last_seq, "row after the journal's recorded head"));
                }
                Ok(())
            }
        }
    }

    fn max_seq(&self) -> Result<Option<u64>, JournalError> {
        let m: Option<i64> = self
            .conn
            .query_row("SELECT max(seq) FROM entries", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(m.map(|m| m.max(0) as u64))
    }

    pub(crate) fn corrupt(&self, seq: Option<u64>, detail: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            file: self.path.clone(),
            seq,
            detail: detail.into(),
        }
    }

    /// The highest run number (0 when none).
    pub fn last_run(&self) -> Result<u64, JournalError> {
        let m: Option<i64> = self
            .conn
            .query_row("SELECT max(run) FROM entries", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(m.map(|m| m.max(0) as u64).unwrap_or(0))
    }

    /// Appends rows in one durable transaction, chaining their hashes.
    pub fn append(&mut self, rows: &[NewRow]) -> Result<(), JournalError> {
        if self.read_only {
            return Err(self.corrupt(None, "journal opened read-only"));
        }
        let path = self.path.clone();
        let e = |e| JournalError::sqlite(&path, e);
        let mut head = self.head;
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO entries (seq, run, wall_ms, mono_ms, node, kind, state_before,
                     state_after, role, reason_code, reason, payload, checksum, prev_hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(e)?;
            for r in rows {
                let seq = head.seq + 1;
                let checksum = row_hash(&head.hash, seq, r);
                stmt.execute(params![
                    to_i64(seq),
                    to_i64(r.run),
                    to_i64(r.wall_ms),
                    to_i64(r.mono_ms),
                    r.node,
                    r.kind.as_str(),
                    r.state_before,
                    r.state_after,
                    r.role,
                    r.reason_code,
                    r.reason,
                    r.payload,
                    &checksum[..],
                    &head.hash[..],
                ])
                .map_err(e)?;
                head.seq = seq;
                head.hash = checksum;
            }
            let mut meta = tx
                .prepare_cached("UPDATE meta SET value = ?2 WHERE key = ?1")
                .map_err(e)?;
            meta.execute(params!["head_seq", to_i64(head.seq)])
                .map_err(e)?;
            meta.execute(params!["head_hash", &head.hash[..]])
                .map_err(e)?;
            // The first rows this codec appends to a file an older one wrote: an older pgha
            // then refuses the file rather than misreading these rows.
            if head.codec_version < CODEC_VERSION {
                meta.execute(params!["codec_version", i64::from(CODEC_VERSION)])
                    .map_err(e)?;
                head.codec_version = CODEC_VERSION;
            }
        }
        tx.commit().map_err(e)?;
        self.head = head;
        Ok(())
    }

    /// Rows with `from <= seq <= to`, unverified.
    pub fn read_rows(&self, from: Option<u64>, to: Option<u64>) -> Result<Vec<Row>, JournalError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, run, wall_ms, mono_ms, node, kind, state_before, state_after, role,
                 reason_code, reason, payload, checksum, prev_hash FROM entries
                 WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let from = to_i64(from.unwrap_or(0));
        let to = to_i64(to.unwrap_or(u64::MAX));
        let mut rows = stmt.query(params![from, to]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            out.push(self.decode_row(r)?);
        }
        Ok(out)
    }

    fn decode_row(&self, r: &rusqlite::Row<'_>) -> Result<Row, JournalError> {
        use rusqlite::types::ValueRef;
        let seq_raw: i64 = match r.get_ref(0).map_err(|e| self.err(e))? {
            ValueRef::Integer(i) => i,
            _ => return Err(self.corrupt(None, "a row's seq is not an integer")),
        };
        let seq = seq_raw.max(0) as u64;
        let bad = |col: &str| self.corrupt(Some(seq), format!("column {col} has the wrong type"));
        let int = |i: usize, col: &str| -> Result<u64, JournalError> {
            match r.get_ref(i).map_err(|e| self.err(e))? {
                ValueRef::Integer(v) if v >= 0 => Ok(v as u64),
                _ => Err(bad(col)),
            }
        };
        let text = |i: usize, col: &str| -> Result<Option<String>, JournalError> {
            match r.get_ref(i).map_err(|e| self.err(e))? {
                ValueRef::Null => Ok(None),
                ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
                _ => Err(bad(col)),
            }
        };
        let blob = |i: usize, col: &str| -> Result<Vec<u8>, JournalError> {
            match r.get_ref(i).map_err(|e| self.err(e))? {
                ValueRef::Blob(b) => Ok(b.to_vec()),
                _ => Err(bad(col)),
            }
        };
        let hash = |i: usize, col: &str| -> Result<Hash, JournalError> {
            let b = blob(i, col)?;
            if b.len() != HASH_LEN {
                return Err(bad(col));
            }
            let mut h = [0; HASH_LEN];
            h.copy_from_slice(&b);
            Ok(h)
        };
        let kind_text = text(5, "kind")?.unwrap_or_default();
        let kind = Kind::parse(&kind_text)
            .ok_or_else(|| self.corrupt(Some(seq), format!("unknown kind {kind_text:?}")))?;
        Ok(Row {
            seq,
            row: NewRow {
                run: int(1, "run")?,
                wall_ms: int(2, "wall_ms")?,
                mono_ms: int(3, "mono_ms")?,
                node: text(4, "node")?.ok_or_else(|| bad("node"))?,
                kind,
                state_before: text(6, "state_before")?,
                state_after: text(7, "state_after")?,
                role: text(8, "role")?,
                reason_code: text(9, "reason_code")?,
                reason: text(10, "reason")?,
                payload: blob(11, "payload")?,
            },
            checksum: hash(12, "checksum")?,
            prev_hash: hash(13, "prev_hash")?,
        })
    }

    /// Every retained row, with the chain checked from the anchor to the head: a missing,
    /// edited, damaged or extra row is reported with its seq.
    pub fn read_verified(&self) -> Result<Vec<Row>, JournalError> {
        // One read transaction: the head and the rows come from the same snapshot, so a
        // journal that its daemon is appending to reads as it was at one commit, not as a
        // head from one commit and rows from a later one.
        let snapshot = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let head = self.read_meta()?;
        let rows = self.read_rows(None, None)?;
        drop(snapshot); // read-only: rolling back changes nothing
        verify_chain(&self.path, head, &rows)?;
        Ok(rows)
    }

    /// Deletes the rows before `keep_from` (which must start a run or be a snapshot) and moves
    /// the anchor, in one transaction.
    pub fn prune_before(&mut self, keep_from: &Row) -> Result<u64, JournalError> {
        let path = self.path.clone();
        let e = |e| JournalError::sqlite(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        let n = tx
            .execute(
                "DELETE FROM entries WHERE seq < ?1",
                [to_i64(keep_from.seq)],
            )
            .map_err(e)?;
        tx.execute(
            "UPDATE meta SET value = ?2 WHERE key = ?1",
            params!["anchor_seq", to_i64(keep_from.seq)],
        )
        .map_err(e)?;
        tx.execute(
            "UPDATE meta SET value = ?2 WHERE key = ?1",
            params!["anchor_hash", &keep_from.prev_hash[..]],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        self.head.anchor_seq = keep_from.seq;
        self.head.anchor_hash = keep_from.prev_hash;
        Ok(n as u64)
    }

    /// Returns the free pages left by pruning to the file system.
    pub fn compact(&mut self) -> Result<(), JournalError> {
        self.conn
            .execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| self.err(e))
    }

    /// The bytes in use by the database (pages less free pages).
    pub fn used_bytes(&self) -> Result<u64, JournalError> {
        let q = |p: &str| -> Result<i64, JournalError> {
            self.conn
                .query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                .map_err(|e| self.err(e))
        };
        let used = (q("page_count")? - q("freelist_count")?).max(0) * q("page_size")?.max(0);
        Ok(used as u64)
    }

    /// `(seq, wall_ms, kind)` of every row that starts a run, is a snapshot or a transition.
    pub fn landmarks(&self) -> Result<Vec<(u64, u64, Kind)>, JournalError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, wall_ms, kind FROM entries
                 WHERE kind IN ('run', 'snapshot', 'transition') ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let seq: i64 = r.get(0).map_err(|e| self.err(e))?;
            let wall: i64 = r.get(1).map_err(|e| self.err(e))?;
            let kind: String = r.get(2).map_err(|e| self.err(e))?;
            if let Some(k) = Kind::parse(&kind) {
                out.push((seq.max(0) as u64, wall.max(0) as u64, k));
            }
        }
        Ok(out)
    }

    /// How many rows are retained.
    pub fn row_count(&self) -> Result<u64, JournalError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM entries", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(n.max(0) as u64)
    }
}

/// Checks seq continuity, the chain links and every checksum.
pub fn verify_chain(path: &Path, head: Head, rows: &[Row]) -> Result<(), JournalError> {
    let corrupt = |seq: u64, detail: String| JournalError::Corrupt {
        file: path.to_path_buf(),
        seq: Some(seq),
        detail,
    };
    let mut prev = head.anchor_hash;
    for (expect_seq, r) in (head.anchor_seq..).zip(rows) {
        if r.seq < expect_seq {
            return Err(corrupt(
                r.seq,
                format!("row before the journal's first retained row {expect_seq}"),
            ));
        }
        if r.seq > expect_seq {
            let detail = if expect_seq + 1 == r.seq {
                format!("row {expect_seq} is missing (deleted?)")
            } else {
                format!("rows {expect_seq} to {} are missing (deleted?)", r.seq - 1)
            };
            return Err(corrupt(expect_seq, detail));
        }
        if r.prev_hash != prev {
            return Err(corrupt(
                r.seq,
                "hash chain broken: prev_hash does not match the row before".into(),
            ));
        }
        if row_hash(&prev, r.seq, &r.row) != r.checksum {
            return Err(corrupt(
                r.seq,
                "checksum mismatch: the row was edited or damaged".into(),
            ));
        }
        prev = r.checksum;
    }
    let last = rows.last().map(|r| r.seq);
    if head.seq >= head.anchor_seq && last.is_none_or(|l| l < head.seq) {
        return Err(JournalError::Truncated {
            file: path.to_path_buf(),
            last_seq: last,
            head_seq: head.seq,
        });
    }
    if let Some(l) = last
        && (l > head.seq || prev != head.hash)
    {
        return Err(corrupt(
            l,
            format!(
                "the journal's recorded head is row {} but the last row differs",
                head.seq
            ),
        ));
    }
    Ok(())
}
