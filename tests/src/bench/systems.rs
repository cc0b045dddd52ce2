//! The clusters under comparison, behind one interface: pgha (two daemons) and Patroni (two
//! agents and one local etcd). Both serve `GET /primary` and `GET /replica` (200 or 503) on
//! their HTTP APIs, which HAProxy and the benchmark use alike.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::netns::Net;
use crate::procs::{self, PG_BIN, Procs, poll};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the master's postmaster and its agent.
    Kill,
    /// SIGSTOP of the master's postmaster (SIGCONT and cleanup after).
    Hang,
    /// The master's link cut (network namespaces, neighbour entries to a MAC address
    /// nobody has; healed after): pgha only.
    Partition,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Hang => "hang",
            Fault::Partition => "partition",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pgha,
    Patroni,
}

/// One configuration of one tool.
#[derive(Debug, Clone)]
pub struct Profile {
    pub kind: Kind,
    pub label: &'static str,
    /// Human-readable settings for the report.
    pub settings: &'static str,
    /// Lines for pgha's `[replication]`, or Patroni's `bootstrap.dcs` (ttl, loop_wait, retry_timeout).
    pub timing: &'static [(&'static str, &'static str)],
    /// pgha's fast profile (`pgha_core::settings::FAST`, the one the simulator, the e2e tests
    /// and the demo use) in `[replication]`, before `timing`.
    pub fast: bool,
}

pub fn profiles() -> Vec<Profile> {
    vec![
        Profile {
            kind: Kind::Pgha,
            label: "pgha defaults",
            settings: "probe_interval 1, connect_timeout 5, psql_error_count 3",
            timing: &[],
            fast: false,
        },
        Profile {
            kind: Kind::Pgha,
            label: "pgha fast",
            settings: "the fast profile: probe_interval 0.2, connect_timeout 0.5, psql_error_count 3, grace 3, grace_stagger 1",
            timing: &[],
            fast: true,
        },
        Profile {
            kind: Kind::Patroni,
            label: "Patroni defaults",
            settings: "ttl 30, loop_wait 10, retry_timeout 10",
            timing: &[("ttl", "30"), ("loop_wait", "10"), ("retry_timeout", "10")],
            fast: false,
        },
        Profile {
            kind: Kind::Patroni,
            label: "Patroni minimums",
            settings: "ttl 20, loop_wait 1, retry_timeout 3",
            timing: &[("ttl", "20"), ("loop_wait", "1"), ("retry_timeout", "3")],
            fast: false,
        },
    ]
}

/// One HTTP GET; the status code.
pub fn http_get(port: u16, path: &str) -> Option<u16> {
    http_get_at("127.0.0.1", port, path)
}

