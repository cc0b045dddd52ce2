//! `pgha demo`.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temporary directory (journals, logs) and say where it is.
    #[arg(long)]
    pub keep: bool,
}

pub fn demo(_args: DemoArgs) -> ExitCode {
    eprintln!("pgha demo: not ready yet");
    ExitCode::from(2)
}
