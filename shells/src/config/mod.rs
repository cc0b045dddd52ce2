//! The daemon's TOML configuration: parsed strictly (unknown keys, wrong types and missing
//! keys are errors naming the key, the file, and the line and column the parser gives), then
//! checked (port clashes, unreadable paths) before anything starts, and turned into the core's
//! [`pgha_core::Config`]. `docs/configuration.md` documents every key. One module per
//! section; `[replication]`'s core settings are read through the core's settings table.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod api;
mod etcd;
mod hooks;
mod journal;
mod node;
mod postgres;
mod replication;
mod routing;
mod secrets;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_etcd;

pub use api::{ApiSettings, read_token};
pub use etcd::EtcdSettings;
pub use hooks::Hooks;
pub use node::{Endpoint, Member, find_bin_dir};
pub use postgres::{PgSettings, Timeouts};
pub use replication::tradeoffs;
pub use routing::{HaproxySettings, PgbouncerSettings, VipSettings};
use secrets::redact;

/// A configuration that cannot be used, with the file and the key it concerns.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: node::RawNode,
    #[serde(default)]
    peers: Vec<node::RawPeer>,
    replication: replication::RawReplication,
    journal: journal::RawJournal,
    #[serde(default)]
    postgres: postgres::RawPostgres,
    #[serde(default)]
    timeouts: postgres::RawTimeouts,
    haproxy: Option<routing::RawHaproxy>,
    vip: Option<routing::RawVip>,
    pgbouncer: Option<routing::RawPgbouncer>,
    hooks: Option<hooks::RawHooks>,
    #[serde(default)]
    api: api::RawApi,
    etcd: Option<etcd::RawEtcd>,
}

/// The most bytes a configuration file may have.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A checked configuration file.
#[derive(Debug, Clone)]
pub struct FileConfig {
    pub node: Endpoint,
    /// `node.index` (0 when an etcd-mode file omits it).
    pub index: u32,
    /// `node.dc`, `priority`, `nofailover`: what this node publishes in the etcd mode.
    pub member: Member,
    /// `[etcd]`: the etcd-lease mode (issue 13), not built yet: `pgha run` refuses a file
    /// with it.
    pub etcd: Option<EtcdSettings>,
    pub data_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub peers: Vec<Endpoint>,
    pub journal: PathBuf,
    /// Snapshots and retention for the journal.
    pub journal_options: pgha_journal::Options,
    pub pg: PgSettings,
    pub timeouts: Timeouts,
    pub haproxy: HaproxySettings,
    pub vip: Option<VipSettings>,
    pub pgbouncer: Option<PgbouncerSettings>,
    pub hooks: Hooks,
    pub api: ApiSettings,
    /// The configuration text with its secrets replaced by [`REDACTED`]: what the journal
    /// keeps in each run's header.
    pub journal_text: String,
    /// What the core decides with.
    pub core: pgha_core::Config,
}

fn secs(file: &Path, key: &str, v: f64) -> Result<u64, ConfigError> {
    if !v.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&v) {
        return Err(err(
            file,
            format!("{key} = {v}: must be a number of seconds between 0 and one year"),
        ));
    }
    Ok((v * 1000.0).round() as u64)
}

fn err(file: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// Reads, parses and checks a configuration file. Warnings of the core's
/// [`pgha_core::Config::validate`] are returned for the caller to log.
pub fn load(file: &Path) -> Result<(FileConfig, Vec<String>), ConfigError> {
    let text =
        read_bounded(file, MAX_CONFIG_BYTES, "the configuration file").map_err(|e| err(file, e))?;
    parse(file, &text)
}

/// Reads at most `max` bytes of UTF-8 text from `path`; more is an error (a device such as
/// `/dev/zero` never ends).
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {what}: {e}"))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "{what} is larger than {} bytes: not what pgha expects there",
            max
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8 text"))
}

/// Parses and checks configuration text read from `file`.
pub fn parse(file: &Path, text: &str) -> Result<(FileConfig, Vec<String>), ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let msg = e.to_string();
        err(file, msg.trim_end().to_string())
    })?;
    let etcd = raw.etcd.as_ref().map(|e| etcd::etcd(file, e)).transpose()?;
    let index = node::index(file, &raw.node, etcd.is_some())?;
    let member = node::member(file, &raw.node, etcd.is_some())?;
    let (node, peers, peer_cfgs) = node::endpoints(file, &raw.node, index, &raw.peers)?;
    let routing = replication::Routing {
        vip: raw.vip.is_some(),
        proxy: raw.pgbouncer.is_some(),
        hooks: raw
            .hooks
            .as_ref()
            .is_some_and(|h| h.on_role_change.is_some()),
    };
    let (core, mut warnings) = replication::core(
        file,
        &raw.replication,
        (&node.name, index),
        peer_cfgs,
        routing,
        etcd.is_some(),
    )?;
    if let Some(e) = &etcd
        && !e.primary_dc_given
        && member.dc != e.primary_dc
    {
        warnings.push(format!(
            "etcd.primary_dc is not set (default {:?}) but node.dc = {:?}: a cluster \
             bootstrapped by this node would let no replica outside data centre {:?} take over",
            e.primary_dc, member.dc, e.primary_dc
        ));
    }
    // Paths: the data dir's parent must exist, the data dir (when present) be a readable
    // directory, the journal's directory exist, and PostgreSQL's programs be there.
    let data_dir = node::data_dir(file, &raw.node)?;
    journal::check_path(file, &raw.journal)?;
    let bin_dir = node::bin_dir(file, &raw.node)?;
    let pg = postgres::pg(file, &raw.postgres, &data_dir)?;
    let timeouts = postgres::timeouts(file, &raw.timeouts)?;
    let haproxy = routing::haproxy(file, raw.haproxy.as_ref())?;
    let vip = routing::vip(file, raw.vip.as_ref())?;
    let pgbouncer = routing::pgbouncer(file, raw.pgbouncer.as_ref())?;
    let hooks = hooks::hooks(file, raw.hooks.as_ref())?;
    let journal_options = journal::journal_options(file, &raw.journal)?;
    let api = api::api(file, &raw.api, &raw.journal.path)?;
    Ok((
        FileConfig {
            node,
            index,
            member,
            etcd,
            data_dir,
            bin_dir,
            peers,
            journal_options,
            journal: raw.journal.path,
            pg,
            timeouts,
            haproxy,
            vip,
            pgbouncer,
            hooks,
            api,
            journal_text: redact(text),
            core,
        },
        warnings,
    ))
}

fn check_parent(file: &Path, key: &str, path: &Path) -> Result<(), ConfigError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    let Some(parent) = parent else {
        return Ok(());
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(err(
            file,
            format!(
                "{key} = {:?}: {} is not a directory",
                path.display(),
                parent.display()
            ),
        )),
        Err(e) => Err(err(
            file,
            format!(
                "{key} = {:?}: its directory {} is not usable: {e}",
                path.display(),
                parent.display()
            ),
        )),
    }
}

/// `<data_dir>.<suffix>`, next to the data dir (so it survives a re-clone).
pub fn sibling(data_dir: &Path, suffix: &str) -> PathBuf {
    let mut s = data_dir.as_os_str().to_os_string();
    s.push(".");
    s.push(suffix);
    PathBuf::from(s)
}

impl FileConfig {
    pub fn peer(&self, id: pgha_core::PeerId) -> Option<&Endpoint> {
        self.peers.get(id.index())
    }
}
