//! `pgha explain`: one or more nodes' journals merged into one cluster timeline by wall
//! clock, rendered as an incident report (or JSON).
//!
//! * [`timeline`]: every state change and operator request, each with its reason, and every
//!   hook's outcome (`[hooks]`: exit, duration, the end of its stderr);
//! * [`failovers`]: per promotion (or grace-expired self-election), detection, decision,
//!   promotion and first-answer times and every action with its duration and outcome; and per
//!   master that stopped on its own for want of news (an isolation stop, a silent local
//!   postgres), detection, decision and stop times;
//! * [`why`]: the causal chain of one transition, with the evidence, the settings that
//!   applied and what would have prevented it (checked by a what-if replay);
//! * [`clock_bounds`]: bounds on the nodes' clock differences, from role changes that one
//!   node made and another observed by probe.

use std::collections::BTreeMap;

use pgha_core::settings::{self, Setting, Value};
use pgha_core::{
    Command, CommandId, CommandKind, Config, Event, Input, PeerId, PeerReport, ProbeResult, Reason,
    Role, Standing, StartAs, State, Timeline, Transition,
};
use serde::Serialize;

use crate::read::{JournalFile, RecordedStep, Run};
use crate::time::{duration, format_utc, format_utc_time};
use crate::whatif::{self, decision_verb};
use crate::{JournalError, describe};

/// One transition in the cluster timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    pub node: String,
    pub file: usize,
    pub run: u64,
    pub seq: u64,
    pub wall_ms: u64,
    pub utc: String,
    pub mono_ms: u64,
    pub from: String,
    pub to: String,
    pub role_from: String,
    pub role_to: String,
    pub code: String,
    pub reason: String,
}

impl TimelineEntry {
    pub fn role_changed(&self) -> bool {
        self.role_from != self.role_to
    }
}

fn is_notable(t: &Transition) -> bool {
    t.from.name() != t.to.name()
        || matches!(t.reason, Reason::Operator { .. })
        || t.reason.is_refusal()
}

/// The notable transitions of a run, as (step, transition) indexes: state changes, operator
/// requests and refusals, and the first of a series of waits for a peer whose data is ahead
/// (an election that waits on rather than leading; repeated each round while it waits).
fn notable(run: &Run) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut prev: Option<&Transition> = None;
    for (si, step) in run.steps.iter().enumerate() {
        for (ti, t) in step.transitions.iter().enumerate() {
            let waiting =
                |r: &Reason| matches!(r, Reason::PeerAhead { .. } | Reason::PeerLeading { .. });
            let waits = waiting(&t.value.reason) && !prev.is_some_and(|p| waiting(&p.reason));
            if is_notable(&t.value) || waits {
                out.push((si, ti));
            }
            prev = Some(&t.value);
        }
    }
    out
}

fn entry(file: usize, run: &Run, step: &RecordedStep, seq: u64, t: &Transition) -> TimelineEntry {
    TimelineEntry {
        node: run.header.node.clone(),
        file,
        run: run.number,
        seq,
        wall_ms: step.wall_ms,
        utc: format_utc(step.wall_ms),
        mono_ms: t.at.0,
        from: t.from.name().into(),
        to: t.to.name().into(),
        role_from: t.from.role().name().into(),
        role_to: t.to.role().name().into(),
        code: t.reason.code().into(),
        reason: reason_text(run, t),
    }
}

/// A transition's reason as one line; a re-clone also names where the replaced data went,
/// from the data dir and `keep_discarded` of the run's configuration text.
fn reason_text(run: &Run, t: &Transition) -> String {
    let text = t.reason.describe(&run.header.config).to_string();
    let Reason::Recloned { set_aside, .. } = t.reason else {
        return text;
    };
    let cfg: Option<toml::Value> = toml::from_str(&run.header.config_text).ok();
    let data_dir = cfg
        .as_ref()
        .and_then(|c| c.get("node")?.get("data_dir")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "<data_dir>".into());
    let keep = cfg
        .as_ref()
        .and_then(|c| c.get("postgres")?.get("keep_discarded")?.as_integer())
        .unwrap_or(1);
    let head = text.split(": it replaced").next().unwrap_or(&text);
    if keep == 0 {
        format!("{head}: it replaced the local data, which was removed (keep_discarded = 0)")
    } else {
        format!(
            "{head}: it replaced the local data, set aside as {data_dir}.pgha-discarded-r{}-c{} (kept while among the newest {keep})",
            run.number, set_aside.0
        )
    }
}

/// The end of a run its daemon recorded (a `stop` row): state `stopped`, the role kept
/// (postgres keeps running), code `daemon_<signal|error|refused>`.
fn stop_entry(file: usize, run: &Run, stop: &crate::read::RunStop) -> TimelineEntry {
    let reason = match stop.code.as_str() {
        "signal" => format!("daemon stopped by {}", stop.cause),
        "refused" => format!("daemon refused to start: {}", stop.cause),
        _ => format!("daemon stopped on an error: {}", stop.cause),
    };
    TimelineEntry {
        node: run.header.node.clone(),
        file,
        run: run.number,
        seq: stop.seq,
        wall_ms: stop.wall_ms,
        utc: format_utc(stop.wall_ms),
        mono_ms: stop.mono_ms,
        from: stop.state.clone(),
        to: "stopped".into(),
        role_from: stop.role.clone(),
        role_to: stop.role.clone(),
        code: format!("daemon_{}", stop.code),
        reason,
    }
}

/// Every state change and operator request of every file, and every recorded daemon stop,
/// by wall clock.
pub fn timeline(files: &[JournalFile]) -> Vec<TimelineEntry> {
    let mut out = Vec::new();
    for (fi, f) in files.iter().enumerate() {
        for run in &f.runs {
            for (si, ti) in notable(run) {
                let (step, t) = (&run.steps[si], &run.steps[si].transitions[ti]);
                out.push(entry(fi, run, step, t.seq, &t.value));
            }
            out.extend(hook_entries(fi, run));
            if let Some(stop) = &run.stop {
                out.push(stop_entry(fi, run, stop));
            }
        }
    }
    out.sort_by_key(|e| (e.wall_ms, e.file, e.seq));
    out
}

