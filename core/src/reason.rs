//! States, the typed reasons for moving between them, and the transition record.

use crate::{
    CommandId, CommandKind, Config, DataPosition, Failure, Lsn, MAX_PEERS, OperatorRequest, PeerId,
    ProbeResult, Role, SplitBrainRule, Standing, StartAs, Timeline, Timestamp,
};
use serde::{Deserialize, Serialize};

/// Where a node is in its life. Each state names what the node waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Waiting for [`crate::Event::Started`].
    Init,
    /// Empty data dir, index 0: one round of peer probes, so a master that already exists is
    /// cloned rather than replaced by a fresh initdb.
    Discovering { deadline: Timestamp },
    /// Empty data dir: waiting for a peer to report master, to clone it.
    WaitingForMaster,
    /// Data present, postgres stopped: a peer that reports master before the deadline is
    /// followed; else this node leads on its own data (the seed's `grace` rule).
    Electing { deadline: Timestamp },
    /// initdb running.
    Initializing,
    /// pg_basebackup from this peer running.
    Cloning { from: PeerId },
    /// pg_ctl start running.
    Starting { target: StartAs },
    /// Postgres started or adopted; waiting for it to answer (the seed's monitor step 1).
    /// `expect` is how it was started, `None` when adopted.
    WaitingForLocal { expect: Option<StartAs> },
    /// Serving as master and watching the peers (monitor step 2).
    Master,
    /// Streaming from `upstream` and counting its failures (monitor step 3).
    Replica { upstream: PeerId },
    /// pg_promote running (monitor step 4); `upstream` was the master.
    Promoting { upstream: PeerId },
    /// Releasing the VIP and stopping postgres, then `then`.
    SteppingDown { then: AfterStop },
    /// Stopped by the split-brain rule; stays so, across restarts, until `recover`.
    Fenced,
    /// Refused to go on: acting would destroy data pgha cannot prove is its own (foreign
    /// files, another cluster's data) or the configuration is wrong in a way only the peers
    /// reveal (two nodes with one index). Does nothing destructive; probes of the peers go
    /// on. An operator fixes the cause and restarts the daemon.
    Halted,
    /// Stopped by an operator's step-down (a switchover): waits for a peer to report master,
    /// then rejoins it; never leads on its own. `recover` makes it elect again.
    SteppedDown,
    /// A master that lost touch with the replica that could replace it for
    /// `master_give_up` (isolation = "fence") stopped its postgres, so it acknowledges no
    /// write the replica's promotion would lose. Leaves when a peer answers again: a master is
    /// followed (or re-cloned), else it elects as a node with data. Not kept across restarts.
    Isolated,
}

/// What a node does once a step-down has stopped its postgres.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AfterStop {
    /// Stay stopped until an operator runs `recover`.
    Fence,
    /// Re-clone from this peer and follow it.
    Rejoin { from: PeerId },
    /// Start over as a node with data (the grace rule).
    Elect,
    /// Wait, stopped, for a new master to rejoin ([`State::SteppedDown`]).
    WaitForMaster,
    /// Wait, stopped, for a peer to answer ([`State::Isolated`]).
    Isolate,
}

impl State {
    /// A stable snake_case name for logs, the journal and the API.
    pub fn name(&self) -> &'static str {
        match self {
            State::Init => "init",
            State::Discovering { .. } => "discovering",
            State::WaitingForMaster => "waiting_for_master",
            State::Electing { .. } => "electing",
            State::Initializing => "initializing",
            State::Cloning { .. } => "cloning",
            State::Starting { .. } => "starting",
            State::WaitingForLocal { .. } => "waiting_for_local",
            State::Master => "master",
            State::Replica { .. } => "replica",
            State::Promoting { .. } => "promoting",
            State::SteppingDown { .. } => "stepping_down",
            State::Fenced => "fenced",
            State::Halted => "halted",
            State::SteppedDown => "stepped_down",
            State::Isolated => "isolated",
        }
    }

    /// The role the local postgres has, or is being given, in this state.
    pub fn role(&self) -> Role {
        match self {
            State::Master => Role::Master,
            State::Replica { .. } | State::Promoting { .. } => Role::Replica,
            _ => Role::None,
        }
    }
}

/// Up to this many failure times are kept as evidence in a reason.
pub const EVIDENCE: usize = 8;

