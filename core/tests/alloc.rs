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
