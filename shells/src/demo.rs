//! `pgha demo`: a two-node cluster in a temporary directory, failed over and back, in well
//! under a minute. It needs only PostgreSQL's programs. Run as root, postgres and the two
//! daemons run as the `postgres` user (PostgreSQL refuses root); else as the current user.
//! Everything it starts is stopped by PID at the end, whatever happens: an error, or SIGINT,
//! SIGTERM or SIGHUP (caught: the demo stops its daemons and postgres servers, removes its
//! directory unless `--keep`, and exits 128 + the signal's number).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use crate::error::DaemonError;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the temporary directory (journals, logs, data) and say where it is.
    #[arg(long)]
    pub keep: bool,
    /// The runtime the two daemons use.
    #[arg(long, default_value = "threads", value_parser = ["threads", "smol"])]
    pub runtime: String,
    /// PostgreSQL's bin directory (found automatically when absent).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

struct DemoNode {
    name: String,
    pg_port: u16,
    api: SocketAddr,
    data_dir: PathBuf,
    config: PathBuf,
    journal: PathBuf,
    log: PathBuf,
    daemon: Option<Child>,
}

/// Everything the demo started; dropping it stops all of it.
struct Demo {
    dir: PathBuf,
    /// The `pgha` the daemons run: this executable, or a copy in `dir` when the postgres user
    /// cannot reach it (a checkout under a private home directory).
    exe: PathBuf,
    bin_dir: PathBuf,
    as_postgres: bool,
    runtime: String,
    nodes: Vec<DemoNode>,
    keep: bool,
    start: Instant,
    /// The signal that interrupted the demo (0: none yet).
    interrupted: Arc<AtomicUsize>,
}

/// This executable if the user the daemons run as can execute it, else a copy in `dir`.
fn runnable_exe(dir: &Path, as_postgres: bool) -> Result<PathBuf, DaemonError> {
    let exe = std::env::current_exe().map_err(|e| DaemonError::io("current_exe", e))?;
    if !as_postgres {
        return Ok(exe);
    }
    let reachable = Command::new("runuser")
        .args(["-u", "postgres", "--", "test", "-x"])
        .arg(&exe)
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        return Ok(exe);
    }
    let copy = dir.join("pgha");
    std::fs::copy(&exe, &copy)
        .map_err(|e| DaemonError::io(format!("copy {} to {}", exe.display(), copy.display()), e))?;
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| DaemonError::io(format!("chmod {}", copy.display()), e))?;
    Ok(copy)
}

fn free_port() -> Result<u16, DaemonError> {
    let no_port = |e| DaemonError::io("no free port", e);
    let l = TcpListener::bind("127.0.0.1:0").map_err(no_port)?;
    l.local_addr().map(|a| a.port()).map_err(no_port)
}

fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// The signals that interrupt the demo, which then cleans up.
const INTERRUPTS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

fn signal_name(sig: usize) -> String {
    i32::try_from(sig)
        .ok()
        .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| format!("signal {sig}"))
}

impl Demo {
    /// An error once a signal interrupted the demo: every step and wait checks it.
    fn check(&self) -> Result<(), DaemonError> {
        match self.interrupted.load(Ordering::SeqCst) {
            0 => Ok(()),
            sig => Err(DaemonError::Interrupted {
                signal: signal_name(sig),
            }),
        }
    }

    fn say(&self, msg: &str) {
        println!("[{:5.1} s] {msg}", self.start.elapsed().as_secs_f64());
    }

    fn as_user(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn start_daemon(&mut self, i: usize) -> Result<(), DaemonError> {
        self.check()?;
        let exe = self.exe.clone();
        let n = &self.nodes[i];
        let log_err = |e| DaemonError::io(n.log.display().to_string(), e);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(log_err)?;
        let err = log.try_clone().map_err(log_err)?;
        let child = self
            .as_user(&exe)
            .arg("run")
            .arg("--config")
            .arg(&n.config)
            .arg("--runtime")
            .arg(&self.runtime)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| DaemonError::io("cannot start pgha", e))?;
        self.nodes[i].daemon = Some(child);
        Ok(())
    }

