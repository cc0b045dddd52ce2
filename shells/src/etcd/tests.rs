//! The gateway client against scripted replies (the gateway's odd answers, as etcd 3.4.23 gives
//! them) and against a real etcd started by the test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// A server that answers each connection with the next scripted reply (status, JSON body),
/// and records the request bodies.
pub(super) struct Scripted {
    pub(super) addr: SocketAddr,
    pub(super) handle: JoinHandle<Vec<String>>,
}

pub(super) fn scripted(replies: Vec<(u16, &'static str)>) -> Scripted {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        l.set_nonblocking(true).unwrap();
        for (status, body) in replies {
            // Every wait is bounded: a test that makes fewer calls than scripted ends here.
            let start = Instant::now();
            let mut s = loop {
                match l.accept() {
                    Ok((s, _)) => break s,
                    Err(_) if start.elapsed() < Duration::from_secs(10) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return bodies,
                }
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then Content-Length bytes of body.
            loop {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len || n == 0 {
                        bodies.push(text[end + 4..].to_string());
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let reason = if status == 200 { "OK" } else { "Error" };
            let reply = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes());
        }
        bodies
    });
    Scripted { addr, handle }
}

pub(super) fn header(term: u64) -> String {
    format!(
        r#""header":{{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"7","raft_term":"{term}"}}"#
    )
}

pub(super) fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn gateway(endpoints: &[SocketAddr]) -> Gateway {
    Gateway::new(endpoints.to_vec(), Duration::from_secs(5))
}

#[test]
fn a_txn_reply_without_succeeded_is_a_failed_compare_with_the_holder_read() {
    let reply = leak(format!(
        r#"{{{},"responses":[{{"response_range":{{"header":{{}},"kvs":[{{"key":"L3BnaGEvYy9sZWFkZXI=","create_revision":"5","mod_revision":"6","version":"2","value":"ZGIx","lease":"7587869191486361604"}}],"count":"1"}}}}]}}"#,
        header(2)
    ));
    let s = scripted(vec![(200, reply)]);
    let mut g = gateway(&[s.addr]);
    let r = g
        .txn(
            &[Compare::CreateRevision(b"/pgha/c/leader".to_vec(), 0)],
            &[Op::Put {
                key: b"/pgha/c/leader".to_vec(),
                value: b"db0".to_vec(),
                lease: Some(42),
            }],
            &[Op::Get {
                key: b"/pgha/c/leader".to_vec(),
            }],
        )
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.read.len(), 1);
    assert_eq!(r.read[0].key, b"/pgha/c/leader");
    assert_eq!(r.read[0].value, b"db1");
    assert_eq!(r.read[0].mod_revision, 6);
    assert_eq!(r.read[0].lease, 7587869191486361604);
    assert_eq!(r.header.raft_term, 2);
    assert_eq!(r.header.revision, 7);
    let bodies = s.handle.join().unwrap();
    let sent: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(sent["compare"][0]["target"], "CREATE");
    assert_eq!(sent["compare"][0]["create_revision"], "0");
    assert_eq!(sent["success"][0]["request_put"]["lease"], "42");
    assert_eq!(
        sent["success"][0]["request_put"]["value"],
        B64.encode("db0"),
        "values travel base64-encoded"
    );
}

#[test]
fn a_keepalive_answered_without_ttl_means_the_lease_is_gone() {
    let alive = leak(format!(
        r#"{{"result":{{{},"ID":"7587869191486361604","TTL":"10"}}}}"#,
        header(2)
    ));
    let gone = leak(format!(
        r#"{{"result":{{{},"ID":"7587869191486361604"}}}}"#,
        header(2)
    ));
    // The gateway wraps the keepalive stream's message in "result"; the header sits inside.
    let alive_top = leak(format!(
        r#"{{{},"result":{{"ID":"1","TTL":"10"}}}}"#,
        header(2)
    ));
    let s = scripted(vec![(200, alive_top), (200, gone), (200, alive)]);
    let mut g = gateway(&[s.addr]);
    assert_eq!(
        g.lease_keepalive(1).unwrap().1,
        KeepAlive::Alive { ttl_s: 10 }
    );
    assert_eq!(
        g.lease_keepalive(7587869191486361604).unwrap().1,
        KeepAlive::Gone
    );
    assert_eq!(
        g.lease_keepalive(7587869191486361604).unwrap().1,
        KeepAlive::Alive { ttl_s: 10 }
    );
    s.handle.join().unwrap();
}

#[test]
fn a_put_on_a_revoked_lease_is_a_refusal_that_says_the_lease_is_gone() {
    let s = scripted(vec![(
        404,
        r#"{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}"#,
    )]);
    let mut g = gateway(&[s.addr]);
    let e = g.put(b"/pgha/c/members/db0", b"{}", Some(99)).unwrap_err();
    assert!(e.is_lease_gone(), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&s.addr.to_string()), "{text}");
    assert!(text.contains("lease not found"), "{text}");
    s.handle.join().unwrap();
}

