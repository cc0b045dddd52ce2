//! End-to-end test support: real PostgreSQL 15 clusters driven by real `pgha` daemons on
//! loopback.
//!
//! The harness runs as root (CI does) and runs postgres and pgha as the `postgres` OS user
//! through `runuser -u postgres --`. Each cluster gets its own directory (chowned to
//! `postgres`) and its own ports: postgres from 20000, APIs from 21000, in blocks of
//! [`PORTS_PER_CLUSTER`]. Every wait has a timeout. Only processes this harness started are
//! signalled, by PID; a cluster dropped (test passed or panicked) kills its daemons, stops its
//! postgres servers and removes its directory (kept when `PGHA_E2E_KEEP` is set).
//!
//! The `pgha` binary is `target/debug/pgha` next to the test binary (or `PGHA_BIN`); the
//! harness runs `cargo build -p pgha` once per run so it is never stale.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub use serde_json::Value;

pub mod ack;
pub mod db;
pub mod partition;

pub use ack::{Ack, AckWriter, ids_on, lost, parse_ids};

/// Ports below Linux's ephemeral range (32768-60999), so no outgoing connection's source
/// port can take one a test is about to listen on: postgres 20000-20999, APIs 21000-21999,
/// the routing tests' HAProxy/PgBouncer ports 25000-27999 ([`extra_ports`]).
pub const PG_BASE: u16 = 20000;
pub const API_BASE: u16 = 21000;
pub const EXTRA_BASE: u16 = 25000;
pub const EXTRA_END: u16 = 28000;
pub const PORTS_PER_CLUSTER: u16 = 4;
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Where this run's port blocks start: `PGHA_E2E_BLOCK_START` (a block index, default 0), so
/// two test runs from two checkouts on one machine never hand out the same ports.
fn start_block() -> u16 {
    std::env::var("PGHA_E2E_BLOCK_START")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

static NEXT_BLOCK: AtomicU16 = AtomicU16::new(0);

/// At most this many clusters run at once (2 cores): `PGHA_E2E_PARALLEL`, default 2.
static RUNNING: Mutex<usize> = Mutex::new(0);
static FREED: Condvar = Condvar::new();

fn parallel() -> usize {
    std::env::var("PGHA_E2E_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

/// A slot among the clusters allowed to run at once; freed on drop. Every [`Cluster`] holds
/// one; a test that starts postgres servers some other way (`pgha demo`) takes one itself.
#[derive(Debug)]
pub struct Slot;

impl Slot {
    pub fn take() -> Slot {
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= parallel() {
            n = FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut n = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        FREED.notify_one();
    }
}

/// Whether nothing listens on 127.0.0.1:`port` (it can be bound now).
pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A block of ports (postgres and API) no other cluster of this run uses, all free now.
fn allocate_block() -> (u16, u16) {
    loop {
        let b = start_block() + NEXT_BLOCK.fetch_add(1, Ordering::SeqCst);
        assert!(
            b < 1000 / PORTS_PER_CLUSTER,
            "port ranges 20000-20999 / 21000-21999 exhausted"
        );
        let pg = PG_BASE + b * PORTS_PER_CLUSTER;
        let api = API_BASE + b * PORTS_PER_CLUSTER;
        if (0..PORTS_PER_CLUSTER).all(|i| port_free(pg + i) && port_free(api + i)) {
            return (pg, api);
        }
    }
}

static NEXT_EXTRA: AtomicU16 = AtomicU16::new(0);

/// `n` consecutive ports from 25000-27999 that no other test of this run took, all free now
/// (HAProxy's and PgBouncer's listeners in the routing tests).
pub fn extra_ports(n: u16) -> u16 {
    loop {
        // The same offset as the clusters' blocks, in ports: 250 blocks x 12 = 3,000 ports.
        let p = EXTRA_BASE + start_block() * 12 + NEXT_EXTRA.fetch_add(n, Ordering::SeqCst);
        assert!(p + n <= EXTRA_END, "port range 25000-27999 exhausted");
        if (0..n).all(|i| port_free(p + i)) {
            return p;
        }
    }
}

static BUILT: std::sync::Once = std::sync::Once::new();

/// The `pgha` binary under test: `PGHA_BIN`, else `target/debug/pgha`, which is (re)built once
/// per test run with `cargo build -p pgha` so the tests never run a stale daemon.
pub fn pgha_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PGHA_BIN") {
        return reachable_by_postgres(PathBuf::from(p));
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/e2e-HASH -> target/debug/pgha
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("pgha"))
        .expect("target dir");
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "pgha"])
            .current_dir(workspace)
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => {
                panic!("`cargo build -p pgha` failed ({other:?}); build it by hand or set PGHA_BIN")
            }
        }
    });
    assert!(
        bin.is_file(),
        "{} not found: build it with `cargo build -p pgha` (or set PGHA_BIN)",
        bin.display()
    );
    reachable_by_postgres(bin)
}

