//! Issue 10: who may ask a daemon for what, a switchover that never makes two masters,
//! secrets kept out of the journal, and an API that load does not turn into "not primary".
//! Every scenario runs under both runtimes.

use std::time::Duration;

use pgha_tests::{AckWriter, Cluster, Extra, http, http_auth, ids_on, lost, wait_for};

use super::bootstrapped;

const REJOIN: Duration = Duration::from_secs(60);

fn output(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A client that commits one row at a time on whichever node accepts writes, remembering
/// every id whose commit was acknowledged.
fn writer(c: &Cluster) -> AckWriter {
    let targets: Vec<(String, u16)> = c
        .nodes
        .iter()
        .map(|n| (n.host.clone(), n.pg_port))
        .collect();
    AckWriter::anywhere(&targets, "t", 1000, Duration::ZERO)
}

fn promote_force_switches_over_without_losing_an_acknowledged_write(rt: &'static str) {
    let c = bootstrapped("switchover", rt, Extra::default());
    let db1 = c.nodes[1].config.display().to_string();

    // Unforced, beside a healthy master: refused by the core, with the reason, nothing changes.
    let out = c.pgha(&["promote", "--config", &db1]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    assert!(
        output(&out).contains("refused") && output(&out).contains("--force"),
        "{}",
        output(&out)
    );
    // Over TCP: no token, 401 and nothing reaches the core; with it, the core's refusal.
    let (code, body) = http(c.nodes[1].api, "POST", "/promote").unwrap();
    assert_eq!(code, 401, "{body}");
    let (code, body) = http(c.nodes[1].api, "POST", "/pause").unwrap();
    assert_eq!(code, 401, "{body}");
    assert_eq!(
        c.status(1).unwrap()["paused"],
        false,
        "an unauthenticated pause"
    );
    let (code, body) = http_auth(c.nodes[1].api, "POST", "/promote", Some(&c.token)).unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("promote_refused_master_healthy"), "{body}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.state(0).as_deref(), Some("master"));
    assert_eq!(c.state(1).as_deref(), Some("replica"));

    // Forced, with a client writing all along: a switchover.
    let w = writer(&c);
    wait_for(Duration::from_secs(20), "writes on db0", || {
        (w.count_on(0) >= 20).then_some(())
    });
    let out = c.pgha(&["promote", "--force", "--config", &db1]);
    assert!(out.status.success(), "{}\n{}", output(&out), c.logs());
    c.wait_state(1, "master", Duration::from_secs(30));
    wait_for(Duration::from_secs(30), "writes on db1", || {
        (w.count_on(1) >= 20).then_some(())
    });
    let st = c.wait_state(0, "replica", REJOIN);
    assert_eq!(st["local"]["upstream"], "db1", "{st}");
    let acked = w.stop();
    let lost = lost(&acked, &ids_on(&c, 1));
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}\n{}",
        lost.len(),
        c.logs()
    );
    // db0 stepped down (never fenced: there were never two masters in sight).
    let text = c.explain().expect("pgha explain failed");
    assert!(text.contains("step-down"), "{text}");
    assert!(text.contains("promote refused"), "{text}");
    assert!(!text.contains("split-brain"), "{text}");
    c.assert_replay(0);
    c.assert_replay(1);
}

fn secrets_stay_out_of_the_journal_which_is_private_as_is_the_socket(rt: &'static str) {
    use std::os::unix::fs::PermissionsExt;
    const PASSWORD: &str = "e2e-Secret-Pw-4711";
    let extra = Extra {
        postgres: format!("password = \"{PASSWORD}\""),
        ..Extra::default()
    };
    let mut c = bootstrapped("secrets", rt, extra);
    let out = c.pgha(&["pause", "--config", c.nodes[0].config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "over the local socket: {}",
        output(&out)
    );
    for i in 0..2 {
        assert_eq!(c.stop_daemon(i), Some(0));
    }
    for n in &c.nodes {
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&n.journal), 0o600, "{}", n.journal.display());
        for suffix in ["", "-wal", "-shm"] {
            let p = std::path::PathBuf::from(format!("{}{suffix}", n.journal.display()));
            if let Ok(bytes) = std::fs::read(&p) {
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                let found = bytes
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes());
                assert!(!found, "the password is in {}", p.display());
            }
        }
        let sockdir = std::path::PathBuf::from(format!("{}.d", n.journal.display()));
        assert_eq!(mode(&sockdir), 0o700, "{}", sockdir.display());
    }
    // The journal says a password was set, without it.
    let j = c.nodes[0].journal.display().to_string();
    let out = c.pgha(&["journal", "replay", &j]);
    assert!(out.status.success(), "{}", output(&out));
}

fn an_api_held_by_idle_connections_still_says_primary(rt: &'static str) {
    let c = bootstrapped("busyapi", rt, Extra::default());
    let idle: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(c.nodes[0].api).unwrap())
        .collect();
    for _ in 0..5 {
        assert_eq!(http(c.nodes[0].api, "GET", "/primary").unwrap().0, 200);
        let out = c.pgha(&[
            "check",
            "--config",
            c.nodes[0].config.to_str().unwrap(),
            "primary",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", output(&out));
    }
    // Not the master: a definite "no", exit 1.
    let out = c.pgha(&[
        "check",
        "--config",
        c.nodes[1].config.to_str().unwrap(),
        "primary",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", output(&out));
    drop(idle);
}

both_runtimes! {
    promote_force_switches_over_without_losing_an_acknowledged_write_and_unforced_is_refused => promote_force_switches_over_without_losing_an_acknowledged_write;
    the_password_never_reaches_the_journal_and_journal_and_socket_are_private => secrets_stay_out_of_the_journal_which_is_private_as_is_the_socket;
    forty_idle_api_connections_do_not_make_a_healthy_master_look_down => an_api_held_by_idle_connections_still_says_primary;
}
