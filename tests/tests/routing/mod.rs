//! Issue 5: client traffic follows the master, with the real programs: HAProxy (write and
//! read-only ports), a VIP in network namespaces, PgBouncer pause and repoint, hooks.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgha_tests::{
    CONNECT_TIMEOUT, Cluster, Extra, PSQL_ERROR_COUNT, Proc, extra_ports, in_recovery, wait_for,
};

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

#[test]
fn haproxy_sends_the_write_port_to_the_master_and_the_readonly_port_to_the_replica() {
    let ports = extra_ports(2);
    let (write, readonly) = (ports, ports + 1);
    let extra = Extra {
        sections: format!(
            "[haproxy]\nbind = \"127.0.0.1\"\nwrite_port = {write}\nreadonly_port = {readonly}\ncheck_interval = {CHECK_INTERVAL}\n"
        ),
        ..Extra::default()
    };
    let mut c = bootstrapped("haproxy", "threads", extra);
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
    let t0 = Instant::now();
    let bound =
        Duration::from_secs_f64(CONNECT_TIMEOUT * PSQL_ERROR_COUNT as f64 + 2.0 * CHECK_INTERVAL);
    wait_for(
        Duration::from_secs(30),
        "the write port to reach db1",
        || (!in_recovery(write)?).then_some(()),
    );
    let took = t0.elapsed();
    eprintln!(
        "HAProxy write port on the new master {:.2} s after the SIGKILL (bound {:.2} s)",
        took.as_secs_f64(),
        bound.as_secs_f64()
    );
    assert!(
        took <= bound,
        "took {took:?}, bound {bound:?}\n{}",
        c.logs()
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
