//! The failover benchmark: for each profile and fault, `runs` failovers of a two-node
//! cluster with a client writing numbered rows through HAProxy, a client retrying a write on
//! the replica every 50 ms, and a poller of `pg_is_in_recovery()` on the replica.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::client::{Db, FirstSuccess, Writer};
use crate::procs::{self, Procs, poll, wall_ms};
use crate::systems::{Cluster, Fault, Kind, Profile};

/// The figures of one failover, in seconds from the fault (None: not observed in time).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub detection: Option<f64>,
    pub promotion: Option<f64>,
    pub first_write: Option<f64>,
    pub haproxy: Option<f64>,
    pub lost: Option<usize>,
    pub acked: usize,
    /// Through PgBouncer (pgha only): fault → first ack from the new master.
    pub pgbouncer: Option<f64>,
    /// Calls of the PgBouncer writer that failed after the fault.
    pub pgbouncer_errors: Option<usize>,
    /// Rows the PgBouncer writer saw acknowledged and the new master lacks.
    pub pgbouncer_lost: Option<usize>,
    pub pgbouncer_acked: usize,
}

/// Everything measured for one profile and fault.
#[derive(Debug, Clone)]
pub struct Series {
    pub profile: Profile,
    pub fault: Fault,
    pub samples: Vec<Sample>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub runs: usize,
    pub faults: Vec<Fault>,
    pub kinds: Vec<Kind>,
    pub haproxy: bool,
    /// A PgBouncer repointed by pgha in front of pgha clusters.
    pub pgbouncer: bool,
    /// PgBouncer's `server_login_retry`, in seconds (default 1, as in the routing e2e test).
    pub pgbouncer_login_retry: String,
    /// How long to wait for a failover before calling it "none".
    pub limit: Duration,
}

fn haproxy_config(c: &Cluster, port: u16) -> String {
    let servers: String = (0..2)
        .map(|i| {
            format!(
                "  server db{i} 127.0.0.1:{} check port {}\n",
                c.pg_ports[i], c.api_ports[i]
            )
        })
        .collect();
    format!(
        "global\n  maxconn 200\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30m\n  timeout server 30m\n  timeout check 1s\n\
         listen write\n  bind 127.0.0.1:{port}\n  option httpchk GET /primary\n  http-check expect status 200\n\
         \x20 default-server inter 200ms fall 2 rise 1 on-marked-down shutdown-sessions\n{servers}"
    )
}

/// Starts HAProxy for the cluster on a free port of its block; the write port.
fn start_haproxy(procs: &mut Procs, c: &mut Cluster) -> Result<u16, String> {
    let mut last = String::from("no free port");
    for port in (c.pg_ports[0] + 90)..(c.pg_ports[0] + 100) {
        if !procs::port_free(port) {
            continue;
        }
        let cfg = c.dir.join("haproxy.cfg");
        std::fs::write(&cfg, haproxy_config(c, port)).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&cfg);
        let pid = procs.spawn("haproxy", cmd, &c.dir.join("haproxy.log"), false)?;
        std::thread::sleep(Duration::from_millis(500));
        procs.reap();
        if procs::alive(pid) && !procs::port_free(port) {
            c.haproxy = Some(pid);
            return Ok(port);
        }
        procs.kill(pid);
        last = format!("haproxy did not start on port {port} (see haproxy.log)");
    }
    Err(last)
}

