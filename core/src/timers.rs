//! The deadline table: every timer a node keeps, one slot each, after quinn-proto's
//! `TimerTable`. A [`Node`](crate::Node) derives the table from its state whenever asked
//! ([`Node::timers`](crate::Node::timers)); [`Node::poll_timeout`](crate::Node::poll_timeout) is its
//! earliest slot and [`Node::handle_timeout`](crate::Node::handle_timeout) acts on the due
//! slots in [`Timer::order`].

use crate::{MAX_PEERS, PeerId, Timestamp};

/// One of a node's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// The local postgres's probe: its timeout while in flight, else when the next is due.
    LocalProbe,
    /// A peer's postgres's probe, likewise.
    PeerProbe(PeerId),
    /// A peer's daemon's report probe, likewise.
    DaemonProbe(PeerId),
    /// A master whose postgres gave no sign of life for `master_give_up` steps down.
    LocalGiveUp,
    /// A master that heard nothing of a peer able to promote for `master_give_up` steps down.
    Isolation,
    /// The end of the wait for a master (`Discovering`) or of the election (`Electing`).
    Wait,
    /// A failed step is retried, or a found master may be acted on again.
    Retry,
}

/// The number of slots: a local probe, a postgres and a daemon probe per peer, four others.
const SLOTS: usize = 1 + 2 * MAX_PEERS + 4;

/// Every timer of the largest cluster, in slot order.
const ALL: [Timer; SLOTS] = {
    let mut all = [Timer::LocalProbe; SLOTS];
    let mut i = 0;
    while i < MAX_PEERS {
        all[1 + 2 * i] = Timer::PeerProbe(PeerId(i as u8));
        all[2 + 2 * i] = Timer::DaemonProbe(PeerId(i as u8));
        i += 1;
    }
    all[SLOTS - 4] = Timer::LocalGiveUp;
    all[SLOTS - 3] = Timer::Isolation;
    all[SLOTS - 2] = Timer::Wait;
    all[SLOTS - 1] = Timer::Retry;
    all
};

impl Timer {
    /// The timers of a node with `peers` peers, in the order `handle_timeout` acts on them:
    /// the probes' timeouts first (local, then each peer's postgres and daemon), then the
    /// give-up, the isolation, the end of a wait and the retry.
    pub fn order(peers: usize) -> impl Iterator<Item = Timer> {
        let probes = 1 + 2 * peers.min(MAX_PEERS);
        ALL[..probes].iter().chain(&ALL[SLOTS - 4..]).copied()
    }

    /// The peer a probe timer belongs to.
    pub fn peer(self) -> Option<PeerId> {
        match self {
            Timer::PeerProbe(p) | Timer::DaemonProbe(p) => Some(p),
            _ => None,
        }
    }

    /// A short name for logs and status.
    pub fn name(self) -> &'static str {
        match self {
            Timer::LocalProbe => "local probe",
            Timer::PeerProbe(_) => "peer probe",
            Timer::DaemonProbe(_) => "peer daemon probe",
            Timer::LocalGiveUp => "master give-up",
            Timer::Isolation => "isolation",
            Timer::Wait => "wait",
            Timer::Retry => "retry",
        }
    }

    fn slot(self) -> usize {
        match self {
            Timer::LocalProbe => 0,
            Timer::PeerProbe(p) => 1 + 2 * p.index(),
            Timer::DaemonProbe(p) => 2 + 2 * p.index(),
            Timer::LocalGiveUp => SLOTS - 4,
            Timer::Isolation => SLOTS - 3,
            Timer::Wait => SLOTS - 2,
            Timer::Retry => SLOTS - 1,
        }
    }
}

/// A deadline per [`Timer`], or none. Fixed size: building one allocates nothing, and the
/// earliest deadline is one pass over a flat array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerTable {
    /// Milliseconds, [`TimerTable::STOPPED`] where the timer does not run.
    slots: [u64; SLOTS],
}

impl Default for TimerTable {
    fn default() -> TimerTable {
        TimerTable {
            slots: [TimerTable::STOPPED; SLOTS],
        }
    }
}

impl TimerTable {
    /// A slot's value for a timer that does not run: later than any deadline.
    const STOPPED: u64 = u64::MAX;

    /// Sets (or, with `None`, stops) a timer.
    pub fn set(&mut self, timer: Timer, at: Option<Timestamp>) {
        self.slots[timer.slot()] = at.map_or(TimerTable::STOPPED, |t| t.0);
    }

    /// A timer's deadline, if it runs.
    pub fn get(&self, timer: Timer) -> Option<Timestamp> {
        Self::deadline(self.slots[timer.slot()])
    }

    fn deadline(ms: u64) -> Option<Timestamp> {
        (ms != TimerTable::STOPPED).then_some(Timestamp(ms))
    }

    /// The running timers and their deadlines, in [`Timer::order`].
    pub fn iter(&self) -> impl Iterator<Item = (Timer, Timestamp)> + '_ {
        Timer::order(MAX_PEERS).filter_map(|t| self.get(t).map(|at| (t, at)))
    }

    /// The earliest deadline, if any timer runs.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        Self::deadline(
            self.slots
                .iter()
                .copied()
                .min()
                .unwrap_or(TimerTable::STOPPED),
        )
    }

    /// The earliest deadline and its timer (the first in order on a tie).
    pub fn earliest(&self) -> Option<(Timer, Timestamp)> {
        let at = self.next_deadline()?;
        self.iter().find(|&(_, t)| t == at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_timer_of_the_largest_cluster_has_a_slot_of_its_own() {
        let timers: Vec<Timer> = Timer::order(MAX_PEERS).collect();
        assert_eq!(timers.len(), SLOTS);
        let mut slots: Vec<usize> = timers.iter().map(|t| t.slot()).collect();
        slots.dedup();
        assert_eq!(
            slots,
            (0..SLOTS).collect::<Vec<_>>(),
            "order follows the slots"
        );
    }

    #[test]
    fn the_earliest_deadline_wins_and_a_tie_goes_to_the_first_in_order() {
        let mut table = TimerTable::default();
        assert_eq!(table.earliest(), None);
        table.set(Timer::Retry, Some(Timestamp(5)));
        table.set(Timer::Wait, Some(Timestamp(9)));
        assert_eq!(table.earliest(), Some((Timer::Retry, Timestamp(5))));
        table.set(Timer::PeerProbe(PeerId(1)), Some(Timestamp(5)));
        assert_eq!(
            table.earliest(),
            Some((Timer::PeerProbe(PeerId(1)), Timestamp(5)))
        );
        table.set(Timer::PeerProbe(PeerId(1)), None);
        assert_eq!(table.get(Timer::PeerProbe(PeerId(1))), None);
        assert_eq!(table.iter().count(), 2);
    }
}
