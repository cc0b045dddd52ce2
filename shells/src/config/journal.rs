//! `[journal]`: where the journal is, its snapshots and its retention.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, check_parent, err, secs};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJournal {
    pub(super) path: PathBuf,
    /// Days of history to keep (0: no age limit).
    pub(super) retention_days: Option<f64>,
    /// Megabytes the journal may use before the oldest rows go (0: no size limit).
    pub(super) max_size_mb: Option<f64>,
    /// Seconds kept whole around every transition, whatever the limits say.
    pub(super) incident_window: Option<f64>,
    /// Seconds between snapshots of the core (where retention may cut a long run).
    pub(super) snapshot_interval: Option<f64>,
}

/// `journal.path`: its directory exists, and it is not itself a directory.
pub(super) fn check_path(file: &Path, j: &RawJournal) -> Result<(), ConfigError> {
    check_parent(file, "journal.path", &j.path)?;
    if j.path.is_dir() {
        return Err(err(
            file,
            format!(
                "journal.path = {:?} is a directory; name a file",
                j.path.display()
            ),
        ));
    }
    Ok(())
}

/// The journal's snapshot and retention settings. Defaults: 30 days, 1024 MB, incidents kept
/// whole 10 minutes either side, a snapshot every hour. At the measured 50-60 MB per node per
/// day (docs/benchmarks.md) the size limit is what binds after about 18 days.
pub(super) fn journal_options(
    file: &Path,
    j: &RawJournal,
) -> Result<pgha_journal::Options, ConfigError> {
    let limit =
        |key: &str, v: Option<f64>, default: f64, unit: f64| -> Result<Option<u64>, ConfigError> {
            let v = v.unwrap_or(default);
            if !v.is_finite() || !(0.0..=1e9).contains(&v) {
                return Err(err(
                    file,
                    format!("{key} = {v}: must be a number from 0 (no limit) up"),
                ));
            }
            Ok((v > 0.0).then(|| (v * unit).round() as u64))
        };
    let max_age_ms = limit(
        "journal.retention_days",
        j.retention_days,
        30.0,
        86_400_000.0,
    )?;
    let max_bytes = limit("journal.max_size_mb", j.max_size_mb, 1024.0, 1_048_576.0)?;
    let incident_window_ms = secs(
        file,
        "journal.incident_window",
        j.incident_window.unwrap_or(600.0),
    )?;
    let snapshot_ms = secs(
        file,
        "journal.snapshot_interval",
        j.snapshot_interval.unwrap_or(3600.0),
    )?;
    if snapshot_ms == 0 {
        return Err(err(
            file,
            "journal.snapshot_interval = 0: must be greater than 0",
        ));
    }
    let retention =
        (max_age_ms.is_some() || max_bytes.is_some()).then_some(pgha_journal::Retention {
            max_age_ms,
            max_bytes,
            incident_window_ms,
        });
    Ok(pgha_journal::Options {
        snapshot_every_ms: Some(snapshot_ms),
        retention,
        durable: true,
    })
}
