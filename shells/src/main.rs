//! `pgha`: the daemon and its command line. Policy lives in `pgha-core`; this crate only
//! carries out what the core decides and reports back what happened.
//!
//! Exit codes: 0 success; 1 the command ran and the answer is "no" (check failed, request
//! refused, daemon stopped on a runtime error); 2 bad usage or configuration, or the daemon
//! could not be reached or started.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

mod api;
mod client;
mod config;
mod daemon;
mod demo;
mod driver;
mod effectors;
mod error;
mod etcd;
mod haproxy;
mod journal_cli;
mod lock;
mod runtime;
mod status;
#[cfg(test)]
mod testutil;

/// pgha: PostgreSQL high availability, one daemon beside each node.
#[derive(Debug, Parser)]
#[command(name = "pgha", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// Blocking threads and a channel (default).
    Threads,
    /// The smol async runtime.
    Smol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CheckRole {
    /// Exit 0 only on a healthy master.
    Primary,
    /// Exit 0 only on a healthy streaming replica.
    Replica,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the daemon for the node the configuration describes (never as root).
    Run {
        /// The node's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Which runtime drives the core.
        #[arg(long, value_enum, default_value = "threads")]
        runtime: RuntimeKind,
    },
    /// Show this node and its peers: role, state, timeline, LSN, lag, last transition.
    Status {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 only when the local node is a healthy master (or streaming replica).
    ///
    /// As HAProxy's `external-check command` (through a one-line wrapper script), it takes
    /// HAProxy's arguments `<proxy_address> <proxy_port> <server_address> <server_port>` (or
    /// its HAPROXY_SERVER_ADDR / HAPROXY_SERVER_PORT environment) and checks the node whose
    /// postgres is at that server address, through that node's API.
    Check {
        #[arg(long)]
        config: PathBuf,
        #[arg(value_enum)]
        role: CheckRole,
        /// HAProxy's external-check arguments (optional).
        #[arg(num_args = 0..=4, value_name = "HAPROXY_ARGS")]
        haproxy: Vec<String>,
    },
    /// Print an HAProxy configuration for this cluster: a write port that reaches only the
    /// master, and a read-only port that reaches the replica ([haproxy] in the configuration).
    HaproxyConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Clear a split-brain fence on the running daemon: it leads, or rejoins the master.
    ///
    /// Refused while a peer's data is more advanced or the master is behind this node's data
    /// (a re-clone would discard writes this node acknowledged). With --force it leads or
    /// re-clones whatever the peers' data (the replaced data is set aside, per
    /// `[postgres] keep_discarded`).
    Recover {
        #[arg(long)]
        config: PathBuf,
        /// Lead or re-clone even when that discards more advanced data.
        #[arg(long)]
        force: bool,
    },
    /// Promote this replica on purpose (the running daemon carries it out).
    ///
    /// Refused while the master it follows is alive and healthy (two masters would race).
    /// With --force it is a switchover: the master's daemon is asked to step down first
    /// (over TCP with the token of [api] token_file), and once it has stopped, with every WAL
    /// record on this replica, this node is promoted; the old master rejoins it.
    Promote {
        #[arg(long)]
        config: PathBuf,
        /// Switch over: stop the healthy master first, then promote.
        #[arg(long)]
        force: bool,
    },
    /// Suspend automatic actions on the running daemon (probes go on).
    Pause {
        #[arg(long)]
        config: PathBuf,
    },
    /// Resume automatic actions on the running daemon.
    Resume {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a configuration without running anything: exit 0 when `pgha run` would accept
    /// it (its warnings and trade-offs printed), 2 with the error otherwise.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Start a two-node cluster in a temporary directory, fail it over and back, explain it.
    Demo(demo::DemoArgs),
    /// Read, verify and replay journals.
    #[command(subcommand)]
    Journal(journal_cli::JournalCmd),
    /// Explain what happened, from one or more nodes' journals.
    Explain(journal_cli::ExplainArgs),
}

fn load(path: &std::path::Path) -> Result<config::FileConfig, ExitCode> {
    match config::load(path) {
        Ok((c, warnings)) => {
            for w in warnings {
                log::warn!("{}: {w}", path.display());
            }
            Ok(c)
        }
        Err(e) => {
            eprintln!("pgha: {e}");
            Err(ExitCode::from(2))
        }
    }
}

/// A command line tool whose reader went away (`pgha status --json | head -1`) ends at once
/// and quietly, as Unix tools do: killed by SIGPIPE (exit status 141 in a shell), not a
/// panic with a backtrace. Rust ignores SIGPIPE, so the write fails and `println!` panics;
/// this hook turns exactly that panic into SIGPIPE's default action. Not for `pgha run`
/// (the daemon never prints to a pipe it depends on) nor `pgha demo`.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to std") && msg.contains("os error 32") {
            let _ = signal_hook::low_level::emulate_default_handler(signal_hook::consts::SIGPIPE);
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Run { .. } | Cmd::Demo(_)) {
        quiet_on_closed_pipe();
    }
    let with = |path: &PathBuf, f: &dyn Fn(&config::FileConfig) -> ExitCode| match load(path) {
        Ok(c) => f(&c),
        Err(code) => code,
    };
    match cli.command {
        Cmd::Run { config, runtime } => run(&config, runtime),
        Cmd::Status { config, json } => with(&config, &|c| client::status(c, json)),
        Cmd::Check {
            config,
            role,
            haproxy,
        } => with(&config, &|c| {
            client::check(
                c,
                match role {
                    CheckRole::Primary => "primary",
                    CheckRole::Replica => "replica",
                },
                &haproxy,
            )
        }),
        Cmd::HaproxyConfig { config } => with(&config, &|c| {
            print!("{}", haproxy::render(c));
            ExitCode::SUCCESS
        }),
        Cmd::Recover { config, force } => with(&config, &|c| {
            client::operator(c, recover_endpoint(force), false)
        }),
        Cmd::Promote { config, force } => with(&config, &|c| client::operator(c, "promote", force)),
        Cmd::Pause { config } => with(&config, &|c| client::operator(c, "pause", false)),
        Cmd::Resume { config } => with(&config, &|c| client::operator(c, "resume", false)),
        Cmd::CheckConfig { config } => check_config(&config),
        Cmd::Demo(args) => demo::demo(args),
        Cmd::Journal(cmd) => journal_cli::journal(cmd),
        Cmd::Explain(args) => journal_cli::explain(args),
    }
}

