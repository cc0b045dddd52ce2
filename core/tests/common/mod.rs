//! The test harness shared by the core's scenario tests: a `Shell` that plays the shell and the
//! rest of the cluster for one `Node` on a virtual clock, and the facts and answers they use.
#![allow(dead_code)]

use pgha_core::*;

pub const SEC: u64 = 1000;

/// The test's shell: a node, a virtual clock and the commands it has asked for.
pub struct Shell {
    pub node: Node,
    pub now: Timestamp,
    /// Commands not yet answered, in order.
    pub pending: Vec<Command>,
    pub transitions: Vec<Transition>,
    pub all_commands: Vec<Command>,
    /// What each peer's daemon reports when probed (`None`: it does not answer).
    pub reports: [Option<PeerReport>; MAX_PEERS],
}

impl Shell {
    pub fn new(config: Config) -> Shell {
        Shell {
            node: Node::new(config),
            now: Timestamp::ZERO,
            pending: Vec::new(),
            transitions: Vec::new(),
            all_commands: Vec::new(),
            reports: [None; MAX_PEERS],
        }
    }

    pub fn drain(&mut self) {
        while let Some(o) = self.node.poll_output() {
            match o {
                Output::Transition(t) => self.transitions.push(t),
                Output::Command(c) => {
                    self.pending.push(c);
                    self.all_commands.push(c);
                }
            }
        }
    }

    pub fn handle(&mut self, event: Event) {
        self.node.handle(self.now, event);
        self.drain();
    }

    pub fn start(&mut self, facts: LocalFacts) {
        self.handle(Event::Started(facts));
    }

    /// Advances the clock to `t`, firing every deadline on the way.
    pub fn advance_to(&mut self, t: u64) {
        let t = Timestamp(t);
        while let Some(d) = self.node.poll_timeout() {
            if d > t {
                break;
            }
            self.now = d.max(self.now);
            self.node.handle_timeout(self.now);
            self.drain();
        }
        self.now = t;
    }

    pub fn take(&mut self, pred: impl Fn(&CommandKind) -> bool) -> Option<Command> {
        let i = self.pending.iter().position(|c| pred(&c.kind))?;
        Some(self.pending.remove(i))
    }

    /// Answers the pending action of this kind with success.
    pub fn complete(&mut self, pred: impl Fn(&CommandKind) -> bool) {
        let c = self.take(pred).expect("no such pending command");
        self.handle(Event::CommandDone {
            id: c.id,
            outcome: Ok(()),
            duration_ms: 100,
        });
    }

    pub fn fail(&mut self, pred: impl Fn(&CommandKind) -> bool, failure: Failure) {
        let c = self.take(pred).expect("no such pending command");
        self.handle(Event::CommandDone {
            id: c.id,
            outcome: Err(failure),
            duration_ms: 100,
        });
    }

    /// Answers every pending probe: the local one with `local`, every peer's with `peer`.
    /// `None` leaves it unanswered (the core times it out).
    pub fn answer_probes(&mut self, local: Option<ProbeResult>, peer: Option<ProbeResult>) {
        self.answer_with(|target| if target.is_none() { local } else { peer });
    }

    /// Answers every pending probe with `f(None)` for the local server, `f(Some(peer))` for a peer.
    pub fn answer_with(&mut self, f: impl Fn(Option<PeerId>) -> Option<ProbeResult>) {
        let probes: Vec<Command> = self
            .pending
            .iter()
            .copied()
            .filter(|c| c.kind.is_probe())
            .collect();
        self.pending.retain(|c| !c.kind.is_probe());
        for c in probes {
            match c.kind {
                CommandKind::ProbeLocal => {
                    if let Some(result) = f(None) {
                        self.handle(Event::LocalProbe { id: c.id, result });
                    }
                }
                CommandKind::ProbePeer(peer_id) => {
                    if let Some(result) = f(Some(peer_id)) {
                        self.handle(Event::PeerProbe {
                            id: c.id,
                            peer: peer_id,
                            result,
                        });
                    }
                }
                CommandKind::ProbePeerDaemon(peer) => {
                    let report = self.reports[peer.index()];
                    self.handle(Event::PeerDaemon {
                        id: c.id,
                        peer,
                        report,
                    });
                }
                _ => unreachable!(),
            }
        }
    }