    /// The daemon's own PID (under runuser when running as root).
    fn daemon_pid(&self, i: usize) -> Option<i32> {
        let c = self.nodes[i].daemon.as_ref()?;
        let pid = c.id();
        if !self.as_postgres {
            return Some(pid as i32);
        }
        for _ in 0..100 {
            if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                && let Some(p) = t.split_whitespace().next().and_then(|p| p.parse().ok())
            {
                return Some(p);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn stop_daemon(&mut self, i: usize, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.daemon_pid(i) {
            kill(pid, sig);
        }
        if let Some(mut c) = self.nodes[i].daemon.take() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(15) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn postmaster(&self, i: usize) -> Option<i32> {
        crate::effectors::pg::running_postmaster(&self.nodes[i].data_dir)
    }

    fn pg_stop(&self, i: usize) {
        if self.postmaster(i).is_none() {
            return;
        }
        let _ = self
            .as_user(&self.bin_dir.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(&self.nodes[i].data_dir)
            .args(["-m", "fast", "-w", "-t", "30"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    fn status(&self, i: usize) -> Option<crate::status::StatusReply> {
        crate::client::get_status(self.nodes[i].api)
            .ok()
            .map(|a| a.status)
    }

    fn wait_state(&self, i: usize, state: &str, limit: Duration) -> Result<(), DaemonError> {
        let start = Instant::now();
        loop {
            self.check()?;
            if let Some(s) = self.status(i)
                && s.state == state
                && s.local_result() == Some(state)
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(DaemonError::Waited {
                    what: format!("{} did not become {state}", self.nodes[i].name),
                    secs: limit.as_secs(),
                    see: Some(self.nodes[i].log.clone()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn client(&self, i: usize) -> Result<postgres::Client, DaemonError> {
        self.check()?;
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.nodes[i].pg_port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(3))
            .connect(postgres::NoTls)
            .map_err(|source| DaemonError::Postgres {
                what: format!("connect to {}", self.nodes[i].name),
                source,
            })
    }

    fn rows(&self, i: usize) -> Result<Vec<String>, DaemonError> {
        let mut c = self.client(i)?;
        let rows = c
            .query("select id, note from demo order by id", &[])
            .map_err(|source| DaemonError::Postgres {
                what: format!("reading rows on {}", self.nodes[i].name),
                source,
            })?;
        Ok(rows
            .iter()
            .map(|r| format!("{}:{}", r.get::<_, i32>(0), r.get::<_, String>(1)))
            .collect())
    }

    fn wait_rows(&self, i: usize, n: usize, limit: Duration) -> Result<Vec<String>, DaemonError> {
        let start = Instant::now();
        loop {
            self.check()?;
            if let Ok(r) = self.rows(i)
                && r.len() == n
            {
                return Ok(r);
            }
            if start.elapsed() > limit {
                return Err(DaemonError::Waited {
                    what: format!("{} did not show {n} rows", self.nodes[i].name),
                    secs: limit.as_secs(),
                    see: None,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_daemon(i, nix::sys::signal::Signal::SIGTERM);
        }
        for i in 0..self.nodes.len() {
            self.pg_stop(i);
        }
        if self.keep {
            println!("kept {}:", self.dir.display());
            for n in &self.nodes {
                println!(
                    "  {}: journal {}, log {}",
                    n.name,
                    n.journal.display(),
                    n.log.display()
                );
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn config_text(d: &Demo, i: usize) -> String {
    let n = &d.nodes[i];
    let p = &d.nodes[1 - i];
    format!(
        r#"# pgha demo node {name} (fast profile)
[node]
name = "{name}"
index = {i}
data_dir = "{data}"
bin_dir = "{bin}"
host = "127.0.0.1"
port = {port}
api = "{api}"

[[peers]]
name = "{pname}"
host = "127.0.0.1"
port = {pport}
api = "{papi}"

[replication]
enabled = true
{fast}
[postgres]
socket_dir = "{dir}"

[journal]
path = "{journal}"
"#,
        name = n.name,
        data = n.data_dir.display(),
        bin = d.bin_dir.display(),
        port = n.pg_port,
        api = n.api,
        pname = p.name,
        pport = p.pg_port,
        papi = p.api,
        dir = d.dir.display(),
        journal = n.journal.display(),
        // The core's fast profile (Config::fast).
        fast = pgha_core::settings::fast_toml(),
    )
}

pub fn demo(args: DemoArgs) -> ExitCode {
    // Caught, not fatal: the demo notices at its next step or wait and cleans up.
    let interrupted = Arc::new(AtomicUsize::new(0));
    for sig in INTERRUPTS {
        if let Err(e) = signal_hook::flag::register_usize(sig, interrupted.clone(), sig as usize) {
            eprintln!("pgha demo: cannot install a signal handler: {e}");
            return ExitCode::from(1);
        }
    }
    let result = run(args, interrupted.clone());
    let sig = interrupted.load(Ordering::SeqCst);
    match result {
        Ok(()) if sig == 0 => ExitCode::SUCCESS,
        Ok(()) => {
            eprintln!("pgha demo: interrupted by {}", signal_name(sig));
            ExitCode::from((128 + sig).min(255) as u8)
        }
        Err(e) => {
            eprintln!("pgha demo: {e}");
            if sig == 0 {
                ExitCode::from(1)
            } else {
                ExitCode::from((128 + sig).min(255) as u8)
            }
        }
    }
}

fn run(args: DemoArgs, interrupted: Arc<AtomicUsize>) -> Result<(), DaemonError> {
    let missing = |what: &str| DaemonError::Missing(what.to_string());
    let bin_dir = match args.bin_dir {
        Some(b) => b,
        None => crate::config::find_bin_dir().ok_or_else(|| {
            missing(
                "PostgreSQL is not installed (no pg_ctl in /usr/lib/postgresql/*/bin or PATH): \
                 install it, e.g. `apt-get install postgresql`",
            )
        })?,
    };
    if !bin_dir.join("pg_ctl").is_file() {
        return Err(missing(&format!("no pg_ctl in {}", bin_dir.display())));
    }
    let root = nix::unistd::geteuid().is_root();
    let pg_user = if root {
        Some(
            nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or_else(|| missing("running as root needs a `postgres` user to run PostgreSQL as (apt-get install postgresql creates it)"))?,
        )
    } else {
        None
    };
    let dir = std::env::temp_dir().join(format!("pgha-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| DaemonError::io(dir.display().to_string(), e))?;
    if let Some(u) = &pg_user {
        nix::unistd::chown(&dir, Some(u.uid), Some(u.gid))
            .map_err(|e| DaemonError::sys(format!("chown {}", dir.display()), e))?;
    }
    let exe = runnable_exe(&dir, root)?;
    let mut d = Demo {
        dir: dir.clone(),
        exe,
        bin_dir,
        as_postgres: root,
        runtime: args.runtime,
        nodes: Vec::new(),
        keep: args.keep,
        start: Instant::now(),
        interrupted,
    };
    for i in 0..2 {
        let name = format!("db{i}");
        d.nodes.push(DemoNode {
            name: name.clone(),
            pg_port: free_port()?,
            api: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
            data_dir: dir.join(&name),
            config: dir.join(format!("{name}.toml")),
            journal: dir.join(format!("{name}.journal")),
            log: dir.join(format!("{name}.log")),
            daemon: None,
        });
    }
    for i in 0..2 {
        std::fs::write(&d.nodes[i].config, config_text(&d, i))
            .map_err(|e| DaemonError::io(d.nodes[i].config.display().to_string(), e))?;
    }
    if let Some(u) = &pg_user {
        for n in &d.nodes {
            let _ = nix::unistd::chown(&n.config, Some(u.uid), Some(u.gid));
        }
    }
    d.say(&format!(
        "two-node cluster in {} (postgres on ports {} and {}, pgha APIs on {} and {}){}",
        dir.display(),
        d.nodes[0].pg_port,
        d.nodes[1].pg_port,
        d.nodes[0].api,
        d.nodes[1].api,
        if root {
            ", running as user postgres"
        } else {
            ""
        }
    ));
    d.start_daemon(0)?;
    d.start_daemon(1)?;
    d.wait_state(0, "master", Duration::from_secs(60))?;
    d.say("db0 is master (initdb, started)");
    d.wait_state(1, "replica", Duration::from_secs(60))?;
    d.say("db1 is a streaming replica of db0 (pg_basebackup)");

    let mut c = d.client(0)?;
    c.batch_execute(
        "create table demo (id int primary key, note text);
         insert into demo values (1, 'written on db0'), (2, 'before the failover'), (3, 'three rows');",
    )
    .map_err(|source| DaemonError::Postgres {
        what: "writing rows on db0".into(),
        source,
    })?;
    drop(c);
    d.wait_rows(1, 3, Duration::from_secs(20))?;
    d.say("wrote 3 rows on db0; db1 has them");

    let pm = d
        .postmaster(0)
        .ok_or_else(|| missing("db0's postmaster is not running"))?;
    d.stop_daemon(0, nix::sys::signal::Signal::SIGKILL);
    kill(pm, nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    d.say(&format!(
        "SIGKILL of db0's postmaster (pid {pm}) and of its pgha"
    ));
    d.wait_state(1, "master", Duration::from_secs(30))?;
    let took = t0.elapsed();
    let reason = d
        .status(1)
        .and_then(|s| s.last_transition.map(|t| t.reason))
        .unwrap_or_default();
    d.say(&format!(
        "db1 promoted itself in {:.2} s ({reason})",
        took.as_secs_f64()
    ));
    let rows = d.rows(1)?;
    d.say(&format!("rows on db1: {}", rows.join(", ")));
    let mut c = d.client(1)?;
    c.batch_execute("insert into demo values (4, 'written on db1 after the failover')")
        .map_err(|source| DaemonError::Postgres {
            what: "writing on db1".into(),
            source,
        })?;
    drop(c);
    d.say("wrote row 4 on db1");

    d.start_daemon(0)?;
    d.say("restarted db0's pgha: it finds db1 master on a newer timeline and re-clones");
    d.wait_state(0, "replica", Duration::from_secs(60))?;
    let rows = d.wait_rows(0, 4, Duration::from_secs(20))?;
    d.say(&format!(
        "db0 is a streaming replica of db1; rows on db0: {}",
        rows.join(", ")
    ));

    for i in 0..2 {
        d.stop_daemon(i, nix::sys::signal::Signal::SIGTERM);
    }
    d.say("stopped both daemons (SIGTERM: journals closed)");
    let exe = std::env::current_exe().map_err(|e| DaemonError::io("current_exe", e))?;
    let out = Command::new(&exe)
        .arg("explain")
        .args(d.nodes.iter().map(|n| &n.journal))
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|e| DaemonError::io("pgha explain", e))?;
    if out.status.success() {
        println!("\n---- pgha explain db0.journal db1.journal ----");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        println!("----");
    } else {
        d.say(&format!(
            "pgha explain: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    for i in 0..2 {
        d.pg_stop(i);
    }
    d.say("stopped both postgres servers; done");
    if !d.keep {
        println!("(run `pgha demo --keep` to keep the journals and logs)");
    }
    Ok(())
}
