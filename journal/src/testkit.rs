//! A tiny scripted cluster for tests, examples and benchmarks: real [`pgha_core::Node`]s,
//! each driven through a [`Recorder`], against simulated postgres servers that answer
//! probes and carry out commands after fixed delays. Faults are applied by the test between
//! [`Cluster::run_until`] calls. (The seeded fault simulator is `pgha-sim`; this one is small
//! and predictable so that snapshot tests of `explain` stay stable.)

use std::path::{Path, PathBuf};

use pgha_core::{
    Command, CommandKind, Config, DataDir, Event, Input, LocalFacts, Lsn, OperatorRequest, PeerId,
    ProbeResult, StartAs, Timeline, Timestamp,
};

use crate::{Header, JournalError, Options, Recorder};

/// What a simulated postgres is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pg {
    Down,
    Master {
        timeline: Timeline,
    },
    Replica {
        timeline: Timeline,
        upstream: usize,
    },
    /// Accepts connections, never answers.
    Hung,
}

/// One simulated node: its daemon (a recorder), postgres and data dir.
#[derive(Debug)]
pub struct SimNode {
    pub rec: Option<Recorder>,
    pub config: Config,
    pub path: Option<PathBuf>,
    pub pg: Pg,
    pub data: DataDir,
    pub fenced: bool,
    pub daemon_up: bool,
    /// Whether the host answers on the network at all.
    pub reachable: bool,
    /// This node's wall clock minus the true time, in ms.
    pub skew_ms: i64,
    daemon: u32,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Deliver(Input),
    Done { cmd: Command, ok: bool, took: u64 },
}

#[derive(Debug)]
struct Pending {
    at: Timestamp,
    order: u64,
    node: usize,
    daemon: u32,
    action: Action,
}

/// A cluster of simulated nodes.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<SimNode>,
    pub now: Timestamp,
    /// The true wall-clock time at `now = 0`.
    pub wall_base: u64,
    pending: Vec<Pending>,
    order: u64,
    /// Per command kind name, a failure to inject once.
    pub fail_next: Vec<&'static str>,
    pub options: Options,
    pub steps: u64,
}

/// 2024-05-01 10:30:00 UTC.
pub const WALL_BASE: u64 = 1_714_559_400_000;

impl Cluster {
    /// Two nodes of the HA topology, `db0` (index 0) and `db1`, with `tune` applied to both
    /// configs. Journals go to `dir/db0.journal` and `dir/db1.journal`, or memory.
    pub fn ha_pair(dir: Option<&Path>, tune: impl Fn(&mut Config)) -> Cluster {
        let mut nodes = Vec::new();
        for (i, (name, peer)) in [("db0", "db1"), ("db1", "db0")].into_iter().enumerate() {
            let mut config = Config::ha_pair(name, i as u32, peer, 1 - i as u32);
            tune(&mut config);
            nodes.push(SimNode {
                rec: None,
                config,
                path: dir.map(|d| d.join(format!("{name}.journal"))),
                pg: Pg::Down,
                data: DataDir::Empty { held_data: false },
                fenced: false,
                daemon_up: false,
                reachable: true,
                skew_ms: 0,
                daemon: 0,
            });
        }
        Cluster {
            nodes,
            now: Timestamp::ZERO,
            wall_base: WALL_BASE,
            pending: Vec::new(),
            order: 0,
            fail_next: Vec::new(),
            options: Options::default(),
            steps: 0,
        }
    }

    /// The other node a peer id names (peers are the other nodes in index order).
    fn peer_node(&self, i: usize, p: PeerId) -> usize {
        let mut others = (0..self.nodes.len()).filter(|&j| j != i);
        others.nth(p.index()).unwrap_or(i)
    }

    fn wall(&self, i: usize) -> u64 {
        (self.wall_base as i64 + self.now.0 as i64 + self.nodes[i].skew_ms).max(0) as u64
    }

    /// Starts (or restarts) node `i`'s daemon: a new run, fed `Started` with its local facts.
    pub fn start(&mut self, i: usize) -> Result<(), JournalError> {
        let n = &mut self.nodes[i];
        let header = Header::new(
            n.config.clone(),
            format!("# pgha.toml of {}\n", n.config.name),
        );
        let rec = match (n.rec.take(), &n.path) {
            (Some(r), None) => r.restart(header)?,
            (Some(r), Some(p)) => {
                drop(r);
                Recorder::open_append(p, header)?
            }
            (None, Some(p)) => Recorder::open(p, header)?,
            (None, None) => Recorder::in_memory(header)?,
        };
        n.rec = Some(rec.with_options(self.options.clone()));
        n.daemon_up = true;
        n.daemon += 1;
        let facts = LocalFacts {
            data_dir: n.data,
            postgres_running: !matches!(n.pg, Pg::Down),
            fenced: n.fenced,
        };
        self.step(i, Input::Event(Event::Started(facts)))
    }