    /// Runs for `ms` milliseconds answering every probe issued in that window as given (the
    /// probe issued at the window's last instant too).
    pub fn run(&mut self, ms: u64, local: Option<ProbeResult>, peer: Option<ProbeResult>) {
        self.run_with(ms, |target| if target.is_none() { local } else { peer });
    }

    pub fn run_with(&mut self, ms: u64, f: impl Fn(Option<PeerId>) -> Option<ProbeResult>) {
        let end = self.now.as_millis() + ms;
        while self.now.as_millis() < end {
            self.answer_with(&f);
            let next = self
                .node
                .poll_timeout()
                .map_or(end, |t| t.as_millis().min(end));
            self.advance_to(next.max(self.now.as_millis() + 1).min(end));
        }
        self.answer_with(&f);
    }

    pub fn state(&self) -> State {
        self.node.state()
    }

    /// The kinds of the pending commands that are not probes, in order.
    pub fn pending_actions(&self) -> Vec<CommandKind> {
        self.pending
            .iter()
            .map(|c| c.kind)
            .filter(|k| !k.is_probe())
            .collect()
    }

    pub fn has_pending(&self, pred: impl Fn(&CommandKind) -> bool) -> bool {
        self.pending.iter().any(|c| pred(&c.kind))
    }

    pub fn last_reason(&self) -> Reason {
        self.transitions.last().expect("no transition").reason
    }

    /// Whether the node ever asked for a command of this kind.
    pub fn ever(&self, pred: impl Fn(&CommandKind) -> bool) -> bool {
        self.all_commands.iter().any(|c| pred(&c.kind))
    }

    /// The reasons of every transition so far, in order.
    pub fn reasons(&self) -> Vec<Reason> {
        self.transitions.iter().map(|t| t.reason).collect()
    }
}

pub fn master(tl: u32) -> Option<ProbeResult> {
    Some(ProbeResult::Master {
        timeline: tl,
        lsn: Lsn(100),
    })
}

pub fn replica(tl: u32) -> Option<ProbeResult> {
    Some(ProbeResult::Replica {
        timeline: tl,
        replay_lsn: Lsn(100),
        upstream: Some(PeerId(0)),
    })
}

pub fn empty() -> LocalFacts {
    LocalFacts {
        data_dir: DataDir::Empty { held_data: false },
        postgres_running: false,
        fenced: false,
    }
}

pub fn with_data(tl: u32, was_master: bool) -> LocalFacts {
    LocalFacts {
        data_dir: DataDir::Present {
            timeline: tl,
            lsn: Lsn(50),
            was_master,
        },
        postgres_running: false,
        fenced: false,
    }
}

pub fn ha(index: u32) -> Config {
    let mut c = Config::ha_pair(
        &format!("db{index}"),
        index,
        &format!("db{}", 1 - index),
        1 - index,
    );
    c.vip = true;
    c
}

/// db1's config in a three-node star: db0 (peer 0) and db2 (peer 1), with the VIP.
pub fn star_db1() -> Config {
    let mut c = ha(1);
    c.topology = Topology::Star;
    c.peers.push(PeerConfig {
        name: "db2".into(),
        index: 2,
    });
    c
}

/// A replica of db0 in the Replica state at t = 0 + a few ms.
pub fn running_replica() -> Shell {
    let mut s = Shell::new(ha(1));
    s.start(with_data(1, false));
    s.answer_probes(None, master(1));
    s.complete(|k| matches!(k, CommandKind::StartPostgres(_)));
    s.answer_probes(replica(1), None);
    assert_eq!(
        s.state(),
        State::Replica {
            upstream: PeerId(0)
        }
    );
    s
}

pub fn running_master() -> Shell {
    running_master_with(ha(0))
}

/// The seed's split-brain rule (both masters stop), no longer the default.
pub fn both_stop(mut c: Config) -> Config {
    c.split_brain = SplitBrainRule::BothStop;
    c
}

/// db0 as master (bootstrapped by initdb) with `config`.
pub fn running_master_with(config: Config) -> Shell {
    let mut s = Shell::new(config);
    s.start(empty());
    s.advance_to(6 * SEC + 1);
    s.complete(|k| *k == CommandKind::InitDataDir);
    s.complete(|k| matches!(k, CommandKind::StartPostgres(StartAs::Master)));
    s.answer_probes(master(1), replica(1));
    assert_eq!(s.state(), State::Master);
    s
}