/// Consecutive failed probes of one server: the evidence for a promotion or a step-down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    pub count: u32,
    /// The times of the first [`EVIDENCE`] failures of the run.
    pub at: [Timestamp; EVIDENCE],
    pub last: Option<ProbeResult>,
}

impl Failures {
    pub fn record(&mut self, now: Timestamp, result: ProbeResult) {
        if (self.count as usize) < EVIDENCE {
            self.at[self.count as usize] = now;
        }
        self.count = self.count.saturating_add(1);
        self.last = Some(result);
    }

    pub fn clear(&mut self) {
        *self = Failures::default();
    }

    pub fn times(&self) -> &[Timestamp] {
        &self.at[..(self.count as usize).min(EVIDENCE)]
    }
}

/// Why a transition happened, with its evidence. Peers are named by [`PeerId`]; render with
/// [`Reason::describe`] to get names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Empty data dir and index 0: looking for an existing master before initdb.
    BootstrapDiscover { index: u32 },
    /// Empty data dir and index > 0 (or data held before): waiting for a master to clone.
    BootstrapWait { index: u32, held_data: bool },
    /// No peer reported master during discovery: initdb.
    NoMasterFound { waited_ms: u64 },
    /// Data present at start, postgres stopped: electing.
    DataPresent {
        timeline: Timeline,
        was_master: bool,
    },
    /// Postgres already running at start: adopted without a restart.
    AdoptRunning,
    /// The fence marker was set at start.
    FencedAtStart,
    /// Replication disabled: this node is master.
    Standalone,
    /// A peer reported master: follow it with the local data.
    MasterFound { peer: PeerId, timeline: Timeline },
    /// A peer reported master but the local data cannot follow it: clone.
    MustClone {
        peer: PeerId,
        peer_timeline: Timeline,
        local: Option<(Timeline, bool)>,
    },
    /// No peer reported master within grace: lead on the local data.
    GraceExpired {
        grace_ms: u64,
        waited_ms: u64,
        last: [Option<ProbeResult>; MAX_PEERS],
    },
    /// A command this state waited for succeeded.
    Done {
        command: CommandKind,
        duration_ms: u64,
    },
    /// A command this state waited for failed.
    CommandFailed {
        command: CommandKind,
        failure: Failure,
    },
    /// The local postgres answered with this role.
    LocalAnswered { role: Role },
    /// The local postgres stopped answering.
    LocalDown { failures: Failures },
    /// The master stopped answering: promotion.
    MasterUnreachable {
        peer: PeerId,
        failures: Failures,
        connect_timeout_ms: u64,
    },
    /// The master reported itself a replica: no master in the cluster.
    MasterIsReplica { peer: PeerId },
    /// Another peer is the master now (star): follow it.
    NewMaster { peer: PeerId, timeline: Timeline },
    /// A peer reported master while this node is master.
    SplitBrain {
        peer: PeerId,
        local_timeline: Option<Timeline>,
        peer_timeline: Timeline,
        rule: SplitBrainRule,
    },
    /// An operator request was carried out.
    Operator { request: OperatorRequest },
    /// An operator request was refused in this state.
    OperatorRefused { request: OperatorRequest },
    /// The local replica has stayed on an older timeline than its master for longer than
    /// the transition bound: its data went past the fork point and cannot follow. Re-clone.
    CannotFollow {
        peer: PeerId,
        local_timeline: Timeline,
        peer_timeline: Timeline,
        behind_ms: u64,
    },
    /// The local replica's replay position has not moved for twice the transition bound
    /// while its master kept writing: it is not streaming (its history diverged). Re-clone.
    NotStreaming {
        peer: PeerId,
        replay_lsn: Lsn,
        master_lsn: Lsn,
        stalled_ms: u64,
    },
    /// The local data is on a timeline whose master is gone (the upstream answers as replica
    /// or fails), and the only master left is on an older timeline: re-clone from it.
    OrphanedTimeline {
        peer: PeerId,
        local_timeline: Timeline,
        peer_timeline: Timeline,
    },
    /// A re-clone from `peer` was refused: the local data is another cluster's (its system
    /// identifier differs from the peer's and pgha never recorded it). Halted.
    ForeignCluster {
        peer: PeerId,
        local_sysid: u64,
        peer_sysid: u64,
    },
    /// `command` was refused: the data dir holds files that are not a PostgreSQL cluster.
    /// Halted.
    ForeignFiles { command: CommandKind },
    /// `peer`'s daemon reports this node's own index: a configuration mistake. Halted
    /// rather than bootstrap or lead beside it.
    SameIndex { peer: PeerId, index: u32 },
    /// A basebackup from `from` completed and replaced local data, which the shell set aside
    /// (per `[postgres] keep_discarded`) under a name derived from the journal's run and
    /// this command id: `<data_dir>.pgha-discarded-r<run>-c<set_aside>`.
    Recloned {
        from: PeerId,
        duration_ms: u64,
        set_aside: CommandId,
    },
    /// An operator's promote refused: the master this replica follows is alive and healthy
    /// (its last probe answered master, with no failure since). Promoting now would make two
    /// masters; a switchover (`pgha promote --force`) stops the master first.
    PromoteRefusedMasterHealthy { peer: PeerId, timeline: Timeline },
    /// An operator's step-down refused: no peer answers as a healthy replica, so no one could
    /// take over.
    StepDownRefusedNoReplica,
    /// The wait for a master (discovery or grace) ended while this peer answered alive but
    /// overloaded: it may be the master. Waiting on rather than leading or running initdb.
    PeerOverloaded { peer: PeerId },
    /// A master whose own postgres gave no sign of life (an answer, "too many clients",
    /// "starting up" or "shutting down" within the bound) for `silent_ms` >= `bound_ms`
    /// (`replication.master_give_up`): it may be hung with its backends still committing, so
    /// it kills them (immediate stop) before the replica's takeover bound can pass.
    LocalSilent {
        silent_ms: u64,
        bound_ms: u64,
        last: Option<ProbeResult>,
    },
    /// A master out of touch (no answer from its postgres nor its daemon) for `silent_ms` >=
    /// `bound_ms` with `peer`, a replica that could promote (isolation = "fence"): it stops
    /// its postgres so it acknowledges no write that the promotion would lose.
    Isolated {
        peer: PeerId,
        silent_ms: u64,
        bound_ms: u64,
    },
    /// An isolated node heard from `peer` again: it elects (a master found is followed).
    PeerReachable { peer: PeerId },
    /// `peer`'s data is on a newer timeline than this master's (whatever the peer's state:
    /// shutting down, fenced): this node's timeline was left behind by a promotion, so it
    /// stops serving and waits for a master to rejoin.
    PeerOnNewerTimeline {
        peer: PeerId,
        peer_timeline: Timeline,
        local_timeline: Timeline,
    },
    /// The wait for a master ended, but `peer`'s data is more advanced than the local data
    /// (newer timeline, or ran as master, or further on one timeline; index breaks ties)
    /// and it may lead: waiting for it rather than leading on less advanced data.
    PeerAhead {
        peer: PeerId,
        peer_data: DataPosition,
        peer_standing: Standing,
        local: Option<DataPosition>,
    },
    /// `peer` reports master but is behind this node's data, which ran as master (an older
    /// timeline, or one timeline and a smaller position): re-cloning from it would discard
    /// writes this node acknowledged. Fenced until an operator runs `recover --force`.
    PeerBehind {
        peer: PeerId,
        peer_timeline: Timeline,
        peer_lsn: Lsn,
        local: DataPosition,
    },
    /// `peer`, a replica of this master, reports `failures` consecutive failed probes of it:
    /// one more and it promotes, though this master hears it (a one-way partition). With
    /// isolation = "fence" the master stops now, as when it hears nothing at all.
    ReplicaLosingSight { peer: PeerId, failures: u32 },
    /// The wait for a master ended while `peer`'s daemon says it is master or becoming one
    /// (promoting, started as master and not yet answering, or a replica of this node counting
    /// failed probes of it), though its postgres has not answered "master" yet: waiting for it
    /// rather than leading beside it.
    PeerLeading { peer: PeerId },
}

