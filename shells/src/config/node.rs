//! `[node]` and `[[peers]]`: the servers, their APIs, and where this node's data and
//! PostgreSQL's programs are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pgha_core::PeerConfig;
use serde::Deserialize;

use super::{ConfigError, check_parent, err};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) name: String,
    /// Required without `[etcd]` (see [`index`]).
    pub(super) index: Option<u32>,
    pub(super) data_dir: PathBuf,
    pub(super) bin_dir: Option<PathBuf>,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) api: String,
    /// The etcd mode's keys (see [`member`]).
    pub(super) dc: Option<String>,
    pub(super) priority: Option<i32>,
    pub(super) nofailover: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) name: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) api: String,
    pub(super) index: Option<u32>,
}

/// Where a PostgreSQL server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub api: SocketAddr,
}

/// What this node publishes to the other members in the etcd mode (issue 13): `[node]`'s
/// `dc`, `priority` and `nofailover`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its data centre: only replicas in the cluster's primary one may take over.
    pub dc: String,
    /// Among equally advanced replicas, the higher priority takes over.
    pub priority: i32,
    /// Never take over (it still replicates).
    pub nofailover: bool,
}

/// `node.index`: required without `[etcd]` (it decides who bootstraps and staggers the grace
/// wait); optional in the etcd mode, where bootstrap races on an etcd key (0 when absent).
pub(super) fn index(file: &Path, raw_node: &RawNode, etcd: bool) -> Result<u32, ConfigError> {
    match raw_node.index {
        Some(ix) => Ok(ix),
        None if etcd => Ok(0),
        None => Err(err(
            file,
            "missing field `index` in [node]: the bootstrap order (0 inits the first master); \
             only the etcd mode ([etcd]) goes without it",
        )),
    }
}

/// `node.dc`, `node.priority`, `node.nofailover`: the etcd mode's. Without `[etcd]` they
/// would do nothing (the two-node mode's replica fails over whatever they say), so giving one
/// there is an error rather than a setting silently ignored.
pub(super) fn member(file: &Path, raw_node: &RawNode, etcd: bool) -> Result<Member, ConfigError> {
    if !etcd {
        let given = [
            ("dc", raw_node.dc.is_some()),
            ("priority", raw_node.priority.is_some()),
            ("nofailover", raw_node.nofailover.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|(_, g)| *g) {
            return Err(err(
                file,
                format!(
                    "node.{key} is a setting of the etcd mode and does nothing without an [etcd] \
                     section: remove it, or configure [etcd]"
                ),
            ));
        }
    }
    let dc = raw_node
        .dc
        .clone()
        .unwrap_or_else(|| super::etcd::DEFAULT_DC.into());
    super::etcd::check_name(file, "node.dc", &dc)?;
    Ok(Member {
        dc,
        priority: raw_node.priority.unwrap_or(0),
        nofailover: raw_node.nofailover.unwrap_or(false),
    })
}

/// This node's endpoint, the peers' (with their bootstrap indexes: given, or 0, 1, 2, ... in
/// file order skipping this node's `index`), and no port clash among them.
pub(super) fn endpoints(
    file: &Path,
    raw_node: &RawNode,
    index: u32,
    raw_peers: &[RawPeer],
) -> Result<(Endpoint, Vec<Endpoint>, Vec<PeerConfig>), ConfigError> {
    let node = Endpoint {
        name: raw_node.name.clone(),
        host: raw_node.host.clone(),
        port: raw_node.port,
        api: parse_api(file, "node.api", &raw_node.api)?,
    };
    if node.name.trim().is_empty() {
        return Err(err(file, "node.name must not be empty"));
    }
    if node.host.trim().is_empty() {
        return Err(err(
            file,
            "node.host must not be empty: the address postgres listens on and peers reach",
        ));
    }
    let mut peers = Vec::new();
    let mut peer_cfgs = Vec::new();
    let mut next_index = 0u32;
    for (i, p) in raw_peers.iter().enumerate() {
        let key = format!("peers[{i}]");
        if p.name.trim().is_empty() {
            return Err(err(file, format!("{key}.name must not be empty")));
        }
        if p.host.trim().is_empty() {
            return Err(err(file, format!("{key}.host must not be empty")));
        }
        let api = parse_api(file, &format!("{key}.api"), &p.api)?;
        let index = match p.index {
            Some(ix) => ix,
            None => {
                if next_index == index {
                    next_index += 1;
                }
                let ix = next_index;
                next_index += 1;
                ix
            }
        };
        peers.push(Endpoint {
            name: p.name.clone(),
            host: p.host.clone(),
            port: p.port,
            api,
        });
        peer_cfgs.push(PeerConfig {
            name: p.name.clone(),
            index,
        });
    }
    // Port clashes: two servers or two APIs on one address, or an API on a postgres port.
    let all: Vec<&Endpoint> = std::iter::once(&node).chain(peers.iter()).collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[..i] {
            if a.host == b.host && a.port == b.port {
                return Err(err(
                    file,
                    format!(
                        "port clash: {} and {} both use postgres port {}:{} (node.port / peers.port)",
                        b.name, a.name, a.host, a.port
                    ),
                ));
            }
            if a.api == b.api {
                return Err(err(
                    file,
                    format!(
                        "port clash: {} and {} both use API address {} (node.api / peers.api)",
                        b.name, a.name, a.api
                    ),
                ));
            }
        }
        for b in &all {
            if b.api.port() == a.port && hosts_overlap(&b.api.ip().to_string(), &a.host) {
                return Err(err(
                    file,
                    format!(
                        "port clash: the API of {} ({}) uses the postgres port of {}",
                        b.name, b.api, a.name
                    ),
                ));
            }
        }
    }
    Ok((node, peers, peer_cfgs))
}

