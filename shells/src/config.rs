//! The daemon's TOML configuration: parsed strictly (unknown keys, wrong types and missing
//! keys are errors naming the key, the file, and the line and column the parser gives), then
//! checked (port clashes, unreadable paths) before anything starts, and turned into the core's
//! [`pgha_core::Config`]. `docs/configuration.md` documents every key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pgha_core::{PeerConfig, SplitBrainRule, Topology};
use serde::Deserialize;

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
    node: RawNode,
    #[serde(default)]
    peers: Vec<RawPeer>,
    replication: RawReplication,
    journal: RawJournal,
    #[serde(default)]
    postgres: RawPostgres,
    #[serde(default)]
    timeouts: RawTimeouts,
    haproxy: Option<RawHaproxy>,
    vip: Option<RawVip>,
    pgbouncer: Option<RawPgbouncer>,
    hooks: Option<RawHooks>,
    #[serde(default)]
    api: RawApi,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    token_file: Option<PathBuf>,
    socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHaproxy {
    bind: Option<String>,
    write_port: Option<u16>,
    readonly_port: Option<u16>,
    check_interval: Option<f64>,
    maxconn: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    address: String,
    interface: String,
    up_command: Option<String>,
    down_command: Option<String>,
    arping: Option<bool>,
    takeover_wait: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPgbouncer {
    admin: String,
    ini: PathBuf,
    databases: Vec<String>,
    pause_timeout: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    on_role_change: Option<String>,
    on_initdb: Option<String>,
    on_start: Option<String>,
    on_stop: Option<String>,
    on_clone: Option<String>,
    on_promote: Option<String>,
    on_follow: Option<String>,
    on_fence: Option<String>,
    on_unfence: Option<String>,
    on_vip_up: Option<String>,
    on_vip_down: Option<String>,
    timeout: Option<f64>,
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

/// `[api]`: who may send operator requests, and how (docs/security.md).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The file holding the bearer token that operator requests over TCP must carry; `None`:
    /// operator requests over TCP are refused.
    pub token_file: Option<PathBuf>,
    /// The local Unix socket for operator requests (its directory is pgha's, mode 0700).
    pub socket: PathBuf,
}

/// The most bytes a configuration file may have.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The most bytes a token file may have.
pub const MAX_TOKEN_BYTES: u64 = 4096;
/// The longest path a Unix socket address holds (`sun_path` less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
/// What replaces a secret in the configuration text the journal keeps.
pub const REDACTED: &str = "<set; not journaled>";

/// `[hooks]`: user commands (run with `sh -c`).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub on_role_change: Option<String>,
    /// Per command kind: (key, command), e.g. ("on_promote", "...").
    pub after: Vec<(&'static str, String)>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    index: u32,
    data_dir: PathBuf,
    bin_dir: Option<PathBuf>,
    host: String,
    port: u16,
    api: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    host: String,
    port: u16,
    api: String,
    index: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    enabled: bool,
    #[serde(default = "d_grace")]
    grace: f64,
    #[serde(default = "d_connect_timeout")]
    connect_timeout: f64,
    #[serde(default = "d_error_count")]
    psql_error_count: u32,
    #[serde(default = "d_probe_interval")]
    probe_interval: f64,
    grace_stagger: Option<f64>,
    #[serde(default = "d_transition_bound")]
    transition_bound: f64,
    #[serde(default)]
    split_brain: Option<String>,
    #[serde(default)]
    topology: Option<String>,
    /// Seconds; default derived from psql_error_count, connect_timeout and probe_interval.
    #[serde(default)]
    master_give_up: Option<f64>,
    #[serde(default)]
    isolation: Option<String>,
}

fn d_grace() -> f64 {
    15.0
}
fn d_connect_timeout() -> f64 {
    5.0
}
fn d_error_count() -> u32 {
    3
}
fn d_probe_interval() -> f64 {
    1.0
}
fn d_transition_bound() -> f64 {
    30.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    path: PathBuf,
    /// Days of history to keep (0: no age limit).
    retention_days: Option<f64>,
    /// Megabytes the journal may use before the oldest rows go (0: no size limit).
    max_size_mb: Option<f64>,
    /// Seconds kept whole around every transition, whatever the limits say.
    incident_window: Option<f64>,
    /// Seconds between snapshots of the core (where retention may cut a long run).
    snapshot_interval: Option<f64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    socket_dir: Option<PathBuf>,
    listen_addresses: Option<String>,
    log_file: Option<PathBuf>,
    initdb_args: Option<Vec<String>>,
    basebackup_args: Option<Vec<String>>,
    keep_discarded: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    initdb: Option<f64>,
    start: Option<f64>,
    stop: Option<f64>,
    promote: Option<f64>,
    basebackup: Option<f64>,
    command: Option<f64>,
}

/// Where a PostgreSQL server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub api: SocketAddr,
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

/// A checked configuration file.
#[derive(Debug, Clone)]
pub struct FileConfig {
    pub node: Endpoint,
    pub index: u32,
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

/// The journal's snapshot and retention settings. Defaults: 30 days, 1024 MB, incidents kept
/// whole 10 minutes either side, a snapshot every hour. At the measured 50-60 MB per node per
/// day (docs/benchmarks.md) the size limit is what binds after about 18 days.
fn journal_options(file: &Path, j: &RawJournal) -> Result<pgha_journal::Options, ConfigError> {
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

fn err(file: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// A configuration the core refuses, as an error naming the file and every key involved
/// (the give-up inequality names the four timings it compares, and says whether
/// `master_give_up` was set or derived).
fn core_error(file: &Path, e: pgha_core::ConfigError, give_up_set: bool) -> ConfigError {
    use pgha_core::reason::secs;
    let give_up = |ms: u64| {
        if give_up_set {
            format!("replication.master_give_up = {}", secs(ms))
        } else {
            format!(
                "replication.master_give_up (not set: its default psql_error_count x \
                 connect_timeout - probe_interval - min(connect_timeout / 2, 2 s) is {})",
                secs(ms)
            )
        }
    };
    match e {
        pgha_core::ConfigError::GiveUpTooSoon {
            give_up_ms,
            probe_interval_ms,
        } => err(
            file,
            format!(
                "{} must be longer than replication.probe_interval = {}: a healthy master would \
                 give up on its postgres between two probes; raise replication.master_give_up \
                 (at most the limit below), replication.psql_error_count or \
                 replication.connect_timeout, or lower replication.probe_interval",
                give_up(give_up_ms),
                secs(probe_interval_ms)
            ),
        ),
        pgha_core::ConfigError::GiveUpTooLate {
            give_up_ms,
            probe_interval_ms,
            stop_allowance_ms,
            takeover_ms,
        } => err(
            file,
            format!(
                "{} + replication.probe_interval = {} + the stop allowance {} (min(connect_timeout \
                 / 2, 2 s)) exceeds the replica's takeover bound replication.psql_error_count x \
                 replication.connect_timeout = {}: a hung or isolated master could still \
                 acknowledge writes after the replica promoted; set replication.master_give_up \
                 to at most {} (or remove it for its default)",
                give_up(give_up_ms),
                secs(probe_interval_ms),
                secs(stop_allowance_ms),
                secs(takeover_ms),
                secs(
                    takeover_ms
                        .saturating_sub(probe_interval_ms)
                        .saturating_sub(stop_allowance_ms)
                )
            ),
        ),
        other => err(file, other.to_string()),
    }
}

/// What this configuration trades away, for `pgha run` to log at start and `pgha
/// check-config` to print: how a master without its replica behaves (`isolation`), and the
/// race of `split_brain = "both-stop"`. Not errors: the operator chose them, or the defaults.
pub fn tradeoffs(c: &FileConfig) -> Vec<String> {
    use pgha_core::reason::secs;
    let core = &c.core;
    let mut out = Vec::new();
    if core.topology == Topology::Ha {
        out.push(match core.isolation {
            pgha_core::Isolation::Fence => format!(
                "replication.isolation = \"fence\": a dead replica stops writes after \
                 master_give_up ({}) until it answers again (its postgres or its daemon); \
                 \"keep-serving\" keeps writing but loses a partition's writes",
                secs(core.master_give_up_ms)
            ),
            pgha_core::Isolation::KeepServing => format!(
                "replication.isolation = \"keep-serving\": during a partition the isolated \
                 master acknowledges writes that are lost when the replica promotes (up to the \
                 takeover bound, psql_error_count x connect_timeout = {}); \"fence\" (the \
                 default) stops it after master_give_up ({}) instead",
                secs(core.takeover_bound_ms()),
                secs(core.master_give_up_ms)
            ),
        });
    }
    if core.topology != Topology::Standalone && core.split_brain == SplitBrainRule::BothStop {
        out.push(
            "replication.split_brain = \"both-stop\": it races: after a healed partition one \
             master may stop first, be seen stopped by the other, and the other keeps serving \
             (possibly the stale one); \"older-timeline-steps-down\" is the default and \
             stops only the master on the older timeline"
                .to_string(),
        );
    }
    out
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

/// Checks what can be checked of `[api] token_file` without reading it: a regular file, not
/// readable or writable by group or others, not empty, at most [`MAX_TOKEN_BYTES`]. A file
/// this user may not even look at is left to the daemon, which reads it ([`read_token`]):
/// `pgha check` as another user must still work.
fn check_token_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let key = format!("api.token_file = {:?}", path.display());
    if !path.is_absolute() {
        return Err(format!("{key}: must be an absolute path"));
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(()),
        Err(e) => return Err(format!("{key}: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("{key}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{key}: readable or writable by group or others (mode {mode:o}): the token is a secret, `chmod 600` it"
        ));
    }
    if meta.len() == 0 {
        return Err(format!("{key}: the file is empty"));
    }
    if meta.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "{key}: larger than {MAX_TOKEN_BYTES} bytes (a token is one line)"
        ));
    }
    Ok(())
}

/// Reads the operator token from `[api] token_file` (checked as [`check_token_file`] says,
/// then read): one line of visible ASCII, surrounding white space ignored. Errors name the
/// key and the file.
pub fn read_token(path: &Path) -> Result<String, String> {
    check_token_file(path)?;
    let key = format!("api.token_file = {:?}", path.display());
    let text =
        read_bounded(path, MAX_TOKEN_BYTES, "the token file").map_err(|e| format!("{key}: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{key}: the file holds no token"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{key}: the token must be one word of visible ASCII (no spaces, no control characters)"
        ));
    }
    Ok(token.to_string())
}

