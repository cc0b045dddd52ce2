//! `pgha journal ...` and `pgha explain ...` (issue 3): thin wrappers over `pgha-journal`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum JournalCmd {
    /// Replay a journal through a fresh core and compare every output.
    Replay {
        /// The journal file (opened read-only).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// One or more nodes' journal files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn journal(cmd: JournalCmd) -> ExitCode {
    match cmd {
        JournalCmd::Replay { file } => {
            eprintln!(
                "pgha journal replay {}: not implemented yet",
                file.display()
            );
            ExitCode::from(2)
        }
    }
}

pub fn explain(args: ExplainArgs) -> ExitCode {
    eprintln!("pgha explain {:?}: not implemented yet", args.files);
    ExitCode::from(2)
}
