//! `[etcd]`: the etcd-lease mode (issue 13). Parsed and validated here; the mode itself is not
//! built yet, and `pgha run` refuses a file with `[etcd]` (exit 2) so that nobody believes a
//! cluster is lease-protected. The timings are the core's ([`pgha_core::EtcdTimings`], read
//! through [`pgha_core::settings::ETCD_SETTINGS`]); endpoints, the cluster name and
//! `primary_dc` stay with the shell, which talks to etcd.

use std::net::SocketAddr;
use std::path::Path;

use pgha_core::EtcdTimings;
use pgha_core::settings::{self, Setting};
use serde::Deserialize;

use super::{ConfigError, err};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd {
    endpoints: Vec<String>,
    cluster: String,
    /// The core's timings: keys of [`settings::ETCD_SETTINGS`], in seconds.
    ttl: Option<f64>,
    loop_wait: Option<f64>,
    retry_timeout: Option<f64>,
    primary_dc: Option<String>,
}

impl RawEtcd {
    /// Each timing setting with the value the file gives it.
    fn timings(&self) -> [(&'static Setting<EtcdTimings>, Option<f64>); 3] {
        [
            (&settings::ETCD_TTL, self.ttl),
            (&settings::ETCD_LOOP_WAIT, self.loop_wait),
            (&settings::ETCD_RETRY_TIMEOUT, self.retry_timeout),
        ]
    }
}

/// The data centre a file names when it names none (`node.dc`, `etcd.primary_dc`).
pub const DEFAULT_DC: &str = "default";

/// The longest cluster or data centre name.
pub const MAX_NAME: usize = 64;

/// A checked `[etcd]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// The etcd members' client addresses, tried in turn (`host:port` or `http://host:port`,
    /// resolved at load).
    pub endpoints: Vec<SocketAddr>,
    /// The cluster's name: its keys are under [`EtcdSettings::prefix`].
    pub cluster: String,
    /// The core's timings, checked by [`EtcdTimings::validate`].
    pub timings: EtcdTimings,
    /// The data centre whose replicas may take over, written to etcd when the cluster is
    /// bootstrapped (etcd holds the truth afterwards).
    pub primary_dc: String,
    /// Whether the file gave `primary_dc` (else [`DEFAULT_DC`]).
    pub primary_dc_given: bool,
}

impl EtcdSettings {
    /// `/pgha/NAME/`: every key of this cluster is under it.
    pub fn prefix(&self) -> String {
        format!("/pgha/{}/", self.cluster)
    }
}

/// Checks `[etcd]`: at least one endpoint, none twice; a cluster name and `primary_dc` of
/// [`check_name`]'s charset; each timing within its bounds and the lease inequality.
pub(super) fn etcd(file: &Path, raw: &RawEtcd) -> Result<EtcdSettings, ConfigError> {
    if raw.endpoints.is_empty() {
        return Err(err(
            file,
            "etcd.endpoints = []: list at least one etcd member, e.g. [\"127.0.0.1:2379\"]",
        ));
    }
    let mut endpoints = Vec::with_capacity(raw.endpoints.len());
    for (i, e) in raw.endpoints.iter().enumerate() {
        let addr = crate::etcd::parse_endpoint(e)
            .map_err(|m| err(file, format!("etcd.endpoints[{i}]: {m}")))?;
        if let Some(j) = endpoints.iter().position(|a| *a == addr) {
            return Err(err(
                file,
                format!(
                    "etcd.endpoints[{i}] = {e:?} is etcd.endpoints[{j}] again ({addr}): list each member once"
                ),
            ));
        }
        endpoints.push(addr);
    }
    check_name(file, "etcd.cluster", &raw.cluster)?;
    let primary_dc = raw.primary_dc.clone().unwrap_or_else(|| DEFAULT_DC.into());
    check_name(file, "etcd.primary_dc", &primary_dc)?;
    let mut timings = EtcdTimings::default();
    for (s, given) in raw.timings() {
        if let Some(secs) = given {
            s.seconds(secs)
                .and_then(|v| s.set(&mut timings, v))
                .map_err(|e| err(file, e.to_string()))?;
        }
    }
    timings.validate().map_err(|e| err(file, e.to_string()))?;
    Ok(EtcdSettings {
        endpoints,
        cluster: raw.cluster.clone(),
        timings,
        primary_dc,
        primary_dc_given: raw.primary_dc.is_some(),
    })
}

/// A cluster or data centre name: 1 to [`MAX_NAME`] characters of `A-Z a-z 0-9 _ . -`, not
/// `.` or `..`. It becomes part of etcd keys (`/pgha/NAME/`) and of member records, and
/// operators type it (`pgha dc flip --to DC`): nothing that needs quoting or looks like a path.
pub(super) fn check_name(file: &Path, key: &str, v: &str) -> Result<(), ConfigError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if v.is_empty() || v.len() > MAX_NAME || !v.chars().all(ok_char) || v == "." || v == ".." {
        return Err(err(
            file,
            format!(
                "{key} = {v:?}: expected 1 to {MAX_NAME} characters of A-Z, a-z, 0-9, '_', '.' and '-' (not \".\" or \"..\")"
            ),
        ));
    }
    Ok(())
}
