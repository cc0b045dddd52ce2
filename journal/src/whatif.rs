//! What-if replay: the recorded world, replayed against a core with changed settings.
//!
//! The recorded inputs are the world's answers to the original node's commands. A node with
//! other settings issues other commands (other ids, other times), so the recording is
//! translated, not replayed verbatim:
//! * a recorded probe result goes to the alternate node's latest probe of the same server (it
//!   is dropped when that node has none outstanding, and it times out by its own deadline);
//! * a recorded command outcome goes to the alternate node's oldest outstanding command of the
//!   same kind (dropped when there is none: a command the alternate never issued);
//! * the alternate node's timers fire at the recorded timer calls when due, or at their own
//!   deadline when the original node had nothing due then;
//! * `Started` and operator requests are delivered as recorded.
//!
//! With the recorded settings the translation is the identity, so the report says "no
//! difference". Once the decisions differ, later inputs are the world as it answered the
//! *original* decisions: the report states the first difference and then compares decisions
//! (promotions, self-elections, step-downs, fences, re-clones) by kind and order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgha_core::{
    Command, CommandId, CommandKind, Config, DataDir, Event, Failure, Input, LocalFacts, MAX_PEERS,
    Node, PeerId, ProbeResult, StartAs, State, Timestamp, Transition,
};
use pgha_sim::{PgData, PgRole, PgRun, Phase, Postgres};
use serde::Serialize;

use crate::codec::{CODEC_VERSION, changes_since};
use crate::read::{JournalFile, Run};
use crate::replay::apply;
use crate::time::{duration, format_utc, format_utc_time};
use crate::{JournalError, describe};

/// A decision: a transition into a state that acts on the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// A verb phrase: "promoted", "elected itself master", "stepped down", ...
    pub what: String,
    /// The reason code and the one-line reason.
    pub code: String,
    pub reason: String,
    pub mono_ms: u64,
    pub wall_ms: u64,
}

/// The verb for a transition that is a decision, `None` for consequences (a command
/// finished, postgres answered).
pub fn decision_verb(t: &Transition, config: &Config) -> Option<String> {
    Some(match t.to {
        State::Promoting { .. } => "promoted".into(),
        State::Starting {
            target: StartAs::Master,
        } if t.reason.code() == "grace_expired" => "elected itself master (grace expired)".into(),
        State::SteppingDown { .. } => "stepped down".into(),
        State::Fenced if !matches!(t.from, State::Fenced) => "fenced itself".into(),
        State::Cloning { from } => format!("cloned from {}", config.peer_name(from)),
        State::Initializing => "ran initdb".into(),
        _ => return None,
    })
}

/// One run compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunWhatIf {
    pub run: u64,
    pub node: String,
    pub start_wall_ms: u64,
    pub end_wall_ms: u64,
    /// Why the run could not be compared (for example it starts from a snapshot).
    pub skipped: Option<String>,
    /// For a run an older pgha wrote: how it was compared, and that differences may come
    /// from the newer core rather than the settings.
    pub note: Option<String>,
    /// The row and a text of the first step whose outputs differ.
    pub first_difference: Option<(u64, String)>,
    pub original: Vec<Decision>,
    pub alternate: Vec<Decision>,
    /// One line per decision: how it changed.
    pub lines: Vec<String>,
}

/// A what-if report for one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WhatIfReport {
    pub file: PathBuf,
    pub settings: Vec<(String, String)>,
    pub runs: Vec<RunWhatIf>,
}

impl WhatIfReport {
    /// True when no run's decisions or commands differ.
    pub fn no_difference(&self) -> bool {
        self.runs.iter().all(|r| r.first_difference.is_none())
    }
}

impl std::fmt::Display for WhatIfReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            f,
            "what-if for {} with {}",
            self.file.display(),
            if settings.is_empty() {
                "the recorded settings".to_string()
            } else {
                settings.join(", ")
            }
        )?;
        for r in &self.runs {
            writeln!(
                f,
                "run {} ({}, {} to {}):",
                r.run,
                r.node,
                format_utc(r.start_wall_ms),
                format_utc_time(r.end_wall_ms)
            )?;
            if let Some(why) = &r.skipped {
                writeln!(f, "  skipped: {why}")?;
                continue;
            }
            if let Some(note) = &r.note {
                writeln!(f, "  note: {note}")?;
            }
            match &r.first_difference {
                None => {
                    writeln!(f, "  no difference: every transition and command the same")?;
                    continue;
                }
                Some((seq, what)) => writeln!(f, "  first difference at row {seq}: {what}")?,
            }
            writeln!(
                f,
                "  (from there on the recording is the world answering the recorded decisions, e.g. a peer that stopped on split-brain: later differences are indicative)"
            )?;
            for l in &r.lines {
                writeln!(f, "  {l}")?;
            }
        }
        Ok(())
    }
}

