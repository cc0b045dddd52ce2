//! One-line texts for the `reason` column of input and command rows.

use pgha_core::{
    Command, CommandKind, Config, Event, HookExit, HookOutcome, HookRun, Input, ProbeResult,
    ProxyTarget, Standing, StartAs,
};

pub fn probe(r: &ProbeResult) -> String {
    match *r {
        ProbeResult::Master { timeline, lsn } => format!("master tl {timeline} {lsn}"),
        ProbeResult::Replica {
            timeline,
            replay_lsn,
            ..
        } => format!("replica tl {timeline} {replay_lsn}"),
        other => other.name().to_string(),
    }
}

/// How a peer daemon says it stands (its report's `standing`), in words.
fn standing(s: Standing) -> &'static str {
    match s {
        Standing::Leading => "leading",
        Standing::Electing => "electing",
        Standing::Following => "following",
        Standing::Held => "held",
        Standing::Busy => "busy",
    }
}

/// `probe db1: timeout`, `started: data tl 3 (was master)`, `timer`.
pub fn input(i: &Input, c: &Config) -> String {
    match i {
        Input::Timeout => "timer".into(),
        Input::Event(e) => match e {
            Event::Started(f) => {
                let data = match f.data_dir {
                    pgha_core::DataDir::Empty { held_data } => {
                        format!(
                            "empty data dir{}",
                            if held_data { " (held data)" } else { "" }
                        )
                    }
                    pgha_core::DataDir::Present {
                        timeline,
                        was_master,
                        ..
                    } => format!(
                        "data tl {timeline}{}",
                        if was_master { " (was master)" } else { "" }
                    ),
                };
                format!(
                    "started: {data}{}{}",
                    if f.postgres_running {
                        ", postgres running"
                    } else {
                        ""
                    },
                    if f.fenced { ", fenced" } else { "" }
                )
            }
            Event::LocalProbe { result, .. } => format!("local: {}", probe(result)),
            Event::PeerProbe { peer, result, .. } => {
                format!("{}: {}", c.peer_name(*peer), probe(result))
            }
            Event::CommandDone {
                id,
                outcome,
                duration_ms,
            } => match outcome {
                Ok(()) => format!("#{} ok in {duration_ms} ms", id.0),
                Err(f) => format!("#{} failed ({f:?}) after {duration_ms} ms", id.0),
            },
            Event::Operator(r) => format!("operator: {}", r.name()),
            Event::PeerDaemon { peer, report, .. } => match report {
                Some(r) => format!(
                    "{} daemon: {}, {}{}",
                    c.peer_name(*peer),
                    standing(r.standing),
                    r.role.name(),
                    r.data.map_or(String::new(), |d| format!(
                        ", data tl {} {}{}",
                        d.timeline,
                        d.lsn,
                        if d.was_master { " (was master)" } else { "" }
                    ))
                ),
                None => format!("{} daemon: no answer", c.peer_name(*peer)),
            },
            Event::HookDone { hook, outcome } => hook_done(hook, outcome),
        },
    }
}

/// `#12 probe db1`, `#40 start postgres as replica of db0`.
pub fn command(cmd: &Command, c: &Config) -> String {
    let what = match cmd.kind {
        CommandKind::ProbePeer(p) => format!("probe {}", c.peer_name(p)),
        CommandKind::ProbePeerDaemon(p) => format!("probe {}'s daemon", c.peer_name(p)),
        CommandKind::StartPostgres(StartAs::Replica { upstream }) => {
            format!("start postgres as replica of {}", c.peer_name(upstream))
        }
        CommandKind::Basebackup { from } => format!("basebackup from {}", c.peer_name(from)),
        CommandKind::Follow { upstream } => format!("follow {}", c.peer_name(upstream)),
        CommandKind::RepointProxy(ProxyTarget::Peer(p)) => {
            format!("repoint proxy to {}", c.peer_name(p))
        }
        CommandKind::RepointProxy(ProxyTarget::Local) => "repoint proxy to local".into(),
        k => k.name().to_string(),
    };
    format!("#{} {what}", cmd.id.0)
}

/// `hook on_promote (after #12 promote): exit 0 in 35 ms`, with `; stderr: ...` when it wrote
/// to stderr.
pub fn hook_done(hook: &HookRun, outcome: &HookOutcome) -> String {
    let of = match *hook {
        HookRun::RoleChange { id, role } => format!("#{} role {}", id.0, role.name()),
        HookRun::After { id, kind } => format!("after #{} {}", id.0, kind.name()),
    };
    let exit = match outcome.exit {
        HookExit::Code(c) => format!("exit {c}"),
        HookExit::Signal(s) => format!("killed by signal {s}"),
        HookExit::TimedOut => "timed out".to_string(),
        HookExit::SpawnFailed => "could not start".to_string(),
    };
    let mut s = format!(
        "hook {} ({of}): {exit} in {} ms",
        hook.key(),
        outcome.duration_ms
    );
    if !outcome.stderr.is_empty() {
        s.push_str("; stderr: ");
        s.push_str(&outcome.stderr.as_str().replace(['\n', '\r'], " | "));
    }
    s
}
