//! Fault injection: the faults a schedule holds, how a seed draws its schedule, and what each
//! fault does to the world when its time comes.

use pgha_core::{
    CommandKind, Event, Input, Isolation, OperatorRequest, SplitBrainRule, Timestamp, Topology,
};

use crate::rng::Rng;
use crate::world::{Scenario, TraceItem, World};

/// Draws a scenario from a seed.
pub fn scenario(seed: u64, rng: &mut Rng) -> Scenario {
    let ha = rng.chance(0.7);
    let nodes = if ha { 2 } else { rng.range(3, 5) as usize };
    let fast = rng.chance(0.5);
    let restart_with_data = rng.chance(0.3);
    let split_brain = if rng.chance(0.5) {
        SplitBrainRule::BothStop
    } else {
        SplitBrainRule::OlderTimelineStepsDown
    };
    let t = crate::timings(fast);
    let (interval, timeout, grace, stagger) = (
        t.probe_interval_ms,
        t.connect_timeout_ms,
        t.grace_ms,
        t.grace_stagger_ms,
    );
    let boot = 2 * grace + stagger * nodes as u64 + 10_000;
    let window = if fast { 20_000 } else { 60_000 };
    let detection = 3 * (timeout + interval);
    let mut faults = Vec::new();
    let mut end = boot;
    let count = rng.range(0, 4);
    for _ in 0..count {
        let at = boot + rng.range(0, window);
        let a = rng.range(0, nodes as u64 - 1) as usize;
        let b = (a + 1 + rng.range(0, nodes as u64 - 2) as usize) % nodes;
        let dur = rng.range(interval, 3 * detection);
        let t = Timestamp(at);
        let t2 = Timestamp(at + dur);
        match rng.range(0, 9) {
            0 | 1 => faults.push((t, Fault::KillPostgres(a))),
            2 => {
                // SIGKILL of the whole master host: postgres and its daemon.
                faults.push((t, Fault::KillPostgres(a)));
                faults.push((t, Fault::CrashDaemon(a)));
                faults.push((t2, Fault::RestartDaemon(a)));
            }
            3 | 4 => {
                faults.push((t, Fault::Hang(a)));
                faults.push((t2, Fault::Resume(a)));
            }
            5 => {
                faults.push((t, Fault::CrashDaemon(a)));
                faults.push((t2, Fault::RestartDaemon(a)));
            }
            6 | 7 => {
                faults.push((t, Fault::Partition(a, b)));
                faults.push((t2, Fault::Heal(a, b)));
            }
            8 => {
                faults.push((t, Fault::LossOn(rng.range(10, 60) as u32)));
                faults.push((t2, Fault::LossOff));
            }
            _ => match rng.range(0, 3) {
                0 => {
                    // A promotion outside pgha: a second master.
                    faults.push((t, Fault::ExternalPromote(a)));
                }
                1 => {
                    let req = rng.pick(&[OperatorRequest::Promote, OperatorRequest::Pause]);
                    faults.push((t, Fault::Operator(a, req)));
                    if req == OperatorRequest::Pause {
                        faults.push((t2, Fault::Operator(a, OperatorRequest::Resume)));
                    }
                }
                _ => {
                    // A switchover as `pgha promote --force` runs it: the master steps down,
                    // then the replica is asked to promote.
                    faults.push((t, Fault::Operator(a, OperatorRequest::StepDown)));
                    faults.push((t2, Fault::Operator(b, OperatorRequest::Promote)));
                }
            },
        }
        end = end.max(at + dur);
    }
    // Connection exhaustion, drawn from a stream of its own so every other draw of a seed
    // (and so the seeds of the table in docs/simulator.md) stays as it was.
    let mut own = Rng::new(seed ^ 0x5330_0000_5330_0000);
    if own.chance(0.25) {
        let a = own.range(0, nodes as u64 - 1) as usize;
        let at = boot + own.range(0, window);
        let dur = own.range(interval, window);
        faults.push((Timestamp(at), Fault::Exhaust(a)));
        faults.push((Timestamp(at + dur), Fault::Release(a)));
        end = end.max(at + dur);
    }
    // The isolation rule, from a stream of its own for the same reason.
    let mut own = Rng::new(seed ^ 0x1501_0000_1501_0000);
    let isolation = if own.chance(0.5) {
        Isolation::Fence
    } else {
        Isolation::KeepServing
    };
    // Issue 11's faults, from a stream of their own too.
    let mut own = Rng::new(seed ^ 0x0011_0000_0011_0000);
    let takeover = 3 * timeout;
    if own.chance(0.25) {
        // A hung postmaster whose backends keep committing.
        let a = own.range(0, nodes as u64 - 1) as usize;
        let at = boot + own.range(0, window);
        let dur = own.range(interval, 3 * detection);
        faults.push((Timestamp(at), Fault::HangPostmaster(a)));
        faults.push((Timestamp(at + dur), Fault::Resume(a)));
        end = end.max(at + dur);
    }
    if own.chance(0.25) {
        // A partition, one-way or two-way, healed at any moment.
        let a = own.range(0, nodes as u64 - 1) as usize;
        let b = (a + 1 + own.range(0, nodes as u64 - 2) as usize) % nodes;
        let at = boot + own.range(0, window);
        let dur = own.range(1, 3 * detection);
        let cut = match own.range(0, 2) {
            0 => Fault::Partition(a, b),
            1 => Fault::PartitionOneWay(a, b),
            _ => Fault::PartitionOneWay(b, a),
        };
        faults.push((Timestamp(at), cut));
        faults.push((Timestamp(at + dur), Fault::Heal(a, b)));
        end = end.max(at + dur);
    }
    if ha && own.chance(0.15) {
        // A failover (the first master's postgres, or its whole host, killed), then a power
        // cut of both nodes once the old master has rejoined, then both powered on (together,
        // or one up to two grace periods later).
        let at = boot + own.range(0, window);
        faults.push((Timestamp(at), Fault::KillPostgres(0)));
        if own.chance(0.5) {
            faults.push((Timestamp(at), Fault::CrashDaemon(0)));
            faults.push((Timestamp(at + takeover + interval), Fault::RestartDaemon(0)));
        }
        let cut = at + takeover + 2 * grace + stagger + 10_000 + own.range(0, window);
        faults.push((Timestamp(cut), Fault::PowerCut));
        let on = cut + own.range(100, 2 * grace);
        let later = if own.chance(0.5) {
            0
        } else {
            own.range(0, 2 * grace)
        };
        let first = own.range(0, 1) as usize;
        faults.push((Timestamp(on), Fault::RestartDaemon(first)));
        faults.push((Timestamp(on + later), Fault::RestartDaemon(1 - first)));
        end = end.max(on + later);
    }
    faults.sort_by_key(|&(t, _)| t);
    Scenario {
        nodes,
        topology: if ha { Topology::Ha } else { Topology::Star },
        split_brain,
        isolation,
        fast,
        restart_with_data,
        vip: true,
        proxy: rng.chance(0.5),
        action_failure: if rng.chance(0.5) { 0.0 } else { 0.05 },
        faults,
        faults_end: Timestamp(end),
    }
}