/// Every hook outcome of a run (`[hooks]`), in the state the node was in: code `hook_ok`
/// or `hook_failed`, the reason says which hook, its exit, duration and stderr's end.
fn hook_entries(file: usize, run: &Run) -> Vec<TimelineEntry> {
    let mut state = run.start.as_ref().map_or(State::Init, |n| n.state());
    let mut out = Vec::new();
    for step in &run.steps {
        if let Input::Event(Event::HookDone { hook, outcome }) = &step.input {
            out.push(TimelineEntry {
                node: run.header.node.clone(),
                file,
                run: run.number,
                seq: step.seq,
                wall_ms: step.wall_ms,
                utc: format_utc(step.wall_ms),
                mono_ms: step.now.0,
                from: state.name().into(),
                to: state.name().into(),
                role_from: state.role().name().into(),
                role_to: state.role().name().into(),
                code: if outcome.succeeded() {
                    "hook_ok"
                } else {
                    "hook_failed"
                }
                .into(),
                reason: describe::hook_done(hook, outcome),
            });
        }
        if let Some(t) = step.transitions.last() {
            state = t.value.to;
        }
    }
    out
}

/// Bounds on `clock(b) - clock(a)` in ms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClockBound {
    pub a: String,
    pub b: String,
    pub min_ms: Option<i64>,
    pub max_ms: Option<i64>,
    pub observations: usize,
    /// False when the observations contradict each other (the lower bound exceeds the upper):
    /// the journals are not of one cluster's nodes, or a clock jumped. Neither bound is then
    /// believed.
    pub consistent: bool,
}

impl std::fmt::Display for ClockBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |v: i64| {
            format!(
                "{}{:.3} s",
                if v < 0 { "-" } else { "+" },
                v.unsigned_abs() as f64 / 1000.0
            )
        };
        match (self.min_ms, self.max_ms) {
            (Some(lo), Some(hi)) if !self.consistent => write!(
                f,
                "{}'s and {}'s clocks: the observations contradict each other (at least {}, at \
                 most {}): these journals are not of one cluster's nodes, or a clock jumped",
                self.b,
                self.a,
                s(lo),
                s(hi)
            ),
            (Some(lo), Some(hi)) => write!(
                f,
                "{}'s clock minus {}'s is between {} and {} ({} observation{})",
                self.b,
                self.a,
                s(lo),
                s(hi),
                self.observations,
                if self.observations == 1 { "" } else { "s" }
            ),
            (Some(lo), None) => write!(
                f,
                "{}'s clock minus {}'s is at least {}",
                self.b,
                self.a,
                s(lo)
            ),
            (None, Some(hi)) => write!(
                f,
                "{}'s clock minus {}'s is at most {}",
                self.b,
                self.a,
                s(hi)
            ),
            (None, None) => write!(
                f,
                "{}'s and {}'s clocks: not bounded (no role change of one seen by the other's probes)",
                self.a, self.b
            ),
        }
    }
}

/// (issue wall, done wall) of each action that made the node master.
fn master_starts(f: &JournalFile) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for run in &f.runs {
        let mut issued: BTreeMap<CommandId, u64> = BTreeMap::new();
        for step in &run.steps {
            for c in &step.commands {
                if matches!(
                    c.value.kind,
                    CommandKind::Promote | CommandKind::StartPostgres(StartAs::Master)
                ) {
                    issued.insert(c.value.id, step.wall_ms);
                }
            }
            if let Input::Event(Event::CommandDone {
                id,
                outcome: Ok(()),
                ..
            }) = step.input
                && let Some(w) = issued.remove(&id)
            {
                out.push((w, step.wall_ms));
            }
        }
    }
    out
}

/// For the observer's probes of `peer_name`: (issue wall, answer wall, was master).
fn observations(f: &JournalFile, peer_name: &str) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    for run in &f.runs {
        let Some(pid) = run
            .header
            .config
            .peers
            .iter()
            .position(|p| p.name == peer_name)
        else {
            continue;
        };
        let mut issued: BTreeMap<CommandId, u64> = BTreeMap::new();
        for step in &run.steps {
            for c in &step.commands {
                if c.value.kind == CommandKind::ProbePeer(pgha_core::PeerId(pid as u8)) {
                    issued.insert(c.value.id, step.wall_ms);
                }
            }
            if let Input::Event(Event::PeerProbe { id, result, .. }) = step.input
                && let Some(w) = issued.remove(&id)
                && result.is_answer()
            {
                out.push((
                    w,
                    step.wall_ms,
                    matches!(result, ProbeResult::Master { .. }),
                ));
            }
        }
    }
    out
}

/// Bounds on `clock(b) - clock(a)` from `a` observing `b` become master.
fn bound_one_way(a: &JournalFile, b: &JournalFile) -> (Option<i64>, Option<i64>, usize) {
    let obs = observations(a, &b.node_name());
    let mut lo: Option<i64> = None;
    let mut hi: Option<i64> = None;
    let mut n = 0;
    for (bp1, bp2) in master_starts(b) {
        // The first answer "master" after a non-master answer, nearest to the promotion.
        for w in obs.windows(2) {
            let (r1, _, was) = w[0];
            let (_, m2, is) = w[1];
            if was || !is {
                continue;
            }
            // Only pair with a promotion plausibly the same (within 10 min).
            if (m2 as i64 - bp2 as i64).abs() > 600_000 {
                continue;
            }
            let l = bp1 as i64 - m2 as i64;
            let h = bp2 as i64 - r1 as i64;
            lo = Some(lo.map_or(l, |x: i64| x.max(l)));
            hi = Some(hi.map_or(h, |x: i64| x.min(h)));
            n += 1;
        }
    }
    (lo, hi, n)
}