/// `node.data_dir`: absolute, its parent a directory, and, when present, a readable directory.
pub(super) fn data_dir(file: &Path, raw_node: &RawNode) -> Result<PathBuf, ConfigError> {
    let data_dir = raw_node.data_dir.clone();
    if !data_dir.is_absolute() {
        return Err(err(
            file,
            format!(
                "node.data_dir = {:?}: must be an absolute path",
                data_dir.display()
            ),
        ));
    }
    check_parent(file, "node.data_dir", &data_dir)?;
    if data_dir.exists() {
        if !data_dir.is_dir() {
            return Err(err(
                file,
                format!(
                    "node.data_dir = {:?} exists and is not a directory",
                    data_dir.display()
                ),
            ));
        }
        std::fs::read_dir(&data_dir).map_err(|e| {
            err(
                file,
                format!(
                    "node.data_dir = {:?} is not readable: {e}",
                    data_dir.display()
                ),
            )
        })?;
    }
    Ok(data_dir)
}

/// `node.bin_dir`, or where PostgreSQL is installed ([`find_bin_dir`]).
pub(super) fn bin_dir(file: &Path, raw_node: &RawNode) -> Result<PathBuf, ConfigError> {
    Ok(match &raw_node.bin_dir {
        Some(b) => {
            if !b.join("pg_ctl").is_file() {
                return Err(err(
                    file,
                    format!(
                        "node.bin_dir = {:?}: no pg_ctl there (is PostgreSQL installed?)",
                        b.display()
                    ),
                ));
            }
            b.clone()
        }
        None => find_bin_dir().ok_or_else(|| {
            err(
                file,
                "node.bin_dir is not set and no PostgreSQL installation was found (looked in /usr/lib/postgresql/*/bin and PATH)",
            )
        })?,
    })
}

fn parse_api(file: &Path, key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        err(
            file,
            format!("{key} = {v:?}: expected an address and port such as \"127.0.0.1:8008\""),
        )
    })
}

/// Finds PostgreSQL's programs when `node.bin_dir` is absent: the newest
/// `/usr/lib/postgresql/*/bin`, else the directory of `pg_ctl` on the PATH.
pub fn find_bin_dir() -> Option<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let bin = e.path().join("bin");
            if bin.join("pg_ctl").is_file() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                best = Some((v, bin));
            }
        }
    }
    if let Some((_, bin)) = best {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|p| p.join("pg_ctl").is_file()))
}

/// Whether two host strings may name the same interface (equal, or either a wildcard).
fn hosts_overlap(a: &str, b: &str) -> bool {
    let wild = |h: &str| h == "0.0.0.0" || h == "::" || h == "*";
    a == b || wild(a) || wild(b)
}