/// One HTTP GET to `host:port`; the status code.
pub fn http_get_at(host: &str, port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let ip: std::net::IpAddr = host.parse().ok()?;
    let addr = std::net::SocketAddr::new(ip, port);
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// Every listening port of block `k`: postgres, pgha APIs, HAProxy candidates, etcd,
/// Patroni REST.
fn block_ports(k: u16) -> Vec<u16> {
    let (pg, etcd) = (58000 + 100 * k, 59000 + 100 * k);
    vec![
        pg,
        pg + 1,
        pg + 20,
        pg + 21,
        pg + 80,
        pg + 90,
        etcd,
        etcd + 1,
        etcd + 10,
        etcd + 11,
    ]
}

/// A running two-node cluster of one profile.
#[derive(Debug)]
pub struct Cluster {
    pub profile: Profile,
    pub dir: PathBuf,
    pub pg_ports: [u16; 2],
    pub api_ports: [u16; 2],
    pub etcd_port: u16,
    pub agents: [Option<i32>; 2],
    pub etcd: Option<i32>,
    pub haproxy: Option<i32>,
    /// PgBouncer's port, when pgha repoints one (`[pgbouncer]`; pgha profiles only).
    pub pgbouncer_port: Option<u16>,
    pub pgbouncer: Option<i32>,
    pgha_bin: PathBuf,
    /// The nodes' addresses: 127.0.0.1, or theirs in their namespaces.
    pub hosts: [String; 2],
    /// One network namespace per node (the partition fault; pgha only).
    pub net: Option<Net>,
    /// A bin_dir whose initdb trusts the namespaces' network.
    bin_dir: Option<PathBuf>,
}

impl Cluster {
    /// Directories and configuration files for profile number `k` (ports from 58000 + 100 k
    /// for postgres and pgha's API, 59000 + 100 k for etcd and Patroni's REST API).
    pub fn new(
        procs: &mut Procs,
        root: &Path,
        k: u16,
        profile: Profile,
        pgha_bin: &Path,
    ) -> Result<Cluster, String> {
        Cluster::new_in(procs, root, k, profile, pgha_bin, false)
    }

    /// As [`Cluster::new`]; with `namespaces`, each node in its own network namespace
    /// (pgha only).
    pub fn new_in(
        procs: &mut Procs,
        root: &Path,
        k: u16,
        profile: Profile,
        pgha_bin: &Path,
        namespaces: bool,
    ) -> Result<Cluster, String> {
        // Outgoing connections take ephemeral ports in this range too: use the first block
        // from k on whose ports are all free now.
        let k = (k..k + 10)
            .map(|b| b % 10)
            .find(|b| block_ports(*b).iter().all(|p| procs::port_free(*p)))
            .ok_or("no free block of ports in 58000-59999")?;
        let dir = root.join(format!("c{k}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (pg, api, etcd) = (58000 + 100 * k, 58020 + 100 * k, 59000 + 100 * k);
        let api_ports = match profile.kind {
            Kind::Pgha => [api, api + 1],
            Kind::Patroni => [etcd + 10, etcd + 11],
        };
        let (net, bin_dir) = if namespaces {
            if profile.kind != Kind::Pgha {
                return Err("network namespaces: pgha only".into());
            }
            (
                Some(Net::new(2)?),
                Some(crate::netns::bin_dir_trusting(&dir)?),
            )
        } else {
            (None, None)
        };
        let hosts = match &net {
            Some(n) => [n.hosts[0].clone(), n.hosts[1].clone()],
            None => ["127.0.0.1".to_string(), "127.0.0.1".to_string()],
        };
        let c = Cluster {
            hosts,
            net,
            bin_dir,
            profile,
            dir,
            pg_ports: [pg, pg + 1],
            api_ports,
            etcd_port: etcd,
            agents: [None, None],
            etcd: None,
            haproxy: None,
            pgbouncer_port: None,
            pgbouncer: None,
            pgha_bin: pgha_bin.to_path_buf(),
        };
        for i in 0..2 {
            procs.own_data_dir(&c.data_dir(i));
            let text = match c.profile.kind {
                Kind::Pgha => c.pgha_config(i),
                Kind::Patroni => c.patroni_config(i),
            };
            std::fs::write(c.config(i), text).map_err(|e| e.to_string())?;
        }
        procs::chown_postgres(&c.dir)?;
        Ok(c)
    }

    /// Puts one PgBouncer (transaction pooling, port `pg + 80`) in front of a pgha cluster
    /// (`server_login_retry` = `login_retry` seconds) and gives both daemons a `[pgbouncer]` section pointing at it; call before
    /// [`Cluster::start`]. Its `[databases]` entry starts pointing nowhere (port 1): the
    /// first master repoints it.
    pub fn start_pgbouncer(&mut self, procs: &mut Procs, login_retry: &str) -> Result<u16, String> {
        if self.profile.kind != Kind::Pgha {
            return Err("PgBouncer is driven by pgha only".into());
        }
        let port = self.pg_ports[0] + 80;
        if !procs::port_free(port) {
            return Err(format!("port {port} is taken"));
        }
        let d = self.dir.display();
        std::fs::write(
            self.pgbouncer_ini(),
            format!(
                "[databases]\npostgres = host=127.0.0.1 port=1 dbname=postgres\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {d}\nauth_type = trust\n\
                 auth_file = {d}/userlist.txt\nadmin_users = postgres\npool_mode = transaction\n\
                 server_login_retry = {login_retry}\nquery_wait_timeout = 30\nignore_startup_parameters = extra_float_digits\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(self.dir.join("userlist.txt"), "\"postgres\" \"\"\n")
            .map_err(|e| e.to_string())?;
        self.pgbouncer_port = Some(port);
        for i in 0..2 {
            std::fs::write(self.config(i), self.pgha_config(i)).map_err(|e| e.to_string())?;
        }
        procs::chown_postgres(&self.dir)?;
        let mut cmd = Command::new("pgbouncer");
        cmd.arg(self.pgbouncer_ini());
        let pid = procs.spawn("pgbouncer", cmd, &self.dir.join("pgbouncer.log"), true)?;
        self.pgbouncer = Some(pid);
        let up = poll(Duration::from_secs(10), Duration::from_millis(50), || {
            procs.reap();
            (!procs::alive(pid) || !procs::port_free(port)).then_some(())
        });
        if up.is_none() || !procs::alive(pid) {
            self.pgbouncer = None;
            self.pgbouncer_port = None;
            procs.kill(pid);
            for i in 0..2 {
                let _ = std::fs::write(self.config(i), self.pgha_config(i));
            }
            return Err(format!(
                "pgbouncer did not start on port {port} (see pgbouncer.log)"
            ));
        }
        Ok(port)
    }

    fn pgbouncer_ini(&self) -> PathBuf {
        self.dir.join("pgbouncer.ini")
    }

    pub fn name(&self, i: usize) -> String {
        format!("db{i}")
    }
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(self.name(i))
    }
    pub fn config(&self, i: usize) -> PathBuf {
        let ext = match self.profile.kind {
            Kind::Pgha => "toml",
            Kind::Patroni => "yml",
        };
        self.dir.join(format!("{}.{ext}", self.name(i)))
    }
    pub fn journal(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.journal", self.name(i)))
    }
    pub fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.agent.log", self.name(i)))
    }

    fn pgha_config(&self, i: usize) -> String {
        let j = 1 - i;
        let mut repl = if self.profile.fast {
            pgha_core::settings::fast_toml()
        } else {
            String::new()
        };
        for (k, v) in self.profile.timing {
            repl.push_str(&format!("{k} = {v}\n"));
        }
        let bouncer = self
            .pgbouncer_port
            .map(|p| {
                format!(
                    "\n[pgbouncer]\nadmin = \"host=127.0.0.1 port={p} user=postgres dbname=pgbouncer\"\n\
                     ini = \"{}\"\ndatabases = [\"postgres\"]\n",
                    self.pgbouncer_ini().display()
                )
            })
            .unwrap_or_default();
        let bin = self
            .bin_dir
            .as_ref()
            .map(|b| b.display().to_string())
            .unwrap_or(PG_BIN.to_string());
        let listen = if self.net.is_some() {
            "listen_addresses = \"*\"\n"
        } else {
            ""
        };
        let (hi, hj) = (&self.hosts[i], &self.hosts[j]);
        let text = format!(
            "[node]\nname = \"{}\"\nindex = {i}\ndata_dir = \"{}\"\nbin_dir = \"{bin}\"\nhost = \"{hi}\"\nport = {}\napi = \"{hi}:{}\"\n\n\
             [[peers]]\nname = \"{}\"\nhost = \"{hj}\"\nport = {}\napi = \"{hj}:{}\"\n\n\
             [replication]\nenabled = true\n{repl}\n\
             [postgres]\nsocket_dir = \"{}\"\n{listen}\n[journal]\npath = \"{}\"\n",
            self.name(i),
            self.data_dir(i).display(),
            self.pg_ports[i],
            self.api_ports[i],
            self.name(j),
            self.pg_ports[j],
            self.api_ports[j],
            self.dir.display(),
            self.journal(i).display(),
        );
        text + &bouncer
    }

    fn patroni_config(&self, i: usize) -> String {
        let dcs: String = self
            .profile
            .timing
            .iter()
            .map(|(k, v)| format!("    {k}: {v}\n"))
            .collect();
        format!(
            "scope: bench{k}\nname: {name}\nlog:\n  level: INFO\n\
             restapi:\n  listen: 127.0.0.1:{api}\n  connect_address: 127.0.0.1:{api}\n\
             etcd3:\n  hosts: 127.0.0.1:{etcd}\n\
             bootstrap:\n  dcs:\n{dcs}    maximum_lag_on_failover: 1048576\n    postgresql:\n      use_pg_rewind: false\n\
             \x20 initdb:\n  - encoding: UTF8\n  - auth: trust\n\
             \x20 pg_hba:\n  - local all all trust\n  - host all all 127.0.0.1/32 trust\n  - host replication all 127.0.0.1/32 trust\n\
             postgresql:\n  listen: 127.0.0.1:{pg}\n  connect_address: 127.0.0.1:{pg}\n  data_dir: {data}\n  bin_dir: {PG_BIN}\n  pgpass: {dir}/pgpass{i}\n\
             \x20 authentication:\n    superuser:\n      username: postgres\n    replication:\n      username: postgres\n\
             \x20 parameters:\n    unix_socket_directories: {dir}\n\
             watchdog:\n  mode: off\n",
            k = self.etcd_port,
            name = self.name(i),
            api = self.api_ports[i],
            etcd = self.etcd_port,
            pg = self.pg_ports[i],
            data = self.data_dir(i).display(),
            dir = self.dir.display(),
        )
    }

    /// Starts etcd (Patroni only), then both agents; waits for a master and a streaming
    /// replica.
    pub fn start(&mut self, procs: &mut Procs) -> Result<(), String> {
        if self.profile.kind == Kind::Patroni {
            let mut cmd = Command::new("etcd");
            let (c, p) = (self.etcd_port, self.etcd_port + 1);
            cmd.args(["--name", "bench", "--data-dir"])
                .arg(self.dir.join("etcd"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{c}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{c}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{p}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{p}"
                ))
                .arg(format!("--initial-cluster=bench=http://127.0.0.1:{p}"));
            self.etcd = Some(procs.spawn("etcd", cmd, &self.dir.join("etcd.log"), false)?);
            poll(Duration::from_secs(30), Duration::from_millis(100), || {
                http_get(c, "/health").filter(|s| *s == 200)
            })
            .ok_or("etcd did not become healthy in 30 s")?;
        }
        self.start_agent(procs, 0)?;
        poll(Duration::from_secs(90), Duration::from_millis(100), || {
            self.is_master(0).then_some(())
        })
        .ok_or_else(|| format!("{}: db0 not master after 90 s", self.profile.label))?;
        self.start_agent(procs, 1)?;
        self.wait_replica(1, Duration::from_secs(120))
    }

    pub fn start_agent(&mut self, procs: &mut Procs, i: usize) -> Result<(), String> {
        let mut cmd;
        match self.profile.kind {
            Kind::Pgha => {
                cmd = match &self.net {
                    Some(net) => net.command_as_postgres(i, &self.pgha_bin),
                    None => Command::new(&self.pgha_bin),
                };
                cmd.arg("run").arg("--config").arg(self.config(i));
                cmd.env("RUST_LOG", "info");
                if self.net.is_some() {
                    // `ip netns exec ... setpriv ... pgha` execs all the way: the PID is
                    // pgha's own.
                    cmd.env("HOME", "/var/lib/postgresql")
                        .env("USER", "postgres");
                    self.agents[i] =
                        Some(procs.spawn(&format!("agent {i}"), cmd, &self.log(i), false)?);
                    return Ok(());
                }
            }
            Kind::Patroni => {
                cmd = Command::new("patroni");
                cmd.arg(self.config(i));
                cmd.env("TZ", "UTC");
            }
        }
        self.agents[i] = Some(procs.spawn(&format!("agent {i}"), cmd, &self.log(i), true)?);
        Ok(())
    }

    pub fn is_master(&self, i: usize) -> bool {
        http_get_at(&self.hosts[i], self.api_ports[i], "/primary") == Some(200)
    }

    pub fn is_replica(&self, i: usize) -> bool {
        http_get_at(&self.hosts[i], self.api_ports[i], "/replica") == Some(200)
    }

    pub fn wait_replica(&self, i: usize, limit: Duration) -> Result<(), String> {
        poll(limit, Duration::from_millis(100), || {
            self.is_replica(i).then_some(())
        })
        .ok_or_else(|| {
            format!(
                "{}: {} not a streaming replica after {} s",
                self.profile.label,
                self.name(i),
                limit.as_secs()
            )
        })
    }

    /// The node that is a healthy master while the other is a healthy replica.
    pub fn roles(&self) -> Option<(usize, usize)> {
        (0..2).find_map(|m| (self.is_master(m) && self.is_replica(1 - m)).then_some((m, 1 - m)))
    }

    pub fn fault(&mut self, procs: &mut Procs, i: usize, fault: Fault) -> Result<(), String> {
        let pm = procs::postmaster_pid(&self.data_dir(i))
            .ok_or_else(|| format!("{}: no postmaster", self.name(i)))?;
        match fault {
            Fault::Kill => {
                if let Some(a) = self.agents[i].take() {
                    procs::signal(a, Signal::SIGKILL);
                }
                procs::signal(pm, Signal::SIGKILL);
                procs.reap();
            }
            Fault::Hang => {
                procs::signal(pm, Signal::SIGSTOP);
            }
            Fault::Partition => {
                let _ = pm;
                self.net
                    .as_mut()
                    .ok_or("partition: the cluster is not in network namespaces")?
                    .partition(i)?;
            }
        }
        Ok(())
    }

    /// The wall time (ms) node `i` decided to take over, at or after `after_ms`: pgha's
    /// journal (`pgha explain failovers`), Patroni's log line "promoted self to leader".
    pub fn decision_ms(&self, i: usize, after_ms: f64) -> Option<f64> {
        match self.profile.kind {
            Kind::Pgha => {
                let f = pgha_journal::JournalFile::read(self.journal(i)).ok()?;
                pgha_journal::explain::failovers(&[f])
                    .iter()
                    .filter_map(|fo| procs::parse_utc_ms(&fo.decision_utc))
                    .find(|t| *t >= after_ms - 1.0)
            }
            Kind::Patroni => {
                let text = std::fs::read_to_string(self.log(i)).ok()?;
                text.lines()
                    .filter(|l| l.contains("promoted self to leader"))
                    .filter_map(|l| procs::parse_utc_ms(l.get(..23)?))
                    .find(|t| *t >= after_ms - 1.0)
            }
        }
    }

    /// Brings node `old` (the faulted master) back as a replica of the other: its agent and
    /// postmaster are killed; pgha's daemon re-clones by itself, Patroni's node gets an
    /// empty data directory and clones.
    pub fn restore(&mut self, procs: &mut Procs, old: usize) -> Result<(), String> {
        if let Some(net) = self.net.as_mut() {
            net.heal();
        }
        if let Some(a) = self.agents[old].take() {
            procs.kill(a);
        }
        procs::kill_postmaster(&self.data_dir(old));
        if self.profile.kind == Kind::Patroni {
            let _ = std::fs::remove_dir_all(self.data_dir(old));
        }
        self.start_agent(procs, old)?;
        if self.profile.kind == Kind::Pgha {
            // A hung master that saw the new master while hung stopped itself under the
            // split-brain rule and stays fenced until `pgha recover`.
            let fence = self.dir.join(format!("{}.pgha-fenced", self.name(old)));
            poll(Duration::from_secs(180), Duration::from_millis(500), || {
                if fence.exists() {
                    let mut cmd = match &self.net {
                        Some(net) => net.command_as_postgres(old, &self.pgha_bin),
                        None => Command::new(&self.pgha_bin),
                    };
                    let _ = cmd
                        .arg("recover")
                        .arg("--config")
                        .arg(self.config(old))
                        .output();
                }
                self.is_replica(old).then_some(())
            });
        }
        self.wait_replica(old, Duration::from_secs(10))
    }

    pub fn stop(&mut self, procs: &mut Procs) {
        for i in 0..2 {
            if let Some(a) = self.agents[i].take() {
                procs.kill(a);
            }
        }
        for i in 0..2 {
            procs::kill_postmaster(&self.data_dir(i));
        }
        if let Some(e) = self.etcd.take() {
            procs.kill(e);
        }
        if let Some(h) = self.haproxy.take() {
            procs.kill(h);
        }
        if let Some(b) = self.pgbouncer.take() {
            procs.kill(b);
        }
    }
}