/// Whether `a`'s configuration names `b`'s node as a peer (in any run).
fn names_as_peer(a: &JournalFile, b: &JournalFile) -> bool {
    let name = b.node_name();
    a.runs
        .iter()
        .any(|r| r.header.config.peers.iter().any(|p| p.name == name))
}

/// Bounds for every pair of files whose configurations name each other as peers.
pub fn clock_bounds(files: &[JournalFile]) -> Vec<ClockBound> {
    let mut out = Vec::new();
    for i in 0..files.len() {
        for j in i + 1..files.len() {
            if !names_as_peer(&files[i], &files[j]) || !names_as_peer(&files[j], &files[i]) {
                continue;
            }
            let (l1, h1, n1) = bound_one_way(&files[i], &files[j]);
            let (l2, h2, n2) = bound_one_way(&files[j], &files[i]);
            // clock(i) - clock(j) in [l2, h2]  =>  clock(j) - clock(i) in [-h2, -l2].
            let lo = [l1, h2.map(|h| -h)].into_iter().flatten().max();
            let hi = [h1, l2.map(|l| -l)].into_iter().flatten().min();
            out.push(ClockBound {
                a: files[i].node_name(),
                b: files[j].node_name(),
                min_ms: lo,
                max_ms: hi,
                observations: n1 + n2,
                consistent: !matches!((lo, hi), (Some(l), Some(h)) if l > h),
            });
        }
    }
    out
}

/// Checks that `files` can be explained together: one journal per node (the same file, or
/// two journals of one node, given twice would double that node's history), and warns of
/// files whose node no other file's configuration names as a peer (unrelated clusters).
/// `Err` names the offending files.
pub fn check_set(files: &[JournalFile]) -> Result<Vec<String>, String> {
    for i in 0..files.len() {
        for j in i + 1..files.len() {
            let (a, b) = (&files[i], &files[j]);
            let same_file = match (a.path.canonicalize(), b.path.canonicalize()) {
                (Ok(x), Ok(y)) => x == y,
                _ => a.path == b.path,
            };
            if same_file {
                return Err(format!(
                    "{} is given twice: give each node's journal once",
                    a.path.display()
                ));
            }
            if a.node_name() == b.node_name() {
                return Err(format!(
                    "{} and {} are both journals of node {}: give one journal per node (a copy, \
                     or journals of two clusters with the same node names?)",
                    a.path.display(),
                    b.path.display(),
                    a.node_name()
                ));
            }
        }
    }
    let mut warnings = Vec::new();
    if files.len() > 1 {
        for (i, f) in files.iter().enumerate() {
            let related = files
                .iter()
                .enumerate()
                .any(|(j, g)| i != j && (names_as_peer(f, g) || names_as_peer(g, f)));
            if !related {
                warnings.push(format!(
                    "{} (node {}) names none of the other journals' nodes as a peer, nor they it: \
                     not one cluster; its clock is not compared with theirs",
                    f.path.display(),
                    f.node_name()
                ));
            }
        }
    }
    Ok(warnings)
}

/// One action in a failover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActionLine {
    pub node: String,
    pub command: String,
    pub issued_utc: String,
    pub duration_ms: Option<u64>,
    pub outcome: String,
}

/// One failover, as seen by the node that took over; or a master's stop for want of news
/// (`stopped_utc`), as seen by that master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failover {
    pub node: String,
    pub seq: u64,
    pub kind: String,
    pub reason: String,
    /// The first failed probe; for a stop, the last sign of life it waited for.
    pub detection_utc: String,
    pub decision_utc: String,
    pub promoted_utc: Option<String>,
    pub first_answer_as_master_utc: Option<String>,
    pub detection_to_master_ms: Option<u64>,
    /// A stop: when postgres was stopped, and how long after detection.
    pub stopped_utc: Option<String>,
    pub detection_to_stopped_ms: Option<u64>,
    pub actions: Vec<ActionLine>,
}

impl Failover {
    /// A master's own stop (an isolation stop, a silent local postgres), not a takeover.
    pub fn is_stop(&self) -> bool {
        self.kind.ends_with("stop")
    }
}

fn mono_to_wall(step: &RecordedStep, mono: u64) -> u64 {
    (step.wall_ms as i128 + mono as i128 - step.now.0 as i128).max(0) as u64
}

