//! `[haproxy]`, `[vip]` and `[pgbouncer]`: how clients find the master (docs/routing.md).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, check_parent, err, secs};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHaproxy {
    pub(super) bind: Option<String>,
    pub(super) write_port: Option<u16>,
    pub(super) readonly_port: Option<u16>,
    pub(super) check_interval: Option<f64>,
    pub(super) maxconn: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVip {
    pub(super) address: String,
    pub(super) interface: String,
    pub(super) up_command: Option<String>,
    pub(super) down_command: Option<String>,
    pub(super) arping: Option<bool>,
    pub(super) takeover_wait: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPgbouncer {
    pub(super) admin: String,
    pub(super) ini: PathBuf,
    pub(super) databases: Vec<String>,
    pub(super) pause_timeout: Option<f64>,
}

/// `[haproxy]`: what `pgha haproxy-config` prints.
#[derive(Debug, Clone)]
pub struct HaproxySettings {
    pub bind: String,
    pub write_port: u16,
    pub readonly_port: u16,
    pub check_interval_ms: u64,
    pub maxconn: u32,
}

/// `[vip]`: the address that follows the master.
#[derive(Debug, Clone)]
pub struct VipSettings {
    pub address: std::net::Ipv4Addr,
    pub interface: String,
    pub up_command: Option<String>,
    pub down_command: Option<String>,
    pub arping: bool,
    pub takeover_wait_ms: u64,
}

/// `[pgbouncer]`: the pooler that is paused and repointed on failover.
#[derive(Debug, Clone)]
pub struct PgbouncerSettings {
    pub admin: String,
    pub ini: PathBuf,
    pub databases: Vec<String>,
    pub pause_timeout_ms: u64,
}

pub(super) fn haproxy(file: &Path, h: Option<&RawHaproxy>) -> Result<HaproxySettings, ConfigError> {
    let haproxy = {
        let interval = h.and_then(|h| h.check_interval).unwrap_or(1.0);
        let check_interval_ms = secs(file, "haproxy.check_interval", interval)?;
        if check_interval_ms < 10 {
            return Err(err(
                file,
                format!("haproxy.check_interval = {interval}: at least 0.01 s"),
            ));
        }
        HaproxySettings {
            bind: h.and_then(|h| h.bind.clone()).unwrap_or_else(|| "*".into()),
            write_port: h.and_then(|h| h.write_port).unwrap_or(5432),
            readonly_port: h.and_then(|h| h.readonly_port).unwrap_or(7432),
            check_interval_ms,
            maxconn: h.and_then(|h| h.maxconn).unwrap_or(1000),
        }
    };
    if haproxy.write_port == haproxy.readonly_port {
        return Err(err(
            file,
            format!(
                "haproxy.write_port and haproxy.readonly_port are both {}",
                haproxy.write_port
            ),
        ));
    }
    Ok(haproxy)
}

pub(super) fn vip(file: &Path, raw: Option<&RawVip>) -> Result<Option<VipSettings>, ConfigError> {
    Ok(match raw {
        None => None,
        Some(v) => {
            let address = v.address.parse().map_err(|_| {
                err(
                    file,
                    format!("vip.address = {:?}: expected an IPv4 address", v.address),
                )
            })?;
            let ok_iface = !v.interface.is_empty()
                && v.interface.len() < 16
                && v.interface
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
            if !ok_iface {
                return Err(err(
                    file,
                    format!("vip.interface = {:?}: not an interface name", v.interface),
                ));
            }
            Some(VipSettings {
                address,
                interface: v.interface.clone(),
                up_command: v.up_command.clone(),
                down_command: v.down_command.clone(),
                arping: v.arping.unwrap_or(true),
                takeover_wait_ms: secs(file, "vip.takeover_wait", v.takeover_wait.unwrap_or(3.0))?,
            })
        }
    })
}

pub(super) fn pgbouncer(
    file: &Path,
    raw: Option<&RawPgbouncer>,
) -> Result<Option<PgbouncerSettings>, ConfigError> {
    Ok(match raw {
        None => None,
        Some(b) => {
            if b.databases.is_empty() {
                return Err(err(
                    file,
                    "pgbouncer.databases must name at least one database",
                ));
            }
            if let Some(d) = b.databases.iter().find(|d| {
                d.is_empty()
                    || !d
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            }) {
                return Err(err(
                    file,
                    format!("pgbouncer.databases: {d:?} is not a database name pgha can rewrite"),
                ));
            }
            check_parent(file, "pgbouncer.ini", &b.ini)?;
            Some(PgbouncerSettings {
                admin: b.admin.clone(),
                ini: b.ini.clone(),
                databases: b.databases.clone(),
                pause_timeout_ms: secs(
                    file,
                    "pgbouncer.pause_timeout",
                    b.pause_timeout.unwrap_or(10.0),
                )?,
            })
        }
    })
}
