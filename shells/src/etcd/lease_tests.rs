//! The effector against scripted gateway replies, and the core's lease machine driven by
//! [`Runner`] against a real etcd with the wall clock (started by the test, stopped by PID).
//! Every wait is bounded; assertions are orderings and generous bounds, never speed.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgha_core::Timestamp;
use pgha_core::lease::{
    EtcdFault, EtcdReply, LeaderKey, LeaseCommand, LeaseConfig, LeaseDecision, LeaseEvent, LeaseId,
    LeaseOp, Name, RequestId, StopReason,
};

use super::effector::{Effector, fault, leader_key};
use super::runner::{Logged, Runner};
use super::tests::{Etcd, header, leak, scripted, start_etcd};
use super::*;

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn effector(endpoints: &[SocketAddr], me: &str) -> Effector {
    let g = Gateway::new(endpoints.to_vec(), Duration::from_secs(2));
    Effector::new(g, "t", name(me))
}

fn run(e: &mut Effector, op: LeaseOp) -> EtcdReply {
    let id = RequestId(7);
    match e.run(LeaseCommand { id, op }).0 {
        LeaseEvent::Reply { id: got, reply } => {
            assert_eq!(got, id, "the reply names its request");
            reply
        }
        other => panic!("not a reply: {other:?}"),
    }
}

