//! The model of one node's PostgreSQL server and its data: copies of the cluster's history
//! (timeline, position, branch), a server that starts, stops, promotes and answers probes, and
//! asynchronous WAL shipping from a master to the replicas streaming from it.

use std::collections::VecDeque;

use pgha_core::{DataDir, Failure, Lsn, PeerId, ProbeResult, Timestamp};

use crate::world::World;

/// The longest simulated stop of a running server.
pub const STOP_MAX_MS: u64 = 1_000;

/// Asynchronous replication: a replica receives what its master wrote this long ago (what a
/// master that dies abruptly has not yet shipped is on no other node). A clean (fast) stop
/// ships everything first.
pub const REPLICATION_LAG_MS: u64 = 100;

/// One copy of a cluster's data. `branch` names the history it is on: a promotion starts a
/// new branch and remembers where it forked from, so the simulator knows which copies can
/// still follow which master (PostgreSQL's timeline history, made exact).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgData {
    pub timeline: u32,
    pub lsn: u64,
    pub branch: u32,
    pub ancestry: Vec<(u32, u64)>,
    pub was_master: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgRole {
    Master,
    Replica { upstream: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    StartingUp,
    Up,
    ShuttingDown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgRun {
    pub role: PgRole,
    pub phase: Phase,
}

/// How a branch of history began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchKind {
    /// initdb (or the data a seed starts from).
    Initdb,
    /// `pg_promote()` of a replica: `automatic` when the core promoted on its own (not an
    /// operator's `promote`, not a promotion outside pgha).
    Promotion { automatic: bool },
    /// A master wrote on data behind the furthest copy of its history (a node led on less
    /// than all of it: one timeline, two histories). `in_sight`: the nodes whose daemon its
    /// core could ask when it decided to lead (a bit per node).
    Diverged { in_sight: u32 },
}

/// One branch of the cluster's history (see [`PgData::branch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Branch {
    /// The branch and position it forked from.
    pub parent: Option<(u32, u64)>,
    pub created: Timestamp,
    /// The node whose data started it.
    pub by: usize,
    pub kind: BranchKind,
    /// The furthest position any copy reached on it.
    pub tip: u64,
}

/// One node's PostgreSQL server and data directory: what the shell's actions do to them and
/// what a probe finds. The simulator keeps one per node (the network, the other nodes and the
/// history's branches are the world's); `pgha journal what-if` runs the alternate node's
/// local postgres on it.
#[derive(Clone, Debug, Default)]
pub struct Postgres {
    /// The data directory (`None`: empty).
    pub data: Option<PgData>,
    /// The data directory has held data (an initdb now would be a data loss).
    pub held_data: bool,
    /// The server, while it runs.
    pub run: Option<PgRun>,
    /// The postmaster is stopped (SIGSTOP): no new connection, no answer, a `pg_ctl stop`
    /// takes effect when it resumes.
    pub hung: bool,
    /// Every process of the server is stopped too (its backends and walsenders): nothing is
    /// written or shipped. Without it a hung postmaster's backends keep serving the client
    /// sessions they already have, and its walsenders keep streaming.
    pub frozen: bool,
    /// An immediate stop killed the backends of the hung postmaster (the shell kills every
    /// process of the cluster): nothing is written or shipped until it runs again.
    pub backends_killed: bool,
    pub(crate) kill_backends_at: Option<Timestamp>,
    /// Client sessions fill every connection slot: a probe of the running server gets
    /// "too many clients" (it is alive). Commands are unaffected: the shell promotes and
    /// reloads with `pg_ctl` when SQL cannot connect, and basebackups use walsender slots.
    pub exhausted: bool,
    /// pg_ctl stop signalled a stopped (hung) postmaster: it stops as soon as it resumes.
    pub(crate) stop_signalled: bool,
    /// What its walsenders shipped: all up to `shipped`, not yet the positions in `unshipped`.
    pub(crate) shipped: u64,
    pub(crate) unshipped: VecDeque<(Timestamp, u64)>,
}

impl Postgres {
    /// The data directory as a starting daemon finds it.
    pub fn data_dir(&self) -> DataDir {
        match &self.data {
            None => DataDir::Empty {
                held_data: self.held_data,
            },
            Some(d) => DataDir::Present {
                timeline: d.timeline,
                lsn: Lsn(d.lsn),
                was_master: d.was_master,
            },
        }
    }