/// Every failover (promotion or grace-expired self-election) in the files.
pub fn failovers(files: &[JournalFile]) -> Vec<Failover> {
    let mut out = Vec::new();
    for f in files {
        for run in &f.runs {
            let c = &run.header.config;
            for (si, step) in run.steps.iter().enumerate() {
                for t in &step.transitions {
                    let tv = &t.value;
                    let kind = match (tv.to, tv.reason) {
                        (State::Promoting { .. }, _) => "promotion",
                        (
                            State::Starting {
                                target: StartAs::Master,
                            },
                            Reason::GraceExpired { .. },
                        ) => "self-election (grace expired)",
                        (
                            State::SteppingDown { .. },
                            Reason::Isolated { .. } | Reason::ReplicaLosingSight { .. },
                        ) => "isolation stop",
                        (State::SteppingDown { .. }, Reason::LocalSilent { .. }) => {
                            "silent local postgres stop"
                        }
                        _ => continue,
                    };
                    let detection = match tv.reason {
                        Reason::MasterUnreachable { failures, .. } => failures
                            .times()
                            .first()
                            .map(|t| mono_to_wall(step, t.0))
                            .unwrap_or(step.wall_ms),
                        Reason::GraceExpired { waited_ms, .. } => {
                            mono_to_wall(step, tv.at.0.saturating_sub(waited_ms))
                        }
                        Reason::Isolated { silent_ms, .. }
                        | Reason::LocalSilent { silent_ms, .. } => {
                            mono_to_wall(step, tv.at.0.saturating_sub(silent_ms))
                        }
                        _ => step.wall_ms,
                    };
                    let mut fo = Failover {
                        node: run.header.node.clone(),
                        seq: t.seq,
                        kind: kind.into(),
                        reason: tv.reason.describe(c).to_string(),
                        detection_utc: format_utc(detection),
                        decision_utc: format_utc(step.wall_ms),
                        promoted_utc: None,
                        first_answer_as_master_utc: None,
                        detection_to_master_ms: None,
                        stopped_utc: None,
                        detection_to_stopped_ms: None,
                        actions: Vec::new(),
                    };
                    let stop = fo.is_stop();
                    let mut open: BTreeMap<CommandId, (Command, u64, usize)> = BTreeMap::new();
                    for later in &run.steps[si..] {
                        if later.wall_ms > step.wall_ms + 300_000 {
                            break;
                        }
                        for cmd in &later.commands {
                            if !cmd.value.kind.is_probe() {
                                fo.actions.push(ActionLine {
                                    node: run.header.node.clone(),
                                    command: describe::command(&cmd.value, c),
                                    issued_utc: format_utc(later.wall_ms),
                                    duration_ms: None,
                                    outcome: "no outcome recorded".into(),
                                });
                                open.insert(
                                    cmd.value.id,
                                    (cmd.value, later.wall_ms, fo.actions.len() - 1),
                                );
                            }
                        }
                        match later.input {
                            Input::Event(Event::CommandDone {
                                id,
                                outcome,
                                duration_ms,
                            }) => {
                                if let Some((cmd, _, idx)) = open.remove(&id) {
                                    fo.actions[idx].duration_ms = Some(duration_ms);
                                    fo.actions[idx].outcome = match outcome {
                                        Ok(()) => "ok".into(),
                                        Err(e) => format!("failed: {e:?}"),
                                    };
                                    let made_master = matches!(
                                        cmd.kind,
                                        CommandKind::Promote
                                            | CommandKind::StartPostgres(StartAs::Master)
                                    );
                                    if made_master && outcome.is_ok() && fo.promoted_utc.is_none() {
                                        fo.promoted_utc = Some(format_utc(later.wall_ms));
                                    }
                                    let stopped = matches!(cmd.kind, CommandKind::StopPostgres(_));
                                    if stop
                                        && stopped
                                        && outcome.is_ok()
                                        && fo.stopped_utc.is_none()
                                    {
                                        fo.stopped_utc = Some(format_utc(later.wall_ms));
                                        fo.detection_to_stopped_ms =
                                            Some(later.wall_ms.saturating_sub(detection));
                                    }
                                }
                            }
                            Input::Event(Event::LocalProbe {
                                result: ProbeResult::Master { .. },
                                ..
                            }) if fo.promoted_utc.is_some()
                                && fo.first_answer_as_master_utc.is_none() =>
                            {
                                fo.first_answer_as_master_utc = Some(format_utc(later.wall_ms));
                                fo.detection_to_master_ms =
                                    Some(later.wall_ms.saturating_sub(detection));
                            }
                            _ => {}
                        }
                        let done = if stop {
                            fo.stopped_utc.is_some()
                        } else {
                            fo.first_answer_as_master_utc.is_some()
                        };
                        if done && open.is_empty() {
                            break;
                        }
                    }
                    out.push(fo);
                }
            }
        }
    }
    out.sort_by(|a, b| a.decision_utc.cmp(&b.decision_utc));
    out
}

/// The causal chain of one transition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Why {
    pub transition: TimelineEntry,
    /// The input that caused it.
    pub cause: String,
    /// The node's earlier transitions leading here (oldest first).
    pub chain: Vec<TimelineEntry>,
    /// Probe results and outcomes that were the evidence, oldest first.
    pub evidence: Vec<String>,
    /// The settings that applied.
    pub settings: Vec<(String, String)>,
    /// What would have prevented it, each checked by a what-if replay where one applies.
    pub prevention: Vec<String>,
    /// What the other nodes did around the same time.
    pub elsewhere: Vec<TimelineEntry>,
}

/// Which transition `why` explains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WhyTarget {
    /// A row of the named node's journal (or the only file): the transition at that row, or
    /// the first transition its input caused.
    Seq { node: Option<String>, seq: u64 },
    /// The last state change at or before this wall time (of the node, when named).
    At { node: Option<String>, wall_ms: u64 },
}

/// A setting's value as the run's configuration had it (`node.index` is not in the table).
fn setting(c: &Config, key: &str) -> String {
    match settings::find(key) {
        Some(s) => s.show(c),
        None if key == "index" => c.index.to_string(),
        None => "?".into(),
    }
}

fn settings_for(reason: &Reason, c: &Config) -> Vec<(String, String)> {
    use settings::{
        CONNECT_TIMEOUT, GRACE, GRACE_STAGGER, ISOLATION, MASTER_GIVE_UP, PROBE_INTERVAL,
        PSQL_ERROR_COUNT, SPLIT_BRAIN, TRANSITION_BOUND,
    };
    let keys: &[&str] = match reason {
        Reason::MasterUnreachable { .. }
        | Reason::LocalDown { .. }
        | Reason::MasterIsReplica { .. } => &[
            PSQL_ERROR_COUNT.key,
            CONNECT_TIMEOUT.key,
            PROBE_INTERVAL.key,
            TRANSITION_BOUND.key,
        ],
        Reason::GraceExpired { .. } | Reason::DataPresent { .. } => {
            &[GRACE.key, GRACE_STAGGER.key, "index", PROBE_INTERVAL.key]
        }
        Reason::SplitBrain { .. } | Reason::PeerOnNewerTimeline { .. } => {
            &[SPLIT_BRAIN.key, PROBE_INTERVAL.key]
        }
        // The give-up inequality: master_give_up + probe_interval + stop allowance must not
        // exceed psql_error_count x connect_timeout (the replica's takeover bound).
        Reason::Isolated { .. } | Reason::ReplicaLosingSight { .. } => &[
            ISOLATION.key,
            MASTER_GIVE_UP.key,
            PROBE_INTERVAL.key,
            CONNECT_TIMEOUT.key,
            PSQL_ERROR_COUNT.key,
        ],
        Reason::LocalSilent { .. } => &[
            MASTER_GIVE_UP.key,
            PROBE_INTERVAL.key,
            CONNECT_TIMEOUT.key,
            PSQL_ERROR_COUNT.key,
        ],
        Reason::PeerAhead { .. } | Reason::PeerLeading { .. } => {
            &[GRACE.key, CONNECT_TIMEOUT.key, PROBE_INTERVAL.key]
        }
        _ => &[PROBE_INTERVAL.key],
    };
    keys.iter()
        .map(|k| (k.to_string(), setting(c, k)))
        .collect()
}

