//! Exact replay: a fresh core (or the snapshot a pruned run starts from), fed the recorded
//! inputs with the recorded configuration, must produce every recorded transition and
//! command, in order, and match every recorded snapshot byte for byte.
//!
//! Only a run written by this codec version is replayed: a run an older pgha wrote (an older
//! codec, [`Run::older_writer`]) was decided by an older core, which today's core is not
//! expected to reproduce (codec 2's core also probes the peer daemons, so its commands differ
//! from the first probe round on, and its snapshots have another shape). Such a run is listed
//! in [`ReplayReport::skipped`] with the reason, not reported as a divergence.

use std::path::{Path, PathBuf};

use pgha_core::{Command, Input, Node, Transition};

use crate::codec::{self, SnapshotRef};
use crate::read::{JournalFile, RecordedStep, Run};
use crate::{JournalError, describe};

/// Where a replay first differed from the recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    pub run: u64,
    /// The row of the first recorded output that differs (or of the input, when the replay
    /// produced an output the recording does not have).
    pub seq: u64,
    /// The input row's seq and a one-line text of it.
    pub input_seq: u64,
    pub input: String,
    pub expected: String,
    pub got: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "run {} diverges at row {} (input row {}: {})",
            self.run, self.seq, self.input_seq, self.input
        )?;
        writeln!(f, "  expected: {}", self.expected)?;
        write!(f, "  got:      {}", self.got)
    }
}

/// The result of replaying one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub file: PathBuf,
    pub runs: usize,
    pub inputs: u64,
    pub transitions: u64,
    pub commands: u64,
    pub snapshots: u64,
    pub divergence: Option<Divergence>,
    /// Runs not replayed, with why (written by an older codec's core).
    pub skipped: Vec<SkippedRun>,
}

/// A run replay did not check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRun {
    pub run: u64,
    /// `codec 1 / pgha 0.1.0`.
    pub writer: String,
    pub why: String,
}

impl std::fmt::Display for SkippedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} not replayed: written by {}: {}",
            self.run, self.writer, self.why
        )
    }
}

impl ReplayReport {
    pub fn identical(&self) -> bool {
        self.divergence.is_none()
    }
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} run{}, {} inputs, {} transitions, {} commands, {} snapshots replayed: ",
            self.file.display(),
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            self.inputs,
            self.transitions,
            self.commands,
            self.snapshots
        )?;
        let replayed = self.runs - self.skipped.len();
        match &self.divergence {
            None if replayed == 0 && self.runs > 0 => write!(f, "nothing replayed")?,
            None => write!(f, "identical")?,
            Some(d) => write!(f, "DIVERGED\n{d}")?,
        }
        for s in &self.skipped {
            write!(f, "\n  {s}")?;
        }
        Ok(())
    }
}

/// Replays the file at `path` (opened read-only, never changed).
pub fn replay_file(path: impl AsRef<Path>) -> Result<ReplayReport, JournalError> {
    let file = JournalFile::read(path)?;
    replay(&file)
}

/// Replays every run of a decoded journal; stops at the first divergence.
pub fn replay(file: &JournalFile) -> Result<ReplayReport, JournalError> {
    let mut report = ReplayReport {
        file: file.path.clone(),
        runs: file.runs.len(),
        ..ReplayReport::default()
    };
    for run in &file.runs {
        if let Some(writer) = run.older_writer() {
            report.skipped.push(SkippedRun {
                run: run.number,
                writer,
                why: format!(
                    "an older core decided it; this pgha's core (codec {}) adds {}, so it is not \
                     expected to reproduce the run exactly. Its rows were verified and decoded, \
                     and `pgha explain` reads it",
                    codec::CODEC_VERSION,
                    codec::changes_since(run.header.codec_version)
                ),
            });
            continue;
        }
        if let Some(d) = replay_run(run, &mut report)? {
            report.divergence = Some(d);
            break;
        }
    }
    Ok(report)
}

/// Feeds one input and drains the node.
pub fn feed(node: &mut Node, step: &RecordedStep) -> (Vec<Transition>, Vec<Command>) {
    apply(node, step.now, step.input)
}

pub(crate) fn apply(
    node: &mut Node,
    now: pgha_core::Timestamp,
    input: Input,
) -> (Vec<Transition>, Vec<Command>) {
    let step = node.step(now, input);
    (step.transitions, step.commands)
}

fn show_transition(t: &Transition, run: &Run) -> String {
    format!(
        "transition {} -> {} at {} ({}: {})",
        t.from.name(),
        t.to.name(),
        t.at,
        t.reason.code(),
        t.reason.describe(&run.header.config)
    )
}

fn show_command(c: &Command, run: &Run) -> String {
    format!("command {}", describe::command(c, &run.header.config))
}

fn replay_run(run: &Run, report: &mut ReplayReport) -> Result<Option<Divergence>, JournalError> {
    let mut node = run.start_node()?;
    let mut snaps = run.snapshots.iter().peekable();
    for (i, step) in run.steps.iter().enumerate() {
        let (ts, cs) = feed(&mut node, step);
        report.inputs += 1;
        let div = |seq: u64, expected: String, got: String| Divergence {
            run: run.number,
            seq,
            input_seq: step.seq,
            input: describe::input(&step.input, &run.header.config),
            expected,
            got,
        };
        let n = ts.len().max(step.transitions.len());
        for k in 0..n {
            match (step.transitions.get(k), ts.get(k)) {
                (Some(e), Some(g)) if e.value == *g => {}
                (e, g) => {
                    return Ok(Some(div(
                        e.map_or(step.seq, |e| e.seq),
                        e.map_or("no further transition".into(), |e| {
                            show_transition(&e.value, run)
                        }),
                        g.map_or("no further transition".into(), |g| show_transition(g, run)),
                    )));
                }
            }
        }
        report.transitions += ts.len() as u64;
        let n = cs.len().max(step.commands.len());
        for k in 0..n {
            match (step.commands.get(k), cs.get(k)) {
                (Some(e), Some(g)) if e.value == *g => {}
                (e, g) => {
                    return Ok(Some(div(
                        e.map_or(step.seq, |e| e.seq),
                        e.map_or("no further command".into(), |e| show_command(&e.value, run)),
                        g.map_or("no further command".into(), |g| show_command(g, run)),
                    )));
                }
            }
        }
        report.commands += cs.len() as u64;
        while let Some(s) = snaps.next_if(|s| s.after_steps == i + 1) {
            let bytes = codec::encode(&SnapshotRef {
                header: &run.header,
                node: &node,
            });
            report.snapshots += 1;
            if bytes != s.bytes {
                return Ok(Some(Divergence {
                    run: run.number,
                    seq: s.seq,
                    input_seq: step.seq,
                    input: describe::input(&step.input, &run.header.config),
                    expected: "the recorded snapshot of the node".into(),
                    got: format!("a different node (state {})", node.state().name()),
                }));
            }
        }
    }
    Ok(None)
}