    /// What a probe finds now; `None` for no answer at all. `peer` names a node as one of
    /// the prober's peers (the upstream a replica reports).
    pub fn probe(&self, peer: impl Fn(usize) -> Option<PeerId>) -> Option<ProbeResult> {
        let Some(run) = self.run else {
            return Some(ProbeResult::Refused);
        };
        if self.hung {
            return None;
        }
        if self.exhausted && run.phase == Phase::Up {
            return Some(ProbeResult::Overloaded);
        }
        let data = self.data.as_ref()?;
        Some(match run.phase {
            Phase::StartingUp => ProbeResult::StartingUp,
            Phase::ShuttingDown => ProbeResult::ShuttingDown,
            Phase::Up => match run.role {
                PgRole::Master => ProbeResult::Master {
                    timeline: data.timeline,
                    lsn: Lsn(data.lsn),
                },
                PgRole::Replica { upstream } => ProbeResult::Replica {
                    timeline: data.timeline,
                    replay_lsn: Lsn(data.lsn),
                    upstream: peer(upstream),
                },
            },
        })
    }

    /// An up master whose postmaster answers.
    pub fn up_master(&self) -> bool {
        !self.hung
            && matches!(
                self.run,
                Some(PgRun {
                    role: PgRole::Master,
                    phase: Phase::Up
                })
            )
    }

    /// `pg_ctl start` begins: a stopped server with data starts up as `role`. Whether it began.
    pub fn begin_start(&mut self, role: PgRole) -> bool {
        if self.run.is_some() || self.data.is_none() {
            return false;
        }
        self.run = Some(PgRun {
            role,
            phase: Phase::StartingUp,
        });
        true
    }

    /// `pg_ctl start` ends: the server starting up is up (it fails when none was).
    pub fn finish_start(&mut self) -> Result<(), Failure> {
        match self.run {
            Some(PgRun {
                phase: Phase::StartingUp,
                role,
            }) if self.data.is_some() => {
                self.run = Some(PgRun {
                    role,
                    phase: Phase::Up,
                });
                if let Some(d) = self.data.as_mut() {
                    d.was_master = role == PgRole::Master;
                }
                self.reset_wal();
                Ok(())
            }
            _ => Err(Failure::Exit(1)),
        }
    }

    /// `pg_ctl stop` begins: a running server shuts down; a stopped postmaster's cluster is
    /// killed by `kill_at` (the shell kills every process of it, the postmaster too: SIGKILL
    /// reaches a stopped process, for a fast stop as well: the postmaster could never act on
    /// it).
    pub fn begin_stop(&mut self, kill_at: Timestamp) {
        if self.hung {
            if self.run.is_some() {
                self.kill_backends_at = Some(kill_at);
            }
        } else if let Some(run) = self.run.as_mut() {
            run.phase = Phase::ShuttingDown;
        }
    }

    /// A failed stop leaves the server running.
    pub fn stop_failed(&mut self) {
        if let Some(r) = self.run.as_mut() {
            r.phase = Phase::Up;
        }
    }

    /// The server is gone (killed, stopped, powered off).
    pub fn stop(&mut self) {
        self.run = None;
        self.hung = false;
        self.frozen = false;
        self.stop_signalled = false;
        self.backends_killed = false;
        self.kill_backends_at = None;
    }

    /// Whether `pg_promote()` succeeds: a running, answering replica.
    pub fn can_promote(&self) -> bool {
        !self.hung
            && matches!(
                self.run,
                Some(PgRun {
                    role: PgRole::Replica { .. },
                    phase: Phase::Up
                })
            )
    }

    /// `pg_promote()`: master on the next timeline, on `branch` (forked from where it was).
    pub fn promote(&mut self, branch: u32) {
        if let Some(d) = self.data.as_mut() {
            d.ancestry.push((d.branch, d.lsn));
            d.branch = branch;
            d.timeline += 1;
            d.was_master = true;
        }
        self.run = Some(PgRun {
            role: PgRole::Master,
            phase: Phase::Up,
        });
        // The new master ships its own writes from here; its replicas have the rest.
        self.reset_wal();
    }

    /// initdb into the empty data directory: timeline 1 on `branch`.
    pub fn initdb(&mut self, branch: u32) {
        self.data = Some(PgData {
            timeline: 1,
            lsn: 100,
            branch,
            ancestry: Vec::new(),
            was_master: false,
        });
        self.held_data = true;
    }