/// A fault the schedule injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    KillPostgres(usize),
    Hang(usize),
    Resume(usize),
    CrashDaemon(usize),
    RestartDaemon(usize),
    Partition(usize, usize),
    Heal(usize, usize),
    LossOn(u32),
    LossOff,
    Operator(usize, OperatorRequest),
    /// `pg_promote()` run on the node's postgres outside pgha (a replica becomes a second
    /// master): what the split-brain rule exists for.
    ExternalPromote(usize),
    /// Client sessions fill the node's connection slots (they stay full across restarts of
    /// its postgres: the applications reconnect), until [`Fault::Release`].
    Exhaust(usize),
    Release(usize),
    /// SIGSTOP of the postmaster only: no new connection, no answer, but the backends already
    /// connected keep committing and the walsenders keep streaming, until [`Fault::Resume`].
    HangPostmaster(usize),
    /// Connections from the first node to the second time out (its probes, its daemon's
    /// reports, its replication stream and basebackups); the other way works. Healed by
    /// [`Fault::Heal`].
    PartitionOneWay(usize, usize),
    /// Every host loses power: postgres, daemons, running actions and VIPs are gone, the data
    /// stays. [`Fault::RestartDaemon`] powers a node on.
    PowerCut,
}

impl World {
    pub(crate) fn apply_fault(&mut self, f: Fault) {
        self.log(TraceItem::Fault(f));
        match f {
            Fault::KillPostgres(i) => {
                self.stop_pg(i);
                self.unpark(i);
            }
            Fault::Hang(i) => {
                let now = self.now;
                let node = &mut self.nodes[i];
                if node.pg.run.is_some() {
                    if !node.pg.hung {
                        node.hung_at = Some(now);
                    }
                    node.pg.hung = true;
                    node.pg.frozen = true;
                }
            }
            Fault::Resume(i) => {
                let now = self.now;
                let node = &mut self.nodes[i];
                if node.pg.hung {
                    node.resumed_at = Some(now);
                }
                node.pg.hung = false;
                node.pg.frozen = false;
                if std::mem::take(&mut node.pg.stop_signalled) {
                    // The signal pg_ctl sent is delivered now: the server stops, and a pg_ctl
                    // still waiting sees it go.
                    self.stop_pg(i);
                    if let Some(r) = self.nodes[i].current.as_mut()
                        && matches!(r.cmd.kind, CommandKind::StopPostgres(_))
                    {
                        r.finish = now;
                    }
                }
                self.unpark(i);
            }
            Fault::CrashDaemon(i) => {
                if !self.nodes[i].daemon_down {
                    self.crash_daemon(i);
                }
            }
            Fault::RestartDaemon(i) => {
                if self.nodes[i].daemon_down {
                    self.start_daemon(i);
                }
            }
            Fault::Partition(a, b) => {
                if !self.cut_both(a, b) {
                    self.partitioned.push((a, b));
                }
            }
            Fault::Heal(a, b) => {
                self.partitioned
                    .retain(|&(x, y)| (x, y) != (a, b) && (x, y) != (b, a));
                self.one_way
                    .retain(|&(x, y)| (x, y) != (a, b) && (x, y) != (b, a));
            }
            Fault::Exhaust(i) => self.nodes[i].pg.exhausted = true,
            Fault::Release(i) => self.nodes[i].pg.exhausted = false,
            Fault::LossOn(p) => self.loss = Some(p),
            Fault::LossOff => self.loss = None,
            Fault::Operator(i, req) => {
                if matches!(
                    req,
                    OperatorRequest::Recover | OperatorRequest::ForceRecover
                ) {
                    self.stats.recovers += 1;
                }
                if req == OperatorRequest::ForceRecover {
                    self.nodes[i].forced = true;
                }
                if req == OperatorRequest::Resume {
                    self.nodes[i].resumed_pause_at = Some(self.now);
                }
                self.feed(i, Input::Event(Event::Operator(req)));
            }
            Fault::ExternalPromote(i) => {
                let _ = self.promote_pg(i, false);
            }
            Fault::HangPostmaster(i) => {
                if self.nodes[i].pg.run.is_some() && !self.nodes[i].pg.hung {
                    self.nodes[i].pg.hung = true;
                    self.nodes[i].hung_at = Some(self.now);
                }
            }
            Fault::PartitionOneWay(a, b) => {
                if !self.cut(a, b) {
                    self.one_way.push((a, b));
                }
            }
            Fault::PowerCut => {
                // Connections waiting on a stopped postmaster die with the hosts.
                self.parked.clear();
                for i in 0..self.nodes.len() {
                    self.stop_pg(i);
                    if !self.nodes[i].daemon_down {
                        self.crash_daemon(i);
                    }
                    let node = &mut self.nodes[i];
                    // The host is off: no action finishes, no address is held.
                    node.current = None;
                    node.vip = false;
                }
            }
        }
    }

    /// Ends every fault: heals links, stops loss, resumes hung servers, restarts daemons.
    pub fn heal_all(&mut self) {
        let pairs = std::mem::take(&mut self.partitioned);
        for (a, b) in pairs {
            self.log(TraceItem::Fault(Fault::Heal(a, b)));
        }
        let pairs = std::mem::take(&mut self.one_way);
        for (a, b) in pairs {
            self.log(TraceItem::Fault(Fault::Heal(a, b)));
        }
        self.apply_fault(Fault::LossOff);
        for i in 0..self.nodes.len() {
            if self.nodes[i].pg.hung {
                self.apply_fault(Fault::Resume(i));
            }
            if self.nodes[i].pg.exhausted {
                self.apply_fault(Fault::Release(i));
            }
            if self.nodes[i].daemon_down {
                self.apply_fault(Fault::RestartDaemon(i));
            }
        }
    }

    /// Schedules a fault at `at`, kept in time order.
    pub fn schedule(&mut self, at: Timestamp, fault: Fault) {
        let pos = self
            .pending_faults
            .iter()
            .position(|&(t, _)| t > at)
            .unwrap_or(self.pending_faults.len());
        self.pending_faults.insert(pos, (at, fault));
    }
}
