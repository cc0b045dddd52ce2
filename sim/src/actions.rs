//! A node's shell carrying out its core's commands one at a time: how long each takes, the
//! injected failures, and their effect on the node's postgres when they start and finish.

use pgha_core::{Command, CommandKind, Event, Failure, Input, StartAs, StopMode, Timestamp};

use crate::postgres::{BranchKind, PgRole, STOP_MAX_MS};
use crate::world::World;

/// An action being carried out by a node's shell.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Running {
    pub(crate) cmd: Command,
    pub(crate) started: Timestamp,
    pub(crate) finish: Timestamp,
    /// Decided when it started: an injected failure.
    pub(crate) inject: Option<Failure>,
    /// The daemon that issued it (results to an older daemon are dropped).
    pub(crate) daemon: u32,
}

impl World {
    pub(crate) fn action_duration(&mut self, i: usize, kind: CommandKind) -> u64 {
        match kind {
            // A stopped postmaster's cluster is killed, whatever the mode (see the dispatch).
            CommandKind::StopPostgres(_) if self.nodes[i].pg.hung => self.rng.range(20, 200),
            CommandKind::InitDataDir => self.rng.range(200, 800),
            CommandKind::StartPostgres(_) => self.rng.range(200, 1500),
            CommandKind::StopPostgres(StopMode::Fast) => self.rng.range(100, STOP_MAX_MS),
            CommandKind::StopPostgres(StopMode::Immediate) => self.rng.range(20, 200),
            CommandKind::Basebackup { .. } => self.rng.range(300, 3000),
            CommandKind::Promote => self.rng.range(80, 200),
            CommandKind::Follow { .. } => self.rng.range(10, 50),
            _ => self.rng.range(1, 20),
        }
    }

    pub(crate) fn start_next_action(&mut self, i: usize) {
        if self.nodes[i].current.is_some() {
            return;
        }
        let Some(cmd) = self.nodes[i].queue.pop_front() else {
            return;
        };
        let dur = self.action_duration(i, cmd.kind);
        let failable = matches!(
            cmd.kind,
            CommandKind::InitDataDir
                | CommandKind::StartPostgres(_)
                | CommandKind::StopPostgres(_)
                | CommandKind::Basebackup { .. }
                | CommandKind::Promote
        );
        let inject = if failable && self.rng.chance(self.scenario.action_failure) {
            Some(Failure::Exit(1))
        } else {
            None
        };
        // Effects and checks at the start of an action.
        match cmd.kind {
            CommandKind::Basebackup { .. } if self.nodes[i].pg.run.is_some() => {
                self.violation(format!(
                    "node {i}: basebackup started while its postgres runs"
                ));
            }
            CommandKind::InitDataDir if self.nodes[i].pg.held_data => {
                self.violation(format!("node {i}: initdb on a node that held data"));
            }
            CommandKind::StartPostgres(as_) if inject.is_none() => {
                let role = match as_ {
                    StartAs::Master => PgRole::Master,
                    StartAs::Replica { upstream } => PgRole::Replica {
                        upstream: self.nodes[i].peer_of[upstream.index()],
                    },
                };
                if self.nodes[i].pg.begin_start(role) && role == PgRole::Master {
                    self.nodes[i].master_since = self.now;
                }
            }
            // The backends of a stopped postmaster die within the stop's time; the stop then
            // succeeds.
            CommandKind::StopPostgres(_) => self.nodes[i].pg.begin_stop(self.now.plus(dur)),
            _ => {}
        }
        let daemon = self.nodes[i].daemon;
        self.nodes[i].current = Some(Running {
            cmd,
            started: self.now,
            finish: self.now.plus(dur),
            inject,
            daemon,
        });
    }

    /// Applies the effect of a finished action and reports it.
    pub(crate) fn finish_action(&mut self, i: usize) {
        let Some(run) = self.nodes[i].current.take() else {
            return;
        };
        let outcome = self.apply_action(i, run);
        if run.daemon == self.nodes[i].daemon && self.nodes[i].core.is_some() {
            let duration_ms = self.now.since(run.started);
            self.feed(
                i,
                Input::Event(Event::CommandDone {
                    id: run.cmd.id,
                    outcome,
                    duration_ms,
                }),
            );
        }
        self.start_next_action(i);
    }

    pub(crate) fn apply_action(&mut self, i: usize, run: Running) -> Result<(), Failure> {
        let kind = run.cmd.kind;
        if let Some(f) = run.inject {
            // A failed start leaves nothing running; a failed stop leaves it running.
            if let CommandKind::StopPostgres(_) = kind {
                self.nodes[i].pg.stop_failed();
            }
            return Err(f);
        }
        match kind {
            CommandKind::InitDataDir => {
                if self.nodes[i].pg.data.is_some() {
                    return Err(Failure::Refused);
                }
                let branch = self.new_branch(i, BranchKind::Initdb);
                self.nodes[i].pg.initdb(branch);
                Ok(())
            }
            CommandKind::StartPostgres(_) => self.nodes[i].pg.finish_start(),
            CommandKind::StopPostgres(mode) => {
                if self.nodes[i].pg.hung {
                    // Killed (see the dispatch): gone, with its sessions.
                    self.stop_pg(i);
                    return Ok(());
                }
                if mode == StopMode::Fast && self.nodes[i].pg.run.is_some() {
                    // A clean shutdown waits for its walsenders to ship everything.
                    self.nodes[i].pg.reset_wal();
                    self.stream_to_replicas(i);
                }
                self.stop_pg(i);
                Ok(())
            }
            CommandKind::Basebackup { from } => {
                let src = self.nodes[i].peer_of[from.index()];
                let ok = !self.cut(i, src) && self.nodes[src].pg.up_master();
                if !ok || self.nodes[i].pg.run.is_some() {
                    return Err(Failure::Exit(1));
                }
                let copy = self.nodes[src].pg.data.clone().ok_or(Failure::Exit(1))?;
                // The replaced data is set aside (`keep_discarded`).
                let forced = std::mem::take(&mut self.nodes[i].forced);
                if let Some(old) = self.nodes[i].pg.replace_data(copy) {
                    self.set_aside.push((old, forced));
                }
                self.nodes[i].followed_timeline = 0;
                Ok(())
            }
            CommandKind::Promote => self.promote_pg(i, self.nodes[i].promote_automatic),
            CommandKind::Follow { upstream } => {
                let u = self.nodes[i].peer_of[upstream.index()];
                self.nodes[i].pg.follow(u)
            }
            CommandKind::AcquireVip => {
                self.vip_seq += 1;
                self.nodes[i].vip_seq = self.vip_seq;
                self.nodes[i].vip = true;
                Ok(())
            }
            CommandKind::ReleaseVip => {
                self.nodes[i].vip = false;
                Ok(())
            }
            CommandKind::Fence => {
                self.nodes[i].fence_marker = true;
                Ok(())
            }
            CommandKind::Unfence => {
                self.nodes[i].fence_marker = false;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