pub fn run_profile(
    procs: &mut Procs,
    root: &Path,
    k: u16,
    profile: Profile,
    pgha_bin: &Path,
    opts: &Options,
) -> Vec<Series> {
    let mut out: Vec<Series> = opts
        .faults
        .iter()
        .map(|f| Series {
            profile: profile.clone(),
            fault: *f,
            samples: Vec::new(),
            notes: Vec::new(),
        })
        .collect();
    // The partition fault needs the nodes in network namespaces: run_failover gives it a
    // run of its own (without HAProxy and PgBouncer, which listen on 127.0.0.1).
    let namespaces = opts.faults.contains(&Fault::Partition);
    let mut c = match Cluster::new_in(procs, root, k, profile.clone(), pgha_bin, namespaces) {
        Ok(c) => c,
        Err(e) => {
            out.iter_mut().for_each(|s| s.notes.push(e.clone()));
            return out;
        }
    };
    eprintln!(
        "== {}: starting the cluster in {}",
        profile.label,
        c.dir.display()
    );
    // PgBouncer before the daemons: the first master points it at itself.
    let bouncer_port = if opts.pgbouncer && profile.kind == Kind::Pgha {
        match c.start_pgbouncer(procs, &opts.pgbouncer_login_retry) {
            Ok(port) => Some(port),
            Err(e) => {
                eprintln!("   pgbouncer: {e}");
                out.iter_mut()
                    .for_each(|s| s.notes.push(format!("pgbouncer: {e}")));
                None
            }
        }
    } else {
        None
    };
    if let Err(e) = c.start(procs) {
        eprintln!("   {e}");
        out.iter_mut().for_each(|s| s.notes.push(e.clone()));
        c.stop(procs);
        return out;
    }
    let write_port = if opts.haproxy {
        match start_haproxy(procs, &mut c) {
            Ok(port) => Some(port),
            Err(e) => {
                eprintln!("   haproxy: {e}");
                None
            }
        }
    } else {
        None
    };
    // The table the writers use, created on the master and replicated.
    let setup = c.roles().and_then(|(m, _)| {
        Db::at(&c.hosts[m], c.pg_ports[m], Duration::from_secs(5))
            .execute(
                "create table if not exists bench_rows(run int, n bigint, primary key (run, n));\
                 create table if not exists bench_first(run int)",
            )
            .ok()
    });
    if setup.is_none() {
        out.iter_mut()
            .for_each(|s| s.notes.push("could not create the tables".into()));
        c.stop(procs);
        return out;
    }
    let mut run_no: u32 = 1000 * k as u32;
    for series in &mut out {
        let mut misses = 0;
        for r in 0..opts.runs {
            run_no += 1;
            let roles = poll(Duration::from_secs(60), Duration::from_millis(200), || {
                c.roles()
            });
            let Some((m, n)) = roles else {
                series
                    .notes
                    .push(format!("run {r}: no healthy master and replica; stopped"));
                break;
            };
            let ports = (write_port, bouncer_port);
            match one_failover(procs, &mut c, m, n, series.fault, ports, run_no, opts) {
                Ok(s) => {
                    eprintln!(
                        "   {} {} #{r}: detection {} promotion {} first write {} haproxy {} lost {}/{} \
                         pgbouncer {} errors {} lost {}/{}",
                        profile.label,
                        series.fault.name(),
                        fmt(s.detection),
                        fmt(s.promotion),
                        fmt(s.first_write),
                        fmt(s.haproxy),
                        s.lost.map(|l| l.to_string()).unwrap_or("-".into()),
                        s.acked,
                        fmt(s.pgbouncer),
                        s.pgbouncer_errors
                            .map(|l| l.to_string())
                            .unwrap_or("-".into()),
                        s.pgbouncer_lost
                            .map(|l| l.to_string())
                            .unwrap_or("-".into()),
                        s.pgbouncer_acked
                    );
                    let failed_over = s.first_write.is_some();
                    series.samples.push(s);
                    if !failed_over {
                        misses += 1;
                        if misses >= 2 {
                            series.notes.push(format!(
                                "no failover within {} s in {misses} runs: the remaining runs were skipped",
                                opts.limit.as_secs()
                            ));
                            break;
                        }
                    }
                }
                Err(e) => {
                    eprintln!("   {} {} #{r}: {e}", profile.label, series.fault.name());
                    series.notes.push(format!("run {r}: {e}"));
                    break;
                }
            }
        }
    }
    c.stop(procs);
    out
}

fn fmt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}s")).unwrap_or("-".into())
}

