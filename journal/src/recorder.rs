//! The write-ahead driver: feed the node, journal the input with its outputs in one durable
//! transaction, then hand the outputs to the caller.

use std::path::Path;

use pgha_core::{Input, Node, Timestamp};

use crate::JournalError;
use crate::codec::{self, Header};
use crate::describe;
use crate::read::JournalFile;
use crate::retention::{self, PruneReport, Retention};
use crate::store::{Kind, NewRow, Store};

/// What one input produced (the core's [`pgha_core::Step`]); returned by [`Recorder::step`]
/// once durable in the journal: carry out `commands` in order.
pub use pgha_core::Step;

/// How a [`Recorder`] maintains its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Write a snapshot of the node after a step when this much monotonic time has passed
    /// since the run's start or the last snapshot (`None`: never). Snapshots are where
    /// retention may cut a long run.
    pub snapshot_every_ms: Option<u64>,
    /// Prune after each snapshot by these rules (`None`: keep everything).
    pub retention: Option<Retention>,
    /// `true` (the default): every step is on disk before `step` returns (SQLite
    /// `synchronous = FULL`). `false` only for tests, simulations and measurements.
    pub durable: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            snapshot_every_ms: Some(3_600_000),
            retention: None,
            durable: true,
        }
    }
}

/// A node and its journal. See the crate documentation.
#[derive(Debug)]
pub struct Recorder {
    node: Node,
    store: Store,
    header: Header,
    run: u64,
    started: bool,
    poisoned: bool,
    last_snapshot: Timestamp,
    options: Options,
}

impl Recorder {
    /// A new journal file at `path` (an error if it exists), whose first run uses `header`.
    pub fn create(path: impl AsRef<Path>, header: Header) -> Result<Recorder, JournalError> {
        let store = Store::create(path.as_ref())?;
        Recorder::new(store, header)
    }

    /// An existing journal (an error if missing): its head is checked, and a new run with
    /// `header` and a fresh node is appended. This is the daemon restart: the new core starts
    /// from `Event::Started` with fresh local facts, so nothing of the old run is needed.
    pub fn open_append(path: impl AsRef<Path>, header: Header) -> Result<Recorder, JournalError> {
        let store = Store::open_append(path.as_ref())?;
        Recorder::new(store, header)
    }

    /// [`Recorder::open_append`] when `path` exists, else [`Recorder::create`].
    pub fn open(path: impl AsRef<Path>, header: Header) -> Result<Recorder, JournalError> {
        if path.as_ref().exists() {
            Recorder::open_append(path, header)
        } else {
            Recorder::create(path, header)
        }
    }

    /// A journal in memory (tests, the simulator): same code path, nothing on disk.
    pub fn in_memory(header: Header) -> Result<Recorder, JournalError> {
        Recorder::create(":memory:", header)
    }

    fn new(store: Store, header: Header) -> Result<Recorder, JournalError> {
        if let Err(e) = header.config.validate() {
            return Err(JournalError::Setting {
                key: "config".into(),
                detail: e.to_string(),
            });
        }
        let run = store.last_run()? + 1;
        Ok(Recorder {
            node: Node::new(header.config.clone()),
            store,
            header,
            run,
            started: false,
            poisoned: false,
            last_snapshot: Timestamp::ZERO,
            options: Options::default(),
        })
    }

    /// Starts a new run on the same file with a fresh node: what a daemon restart does
    /// (handy with [`Recorder::in_memory`], where there is no file to reopen).
    pub fn restart(self, header: Header) -> Result<Recorder, JournalError> {
        let options = self.options.clone();
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        Ok(Recorder::new(self.store, header)?.with_options(options))
    }

    /// Replaces the [`Options`].
    pub fn with_options(mut self, options: Options) -> Recorder {
        if options.durable != self.options.durable {
            // Only a failure to change a pragma: the journal stays durable.
            let _ = self.store.set_durable(options.durable);
        }
        self.options = options;
        self
    }

    /// The bytes the journal's rows and indexes use (pages less free pages).
    pub fn used_bytes(&self) -> Result<u64, JournalError> {
        self.store.used_bytes()
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// This run's number in the file (1 for a new file).
    pub fn run(&self) -> u64 {
        self.run
    }

    pub fn path(&self) -> &Path {
        self.store.path()
    }

    /// One input: feed the node, drain its transitions and commands, append the input and
    /// the outputs in one durable transaction, then return the outputs to carry out.
    ///
    /// A timer call with nothing due (`Input::Timeout` while `poll_timeout()` is later than
    /// `now` or `None`) is a no-op by the core's contract: it is not journaled and returns an
    /// empty step. After a failed write the recorder is poisoned: every later call returns
    /// [`JournalError::Poisoned`], since the node moved on without a durable record.
    pub fn step(
        &mut self,
        now: Timestamp,
        wall_ms: u64,
        input: Input,
    ) -> Result<Step, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if input == Input::Timeout && self.node.poll_timeout().is_none_or(|d| d > now) {
            return Ok(Step::default());
        }
        let config = &self.header.config;
        let before = self.node.state();
        let step = self.node.step(now, input);
        let after = self.node.state();
        let role = Some(after.role().name().to_string());
        let mut rows = Vec::with_capacity(2 + step.transitions.len() + step.commands.len());
        let base = |kind: Kind, mono: u64, payload: Vec<u8>| NewRow {
            run: self.run,
            wall_ms,
            mono_ms: mono,
            node: self.header.node.clone(),
            kind,
            state_before: None,
            state_after: None,
            role: None,
            reason_code: None,
            reason: None,
            payload,
        };
        if !self.started {
            rows.push(self.run_row(now, wall_ms));
            self.last_snapshot = now;
        }
        let mut r = base(Kind::Input, now.0, codec::encode_input(&input));
        r.state_before = Some(before.name().to_string());
        r.state_after = Some(after.name().to_string());
        r.role = role.clone();
        r.reason = Some(describe::input(&input, config));
        rows.push(r);
        for t in &step.transitions {
            let mut r = base(Kind::Transition, t.at.0, codec::encode_transition(t));
            r.state_before = Some(t.from.name().to_string());
            r.state_after = Some(t.to.name().to_string());
            r.role = Some(t.to.role().name().to_string());
            r.reason_code = Some(t.reason.code().to_string());
            r.reason = Some(t.reason.describe(config).to_string());
            rows.push(r);
        }
        for c in &step.commands {
            let mut r = base(Kind::Command, now.0, codec::encode_command(c));
            r.state_after = Some(after.name().to_string());
            r.role = role.clone();
            r.reason = Some(describe::command(c, config));
            rows.push(r);
        }
        self.append(&rows)?;
        self.started = true;
        if let Some(every) = self.options.snapshot_every_ms
            && now.since(self.last_snapshot) >= every
        {
            self.snapshot(now, wall_ms)?;
            if let Some(retention) = self.options.retention.clone() {
                self.prune(wall_ms, &retention)?;
            }
        }
        Ok(step)
    }