impl Reason {
    /// True for a refused operator request (the node changed nothing).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Reason::OperatorRefused { .. }
                | Reason::PromoteRefusedMasterHealthy { .. }
                | Reason::StepDownRefusedNoReplica
        )
    }

    /// A stable code for the journal's `reason_code` column and for tools.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::BootstrapDiscover { .. } => "bootstrap_discover",
            Reason::BootstrapWait { .. } => "bootstrap_wait",
            Reason::NoMasterFound { .. } => "no_master_found",
            Reason::DataPresent { .. } => "data_present",
            Reason::AdoptRunning => "adopt_running",
            Reason::FencedAtStart => "fenced_at_start",
            Reason::Standalone => "standalone",
            Reason::MasterFound { .. } => "master_found",
            Reason::MustClone { .. } => "must_clone",
            Reason::GraceExpired { .. } => "grace_expired",
            Reason::Done { .. } => "command_done",
            Reason::CommandFailed { .. } => "command_failed",
            Reason::LocalAnswered { .. } => "local_answered",
            Reason::LocalDown { .. } => "local_down",
            Reason::MasterUnreachable { .. } => "master_unreachable",
            Reason::MasterIsReplica { .. } => "master_is_replica",
            Reason::NewMaster { .. } => "new_master",
            Reason::SplitBrain { .. } => "split_brain",
            Reason::Operator { .. } => "operator",
            Reason::OperatorRefused { .. } => "operator_refused",
            Reason::CannotFollow { .. } => "cannot_follow",
            Reason::NotStreaming { .. } => "not_streaming",
            Reason::OrphanedTimeline { .. } => "orphaned_timeline",
            Reason::ForeignCluster { .. } => "foreign_cluster",
            Reason::ForeignFiles { .. } => "foreign_files",
            Reason::SameIndex { .. } => "same_index",
            Reason::Recloned { .. } => "recloned",
            Reason::PromoteRefusedMasterHealthy { .. } => "promote_refused_master_healthy",
            Reason::StepDownRefusedNoReplica => "step_down_refused_no_replica",
            Reason::PeerOverloaded { .. } => "peer_overloaded",
            Reason::LocalSilent { .. } => "local_silent",
            Reason::Isolated { .. } => "isolated",
            Reason::PeerReachable { .. } => "peer_reachable",
            Reason::PeerOnNewerTimeline { .. } => "peer_on_newer_timeline",
            Reason::PeerAhead { .. } => "peer_ahead",
            Reason::PeerBehind { .. } => "peer_behind",
            Reason::ReplicaLosingSight { .. } => "replica_losing_sight",
            Reason::PeerLeading { .. } => "peer_leading",
        }
    }

    /// One line of text, with peer names from `config`.
    pub fn describe<'a>(&'a self, config: &'a Config) -> Describe<'a> {
        Describe {
            reason: self,
            config,
        }
    }
}