#[allow(clippy::too_many_arguments)]
fn one_failover(
    procs: &mut Procs,
    c: &mut Cluster,
    m: usize,
    n: usize,
    fault: Fault,
    (write_port, bouncer_port): (Option<u16>, Option<u16>),
    run: u32,
    opts: &Options,
) -> Result<Sample, String> {
    // The PgBouncer writer's rows are numbered under their own run.
    let bouncer_run = run + 100_000;
    let new_port = c.pg_ports[n];
    let new_host = c.hosts[n].clone();
    // The replica streams and has the tables (a Patroni replica can answer /replica before).
    let mut probe = Db::at(&new_host, new_port, Duration::from_secs(2));
    poll(Duration::from_secs(90), Duration::from_millis(200), || {
        let q = "select (select count(*) from pg_stat_wal_receiver where status = 'streaming') = 1 \
                 and to_regclass('bench_first') is not null";
        (probe.query_text(q).as_deref() == Ok("t")).then_some(())
    })
    .ok_or("the replica did not stream the tables within 90 s")?;
    drop(probe);
    let writer = Writer::start(
        if write_port.is_some() {
            "127.0.0.1"
        } else {
            &c.hosts[m]
        },
        write_port.unwrap_or(c.pg_ports[m]),
        run,
        Duration::from_millis(10),
        Duration::from_secs(1),
    );
    // Through PgBouncer: a client with a patient 30 s bound (PgBouncer holds queries while
    // paused, up to its query_wait_timeout of 30 s).
    let bouncer = bouncer_port.map(|p| {
        Writer::start(
            "127.0.0.1",
            p,
            bouncer_run,
            Duration::from_millis(10),
            Duration::from_secs(30),
        )
    });
    let old_port = c.pg_ports[m];
    let stop_bouncer = |b: Option<Writer>| b.map(Writer::stop);
    // The promotion poller: the first `pg_is_in_recovery() = false` on the replica.
    let promoted = FirstSuccess::start(&new_host, new_port, Duration::from_millis(10), |db| {
        db.query_text("select pg_is_in_recovery()").as_deref() == Ok("f")
    });
    // Let the writer run for a second with the master healthy.
    let bouncer_ok = |b: &Option<Writer>| {
        b.as_ref()
            .is_none_or(|b| b.acks().iter().any(|a| a.port == old_port))
    };
    poll(Duration::from_secs(10), Duration::from_millis(50), || {
        (!writer.acks().is_empty() && bouncer_ok(&bouncer)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    if writer.acks().is_empty() || !bouncer_ok(&bouncer) {
        writer.stop();
        stop_bouncer(bouncer);
        promoted.stop();
        return Err(
            "a writer (HAProxy or PgBouncer) got no acknowledgement from the master before the fault"
                .into(),
        );
    }
    let t0_wall = wall_ms();
    let t0 = Instant::now();
    c.fault(procs, m, fault)?;
    // The client that retries a write on the replica every 50 ms.
    let first = FirstSuccess::start(&new_host, new_port, Duration::from_millis(50), move |db| {
        db.execute(&format!("insert into bench_first values ({run})"))
            .is_ok()
    });
    let first_at = poll(opts.limit, Duration::from_millis(20), || first.get());
    let first_at = first.stop().or(first_at);
    let promoted_at = promoted.stop();
    // Through HAProxy: the first acknowledgement from the new master after the fault.
    let via_proxy = |w: &Writer| {
        w.acks()
            .iter()
            .find(|a| a.at > t0 && a.port == new_port)
            .map(|a| a.at)
    };
    let proxy_at = if first_at.is_some() && write_port.is_some() {
        poll(Duration::from_secs(30), Duration::from_millis(20), || {
            via_proxy(&writer)
        })
    } else {
        None
    };
    let bouncer_at = match (&bouncer, first_at) {
        (Some(b), Some(_)) => poll(Duration::from_secs(40), Duration::from_millis(20), || {
            via_proxy(b)
        }),
        _ => None,
    };
    // A few more writes on the new master, then stop the writers.
    std::thread::sleep(Duration::from_millis(300));
    let acks = writer.stop();
    let bouncer_errors = bouncer.as_ref().map(|b| b.errors_since(t0));
    let bouncer_acks = stop_bouncer(bouncer);
    let secs = |t: Option<Instant>| t.map(|t| t.duration_since(t0).as_secs_f64());
    let decision = first_at.and_then(|_| {
        poll(Duration::from_secs(5), Duration::from_millis(100), || {
            c.decision_ms(n, t0_wall)
        })
    });
    let mut s = Sample {
        detection: decision.map(|d| (d - t0_wall) / 1000.0),
        first_write: secs(first_at),
        haproxy: secs(proxy_at),
        acked: acks.len(),
        pgbouncer: secs(bouncer_at),
        pgbouncer_errors: bouncer_errors,
        pgbouncer_acked: bouncer_acks.as_ref().map_or(0, Vec::len),
        ..Sample::default()
    };
    if let (Some(d), Some(p)) = (s.detection, secs(promoted_at)) {
        s.promotion = Some(p - d);
    }
    if first_at.is_some() {
        // Every acknowledged row must be on the new master.
        let rows = Db::at(&new_host, new_port, Duration::from_secs(10))
            .query_column(&format!("select n from bench_rows where run = {run}"));
        if let Ok(rows) = rows {
            let have: HashSet<i64> = rows.iter().filter_map(|r| r.parse().ok()).collect();
            s.lost = Some(acks.iter().filter(|a| !have.contains(&a.n)).count());
        }
        if let Some(b) = &bouncer_acks {
            let rows = Db::at(&new_host, new_port, Duration::from_secs(10)).query_column(&format!(
                "select n from bench_rows where run = {bouncer_run}"
            ));
            if let Ok(rows) = rows {
                let have: HashSet<i64> = rows.iter().filter_map(|r| r.parse().ok()).collect();
                s.pgbouncer_lost = Some(b.iter().filter(|a| !have.contains(&a.n)).count());
            }
        }
        c.restore(procs, m)?;
    } else {
        // No failover: resume the master and carry on.
        if let Some(pm) = procs::postmaster_pid(&c.data_dir(m)) {
            procs::signal(pm, nix::sys::signal::Signal::SIGCONT);
        }
        if let Some(net) = c.net.as_mut() {
            net.heal();
        }
        if fault == Fault::Kill {
            c.restore(procs, m)?;
        }
    }
    Ok(s)
}
