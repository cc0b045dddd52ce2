//! `pgha journal ...` and `pgha explain ...` (issue 3): thin wrappers over `pgha-journal`.
//! Exit codes: 0 success (a what-if report is a success), 1 replay diverged, 2 bad input
//! (not a journal, damaged, newer codec, unknown setting, bad value, nothing found).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use pgha_journal::explain::{self, WhyTarget};
use pgha_journal::{JournalError, JournalFile, replay, time, whatif};

#[derive(Debug, Subcommand)]
pub enum JournalCmd {
    /// Replay a journal through a fresh core and compare every output (exit 0 when
    /// identical, 1 at the first divergence). With --set: a what-if report instead.
    Replay {
        /// The journal file (opened read-only, never changed).
        file: PathBuf,
        /// Replay with a changed setting, e.g. --set replication.psql_error_count=5
        /// (repeatable): reports where the decisions would have differed.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Check every row's checksum and the hash chain, without replaying.
    Verify {
        /// The journal file (opened read-only).
        file: PathBuf,
    },
}

/// `pgha explain [failovers | why [SEQ]] FILE... [--at TIME] [--node NAME] [--json]`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Journal files (one per node), optionally with a query word anywhere: `failovers`,
    /// or `why SEQ` (the transition at that row) / `why --at TIME`.
    #[arg(required = true, value_name = "FILE | failovers | why [SEQ]")]
    pub files: Vec<String>,
    /// With `why`: the last state change at or before this UTC time
    /// (`HH:MM:SS[.mmm]` on the journal's day, or `YYYY-MM-DD HH:MM:SS[.mmm]`).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// With `why`: the node whose row or state change is meant.
    #[arg(long)]
    pub node: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn fail(e: &JournalError) -> ExitCode {
    eprintln!("pgha: {e}");
    ExitCode::from(2)
}

pub fn journal(cmd: JournalCmd) -> ExitCode {
    match cmd {
        JournalCmd::Verify { file } => match JournalFile::read(&file) {
            Ok(f) => {
                println!(
                    "{}: {} rows in {} run{}: every checksum and link verified",
                    file.display(),
                    f.rows,
                    f.runs.len(),
                    if f.runs.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        JournalCmd::Replay { file, set, json } => {
            let mut settings = Vec::new();
            for s in &set {
                match whatif::parse_setting(s) {
                    Ok(kv) => settings.push(kv),
                    Err(e) => return fail(&e),
                }
            }
            let journal = match JournalFile::read(&file) {
                Ok(j) => j,
                Err(e) => return fail(&e),
            };
            if settings.is_empty() {
                match replay::replay(&journal) {
                    Ok(r) => {
                        if json {
                            println!("{}", explain::json(&ReplayJson::from(&r)));
                        } else {
                            println!("{r}");
                        }
                        if r.identical() {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(1)
                        }
                    }
                    Err(e) => fail(&e),
                }
            } else {
                match whatif::what_if(&journal, &settings) {
                    Ok(r) => {
                        if json {
                            println!("{}", explain::json(&r));
                        } else {
                            print!("{r}");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                }
            }
        }
    }
}

#[derive(serde::Serialize)]
struct ReplayJson {
    file: String,
    identical: bool,
    runs: usize,
    inputs: u64,
    transitions: u64,
    commands: u64,
    snapshots: u64,
    divergence: Option<DivergenceJson>,
    /// Runs not replayed (written by an older codec), each with why.
    skipped: Vec<String>,
}

#[derive(serde::Serialize)]
struct DivergenceJson {
    run: u64,
    seq: u64,
    input_seq: u64,
    input: String,
    expected: String,
    got: String,
}

impl From<&replay::ReplayReport> for ReplayJson {
    fn from(r: &replay::ReplayReport) -> Self {
        ReplayJson {
            file: r.file.display().to_string(),
            identical: r.identical(),
            runs: r.runs,
            inputs: r.inputs,
            transitions: r.transitions,
            commands: r.commands,
            snapshots: r.snapshots,
            divergence: r.divergence.as_ref().map(|d| DivergenceJson {
                run: d.run,
                seq: d.seq,
                input_seq: d.input_seq,
                input: d.input.clone(),
                expected: d.expected.clone(),
                got: d.got.clone(),
            }),
            skipped: r.skipped.iter().map(|s| s.to_string()).collect(),
        }
    }
}

enum Query {
    Timeline,
    Failovers,
    Why(Option<u64>),
}

pub fn explain(args: ExplainArgs) -> ExitCode {
    let mut query = Query::Timeline;
    let mut paths = Vec::new();
    let mut words = args.files.iter().peekable();
    while let Some(w) = words.next() {
        match w.as_str() {
            "failovers" if !std::path::Path::new(w).exists() => query = Query::Failovers,
            "why" if !std::path::Path::new(w).exists() => {
                let seq = words
                    .next_if(|n| !std::path::Path::new(n).exists() && n.parse::<u64>().is_ok())
                    .and_then(|n| n.parse().ok());
                query = Query::Why(seq);
            }
            _ => paths.push(PathBuf::from(w)),
        }
    }
    if paths.is_empty() {
        eprintln!("pgha: explain needs at least one journal file");
        return ExitCode::from(2);
    }
    let mut files = Vec::new();
    for p in &paths {
        match JournalFile::read(p) {
            Ok(f) => files.push(f),
            Err(e) => return fail(&e),
        }
    }
    match explain::check_set(&files) {
        Ok(warnings) => {
            for w in warnings {
                eprintln!("pgha: warning: {w}");
            }
        }
        Err(e) => {
            eprintln!("pgha: explain: {e}");
            return ExitCode::from(2);
        }
    }
    let out = match query {
        Query::Timeline if args.json => explain::timeline_json(&files),
        Query::Timeline => explain::render_timeline(&files),
        Query::Failovers if args.json => explain::failovers_json(&files),
        Query::Failovers => explain::render_failovers(&files),
        Query::Why(seq) => {
            let target = match (seq, &args.at) {
                (Some(seq), None) => WhyTarget::Seq {
                    node: args.node.clone(),
                    seq,
                },
                (None, Some(at)) => {
                    let reference = files
                        .iter()
                        .flat_map(|f| f.runs.first())
                        .map(|r| r.wall_ms)
                        .min()
                        .unwrap_or(0);
                    match time::parse_utc(at, reference) {
                        Some(wall_ms) => WhyTarget::At {
                            node: args.node.clone(),
                            wall_ms,
                        },
                        None => {
                            eprintln!(
                                "pgha: --at {at:?}: expected HH:MM:SS[.mmm] or YYYY-MM-DD HH:MM:SS[.mmm] (UTC)"
                            );
                            return ExitCode::from(2);
                        }
                    }
                }
                _ => {
                    eprintln!("pgha: explain why needs a row number (why SEQ) or --at TIME");
                    return ExitCode::from(2);
                }
            };
            match explain::why(&files, &target) {
                Ok(w) if args.json => explain::json(&w),
                Ok(w) => explain::render_why(&w),
                Err(e) => return fail(&e),
            }
        }
    };
    print!("{out}");
    if args.json {
        println!();
    }
    ExitCode::SUCCESS
}