static COPIED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// `bin` if the postgres user can execute it; else one copy, per test run, in a directory it
/// can reach (a checkout under a private home directory is not). The copy replaces the
/// previous run's, so at most one is ever left in the temp dir.
fn reachable_by_postgres(bin: PathBuf) -> PathBuf {
    let ok = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(&bin)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return bin;
    }
    COPIED
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let dir = std::env::temp_dir().join("pgha-e2e-bin");
            std::fs::create_dir_all(&dir).expect("create the e2e binary directory");
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let tmp = dir.join(format!("pgha.{}", std::process::id()));
            std::fs::copy(&bin, &tmp).expect("copy pgha where postgres can run it");
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            let dest = dir.join("pgha");
            std::fs::rename(&tmp, &dest).expect("rename the pgha copy");
            dest
        })
        .clone()
}

/// Waits until `f` returns `Some`, polling every 50 ms, or panics after `limit` naming `what`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {:.1} s waiting for {what}",
                limit.as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP request to a pgha API: status code and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    http_auth(addr, method, path, None)
}

/// One HTTP request to a pgha API with `Authorization: Bearer TOKEN` when given.
pub fn http_auth(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("not HTTP")?;
    Ok((code, body.to_string()))
}

/// Whether process `pid` exists and has not exited: a zombie does not run. (A SIGKILLed
/// postmaster is reparented to PID 1, which on some machines reaps it only seconds later.)
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // "pid (comm) S ...": the state follows the last ')'.
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).is_ok()
}

/// `chown -R postgres:postgres path`: what pgha and postgres (run as postgres) must own.
pub fn chown_postgres(path: &Path) {
    let st = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .expect("chown");
    assert!(st.success(), "chown postgres {}", path.display());
}

/// One node of a test cluster.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub host: String,
    /// The network namespace its pgha runs in (None: this one).
    pub netns: Option<String>,
    pub index: u32,
    pub pg_port: u16,
    pub api: SocketAddr,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub journal: PathBuf,
    pub log: PathBuf,
    /// The `runuser` process we spawned, and the pgha under it.
    daemon: Option<Child>,
    runs: u32,
}

/// A test cluster; see the crate documentation.
#[derive(Debug)]
pub struct Cluster {
    pub dir: PathBuf,
    pub runtime: &'static str,
    pub nodes: Vec<Node>,
    /// The operator token every node's `[api] token_file` holds.
    pub token: String,
    pub token_file: PathBuf,
    _slot: Slot,
}

/// Settings a scenario changes in every node's `[replication]`.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Lines added to `[replication]`.
    pub replication: String,
    /// Lines added to `[postgres]`.
    pub postgres: String,
    /// Whole sections appended to every node's file (`[haproxy]`, `[vip]`, ...); `{node}` is
    /// replaced by the node's name.
    pub sections: String,
    /// Node `i`'s address (postgres and API) instead of 127.0.0.1.
    pub hosts: Vec<String>,
    /// Every node's postgres on the same port (nodes on hosts of their own, behind one VIP).
    pub same_port: bool,
    /// `node.bin_dir` instead of PostgreSQL's own (e.g. wrappers around its programs).
    pub bin_dir: Option<PathBuf>,
    /// Node `i`'s pgha runs inside this network namespace, as postgres with the ambient
    /// capabilities CAP_NET_ADMIN and CAP_NET_RAW (for the VIP), through `setpriv`.
    pub netns: Vec<String>,
}