#[test]
fn the_effector_maps_a_keepalive_without_ttl_to_gone_and_a_failed_renewal_to_the_holder_read() {
    let gone = leak(format!(r#"{{"result":{{{},"ID":"9"}}}}"#, header(2)));
    let failed = leak(format!(
        r#"{{{},"responses":[{{"response_range":{{"kvs":[{{"key":"{}","create_revision":"5","mod_revision":"6","value":"{}"}}]}}}}]}}"#,
        header(2),
        B64.encode(leader_key("t")),
        B64.encode("db1"),
    ));
    let garbage = leak(format!(
        r#"{{{},"kvs":[{{"key":"{}","mod_revision":"8","value":"{}"}}]}}"#,
        header(2),
        B64.encode(leader_key("t")),
        B64.encode("\u{1}not a name"),
    ));
    let absent = leak(format!(r#"{{{}}}"#, header(2)));
    let s = scripted(vec![
        (200, gone),
        (200, failed),
        (200, garbage),
        (200, absent),
    ]);
    let mut e = effector(&[s.addr], "db0");
    let lease = LeaseId(9);
    assert_eq!(run(&mut e, LeaseOp::KeepAlive { lease }), EtcdReply::Gone);
    assert_eq!(
        run(&mut e, LeaseOp::Renew { lease, created: 4 }),
        EtcdReply::TxnFailed {
            key: LeaderKey::Held {
                holder: name("db1"),
                revision: 6,
                created: 5,
            }
        }
    );
    assert_eq!(
        run(&mut e, LeaseOp::ReadKey),
        EtcdReply::Key(LeaderKey::Unreadable { revision: 8 }),
        "a value that is not a member name is unreadable, not anybody's"
    );
    assert_eq!(
        run(&mut e, LeaseOp::ReadKey),
        EtcdReply::Key(LeaderKey::Absent { revision: 7 }),
        "an absent key is seen at the reply's store revision"
    );
    let bodies = s.handle.join().unwrap();
    let renew: Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(renew["compare"][0]["target"], "VALUE");
    assert_eq!(renew["compare"][0]["value"], B64.encode("db0"));
    assert_eq!(renew["compare"][1]["target"], "CREATE");
    assert_eq!(renew["compare"][1]["create_revision"], "4");
    assert_eq!(renew["compare"][2]["target"], "LEASE");
    assert_eq!(renew["compare"][2]["lease"], "9");
    assert_eq!(renew["compare"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        renew["success"][0]["request_put"]["key"],
        B64.encode("/pgha/t/leader")
    );
    assert_eq!(
        renew["success"][0]["request_put"]["value"],
        B64.encode("db0")
    );
    assert_eq!(
        renew["failure"][0]["request_range"]["key"],
        B64.encode("/pgha/t/leader")
    );
}

#[test]
fn the_effector_maps_errors_to_could_not_tell_never_to_lost() {
    let refused = r#"{"error":"etcdserver: requested lease not found","code":5}"#;
    let s = scripted(vec![(404, refused)]);
    let mut e = effector(&[s.addr], "db0");
    assert_eq!(
        run(&mut e, LeaseOp::Acquire { lease: LeaseId(3) }),
        EtcdReply::Error(EtcdFault::Refused)
    );
    s.handle.join().unwrap();

    // Nothing listens: unreachable, within the retry timeout.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let mut e = Effector::new(
        Gateway::new(vec![addr], Duration::from_millis(300)),
        "t",
        name("db0"),
    );
    for op in [
        LeaseOp::KeepAlive { lease: LeaseId(3) },
        LeaseOp::Renew {
            lease: LeaseId(3),
            created: 2,
        },
        LeaseOp::ReadKey,
    ] {
        assert_eq!(run(&mut e, op), EtcdReply::Error(EtcdFault::Unreachable));
    }

    let stale = |term| EtcdError::StaleTerm {
        endpoint: addr,
        term,
        seen: 5,
    };
    assert_eq!(
        fault(&EtcdError::AllFailed {
            tried: vec![stale(3), stale(4)]
        }),
        EtcdFault::StaleTerm,
        "only stale members answered"
    );
    assert_eq!(
        fault(&EtcdError::AllFailed {
            tried: vec![
                stale(3),
                EtcdError::Unreachable {
                    endpoint: addr,
                    why: "x".into()
                }
            ]
        }),
        EtcdFault::Unreachable
    );
}

/// etcd's minimum TTL (2 s with default election timeouts); `loop_wait + 2 × retry_timeout
/// <= ttl` and `loop_wait + retry_timeout + margin <= ttl`.
const CONFIG: LeaseConfig = LeaseConfig {
    ttl_ms: 2000,
    loop_wait_ms: 500,
    retry_timeout_ms: 700,
    margin_ms: 600,
};

/// Every wait in these tests ends within this.
const LIMIT: Duration = Duration::from_secs(30);

fn runner(etcd: &Etcd, me: &str, epoch: Instant) -> Runner {
    let g = Gateway::new(
        vec![etcd.client],
        Duration::from_millis(CONFIG.retry_timeout_ms),
    );
    let mut r = Runner::new(CONFIG, name(me), Effector::new(g, "t", name(me)), epoch);
    r.handle(LeaseEvent::Start);
    r.handle(LeaseEvent::Candidate(true));
    r
}

/// Steps the runners in turn until `done`, at most [`LIMIT`].
fn until(rs: &mut [&mut Runner], what: &str, mut done: impl FnMut(&[&mut Runner]) -> bool) {
    let start = Instant::now();
    while !done(rs) {
        assert!(start.elapsed() < LIMIT, "not within {LIMIT:?}: {what}");
        for r in rs.iter_mut() {
            r.step(Duration::from_millis(10));
        }
    }
}

/// Steps the runners for `d`.
fn for_a_while(rs: &mut [&mut Runner], d: Duration) {
    let start = Instant::now();
    until(rs, "a bounded wait", |_| start.elapsed() >= d);
}

/// The first decision from log entry `from` on that `pick` accepts.
fn first(
    r: &Runner,
    from: usize,
    pick: impl Fn(&LeaseDecision) -> bool,
) -> Option<(Timestamp, LeaseDecision)> {
    r.decisions(from).find(|(_, d)| pick(d))
}

fn may_lead(d: &LeaseDecision) -> bool {
    matches!(d, LeaseDecision::MayLead { .. })
}

fn leader_is(who: Name) -> impl Fn(&LeaseDecision) -> bool {
    move |d| matches!(d, LeaseDecision::LeaderIs { name, .. } if *name == who)
}

/// Two machines race on one etcd: returns (winner, loser) once the loser names the winner.
fn race(etcd: &Etcd) -> (Runner, Runner) {
    let epoch = Instant::now();
    let mut a = runner(etcd, "db0", epoch);
    let mut b = runner(etcd, "db1", epoch);
    until(
        &mut [&mut a, &mut b],
        "one leads, the other names it",
        |rs| {
            let (a, b) = (&rs[0], &rs[1]);
            (first(a, 0, may_lead).is_some() && first(b, 0, leader_is(name("db0"))).is_some())
                || (first(b, 0, may_lead).is_some()
                    && first(a, 0, leader_is(name("db1"))).is_some())
        },
    );
    let (w, l) = if first(&a, 0, may_lead).is_some() {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        first(&l, 0, may_lead).is_none(),
        "exactly one machine may lead"
    );
    (w, l)
}

fn holder(etcd: &Etcd) -> Option<Vec<u8>> {
    let mut g = Gateway::new(vec![etcd.client], Duration::from_secs(5));
    g.get(&leader_key("t")).unwrap().1.map(|kv| kv.value)
}

#[test]
fn two_lease_machines_race_one_leads_and_the_other_takes_the_key_only_after_the_hung_winners_ttl() {
    let etcd = start_etcd();
    let (mut w, mut l) = race(&etcd);
    // Both keep going a while: the winner renews, the loser keeps naming it.
    for_a_while(&mut [&mut w, &mut l], Duration::from_millis(1500));
    assert!(w.lease().may_write(), "the winner still leads");
    assert!(!l.lease().may_write());

    // The winner hangs: nobody calls it any more. Its own deadline and the earliest expiry
    // its last handled renewal allows stay where they are.
    let deadline = w.lease().deadline();
    let (_, expires) = w.lease().last_renewal();
    let from = l.log.len();
    until(&mut [&mut l], "the other takes the key", |rs| {
        first(rs[0], from, may_lead).is_some()
    });
    let (took, _) = first(&l, from, may_lead).unwrap();
    eprintln!("hung winner: deadline {deadline:?}, expiry {expires:?}; the other led at {took:?}");
    assert!(
        deadline < took,
        "the hung winner's own deadline {deadline:?} passed before the other led at {took:?}"
    );
    assert!(
        expires <= took,
        "the other led at {took:?}, not before the winner's lease could expire at {expires:?}"
    );
    let loser = l.lease().key();
    assert!(
        matches!(loser, Some(LeaderKey::Held { holder, .. }) if holder != w.me()),
        "{loser:?}"
    );
}

#[test]
fn a_holder_cut_off_by_a_stopped_etcd_stops_writing_before_its_lease_can_expire_and_leads_again_only_after_renewing()
 {
    let etcd = start_etcd();
    let epoch = Instant::now();
    let mut a = runner(&etcd, "db0", epoch);
    until(&mut [&mut a], "the only machine leads", |rs| {
        first(rs[0], 0, may_lead).is_some()
    });
    for_a_while(&mut [&mut a], Duration::from_millis(1500));
    assert!(a.lease().may_write());

    let pid = Pid::from_raw(etcd.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let stopped = a.now();
    let from = a.log.len();
    let must_stop = |d: &LeaseDecision| matches!(d, LeaseDecision::MustStopWriting { .. });
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        until(&mut [&mut a], "the holder stops writing", |rs| {
            first(rs[0], from, must_stop).is_some()
        });
        let (at, d) = first(&a, from, must_stop).unwrap();
        let (last, expires) = a.lease().last_renewal();
        eprintln!(
            "etcd stopped at {stopped:?}; last renewal sent {last:?}, deadline {:?}, told to stop \
             at {at:?}, lease expires {expires:?}",
            a.lease().deadline()
        );
        assert!(
            matches!(
                d,
                LeaseDecision::MustStopWriting {
                    reason: StopReason::LeaseExpiring { .. }
                }
            ),
            "{d:?}"
        );
        assert!(
            last <= stopped && at < expires,
            "told to stop at {at:?}, before the lease (renewal sent at {last:?}) can expire at \
             {expires:?}; etcd stopped at {stopped:?}"
        );
        // etcd stays silent for longer than a TTL: no lead again.
        for_a_while(&mut [&mut a], Duration::from_millis(2 * CONFIG.ttl_ms));
        assert!(
            first(&a, from, may_lead).is_none(),
            "no lead while etcd is silent"
        );
    }));
    kill(pid, Signal::SIGCONT).unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    let resumed = a.now();
    let from = a.log.len();
    until(&mut [&mut a], "the holder leads again", |rs| {
        first(rs[0], from, may_lead).is_some()
    });
    let (led, d) = first(&a, from, may_lead).unwrap();
    let renewed = a.log[from..].iter().find_map(|(t, l)| match l {
        Logged::Input(LeaseEvent::Reply {
            reply: EtcdReply::Alive { .. } | EtcdReply::Granted { .. } | EtcdReply::TxnSucceeded { .. },
            ..
        }) => Some(*t),
        _ => None,
    });
    let answers: Vec<_> = a.log[from..]
        .iter()
        .filter_map(|(t, l)| match l {
            Logged::Input(LeaseEvent::Reply { reply, .. }) => Some((*t, *reply)),
            _ => None,
        })
        .take(4)
        .collect();
    eprintln!("etcd resumed at {resumed:?}; answers {answers:?}; led again at {led:?}");
    assert!(
        renewed.is_some_and(|r| resumed <= r && r <= led),
        "led again at {led:?} ({d:?}) after etcd answered at {renewed:?}, resumed at {resumed:?}"
    );
    assert_eq!(holder(&etcd).as_deref(), Some(&b"db0"[..]));
}

#[test]
fn a_clean_release_deletes_the_key_at_once_and_the_other_leads_while_the_first_lease_still_lives() {
    let etcd = start_etcd();
    let (mut w, mut l) = race(&etcd);
    let winner = w.me();
    l.watch(Duration::from_millis(CONFIG.loop_wait_ms));
    let from_w = w.log.len();
    let from_l = l.log.len();
    w.handle(LeaseEvent::Release);
    let released = w.now();
    until(&mut [&mut w, &mut l], "the other leads", |rs| {
        first(rs[1], from_l, may_lead).is_some()
    });
    let (led, _) = first(&l, from_l, may_lead).unwrap();
    let news = l.log[from_l..].iter().find_map(|(t, e)| match e {
        Logged::Input(LeaseEvent::Watched(LeaderKey::Absent { .. })) => Some((*t, "watch")),
        Logged::Input(LeaseEvent::Reply {
            reply: EtcdReply::Key(LeaderKey::Absent { .. }),
            ..
        }) => Some((*t, "read")),
        _ => None,
    });
    eprintln!("the other first saw the key absent by (time, way) {news:?}");
    let (stopped, d) = first(&w, from_w, |d| {
        matches!(d, LeaseDecision::MustStopWriting { .. })
    })
    .unwrap();
    assert_eq!(
        d,
        LeaseDecision::MustStopWriting {
            reason: StopReason::Released
        }
    );
    assert!(stopped <= released && released <= led);
    // The first member's lease is still kept alive: its key went by the delete, not by expiry.
    let (_, expires) = w.lease().last_renewal();
    eprintln!(
        "released at {released:?}; the other led at {led:?}; the first's lease lives to {expires:?}"
    );
    assert!(w.lease().lease_id().is_some());
    assert!(
        led < expires,
        "the other led at {led:?} while the first's lease lives until at least {expires:?}"
    );
    assert_ne!(holder(&etcd).as_deref(), Some(winner.as_str().as_bytes()));
    until(
        &mut [&mut w, &mut l],
        "the other's watch reports the delete",
        |rs| {
            rs[1].log[from_l..].iter().any(|(_, e)| {
                matches!(
                    e,
                    Logged::Input(LeaseEvent::Watched(LeaderKey::Absent { .. }))
                )
            })
        },
    );
    until(
        &mut [&mut w, &mut l],
        "the first names the new leader",
        |rs| {
            rs[0]
                .lease()
                .key()
                .is_some_and(|k| matches!(k, LeaderKey::Held { holder, .. } if holder != winner))
        },
    );
}

#[test]
fn a_watch_reports_each_change_of_the_leader_key_in_order_and_resumes_after_the_last() {
    let etcd = start_etcd();
    let mut g = Gateway::new(vec![etcd.client], Duration::from_secs(5));
    let key = leader_key("t");
    let (h, _) = g.get(&key).unwrap();
    let start = h.revision as u64 + 1;
    g.put(&key, b"db0", None).unwrap();
    g.delete(&key).unwrap();
    let last = g.put(&key, b"\x01garbage", None).unwrap().revision as u64;
    let mut views = Vec::new();
    let window = Duration::from_millis(500);
    let end = watch::watch_once(etcd.client, &key, start, window, g.term(), |k, _| {
        views.push(k)
    })
    .unwrap();
    assert_eq!(
        views,
        vec![
            LeaderKey::Held {
                holder: name("db0"),
                revision: start,
                created: start,
            },
            LeaderKey::Absent {
                revision: start + 1
            },
            LeaderKey::Unreadable { revision: last },
        ]
    );
    assert_eq!(end, watch::WatchEnd::From(last + 1));
    // Nothing new: the request ends at its window, to resume from the same revision.
    views.clear();
    let end = watch::watch_once(etcd.client, &key, last + 1, window, g.term(), |k, _| {
        views.push(k)
    })
    .unwrap();
    assert!(views.is_empty());
    assert_eq!(end, watch::WatchEnd::From(last + 1));
    // A compacted start revision is named, so the watcher reads the key instead.
    let out = std::process::Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.client.to_string(), "compaction"])
        .arg(last.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let end = watch::watch_once(etcd.client, &key, start, window, g.term(), |_, _| {}).unwrap();
    assert_eq!(end, watch::WatchEnd::Compacted);
    // A watch on a term older than one seen is not believed.
    let e = watch::watch_once(etcd.client, &key, last + 1, window, g.term() + 1, |_, _| {})
        .unwrap_err();
    assert!(matches!(e, EtcdError::StaleTerm { .. }), "{e}");
}

#[test]
fn a_watch_that_is_not_a_created_stream_is_garbage_named_with_its_endpoint() {
    let s = scripted(vec![(
        200,
        r#"{"result":{"header":{"raft_term":"2"},"events":[]}}"#,
    )]);
    let e = watch::watch_once(
        s.addr,
        &leader_key("t"),
        1,
        Duration::from_secs(2),
        0,
        |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(e, EtcdError::BadReply { endpoint, .. } if endpoint == s.addr),
        "{e}"
    );
    s.handle.join().unwrap();
}

/// The leader key as etcd has it: value, create_revision, mod_revision, lease.
fn stored(g: &mut Gateway) -> Option<(Vec<u8>, i64, i64, i64)> {
    let kv = g.get(&leader_key("t")).unwrap().1?;
    Some((kv.value, kv.create_revision, kv.mod_revision, kv.lease))
}

fn granted(e: &mut Effector) -> LeaseId {
    match run(e, LeaseOp::Grant { ttl_ms: 60_000 }) {
        EtcdReply::Granted { lease, .. } => lease,
        other => panic!("no lease: {other:?}"),
    }
}

fn succeeded(reply: EtcdReply) -> u64 {
    match reply {
        EtcdReply::TxnSucceeded { revision } => revision,
        other => panic!("the txn failed: {other:?}"),
    }
}

/// The second lease bug the simulation found (docs/simulator.md): a renewal from a crashed run
/// must not bind the key back to its lease once the restarted run confirmed it with its own.
/// Checks etcd (3.4) evaluates the `LEASE` compare the effector sends.
#[test]
fn a_renewal_under_another_lease_is_refused_once_a_restarted_run_confirmed_the_key() {
    let etcd = start_etcd();
    let mut e = effector(&[etcd.client], "db0");
    let (old, new) = (granted(&mut e), granted(&mut e));
    let created = succeeded(run(&mut e, LeaseOp::Acquire { lease: old }));
    let mut g = Gateway::new(vec![etcd.client], Duration::from_secs(5));
    assert_eq!(
        stored(&mut g),
        Some((b"db0".to_vec(), created as i64, created as i64, old.0))
    );
    // The restarted run confirms the version it read, under its new lease.
    let seen = succeeded(run(
        &mut e,
        LeaseOp::Renew {
            lease: old,
            created,
        },
    ));
    let confirmed = succeeded(run(
        &mut e,
        LeaseOp::Confirm {
            lease: new,
            seen,
            created,
        },
    ));
    // The dead run's renewal and confirm come late: refused, the key stays bound to the new lease.
    for late in [
        LeaseOp::Renew {
            lease: old,
            created,
        },
        LeaseOp::Confirm {
            lease: old,
            seen,
            created,
        },
    ] {
        assert!(
            matches!(
                run(&mut e, late),
                EtcdReply::TxnFailed {
                    key: LeaderKey::Held { revision, created: c, .. }
                } if revision == confirmed && c == created
            ),
            "{late:?}"
        );
    }
    assert_eq!(
        stored(&mut g),
        Some((b"db0".to_vec(), created as i64, confirmed as i64, new.0))
    );
    let renewed = succeeded(run(
        &mut e,
        LeaseOp::Renew {
            lease: new,
            created,
        },
    ));
    assert!(renewed > confirmed);
}

/// The first lease bug the simulation found: a step-down's delete applied late, after the member
/// took the key again, must not delete the new key.
#[test]
fn a_late_delete_from_a_step_down_leaves_the_key_the_member_took_again() {
    let etcd = start_etcd();
    let mut e = effector(&[etcd.client], "db0");
    let lease = granted(&mut e);
    let first = succeeded(run(&mut e, LeaseOp::Acquire { lease }));
    let delete = LeaseOp::Delete {
        seen: first,
        created: first,
    };
    // The step-down's delete (its answer lost, retried: the same request twice).
    let deleted = succeeded(run(&mut e, delete));
    let mut g = Gateway::new(vec![etcd.client], Duration::from_secs(5));
    assert_eq!(stored(&mut g), None);
    let again = succeeded(run(&mut e, LeaseOp::Acquire { lease }));
    assert!(again > deleted);
    assert!(matches!(
        run(&mut e, delete),
        EtcdReply::TxnFailed {
            key: LeaderKey::Held { revision, created, .. }
        } if revision == again && created == again
    ));
    assert_eq!(
        stored(&mut g),
        Some((b"db0".to_vec(), again as i64, again as i64, lease.0))
    );
}