/// `text` with every secret replaced by [`REDACTED`]: `[postgres] password`, and a password
/// inside `[pgbouncer] admin`'s connection string. Text without secrets is kept as written.
pub fn redact(text: &str) -> String {
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return String::new();
    };
    let mut changed = false;
    if let Some(toml::Value::Table(pg)) = table.get_mut("postgres")
        && let Some(pw) = pg.get_mut("password")
    {
        *pw = toml::Value::String(REDACTED.into());
        changed = true;
    }
    if let Some(toml::Value::Table(b)) = table.get_mut("pgbouncer")
        && let Some(toml::Value::String(admin)) = b.get_mut("admin")
    {
        let r = redact_conninfo(admin);
        if r != *admin {
            *admin = r;
            changed = true;
        }
    }
    if !changed {
        return text.to_string();
    }
    format!(
        "# secrets replaced by \"{REDACTED}\"\n{}",
        toml::to_string(&table).unwrap_or_default()
    )
}

/// A libpq connection string with its password replaced: `password=...` (quoted or not) in
/// the keyword form, `user:password@` in the URI form.
pub fn redact_conninfo(conninfo: &str) -> String {
    if let Some(rest) = conninfo
        .strip_prefix("postgresql://")
        .or_else(|| conninfo.strip_prefix("postgres://"))
    {
        let scheme = &conninfo[..conninfo.len() - rest.len()];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!("{scheme}{}:{REDACTED}{}", &rest[..colon], &rest[at..]);
        }
        return conninfo.to_string();
    }
    let b = conninfo.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // One `key = value` pair.
        while i < b.len() && b[i].is_ascii_whitespace() {
            out.push(b[i]);
            i += 1;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &b[key_start..i];
        out.extend_from_slice(key);
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'=') {
            out.push(b[i]);
            i += 1;
        }
        let value_start = i;
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
        }
        i = i.min(b.len());
        if key == b"password" {
            out.extend_from_slice(format!("'{REDACTED}'").as_bytes());
        } else {
            out.extend_from_slice(&b[value_start..i]);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses and checks configuration text read from `file`.
pub fn parse(file: &Path, text: &str) -> Result<(FileConfig, Vec<String>), ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let msg = e.to_string();
        err(file, msg.trim_end().to_string())
    })?;
    let node = Endpoint {
        name: raw.node.name.clone(),
        host: raw.node.host.clone(),
        port: raw.node.port,
        api: parse_api(file, "node.api", &raw.node.api)?,
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
    for (i, p) in raw.peers.iter().enumerate() {
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
                if next_index == raw.node.index {
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

    let repl = &raw.replication;
    let topology = match (repl.enabled, repl.topology.as_deref()) {
        (false, None | Some("standalone")) => Topology::Standalone,
        (false, Some(t)) => {
            return Err(err(
                file,
                format!(
                    "replication.topology = {t:?} but replication.enabled = false (standalone)"
                ),
            ));
        }
        (true, Some("ha")) => Topology::Ha,
        (true, Some("star")) => Topology::Star,
        (true, Some(t)) => {
            return Err(err(
                file,
                format!("replication.topology = {t:?}: expected \"ha\" or \"star\""),
            ));
        }
        (true, None) if peers.len() == 1 => Topology::Ha,
        (true, None) => Topology::Star,
    };
    let split_brain = match repl.split_brain.as_deref() {
        Some("both-stop") => SplitBrainRule::BothStop,
        None | Some("older-timeline-steps-down") => SplitBrainRule::OlderTimelineStepsDown,
        Some(v) => {
            return Err(err(
                file,
                format!(
                    "replication.split_brain = {v:?}: expected \"both-stop\" or \"older-timeline-steps-down\""
                ),
            ));
        }
    };
    let isolation = match repl.isolation.as_deref() {
        None | Some("fence") => pgha_core::Isolation::Fence,
        Some("keep-serving") => pgha_core::Isolation::KeepServing,
        Some(v) => {
            return Err(err(
                file,
                format!("replication.isolation = {v:?}: expected \"fence\" or \"keep-serving\""),
            ));
        }
    };
    let grace_ms = secs(file, "replication.grace", repl.grace)?;
    let connect_timeout_ms = secs(file, "replication.connect_timeout", repl.connect_timeout)?;
    let probe_interval_ms = secs(file, "replication.probe_interval", repl.probe_interval)?;
    let master_give_up_ms = match repl.master_give_up {
        Some(v) => secs(file, "replication.master_give_up", v)?,
        None => pgha_core::Config::default_master_give_up_ms(
            repl.psql_error_count,
            connect_timeout_ms,
            probe_interval_ms,
        ),
    };
    let core = pgha_core::Config {
        name: node.name.clone(),
        index: raw.node.index,
        peers: if topology == Topology::Standalone {
            Vec::new()
        } else {
            peer_cfgs
        },
        topology,
        grace_ms,
        grace_stagger_ms: match repl.grace_stagger {
            Some(v) => secs(file, "replication.grace_stagger", v)?,
            None => (grace_ms / 3).min(5_000),
        },
        connect_timeout_ms,
        psql_error_count: repl.psql_error_count,
        probe_interval_ms,
        transition_bound_ms: secs(file, "replication.transition_bound", repl.transition_bound)?,
        split_brain,
        master_give_up_ms,
        isolation,
        vip: raw.vip.is_some(),
        proxy: raw.pgbouncer.is_some(),
        hooks: raw
            .hooks
            .as_ref()
            .is_some_and(|h| h.on_role_change.is_some()),
    };
    if topology == Topology::Standalone && !peers.is_empty() {
        return Err(err(
            file,
            format!(
                "replication.enabled = false but {} [[peers]] are configured",
                peers.len()
            ),
        ));
    }
    let warnings = core
        .validate()
        .map_err(|e| core_error(file, e, repl.master_give_up.is_some()))?
        .into_iter()
        .map(|w| w.to_string())
        .collect();

    // Paths: the data dir's parent must exist, the data dir (when present) be a readable
    // directory, the journal's directory exist, and PostgreSQL's programs be there.
    let data_dir = raw.node.data_dir.clone();
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
    check_parent(file, "journal.path", &raw.journal.path)?;
    if raw.journal.path.is_dir() {
        return Err(err(
            file,
            format!(
                "journal.path = {:?} is a directory; name a file",
                raw.journal.path.display()
            ),
        ));
    }
    let bin_dir = match &raw.node.bin_dir {
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
    };
    let pgraw = &raw.postgres;
    let pg = PgSettings {
        user: pgraw.user.clone().unwrap_or_else(|| "postgres".into()),
        password: pgraw.password.clone(),
        dbname: pgraw.dbname.clone().unwrap_or_else(|| "postgres".into()),
        socket_dir: pgraw.socket_dir.clone(),
        listen_addresses: pgraw.listen_addresses.clone(),
        log_file: pgraw
            .log_file
            .clone()
            .unwrap_or_else(|| sibling(&data_dir, "postgres.log")),
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
    };
    let t = &raw.timeouts;
    let ms = |key: &str, v: Option<f64>, d: f64| secs(file, key, v.unwrap_or(d));
    let timeouts = Timeouts {
        initdb_ms: ms("timeouts.initdb", t.initdb, 120.0)?,
        start_ms: ms("timeouts.start", t.start, 120.0)?,
        stop_ms: ms("timeouts.stop", t.stop, 60.0)?,
        promote_ms: ms("timeouts.promote", t.promote, 60.0)?,
        basebackup_ms: ms("timeouts.basebackup", t.basebackup, 3600.0)?,
        command_ms: ms("timeouts.command", t.command, 30.0)?,
    };
    let haproxy = {
        let h = raw.haproxy.clone();
        let h = h.as_ref();
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
    let vip = match &raw.vip {
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
    };
    let pgbouncer = match &raw.pgbouncer {
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
    };
    let hooks = {
        let h = raw.hooks.clone().unwrap_or_default();
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
        Hooks {
            on_role_change: h.on_role_change,
            after,
            timeout_ms: secs(file, "hooks.timeout", h.timeout.unwrap_or(30.0))?,
        }
    };
    let journal_options = journal_options(file, &raw.journal)?;
    let api = {
        if let Some(t) = &raw.api.token_file {
            check_token_file(t).map_err(|e| err(file, e))?;
        }
        let (socket, defaulted) = match &raw.api.socket {
            Some(s) => (s.clone(), false),
            None => (sibling(&raw.journal.path, "d").join("api.sock"), true),
        };
        let key = if defaulted {
            format!(
                "api.socket (by default {:?}, beside journal.path)",
                socket.display()
            )
        } else {
            format!("api.socket = {:?}", socket.display())
        };
        if !socket.is_absolute() {
            return Err(err(file, format!("{key}: must be an absolute path")));
        }
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(err(
                file,
                format!(
                    "{key}: longer than the {MAX_SOCKET_PATH} bytes a Unix socket path may have; set [api] socket to a shorter path"
                ),
            ));
        }
        if socket.parent().is_none_or(|p| p.as_os_str().is_empty()) {
            return Err(err(file, format!("{key}: names no directory")));
        }
        ApiSettings {
            token_file: raw.api.token_file.clone(),
            socket,
        }
    };
    Ok((
        FileConfig {
            node,
            index: raw.node.index,
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

/// Whether two host strings may name the same interface (equal, or either a wildcard).
fn hosts_overlap(a: &str, b: &str) -> bool {
    let wild = |h: &str| h == "0.0.0.0" || h == "::" || h == "*";
    a == b || wild(a) || wild(b)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A two-node configuration (db0 on 127.0.0.1:6432, db1 on :6433) in `dir`.
    pub(crate) fn sample(dir: &Path) -> String {
        format!(
            r#"
[node]
name = "db0"
index = 0
data_dir = "{d}/db0"
host = "127.0.0.1"
port = 6432
api = "127.0.0.1:8008"

[[peers]]
name = "db1"
host = "127.0.0.1"
port = 6433
api = "127.0.0.1:8009"

[replication]
enabled = true
grace = 15
connect_timeout = 5
psql_error_count = 3
probe_interval = 0.2

[journal]
path = "{d}/db0.journal"
"#,
            d = dir.display()
        )
    }

    fn tmp() -> PathBuf {
        std::env::temp_dir()
    }

    #[test]
    fn the_issue_example_parses_into_an_ha_pair() {
        let (c, warnings) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
        assert_eq!(c.core.topology, Topology::Ha);
        assert_eq!(c.core.peers[0].index, 1);
        assert_eq!(c.core.probe_interval_ms, 200);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn an_unknown_key_names_the_key_line_and_file() {
        let text = sample(&tmp()).replace("port = 6432", "port = 6432\nprot = 1");
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("x.toml"), "{e}");
        assert!(e.contains("prot"), "{e}");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn a_wrong_type_and_a_missing_key_are_errors() {
        let text = sample(&tmp()).replace("port = 6432", "port = \"x\"");
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        let text = sample(&tmp()).replace("name = \"db0\"", "");
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("name"), "{e}");
    }

    #[test]
    fn the_journal_keeps_thirty_days_or_a_gigabyte_by_default_and_zero_means_no_limit() {
        let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
        let r = c
            .journal_options
            .retention
            .expect("retention on by default");
        assert_eq!(r.max_age_ms, Some(30 * 86_400_000));
        assert_eq!(r.max_bytes, Some(1024 * 1_048_576));
        assert_eq!(c.journal_options.snapshot_every_ms, Some(3_600_000));
        let text = sample(&tmp()).replace(
            "[journal]",
            "[journal]\nretention_days = 0\nmax_size_mb = 0",
        );
        let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
        assert!(c.journal_options.retention.is_none());
        let text = sample(&tmp()).replace("[journal]", "[journal]\nmax_size_mb = -1");
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(
            e.contains("journal.max_size_mb") && e.contains("x.toml"),
            "{e}"
        );
    }

    #[test]
    fn a_port_clash_is_an_error() {
        let text = sample(&tmp()).replace("port = 6433", "port = 6432");
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("port clash"), "{e}");
    }

    #[test]
    fn an_empty_or_blank_host_is_refused_naming_the_key() {
        let text = sample(&tmp()).replacen("host = \"127.0.0.1\"", "host = \"\"", 1);
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("node.host") && e.contains("x.toml"), "{e}");
        let i = sample(&tmp()).rfind("host = \"127.0.0.1\"").unwrap();
        let mut text = sample(&tmp());
        text.replace_range(i..i + "host = \"127.0.0.1\"".len(), "host = \"  \"");
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("peers[0].host"), "{e}");
    }

    #[test]
    fn a_peer_with_the_nodes_own_index_is_refused() {
        let text = sample(&tmp()).replace("port = 6433", "port = 6433\nindex = 0");
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("index 0") || e.contains("index"), "{e}");
    }

    #[test]
    fn keep_discarded_defaults_to_one_copy_and_is_bounded() {
        let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
        assert_eq!(c.pg.keep_discarded, 1);
        let text = format!("{}\n[postgres]\nkeep_discarded = 0\n", sample(&tmp()));
        let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(c.pg.keep_discarded, 0);
        let text = format!("{}\n[postgres]\nkeep_discarded = 1000\n", sample(&tmp()));
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("postgres.keep_discarded"), "{e}");
    }

    #[test]
    fn a_config_file_is_read_up_to_a_bound_and_a_device_that_never_ends_is_an_error() {
        let e = load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("larger than"), "{e}");
    }

    fn token_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn the_token_file_must_be_private_regular_non_empty_and_small_and_errors_name_it() {
        let dir = std::env::temp_dir().join(format!("pgha-config-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _cleanup = crate::testutil::RemoveOnDrop(dir.clone());
        let with =
            |p: &Path| sample(&tmp()) + &format!("\n[api]\ntoken_file = \"{}\"\n", p.display());
        let good = token_file(&dir, "good", "s3cret\n", 0o600);
        let (c, _) = parse(Path::new("x.toml"), &with(&good)).unwrap();
        assert_eq!(
            read_token(c.api.token_file.as_ref().unwrap()).unwrap(),
            "s3cret"
        );
        let cases = [
            (token_file(&dir, "open", "s3cret", 0o644), "chmod 600"),
            (token_file(&dir, "empty", "", 0o600), "empty"),
            (
                token_file(&dir, "big", &"x".repeat(5000), 0o600),
                "larger than",
            ),
            (dir.join("missing"), "No such file"),
            (dir.clone(), "not a regular file"),
        ];
        for (p, needle) in cases {
            let e = parse(Path::new("x.toml"), &with(&p))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("api.token_file")
                    && e.contains(p.to_str().unwrap())
                    && e.contains(needle),
                "{e}"
            );
        }
        let spaces = token_file(&dir, "spaces", "two words", 0o600);
        let e = read_token(&spaces).unwrap_err();
        assert!(
            e.contains("api.token_file") && e.contains("visible ASCII"),
            "{e}"
        );
        let blank = token_file(&dir, "blank", "  \n", 0o600);
        assert!(read_token(&blank).unwrap_err().contains("no token"));
    }

    #[test]
    fn the_socket_defaults_beside_the_journal_and_a_path_too_long_for_a_socket_is_an_error() {
        let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
        assert_eq!(c.api.socket, sibling(&c.journal, "d").join("api.sock"));
        let long = format!("/tmp/{}/api.sock", "d".repeat(120));
        let text = sample(&tmp()) + &format!("\n[api]\nsocket = \"{long}\"\n");
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(e.contains("api.socket") && e.contains("shorter"), "{e}");
    }

    #[test]
    fn secrets_never_reach_the_journal_text() {
        let text = sample(&tmp()).replace(
            "[journal]",
            "[postgres]\npassword = \"hunter2-pw\"\n\n[journal]",
        ) + "\n[pgbouncer]\nadmin = \"host=127.0.0.1 port=6432 user=pgb password='bouncer pw' dbname=pgbouncer\"\nini = \"/tmp/pgbouncer.ini\"\ndatabases = [\"app\"]\n";
        let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(c.pg.password.as_deref(), Some("hunter2-pw"));
        let j = &c.journal_text;
        assert!(
            !j.contains("hunter2-pw") && !j.contains("bouncer pw"),
            "{j}"
        );
        assert!(j.contains(REDACTED) && j.contains("user=pgb"), "{j}");
        // Still a configuration of the same node.
        let again: toml::Table = toml::from_str(j).unwrap();
        assert_eq!(again["node"]["name"].as_str(), Some("db0"));
        // Text without secrets is kept as written.
        let plain = sample(&tmp());
        let (c, _) = parse(Path::new("x.toml"), &plain).unwrap();
        assert_eq!(c.journal_text, plain);
        assert_eq!(
            redact_conninfo("postgresql://app:pa55@db:5432/app"),
            format!("postgresql://app:{REDACTED}@db:5432/app")
        );
        assert_eq!(
            redact_conninfo("password=x host=h"),
            format!("password='{REDACTED}' host=h")
        );
    }

    #[test]
    fn a_short_connect_timeout_warns() {
        // Five probes, so the derived master_give_up (5 x 0.1 s - 0.2 s - 0.05 s) still
        // outlasts a probe interval.
        let text = sample(&tmp())
            .replace("connect_timeout = 5", "connect_timeout = 0.1")
            .replace("psql_error_count = 3", "psql_error_count = 5");
        let (_, w) = parse(Path::new("x.toml"), &text).unwrap();
        assert!(w.iter().any(|w| w.contains("connect_timeout")), "{w:?}");
    }

    #[test]
    fn a_master_give_up_past_the_replicas_takeover_is_an_error_naming_the_file_and_the_keys() {
        let text = sample(&tmp()).replace(
            "probe_interval = 0.2",
            "probe_interval = 0.2\nmaster_give_up = 14",
        );
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        for key in [
            "x.toml",
            "replication.master_give_up = 14 s",
            "replication.probe_interval",
            "replication.psql_error_count",
            "replication.connect_timeout",
            "at most 12.8 s",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
        // At the limit it is accepted.
        let text = sample(&tmp()).replace(
            "probe_interval = 0.2",
            "probe_interval = 0.2\nmaster_give_up = 12.8",
        );
        let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(c.core.master_give_up_ms, 12_800);
    }

    #[test]
    fn a_master_give_up_within_one_probe_interval_is_an_error_saying_whether_it_was_set() {
        let text = sample(&tmp()).replace(
            "probe_interval = 0.2",
            "probe_interval = 0.2\nmaster_give_up = 0.2",
        );
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(
            e.contains("x.toml")
                && e.contains("replication.master_give_up = 0.2 s")
                && e.contains("replication.probe_interval = 0.2 s"),
            "{e}"
        );
        // Derived: 3 x 0.5 s - 1 s - 0.25 s = 0.25 s, within one probe interval of 1 s.
        let text = sample(&tmp())
            .replace("connect_timeout = 5", "connect_timeout = 0.5")
            .replace("probe_interval = 0.2", "probe_interval = 1");
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(
            e.contains("x.toml") && e.contains("not set") && e.contains("0.25 s"),
            "{e}"
        );
    }

    #[test]
    fn the_give_up_defaults_to_the_takeover_less_a_probe_interval_and_the_stop_allowance() {
        // 3 x 5 s - 0.2 s - 2 s; with the default probe_interval of 1 s, 12 s.
        let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
        assert_eq!(c.core.master_give_up_ms, 12_800);
        assert_eq!(c.core.isolation, pgha_core::Isolation::Fence);
        assert_eq!(c.core.split_brain, SplitBrainRule::OlderTimelineStepsDown);
        let text = sample(&tmp()).replace("probe_interval = 0.2", "probe_interval = 1");
        let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
        assert_eq!(c.core.master_give_up_ms, 12_000);
        let text = sample(&tmp()).replace(
            "probe_interval = 0.2",
            "probe_interval = 0.2\nisolation = \"fenced\"",
        );
        let e = parse(Path::new("x.toml"), &text).unwrap_err().to_string();
        assert!(
            e.contains("replication.isolation") && e.contains("x.toml"),
            "{e}"
        );
    }

    #[test]
    fn the_start_up_notes_say_what_isolation_and_both_stop_trade_away() {
        let (c, _) = parse(Path::new("x.toml"), &sample(&tmp())).unwrap();
        let notes = tradeoffs(&c);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("a dead replica stops writes after master_give_up (12.8 s)"),
            "{notes:?}"
        );
        let text = sample(&tmp()).replace(
            "probe_interval = 0.2",
            "probe_interval = 0.2\nisolation = \"keep-serving\"\nsplit_brain = \"both-stop\"",
        );
        let (c, _) = parse(Path::new("x.toml"), &text).unwrap();
        let notes = tradeoffs(&c).join("\n");
        assert!(
            notes.contains(
                "the isolated master acknowledges writes that are lost when the replica promotes"
            ) && notes.contains("15 s"),
            "{notes}"
        );
        assert!(
            notes.contains("both-stop")
                && notes.contains("races")
                && notes.contains("\"older-timeline-steps-down\" is the default"),
            "{notes}"
        );
    }
}
