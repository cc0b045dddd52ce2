//! The model of one node's PostgreSQL server and its data: copies of the cluster's history
//! (timeline, position, branch), a server that starts, stops, promotes and answers probes, and
//! asynchronous WAL shipping from a master to the replicas streaming from it.

use pgha_core::{Failure, Lsn, PeerId, ProbeResult, Timestamp};

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

/// Whether data `d` holds position `p` of branch `b` (its history passes through it).
pub(crate) fn holds(d: &PgData, b: u32, p: u64) -> bool {
    (d.branch == b && p <= d.lsn) || d.ancestry.iter().any(|&(ab, fork)| ab == b && p <= fork)
}

impl World {
    /// What a probe from `from` of `target` finds now; `None` for no answer at all.
    pub(crate) fn probe_result(&self, from: usize, target: usize) -> Option<ProbeResult> {
        let t = &self.nodes[target];
        let Some(run) = t.pg else {
            return Some(ProbeResult::Refused);
        };
        if t.hung {
            return None;
        }
        if t.exhausted && run.phase == Phase::Up {
            return Some(ProbeResult::Overloaded);
        }
        let data = t.data.as_ref()?;
        Some(match run.phase {
            Phase::StartingUp => ProbeResult::StartingUp,
            Phase::ShuttingDown => ProbeResult::ShuttingDown,
            Phase::Up => match run.role {
                PgRole::Master => ProbeResult::Master {
                    timeline: data.timeline,
                    lsn: Lsn(data.lsn),
                },
                PgRole::Replica { upstream } => {
                    let upstream = self.nodes[from]
                        .peer_of
                        .iter()
                        .position(|&n| n == upstream)
                        .map(|k| PeerId(k as u8));
                    ProbeResult::Replica {
                        timeline: data.timeline,
                        replay_lsn: Lsn(data.lsn),
                        upstream,
                    }
                }
            },
        })
    }

    /// `pg_promote()` on node `i`'s postgres: a running, answering replica becomes master on
    /// a new timeline.
    pub(crate) fn promote_pg(&mut self, i: usize, automatic: bool) -> Result<(), Failure> {
        let node = &self.nodes[i];
        let ok = !node.hung
            && matches!(
                node.pg,
                Some(PgRun {
                    role: PgRole::Replica { .. },
                    phase: Phase::Up
                })
            );
        if !ok {
            return Err(Failure::Exit(1));
        }
        let branch = self.new_branch(i, BranchKind::Promotion { automatic });
        let node = &mut self.nodes[i];
        if let Some(d) = node.data.as_mut() {
            d.ancestry.push((d.branch, d.lsn));
            d.branch = branch;
            d.timeline += 1;
            d.was_master = true;
        }
        node.pg = Some(PgRun {
            role: PgRole::Master,
            phase: Phase::Up,
        });
        node.master_since = self.now;
        // The new master ships its own writes from here; its replicas have the rest.
        self.reset_wal(i);
        Ok(())
    }

    /// Starts a branch of history from node `i`'s data (from nothing for initdb).
    pub(crate) fn new_branch(&mut self, i: usize, kind: BranchKind) -> u32 {
        self.next_branch += 1;
        let parent = self.nodes[i].data.as_ref().map(|d| (d.branch, d.lsn));
        let tip = self.nodes[i].data.as_ref().map_or(0, |d| d.lsn);
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
        let node = &mut self.nodes[i];
        node.pg = None;
        node.hung = false;
        node.frozen = false;
        node.stop_signalled = false;
        node.backends_killed = false;
        node.kill_backends_at = None;
        node.sessions = false;
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
            let Some(d) = node.data.as_mut() else {
                continue;
            };
            let (from, branch) = (d.lsn, d.branch);
            d.lsn += add;
            let to = d.lsn;
            node.unshipped.push_back((now, to));
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
            }) = self.nodes[i].pg
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
            && n.pg.is_some_and(|r| r.phase == Phase::Up)
            && (!n.hung || n.sessions)
    }

    /// Whether node `i`'s walsenders ship WAL to the replicas already connected.
    pub(crate) fn master_shipping(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        matches!(
            n.pg,
            Some(PgRun {
                role: PgRole::Master,
                ..
            })
        ) && !n.frozen
            && !n.backends_killed
    }

    /// What node `i` has shipped: all it wrote up to `REPLICATION_LAG_MS` ago.
    pub(crate) fn shipped(&mut self, i: usize) -> u64 {
        let now = self.now;
        let n = &mut self.nodes[i];
        while let Some(&(t, lsn)) = n.unshipped.front() {
            if t.plus(REPLICATION_LAG_MS) > now {
                break;
            }
            n.shipped = lsn;
            n.unshipped.pop_front();
        }
        n.shipped
    }

    /// Everything node `i`'s data holds counts as shipped (a new run, a clean stop).
    pub(crate) fn reset_wal(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.unshipped.clear();
        n.shipped = n.data.as_ref().map_or(0, |d| d.lsn);
    }

    /// Ships all of master `m`'s WAL to the replicas streaming from it (a clean stop).
    pub(crate) fn stream_to_replicas(&mut self, m: usize) {
        let upto = self.shipped(m);
        for i in 0..self.nodes.len() {
            if self.nodes[i].pg
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
        if self.nodes[i].frozen || self.cut(i, upstream) {
            return;
        }
        let (Some(m), Some(r)) = (
            self.nodes[upstream].data.as_ref(),
            self.nodes[i].data.as_ref(),
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
                && let Some(r) = self.nodes[i].data.as_mut()
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
            self.nodes[i].data = Some(copy);
        }
        self.nodes[i].followed_timeline = self.nodes[i].followed_timeline.max(tl);
    }

    /// A master about to write on data behind the furthest copy of its history (it led on
    /// less than all of it) starts a branch: one timeline, two histories.
    pub(crate) fn fork_if_behind(&mut self, i: usize) {
        let Some(d) = self.nodes[i].data.as_ref() else {
            return;
        };
        if d.lsn >= self.branches[d.branch as usize].tip {
            return;
        }
        let in_sight = self.nodes[i].lead_in_sight;
        let branch = self.new_branch(i, BranchKind::Diverged { in_sight });
        if let Some(d) = self.nodes[i].data.as_mut() {
            d.ancestry.push((d.branch, d.lsn));
            d.branch = branch;
        }
    }
}
