//! `cargo run --release -p pgha-tests --bin bench -- [failover|footprint|throughput|all]`
//!
//! pgha's benchmarks beside Patroni's, on real PostgreSQL 15 on loopback (see
//! docs/benchmarks.md). A benchmark, not a test: it reports figures and never fails on noise.
//! It installs nothing unless asked (`--install`); a part whose programs are missing is
//! skipped with the `apt-get install` command that would enable it. Every process it starts
//! is killed by PID at the end, also on error; its directory is removed (`--keep` keeps it).
//! Ports: 58000-58999 (postgres, pgha APIs, HAProxy), 59000-59999 (etcd, Patroni REST).

#[path = "../bench/client.rs"]
mod client;
#[path = "../bench/failover.rs"]
mod failover;
#[path = "../bench/footprint.rs"]
mod footprint;
#[path = "../bench/netns.rs"]
mod netns;
#[path = "../bench/procs.rs"]
mod procs;
#[path = "../bench/report.rs"]
mod report;
#[path = "../bench/systems.rs"]
mod systems;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use procs::Procs;
use systems::{Fault, Kind};

const USAGE: &str = "usage: bench [failover|footprint|throughput|all] [--runs N] [--faults kill,hang,partition] \
[--only pgha|patroni] [--no-haproxy] [--no-pgbouncer] [--login-retry SECS] [--limit SECS] [--secs SECS] [--no-docs] [--install] [--keep]";