    /// Stops node `i`'s daemon (postgres keeps running).
    pub fn crash_daemon(&mut self, i: usize) {
        self.nodes[i].daemon_up = false;
    }

    pub fn kill_postgres(&mut self, i: usize) {
        self.nodes[i].pg = Pg::Down;
    }

    pub fn operator(&mut self, i: usize, req: OperatorRequest) -> Result<(), JournalError> {
        self.step(i, Input::Event(Event::Operator(req)))
    }

    fn step(&mut self, i: usize, input: Input) -> Result<(), JournalError> {
        let now = self.now;
        let wall = self.wall(i);
        if !self.nodes[i].daemon_up {
            return Ok(());
        }
        let Some(rec) = self.nodes[i].rec.as_mut() else {
            return Ok(());
        };
        let step = rec.step(now, wall, input)?;
        self.steps += 1;
        for c in step.commands {
            self.carry_out(i, c);
        }
        Ok(())
    }

    fn push(&mut self, at: Timestamp, node: usize, action: Action) {
        self.order += 1;
        let daemon = self.nodes[node].daemon;
        self.pending.push(Pending {
            at,
            order: self.order,
            node,
            daemon,
            action,
        });
    }

    fn probe_result(&self, j: usize) -> Option<ProbeResult> {
        let lsn = Lsn(0x300_0000 + self.now.0 * 16);
        Some(match self.nodes[j].pg {
            Pg::Down => ProbeResult::Refused,
            Pg::Hung => return None,
            Pg::Master { timeline } => ProbeResult::Master { timeline, lsn },
            Pg::Replica { timeline, upstream } => ProbeResult::Replica {
                timeline,
                replay_lsn: lsn,
                upstream: Some(PeerId(
                    if upstream < j { upstream } else { upstream - 1 } as u8
                )),
            },
        })
    }

    fn carry_out(&mut self, i: usize, c: Command) {
        let now = self.now;
        match c.kind {
            CommandKind::ProbeLocal => {
                if let Some(result) = self.probe_result(i) {
                    self.push(
                        now.plus(3),
                        i,
                        Action::Deliver(Input::Event(Event::LocalProbe { id: c.id, result })),
                    );
                }
            }
            CommandKind::ProbePeer(p) => {
                let j = self.peer_node(i, p);
                if self.nodes[j].reachable
                    && self.nodes[i].reachable
                    && let Some(result) = self.probe_result(j)
                {
                    self.push(
                        now.plus(12),
                        i,
                        Action::Deliver(Input::Event(Event::PeerProbe {
                            id: c.id,
                            peer: p,
                            result,
                        })),
                    );
                }
            }
            CommandKind::ProbePeerDaemon(p) => {
                // A refused connection when its daemon is down; no answer at all (the core
                // times the probe out) when either host is cut off.
                let j = self.peer_node(i, p);
                if self.nodes[j].reachable && self.nodes[i].reachable {
                    let report = match (&self.nodes[j].rec, self.nodes[j].daemon_up) {
                        (Some(r), true) => Some(r.node().report()),
                        _ => None,
                    };
                    self.push(
                        now.plus(12),
                        i,
                        Action::Deliver(Input::Event(Event::PeerDaemon {
                            id: c.id,
                            peer: p,
                            report,
                        })),
                    );
                }
            }
            kind => {
                let took = match kind {
                    CommandKind::InitDataDir => 800,
                    CommandKind::StartPostgres(_) => 1_200,
                    CommandKind::StopPostgres(_) => 400,
                    CommandKind::Basebackup { .. } => 2_500,
                    CommandKind::Promote => 250,
                    _ => 20,
                };
                let ok = match self.fail_next.iter().position(|k| *k == kind.name()) {
                    Some(p) => {
                        self.fail_next.remove(p);
                        false
                    }
                    None => true,
                };
                self.push(now.plus(took), i, Action::Done { cmd: c, ok, took });
            }
        }
    }