impl Cluster {
    /// A cluster of `n` nodes (configs written, nothing started) for test `name`.
    pub fn new(name: &str, runtime: &'static str, n: usize) -> Cluster {
        Cluster::with(name, runtime, n, Extra::default())
    }

    pub fn with(name: &str, runtime: &'static str, n: usize, extra: Extra) -> Cluster {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the end-to-end tests run as root (postgres and pgha run as the postgres user)"
        );
        assert!(
            Path::new(PG_BIN).join("pg_ctl").is_file(),
            "PostgreSQL 15 is not installed at {PG_BIN} (apt-get install postgresql-15)"
        );
        assert!(n as u16 <= PORTS_PER_CLUSTER);
        let slot = Slot::take();
        let (pg, api) = allocate_block();
        let dir = std::env::temp_dir().join(format!(
            "pgha-e2e-{}-{runtime}-{}-{pg}",
            name,
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test dir");
        chown_postgres(&dir);
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("db{i}");
            let host = extra
                .hosts
                .get(i)
                .cloned()
                .unwrap_or_else(|| "127.0.0.1".into());
            let ip: std::net::IpAddr = host.parse().expect("a host address");
            nodes.push(Node {
                name: name.clone(),
                host,
                netns: extra.netns.get(i).cloned(),
                index: i as u32,
                pg_port: if extra.same_port { pg } else { pg + i as u16 },
                api: SocketAddr::new(ip, api + i as u16),
                data_dir: dir.join(&name),
                config: dir.join(format!("{name}.toml")),
                journal: dir.join(format!("{name}.journal")),
                log: dir.join(format!("{name}.pgha.log")),
                daemon: None,
                runs: 0,
            });
        }
        // One operator token for the cluster, in a file only postgres (and root) may read.
        let token = format!(
            "e2e-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let token_file = dir.join("operator.token");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
            std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the token file");
        }
        let c = Cluster {
            dir,
            runtime,
            nodes,
            token,
            token_file,
            _slot: slot,
        };
        for i in 0..n {
            let text = c.config_text(i, &extra);
            std::fs::write(&c.nodes[i].config, text).expect("write config");
        }
        chown_postgres(&c.dir);
        c
    }

    /// The TOML configuration of node `i` (fast profile).
    pub fn config_text(&self, i: usize, extra: &Extra) -> String {
        let n = &self.nodes[i];
        let mut s = format!(
            "[node]\nname = \"{}\"\nindex = {}\ndata_dir = \"{}\"\nbin_dir = \"{}\"\nhost = \"{}\"\nport = {}\napi = \"{}\"\n\n",
            n.name,
            n.index,
            n.data_dir.display(),
            extra
                .bin_dir
                .as_deref()
                .unwrap_or(Path::new(PG_BIN))
                .display(),
            n.host,
            n.pg_port,
            n.api
        );
        for (j, p) in self.nodes.iter().enumerate() {
            if j == i {
                continue;
            }
            s.push_str(&self.peer_block(j, &p.host, p.pg_port, p.api));
        }
        s.push_str(&format!(
            "[replication]\nenabled = true\n{}transition_bound = 3\n{}\n\n[postgres]\nsocket_dir = \"{}\"\n{}\n\n[timeouts]\nstart = 30\nstop = 30\nbasebackup = 60\n\n[journal]\npath = \"{}\"\n",
            // The core's fast profile (Config::fast); the tests' own transition bound.
            pgha_core::settings::fast_toml(),
            extra.replication,
            if extra.same_port {
                // One port on every host: one socket directory each.
                let d = self.dir.join(format!("{}-sock", n.name));
                let _ = std::fs::create_dir_all(&d);
                d
            } else {
                self.dir.clone()
            }
            .display(),
            extra.postgres,
            n.journal.display()
        ));
        s.push_str(&format!(
            "\n[api]\ntoken_file = \"{}\"\n",
            self.token_file.display()
        ));
        s.push('\n');
        s.push_str(&extra.sections.replace("{node}", &n.name));
        s
    }

    /// Node `j`'s `[[peers]]` entry, reached at `host`:`port` and API `api`.
    fn peer_block(&self, j: usize, host: &str, port: u16, api: SocketAddr) -> String {
        let p = &self.nodes[j];
        format!(
            "[[peers]]\nname = \"{}\"\nindex = {}\nhost = \"{host}\"\nport = {port}\napi = \"{api}\"\n\n",
            p.name, p.index
        )
    }