/// Parses `key=value` settings, applies them to each run's recorded config and replays.
pub fn what_if_file(
    path: impl AsRef<Path>,
    settings: &[(String, String)],
) -> Result<WhatIfReport, JournalError> {
    let file = JournalFile::read(path)?;
    what_if(&file, settings)
}

/// Applies `settings` to a config; the error names the key or value.
pub fn apply_settings(
    config: &mut Config,
    settings: &[(String, String)],
) -> Result<(), JournalError> {
    for (k, v) in settings {
        config.set(k, v).map_err(|e| JournalError::Setting {
            key: k.clone(),
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

/// Splits `key=value`.
pub fn parse_setting(s: &str) -> Result<(String, String), JournalError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(JournalError::Setting {
            key: s.to_string(),
            detail: "expected key=value".into(),
        }),
    }
}

pub fn what_if(
    file: &JournalFile,
    settings: &[(String, String)],
) -> Result<WhatIfReport, JournalError> {
    // Check the settings once, even for a journal without runs.
    let mut probe = Config::ha_pair("a", 0, "b", 1);
    if let Some(r) = file
        .runs
        .iter()
        .find(|r| r.header.config.validate().is_ok())
    {
        probe = r.header.config.clone();
    }
    apply_settings(&mut probe, settings)?;
    let mut runs = Vec::new();
    for run in &file.runs {
        runs.push(what_if_run(run, settings)?);
    }
    Ok(WhatIfReport {
        file: file.path.clone(),
        settings: settings.to_vec(),
        runs,
    })
}

/// Whether a command changes what the local postgres is.
fn affects_local(k: CommandKind) -> bool {
    matches!(
        k,
        CommandKind::Promote
            | CommandKind::StartPostgres(_)
            | CommandKind::StopPostgres(_)
            | CommandKind::InitDataDir
            | CommandKind::Basebackup { .. }
    )
}

/// The alternate node's local postgres once the alternate's actions differ from the
/// recording's: the simulator's model of one node's postgres and data ([`Postgres`]), started
/// from what the recording last showed of them (the data dir at start, each local answer), and
/// the latest recorded answer of each peer (a clone copies the peer's data).
struct Local {
    /// `None` while the recorded local answers apply.
    own: Option<Postgres>,
    seen: Postgres,
    peers: [Option<ProbeResult>; MAX_PEERS],
    /// The node index of each peer (the model names a replica's upstream by node).
    peer_nodes: Vec<usize>,
}

impl Local {
    fn new(config: &Config) -> Local {
        Local {
            own: None,
            seen: Postgres::default(),
            peers: [None; MAX_PEERS],
            peer_nodes: config.peers.iter().map(|p| p.index as usize).collect(),
        }
    }

    fn node(&self, p: PeerId) -> usize {
        self.peer_nodes
            .get(p.index())
            .copied()
            .unwrap_or(usize::MAX)
    }

    fn peer(&self, node: usize) -> Option<PeerId> {
        self.peer_nodes
            .iter()
            .position(|&n| n == node)
            .map(|k| PeerId(k as u8))
    }

    /// From here on the alternate's local postgres is its own.
    fn diverge(&mut self) -> &mut Postgres {
        self.own.get_or_insert_with(|| self.seen.clone())
    }

    /// What a local probe of the alternate's finds now (`None`: no answer, a hung server).
    fn probe(&mut self) -> Option<ProbeResult> {
        self.stream();
        self.own
            .as_ref()
            .unwrap_or(&self.seen)
            .probe(|n| self.peer(n))
    }

    /// The alternate's own replica receives what its upstream last answered it had written,
    /// when both are on one timeline (the simulator's streaming, as far as the recording
    /// shows the upstream).
    fn stream(&mut self) {
        let Some(pg) = self.own.as_mut() else {
            return;
        };
        let Some(PgRun {
            role: PgRole::Replica { upstream },
            phase: Phase::Up,
        }) = pg.run
        else {
            return;
        };
        let at = self.peer_nodes.iter().position(|&n| n == upstream);
        if let (false, Some(ProbeResult::Master { timeline, lsn }), Some(d)) = (
            pg.hung,
            at.and_then(|k| self.peers.get(k).copied().flatten()),
            pg.data.as_mut(),
        ) && d.timeline == timeline
        {
            d.lsn = d.lsn.max(lsn.0);
        }
    }

    /// What a local probe finds: the model's answer once it is the alternate's own (`None`
    /// for no answer: a hung server), else the recorded one, which the model learns.
    fn answer(&mut self, recorded: ProbeResult) -> Option<ProbeResult> {
        if self.own.is_some() {
            return self.probe();
        }
        let upstream = match recorded {
            ProbeResult::Replica {
                upstream: Some(u), ..
            } => self.node(u),
            _ => usize::MAX,
        };
        let pg = &mut self.seen;
        let keep = |pg: &Postgres| pg.run.map_or(PgRole::Master, |r| r.role);
        let up = |role| {
            Some(PgRun {
                role,
                phase: Phase::Up,
            })
        };
        let (timeline, lsn, role) = match recorded {
            ProbeResult::Master { timeline, lsn } => (timeline, lsn, PgRole::Master),
            ProbeResult::Replica {
                timeline,
                replay_lsn,
                ..
            } => (timeline, replay_lsn, PgRole::Replica { upstream }),
            ProbeResult::StartingUp | ProbeResult::ShuttingDown => {
                let phase = if recorded == ProbeResult::StartingUp {
                    Phase::StartingUp
                } else {
                    Phase::ShuttingDown
                };
                pg.run = Some(PgRun {
                    role: keep(pg),
                    phase,
                });
                pg.hung = false;
                return Some(recorded);
            }
            // Not running: whether a new server would be full again is not known.
            ProbeResult::Refused => {
                pg.stop();
                pg.exhausted = false;
                return Some(recorded);
            }
            ProbeResult::Timeout => {
                pg.run = pg.run.or(up(keep(pg)));
                pg.hung = true;
                return Some(recorded);
            }
            ProbeResult::Overloaded => {
                pg.run = up(keep(pg));
                pg.hung = false;
                pg.exhausted = true;
                return Some(recorded);
            }
            // An error says nothing of the server's state.
            ProbeResult::AuthFailed | ProbeResult::OtherError => return Some(recorded),
        };
        pg.run = up(role);
        pg.hung = false;
        pg.exhausted = false;
        let data = pg.data.get_or_insert(PgData {
            timeline,
            lsn: lsn.0,
            branch: 0,
            ancestry: Vec::new(),
            was_master: false,
        });
        data.timeline = timeline;
        data.lsn = lsn.0;
        data.was_master = role == PgRole::Master;
        pg.held_data = true;
        Some(recorded)
    }

    /// The data dir a run starts with.
    fn started(&mut self, facts: &LocalFacts) {
        let pg = &mut self.seen;
        match facts.data_dir {
            DataDir::Empty { held_data } => {
                pg.data = None;
                pg.held_data = held_data;
            }
            DataDir::Present {
                timeline,
                lsn,
                was_master,
            } => {
                pg.data = Some(PgData {
                    timeline,
                    lsn: lsn.0,
                    branch: 0,
                    ancestry: Vec::new(),
                    was_master,
                });
                pg.held_data = true;
            }
        }
        // Running in an unknown role: the first local answer tells.
        pg.run = facts.postgres_running.then_some(PgRun {
            role: if matches!(
                facts.data_dir,
                DataDir::Present {
                    was_master: true,
                    ..
                }
            ) {
                PgRole::Master
            } else {
                PgRole::Replica {
                    upstream: usize::MAX,
                }
            },
            phase: Phase::Up,
        });
    }

    /// An action of the alternate's begins (the simulator's shell does the same at the start
    /// of an action): a start starts up, a stop shuts down (or, on a hung postmaster, kills it
    /// by `end`).
    fn begin(&mut self, kind: CommandKind, end: Timestamp) {
        let role = match kind {
            CommandKind::StartPostgres(StartAs::Master) => Some(PgRole::Master),
            CommandKind::StartPostgres(StartAs::Replica { upstream }) => Some(PgRole::Replica {
                upstream: self.node(upstream),
            }),
            _ => None,
        };
        let Some(pg) = self.own.as_mut() else {
            return;
        };
        if let Some(role) = role {
            pg.begin_start(role);
        } else if let CommandKind::StopPostgres(_) = kind {
            pg.begin_stop(end);
        }
    }

    /// An action of the alternate's ends: its effect on the model, and its outcome (`failed`:
    /// the recording's outcome for such an action, a failure, which stands).
    fn finish(&mut self, kind: CommandKind, failed: Option<Failure>) -> Result<(), Failure> {
        let source = match kind {
            CommandKind::Basebackup { from } => self.peers.get(from.index()).copied().flatten(),
            _ => None,
        };
        let upstream = match kind {
            CommandKind::Follow { upstream } => self.node(upstream),
            _ => usize::MAX,
        };
        let Some(pg) = self.own.as_mut() else {
            return failed.map_or(Ok(()), Err);
        };
        if let Some(f) = failed {
            // A failed start leaves nothing running; a failed stop leaves it running.
            match kind {
                CommandKind::StopPostgres(_) => pg.stop_failed(),
                CommandKind::StartPostgres(_)
                    if pg.run.is_some_and(|r| r.phase == Phase::StartingUp) =>
                {
                    pg.stop()
                }
                _ => {}
            }
            return Err(f);
        }
        match kind {
            CommandKind::InitDataDir if pg.data.is_some() => Err(Failure::Refused),
            CommandKind::InitDataDir => {
                pg.initdb(0);
                Ok(())
            }
            CommandKind::StartPostgres(_) => pg.finish_start(),
            CommandKind::StopPostgres(_) => {
                pg.stop();
                Ok(())
            }
            CommandKind::Promote if pg.can_promote() => {
                pg.promote(0);
                Ok(())
            }
            CommandKind::Promote => Err(Failure::Exit(1)),
            // A copy of the source's data as it last answered, a master.
            CommandKind::Basebackup { .. } => match source {
                Some(ProbeResult::Master { timeline, lsn }) if pg.run.is_none() => {
                    pg.replace_data(PgData {
                        timeline,
                        lsn: lsn.0,
                        branch: 0,
                        ancestry: Vec::new(),
                        was_master: false,
                    });
                    Ok(())
                }
                _ => Err(Failure::Exit(1)),
            },
            CommandKind::Follow { .. } => pg.follow(upstream),
            _ => Ok(()),
        }
    }
}

struct Alt {
    node: Node,
    local_probe: Option<CommandId>,
    peer_probe: [Option<CommandId>; MAX_PEERS],
    daemon_probe: [Option<CommandId>; MAX_PEERS],
    /// Original command id -> the alternate's command of the same kind issued in the same step.
    matched: BTreeMap<CommandId, CommandId>,
    /// Its local postgres (see [`Local`]).
    local: Local,
    /// Outcomes synthesised for alternate actions the recording has no outcome for, and
    /// answers to its local probes once its local postgres is its own (`local.own`).
    synthetic: Vec<(Timestamp, Command, Result<(), Failure>, u64)>,
    /// Per command kind: (outcome, duration) of the recording's first such command.
    typical: BTreeMap<String, (Result<(), Failure>, u64)>,
    decisions: Vec<Decision>,
}

impl Alt {
    fn run(
        &mut self,
        now: Timestamp,
        wall_ms: u64,
        input: Input,
        config: &Config,
        recorded: &[Command],
    ) -> (Vec<Transition>, Vec<Command>) {
        let (ts, cs) = apply(&mut self.node, now, input);
        let mut orig_unmatched: Vec<Command> = recorded.to_vec();
        for c in &cs {
            match c.kind {
                // Once the alternate's local postgres is its own, it answers for itself: the
                // recording may have no local probe then (the original had stopped it).
                CommandKind::ProbeLocal if self.local.own.is_some() => {
                    self.local_probe = None;
                    self.synthetic.push((now.plus(1), *c, Ok(()), 1));
                }
                CommandKind::ProbeLocal => self.local_probe = Some(c.id),
                CommandKind::ProbePeer(p) => {
                    if let Some(slot) = self.peer_probe.get_mut(p.index()) {
                        *slot = Some(c.id);
                    }
                }
                CommandKind::ProbePeerDaemon(p) => {
                    if let Some(slot) = self.daemon_probe.get_mut(p.index()) {
                        *slot = Some(c.id);
                    }
                }
                kind => {
                    if let Some(k) = orig_unmatched.iter().position(|o| o.kind == kind) {
                        let o = orig_unmatched.remove(k);
                        self.matched.insert(o.id, c.id);
                        self.local.begin(kind, now);
                    } else {
                        let (outcome, took) = self
                            .typical
                            .get(&format!("{kind:?}"))
                            .copied()
                            .unwrap_or((Ok(()), 1_000));
                        // An action the recording did not carry out: the local postgres is
                        // the alternate's own from here.
                        if affects_local(kind) {
                            self.local.diverge();
                        }
                        if outcome.is_ok() {
                            self.local.begin(kind, now.plus(took));
                        }
                        self.synthetic.push((now.plus(took), *c, outcome, took));
                    }
                }
            }
        }
        // The recording carried out a local action the alternate did not: its postgres
        // stays as the alternate last saw it.
        self.run_unmatched(&orig_unmatched);
        for t in &ts {
            if let Some(what) = decision_verb(t, config) {
                self.decisions.push(Decision {
                    what,
                    code: t.reason.code().into(),
                    reason: t.reason.describe(config).to_string(),
                    mono_ms: t.at.0,
                    wall_ms,
                });
            }
        }
        (ts, cs)
    }
}

fn what_if_run(run: &Run, settings: &[(String, String)]) -> Result<RunWhatIf, JournalError> {
    let recorded = &run.header.config;
    let mut config = recorded.clone();
    let older = run.older_writer();
    let mut out = RunWhatIf {
        run: run.number,
        node: run.header.node.clone(),
        start_wall_ms: run.wall_ms,
        end_wall_ms: run.steps.last().map_or(run.wall_ms, |s| s.wall_ms),
        skipped: None,
        note: None,
        first_difference: None,
        original: Vec::new(),
        alternate: Vec::new(),
        lines: Vec::new(),
    };
    if run.start.is_some() {
        out.skipped = Some("the run's start was pruned (it begins at a snapshot)".into());
        return Ok(out);
    }
    if let Some(w) = &older {
        if let Err(e) = recorded.validate() {
            out.skipped = Some(format!(
                "written by {w}, whose timings fail this pgha's check ({e}): this pgha's core cannot run it"
            ));
            return Ok(out);
        }
        out.note = Some(format!(
            "written by {w}: replayed with this pgha's core (codec {CODEC_VERSION}), which adds \
             {}; its commands are compared by kind without its peer daemon probes, its transitions \
             by state and reason code; differences may come from the newer core, not the settings",
            changes_since(run.header.codec_version)
        ));
    }
    apply_settings(&mut config, settings)?;
    let mut orig = Node::new(recorded.clone());
    let mut alt = Alt {
        node: Node::new(config.clone()),
        local_probe: None,
        peer_probe: [None; MAX_PEERS],
        daemon_probe: [None; MAX_PEERS],
        matched: BTreeMap::new(),
        local: Local::new(&config),
        synthetic: Vec::new(),
        typical: BTreeMap::new(),
        decisions: Vec::new(),
    };
    let mut kinds: BTreeMap<CommandId, CommandKind> = BTreeMap::new();
    for step in &run.steps {
        for c in &step.commands {
            kinds.insert(c.value.id, c.value.kind);
        }
        if let Input::Event(Event::CommandDone {
            id,
            outcome,
            duration_ms,
        }) = step.input
            && let Some(k) = kinds.get(&id)
        {
            alt.typical
                .entry(format!("{k:?}"))
                .or_insert((outcome, duration_ms));
        }
        for t in &step.transitions {
            if let Some(what) = decision_verb(&t.value, recorded) {
                out.original.push(Decision {
                    what,
                    code: t.value.reason.code().into(),
                    reason: t.value.reason.describe(recorded).to_string(),
                    mono_ms: t.value.at.0,
                    wall_ms: step.wall_ms,
                });
            }
        }
    }
    let wall_at = |step_now: Timestamp, step_wall: u64, t: Timestamp| {
        (step_wall as i128 + t.0 as i128 - step_now.0 as i128).max(0) as u64
    };
    let mut last = (Timestamp::ZERO, run.wall_ms);
    for step in &run.steps {
        let now = step.now;
        let orig_due = orig.poll_timeout();
        let _ = apply(&mut orig, now, step.input);
        let rec_cmds: Vec<Command> = step.commands.iter().map(|c| c.value).collect();
        // Inputs of the alternate's own before this step: synthesised outcomes, and timers
        // the original had no call for.
        let mut guard = 0;
        loop {
            guard += 1;
            let syn = alt
                .synthetic
                .iter()
                .map(|s| s.0)
                .min()
                .filter(|t| *t < now || (*t <= now && step.input != Input::Timeout));
            let timer = alt.node.poll_timeout().filter(|d| {
                *d < now && orig_due.is_none_or(|o| *d < o) && step.input != Input::Timeout
            });
            let (at, input) = match (syn, timer) {
                (Some(s), Some(d)) if d < s => (d, Input::Timeout),
                (Some(s), _) => {
                    let k = alt.synthetic.iter().position(|x| x.0 == s).unwrap_or(0);
                    let (_, c, outcome, took) = alt.synthetic.remove(k);
                    if c.kind == CommandKind::ProbeLocal {
                        // No answer from a hung server: the probe times out by its deadline.
                        let Some(result) = alt.local.probe() else {
                            continue;
                        };
                        (s, Input::Event(Event::LocalProbe { id: c.id, result }))
                    } else {
                        let outcome = alt.local.finish(c.kind, outcome.err());
                        (
                            s,
                            Input::Event(Event::CommandDone {
                                id: c.id,
                                outcome,
                                duration_ms: took,
                            }),
                        )
                    }
                }
                (None, Some(d)) => (d, Input::Timeout),
                (None, None) => break,
            };
            if guard > 100_000 {
                break;
            }
            let at = at.max(last.0);
            let wall = wall_at(last.0, last.1, at);
            let (ts, cs) = alt.run(at, wall, input, &config, &[]);
            // An older core's run: this core's own peer daemon probes are no difference.
            let own_probes_only = older.is_some()
                && ts.is_empty()
                && cs
                    .iter()
                    .all(|c| matches!(c.kind, CommandKind::ProbePeerDaemon(_)));
            if out.first_difference.is_none()
                && (!ts.is_empty() || !cs.is_empty())
                && !own_probes_only
            {
                out.first_difference = Some((
                    step.seq,
                    format!(
                        "at {} the changed settings act on their own: {}",
                        format_utc_time(wall),
                        summary(&ts, &cs, &config)
                    ),
                ));
            }
        }
        let produced = match step.input {
            Input::Timeout => {
                if alt.node.poll_timeout().is_some_and(|d| d <= now) {
                    Some(alt.run(now, step.wall_ms, Input::Timeout, &config, &rec_cmds))
                } else {
                    alt.run_unmatched(&rec_cmds);
                    None
                }
            }
            Input::Event(e) => match translate(&mut alt, e, &kinds) {
                Some(e) => Some(alt.run(now, step.wall_ms, Input::Event(e), &config, &rec_cmds)),
                None => {
                    alt.run_unmatched(&rec_cmds);
                    None
                }
            },
        };
        last = (now, step.wall_ms);
        let (ts, cs) = produced.unwrap_or_default();
        if out.first_difference.is_none() {
            let (same_t, same_c) = if older.is_none() {
                (
                    ts.len() == step.transitions.len()
                        && ts.iter().zip(&step.transitions).all(|(a, b)| *a == b.value),
                    cs.len() == step.commands.len()
                        && cs.iter().zip(&step.commands).all(|(a, b)| *a == b.value),
                )
            } else {
                // An older core's run: command ids and reasons that name them differ once
                // this core issues its peer daemon probes.
                let t = |t: &Transition| (t.at, t.from, t.to, t.reason.code());
                let kinds = cs
                    .iter()
                    .map(|c| c.kind)
                    .filter(|k| !matches!(k, CommandKind::ProbePeerDaemon(_)));
                (
                    ts.iter()
                        .map(t)
                        .eq(step.transitions.iter().map(|r| t(&r.value))),
                    kinds.eq(step.commands.iter().map(|c| c.value.kind)),
                )
            };
            if !same_t || !same_c {
                let rec_t: Vec<Transition> = step.transitions.iter().map(|t| t.value).collect();
                out.first_difference = Some((
                    step.seq,
                    format!(
                        "at {} after {}: recorded {}; with the changes {}",
                        format_utc_time(step.wall_ms),
                        describe::input(&step.input, recorded),
                        summary(&rec_t, &rec_cmds, recorded),
                        summary(&ts, &cs, &config)
                    ),
                ));
            }
        }
    }
    out.alternate = alt.decisions;
    out.lines = compare(&out, settings);
    Ok(out)
}

impl Alt {
    /// The recording's step produced commands but the alternate was not fed: none match.
    fn run_unmatched(&mut self, recorded: &[Command]) {
        if recorded.iter().any(|o| affects_local(o.kind)) {
            self.local.diverge();
        }
    }
}

fn summary(ts: &[Transition], cs: &[Command], config: &Config) -> String {
    let mut parts: Vec<String> = ts
        .iter()
        .map(|t| format!("{} -> {} ({})", t.from.name(), t.to.name(), t.reason.code()))
        .collect();
    let actions: Vec<String> = cs
        .iter()
        .filter(|c| !c.kind.is_probe())
        .map(|c| describe::command(c, config))
        .collect();
    if !actions.is_empty() {
        parts.push(actions.join(", "));
    }
    let probes = cs.iter().filter(|c| c.kind.is_probe()).count();
    if probes > 0 {
        parts.push(format!(
            "{probes} probe{}",
            if probes == 1 { "" } else { "s" }
        ));
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join("; ")
    }
}

fn translate(alt: &mut Alt, e: Event, kinds: &BTreeMap<CommandId, CommandKind>) -> Option<Event> {
    Some(match e {
        Event::LocalProbe { result, .. } => {
            let result = alt.local.answer(result);
            let id = alt.local_probe.take()?;
            Event::LocalProbe {
                id,
                result: result?,
            }
        }
        Event::PeerProbe { peer, result, .. } => {
            if let Some(last) = alt.local.peers.get_mut(peer.index()) {
                *last = Some(result);
            }
            Event::PeerProbe {
                id: alt.peer_probe.get_mut(peer.index())?.take()?,
                peer,
                result,
            }
        }
        Event::PeerDaemon { peer, report, .. } => Event::PeerDaemon {
            id: alt.daemon_probe.get_mut(peer.index())?.take()?,
            peer,
            report,
        },
        Event::CommandDone {
            id,
            outcome,
            duration_ms,
        } => {
            let alt_id = alt.matched.remove(&id)?;
            match (outcome, kinds.get(&id)) {
                // Both did it: the recorded local results apply again.
                (Ok(()), Some(k)) if affects_local(*k) => alt.local.own = None,
                (Err(f), Some(k)) => {
                    let _ = alt.local.finish(*k, Some(f));
                }
                _ => {}
            }
            Event::CommandDone {
                id: alt_id,
                outcome,
                duration_ms,
            }
        }
        Event::Started(facts) => {
            alt.local.started(&facts);
            e
        }
        Event::Operator(_) => e,
        // A hook's outcome changes no decision; its ids are the recorded run's.
        Event::HookDone { .. } => return None,
    })
}

fn compare(r: &RunWhatIf, settings: &[(String, String)]) -> Vec<String> {
    let with: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!("{}={v}", short(k)))
        .collect();
    let with = if with.is_empty() {
        "the recorded settings".to_string()
    } else {
        with.join(", ")
    };
    let mut lines = Vec::new();
    let mut used = vec![false; r.alternate.len()];
    for d in &r.original {
        let m = r
            .alternate
            .iter()
            .enumerate()
            .find(|(i, a)| !used[*i] && a.what == d.what);
        let head = format!(
            "{} {} at {} ({})",
            r.node,
            d.what,
            format_utc_time(d.wall_ms),
            d.reason
        );
        match m {
            Some((i, a)) => {
                used[i] = true;
                let delta = a.mono_ms as i64 - d.mono_ms as i64;
                let when = match delta {
                    0 => "at the same time".to_string(),
                    x if x > 0 => format!("{} later", duration(x as u64)),
                    x => format!("{} earlier", duration(x.unsigned_abs())),
                };
                lines.push(format!(
                    "{head}; with {with} it would have {} at {} ({when}; {})",
                    a.what,
                    format_utc_time(a.wall_ms),
                    a.reason
                ));
            }
            None => lines.push(format!(
                "{head}; with {with} it would not have {} (up to the end of the recording, {})",
                d.what,
                format_utc_time(r.end_wall_ms)
            )),
        }
    }
    for (i, a) in r.alternate.iter().enumerate() {
        if !used[i] {
            lines.push(format!(
                "with {with} {} would also have {} at {} ({}), which did not happen",
                r.node,
                a.what,
                format_utc_time(a.wall_ms),
                a.reason
            ));
        }
    }
    if lines.is_empty() {
        lines.push("no decision changed (only the commands or their timing differ)".into());
    }
    lines
}

/// `replication.psql_error_count` -> `psql_error_count`.
fn short(key: &str) -> &str {
    match pgha_core::settings::find(key) {
        Some(s) => s.name(),
        None => key.rsplit('.').next().unwrap_or(key),
    }
}

#[cfg(test)]
mod tests {
    use pgha_core::{Lsn, PeerId, StopMode};

    use super::*;

    fn replica_seen() -> Local {
        let mut l = Local::new(&Config::ha_pair("db1", 1, "db0", 0));
        let r = ProbeResult::Replica {
            timeline: 1,
            replay_lsn: Lsn(500),
            upstream: Some(PeerId(0)),
        };
        assert_eq!(l.answer(r), Some(r), "the recorded answer applies");
        l
    }

    #[test]
    fn the_alternates_own_postgres_promotes_from_the_replica_the_recording_last_showed() {
        let mut l = replica_seen();
        l.diverge();
        assert_eq!(l.finish(CommandKind::Promote, None), Ok(()));
        assert_eq!(
            l.probe(),
            Some(ProbeResult::Master {
                timeline: 2,
                lsn: Lsn(500)
            })
        );
    }

    #[test]
    fn a_promotion_of_a_stopped_postgres_fails_and_a_clone_copies_the_masters_last_answer() {
        let mut l = replica_seen();
        assert_eq!(l.answer(ProbeResult::Refused), Some(ProbeResult::Refused));
        l.diverge();
        assert_eq!(
            l.finish(CommandKind::Promote, None),
            Err(Failure::Exit(1)),
            "nothing runs"
        );
        // The peer last answered as a master on timeline 3: the copy is on it, and a
        // replica started on it streams what the master last answered.
        l.peers[0] = Some(ProbeResult::Master {
            timeline: 3,
            lsn: Lsn(900),
        });
        let clone = CommandKind::Basebackup { from: PeerId(0) };
        assert_eq!(l.finish(clone, None), Ok(()));
        let start = CommandKind::StartPostgres(StartAs::Replica {
            upstream: PeerId(0),
        });
        l.begin(start, Timestamp(10));
        assert_eq!(l.probe(), Some(ProbeResult::StartingUp));
        assert_eq!(l.finish(start, None), Ok(()));
        l.peers[0] = Some(ProbeResult::Master {
            timeline: 3,
            lsn: Lsn(950),
        });
        assert_eq!(
            l.probe(),
            Some(ProbeResult::Replica {
                timeline: 3,
                replay_lsn: Lsn(950),
                upstream: Some(PeerId(0))
            })
        );
        // A stop of it, then a failed start: nothing runs.
        let stop = CommandKind::StopPostgres(StopMode::Fast);
        l.begin(stop, Timestamp(20));
        assert_eq!(l.probe(), Some(ProbeResult::ShuttingDown));
        assert_eq!(l.finish(stop, None), Ok(()));
        l.begin(start, Timestamp(30));
        assert_eq!(
            l.finish(start, Some(Failure::Exit(1))),
            Err(Failure::Exit(1))
        );
        assert_eq!(l.probe(), Some(ProbeResult::Refused));
    }

    #[test]
    fn a_hung_local_postgres_does_not_answer_once_it_is_the_alternates_own() {
        let mut l = replica_seen();
        assert_eq!(l.answer(ProbeResult::Timeout), Some(ProbeResult::Timeout));
        l.diverge();
        assert_eq!(l.probe(), None);
        let stop = CommandKind::StopPostgres(StopMode::Immediate);
        l.begin(stop, Timestamp(10));
        assert_eq!(l.finish(stop, None), Ok(()));
        assert_eq!(l.probe(), Some(ProbeResult::Refused));
    }
}
