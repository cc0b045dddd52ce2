//! `[postgres]` and `[timeouts]`: how the daemon connects to PostgreSQL and runs its tools.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, err, secs, sibling};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostgres {
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) dbname: Option<String>,
    pub(super) socket_dir: Option<PathBuf>,
    pub(super) listen_addresses: Option<String>,
    pub(super) log_file: Option<PathBuf>,
    pub(super) initdb_args: Option<Vec<String>>,
    pub(super) basebackup_args: Option<Vec<String>>,
    pub(super) keep_discarded: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) initdb: Option<f64>,
    pub(super) start: Option<f64>,
    pub(super) stop: Option<f64>,
    pub(super) promote: Option<f64>,
    pub(super) basebackup: Option<f64>,
    pub(super) command: Option<f64>,
}

/// How the daemon connects to PostgreSQL servers and runs its tools.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub socket_dir: Option<PathBuf>,
    /// postgres's `listen_addresses` (default `node.host`; `"*"` to also take a VIP).
    pub listen_addresses: Option<String>,
    pub log_file: PathBuf,
    pub initdb_args: Vec<String>,
    /// Extra arguments for pg_basebackup (e.g. `--max-rate=32M`).
    pub basebackup_args: Vec<String>,
    /// How many copies of data replaced by a re-clone are kept beside the data dir
    /// (`<data_dir>.pgha-discarded-*`); 0 removes the replaced data at once.
    pub keep_discarded: u32,
}

/// Time limits of the actions, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub initdb_ms: u64,
    pub start_ms: u64,
    pub stop_ms: u64,
    pub promote_ms: u64,
    pub basebackup_ms: u64,
    pub command_ms: u64,
}

pub(super) fn pg(
    file: &Path,
    pgraw: &RawPostgres,
    data_dir: &Path,
) -> Result<PgSettings, ConfigError> {
    Ok(PgSettings {
        user: pgraw.user.clone().unwrap_or_else(|| "postgres".into()),
        password: pgraw.password.clone(),
        dbname: pgraw.dbname.clone().unwrap_or_else(|| "postgres".into()),
        socket_dir: pgraw.socket_dir.clone(),
        listen_addresses: pgraw.listen_addresses.clone(),
        log_file: pgraw
            .log_file
            .clone()
            .unwrap_or_else(|| sibling(data_dir, "postgres.log")),
        initdb_args: pgraw
            .initdb_args
            .clone()
            .unwrap_or_else(|| vec!["--auth=trust".into(), "--encoding=UTF8".into()]),
        basebackup_args: pgraw.basebackup_args.clone().unwrap_or_default(),
        keep_discarded: match pgraw.keep_discarded {
            None => 1,
            Some(n) if n <= 100 => n,
            Some(n) => {
                return Err(err(
                    file,
                    format!("postgres.keep_discarded = {n}: at most 100 copies"),
                ));
            }
        },
    })
}

pub(super) fn timeouts(file: &Path, t: &RawTimeouts) -> Result<Timeouts, ConfigError> {
    let ms = |key: &str, v: Option<f64>, d: f64| secs(file, key, v.unwrap_or(d));
    Ok(Timeouts {
        initdb_ms: ms("timeouts.initdb", t.initdb, 120.0)?,
        start_ms: ms("timeouts.start", t.start, 120.0)?,
        stop_ms: ms("timeouts.stop", t.stop, 60.0)?,
        promote_ms: ms("timeouts.promote", t.promote, 60.0)?,
        basebackup_ms: ms("timeouts.basebackup", t.basebackup, 3600.0)?,
        command_ms: ms("timeouts.command", t.command, 30.0)?,
    })
}
