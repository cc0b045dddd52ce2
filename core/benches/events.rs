//! Events per second through the core, in steady state and in a failover-heavy mix.
//! A benchmark, not a test: it reports medians of repeated runs and never fails on noise.
//!
//! `cargo bench -p pgha-core --bench events`

// The benchmark measures wall time around the core; the core itself never reads a clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use pgha_core::*;

/// One steady-state round per probe interval: answer the replica's local and peer probes,
/// then fire its timer. Returns the number of core inputs fed.
fn replica_rounds(rounds: u64) -> u64 {
    let mut c = Config::ha_pair("db1", 1, "db0", 0);
    c.vip = true;
    let mut node = Node::new(c);
    let facts = LocalFacts {
        data_dir: DataDir::Present {
            timeline: 1,
            lsn: Lsn(1),
            was_master: false,
        },
        postgres_running: true,
        fenced: false,
    };
    let mut now = 0u64;
    let mut inputs = 0u64;
    node.handle(Timestamp(now), Event::Started(facts));
    inputs += 1;
    let mut ring: [Option<Command>; 64] = [None; 64];
    let (mut head, mut tail) = (0usize, 0usize);
    for _ in 0..rounds {
        loop {
            while let Some(o) = node.poll_output() {
                if let Output::Command(c) = o {
                    ring[tail % 64] = Some(c);
                    tail += 1;
                }
            }
            if head == tail {
                break;
            }
            let c = ring[head % 64].take().unwrap();
            head += 1;
            now += 1;
            let event = match c.kind {
                CommandKind::ProbeLocal => Event::LocalProbe {
                    id: c.id,
                    result: ProbeResult::Replica {
                        timeline: 1,
                        replay_lsn: Lsn(now),
                        upstream: Some(PeerId(0)),
                    },
                },
                CommandKind::ProbePeer(peer) => Event::PeerProbe {
                    id: c.id,
                    peer,
                    result: ProbeResult::Master {
                        timeline: 1,
                        lsn: Lsn(now),
                    },
                },
                _ => Event::CommandDone {
                    id: c.id,
                    outcome: Ok(()),
                    duration_ms: 1,
                },
            };
            node.handle(Timestamp(now), black_box(event));
            inputs += 1;
        }
        now = node.poll_timeout().unwrap().as_millis();
        node.handle_timeout(Timestamp(now));
        inputs += 1;
    }
    black_box(node.state());
    inputs
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let runs = 11;
    let rounds = 200_000;
    let mut rates = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let inputs = replica_rounds(rounds);
        rates.push(inputs as f64 / t.elapsed().as_secs_f64());
    }
    let (med, min, max) = median(rates);
    println!(
        "core steady state (replica: local + peer probe + timer per round), {runs} runs of {rounds} rounds: \
         median {:.2} M inputs/s (min {:.2}, max {:.2}), {:.0} ns per input",
        med / 1e6,
        min / 1e6,
        max / 1e6,
        1e9 / med
    );
}