    /// A basebackup's copy replaces the data directory; the replaced data is returned (the
    /// shell sets it aside).
    pub fn replace_data(&mut self, mut copy: PgData) -> Option<PgData> {
        copy.was_master = false;
        let old = self.data.replace(copy);
        self.reset_wal();
        self.held_data = true;
        old
    }

    /// A running replica follows another upstream.
    pub fn follow(&mut self, to: usize) -> Result<(), Failure> {
        match self.run.as_mut() {
            Some(PgRun {
                role: PgRole::Replica { upstream },
                ..
            }) => {
                *upstream = to;
                Ok(())
            }
            _ => Err(Failure::Exit(1)),
        }
    }

    /// Whether its walsenders ship WAL to the replicas already connected.
    pub fn shipping(&self) -> bool {
        matches!(
            self.run,
            Some(PgRun {
                role: PgRole::Master,
                ..
            })
        ) && !self.frozen
            && !self.backends_killed
    }

    /// What it has shipped by `now`: all it wrote up to `REPLICATION_LAG_MS` before.
    pub(crate) fn shipped(&mut self, now: Timestamp) -> u64 {
        while let Some(&(t, lsn)) = self.unshipped.front() {
            if t.plus(REPLICATION_LAG_MS) > now {
                break;
            }
            self.shipped = lsn;
            self.unshipped.pop_front();
        }
        self.shipped
    }

    /// Everything its data holds counts as shipped (a new run, a clean stop).
    pub(crate) fn reset_wal(&mut self) {
        self.unshipped.clear();
        self.shipped = self.data.as_ref().map_or(0, |d| d.lsn);
    }
}

/// Whether data `d` holds position `p` of branch `b` (its history passes through it).
pub(crate) fn holds(d: &PgData, b: u32, p: u64) -> bool {
    (d.branch == b && p <= d.lsn) || d.ancestry.iter().any(|&(ab, fork)| ab == b && p <= fork)
}

impl World {
    /// What a probe from `from` of `target` finds now; `None` for no answer at all.
    pub(crate) fn probe_result(&self, from: usize, target: usize) -> Option<ProbeResult> {
        let peer_of = &self.nodes[from].peer_of;
        self.nodes[target].pg.probe(|n| {
            peer_of
                .iter()
                .position(|&x| x == n)
                .map(|k| PeerId(k as u8))
        })
    }

    /// `pg_promote()` on node `i`'s postgres: a running, answering replica becomes master on
    /// a new timeline.
    pub(crate) fn promote_pg(&mut self, i: usize, automatic: bool) -> Result<(), Failure> {
        if !self.nodes[i].pg.can_promote() {
            return Err(Failure::Exit(1));
        }
        let branch = self.new_branch(i, BranchKind::Promotion { automatic });
        self.nodes[i].pg.promote(branch);
        self.nodes[i].master_since = self.now;
        Ok(())
    }

    /// Starts a branch of history from node `i`'s data (from nothing for initdb).
    pub(crate) fn new_branch(&mut self, i: usize, kind: BranchKind) -> u32 {
        self.next_branch += 1;
        let parent = self.nodes[i].pg.data.as_ref().map(|d| (d.branch, d.lsn));
        let tip = self.nodes[i].pg.data.as_ref().map_or(0, |d| d.lsn);
        while self.branches.len() < self.next_branch as usize {
            let unused = self.branches[0];
            self.branches.push(unused);
        }
        self.branches.push(Branch {
            parent: if kind == BranchKind::Initdb {
                None
            } else {
                parent
            },
            created: self.now,
            by: i,
            kind,
            tip,
        });
        self.next_branch
    }

    /// Node `i`'s postgres is gone (killed, stopped, powered off), with its sessions.
    pub(crate) fn stop_pg(&mut self, i: usize) {
        self.nodes[i].pg.stop();
        self.nodes[i].sessions = false;
    }

