//! Issue 5: client traffic follows the master, with the real programs: HAProxy (write and
//! read-only ports), a VIP in network namespaces, PgBouncer pause and repoint, hooks.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgha_tests::{Cluster, Extra, Net, Proc, bin_dir_trusting, extra_ports, in_recovery, wait_for};

use super::bootstrapped;

/// The HAProxy check interval of these tests, in seconds.
const CHECK_INTERVAL: f64 = 0.5;

fn cli_ok(c: &Cluster, args: &[&str]) -> (bool, String) {
    let out = c.pgha(args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn haproxy_sends_the_write_port_to_the_master_and_the_readonly_port_to_the_replica(
    rt: &'static str,
) {
    let ports = extra_ports(2);
    let (write, readonly) = (ports, ports + 1);
    let extra = Extra {
        sections: format!(
            "[haproxy]\nbind = \"127.0.0.1\"\nwrite_port = {write}\nreadonly_port = {readonly}\ncheck_interval = {CHECK_INTERVAL}\n"
        ),
        ..Extra::default()
    };
    let mut c = bootstrapped("haproxy", rt, extra);
    let cfg0 = c.nodes[0].config.display().to_string();
    let out = c.pgha(&["haproxy-config", "--config", &cfg0]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let hcfg = c.dir.join("haproxy.cfg");
    std::fs::write(&hcfg, &text).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&hcfg)
        .output()
        .expect("haproxy (apt-get install haproxy)");
    assert!(
        check.status.success(),
        "haproxy -c rejects the generated config:\n{text}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&hcfg);
    let mut hap = Proc::spawn("haproxy", cmd, &c.dir.join("haproxy.log"));
    // HAProxy counts every server up until its first check: give the checks one round.
    std::thread::sleep(Duration::from_secs_f64(2.0 * CHECK_INTERVAL + 0.2));

    // pgha check as HAProxy's external-check: the server address picks the node.
    let db0 = c.nodes[0].pg_port.to_string();
    let db1 = c.nodes[1].pg_port.to_string();
    let w = write.to_string();
    for (node, role, want) in [
        (&db0, "primary", true),
        (&db1, "primary", false),
        (&db1, "replica", true),
        (&db0, "replica", false),
    ] {
        let (ok, out) = cli_ok(
            &c,
            &[
                "check",
                "--config",
                &cfg0,
                role,
                "127.0.0.1",
                &w,
                "127.0.0.1",
                node,
            ],
        );
        assert_eq!(ok, want, "pgha check {role} for port {node}: {out}");
    }

    wait_for(
        Duration::from_secs(10),
        "the write port to reach the master",
        || (!in_recovery(write)?).then_some(()),
    );
    wait_for(
        Duration::from_secs(10),
        "the read-only port to reach the replica",
        || in_recovery(readonly)?.then_some(()),
    );
    for _ in 0..5 {
        assert_eq!(in_recovery(write), Some(false), "write port off the master");
        assert_eq!(
            in_recovery(readonly),
            Some(true),
            "read-only port off the replica"
        );
    }

    // SIGKILL failover: the write port reaches the new master within the bound.
    c.kill_daemon(0);
    c.signal_postmaster(0, Signal::SIGKILL);
    // How soon is the benchmarks' business (docs/benchmarks.md); here only that it does.
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "the write port to reach db1",
        || (!in_recovery(write)?).then_some(()),
    );
    eprintln!(
        "HAProxy write port on the new master {:.2} s after the SIGKILL",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(c.state(1).as_deref(), Some("master"));
    assert!(hap.running(), "haproxy exited");
    // The old master rejoins as a replica: the read-only port reaches it.
    c.start(0);
    c.wait_state(0, "replica", Duration::from_secs(40));
    wait_for(
        Duration::from_secs(10),
        "the read-only port to reach db0",
        || in_recovery(readonly)?.then_some(()),
    );
    assert_eq!(in_recovery(write), Some(false));
}

/// `select pg_is_in_recovery()` from the client host, through `addr:port` (psql, 1 s bound).
fn client_in_recovery(net: &Net, addr: &str, port: u16) -> Option<bool> {
    let out = net.exec(
        2,
        &[
            "env",
            "PGCONNECT_TIMEOUT=1",
            &format!("{}/psql", pgha_tests::PG_BIN),
            "-h",
            addr,
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-Atc",
            "select pg_is_in_recovery()",
        ],
    );
    if !out.status.success() {
        return None;
    }
    match String::from_utf8_lossy(&out.stdout).trim() {
        "t" => Some(true),
        "f" => Some(false),
        _ => None,
    }
}

/// The namespace tests use one fixed subnet and bridge name per process: one at a time.
static ONE_NET: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn the_vip_follows_the_master_between_network_namespaces_and_is_never_on_both(rt: &'static str) {
    let _net = ONE_NET.lock().unwrap_or_else(|e| e.into_inner());
    const VIP: &str = "198.51.100.100";
    let net = Net::new(&["198.51.100.10", "198.51.100.11", "198.51.100.20"]);
    let bin_root =
        std::env::temp_dir().join(format!("pgha-e2e-vipbin-{rt}-{}", std::process::id()));
    let bin = bin_dir_trusting(&bin_root, "198.51.100.0/24");
    let extra = Extra {
        hosts: vec!["198.51.100.10".into(), "198.51.100.11".into()],
        netns: vec![net.ns[0].clone(), net.ns[1].clone()],
        same_port: true,
        bin_dir: Some(bin),
        postgres: "listen_addresses = \"*\"".into(),
        sections: format!("[vip]\naddress = \"{VIP}\"\ninterface = \"eth0\"\ntakeover_wait = 3\n"),
        ..Extra::default()
    };
    let mut c = Cluster::with("vip", rt, 2, extra);
    let port = c.nodes[0].pg_port;
    c.start(0);
    c.wait_state(0, "master", Duration::from_secs(40));
    c.start(1);
    c.wait_state(1, "replica", Duration::from_secs(40));
    wait_for(Duration::from_secs(10), "db0 to hold the VIP", || {
        (net.holds(0, VIP) && !net.holds(1, VIP)).then_some(())
    });
    wait_for(
        Duration::from_secs(10),
        "the client to reach db0 via the VIP",
        || (!client_in_recovery(&net, VIP, port)?).then_some(()),
    );

    // Sample who holds the VIP while the master fails over.
    let stop = Arc::new(AtomicBool::new(false));
    let both = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, both, samples) = (stop.clone(), both.clone(), samples.clone());
        let ns = net.ns.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let held = |k: usize| {
                    Command::new("ip")
                        .args(["-n", &ns[k], "-o", "-4", "addr", "show", "dev", "eth0"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {VIP}/")))
                        .unwrap_or(false)
                };
                if held(0) && held(1) {
                    both.fetch_add(1, Ordering::SeqCst);
                }
                samples.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // The master's postgres dies; its daemon lives and gives the VIP up.
    c.signal_postmaster(0, Signal::SIGKILL);
    let t0 = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "the client to reach db1 via the VIP",
        || (!client_in_recovery(&net, VIP, port)?).then_some(()),
    );
    let took = t0.elapsed();
    assert!(net.holds(1, VIP), "db1 does not hold the VIP");
    assert_eq!(c.state(1).as_deref(), Some("master"));
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    eprintln!(
        "VIP: the client reached the new master through it {:.2} s after the SIGKILL; \
         {} samples, {} with both nodes holding it",
        took.as_secs_f64(),
        samples.load(Ordering::SeqCst),
        both.load(Ordering::SeqCst)
    );
    assert_eq!(
        both.load(Ordering::SeqCst),
        0,
        "both nodes held the VIP\n{}",
        c.logs()
    );
    assert!(!net.holds(0, VIP), "db0 still holds the VIP");
    drop(c);
    let _ = std::fs::remove_dir_all(&bin_root);
}

fn pgbouncer_is_paused_and_repointed_so_a_writing_client_waits_through_a_failover_and_hooks_run(
    rt: &'static str,
) {
    let port = extra_ports(1);
    let dir =
        std::env::temp_dir().join(format!("pgha-e2e-pgbouncer-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ini = dir.join("pgbouncer.ini");
    let d = dir.display();
    let extra = Extra {
        sections: format!(
            "[pgbouncer]\nadmin = \"host=127.0.0.1 port={port} user=postgres dbname=pgbouncer\"\n\
             ini = \"{ini}\"\ndatabases = [\"postgres\"]\npause_timeout = 5\n\n\
             [hooks]\non_role_change = 'echo \"role $PGHA_ROLE node $PGHA_NODE timeline $PGHA_TIMELINE reason $PGHA_REASON\" >> {d}/hooks-{{node}}.log'\n\
             on_promote = 'echo \"after $PGHA_COMMAND: $PGHA_OUTCOME\" >> {d}/hooks-{{node}}.log; echo a hook writes to stderr >&2'\n\
             timeout = 5\n",
            ini = ini.display()
        ),
        ..Extra::default()
    };
    let mut c = Cluster::with("pgbouncer", rt, 2, extra);
    std::fs::write(
        &ini,
        format!(
            "[databases]\npostgres = host=127.0.0.1 port=1 dbname=postgres\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {d}\nauth_type = trust\n\
             auth_file = {d}/userlist.txt\nadmin_users = postgres\npool_mode = transaction\n\
             server_login_retry = 1\nquery_wait_timeout = 30\nignore_startup_parameters = extra_float_digits\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ])
    .arg(program("pgbouncer"))
    .arg(&ini);
    let mut bouncer = Proc::spawn("pgbouncer", cmd, &dir.join("pgbouncer.log"));
    c.start_all();
    c.wait_state(0, "master", Duration::from_secs(40));
    c.wait_state(1, "replica", Duration::from_secs(40));
    // db0 became master: it pointed PgBouncer at itself.
    let text = std::fs::read_to_string(&ini).unwrap();
    assert!(
        text.contains(&format!(
            "postgres = host=127.0.0.1 port={} dbname=postgres",
            c.nodes[0].pg_port
        )),
        "{text}"
    );
    c.sql(
        0,
        "create table w (id serial primary key, at timestamptz default now())",
    );
    wait_for(Duration::from_secs(10), "PgBouncer to reach db0", || {
        (!in_recovery(port)?).then_some(())
    });

    // A client writes through PgBouncer, one transaction every 20 ms, on one session; it
    // reconnects after an error and counts errors and the longest wait.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut errors: Vec<String> = Vec::new();
            let mut longest = Duration::ZERO;
            let mut ok = 0u32;
            let mut client = None;
            while !stop.load(Ordering::SeqCst) {
                if client.is_none() {
                    match pgha_tests::connect_port(port, "postgres", Duration::from_secs(5)) {
                        Ok(cl) => client = Some(cl),
                        Err(e) => {
                            errors.push(format!("connect: {e}"));
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    }
                }
                let t = Instant::now();
                let r = client
                    .as_mut()
                    .map(|cl| cl.simple_query("insert into w default values"));
                longest = longest.max(t.elapsed());
                match r {
                    Some(Ok(_)) => ok += 1,
                    Some(Err(e)) => {
                        errors.push(format!("insert: {e}"));
                        client = None;
                    }
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, errors, longest)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let took = {
        c.kill_daemon(0);
        c.signal_postmaster(0, Signal::SIGKILL);
        let t0 = Instant::now();
        c.wait_state(1, "master", Duration::from_secs(30));
        t0.elapsed()
    };
    // Writes go on on db1.
    let before = c.try_rows(1, "select count(*) from w").unwrap();
    wait_for(
        Duration::from_secs(20),
        "writes through PgBouncer to reach db1",
        || {
            let now = c.try_rows(1, "select count(*) from w").ok()?;
            (now[0].parse::<u64>().ok()? > before[0].parse::<u64>().ok()? + 10).then_some(())
        },
    );
    stop.store(true, Ordering::SeqCst);
    let (ok, errors, longest) = writer.join().unwrap();
    eprintln!(
        "PgBouncer: failover {:.2} s; the writing client made {ok} transactions, saw {} errors \
         {errors:?}, longest wait {:.2} s",
        took.as_secs_f64(),
        errors.len(),
        longest.as_secs_f64()
    );
    assert!(bouncer.running(), "pgbouncer exited");
    let text = std::fs::read_to_string(&ini).unwrap();
    assert!(
        text.contains(&format!(
            "postgres = host=127.0.0.1 port={} dbname=postgres",
            c.nodes[1].pg_port
        )),
        "{text}"
    );
    // The documented bound: only a transaction in flight when the master died may fail; a
    // client idle between transactions waits instead (measured: 0 errors).
    assert!(errors.len() <= 1, "client errors: {errors:?}\n{}", c.logs());
    assert!(
        c.log(1).contains("command") && c.log(1).contains("pause proxy"),
        "{}",
        c.log(1)
    );

    // Hooks: role changes with their environment, and the per-command hook.
    let hooks = std::fs::read_to_string(dir.join("hooks-db1.log")).unwrap_or_default();
    assert!(hooks.contains("role replica node db1"), "{hooks}");
    assert!(hooks.contains("role master node db1 timeline "), "{hooks}");
    assert!(hooks.contains("after promote: ok"), "{hooks}");
    assert!(
        c.log(1).contains("a hook writes to stderr"),
        "hook stderr not logged"
    );
    // Each hook's outcome is journaled: `pgha explain` shows it, with the end of its stderr.
    let journal = c.nodes[1].journal.display().to_string();
    wait_for(
        Duration::from_secs(10),
        "the on_promote hook in explain",
        || {
            let out = c.pgha(&["explain", &journal]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.lines()
                .any(|l| {
                    l.contains("hook on_promote (after #")
                        && l.contains("exit 0 in")
                        && l.ends_with("stderr: a hook writes to stderr")
                })
                .then_some(())
        },
    );
    drop(c);
    drop(bouncer);
    let _ = std::fs::remove_dir_all(&dir);
}

fn program(name: &str) -> std::path::PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed (scripts/test installs it)"))
}

// Every routing scenario under both runtimes: the per-command hooks (`on_promote` in the
// PgBouncer scenario) once ran only under threads.
both_runtimes! {
    haproxy_sends_the_write_port_to_the_master_and_the_readonly_port_to_the_replica,
    the_vip_follows_the_master_between_network_namespaces_and_is_never_on_both,
    pgbouncer_is_paused_and_repointed_so_a_writing_client_waits_through_a_failover_and_hooks_run,
}
