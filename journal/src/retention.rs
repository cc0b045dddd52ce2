//! Retention: drop the oldest rows by age or size, cutting only where replay stays exact
//! (at the start of a run or at a snapshot) and never inside an incident window.
//!
//! A cut at row `c` deletes every row before `c`; `c` itself must be a run header or a
//! snapshot, so the retained rows start from a known node. The cut is refused when it falls
//! within `incident_window_ms` before or after any transition, so an incident (a window around
//! each transition) is either kept whole or dropped whole. The chain's anchor moves to `c`, so
//! verification still detects any other missing row.

use crate::JournalError;
use crate::store::{Kind, Store};

/// Retention rules. Rows go when either limit is exceeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Drop rows older than this (wall clock).
    pub max_age_ms: Option<u64>,
    /// Drop the oldest rows while the database uses more than this.
    pub max_bytes: Option<u64>,
    /// Half-width of the window kept whole around every transition.
    pub incident_window_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age_ms: Some(30 * 86_400_000),
            max_bytes: Some(1 << 30),
            incident_window_ms: 600_000,
        }
    }
}

/// What a prune did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub deleted_rows: u64,
    /// The first retained row after the prune.
    pub first_seq: u64,
}

/// Applies `retention` to `store` at wall time `now_ms`.
pub fn prune(
    store: &mut Store,
    now_ms: u64,
    retention: &Retention,
) -> Result<PruneReport, JournalError> {
    let head = store.head();
    let marks = store.landmarks()?;
    let w = retention.incident_window_ms;
    let transitions: Vec<u64> = marks
        .iter()
        .filter(|m| m.2 == Kind::Transition)
        .map(|m| m.1)
        .collect();
    let splits = |cut_wall: u64| {
        transitions
            .iter()
            .any(|&t| t.saturating_sub(w) < cut_wall && cut_wall <= t.saturating_add(w))
    };
    let candidates: Vec<(u64, u64)> = marks
        .iter()
        .filter(|m| matches!(m.2, Kind::Run | Kind::Snapshot) && m.0 > head.anchor_seq)
        .filter(|m| !splits(m.1))
        .map(|m| (m.0, m.1))
        .collect();
    let mut cut: Option<u64> = None;
    if let Some(age) = retention.max_age_ms {
        let cutoff = now_ms.saturating_sub(age);
        cut = candidates
            .iter()
            .filter(|c| c.1 <= cutoff)
            .map(|c| c.0)
            .max();
    }
    if let Some(max) = retention.max_bytes {
        let used = store.used_bytes()?;
        if used > max {
            let rows = store.row_count()?.max(1);
            let per_row = (used / rows).max(1);
            let excess_rows = (used - max).div_ceil(per_row);
            let want = head.anchor_seq + excess_rows;
            let by_size = candidates
                .iter()
                .map(|c| c.0)
                .find(|&s| s >= want)
                .or_else(|| candidates.last().map(|c| c.0));
            cut = cut.max(by_size);
        }
    }
    let Some(cut) = cut else {
        return Ok(PruneReport {
            deleted_rows: 0,
            first_seq: head.anchor_seq,
        });
    };
    let rows = store.read_rows(Some(cut), Some(cut))?;
    let Some(row) = rows.first() else {
        return Ok(PruneReport::default());
    };
    let deleted = store.prune_before(row)?;
    store.compact()?;
    Ok(PruneReport {
        deleted_rows: deleted,
        first_seq: cut,
    })
}
