//! Runs one lease machine (`pgha_core::lease::Lease`) against a real etcd with the wall clock:
//! drain `poll_output` (each command carried out by the [`Effector`] on a thread of its own,
//! so a hung etcd never delays the holder's deadline), wait for the earliest of the next answer
//! and `poll_timeout`, hand the answer or the timeout to the machine, again. It decides
//! nothing. Today only the tests drive it (shells/src/etcd/lease_tests.rs); the daemon's main
//! loop will do the same with its own clock and journal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use pgha_core::Timestamp;
use pgha_core::lease::{Lease, LeaseConfig, LeaseDecision, LeaseEvent, LeaseOutput, Name};

use super::effector::Effector;

/// An input to the machine from a thread: an answer (with the raft term the gateway saw).
type Answer = (LeaseEvent, u64);

/// What happened, with the machine's clock: every input and every output, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    Input(LeaseEvent),
    Output(LeaseOutput),
}

/// One lease machine, its effector and its clock.
pub struct Runner {
    lease: Lease,
    me: Name,
    effector: Effector,
    epoch: Instant,
    tx: Sender<Answer>,
    rx: Receiver<Answer>,
    /// Set on drop: the watcher, if any, ends within its window.
    stop: Arc<AtomicBool>,
    /// The highest raft term seen, shared with the watcher.
    term: Arc<AtomicU64>,
    /// Every input and output with the time it was handled or produced.
    pub log: Vec<(Timestamp, Logged)>,
}

impl Runner {
    /// A machine for `me`, its clock counting milliseconds from `epoch` (share one epoch
    /// between runners to compare their instants).
    pub fn new(config: LeaseConfig, me: Name, effector: Effector, epoch: Instant) -> Runner {
        let (tx, rx) = channel();
        Runner {
            lease: Lease::new(config, me),
            me,
            effector,
            epoch,
            tx,
            rx,
            stop: Arc::new(AtomicBool::new(false)),
            term: Arc::new(AtomicU64::new(0)),
            log: Vec::new(),
        }
    }

    pub fn me(&self) -> Name {
        self.me
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Watches the leader key ([`super::watch`]) in requests of at most `window` each; every
    /// view the watch gives is handed to the machine as [`LeaseEvent::Watched`].
    pub fn watch(&mut self, window: Duration) {
        let tx = self.tx.clone();
        let key = self.effector.key().to_vec();
        let gateway = self.effector.gateway().clone();
        super::watch::spawn_watcher(
            gateway,
            key,
            window,
            self.stop.clone(),
            self.term.clone(),
            move |k, term| {
                let _ = tx.send((LeaseEvent::Watched(k), term));
            },
        );
    }

    /// The machine's clock now.
    pub fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Hands `event` to the machine now and carries out what it asks.
    pub fn handle(&mut self, event: LeaseEvent) {
        let now = self.now();
        self.log.push((now, Logged::Input(event)));
        self.lease.handle(now, event);
        self.drain(now);
    }

    fn drain(&mut self, now: Timestamp) {
        while let Some(out) = self.lease.poll_output() {
            self.log.push((now, Logged::Output(out)));
            if let LeaseOutput::Command(cmd) = out {
                let mut effector = self.effector.clone();
                let tx = self.tx.clone();
                // Bounded: every gateway call ends within retry_timeout.
                std::thread::spawn(move || {
                    let (event, error) = effector.run(cmd);
                    if let Some(e) = error {
                        log::debug!("etcd request {:?} {:?}: {e}", cmd.id, cmd.op);
                    }
                    let _ = tx.send((event, effector.gateway().term()));
                });
            }
        }
    }

    /// Waits at most `limit` for the next answer or the machine's next deadline, and hands
    /// whatever came (or is due) to it.
    pub fn step(&mut self, limit: Duration) {
        let mut wait = limit;
        if let Some(at) = self.lease.poll_timeout() {
            let due = self.epoch + Duration::from_millis(at.0);
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        match self.rx.recv_timeout(wait) {
            Ok(answer) => {
                self.answer(answer);
                while let Ok(answer) = self.rx.try_recv() {
                    self.answer(answer);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The runner holds a sender: never disconnected.
            Err(RecvTimeoutError::Disconnected) => unreachable!(),
        }
        let now = self.now();
        if self.lease.poll_timeout().is_some_and(|at| at <= now) {
            self.lease.handle_timeout(now);
            self.drain(now);
        }
    }

    fn answer(&mut self, (event, term): Answer) {
        let g = self.effector.gateway();
        g.saw_term(term);
        self.term.fetch_max(g.term(), Ordering::SeqCst);
        self.handle(event);
    }

    /// The decisions so far, with their times, from log entry `from` on.
    pub fn decisions(&self, from: usize) -> impl Iterator<Item = (Timestamp, LeaseDecision)> + '_ {
        self.log[from.min(self.log.len())..]
            .iter()
            .filter_map(|(t, l)| match l {
                Logged::Output(LeaseOutput::Decision(d)) => Some((*t, *d)),
                _ => None,
            })
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