    fn effect(&mut self, i: usize, c: Command) {
        let n = &mut self.nodes[i];
        let timeline = match n.data {
            DataDir::Present { timeline, .. } => timeline,
            DataDir::Empty { .. } => 1,
        };
        match c.kind {
            CommandKind::InitDataDir => {
                n.data = DataDir::Present {
                    timeline: 1,
                    lsn: Lsn(0),
                    was_master: true,
                }
            }
            CommandKind::StartPostgres(StartAs::Master) => n.pg = Pg::Master { timeline },
            CommandKind::StartPostgres(StartAs::Replica { upstream }) => {
                let up = self.peer_node(i, upstream);
                self.nodes[i].pg = Pg::Replica {
                    timeline,
                    upstream: up,
                };
                if let DataDir::Present { was_master, .. } = &mut self.nodes[i].data {
                    *was_master = false;
                }
            }
            CommandKind::StopPostgres(_) => n.pg = Pg::Down,
            CommandKind::Promote => {
                n.pg = Pg::Master {
                    timeline: timeline + 1,
                };
                n.data = DataDir::Present {
                    timeline: timeline + 1,
                    lsn: Lsn(0),
                    was_master: true,
                };
            }
            CommandKind::Basebackup { from } => {
                let j = self.peer_node(i, from);
                let tl = match self.nodes[j].pg {
                    Pg::Master { timeline } | Pg::Replica { timeline, .. } => timeline,
                    _ => 1,
                };
                self.nodes[i].data = DataDir::Present {
                    timeline: tl,
                    lsn: Lsn(0),
                    was_master: false,
                };
            }
            CommandKind::Fence => n.fenced = true,
            CommandKind::Unfence => n.fenced = false,
            _ => {}
        }
    }

    /// Runs every node until `until` (virtual ms).
    pub fn run_until(&mut self, until: Timestamp) -> Result<(), JournalError> {
        loop {
            let mut next: Option<Timestamp> = None;
            for p in &self.pending {
                next = Some(next.map_or(p.at, |n| n.min(p.at)));
            }
            for n in &self.nodes {
                if n.daemon_up
                    && let Some(t) = n.rec.as_ref().and_then(|r| r.node().poll_timeout())
                {
                    next = Some(next.map_or(t, |x| x.min(t)));
                }
            }
            let Some(t) = next.filter(|t| *t <= until) else {
                self.now = until;
                return Ok(());
            };
            self.now = t.max(self.now);
            // Deliveries first, in order; then timers.
            let mut due: Vec<Pending> = Vec::new();
            let mut rest = Vec::new();
            for p in self.pending.drain(..) {
                if p.at <= self.now {
                    due.push(p)
                } else {
                    rest.push(p)
                }
            }
            self.pending = rest;
            due.sort_by_key(|p| (p.at, p.order));
            for p in due {
                match p.action {
                    Action::Deliver(input) => {
                        if self.nodes[p.node].daemon == p.daemon {
                            self.step(p.node, input)?;
                        }
                    }
                    Action::Done { cmd, ok, took } => {
                        if ok {
                            self.effect(p.node, cmd);
                        }
                        if self.nodes[p.node].daemon == p.daemon {
                            let outcome = if ok {
                                Ok(())
                            } else {
                                Err(pgha_core::Failure::Exit(1))
                            };
                            self.step(
                                p.node,
                                Input::Event(Event::CommandDone {
                                    id: cmd.id,
                                    outcome,
                                    duration_ms: took,
                                }),
                            )?;
                        }
                    }
                }
            }
            for i in 0..self.nodes.len() {
                let due = self.nodes[i].daemon_up
                    && self.nodes[i]
                        .rec
                        .as_ref()
                        .and_then(|r| r.node().poll_timeout())
                        .is_some_and(|d| d <= self.now);
                if due {
                    self.step(i, Input::Timeout)?;
                }
            }
        }
    }

    /// Runs for `ms` more.
    pub fn run_for(&mut self, ms: u64) -> Result<(), JournalError> {
        let t = self.now.plus(ms);
        self.run_until(t)
    }

    pub fn recorder(&self, i: usize) -> Option<&Recorder> {
        self.nodes[i].rec.as_ref()
    }

    /// Bootstraps a fresh pair to steady state: db0 master, db1 its replica.
    pub fn bootstrap(&mut self) -> Result<(), JournalError> {
        self.start(0)?;
        self.start(1)?;
        self.run_for(30_000)
    }
}