#[derive(Debug)]
struct Args {
    what: String,
    runs: usize,
    faults: Vec<Fault>,
    kinds: Vec<Kind>,
    haproxy: bool,
    pgbouncer: bool,
    login_retry: String,
    limit: u64,
    secs: u64,
    docs: bool,
    install: bool,
    keep: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        what: "failover".into(),
        runs: 10,
        faults: vec![Fault::Kill, Fault::Hang],
        kinds: vec![Kind::Pgha, Kind::Patroni],
        haproxy: true,
        pgbouncer: true,
        login_retry: "1".into(),
        limit: 90,
        secs: 60,
        docs: true,
        install: false,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "failover" | "footprint" | "throughput" | "all" => a.what = arg,
            "--runs" => a.runs = val("--runs")?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--limit" => {
                a.limit = val("--limit")?
                    .parse()
                    .map_err(|e| format!("--limit: {e}"))?
            }
            "--secs" => a.secs = val("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--faults" => {
                a.faults = val("--faults")?
                    .split(',')
                    .map(|f| match f {
                        "kill" => Ok(Fault::Kill),
                        "hang" => Ok(Fault::Hang),
                        "partition" => Ok(Fault::Partition),
                        _ => Err(format!("unknown fault {f} (kill, hang, partition)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--only" => {
                a.kinds = match val("--only")?.as_str() {
                    "pgha" => vec![Kind::Pgha],
                    "patroni" => vec![Kind::Patroni],
                    o => return Err(format!("--only {o}: pgha or patroni")),
                }
            }
            "--no-haproxy" => a.haproxy = false,
            "--no-pgbouncer" => a.pgbouncer = false,
            "--login-retry" => {
                let v = val("--login-retry")?;
                match v.parse::<f64>() {
                    Ok(x) if x > 0.0 => a.login_retry = v,
                    _ => return Err(format!("--login-retry {v}: seconds, above 0")),
                }
            }
            "--no-docs" => a.docs = false,
            "--install" => a.install = true,
            "--keep" => a.keep = true,
            "-h" | "--help" => return Err(USAGE.into()),
            o => return Err(format!("unknown argument {o}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// target/release/pgha (next to this binary), built first so it is never stale.
fn pgha_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no target dir")?;
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("release");
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--quiet", "-p", "pgha"])
        .current_dir(workspace());
    if profile == "release" {
        cmd.arg("--release");
    }
    let st = cmd
        .status()
        .map_err(|e| format!("cargo build -p pgha: {e}"))?;
    let bin = dir.join("pgha");
    if !st.success() {
        if !bin.is_file() {
            return Err("cargo build -p pgha failed".into());
        }
        eprintln!(
            "cargo build -p pgha failed: using the existing {} (it may be stale)",
            bin.display()
        );
    }
    bin.is_file()
        .then_some(bin.clone())
        .ok_or_else(|| format!("{} not found", bin.display()))
}

/// Checks (or, with --install, installs) the programs a part needs; false: skip it.
fn need(part: &str, needs: &[(&str, &str)], install: bool) -> bool {
    let missing = procs::missing(needs);
    if missing.is_empty() {
        return true;
    }
    let cmd = format!("apt-get install -y {}", missing.join(" "));
    if install && nix::unistd::geteuid().is_root() {
        eprintln!("{part}: running `apt-get update && {cmd}`");
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("apt-get update -q && {cmd}"))
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        return ok && procs::missing(needs).is_empty();
    }
    eprintln!(
        "{part}: skipped, it needs {} (run `{cmd}` as root, or pass --install)",
        missing.join(", ")
    );
    false
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Date, machine and versions, for the report.
fn machine() -> String {
    let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
    let mem = sh("awk '/MemTotal/ {printf \"%.0f GiB\", $2/1048576}' /proc/meminfo");
    format!(
        "{}; {} cores ({}), {mem}, Debian {}, PostgreSQL {}, {}; load average at the start: {}",
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        sh("nproc"),
        cpu.trim(),
        sh("cat /etc/debian_version"),
        sh("/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}'"),
        sh("rustc --version | cut -d' ' -f1-2"),
        sh("cut -d' ' -f1-3 /proc/loadavg"),
    )
}

fn versions() -> String {
    let mut v = Vec::new();
    for (name, cmd) in [
        (
            "Patroni",
            "patroni --version 2>/dev/null | awk '{print $2}'",
        ),
        (
            "etcd",
            "etcd --version 2>/dev/null | head -1 | awk '{print $3}'",
        ),
        (
            "HAProxy",
            "haproxy -v 2>/dev/null | head -1 | awk '{print $3}'",
        ),
        (
            "PgBouncer",
            "pgbouncer --version 2>/dev/null | head -1 | awk '{print $2}'",
        ),
    ] {
        let out = sh(cmd);
        if !out.is_empty() {
            v.push(format!("{name} {out}"));
        }
    }
    v.join(", ")
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run --release -p pgha-tests --bin bench -- {}",
        args.join(" ")
    )
}

fn update_docs(section: &str, content: &str) {
    let path = workspace().join("docs/benchmarks.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    match std::fs::write(&path, report::splice(&doc, section, content)) {
        Ok(()) => eprintln!("wrote the {section} section of {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

fn run_failover(args: &Args, procs: &mut Procs, root: &Path, pgha: &Path) {
    let mut kinds = Vec::new();
    if args.kinds.contains(&Kind::Pgha) {
        kinds.push(Kind::Pgha);
    }
    let haproxy = args.haproxy && need("HAProxy routing", &[("haproxy", "haproxy")], args.install);
    let pgbouncer = args.pgbouncer
        && args.kinds.contains(&Kind::Pgha)
        && need(
            "PgBouncer routing",
            &[("pgbouncer", "pgbouncer")],
            args.install,
        );
    if args.kinds.contains(&Kind::Patroni)
        && need(
            "the Patroni comparison",
            &[("patroni", "patroni"), ("etcd", "etcd-server")],
            args.install,
        )
    {
        kinds.push(Kind::Patroni);
    }
    let opts = failover::Options {
        runs: args.runs,
        faults: args.faults.clone(),
        kinds: kinds.clone(),
        haproxy,
        pgbouncer,
        pgbouncer_login_retry: args.login_retry.clone(),
        limit: Duration::from_secs(args.limit),
    };
    let when = machine();
    let mut series = Vec::new();
    // The partition fault: a cluster of its own in network namespaces, pgha only.
    let partition = opts.faults.contains(&Fault::Partition);
    let no_ns = if partition {
        netns::unavailable()
    } else {
        None
    };
    if let Some(why) = &no_ns {
        eprintln!("partition: skipped, it needs network namespaces (`ip netns`) and root: {why}");
    }
    let plain = failover::Options {
        faults: opts
            .faults
            .iter()
            .copied()
            .filter(|f| *f != Fault::Partition)
            .collect(),
        ..opts.clone()
    };
    let split = failover::Options {
        faults: vec![Fault::Partition],
        haproxy: false,
        pgbouncer: false,
        ..opts.clone()
    };
    for (k, p) in systems::profiles().into_iter().enumerate() {
        if !opts.kinds.contains(&p.kind) {
            continue;
        }
        if !plain.faults.is_empty() {
            series.extend(failover::run_profile(
                procs,
                root,
                k as u16,
                p.clone(),
                pgha,
                &plain,
            ));
        }
        if partition {
            let skip = match (&no_ns, p.kind) {
                (Some(why), _) => Some(format!("skipped: no network namespaces ({why})")),
                (None, Kind::Patroni) => Some(
                    "skipped: Patroni's etcd would have to be reachable from both namespaces"
                        .to_string(),
                ),
                (None, Kind::Pgha) => None,
            };
            match skip {
                Some(note) => series.push(failover::Series {
                    profile: p,
                    fault: Fault::Partition,
                    samples: Vec::new(),
                    notes: vec![note],
                }),
                None => series.extend(failover::run_profile(
                    procs, root, k as u16, p, pgha, &split,
                )),
            }
        }
    }
    let table = report::failover_table(&series);
    let ratios = report::ratio_table(&series);
    println!("\nFailover, two nodes on loopback, medians (min–max), seconds from the fault:\n");
    println!("{table}");
    if !ratios.is_empty() {
        println!("{ratios}");
    }
    let mut notes = String::new();
    for s in &series {
        for n in &s.notes {
            let _ = writeln!(notes, "- {} / {}: {n}", s.profile.label, s.fault.name());
        }
    }
    if !notes.is_empty() {
        println!("Notes:\n{notes}");
    }
    if !args.docs {
        return;
    }
    if args.kinds.len() < 2 {
        // The section holds every configuration: a partial run would drop the others' rows.
        eprintln!(
            "--only: docs/benchmarks.md and failover.svg left as they are (they hold every \
             configuration); copy the rows above by hand"
        );
        return;
    }
    let settings: String = systems::profiles()
        .iter()
        .map(|p| format!("- {}: {}\n", p.label, p.settings))
        .collect();
    let mut md = format!(
        "Generated by `{}` on {}.{}\n\nSettings:\n{settings}\n{table}\n",
        command_line(),
        when,
        if versions().is_empty() {
            String::new()
        } else {
            format!(" {}.", versions())
        },
    );
    if !ratios.is_empty() {
        let _ = write!(
            md,
            "Pair by pair (run i of one against run i of the other, same run of the benchmark):\n\n{ratios}\n"
        );
    }
    if !haproxy {
        md.push_str("HAProxy was not available: the through-HAProxy column is empty.\n\n");
    }
    if !pgbouncer {
        md.push_str("PgBouncer was not used: the through-PgBouncer column is empty.\n\n");
    }
    if !notes.is_empty() {
        let _ = write!(md, "Notes:\n{notes}\n");
    }
    md.push_str("![failover time per phase](failover.svg)\n");
    update_docs("failover", &md);
    let svg = report::svg(&series, "Failover time per phase, two nodes on loopback");
    let path = workspace().join("docs/failover.svg");
    match std::fs::write(&path, svg) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

fn run_footprint(args: &Args, procs: &mut Procs, root: &Path, pgha: &Path) {
    let patroni = args.kinds.contains(&Kind::Patroni)
        && need(
            "the Patroni footprint",
            &[("patroni", "patroni"), ("etcd", "etcd-server")],
            args.install,
        );
    let profiles: Vec<_> = systems::profiles()
        .into_iter()
        .filter(|p| p.label == "pgha defaults" || p.label == "Patroni defaults")
        .collect();
    let when = machine();
    let fp = footprint::run(procs, root, pgha, &profiles, patroni, args.secs);
    let mut t = format!(
        "| process (idle, default settings) | RSS | peak RSS | CPU, % of one core over {} s |\n|---|---|---|---|\n",
        args.secs
    );
    for u in &fp.usage {
        let _ = writeln!(
            t,
            "| {} | {:.1} MB | {:.1} MB | {:.2} % |",
            u.what,
            u.rss_kb as f64 / 1024.0,
            u.hwm_kb as f64 / 1024.0,
            u.cpu_pct
        );
    }
    let mut other = String::from("| figure | value |\n|---|---|\n");
    if let Some(b) = fp.binary_bytes {
        let _ = writeln!(
            other,
            "| size of {} | {:.1} MB ({b} bytes; release profile with `debug = 1`) |",
            pgha.file_name().and_then(|n| n.to_str()).unwrap_or("pgha"),
            b as f64 / 1_048_576.0
        );
    }
    if let Some(s) = report::stat(fp.first_probe_ms.iter().copied()) {
        let _ = writeln!(
            other,
            "| `pgha run` to its first probe (restart of a replica's daemon, {} restarts) | {:.0} ms median ({:.0}–{:.0}) |",
            s.n, s.median, s.min, s.max
        );
    }
    println!("\nFootprint:\n\n{t}\n{other}");
    for n in &fp.notes {
        println!("note: {n}");
    }
    if args.docs {
        let notes: String = fp.notes.iter().map(|n| format!("- {n}\n")).collect();
        update_docs(
            "footprint",
            &format!(
                "Generated by `{}` on {when}.\n\n{t}\n{other}\n{notes}",
                command_line()
            ),
        );
    }
}

fn run_throughput() {
    for (pkg, bench) in [
        ("pgha-core", "events"),
        ("pgha-journal", "journal"),
        ("pgha-sim", "seeds"),
    ] {
        println!("\n== cargo bench -p {pkg} --bench {bench}");
        let st = Command::new(cargo())
            .args(["bench", "-p", pkg, "--bench", bench])
            .current_dir(workspace())
            .status();
        if !matches!(st, Ok(s) if s.success()) {
            println!("(cargo bench -p {pkg} --bench {bench} did not succeed: {st:?})");
        }
    }
    println!(
        "\n== cargo test --release -p pgha-core --test alloc (zero allocations per steady-state input)"
    );
    let _ = Command::new(cargo())
        .args(["test", "--release", "-p", "pgha-core", "--test", "alloc"])
        .current_dir(workspace())
        .status();
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let pg = args.what != "throughput";
    if pg {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "bench {}: run as root (postgres and the agents run as the postgres user)",
                args.what
            );
            return ExitCode::from(2);
        }
        if !need(
            "PostgreSQL",
            &[("/usr/lib/postgresql/15/bin/pg_ctl", "postgresql-15")],
            args.install,
        ) {
            return ExitCode::from(2);
        }
    }
    let mut procs = Procs::default();
    procs.keep = args.keep;
    let root = std::env::temp_dir().join(format!("pgha-bench-{}", std::process::id()));
    if pg {
        let pgha = match pgha_bin() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::create_dir_all(&root) {
            eprintln!("{}: {e}", root.display());
            return ExitCode::from(2);
        }
        procs.own_temp_dir(&root);
        if matches!(args.what.as_str(), "failover" | "all") {
            run_failover(&args, &mut procs, &root, &pgha);
            procs.kill_all();
            procs.own_temp_dir(&root);
            let _ = std::fs::create_dir_all(&root);
        }
        if matches!(args.what.as_str(), "footprint" | "all") {
            run_footprint(&args, &mut procs, &root, &pgha);
        }
        procs.kill_all();
    }
    if matches!(args.what.as_str(), "throughput" | "all") {
        run_throughput();
    }
    ExitCode::SUCCESS
}
