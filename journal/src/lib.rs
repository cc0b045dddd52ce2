//! # pgha-journal: every decision on disk, exact replay, what-if replay and `explain`
//!
//! The journal is an SQLite file (WAL mode, `synchronous = FULL`) holding every input a
//! [`pgha_core::Node`] received and every transition and command it emitted, so that a fresh
//! node fed the recorded inputs reproduces the recorded outputs exactly. See `docs/journal.md`
//! for the format, the columns and example `sqlite3` queries.
//!
//! ## Driving a node through the journal (the shells and the simulator)
//!
//! ```no_run
//! use pgha_core::{Config, Event, Input, LocalFacts, DataDir, Timestamp};
//! use pgha_journal::{Header, Recorder};
//!
//! let config = Config::ha_pair("db0", 0, "db1", 1);
//! // `open` creates the file, or appends a new run to an existing one (a daemon restart).
//! let mut rec = Recorder::open("/var/lib/pgha/journal.db", Header::new(config, "…toml text…"))?;
//! let facts = LocalFacts { data_dir: DataDir::Empty { held_data: false }, postgres_running: false, fenced: false };
//! let (now, wall_ms) = (Timestamp(0), 1_714_559_467_214);
//! // Write-ahead: when `step` returns, the input and everything it caused are durable.
//! let step = rec.step(now, wall_ms, Input::Event(Event::Started(facts)))?;
//! for t in &step.transitions { /* log t.reason.describe(rec.node().config()) */ }
//! for c in &step.commands { /* carry out c; report with rec.step(.., Event::CommandDone{..}) */ }
//! let _next_wakeup = rec.node().poll_timeout(); // then rec.timeout(now, wall_ms) when due
//! # Ok::<(), pgha_journal::JournalError>(())
//! ```
//!
//! * [`Recorder::create`] (new file), [`Recorder::open_append`] (existing file),
//!   [`Recorder::open`] (either), [`Recorder::in_memory`] (tests).
//! * [`Recorder::step`]`(now, wall_ms, input)`: feeds the node, drains it, appends the input
//!   and its outputs in ONE transaction, then returns a [`Step`] for the caller to carry out.
//!   The outcome of a command is just the next input, `Event::CommandDone`.
//! * A file holds several **runs**: a run is one core lifetime (from `Event::Started`), with
//!   its own [`Header`] (node, core config, the full config text, pgha and codec versions).
//!   A restarted daemon appends a new run; replay replays each run from a fresh core.
//! * Every [`Options::snapshot_every_ms`] the recorder stores a snapshot of the node;
//!   [`Retention`] prunes old rows only at a run start or a snapshot and never inside an
//!   incident window, so a retained journal still replays exactly.
//!
//! ## Reading
//!
//! [`JournalFile::read`] opens a file read-only, verifies every row's checksum and the hash
//! chain (a missing, edited, damaged or extra row is reported with its seq, a cut-off tail
//! as [`JournalError::Truncated`]) and decodes it into [`Run`]s of [`RecordedStep`]s.
//! [`replay::replay`] checks exactness, [`whatif::what_if`] replays with changed settings and
//! [`explain`] renders the incident report behind `pgha explain`.

pub mod codec;
mod describe;
mod error;
pub mod explain;
mod read;
mod recorder;
pub mod replay;
pub mod retention;
pub mod store;
pub mod time;
pub mod whatif;

pub use codec::{CODEC_VERSION, Header, Snapshot};
pub use error::JournalError;
pub use read::{JournalFile, Recorded, RecordedSnapshot, RecordedStep, Run, RunStop};
pub use recorder::{Options, Recorder, Step};
pub use retention::{PruneReport, Retention};