fn find_target<'a>(
    files: &'a [JournalFile],
    target: &WhyTarget,
) -> Result<(usize, &'a Run, usize, usize), JournalError> {
    let node_ok = |f: &JournalFile, node: &Option<String>| {
        node.as_ref()
            .is_none_or(|n| f.runs.iter().any(|r| &r.header.node == n))
    };
    match target {
        WhyTarget::Seq { node, seq } => {
            let candidates: Vec<usize> = (0..files.len())
                .filter(|&i| node_ok(&files[i], node))
                .collect();
            if candidates.len() > 1 {
                return Err(JournalError::NotFound {
                    what: format!("row {seq}: several journals given; name the node with --node"),
                });
            }
            for &fi in &candidates {
                for run in &files[fi].runs {
                    for (si, step) in run.steps.iter().enumerate() {
                        let last = step
                            .commands
                            .last()
                            .map(|c| c.seq)
                            .or(step.transitions.last().map(|t| t.seq))
                            .unwrap_or(step.seq);
                        if *seq < step.seq || *seq > last {
                            continue;
                        }
                        let ti = step
                            .transitions
                            .iter()
                            .position(|t| t.seq == *seq)
                            .unwrap_or(0);
                        if step.transitions.is_empty() {
                            return Err(JournalError::NotFound {
                                what: format!(
                                    "{}: row {seq} ({}) caused no transition",
                                    files[fi].path.display(),
                                    describe::input(&step.input, &run.header.config)
                                ),
                            });
                        }
                        return Ok((fi, run, si, ti));
                    }
                }
            }
            Err(JournalError::NotFound {
                what: format!("no row {seq} with a transition in the given journals"),
            })
        }
        WhyTarget::At { node, wall_ms } => {
            let mut best: Option<(u64, usize, &Run, usize, usize)> = None;
            for (fi, f) in files.iter().enumerate() {
                if !node_ok(f, node) {
                    continue;
                }
                for run in &f.runs {
                    for (si, step) in run.steps.iter().enumerate() {
                        if step.wall_ms > *wall_ms {
                            break;
                        }
                        for (ti, t) in step.transitions.iter().enumerate() {
                            if t.value.from.name() != t.value.to.name()
                                && best.as_ref().is_none_or(|b| step.wall_ms >= b.0)
                            {
                                best = Some((step.wall_ms, fi, run, si, ti));
                            }
                        }
                    }
                }
            }
            best.map(|(_, fi, run, si, ti)| (fi, run, si, ti))
                .ok_or_else(|| JournalError::NotFound {
                    what: format!("no state change at or before {}", format_utc(*wall_ms)),
                })
        }
    }
}

