//! `pgha`: the daemon and its command line. Policy lives in `pgha-core`; this crate only
//! carries out what the core decides and reports back what happened.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod journal_cli;

/// pgha: PostgreSQL high availability, one daemon beside each node.
#[derive(Debug, Parser)]
#[command(name = "pgha", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Read, verify and replay journals.
    #[command(subcommand)]
    Journal(journal_cli::JournalCmd),
    /// Explain what happened, from one or more nodes' journals.
    Explain(journal_cli::ExplainArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Journal(cmd) => journal_cli::journal(cmd),
        Cmd::Explain(args) => journal_cli::explain(args),
    }
}