    /// Masters write (the client's sessions, acknowledged); replicas that can stream receive
    /// what was written `REPLICATION_LAG_MS` ago and follow timeline switches.
    pub(crate) fn advance_replication(&mut self) {
        let elapsed = self.now.since(self.last_lsn_tick);
        self.last_lsn_tick = self.now;
        let now = self.now;
        for i in 0..self.nodes.len() {
            let add = elapsed / 10;
            if add == 0 || !self.writing(i) {
                continue;
            }
            self.fork_if_behind(i);
            let node = &mut self.nodes[i];
            let Some(d) = node.pg.data.as_mut() else {
                continue;
            };
            let (from, branch) = (d.lsn, d.branch);
            d.lsn += add;
            let to = d.lsn;
            node.pg.unshipped.push_back((now, to));
            let tip = &mut self.branches[branch as usize].tip;
            *tip = (*tip).max(to);
            if self.nodes[i].sessions {
                self.record_write(i, branch, from, to);
            }
        }
        for i in 0..self.nodes.len() {
            let Some(PgRun {
                role: PgRole::Replica { upstream },
                phase: Phase::Up,
            }) = self.nodes[i].pg.run
            else {
                continue;
            };
            if self.master_shipping(upstream) {
                let upto = self.shipped(upstream);
                self.receive(i, upstream, upto);
            }
        }
    }

    /// Whether node `i`'s postgres writes: an up master not frozen (a hung postmaster's
    /// backends write only for the sessions they serve).
    pub(crate) fn writing(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        self.master_shipping(i)
            && n.pg.run.is_some_and(|r| r.phase == Phase::Up)
            && (!n.pg.hung || n.sessions)
    }

    /// Whether node `i`'s walsenders ship WAL to the replicas already connected.
    pub(crate) fn master_shipping(&self, i: usize) -> bool {
        self.nodes[i].pg.shipping()
    }

    /// What node `i` has shipped: all it wrote up to `REPLICATION_LAG_MS` ago.
    pub(crate) fn shipped(&mut self, i: usize) -> u64 {
        let now = self.now;
        self.nodes[i].pg.shipped(now)
    }

    /// Ships all of master `m`'s WAL to the replicas streaming from it (a clean stop).
    pub(crate) fn stream_to_replicas(&mut self, m: usize) {
        let upto = self.shipped(m);
        for i in 0..self.nodes.len() {
            if self.nodes[i].pg.run
                == Some(PgRun {
                    role: PgRole::Replica { upstream: m },
                    phase: Phase::Up,
                })
            {
                self.receive(i, m, upto);
            }
        }
    }

    /// Replica `i` receives its upstream's WAL up to `upto`, if it can connect and its data is
    /// on the upstream's history.
    pub(crate) fn receive(&mut self, i: usize, upstream: usize, upto: u64) {
        // A replica whose postmaster alone is stopped keeps receiving and replaying.
        if self.nodes[i].pg.frozen || self.cut(i, upstream) {
            return;
        }
        let (Some(m), Some(r)) = (
            self.nodes[upstream].pg.data.as_ref(),
            self.nodes[i].pg.data.as_ref(),
        ) else {
            return;
        };
        let upto = upto.min(m.lsn);
        let follows = (r.branch == m.branch && r.lsn <= m.lsn)
            || m.ancestry
                .iter()
                .any(|&(b, fork)| b == r.branch && r.lsn <= fork);
        if !follows {
            return;
        }
        let tl = m.timeline;
        if r.branch == m.branch {
            if upto > r.lsn
                && let Some(r) = self.nodes[i].pg.data.as_mut()
            {
                r.lsn = upto;
                r.was_master = false;
            }
        } else {
            let copy = PgData {
                lsn: upto.max(r.lsn),
                was_master: false,
                ..m.clone()
            };
            self.nodes[i].pg.data = Some(copy);
        }
        self.nodes[i].followed_timeline = self.nodes[i].followed_timeline.max(tl);
    }

    /// A master about to write on data behind the furthest copy of its history (it led on
    /// less than all of it) starts a branch: one timeline, two histories.
    pub(crate) fn fork_if_behind(&mut self, i: usize) {
        let Some(d) = self.nodes[i].pg.data.as_ref() else {
            return;
        };
        if d.lsn >= self.branches[d.branch as usize].tip {
            return;
        }
        let in_sight = self.nodes[i].lead_in_sight;
        let branch = self.new_branch(i, BranchKind::Diverged { in_sight });
        if let Some(d) = self.nodes[i].pg.data.as_mut() {
            d.ancestry.push((d.branch, d.lsn));
            d.branch = branch;
        }
    }
}
