//! The client: sessions opened through the VIP on an up master, and every write they get
//! acknowledged.

use pgha_core::Timestamp;

use crate::invariants::Stale;
use crate::postgres::{PgRole, PgRun, Phase};
use crate::world::World;

/// Positions `from + 1 ..= to` of `branch`, acknowledged to the client by `node` at `at`
/// (one write per position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub node: usize,
    pub branch: u32,
    pub from: u64,
    pub to: u64,
    /// When the first and the last of them were acknowledged.
    pub at: Timestamp,
    pub until: Timestamp,
    /// Acknowledged after another node promoted off this branch: why (see
    /// `World::stale_write`). Missing at the end, a violation unless the cause is conceded.
    pub stale: Option<Stale>,
}

impl World {
    /// The client: sessions end with their server (stopped, shutting down, killed, a
    /// replica); new ones go where the VIP points (its latest holder), if that server is an
    /// up master that accepts connections.
    pub(crate) fn update_sessions(&mut self) {
        let mut vip: Option<usize> = None;
        for i in 0..self.nodes.len() {
            let n = &mut self.nodes[i];
            let master_up = matches!(
                n.pg.run,
                Some(PgRun {
                    role: PgRole::Master,
                    phase: Phase::Up
                })
            );
            if !master_up || n.pg.backends_killed {
                n.sessions = false;
            }
            if n.vip && vip.is_none_or(|v| self.nodes[v].vip_seq < self.nodes[i].vip_seq) {
                vip = Some(i);
            }
        }
        if let Some(v) = vip {
            let n = &self.nodes[v];
            if !n.pg.exhausted && !n.pg.backends_killed && self.master_up(v) {
                self.nodes[v].sessions = true;
            }
        }
    }

    /// Records positions `from+1..=to` of `branch` acknowledged by node `i` now, with why
    /// they were acknowledged if another node promoted off that branch before
    /// (`World::stale_write`); a hung or isolated writer is a violation at once.
    pub(crate) fn record_write(&mut self, i: usize, branch: u32, from: u64, to: u64) {
        let now = self.now;
        self.stats.writes += to - from;
        let stale = self.stale_write(i, branch).map(|(why, m, at)| {
            self.stats.stale[why as usize] += to - from;
            // What the give-up deadlines guarantee, whatever becomes of the promoted node.
            if matches!(why, Stale::Hung | Stale::Isolated) {
                self.violation(format!(
                    "node {i} acknowledged writes on branch {branch} {} ms after node {m} promoted off it: {}",
                    now.since(at),
                    why.describe()
                ));
            }
            why
        });
        let last_branch_at = self.branches.last().map_or(Timestamp::ZERO, |b| b.created);
        if let Some(w) = self.writes.last_mut()
            && w.node == i
            && w.branch == branch
            && w.to == from
            && w.stale == stale
            && last_branch_at < w.at
        {
            w.to = to;
            w.until = now;
            return;
        }
        self.writes.push(Write {
            node: i,
            branch,
            from,
            to,
            at: now,
            until: now,
            stale,
        });
    }
}