/// [`Reason`] rendered as one line.
#[derive(Debug)]
pub struct Describe<'a> {
    reason: &'a Reason,
    config: &'a Config,
}

/// "timeline 2 at 0/3000060, ran as master", or "no data".
fn position(d: Option<DataPosition>) -> String {
    match d {
        Some(d) => format!(
            "timeline {} at {}{}",
            d.timeline,
            d.lsn,
            if d.was_master { ", ran as master" } else { "" }
        ),
        None => "no data".to_string(),
    }
}

/// Milliseconds as seconds for people: "15 s", "0.5 s", "1.25 s".
pub fn secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        let frac = format!("{:03}", ms % 1000);
        format!("{}.{} s", ms / 1000, frac.trim_end_matches('0'))
    }
}

impl std::fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.config;
        match *self.reason {
            Reason::BootstrapDiscover { index } => {
                write!(
                    f,
                    "empty data dir, index {index}: checking that no peer is master before initdb"
                )
            }
            Reason::BootstrapWait {
                index,
                held_data: false,
            } => {
                write!(
                    f,
                    "empty data dir, index {index}: waiting for a master to clone"
                )
            }
            Reason::BootstrapWait {
                held_data: true, ..
            } => write!(
                f,
                "empty data dir on a node that held data before: refusing initdb, waiting for a master to clone"
            ),
            Reason::NoMasterFound { waited_ms } => {
                write!(
                    f,
                    "no peer reported master within {}: initdb as the first master",
                    secs(waited_ms)
                )
            }
            Reason::DataPresent {
                timeline,
                was_master,
            } => write!(
                f,
                "data dir present (timeline {timeline}, last ran as {}): looking for a master",
                if was_master { "master" } else { "replica" }
            ),
            Reason::AdoptRunning => write!(f, "postgres already running: adopted without restart"),
            Reason::FencedAtStart => write!(
                f,
                "fence marker set by an earlier split-brain stop: waiting for recover"
            ),
            Reason::Standalone => write!(f, "replication disabled: standalone master"),
            Reason::MasterFound { peer, timeline } => {
                write!(
                    f,
                    "{} reports master on timeline {timeline}: following it",
                    c.peer_name(peer)
                )
            }
            Reason::MustClone {
                peer,
                peer_timeline,
                local,
            } => match local {
                None => write!(
                    f,
                    "{} reports master on timeline {peer_timeline}: cloning it",
                    c.peer_name(peer)
                ),
                Some((tl, was_master)) => write!(
                    f,
                    "{} reports master on timeline {peer_timeline}; local data (timeline {tl}{}) cannot follow: re-cloning",
                    c.peer_name(peer),
                    if was_master { ", ran as master" } else { "" }
                ),
            },
            Reason::GraceExpired {
                grace_ms,
                waited_ms,
                last,
            } => {
                write!(
                    f,
                    "no master seen within grace of {} (waited {})",
                    secs(grace_ms),
                    secs(waited_ms)
                )?;
                for (i, r) in last.iter().enumerate() {
                    if let Some(r) = r {
                        write!(f, "; {} last: {}", c.peer_name(PeerId(i as u8)), r.name())?;
                    }
                }
                write!(f, ": leading on local data")
            }
            Reason::Done {
                command,
                duration_ms,
            } => write!(f, "{} succeeded in {}", command.name(), secs(duration_ms)),
            Reason::CommandFailed { command, failure } => {
                write!(f, "{} failed: {failure:?}", command.name())
            }
            Reason::LocalAnswered { role } => {
                write!(f, "local postgres answers as {}", role.name())
            }
            Reason::LocalDown { failures } => write!(
                f,
                "local postgres down: {} consecutive failed probes, last {}",
                failures.count,
                failures.last.map(ProbeResult::name).unwrap_or("?")
            ),
            Reason::MasterUnreachable {
                peer,
                failures,
                connect_timeout_ms,
            } => {
                write!(
                    f,
                    "master {} unreachable: {} consecutive failures at ",
                    c.peer_name(peer),
                    failures.count
                )?;
                for (i, t) in failures.times().iter().enumerate() {
                    write!(f, "{}{t}", if i > 0 { ", " } else { "" })?;
                }
                write!(
                    f,
                    "; last {} (connect_timeout {})",
                    failures.last.map(ProbeResult::name).unwrap_or("?"),
                    secs(connect_timeout_ms)
                )
            }
            Reason::MasterIsReplica { peer } => write!(
                f,
                "master {} reports itself a replica: no master left",
                c.peer_name(peer)
            ),
            Reason::NewMaster { peer, timeline } => {
                write!(
                    f,
                    "{} is master on newer timeline {timeline}: following it",
                    c.peer_name(peer)
                )
            }
            Reason::SplitBrain {
                peer,
                local_timeline,
                peer_timeline,
                rule,
            } => write!(
                f,
                "split-brain: {} reports master (timeline {peer_timeline}) while local is master (timeline {}); rule {}",
                c.peer_name(peer),
                local_timeline
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "?".into()),
                rule.name()
            ),
            Reason::Operator { request } => write!(f, "operator requested {}", request.name()),
            Reason::OperatorRefused { request } => write!(
                f,
                "operator request {} refused in this state",
                request.name()
            ),
            Reason::CannotFollow {
                peer,
                local_timeline,
                peer_timeline,
                behind_ms,
            } => write!(
                f,
                "local replica still on timeline {local_timeline} after {} while master {} is on timeline {peer_timeline}: its data cannot follow, re-cloning",
                secs(behind_ms),
                c.peer_name(peer)
            ),
            Reason::NotStreaming {
                peer,
                replay_lsn,
                master_lsn,
                stalled_ms,
            } => write!(
                f,
                "local replica stuck at {replay_lsn} for {} while master {} wrote on to {master_lsn}: not streaming, re-cloning",
                secs(stalled_ms),
                c.peer_name(peer)
            ),
            Reason::OrphanedTimeline {
                peer,
                local_timeline,
                peer_timeline,
            } => write!(
                f,
                "local data is on timeline {local_timeline}, whose master is gone; {} is master on timeline {peer_timeline}: re-cloning from it",
                c.peer_name(peer)
            ),
            Reason::ForeignCluster {
                peer,
                local_sysid,
                peer_sysid,
            } => write!(
                f,
                "refusing to replace the local data: its system identifier {} is not {}'s ({peer_sysid}) and pgha never recorded it as this node's: another cluster's data? Halted: move it away and restart the daemon",
                if local_sysid == 0 {
                    "(unreadable)".to_string()
                } else {
                    local_sysid.to_string()
                },
                c.peer_name(peer)
            ),
            Reason::ForeignFiles { command } => write!(
                f,
                "{} refused: the data dir holds files that are not a PostgreSQL cluster. Halted: empty or move it and restart the daemon",
                command.name()
            ),
            Reason::SameIndex { peer, index } => write!(
                f,
                "{} reports index {index}, this node's own index: two nodes with one index would both bootstrap and lead. Halted: fix node.index and restart the daemon",
                c.peer_name(peer)
            ),
            Reason::Recloned {
                from,
                duration_ms,
                set_aside,
            } => write!(
                f,
                "basebackup from {} succeeded in {}: it replaced the local data, set aside as <data_dir>.pgha-discarded-r<run>-c{} (when [postgres] keep_discarded > 0)",
                c.peer_name(from),
                secs(duration_ms),
                set_aside.0
            ),
            Reason::PromoteRefusedMasterHealthy { peer, timeline } => write!(
                f,
                "operator request promote refused: master {} is alive and healthy (its last probe answered master on timeline {timeline}, no failure since); promoting now would make two masters. `pgha promote --force` switches over: {} steps down first",
                c.peer_name(peer),
                c.peer_name(peer)
            ),
            Reason::StepDownRefusedNoReplica => write!(
                f,
                "operator request step-down refused: no peer answers as a healthy replica to take over"
            ),
            Reason::PeerOverloaded { peer } => write!(
                f,
                "{} answers but is overloaded (too many connections or out of resources), so its role is unknown and it may be the master: waiting for it rather than leading",
                c.peer_name(peer)
            ),
            Reason::LocalSilent {
                silent_ms,
                bound_ms,
                last,
            } => write!(
                f,
                "local postgres gave no sign of life for {} (master_give_up {}; last: {}): it may be hung with backends still committing; killing them before the replica may promote",
                secs(silent_ms),
                secs(bound_ms),
                last.map_or("nothing", |r| r.name())
            ),
            Reason::Isolated {
                peer,
                silent_ms,
                bound_ms,
            } => write!(
                f,
                "no answer from {} (postgres or daemon) for {} (master_give_up {}), a replica that could promote: stopping postgres so no write is acknowledged that a promotion would lose (isolation = \"fence\")",
                c.peer_name(peer),
                secs(silent_ms),
                secs(bound_ms)
            ),
            Reason::PeerReachable { peer } => {
                write!(f, "{} answers again: electing", c.peer_name(peer))
            }
            Reason::PeerOnNewerTimeline {
                peer,
                peer_timeline,
                local_timeline,
            } => write!(
                f,
                "{}'s data is on timeline {peer_timeline}, newer than this master's {local_timeline}: a promotion left this timeline behind; stopping and waiting for a master to rejoin",
                c.peer_name(peer)
            ),
            Reason::PeerAhead {
                peer,
                peer_data,
                peer_standing,
                local,
            } => write!(
                f,
                "{}'s data ({}) is more advanced than the local data ({}): waiting for it to lead{}",
                c.peer_name(peer),
                position(Some(peer_data)),
                position(local),
                if peer_standing == Standing::Held {
                    " (it is held: fenced, halted, stepped down or isolated; `pgha recover` it, or `pgha recover --force` here to lead on the less advanced data)"
                } else {
                    ""
                }
            ),
            Reason::PeerBehind {
                peer,
                peer_timeline,
                peer_lsn,
                local,
            } => write!(
                f,
                "{} reports master on timeline {peer_timeline} at {peer_lsn}, behind the local data ({}) which ran as master: re-cloning would discard writes it acknowledged. Fenced: `pgha recover --force` re-clones anyway (the data is set aside)",
                c.peer_name(peer),
                position(Some(local))
            ),
            Reason::ReplicaLosingSight { peer, failures } => write!(
                f,
                "{} reports {failures} consecutive failed probes of this master: one more and it promotes, though this master hears it (a one-way partition); stopping postgres so no write is acknowledged that the promotion would lose (isolation = \"fence\")",
                c.peer_name(peer)
            ),
            Reason::PeerLeading { peer } => write!(
                f,
                "{}'s daemon says it is master or becoming one (promoting, or counting failed probes of this node towards a promotion): waiting for it rather than leading beside it",
                c.peer_name(peer)
            ),
        }
    }
}

/// One state change (or one operator request handled in place), with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub at: Timestamp,
    pub from: State,
    pub to: State,
    pub reason: Reason,
}
