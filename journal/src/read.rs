//! A journal file read back, verified and decoded into runs and steps.

use std::path::{Path, PathBuf};

use pgha_core::{Command, ConfigError, Input, Node, Timestamp, Transition};

use crate::JournalError;
use crate::codec::{self, CODEC_VERSION, Header};
use crate::store::{Kind, Row, Store};

/// One output of a recorded step, with its row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded<T> {
    pub seq: u64,
    pub value: T,
}

/// One recorded input with the outputs it produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedStep {
    /// The input row's seq.
    pub seq: u64,
    pub wall_ms: u64,
    pub now: Timestamp,
    pub input: Input,
    pub transitions: Vec<Recorded<Transition>>,
    pub commands: Vec<Recorded<Command>>,
}

/// A snapshot recorded in the middle of a run, after `after_steps` of its steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedSnapshot {
    pub seq: u64,
    pub after_steps: usize,
    pub bytes: Vec<u8>,
}

/// One run: one core lifetime, from its header (or, after pruning, from a snapshot).
#[derive(Debug)]
pub struct Run {
    pub number: u64,
    /// The first retained row of the run (its header or its first snapshot).
    pub seq: u64,
    pub wall_ms: u64,
    pub header: Header,
    /// The node the run's retained steps start from: `None` for a fresh
    /// `Node::new(header.config)`, else the snapshot the retained part begins with.
    pub start: Option<Box<Node>>,
    pub steps: Vec<RecordedStep>,
    pub snapshots: Vec<RecordedSnapshot>,
    /// How the run ended, when its daemon could say (a `stop` row); `None` for a run that
    /// is still going or whose daemon was killed.
    pub stop: Option<RunStop>,
}

/// The `stop` row that ends a run: why the daemon stopped (or refused to start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStop {
    pub seq: u64,
    pub wall_ms: u64,
    pub mono_ms: u64,
    /// The core's state and role when the daemon stopped.
    pub state: String,
    pub role: String,
    /// `signal`, `error` or `refused`.
    pub code: String,
    /// The cause in words: `SIGTERM`, the error, what was refused.
    pub cause: String,
}

impl Run {
    /// `Some("codec 1 / pgha 0.1.0")` when an older pgha wrote the run: an older core made its
    /// decisions, so today's core is not expected to reproduce them (see [`crate::replay`]).
    pub fn older_writer(&self) -> Option<String> {
        (self.header.codec_version < CODEC_VERSION).then(|| {
            format!(
                "codec {} / pgha {}",
                self.header.codec_version, self.header.pgha_version
            )
        })
    }

    /// The node the retained steps start from.
    pub fn start_node(&self) -> Result<Node, JournalError> {
        match &self.start {
            None => Ok(Node::new(self.header.config.clone())),
            // Round-trip through the codec: Node is not Clone.
            Some(n) => {
                codec::decode(&codec::encode(n.as_ref())).map_err(|e| JournalError::NotFound {
                    what: format!("snapshot of run {} does not decode: {e}", self.number),
                })
            }
        }
    }
}

/// A verified, decoded journal.
#[derive(Debug)]
pub struct JournalFile {
    pub path: PathBuf,
    pub runs: Vec<Run>,
    /// How many rows it holds.
    pub rows: usize,
}

impl JournalFile {
    /// Opens `path` read-only, verifies every row's checksum and the chain, and decodes it.
    pub fn read(path: impl AsRef<Path>) -> Result<JournalFile, JournalError> {
        let store = Store::open_read(path.as_ref())?;
        JournalFile::from_store(&store)
    }

    pub fn from_store(store: &Store) -> Result<JournalFile, JournalError> {
        let rows = store.read_verified()?;
        let n = rows.len();
        let runs = group(store.path(), rows)?;
        Ok(JournalFile {
            path: store.path().to_path_buf(),
            runs,
            rows: n,
        })
    }

    /// The node name of the last run (or the file name when empty).
    pub fn node_name(&self) -> String {
        match self.runs.last() {
            Some(r) => r.header.node.clone(),
            None => self.path.display().to_string(),
        }
    }
}

fn newer_codec(path: &Path, found: u32) -> Result<(), JournalError> {
    if found > CODEC_VERSION {
        return Err(JournalError::NewerCodec {
            file: path.to_path_buf(),
            found,
            supported: CODEC_VERSION,
        });
    }
    Ok(())
}

