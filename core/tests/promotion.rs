//! Races around a promotion, found by the end-to-end tests against real PostgreSQL (issue 4):
//! right after `pg_promote()` the node's timeline is new but not yet probed, and a local probe
//! issued before the promotion may answer "replica" after it.

use pgha_core::*;

fn star_db1() -> Config {
    let mut c = Config::ha_pair("db1", 1, "db0", 0);
    c.topology = Topology::Star;
    c.peers.push(PeerConfig {
        name: "db2".into(),
        index: 2,
    });
    c
}

struct N {
    node: Node,
    now: u64,
    pending: Vec<Command>,
}

impl N {
    fn drain(&mut self) {
        while let Some(o) = self.node.poll_output() {
            if let Output::Command(c) = o {
                self.pending.push(c);
            }
        }
    }
    fn handle(&mut self, e: Event) {
        self.node.handle(Timestamp(self.now), e);
        self.drain();
    }
    fn take(&mut self, pred: impl Fn(&CommandKind) -> bool) -> Command {
        let i = self
            .pending
            .iter()
            .rposition(|c| pred(&c.kind))
            .expect("no such command");
        self.pending.remove(i)
    }
    fn done(&mut self, pred: impl Fn(&CommandKind) -> bool) {
        let c = self.take(pred);
        self.handle(Event::CommandDone {
            id: c.id,
            outcome: Ok(()),
            duration_ms: 100,
        });
    }
    fn answer_local(&mut self, result: ProbeResult) {
        let c = self.take(|k| *k == CommandKind::ProbeLocal);
        self.handle(Event::LocalProbe { id: c.id, result });
    }
    fn answer_peer(&mut self, peer: u8, result: ProbeResult) {
        let c = self.take(|k| *k == CommandKind::ProbePeer(PeerId(peer)));
        self.handle(Event::PeerProbe {
            id: c.id,
            peer: PeerId(peer),
            result,
        });
    }
    /// The master (peer 0) answers its next probe "refused": it has stopped.
    fn master_stopped(&mut self) {
        while !self
            .pending
            .iter()
            .any(|c| c.kind == CommandKind::ProbePeer(PeerId(0)))
        {
            self.tick();
        }
        self.answer_peer(0, ProbeResult::Refused);
        // The next probe of it is in flight again.
        while !self
            .pending
            .iter()
            .any(|c| c.kind == CommandKind::ProbePeer(PeerId(0)))
        {
            self.tick();
        }
    }

    /// Advances to the next deadline (probes due) and fires it.
    fn tick(&mut self) {
        if let Some(t) = self.node.poll_timeout() {
            self.now = self.now.max(t.as_millis());
            self.node.handle_timeout(Timestamp(self.now));
            self.drain();
        }
    }
}

const M1: ProbeResult = ProbeResult::Master {
    timeline: 1,
    lsn: Lsn(100),
};
const M2: ProbeResult = ProbeResult::Master {
    timeline: 2,
    lsn: Lsn(200),
};
const R1: ProbeResult = ProbeResult::Replica {
    timeline: 1,
    replay_lsn: Lsn(100),
    upstream: Some(PeerId(0)),
};

/// db1, a star replica of db0 (peer 0), with db2 (peer 1) a replica too.
fn star_replica() -> N {
    let mut n = N {
        node: Node::new(star_db1()),
        now: 0,
        pending: Vec::new(),
    };
    n.handle(Event::Started(LocalFacts {
        data_dir: DataDir::Present {
            timeline: 1,
            lsn: Lsn(100),
            was_master: false,
        },
        postgres_running: true,
        fenced: false,
    }));
    n.answer_peer(0, M1);
    n.answer_peer(1, R1);
    n.answer_local(R1);
    assert!(matches!(n.node.state(), State::Replica { .. }));
    n
}

#[test]
fn a_just_promoted_master_does_not_step_down_before_it_knows_its_new_timeline() {
    let mut n = star_replica();
    n.tick();
    // The old master stopped (a switchover): the promote is accepted.
    n.master_stopped();
    n.handle(Event::Operator(OperatorRequest::Promote));
    n.done(|k| *k == CommandKind::Promote);
    assert_eq!(n.node.state(), State::Master);
    // The old master still answers on timeline 1 before the first local probe after the
    // promotion: this node's timeline (2) is newer, so it must keep serving.
    n.answer_peer(0, M1);
    assert_eq!(
        n.node.state(),
        State::Master,
        "stepped down on a stale timeline"
    );
    n.tick();
    n.answer_local(M2);
    assert_eq!(n.node.local_timeline(), Some(2));
    n.tick();
    let peer0 = n
        .pending
        .iter()
        .any(|c| c.kind == CommandKind::ProbePeer(PeerId(0)));
    if peer0 {
        n.answer_peer(0, M1);
    }
    assert_eq!(n.node.state(), State::Master, "the newer timeline yielded");
}

#[test]
fn a_local_probe_answered_as_replica_during_the_promotion_is_ignored() {
    let mut n = star_replica();
    n.master_stopped();
    // A local probe is in flight when the operator's promote arrives.
    assert!(n.pending.iter().any(|c| c.kind == CommandKind::ProbeLocal));
    let stale = n.take(|k| *k == CommandKind::ProbeLocal);
    n.handle(Event::Operator(OperatorRequest::Promote));
    n.done(|k| *k == CommandKind::Promote);
    assert_eq!(n.node.state(), State::Master);
    // It answers "replica" (it ran before pg_promote) after the promotion completed.
    n.handle(Event::LocalProbe {
        id: stale.id,
        result: R1,
    });
    assert_eq!(
        n.node.state(),
        State::Master,
        "a stale answer demoted the node"
    );
}
