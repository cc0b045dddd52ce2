//! `[hooks]`: user commands run after role changes and commands.

use std::path::Path;

use serde::Deserialize;

use super::{ConfigError, secs};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHooks {
    pub(super) on_role_change: Option<String>,
    pub(super) on_initdb: Option<String>,
    pub(super) on_start: Option<String>,
    pub(super) on_stop: Option<String>,
    pub(super) on_clone: Option<String>,
    pub(super) on_promote: Option<String>,
    pub(super) on_follow: Option<String>,
    pub(super) on_fence: Option<String>,
    pub(super) on_unfence: Option<String>,
    pub(super) on_vip_up: Option<String>,
    pub(super) on_vip_down: Option<String>,
    pub(super) timeout: Option<f64>,
}

/// `[hooks]`: user commands (run with `sh -c`).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub on_role_change: Option<String>,
    /// Per command kind: (key, command), e.g. ("on_promote", "...").
    pub after: Vec<(&'static str, String)>,
    pub timeout_ms: u64,
}

pub(super) fn hooks(file: &Path, raw: Option<&RawHooks>) -> Result<Hooks, ConfigError> {
    let h = raw.cloned().unwrap_or_default();
    let after = [
        ("on_initdb", h.on_initdb),
        ("on_start", h.on_start),
        ("on_stop", h.on_stop),
        ("on_clone", h.on_clone),
        ("on_promote", h.on_promote),
        ("on_follow", h.on_follow),
        ("on_fence", h.on_fence),
        ("on_unfence", h.on_unfence),
        ("on_vip_up", h.on_vip_up),
        ("on_vip_down", h.on_vip_down),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    Ok(Hooks {
        on_role_change: h.on_role_change,
        after,
        timeout_ms: secs(file, "hooks.timeout", h.timeout.unwrap_or(30.0))?,
    })
}