fn check_codec(path: &Path, h: &Header) -> Result<(), JournalError> {
    newer_codec(path, h.codec_version)?;
    let valid = match h.config.validate() {
        Ok(_) => true,
        // Codec 1's pgha had no master give-up: the default derived from its timings need not
        // meet today's give-up inequality.
        Err(ConfigError::GiveUpTooSoon { .. } | ConfigError::GiveUpTooLate { .. }) => {
            h.codec_version < 2
        }
        Err(_) => false,
    };
    if !valid {
        return Err(JournalError::Corrupt {
            file: path.to_path_buf(),
            seq: None,
            detail: format!("run of {} has an invalid recorded configuration", h.node),
        });
    }
    Ok(())
}

fn group(path: &Path, rows: Vec<Row>) -> Result<Vec<Run>, JournalError> {
    let corrupt = |seq: u64, detail: String| JournalError::Corrupt {
        file: path.to_path_buf(),
        seq: Some(seq),
        detail,
    };
    let undecodable = |seq: u64, what: &str, e: codec::CodecError| {
        corrupt(seq, format!("{what} payload does not decode: {e}"))
    };
    let mut runs: Vec<Run> = Vec::new();
    for r in rows {
        let row = &r.row;
        let current = runs.last_mut().filter(|run| run.number == row.run);
        match row.kind {
            Kind::Run => {
                if let Some(v) = codec::header_codec_version(&row.payload) {
                    newer_codec(path, v)?;
                }
                let header = codec::decode_header(&row.payload)
                    .map_err(|e| undecodable(r.seq, "run header", e))?;
                check_codec(path, &header)?;
                if current.is_some() || runs.last().is_some_and(|x| x.number >= row.run) {
                    return Err(corrupt(
                        r.seq,
                        format!("run {} starts twice or out of order", row.run),
                    ));
                }
                runs.push(Run {
                    number: row.run,
                    seq: r.seq,
                    wall_ms: row.wall_ms,
                    header,
                    start: None,
                    steps: Vec::new(),
                    snapshots: Vec::new(),
                    stop: None,
                });
            }
            Kind::Snapshot => match current {
                Some(run) => {
                    let after_steps = run.steps.len();
                    run.snapshots.push(RecordedSnapshot {
                        seq: r.seq,
                        after_steps,
                        bytes: r.row.payload.clone(),
                    });
                }
                None => {
                    if runs.last().is_some_and(|x| x.number >= row.run) {
                        return Err(corrupt(r.seq, "snapshot of an earlier run".into()));
                    }
                    let snap = codec::decode_snapshot(&row.payload)
                        .map_err(|e| undecodable(r.seq, "snapshot", e))?;
                    check_codec(path, &snap.header)?;
                    runs.push(Run {
                        number: row.run,
                        seq: r.seq,
                        wall_ms: row.wall_ms,
                        header: snap.header,
                        start: Some(Box::new(snap.node)),
                        steps: Vec::new(),
                        snapshots: Vec::new(),
                        stop: None,
                    });
                }
            },
            Kind::Stop => {
                let Some(run) = current else {
                    return Err(corrupt(
                        r.seq,
                        format!("stop of run {} without its run header", row.run),
                    ));
                };
                run.stop = Some(RunStop {
                    seq: r.seq,
                    wall_ms: row.wall_ms,
                    mono_ms: row.mono_ms,
                    state: row.state_after.clone().unwrap_or_default(),
                    role: row.role.clone().unwrap_or_default(),
                    code: row.reason_code.clone().unwrap_or_default(),
                    cause: row.reason.clone().unwrap_or_default(),
                });
            }
            Kind::Input => {
                let Some(run) = current else {
                    return Err(corrupt(
                        r.seq,
                        format!("input of run {} without its run header", row.run),
                    ));
                };
                let input = codec::decode_input(&row.payload)
                    .map_err(|e| undecodable(r.seq, "input", e))?;
                run.steps.push(RecordedStep {
                    seq: r.seq,
                    wall_ms: row.wall_ms,
                    now: Timestamp(row.mono_ms),
                    input,
                    transitions: Vec::new(),
                    commands: Vec::new(),
                });
            }
            Kind::Transition | Kind::Command => {
                let Some(step) = current.and_then(|run| run.steps.last_mut()) else {
                    return Err(corrupt(
                        r.seq,
                        format!("{} without its input", row.kind.as_str()),
                    ));
                };
                if row.kind == Kind::Transition {
                    let t = codec::decode_transition(&row.payload)
                        .map_err(|e| undecodable(r.seq, "transition", e))?;
                    step.transitions.push(Recorded {
                        seq: r.seq,
                        value: t,
                    });
                } else {
                    let c = codec::decode_command(&row.payload)
                        .map_err(|e| undecodable(r.seq, "command", e))?;
                    step.commands.push(Recorded {
                        seq: r.seq,
                        value: c,
                    });
                }
            }
        }
    }
    Ok(runs)
}
