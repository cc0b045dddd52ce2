//! The simulated network: probe answers in flight with their delays, probes waiting on a
//! stopped postmaster, cut links (two-way and one-way) and probe loss.

use pgha_core::{CommandId, PeerId, PeerReport, ProbeResult, Timestamp};

use crate::world::World;

/// The longest one-way network delay.
pub(crate) const DELAY_MAX_MS: u64 = 20;

#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) at: Timestamp,
    pub(crate) seq: u64,
    pub(crate) node: usize,
    pub(crate) daemon: u32,
    pub(crate) id: CommandId,
    pub(crate) peer: Option<PeerId>,
    pub(crate) result: ProbeResult,
    /// A peer daemon's report (`Some`: this delivery answers a `ProbePeerDaemon`).
    pub(crate) report: Option<Option<PeerReport>>,
}

/// A probe waiting on a stopped postmaster.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parked {
    pub(crate) node: usize,
    pub(crate) daemon: u32,
    pub(crate) id: CommandId,
    pub(crate) peer: Option<PeerId>,
    pub(crate) target: usize,
    pub(crate) expires: Timestamp,
}

impl World {
    /// A connection to a stopped postmaster waits in its listen queue: the probe is answered
    /// when it resumes (or refused when it is killed), if the prober still waits then.
    pub(crate) fn park(&mut self, node: usize, id: CommandId, peer: Option<PeerId>, target: usize) {
        let daemon = self.nodes[node].daemon;
        let timeout = self.nodes[node].config.connect_timeout_ms;
        self.parked.push(Parked {
            node,
            daemon,
            id,
            peer,
            target,
            expires: self.now.plus(timeout),
        });
    }

    /// Answers the probes parked on node `target`'s postgres, which runs again (or is gone).
    pub(crate) fn unpark(&mut self, target: usize) {
        let now = self.now;
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            if p.target != target {
                self.parked.push(p);
                continue;
            }
            if p.expires <= now || self.nodes[p.node].daemon != p.daemon {
                continue;
            }
            if p.peer.is_some() && self.cut(p.node, target) {
                continue;
            }
            if let Some(result) = self.probe_result(p.node, target) {
                let d = self.rng.range(1, DELAY_MAX_MS) + self.rng.range(1, DELAY_MAX_MS);
                self.deliver(p.node, p.id, p.peer, result, d);
            }
        }
    }

    /// Whether a request from `i` to `target` is lost: a cut link, or drawn from the loss
    /// rate (the draw is made only when the link is up, as before).
    pub(crate) fn dropped(&mut self, i: usize, target: usize) -> bool {
        self.cut(i, target)
            || self
                .loss
                .is_some_and(|pct| self.rng.range(1, 100) <= u64::from(pct))
    }

    pub(crate) fn deliver(
        &mut self,
        node: usize,
        id: CommandId,
        peer: Option<PeerId>,
        result: ProbeResult,
        delay: u64,
    ) {
        self.seq += 1;
        let d = Delivery {
            at: self.now.plus(delay),
            seq: self.seq,
            node,
            daemon: self.nodes[node].daemon,
            id,
            peer,
            result,
            report: None,
        };
        self.deliveries.push(d);
    }

    /// The link between `a` and `b` is cut in at least one direction: they cannot see each
    /// other both ways.
    pub(crate) fn link_down(&self, a: usize, b: usize) -> bool {
        self.partitioned
            .iter()
            .chain(&self.one_way)
            .any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
    }

    /// Connections from `from` to `to` time out.
    pub(crate) fn cut(&self, from: usize, to: usize) -> bool {
        self.partitioned
            .iter()
            .any(|&(x, y)| (x, y) == (from, to) || (x, y) == (to, from))
            || self.one_way.contains(&(from, to))
    }

    /// Both directions are cut: neither node can reach the other.
    pub(crate) fn cut_both(&self, a: usize, b: usize) -> bool {
        self.cut(a, b) && self.cut(b, a)
    }
}