/// `pgha check-config`: the configuration as `pgha run` loads it, with its warnings and
/// trade-offs, on stdout.
fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok((c, warnings)) => {
            match &c.etcd {
                None => println!(
                    "{}: valid (node {}, index {}, {} peer(s))",
                    path.display(),
                    c.node.name,
                    c.index,
                    c.peers.len()
                ),
                Some(e) => print_etcd(path, &c, e),
            }
            for w in warnings {
                println!("warning: {w}");
            }
            for t in config::tradeoffs(&c) {
                println!("note: {t}");
            }
            if c.etcd.is_some() {
                println!("note: {ETCD_NOT_BUILT}: `pgha run` refuses this file (exit 2)");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgha: {e}");
            ExitCode::from(2)
        }
    }
}

/// Why `pgha run` refuses a file with `[etcd]`: a cluster must not look lease-protected
/// while the mode is not there.
const ETCD_NOT_BUILT: &str = "etcd mode is not built yet (issue 13)";

/// `pgha check-config`'s account of an etcd-mode file: what the mode will run with.
fn print_etcd(path: &std::path::Path, c: &config::FileConfig, e: &config::EtcdSettings) {
    use pgha_core::reason::secs;
    let endpoints: Vec<String> = e.endpoints.iter().map(|a| a.to_string()).collect();
    println!(
        "{}: valid (node {}, etcd mode, {} peer(s) listed)",
        path.display(),
        c.node.name,
        c.peers.len()
    );
    println!(
        "etcd: cluster {:?} (keys under {}), endpoints {}; ttl {}, loop_wait {}, \
         retry_timeout {}; primary_dc {:?} (written to etcd at bootstrap only)",
        e.cluster,
        e.prefix(),
        endpoints.join(", "),
        secs(e.timings.ttl_ms),
        secs(e.timings.loop_wait_ms),
        secs(e.timings.retry_timeout_ms),
        e.primary_dc
    );
    println!(
        "member: dc {:?}, priority {}, nofailover {}",
        c.member.dc, c.member.priority, c.member.nofailover
    );
}