/// The causal chain for one transition.
pub fn why(files: &[JournalFile], target: &WhyTarget) -> Result<Why, JournalError> {
    let (fi, run, si, ti) = find_target(files, target)?;
    let c = &run.header.config;
    let step = &run.steps[si];
    let t = &step.transitions[ti];
    let tv = t.value;
    let transition = entry(fi, run, step, t.seq, &tv);
    let cause = format!(
        "row {} at {}: {}",
        step.seq,
        format_utc(step.wall_ms),
        describe::input(&step.input, c)
    );
    // The chain: the node's state changes before this one in the run (the last 4).
    let mut chain = Vec::new();
    for (xi, ti) in notable(run).into_iter().filter(|(xi, _)| *xi < si) {
        let (s, x) = (&run.steps[xi], &run.steps[xi].transitions[ti]);
        chain.push(entry(fi, run, s, x.seq, &x.value));
    }
    let keep = chain.len().saturating_sub(4);
    chain.drain(..keep);
    // Evidence: the probe results relevant to the reason, up to the transition.
    let of_peer = |i: &Input, peer: PeerId| {
        matches!(i, Input::Event(Event::PeerProbe { peer: p, .. }
            | Event::PeerDaemon { peer: p, .. }) if *p == peer)
    };
    let wanted: Box<dyn Fn(&Input) -> bool> = match tv.reason {
        Reason::MasterUnreachable { peer, .. }
        | Reason::MasterIsReplica { peer }
        | Reason::SplitBrain { peer, .. }
        | Reason::Isolated { peer, .. } => {
            Box::new(move |i: &Input| of_peer(i, peer) || *i == Input::Timeout)
        }
        Reason::PeerReachable { peer }
        | Reason::ReplicaLosingSight { peer, .. }
        | Reason::PeerLeading { peer }
        | Reason::PeerOnNewerTimeline { peer, .. }
        | Reason::PeerAhead { peer, .. }
        | Reason::PeerBehind { peer, .. } => Box::new(move |i: &Input| of_peer(i, peer)),
        Reason::LocalDown { .. } | Reason::LocalAnswered { .. } | Reason::LocalSilent { .. } => {
            Box::new(|i: &Input| {
                matches!(i, Input::Event(Event::LocalProbe { .. })) || *i == Input::Timeout
            })
        }
        Reason::GraceExpired { .. }
        | Reason::MasterFound { .. }
        | Reason::MustClone { .. }
        | Reason::NoMasterFound { .. }
        | Reason::PeerOverloaded { .. } => Box::new(|i: &Input| {
            matches!(
                i,
                Input::Event(Event::PeerProbe { .. }) | Input::Event(Event::Started(_))
            )
        }),
        _ => Box::new(|i: &Input| !matches!(i, Input::Timeout)),
    };
    let repeated = repeated_reports(&run.steps[..=si]);
    let mut evidence = Vec::new();
    for (k, s) in run.steps[..=si].iter().enumerate().rev() {
        if evidence.len() >= 10 {
            break;
        }
        // A peer daemon's report as before (its position aside) says nothing new.
        if !wanted(&s.input) || repeated[k] {
            continue;
        }
        // A timer call matters only where it timed a probe out (it produced the failure).
        if s.input == Input::Timeout && s.transitions.is_empty() && s.seq != step.seq {
            continue;
        }
        let text = if s.input == Input::Timeout {
            "timer: probe deadline passed (counts as a timeout)".to_string()
        } else {
            describe::input(&s.input, c)
        };
        evidence.push(format!(
            "row {} at {}: {}",
            s.seq,
            format_utc_time(s.wall_ms),
            text
        ));
    }
    evidence.reverse();
    if let Reason::MasterUnreachable { failures, .. } | Reason::LocalDown { failures } = tv.reason {
        let times: Vec<String> = failures
            .times()
            .iter()
            .map(|x| format_utc_time(mono_to_wall(step, x.0)))
            .collect();
        evidence.push(format!(
            "failure counter: {} consecutive, at {}; last result {}",
            failures.count,
            times.join(", "),
            failures.last.map(|r| r.name()).unwrap_or("?")
        ));
    }
    if let Reason::Isolated { peer, .. } = tv.reason {
        evidence.push(last_news(&run.steps[..=si], peer, c));
    }
    let settings = settings_for(&tv.reason, c);
    let prevention = prevention(files, fi, run, &tv);
    let elsewhere = timeline(files)
        .into_iter()
        .filter(|e| {
            e.file != fi && e.wall_ms + 60_000 >= step.wall_ms && e.wall_ms <= step.wall_ms + 60_000
        })
        .collect();
    Ok(Why {
        transition,
        cause,
        chain,
        evidence,
        settings,
        prevention,
        elsewhere,
    })
}

/// What a peer daemon's report says, its position aside (it moves with every write).
type ReportKey = Option<(Standing, Role, Option<(Timeline, bool)>)>;

fn report_key(report: &Option<PeerReport>) -> ReportKey {
    report.map(|r| {
        (
            r.standing,
            r.role,
            r.data.map(|d| (d.timeline, d.was_master)),
        )
    })
}

/// Per step: whether its input is a peer daemon's report that repeats that peer's previous
/// one (position aside). Those are left out of the evidence: a daemon answers every probe
/// interval, and only a change (or its silence) is news.
fn repeated_reports(steps: &[RecordedStep]) -> Vec<bool> {
    let mut last: BTreeMap<PeerId, ReportKey> = BTreeMap::new();
    steps
        .iter()
        .map(|s| match s.input {
            Input::Event(Event::PeerDaemon { peer, report, .. }) => {
                let key = report_key(&report);
                last.insert(peer, key) == Some(key)
            }
            _ => false,
        })
        .collect()
}

/// When `peer` last answered, by postgres and by daemon: what an isolated master waited for.
fn last_news(steps: &[RecordedStep], peer: PeerId, c: &Config) -> String {
    let mut pg = None;
    let mut daemon = None;
    for s in steps.iter().rev() {
        match s.input {
            Input::Event(Event::PeerProbe {
                peer: p, result, ..
            }) if p == peer && pg.is_none() && result.is_answer() => {
                pg = Some(s);
            }
            Input::Event(Event::PeerDaemon {
                peer: p,
                report: Some(_),
                ..
            }) if p == peer && daemon.is_none() => daemon = Some(s),
            _ => {}
        }
        if pg.is_some() && daemon.is_some() {
            break;
        }
    }
    let at = |s: Option<&RecordedStep>| {
        s.map_or("not in this run".to_string(), |s| {
            format!(
                "row {} at {} ({})",
                s.seq,
                format_utc_time(s.wall_ms),
                describe::input(&s.input, c)
            )
        })
    };
    format!(
        "last news from {}: postgres {}; daemon {}",
        c.peer_name(peer),
        at(pg),
        at(daemon)
    )
}