    /// Writes this run's header row now, before any input, so a journal that cannot be
    /// written (a read-only file or disk, a full disk) is found before the caller starts
    /// anything. A no-op once the header is written.
    pub fn begin(&mut self, now: Timestamp, wall_ms: u64) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if self.started {
            return Ok(());
        }
        let row = self.run_row(now, wall_ms);
        self.append(std::slice::from_ref(&row))?;
        self.started = true;
        self.last_snapshot = now;
        Ok(())
    }

    /// Ends the run with a `stop` row saying why: `code` is `signal`, `error` or `refused`,
    /// `cause` the words (`SIGTERM`, the error). Writes the run's header first if no step
    /// did. Fails on a poisoned recorder (its file could not be written before).
    pub fn stop(
        &mut self,
        now: Timestamp,
        wall_ms: u64,
        code: &str,
        cause: &str,
    ) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        self.begin(now, wall_ms)?;
        let row = self.state_row(
            now,
            wall_ms,
            Kind::Stop,
            Some(code.to_string()),
            cause.to_string(),
            codec::encode(&cause.to_string()),
        );
        self.append(std::slice::from_ref(&row))
    }

    /// The run's header row.
    fn run_row(&self, now: Timestamp, wall_ms: u64) -> NewRow {
        NewRow {
            run: self.run,
            wall_ms,
            mono_ms: now.0,
            node: self.header.node.clone(),
            kind: Kind::Run,
            state_before: None,
            state_after: None,
            role: None,
            reason_code: None,
            reason: Some(format!(
                "pgha {}, codec {}",
                self.header.pgha_version, self.header.codec_version
            )),
            payload: codec::encode_header(&self.header),
        }
    }

    /// A row about the node as it is now, between inputs (a stop, a snapshot).
    fn state_row(
        &self,
        now: Timestamp,
        wall_ms: u64,
        kind: Kind,
        reason_code: Option<String>,
        reason: String,
        payload: Vec<u8>,
    ) -> NewRow {
        let state = self.node.state();
        NewRow {
            run: self.run,
            wall_ms,
            mono_ms: now.0,
            node: self.header.node.clone(),
            kind,
            state_before: Some(state.name().to_string()),
            state_after: Some(state.name().to_string()),
            role: Some(state.role().name().to_string()),
            reason_code,
            reason: Some(reason),
            payload,
        }
    }

    /// Appends `rows` in one transaction; a failed write poisons the recorder.
    fn append(&mut self, rows: &[NewRow]) -> Result<(), JournalError> {
        if let Err(e) = self.store.append(rows) {
            self.poisoned = true;
            return Err(e);
        }
        Ok(())
    }

    /// [`Recorder::step`] with [`Input::Timeout`].
    pub fn timeout(&mut self, now: Timestamp, wall_ms: u64) -> Result<Step, JournalError> {
        self.step(now, wall_ms, Input::Timeout)
    }

    /// Writes a snapshot row of the node now (between inputs). Done automatically per
    /// [`Options::snapshot_every_ms`]; a no-op before the run's first step.
    pub fn snapshot(&mut self, now: Timestamp, wall_ms: u64) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned);
        }
        if !self.started {
            return Ok(());
        }
        let snap = codec::SnapshotRef {
            header: &self.header,
            node: &self.node,
        };
        let row = self.state_row(
            now,
            wall_ms,
            Kind::Snapshot,
            None,
            "snapshot".into(),
            codec::encode(&snap),
        );
        self.append(std::slice::from_ref(&row))?;
        self.last_snapshot = now;
        Ok(())
    }

    /// Applies `retention` now (`wall_now_ms`): see [`crate::retention`].
    pub fn prune(
        &mut self,
        wall_now_ms: u64,
        retention: &Retention,
    ) -> Result<PruneReport, JournalError> {
        retention::prune(&mut self.store, wall_now_ms, retention)
    }

    /// Reads this journal back, verified (useful with [`Recorder::in_memory`]).
    pub fn read(&self) -> Result<JournalFile, JournalError> {
        JournalFile::from_store(&self.store)
    }
}