/// The API endpoint of `pgha recover [--force]`.
fn recover_endpoint(force: bool) -> &'static str {
    if force { "force-recover" } else { "recover" }
}

/// The signals the daemon handles: these stop it (journaled as the cause)...
const STOP_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGQUIT,
];
/// ... and these are logged and ignored (their default action would end it silently).
const IGNORED_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGUSR1,
    signal_hook::consts::SIGUSR2,
];

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// `pgha run`: checks everything and takes the locks before starting anything, then drives
/// the core until a stop signal; every exit says why in the log and, once the journal is
/// open, in the journal (the run's `stop` row).
fn run(path: &std::path::Path, kind: RuntimeKind) -> ExitCode {
    if nix::unistd::geteuid().is_root() {
        eprintln!(
            "pgha: refusing to run as root: PostgreSQL refuses root too. Run the daemon as the \
             user that owns the data directory, e.g. `runuser -u postgres -- pgha run --config {}`",
            path.display()
        );
        return ExitCode::from(2);
    }
    // The handlers first, so no signal's default action ends the daemon silently from here
    // on; signal-hook runs no code in the handler, and queues what arrives before the
    // thread below reads it.
    let mut signals = match signal_hook::iterator::Signals::new(
        STOP_SIGNALS.iter().chain(IGNORED_SIGNALS.iter()),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgha: cannot install signal handlers: {e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match load(path) {
        Ok(c) => Arc::new(c),
        Err(code) => return code,
    };
    if cfg.etcd.is_some() {
        eprintln!(
            "pgha: {}: {ETCD_NOT_BUILT}: the [etcd] section is parsed and checked (`pgha \
             check-config`), but pgha does not run with it, so that no cluster is believed \
             lease-protected; remove [etcd] to run in the two-node or star mode",
            path.display()
        );
        return ExitCode::from(2);
    }
    // The data dir must be usable (empty or a cluster, writable): checked before anything
    // starts, rather than failing (or destroying foreign files) later.
    if let Err(e) = effectors::pg::preflight(&cfg) {
        eprintln!("pgha: {}: {e}", path.display());
        return ExitCode::from(2);
    }
    // One daemon per data dir and per journal: locked before anything is opened or bound.
    let _locks = match lock::take(&cfg, path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pgha: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    // Operator requests: the token for TCP, and the local socket (docs/security.md).
    let token = match cfg.api.token_file.as_deref().map(config::read_token) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            eprintln!("pgha: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let local = match api::bind_local(&cfg.api.socket) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pgha: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    // The journal keeps the configuration without its secrets.
    let text = cfg.journal_text.clone();
    let runtime_name = match kind {
        RuntimeKind::Threads => "threads",
        RuntimeKind::Smol => "smol",
    };
    // The journal next, with the run's header written: a read-only or full journal refuses
    // the start before the API is bound or anything else starts.
    let d = match daemon::Daemon::open(cfg.clone(), text, runtime_name) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pgha: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    // From here on a refusal ends the run with a `stop` row saying why.
    let refuse = |d: daemon::Daemon, e: error::DaemonError| {
        eprintln!("pgha: {}: {e}", path.display());
        d.close(&daemon::Stop::Refused(e.to_string()));
        ExitCode::from(2)
    };
    let server = match api::bind(cfg.node.api) {
        Ok(s) => s,
        Err(e) => return refuse(d, e),
    };
    // A panic is logged, and journaled by the daemon's drop.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::error!("panic: {info}");
        daemon::note_panic(info.to_string());
        default_hook(info);
    }));
    let status = d.status_handle();
    let eff = effectors::Effectors::new(cfg.clone()).with_run(d.run_number());
    // One channel type per runtime; the API and the signal handler only need "send".
    type Start = Box<dyn FnOnce(daemon::Daemon) -> daemon::Stop>;
    let (submit, start): (api::Submit, Start) = match kind {
        RuntimeKind::Threads => {
            let (tx, rx) = std::sync::mpsc::channel();
            let t2 = tx.clone();
            let submit: api::Submit = Arc::new(move |m| t2.send(m).is_ok());
            (
                submit,
                Box::new(move |d| runtime::threads::run(d, eff, tx, rx)),
            )
        }
        RuntimeKind::Smol => {
            let (tx, rx) = smol::channel::unbounded();
            let t2 = tx.clone();
            let submit: api::Submit = Arc::new(move |m| t2.try_send(m).is_ok());
            (
                submit,
                Box::new(move |d| runtime::smol_rt::run(d, eff, tx, rx)),
            )
        }
    };
    let auth = api::Auth {
        token,
        socket: Some(cfg.api.socket.clone()),
    };
    let tcp_operators = if auth.token.is_some() {
        "with the token of api.token_file"
    } else {
        "refused (no api.token_file)"
    };
    log::info!(
        "operator requests: on {} (this user and root), over TCP {tcp_operators}",
        cfg.api.socket.display()
    );
    let local = Some((local, cfg.api.socket.clone()));
    let api = match api::serve(server, local, status.clone(), submit.clone(), auth) {
        Ok(a) => a,
        Err(e) => return refuse(d, e),
    };
    // A stop signal ends the main loop through its own channel, so the loop itself writes
    // the journal's last row; SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored.
    let stopper = submit.clone();
    let sig_handle = signals.handle();
    std::thread::spawn(move || {
        let mut stopping = false;
        for sig in signals.forever() {
            let name = signal_name(sig);
            if IGNORED_SIGNALS.contains(&sig) {
                log::warn!(
                    "{name} received: ignored (pgha does not reload its configuration; \
                     restart the daemon to apply a change)"
                );
            } else if stopping {
                log::warn!("{name} received: already stopping");
            } else {
                stopping = true;
                log::info!("{name} received: stopping the daemon (postgres keeps running)");
                stopper(runtime::Msg::Stop(daemon::Stop::Signal(name)));
            }
        }
    });
    log::info!(
        "pgha {} starting: node {} (index {}), runtime {runtime_name}, API on {}, journal {}",
        env!("CARGO_PKG_VERSION"),
        cfg.node.name,
        cfg.index,
        cfg.node.api,
        cfg.journal.display()
    );
    for t in config::tradeoffs(&cfg) {
        log::warn!("{}: {t}", path.display());
    }
    let stop = start(d);
    sig_handle.close();
    api.stop();
    effectors::process::terminate_running();
    match stop {
        daemon::Stop::Signal(_) => ExitCode::SUCCESS,
        daemon::Stop::Error(_) => ExitCode::from(1),
        daemon::Stop::Refused(_) => ExitCode::from(2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recover_force_asks_for_a_forced_recover_and_plain_recover_does_not() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Cmd::Recover { force, .. } => recover_endpoint(force),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            parse(&["pgha", "recover", "--force", "--config", "x.toml"]),
            "force-recover"
        );
        assert_eq!(parse(&["pgha", "recover", "--config", "x.toml"]), "recover");
    }
}