/// What would have prevented the transition; checked by what-if replays where a setting could.
fn prevention(files: &[JournalFile], fi: usize, run: &Run, tv: &Transition) -> Vec<String> {
    let c = &run.header.config;
    let mut out = Vec::new();
    let check = |s: &Setting, value: Value, what: &str, verb: Option<&str>| -> Option<String> {
        let (key, value) = (s.key, value.to_string());
        let settings = vec![(key.to_string(), value.clone())];
        let r = whatif::what_if(&files[fi], &settings).ok()?;
        let rr = r.runs.iter().find(|x| x.run == run.number)?;
        let verb = verb
            .map(str::to_string)
            .unwrap_or_else(|| decision_verb(tv, c).unwrap_or_default());
        let orig = rr.original.iter().filter(|d| d.what == verb).count();
        let alt: Vec<_> = rr.alternate.iter().filter(|d| d.what == verb).collect();
        let outcome = if alt.len() < orig {
            format!("it would not have {verb} within the recording")
        } else if let Some(a) = alt.iter().find(|a| a.mono_ms >= tv.at.0) {
            let why = if a.code == tv.reason.code() {
                String::new()
            } else {
                format!(" ({})", a.reason)
            };
            format!(
                "it would have {verb} at {}{why}",
                format_utc_time(a.wall_ms)
            )
        } else {
            "no change".into()
        };
        Some(format!("{what}: what-if with {key}={value}: {outcome}"))
    };
    match tv.reason {
        Reason::MasterUnreachable {
            peer,
            failures,
            connect_timeout_ms,
        } => {
            out.push(format!(
                "{} answering any one probe within connect_timeout ({}) before failure {}",
                c.peer_name(peer),
                duration(connect_timeout_ms),
                c.psql_error_count
            ));
            let n = (failures.count + 2).min(pgha_core::MAX_ERROR_COUNT);
            out.extend(check(
                &settings::PSQL_ERROR_COUNT,
                Value::Count(n),
                "a longer detection window (more consecutive failures)",
                None,
            ));
        }
        Reason::GraceExpired { grace_ms, .. } => {
            out.push("a peer reporting master before grace expired (it was down, unreachable or not master)".into());
            out.extend(check(
                &settings::GRACE,
                // Whole seconds.
                Value::Ms(grace_ms * 2 / 1000 * 1000),
                "a longer grace",
                None,
            ));
        }
        Reason::SplitBrain { .. } => {
            out.push(
                "only one master: the other node not promoting or not starting as master".into(),
            );
            if c.split_brain == pgha_core::SplitBrainRule::BothStop {
                out.extend(check(
                    &settings::SPLIT_BRAIN,
                    Value::Name(pgha_core::SplitBrainRule::OlderTimelineStepsDown.name()),
                    "the safer rule keeps the newer timeline serving",
                    Some("fenced itself"),
                ));
            }
        }
        Reason::LocalDown { .. } => {
            out.push("the local postgres answering its probes".into());
        }
        Reason::LocalSilent { bound_ms, .. } => {
            out.push(format!(
                "the local postgres giving a sign of life (an answer, \"too many clients\", \
                 \"starting up\") within master_give_up ({}); a longer give-up would let a hung \
                 master's backends commit after the replica may promote",
                duration(bound_ms)
            ));
        }
        Reason::Isolated { peer, bound_ms, .. } => {
            out.push(format!(
                "{}'s postgres or daemon answering within master_give_up ({})",
                c.peer_name(peer),
                duration(bound_ms)
            ));
            out.extend(check(
                &settings::ISOLATION,
                Value::Name(pgha_core::Isolation::KeepServing.name()),
                "a master that keeps serving when cut off (the writes it then acknowledges are \
                 lost if the replica promotes)",
                None,
            ));
        }
        Reason::PeerOnNewerTimeline { peer, .. } => {
            out.push(format!(
                "{} not promoting while this master served (it promoted when it lost touch \
                 with it)",
                c.peer_name(peer)
            ));
        }
        Reason::PeerAhead { peer, .. } => {
            out.push(format!(
                "{} leading on its more advanced data (it waits while {0} may lead), or \
                 `pgha recover --force` on this node to lead on its own data",
                c.peer_name(peer)
            ));
        }
        Reason::PeerBehind { peer, .. } => {
            out.push(format!(
                "{} not leading on data behind this node's; to go on, `pgha recover --force` \
                 here re-clones from it (the local data is set aside)",
                c.peer_name(peer)
            ));
        }
        Reason::MasterIsReplica { peer } => {
            out.push(format!(
                "{} still being master when probed",
                c.peer_name(peer)
            ));
        }
        Reason::CommandFailed { command, .. } => {
            out.push(format!("{} succeeding", command.name()));
        }
        Reason::Operator { .. } => out.push("no operator request".into()),
        _ => out.push("nothing in pgha's settings: this step follows from the previous one".into()),
    }
    out
}

/// The default report.
pub fn render_timeline(files: &[JournalFile]) -> String {
    let mut s = header(files);
    s.push_str("\nTimeline (UTC; * marks a role change):\n");
    for e in timeline(files) {
        s.push_str(&format!(
            "{} {} {:<5} {:>18} -> {:<18} {}\n",
            e.utc,
            if e.role_changed() { "*" } else { " " },
            e.node,
            e.from,
            e.to,
            e.reason
        ));
    }
    s
}

fn header(files: &[JournalFile]) -> String {
    let mut s = String::new();
    for f in files {
        let first = f.runs.first().map(|r| r.wall_ms).unwrap_or(0);
        let last = f
            .runs
            .iter()
            .flat_map(|r| r.steps.last())
            .map(|s| s.wall_ms)
            .max()
            .unwrap_or(first);
        s.push_str(&format!(
            "{}: {} ({} run{}, {} to {})\n",
            f.node_name(),
            f.path.display(),
            f.runs.len(),
            if f.runs.len() == 1 { "" } else { "s" },
            format_utc(first),
            format_utc(last)
        ));
    }
    for b in clock_bounds(files) {
        s.push_str(&format!("clocks: {b}\n"));
    }
    s
}

pub fn render_failovers(files: &[JournalFile]) -> String {
    let mut s = header(files);
    let fos = failovers(files);
    if fos.is_empty() {
        s.push_str(
            "\nNo failover (promotion or grace-expired self-election) nor master stop for want of \
             news (isolation, silent local postgres) in these journals.\n",
        );
    }
    for fo in fos {
        s.push_str(&format!(
            "\n{} by {} (row {}): {}\n",
            fo.kind, fo.node, fo.seq, fo.reason
        ));
        if fo.is_stop() {
            s.push_str(&format!("  last news:        {}\n", fo.detection_utc));
            s.push_str(&format!("  decision:         {}\n", fo.decision_utc));
            s.push_str(&format!(
                "  stopped:          {}{}\n",
                fo.stopped_utc.as_deref().unwrap_or("not recorded"),
                fo.detection_to_stopped_ms
                    .map(|d| format!(" ({} after the last news)", duration(d)))
                    .unwrap_or_default()
            ));
        } else {
            s.push_str(&format!("  detection:        {}\n", fo.detection_utc));
            s.push_str(&format!("  decision:         {}\n", fo.decision_utc));
            s.push_str(&format!(
                "  promoted/started: {}\n",
                fo.promoted_utc.as_deref().unwrap_or("not recorded")
            ));
            s.push_str(&format!(
                "  answered master:  {}{}\n",
                fo.first_answer_as_master_utc
                    .as_deref()
                    .unwrap_or("not recorded"),
                fo.detection_to_master_ms
                    .map(|d| format!(" ({} after detection)", duration(d)))
                    .unwrap_or_default()
            ));
        }
        s.push_str("  actions:\n");
        for a in &fo.actions {
            s.push_str(&format!(
                "    {} {:<40} {:>10}  {}\n",
                a.issued_utc,
                a.command,
                a.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
                a.outcome
            ));
        }
    }
    s
}

