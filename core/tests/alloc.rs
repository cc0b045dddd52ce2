//! Steady state allocates nothing: a counting global allocator watches a replica and a
//! master through thousands of probe rounds and timer ticks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

mod common;

use pgha_core::*;

struct Counting;

// Per thread, so the test runner's other threads (output capture, other tests) do not count.
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: defers to the system allocator; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds GlobalAlloc's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds GlobalAlloc's contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller upholds GlobalAlloc's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Drives `node` for `rounds` probe intervals, answering each probe with `answer`, and
/// returns the allocations counted while doing it.
fn steady(
    node: &mut Node,
    now: &mut u64,
    rounds: u32,
    answer: impl Fn(CommandKind) -> ProbeResult,
) -> u64 {
    // Commands wait in a fixed ring: the test itself must not allocate either.
    let mut ring: [Option<Command>; 64] = [None; 64];
    let (mut head, mut tail) = (0usize, 0usize);
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    for _ in 0..rounds {
        loop {
            while let Some(o) = node.poll_output() {
                if let Output::Command(c) = o {
                    assert!(c.kind.is_probe(), "steady state issued {c:?}");
                    ring[tail % 64] = Some(c);
                    tail += 1;
                }
            }
            if head == tail {
                break;
            }
            let p = ring[head % 64].take().unwrap();
            head += 1;
            let result = answer(p.kind);
            let event = match p.kind {
                CommandKind::ProbeLocal => Event::LocalProbe { id: p.id, result },
                CommandKind::ProbePeer(peer) => Event::PeerProbe {
                    id: p.id,
                    peer,
                    result,
                },
                CommandKind::ProbePeerDaemon(peer) => Event::PeerDaemon {
                    id: p.id,
                    peer,
                    report: None,
                },
                _ => unreachable!(),
            };
            *now += 3;
            node.handle(Timestamp(*now), event);
        }
        // A spurious timer call (nothing is due), then the real one.
        if node.poll_timeout().is_some_and(|t| t.as_millis() > *now) {
            node.handle_timeout(Timestamp(*now));
            assert!(node.poll_output().is_none());
        }
        *now = node
            .poll_timeout()
            .expect("a probe is always due")
            .as_millis();
        node.handle_timeout(Timestamp(*now));
    }
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

fn started(
    index: u32,
    facts: LocalFacts,
    answer: impl Fn(CommandKind) -> ProbeResult,
) -> (Node, u64) {
    let mut c = common::ha(index);
    c.proxy = true;
    c.hooks = true;
    let mut node = Node::new(c);
    node.handle(Timestamp(0), Event::Started(facts));
    let mut now = 0;
    // Bring it to its steady state, answering actions with success.
    let mut work = std::collections::VecDeque::new();
    for _ in 0..50 {
        while let Some(o) = node.poll_output() {
            if let Output::Command(c) = o {
                work.push_back(c);
            }
        }
        while let Some(c) = work.pop_front() {
            now += 1;
            let event = match c.kind {
                CommandKind::ProbeLocal => Event::LocalProbe {
                    id: c.id,
                    result: answer(c.kind),
                },
                CommandKind::ProbePeer(peer) => Event::PeerProbe {
                    id: c.id,
                    peer,
                    result: answer(c.kind),
                },
                _ => Event::CommandDone {
                    id: c.id,
                    outcome: Ok(()),
                    duration_ms: 1,
                },
            };
            node.handle(Timestamp(now), event);
            while let Some(o) = node.poll_output() {
                if let Output::Command(c) = o {
                    work.push_back(c);
                }
            }
        }
        if let Some(t) = node.poll_timeout() {
            now = now.max(t.as_millis());
            node.handle_timeout(Timestamp(now));
        }
    }
    (node, now)
}

#[test]
fn a_replica_and_a_master_in_steady_state_allocate_nothing() {
    let data = LocalFacts {
        data_dir: DataDir::Present {
            timeline: 1,
            lsn: Lsn(1),
            was_master: false,
        },
        postgres_running: false,
        fenced: false,
    };
    let replica_answers = |k: CommandKind| match k {
        CommandKind::ProbeLocal => ProbeResult::Replica {
            timeline: 1,
            replay_lsn: Lsn(5),
            upstream: Some(PeerId(0)),
        },
        _ => ProbeResult::Master {
            timeline: 1,
            lsn: Lsn(5),
        },
    };
    let (mut replica, mut now) = started(1, data, replica_answers);
    assert_eq!(
        replica.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    assert_eq!(
        steady(&mut replica, &mut now, 10_000, replica_answers),
        0,
        "replica allocated"
    );
    assert_eq!(
        replica.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );

    let master_answers = |k: CommandKind| match k {
        CommandKind::ProbeLocal => ProbeResult::Master {
            timeline: 1,
            lsn: Lsn(5),
        },
        _ => ProbeResult::Replica {
            timeline: 1,
            replay_lsn: Lsn(5),
            upstream: Some(PeerId(0)),
        },
    };
    let (mut master, mut now) = started(
        0,
        LocalFacts {
            postgres_running: true,
            ..data
        },
        master_answers,
    );
    assert_eq!(master.state(), State::Master);
    assert!(master.vip_held());
    assert_eq!(
        steady(&mut master, &mut now, 10_000, master_answers),
        0,
        "master allocated"
    );
}

#[test]
fn the_counting_allocator_does_count() {
    // Guards the test above against a counter that never moves.
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let v: Vec<u64> = std::hint::black_box(Vec::with_capacity(10));
    COUNTING.with(|c| c.set(false));
    drop(v);
    assert!(ALLOCATIONS.with(Cell::get) >= 1);
}

/// Drives a lease for `rounds` renewal rounds, etcd answering at once with `answer`, and
/// returns the allocations counted while doing it (the candidate choice runs every round).
fn lease_steady(
    lease: &mut lease::Lease,
    now: &mut u64,
    rounds: u32,
    answer: impl Fn(lease::LeaseOp) -> lease::EtcdReply,
) -> u64 {
    use lease::*;
    let name = |s| Name::new(s).unwrap();
    let members = [0, 1, 2].map(|i| MemberRecord {
        name: name(["db0", "db1", "db2"][i]),
        dc: name(if i == 2 { "west" } else { "east" }),
        nofailover: false,
        priority: i as i32,
        timeline: 1,
        received_lsn: Lsn(100),
        replayed_lsn: Lsn(90),
    });
    let rules = FailoverRules {
        primary_dc: name("east"),
        master_lsn: Lsn(100),
        maximum_lag: 10,
    };
    let mut ring: [Option<LeaseCommand>; 16] = [None; 16];
    let (mut head, mut tail) = (0usize, 0usize);
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    for _ in 0..rounds {
        loop {
            while let Some(o) = lease.poll_output() {
                match o {
                    LeaseOutput::Command(c) => {
                        ring[tail % 16] = Some(c);
                        tail += 1;
                    }
                    LeaseOutput::Decision(d) => panic!("steady state decided {d:?}"),
                }
            }
            if head == tail {
                break;
            }
            let c = ring[head % 16].take().unwrap();
            head += 1;
            *now += 2;
            let reply = answer(c.op);
            lease.handle(Timestamp(*now), LeaseEvent::Reply { id: c.id, reply });
        }
        let chosen = choose_candidate(&members, &rules).map(|m| m.name);
        assert_eq!(chosen, Ok(name("db1")));
        *now = lease.poll_timeout().expect("a round is due").as_millis();
        lease.handle_timeout(Timestamp(*now));
    }
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

/// Answers a lease's requests (and those they lead to) at `now` until it asks nothing more,
/// returning its decisions.
fn lease_settle(
    lease: &mut lease::Lease,
    now: u64,
    answer: impl Fn(lease::LeaseOp) -> lease::EtcdReply,
) -> Vec<lease::LeaseDecision> {
    let mut work = std::collections::VecDeque::new();
    let mut decisions = Vec::new();
    loop {
        while let Some(o) = lease.poll_output() {
            match o {
                lease::LeaseOutput::Command(c) => work.push_back(c),
                lease::LeaseOutput::Decision(d) => decisions.push(d),
            }
        }
        let Some(c) = work.pop_front() else {
            return decisions;
        };
        let reply = answer(c.op);
        lease.handle(Timestamp(now), lease::LeaseEvent::Reply { id: c.id, reply });
    }
}

#[test]
fn a_lease_holder_and_a_follower_in_steady_state_allocate_nothing() {
    use lease::*;
    let config = LeaseConfig {
        ttl_ms: 10_000,
        loop_wait_ms: 2_000,
        retry_timeout_ms: 3_000,
        margin_ms: 1_000,
    };
    let me = Name::new("db0").unwrap();
    let revision = Cell::new(10);
    let holder_answers = |op| match op {
        LeaseOp::Grant { ttl_ms } => EtcdReply::Granted {
            lease: LeaseId(1),
            ttl_ms,
        },
        LeaseOp::KeepAlive { .. } => EtcdReply::Alive { ttl_ms: 10_000 },
        LeaseOp::ReadKey => EtcdReply::Key(LeaderKey::Absent {
            revision: revision.get(),
        }),
        _ => {
            revision.set(revision.get() + 1);
            EtcdReply::TxnSucceeded {
                revision: revision.get(),
            }
        }
    };
    let mut holder = Lease::new(config, me);
    holder.handle(Timestamp(0), LeaseEvent::Candidate(true));
    holder.handle(Timestamp(0), LeaseEvent::Start);
    let taken = lease_settle(&mut holder, 1, holder_answers);
    assert!(
        matches!(
            taken[..],
            [
                LeaseDecision::NoLeader { .. },
                LeaseDecision::MayLead { .. }
            ]
        ),
        "{taken:?}"
    );
    let mut now = 1;
    assert_eq!(
        lease_steady(&mut holder, &mut now, 10_000, holder_answers),
        0,
        "holder allocated"
    );
    assert!(holder.may_write());

    let follower_answers = |op| match op {
        LeaseOp::Grant { ttl_ms } => EtcdReply::Granted {
            lease: LeaseId(2),
            ttl_ms,
        },
        LeaseOp::KeepAlive { .. } => EtcdReply::Alive { ttl_ms: 10_000 },
        _ => EtcdReply::Key(LeaderKey::Held {
            holder: me,
            revision: 10,
            created: 10,
        }),
    };
    let mut follower = Lease::new(config, Name::new("db1").unwrap());
    follower.handle(Timestamp(0), LeaseEvent::Start);
    let seen = lease_settle(&mut follower, 1, follower_answers);
    assert!(
        matches!(seen[..], [LeaseDecision::LeaderIs { name, .. }] if name == me),
        "{seen:?}"
    );
    let mut now = 1;
    assert_eq!(
        lease_steady(&mut follower, &mut now, 10_000, follower_answers),
        0,
        "follower allocated"
    );
    assert!(!follower.may_write());
}
