//! Idle footprint: RSS and CPU of each agent (and etcd) from /proc, the binary's size, and
//! the time from `pgha run` to its first probe (from the journal).

use std::path::Path;
use std::time::Duration;

use crate::procs::{Procs, wall_ms};
use crate::systems::{Cluster, Kind, Profile};

#[derive(Debug, Clone)]
pub struct Usage {
    pub what: String,
    pub rss_kb: u64,
    pub hwm_kb: u64,
    /// Percent of one core over the window.
    pub cpu_pct: f64,
}

fn ticks(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based) -> 11, 12 here.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn status_kb(pid: i32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn clk_tck() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Samples every (name, pid) for `secs` seconds.
pub fn measure(pids: &[(String, i32)], secs: u64) -> Vec<Usage> {
    let hz = clk_tck();
    let start: Vec<Option<u64>> = pids.iter().map(|(_, p)| ticks(*p)).collect();
    let t0 = std::time::Instant::now();
    let mut rss_max = vec![0u64; pids.len()];
    while t0.elapsed() < Duration::from_secs(secs) {
        for (i, (_, p)) in pids.iter().enumerate() {
            rss_max[i] = rss_max[i].max(status_kb(*p, "VmRSS:").unwrap_or(0));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let el = t0.elapsed().as_secs_f64();
    pids.iter()
        .enumerate()
        .map(|(i, (name, p))| {
            let cpu = match (start[i], ticks(*p)) {
                (Some(a), Some(b)) => (b - a) as f64 / hz / el * 100.0,
                _ => f64::NAN,
            };
            Usage {
                what: name.clone(),
                rss_kb: status_kb(*p, "VmRSS:").unwrap_or(0).max(rss_max[i]),
                hwm_kb: status_kb(*p, "VmHWM:").unwrap_or(0),
                cpu_pct: cpu,
            }
        })
        .collect()
}

/// Time from spawning node `i`'s `pgha run` (at `spawned_ms`) to the first probe it issued,
/// from its journal's last run.
pub fn first_probe_ms(c: &Cluster, i: usize, spawned_ms: f64) -> Option<f64> {
    let f = pgha_journal::JournalFile::read(c.journal(i)).ok()?;
    let run = f.runs.last()?;
    let step = run
        .steps
        .iter()
        .find(|s| s.commands.iter().any(|c| c.value.kind.is_probe()))?;
    Some(step.wall_ms as f64 - spawned_ms)
}

#[derive(Debug, Default)]
pub struct Footprint {
    pub usage: Vec<Usage>,
    pub binary_bytes: Option<u64>,
    pub first_probe_ms: Vec<f64>,
    pub notes: Vec<String>,
}

pub fn run(
    procs: &mut Procs,
    root: &Path,
    pgha_bin: &Path,
    profiles: &[Profile],
    with_patroni: bool,
    secs: u64,
) -> Footprint {
    let mut fp = Footprint {
        binary_bytes: std::fs::metadata(pgha_bin).ok().map(|m| m.len()),
        ..Footprint::default()
    };
    let mut clusters = Vec::new();
    for (k, p) in profiles.iter().enumerate() {
        if p.kind == Kind::Patroni && !with_patroni {
            continue;
        }
        let k = 8 + k as u16;
        let started = Cluster::new(procs, root, k, p.clone(), pgha_bin).and_then(|mut c| {
            c.start(procs)?;
            Ok(c)
        });
        match started {
            Ok(c) => clusters.push(c),
            Err(e) => fp.notes.push(format!("{}: {e}", p.label)),
        }
    }
    // Time to the first probe: restart the replica's daemon a few times.
    for c in &mut clusters {
        if c.profile.kind != Kind::Pgha {
            continue;
        }
        for _ in 0..5 {
            if let Some(a) = c.agents[1].take() {
                procs.kill(a);
            }
            let t = wall_ms();
            if c.start_agent(procs, 1).is_err() {
                break;
            }
            if c.wait_replica(1, Duration::from_secs(60)).is_err() {
                break;
            }
            if let Some(ms) = first_probe_ms(c, 1, t) {
                fp.first_probe_ms.push(ms);
            }
        }
    }
    eprintln!("== footprint: idle for {secs} s");
    std::thread::sleep(Duration::from_secs(5));
    let mut pids = Vec::new();
    for c in &clusters {
        let tool = match c.profile.kind {
            Kind::Pgha => "pgha daemon",
            Kind::Patroni => "Patroni agent",
        };
        for i in 0..2 {
            let role = if c.is_master(i) { "master" } else { "replica" };
            if let Some(p) = c.agents[i] {
                pids.push((format!("{tool} ({role})"), p));
            }
        }
        if let Some(e) = c.etcd {
            pids.push(("etcd".to_string(), e));
        }
    }
    fp.usage = measure(&pids, secs);
    for c in &mut clusters {
        c.stop(procs);
    }
    fp
}