#[test]
fn a_reply_from_an_older_raft_term_is_not_believed_and_the_next_endpoint_is_asked() {
    let t7 = leak(format!(r#"{{{},"count":"0"}}"#, header(7)));
    let t5 = leak(format!(r#"{{{},"count":"0"}}"#, header(5)));
    let a = scripted(vec![(200, t7), (200, t5)]);
    let b = scripted(vec![(200, t7)]);
    let mut g = gateway(&[a.addr, b.addr]);
    g.get(b"/k").unwrap();
    assert_eq!(g.term(), 7);
    // a now answers from term 5 (cut off from the quorum): b is asked, and believed.
    let (h, kv) = g.get(b"/k").unwrap();
    assert_eq!((h.raft_term, kv), (7, None));
    a.handle.join().unwrap();
    b.handle.join().unwrap();
    // b answered last: it is asked first next time.
    assert_eq!(g.current, 1);
}

#[test]
fn an_unreachable_endpoint_is_skipped_and_garbage_is_named_with_its_endpoint() {
    // A port nothing listens on: bind one, then close it.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let ok = leak(format!(r#"{{{},"count":"0"}}"#, header(1)));
    let live = scripted(vec![(200, ok)]);
    let mut g = gateway(&[dead, live.addr]);
    g.get(b"/k").unwrap();
    live.handle.join().unwrap();

    let junk = scripted(vec![(200, "<html>hello</html>")]);
    let mut g = Gateway::new(vec![junk.addr], Duration::from_millis(300));
    let e = g.get(b"/k").unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&junk.addr.to_string()), "{text}");
    assert!(text.contains("not JSON"), "{text}");
    junk.handle.join().unwrap();
}

#[test]
fn no_endpoint_answering_ends_within_the_retry_timeout_naming_each() {
    let dead = |_| {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let eps: Vec<SocketAddr> = (0..2).map(dead).collect();
    let mut g = Gateway::new(eps.clone(), Duration::from_millis(400));
    let start = Instant::now();
    let e = g.get(b"/k").unwrap_err();
    // Bounded, not fast: the bound is what is checked, generously.
    assert!(start.elapsed() < Duration::from_secs(30));
    let EtcdError::AllFailed { tried } = &e else {
        panic!("{e:?}");
    };
    assert!(!tried.is_empty() && tried.len() <= 2, "{tried:?}");
    let text = e.to_string();
    assert!(eps.iter().any(|a| text.contains(&a.to_string())), "{text}");
}

#[test]
fn endpoints_are_host_port_or_http_urls_and_anything_else_is_named() {
    assert_eq!(
        parse_endpoint("127.0.0.1:2379").unwrap(),
        "127.0.0.1:2379".parse().unwrap()
    );
    assert_eq!(
        parse_endpoint("http://127.0.0.1:2379/").unwrap(),
        "127.0.0.1:2379".parse().unwrap()
    );
    for bad in ["https://127.0.0.1:2379", "127.0.0.1", "", "http://x:1/v3"] {
        let e = parse_endpoint(bad).unwrap_err();
        assert!(e.contains(&format!("{bad:?}")), "{e}");
    }
}

#[test]
fn a_prefix_range_ends_after_the_last_key_under_the_prefix() {
    assert_eq!(prefix_end(b"/pgha/c/"), b"/pgha/c0".to_vec());
    assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    assert_eq!(prefix_end(b"\xff"), vec![0]);
}

/// A one-member etcd on loopback with a temporary data dir, stopped by PID on drop.
pub(super) struct Etcd {
    pub(super) child: Child,
    pub(super) dir: std::path::PathBuf,
    pub(super) client: SocketAddr,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Ports 29000-29999 are the etcd tests' (the e2e tests use 20000-28000).
static NEXT_PORT: AtomicU16 = AtomicU16::new(29000);

fn free_port() -> u16 {
    loop {
        let p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        assert!(p < 30000, "ports 29000-29999 exhausted");
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn etcd_binary() -> &'static str {
    ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("etcd not found: scripts/test installs Debian's etcd-server")
}

pub(super) fn start_etcd() -> Etcd {
    let (cp, pp) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("pgha-etcd-test-{}-{cp}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let curl = format!("http://127.0.0.1:{cp}");
    let purl = format!("http://127.0.0.1:{pp}");
    let child = Command::new(etcd_binary())
        .args(["--name", "e0", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen-client-urls",
            &curl,
            "--advertise-client-urls",
            &curl,
        ])
        .args([
            "--listen-peer-urls",
            &purl,
            "--initial-advertise-peer-urls",
            &purl,
        ])
        .args(["--initial-cluster", &format!("e0={purl}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("etcd.log")).unwrap())
        .spawn()
        .expect("start etcd");
    let etcd = Etcd {
        child,
        dir,
        client: format!("127.0.0.1:{cp}").parse().unwrap(),
    };
    let mut g = Gateway::new(vec![etcd.client], Duration::from_secs(1));
    let start = Instant::now();
    while g.get(b"/ready").is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "etcd did not answer within 60 s; see {}",
            etcd.dir.join("etcd.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    etcd
}

#[test]
fn a_real_etcd_grants_the_leader_key_to_one_lease_renews_it_under_value_and_frees_it_on_revoke() {
    let etcd = start_etcd();
    let mut g = Gateway::new(vec![etcd.client], Duration::from_secs(5));
    let key = b"/pgha/t/leader".to_vec();
    let (_, a, ttl) = g.lease_grant(10).unwrap();
    assert!(ttl >= 10, "granted {ttl}");
    let (_, b, _) = g.lease_grant(10).unwrap();
    let take = |g: &mut Gateway, me: &[u8], lease| {
        g.txn(
            &[Compare::CreateRevision(key.clone(), 0)],
            &[Op::Put {
                key: key.clone(),
                value: me.to_vec(),
                lease: Some(lease),
            }],
            &[Op::Get { key: key.clone() }],
        )
        .unwrap()
    };
    let won = take(&mut g, b"db0", a);
    assert!(won.succeeded);
    let lost = take(&mut g, b"db1", b);
    assert!(!lost.succeeded, "the key exists: the compare fails");
    assert_eq!(lost.read[0].value, b"db0", "the loser reads who holds it");
    assert_eq!(lost.read[0].lease, a);

    // Renew under "value == me": db1's attempt fails, db0's holds.
    let renew = |g: &mut Gateway, me: &[u8], lease| {
        g.txn(
            &[Compare::Value(key.clone(), me.to_vec())],
            &[Op::Put {
                key: key.clone(),
                value: me.to_vec(),
                lease: Some(lease),
            }],
            &[],
        )
        .unwrap()
        .succeeded
    };
    assert!(!renew(&mut g, b"db1", b));
    assert!(renew(&mut g, b"db0", a));
    assert_eq!(
        g.lease_keepalive(a).unwrap().1,
        KeepAlive::Alive { ttl_s: ttl }
    );

    // A revoked lease takes its key with it; keepalive says gone; a put on it is refused.
    assert!(g.lease_revoke(a).unwrap().is_some());
    assert_eq!(g.get(&key).unwrap().1, None);
    assert_eq!(g.lease_keepalive(a).unwrap().1, KeepAlive::Gone);
    let e = g.put(&key, b"db0", Some(a)).unwrap_err();
    assert!(e.is_lease_gone(), "{e}");
    assert_eq!(
        g.lease_revoke(a).unwrap(),
        None,
        "revoking twice is no error"
    );
    assert!(take(&mut g, b"db1", b).succeeded, "db1 takes the freed key");

    // Compare-and-swap on mod_revision for shared keys; prefix ranges in key order.
    let cfg = b"/pgha/t/config".to_vec();
    g.put(&cfg, b"v1", None).unwrap();
    g.put(b"/pgha/t/members/db0", b"m0", None).unwrap();
    g.put(b"/pgha/t/members/db1", b"m1", None).unwrap();
    let (_, kv) = g.get(&cfg).unwrap();
    let rev = kv.unwrap().mod_revision;
    let cas = |g: &mut Gateway, rev, v: &[u8]| {
        g.txn(
            &[Compare::ModRevision(cfg.clone(), rev)],
            &[Op::Put {
                key: cfg.clone(),
                value: v.to_vec(),
                lease: None,
            }],
            &[],
        )
        .unwrap()
        .succeeded
    };
    assert!(cas(&mut g, rev, b"v2"));
    assert!(!cas(&mut g, rev, b"v3"), "a stale revision loses");
    let (_, members) = g.get_prefix(b"/pgha/t/members/").unwrap();
    let names: Vec<&[u8]> = members.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(names, [b"m0".as_slice(), b"m1".as_slice()]);
    assert_eq!(g.delete(b"/pgha/t/members/db0").unwrap().1, 1);
    assert!(g.term() >= 1);
}

#[test]
fn a_lease_that_is_not_renewed_expires_and_its_key_goes_with_it() {
    let etcd = start_etcd();
    let mut g = Gateway::new(vec![etcd.client], Duration::from_secs(5));
    let (_, lease, ttl) = g.lease_grant(2).unwrap();
    g.put(b"/pgha/t/leader", b"db0", Some(lease)).unwrap();
    // Wait (bounded) for the server to expire it: TTL plus generous slack.
    let start = Instant::now();
    while g.get(b"/pgha/t/leader").unwrap().1.is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(ttl as u64 + 30),
            "the key outlived its lease by 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(g.lease_keepalive(lease).unwrap().1, KeepAlive::Gone);
}