    /// Node `from` reaches node `to`'s postgres at 127.0.0.1:`port` and its API at
    /// 127.0.0.1:`api` (forwarders, see [`crate::partition`]): rewrites `from`'s configuration,
    /// before it starts.
    pub fn route_peer(&mut self, from: usize, to: usize, port: u16, api: u16) {
        let t = &self.nodes[to];
        let direct = self.peer_block(to, &t.host, t.pg_port, t.api);
        let routed = self.peer_block(
            to,
            "127.0.0.1",
            port,
            SocketAddr::from(([127, 0, 0, 1], api)),
        );
        let path = &self.nodes[from].config;
        let text = std::fs::read_to_string(path).expect("read config");
        assert!(
            text.contains(&direct),
            "{}: no entry for {}",
            path.display(),
            t.name
        );
        std::fs::write(path, text.replace(&direct, &routed)).expect("write config");
    }

    /// Starts node `i`'s pgha as the postgres user.
    pub fn start(&mut self, i: usize) {
        let runtime = self.runtime;
        let n = &mut self.nodes[i];
        assert!(n.daemon.is_none(), "{} already started", n.name);
        n.runs += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("open log");
        let mut cmd = match &n.netns {
            None => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]);
                c
            }
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "setpriv"])
                    .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
                    .args(["--inh-caps=+net_admin,+net_raw"])
                    .args(["--ambient-caps=+net_admin,+net_raw", "--"]);
                c
            }
        };
        let child = cmd
            .arg(pgha_bin())
            .arg("run")
            .arg("--config")
            .arg(&n.config)
            .arg("--runtime")
            .arg(runtime)
            .env("RUST_LOG", "info,pgha=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn runuser pgha");
        n.daemon = Some(child);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// The PID of node `i`'s pgha (the child of the runuser we spawned).
    pub fn daemon_pid(&self, i: usize) -> Option<i32> {
        let child = self.nodes[i].daemon.as_ref()?;
        let rid = child.id();
        // `ip netns exec ... setpriv ... pgha` execs all the way: the child is pgha itself.
        let comm = std::fs::read_to_string(format!("/proc/{rid}/comm")).unwrap_or_default();
        if comm.trim() == "pgha" {
            return Some(rid as i32);
        }
        wait_for_opt(Duration::from_secs(5), || {
            let text = std::fs::read_to_string(format!("/proc/{rid}/task/{rid}/children")).ok()?;
            text.split_whitespace().next()?.parse().ok()
        })
    }

    /// SIGKILL of node `i`'s pgha (not its postgres).
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(pid) = self.daemon_pid(i) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(mut c) = self.nodes[i].daemon.take() {
            let _ = wait_child(&mut c, Duration::from_secs(10));
        }
    }

    /// SIGTERM of node `i`'s pgha; returns its exit code.
    pub fn stop_daemon(&mut self, i: usize) -> Option<i32> {
        if let Some(pid) = self.daemon_pid(i) {
            signal(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let mut c = self.nodes[i].daemon.take()?;
        wait_child(&mut c, Duration::from_secs(20))
    }

    /// The postmaster PID of node `i`, from its `postmaster.pid`.
    pub fn postmaster_pid(&self, i: usize) -> Option<i32> {
        let text = std::fs::read_to_string(self.nodes[i].data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        running(pid).then_some(pid)
    }

    pub fn signal_postmaster(&self, i: usize, sig: nix::sys::signal::Signal) -> i32 {
        let pid = self
            .postmaster_pid(i)
            .unwrap_or_else(|| panic!("{}: no running postmaster", self.nodes[i].name));
        assert!(signal(pid, sig), "signal {sig} to postmaster {pid}");
        pid
    }

    /// `pg_ctl stop` of node `i`'s postgres (as postgres), for teardown and scenarios.
    pub fn pg_ctl_stop(&self, i: usize, mode: &str) {
        if self.postmaster_pid(i).is_none() {
            return;
        }
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(Path::new(PG_BIN).join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(&self.nodes[i].data_dir)
            .args(["-m", mode, "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// `GET /status` of node `i`, parsed.
    pub fn status(&self, i: usize) -> Option<Value> {
        let (code, body) = http(self.nodes[i].api, "GET", "/status").ok()?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// Node `i`'s core state name, when its API answers.
    pub fn state(&self, i: usize) -> Option<String> {
        self.status(i)?["state"].as_str().map(str::to_string)
    }

    /// Waits until node `i` reaches `state` (and, for master/replica, postgres answers so).
    pub fn wait_state(&self, i: usize, state: &str, limit: Duration) -> Value {
        wait_for(
            limit,
            &format!("{} to be {state}", self.nodes[i].name),
            || {
                let s = self.status(i)?;
                let ok = s["state"] == state
                    && match state {
                        "master" => s["local"]["result"] == "master",
                        "replica" => s["local"]["result"] == "replica",
                        _ => true,
                    };
                ok.then_some(s)
            },
        )
    }

    /// A connection to node `i`'s postgres.
    pub fn connect(&self, i: usize) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host(&self.nodes[i].host)
            .port(self.nodes[i].pg_port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(3))
            .connect(postgres::NoTls)
    }

    /// Runs SQL on node `i`; panics with the error.
    pub fn sql(&self, i: usize, sql: &str) -> Vec<postgres::SimpleQueryMessage> {
        let mut c = self
            .connect(i)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.nodes[i].name));
        c.simple_query(sql)
            .unwrap_or_else(|e| panic!("{} on {}: {e}", sql, self.nodes[i].name))
    }

    /// The first column of each row of `sql` on node `i`, or the error.
    pub fn try_rows(&self, i: usize, sql: &str) -> Result<Vec<String>, String> {
        let mut c = self.connect(i).map_err(|e| e.to_string())?;
        first_column(&mut c, sql)
    }

    /// Waits until `sql` on node `i` returns exactly `want` (first column of each row).
    pub fn wait_rows(&self, i: usize, sql: &str, want: &[&str], limit: Duration) {
        wait_for(
            limit,
            &format!("{sql} on {} to return {want:?}", self.nodes[i].name),
            || {
                let rows = self.try_rows(i, sql).ok()?;
                (rows == want).then_some(())
            },
        );
    }

    /// Runs the pgha CLI (as root: every command but `run` allows it).
    pub fn pgha(&self, args: &[&str]) -> Output {
        Command::new(pgha_bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run pgha")
    }

    /// Runs a pgha CLI command against node `i`'s configuration.
    pub fn pgha_on(&self, i: usize, cmd: &str) -> Output {
        let cfg = self.nodes[i].config.display().to_string();
        self.pgha(&[cmd, "--config", &cfg])
    }

    /// `pgha journal replay` of node `i`'s journal: exit 0 expected.
    pub fn assert_replay(&self, i: usize) {
        let j = self.nodes[i].journal.display().to_string();
        let out = self.pgha(&["journal", "replay", &j]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "pgha journal replay {j} failed: {}{stderr}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// `pgha explain` of every journal (text); `None` when it failed.
    pub fn explain(&self) -> Option<String> {
        let js: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.journal.display().to_string())
            .collect();
        let mut args = vec!["explain"];
        args.extend(js.iter().map(String::as_str));
        let out = self.pgha(&args);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    /// The copies of node `i`'s data a re-clone set aside (`<data_dir>.pgha-discarded-r*`).
    pub fn set_aside(&self, i: usize) -> Vec<PathBuf> {
        let prefix = format!("{}.pgha-discarded-r", self.nodes[i].name);
        let mut kept: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect();
        kept.sort();
        kept
    }

    /// The first column of `sql`'s rows on a copy of a data dir (one set aside): a postgres
    /// started on it on a port of its own, stopped again before returning.
    pub fn rows_in_copy(&self, copy: &Path, sql: &str) -> Result<Vec<String>, String> {
        // A postmaster killed with SIGKILL leaves its lock file, naming a PID that may still
        // be a zombie: pg_ctl would refuse to start. No postmaster runs on a copy set aside.
        let lock = copy.join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
        {
            if running(pid) {
                return Err(format!("postmaster {pid} runs on {}", copy.display()));
            }
            std::fs::remove_file(&lock).map_err(|e| e.to_string())?;
        }
        let port = extra_ports(1);
        let pg_ctl = Path::new(PG_BIN).join("pg_ctl");
        let log = self.dir.join(format!("copy-{port}.log"));
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.dir.display()
        );
        let started = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&pg_ctl)
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(copy)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        let rows = if started.success() {
            connect_port(port, "postgres", Duration::from_secs(5))
                .and_then(|mut c| first_column(&mut c, sql))
        } else {
            Err(format!(
                "postgres did not start on {}: {}",
                copy.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            ))
        };
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&pg_ctl)
            .args(["stop", "-m", "immediate", "-w", "-t", "30", "-D"])
            .arg(copy)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        rows
    }

    /// The daemon log of node `i` (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Every log, for a failing assertion.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("==== {} ====\n{}", n.name, self.log(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether node `i`'s daemon process has exited (and its exit code).
    pub fn daemon_exited(&mut self, i: usize) -> Option<Option<i32>> {
        let c = self.nodes[i].daemon.as_mut()?;
        match c.try_wait() {
            Ok(Some(st)) => Some(st.code()),
            _ => None,
        }
    }
}

/// The first column of each row of `sql`, or the error.
fn first_column(c: &mut postgres::Client, sql: &str) -> Result<Vec<String>, String> {
    let msgs = c.simple_query(sql).map_err(|e| e.to_string())?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect())
}

fn wait_for_opt<T>(limit: Duration, f: impl FnMut() -> Option<T>) -> Option<T> {
    poll(limit, Duration::from_millis(20), f)
}

/// Polls `f` every `every` until it returns `Some`, or gives up after `limit` (the tests and
/// the benchmark share it).
pub fn poll<T>(limit: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(every);
    }
}

fn wait_child(c: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = c.try_wait() {
            return st.code();
        }
        if start.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every process below `pid` (its children, theirs, ...), read from /proc while `pid` lives.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    // Bounded: a daemon has a handful of programs below it.
    while let Some(p) = todo.pop() {
        if out.len() >= 256 {
            break;
        }
        let tasks = std::fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten();
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if let Some(pid) = self.daemon_pid(i) {
                // The programs the daemon runs (initdb, pg_basebackup, pg_ctl) outlive a
                // SIGKILLed daemon and would go on writing into the directory removed below:
                // found before the kill, killed by PID after it.
                let below = descendants(pid);
                signal(pid, nix::sys::signal::Signal::SIGKILL);
                for p in below {
                    signal(p, nix::sys::signal::Signal::SIGKILL);
                }
            }
            if let Some(mut c) = self.nodes[i].daemon.take() {
                let _ = wait_child(&mut c, Duration::from_secs(10));
            }
        }
        for i in 0..self.nodes.len() {
            if let Some(pid) = self.postmaster_pid(i) {
                signal(pid, nix::sys::signal::Signal::SIGCONT);
            }
            self.pg_ctl_stop(i, "immediate");
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if std::env::var_os("PGHA_E2E_KEEP").is_some() {
            eprintln!("kept {}", self.dir.display());
        } else {
            // A process that was still exiting may add a file while the tree is removed:
            // try again for a while.
            let dir = self.dir.clone();
            let _ = wait_for_opt(Duration::from_secs(10), || {
                let _ = std::fs::remove_dir_all(&dir);
                (!dir.exists()).then_some(())
            });
        }
    }
}

/// A program a test started (HAProxy, PgBouncer, a client loop): killed by its PID and reaped
/// on drop.
#[derive(Debug)]
pub struct Proc {
    pub what: String,
    child: Child,
}

impl Proc {
    /// Starts `cmd` with its output appended to `log`.
    pub fn spawn(what: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            what: what.to_string(),
            child,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            signal(self.pid(), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = wait_child(&mut self.child, Duration::from_secs(10));
    }
}

/// A connection to a postgres (or PgBouncer, or HAProxy) port on loopback.
pub fn connect_port(
    port: u16,
    dbname: &str,
    timeout: Duration,
) -> Result<postgres::Client, String> {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(dbname)
        .connect_timeout(timeout)
        .connect(postgres::NoTls)
        .map_err(|e| e.to_string())
}

/// `select pg_is_in_recovery()` through `port`: Some(true) on a replica.
pub fn in_recovery(port: u16) -> Option<bool> {
    let mut c = connect_port(port, "postgres", Duration::from_secs(1)).ok()?;
    let rows = c.simple_query("select pg_is_in_recovery()").ok()?;
    rows.iter().find_map(|m| match m {
        postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "t"),
        _ => None,
    })
}

/// The documentation network of the namespace tests. Not 192.0.2.0/24: machines of this kind
/// use that one for their own uplink (192.0.2.2/24, gateway 192.0.2.1).
pub const TEST_NET: &str = "198.51.100";

/// Hosts on one machine: a network namespace per host, each with `eth0` on a bridge in this
/// namespace, which has [`TEST_NET`].1/24 on the bridge so the test reaches every host.
/// Removed on drop (the namespaces, their veths and the bridge).
#[derive(Debug)]
pub struct Net {
    pub ns: Vec<String>,
    bridge: String,
}

/// Runs `ip ARGS`; its stdout, or an error naming the command and its stderr.
pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// One namespace per address in `hosts` (e.g. "192.0.2.10").
    pub fn new(hosts: &[&str]) -> Net {
        let id = std::process::id() % 100_000;
        let bridge = format!("pghabr{id}");
        let mut net = Net {
            ns: Vec::new(),
            bridge: bridge.clone(),
        };
        let subnet = format!("{TEST_NET}.0/24");
        let routes = ip(&["route", "show", &subnet]).unwrap_or_default();
        assert!(
            routes.trim().is_empty() || routes.contains(&bridge),
            "{subnet} is already in use on this machine ({routes}): the namespace tests need it"
        );
        let _ = ip(&["link", "del", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"]).unwrap();
        ip(&["addr", "add", &format!("{TEST_NET}.1/24"), "dev", &bridge]).unwrap();
        ip(&["link", "set", &bridge, "up"]).unwrap();
        for (k, h) in hosts.iter().enumerate() {
            let ns = format!("pgha{id}h{k}");
            let _ = ip(&["netns", "del", &ns]);
            ip(&["netns", "add", &ns]).unwrap();
            net.ns.push(ns.clone());
            let outer = format!("pgv{id}h{k}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &outer,
            ])
            .unwrap();
            ip(&["link", "set", &outer, "master", &bridge, "up"]).unwrap();
            ip(&["-n", &ns, "link", "set", "lo", "up"]).unwrap();
            ip(&["-n", &ns, "addr", "add", &format!("{h}/24"), "dev", "eth0"]).unwrap();
            ip(&["-n", &ns, "link", "set", "eth0", "up"]).unwrap();
        }
        net
    }

    /// Whether host `k` has `addr` on its eth0.
    pub fn holds(&self, k: usize, addr: &str) -> bool {
        ip(&["-n", &self.ns[k], "-o", "-4", "addr", "show", "dev", "eth0"])
            .map(|o| o.contains(&format!(" {addr}/")))
            .unwrap_or(false)
    }

    /// Runs a program inside host `k`'s namespace (as root).
    pub fn exec(&self, k: usize, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns[k]])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A `bin_dir` in `dir` whose `initdb` also trusts `net` (e.g. "192.0.2.0/24") in
/// `pg_hba.conf`, for clusters whose nodes reach each other over that network; the other
/// programs are PostgreSQL's own.
pub fn bin_dir_trusting(dir: &Path, net: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for p in [
        "pg_ctl",
        "pg_basebackup",
        "pg_controldata",
        "postgres",
        "psql",
    ] {
        let _ = std::os::unix::fs::symlink(Path::new(PG_BIN).join(p), bin.join(p));
    }
    let script = format!(
        "#!/bin/sh\n{PG_BIN}/initdb \"$@\" || exit $?\nwhile [ $# -gt 0 ]; do [ \"$1\" = -D ] && d=$2; shift; done\n\
         printf 'host all all {net} trust\\nhost replication all {net} trust\\n' >> \"$d/pg_hba.conf\"\n"
    );
    let initdb = bin.join("initdb");
    std::fs::write(&initdb, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&initdb, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_postgres(&bin);
    bin
}