pub fn render_why(w: &Why) -> String {
    let t = &w.transition;
    let mut s = format!(
        "{} {} -> {} at {} (row {}, run {}):\n  {}\n",
        t.node, t.from, t.to, t.utc, t.seq, t.run, t.reason
    );
    s.push_str(&format!("\ncaused by {}\n", w.cause));
    if !w.chain.is_empty() {
        s.push_str("\nhow it got there:\n");
        for e in &w.chain {
            s.push_str(&format!(
                "  {} {} -> {}: {}\n",
                e.utc, e.from, e.to, e.reason
            ));
        }
    }
    s.push_str("\nevidence:\n");
    for e in &w.evidence {
        s.push_str(&format!("  {e}\n"));
    }
    s.push_str("\nsettings that applied:\n");
    for (k, v) in &w.settings {
        s.push_str(&format!("  {k} = {v}\n"));
    }
    s.push_str("\nwhat would have prevented it:\n");
    for p in &w.prevention {
        s.push_str(&format!("  - {p}\n"));
    }
    if !w.elsewhere.is_empty() {
        s.push_str("\nmeanwhile on the other nodes (within 30 s):\n");
        for e in &w.elsewhere {
            s.push_str(&format!(
                "  {} {} {} -> {}: {}\n",
                e.utc, e.node, e.from, e.to, e.reason
            ));
        }
    }
    s
}

/// JSON for tools.
pub fn timeline_json(files: &[JournalFile]) -> String {
    json(&serde_json::json!({
        "clocks": clock_bounds(files),
        "timeline": timeline(files),
    }))
}

pub fn failovers_json(files: &[JournalFile]) -> String {
    json(&serde_json::json!({
        "clocks": clock_bounds(files),
        "failovers": failovers(files),
    }))
}

pub fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod hook_tests {
    use pgha_core::{
        CommandKind, DataDir, HookExit, HookOutcome, HookRun, LocalFacts, StderrTail, Timestamp,
    };

    use super::*;
    use crate::{Header, Recorder};

    #[test]
    fn the_timeline_shows_each_hooks_exit_duration_and_the_end_of_its_stderr() {
        let dir = std::env::temp_dir().join(format!("pgha-explain-hooks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db0.journal");
        let config = Config::ha_pair("db0", 0, "db1", 1);
        let mut r = Recorder::create(&path, Header::new(config, "")).unwrap();
        let facts = LocalFacts {
            data_dir: DataDir::Empty { held_data: false },
            postgres_running: false,
            fenced: false,
        };
        r.step(Timestamp(0), 1_000, Input::Event(Event::Started(facts)))
            .unwrap();
        let long = format!("{}\nlast words: no route to host\n", "x".repeat(400));
        let hooks = [
            (
                HookRun::After {
                    id: CommandId(7),
                    kind: CommandKind::Promote,
                },
                HookExit::Code(0),
                35,
                "",
            ),
            (
                HookRun::RoleChange {
                    id: CommandId(8),
                    role: Role::Master,
                },
                HookExit::Code(3),
                1_200,
                long.as_str(),
            ),
            (
                HookRun::After {
                    id: CommandId(9),
                    kind: CommandKind::AcquireVip,
                },
                HookExit::TimedOut,
                30_000,
                "",
            ),
        ];
        for (i, (hook, exit, duration_ms, stderr)) in hooks.into_iter().enumerate() {
            let outcome = HookOutcome {
                exit,
                duration_ms,
                stderr: StderrTail::of(stderr),
            };
            let input = Input::Event(Event::HookDone { hook, outcome });
            r.step(Timestamp(10 + i as u64), 2_000 + i as u64, input)
                .unwrap();
        }
        drop(r);
        let file = JournalFile::read(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let entries: Vec<TimelineEntry> = timeline(std::slice::from_ref(&file))
            .into_iter()
            .filter(|e| e.code.starts_with("hook"))
            .collect();
        let lines: Vec<(&str, &str)> = entries
            .iter()
            .map(|e| (e.code.as_str(), e.reason.as_str()))
            .collect();
        let tail = StderrTail::of(&long);
        assert!(tail.as_str().ends_with("last words: no route to host"));
        assert_eq!(tail.as_str().len(), pgha_core::STDERR_TAIL);
        assert_eq!(
            lines,
            vec![
                (
                    "hook_ok",
                    "hook on_promote (after #7 promote): exit 0 in 35 ms"
                ),
                (
                    "hook_failed",
                    format!(
                        "hook on_role_change (#8 role master): exit 3 in 1200 ms; stderr: {}",
                        tail.as_str().replace('\n', " | ")
                    )
                    .as_str()
                ),
                (
                    "hook_failed",
                    "hook on_vip_up (after #9 acquire VIP): timed out in 30000 ms"
                ),
            ]
        );
        assert!(entries.iter().all(|e| !e.role_changed()));
        let text = render_timeline(std::slice::from_ref(&file));
        assert!(
            text.contains("hook on_role_change (#8 role master): exit 3 in 1200 ms; stderr: "),
            "{text}"
        );
    }
}
