//! Client routing: the VIP (`ip addr` and gratuitous ARP, or the operator's commands),
//! PgBouncer (pause, repoint by rewriting its `[databases]` entries, reload, resume) and the
//! user's hooks. Each carries out one command and reports a typed outcome; none decides.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgha_core::{Failure, HookExit, HookOutcome, ProxyTarget, StderrTail};

use super::probe::{self, SqlFailure};
use super::process;
use crate::config::{FileConfig, PgbouncerSettings, VipSettings};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A system program: from PATH, else /usr/sbin or /sbin (a daemon's PATH may lack them).
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `sh -c CMD` with the VIP's address and interface in the environment.
fn vip_shell(c: &FileConfig, v: &VipSettings, what: &str, cmd: &str) -> Result<(), Failure> {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(cmd)
        .env("PGHA_NODE", &c.node.name)
        .env("PGHA_VIP_ADDRESS", v.address.to_string())
        .env("PGHA_VIP_INTERFACE", &v.interface);
    process::run(what, sh, ms(c.timeouts.command_ms)).map(|_| ())
}

/// Whether the VIP is on its interface now (`ip -o -4 addr show dev IFACE`).
pub fn vip_held(c: &FileConfig, v: &VipSettings) -> Result<bool, Failure> {
    let ip = program("ip").ok_or_else(|| {
        log::error!("VIP: the `ip` program (iproute2) is not installed");
        Failure::Io
    })?;
    let mut cmd = Command::new(ip);
    cmd.args(["-o", "-4", "addr", "show", "dev", &v.interface]);
    let out = process::run("VIP: ip addr show", cmd, ms(c.timeouts.command_ms))?;
    let needle = format!(" {}/", v.address);
    Ok(out.stdout.contains(&needle))
}

fn ip_addr(c: &FileConfig, v: &VipSettings, verb: &str) -> Result<(), Failure> {
    let ip = program("ip").ok_or(Failure::Io)?;
    let mut cmd = Command::new(ip);
    cmd.args([
        "addr",
        verb,
        &format!("{}/32", v.address),
        "dev",
        &v.interface,
    ]);
    process::run(
        &format!("VIP: ip addr {verb}"),
        cmd,
        ms(c.timeouts.command_ms),
    )
    .map(|_| ())
}

/// Someone else answers ARP for the VIP on the interface (`arping -D`: exit 1 on a reply).
fn vip_answered_elsewhere(v: &VipSettings, arping: &Path) -> bool {
    let out = Command::new(arping)
        .args(["-D", "-q", "-c", "1", "-w", "1", "-I", &v.interface])
        .arg(v.address.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    matches!(out, Ok(s) if s.code() == Some(1))
}

/// Acquire: the operator's `up_command`, or add the address (already there is success) after
/// waiting up to `takeover_wait` for its former holder to let it go (ARP duplicate address
/// detection), then announce it with a gratuitous ARP.
pub fn vip_up(c: &FileConfig) -> Result<(), Failure> {
    let Some(v) = &c.vip else { return Ok(()) };
    if let Some(cmd) = &v.up_command {
        return vip_shell(c, v, "VIP up_command", cmd);
    }
    let arping = if v.arping { program("arping") } else { None };
    if v.arping && arping.is_none() {
        log::warn!("VIP: arping (iputils-arping) not found: no takeover wait, no gratuitous ARP");
    }
    if !vip_held(c, v)? {
        if let Some(a) = &arping {
            let start = Instant::now();
            while start.elapsed() < ms(v.takeover_wait_ms) && vip_answered_elsewhere(v, a) {
                log::info!("VIP {}: still answered by another host; waiting", v.address);
            }
            if start.elapsed() >= ms(v.takeover_wait_ms) && v.takeover_wait_ms > 0 {
                log::warn!(
                    "VIP {}: another host still answers after {:.1} s: taking it over",
                    v.address,
                    v.takeover_wait_ms as f64 / 1000.0
                );
            }
        }
        if let Err(f) = ip_addr(c, v, "add") {
            // Added meanwhile (e.g. by an operator): that is what we wanted.
            if !vip_held(c, v)? {
                return Err(f);
            }
        }
    }
    if let Some(a) = &arping {
        let mut cmd = Command::new(a);
        cmd.args(["-U", "-c", "1", "-I", &v.interface])
            .arg(v.address.to_string());
        if process::run("VIP: gratuitous ARP", cmd, ms(c.timeouts.command_ms)).is_err() {
            log::warn!(
                "VIP {}: gratuitous ARP failed; neighbours learn it on their next ARP",
                v.address
            );
        }
    }
    log::info!("VIP {} up on {}", v.address, v.interface);
    Ok(())
}

/// Release: the operator's `down_command`, or remove the address (absent is success).
pub fn vip_down(c: &FileConfig) -> Result<(), Failure> {
    let Some(v) = &c.vip else { return Ok(()) };
    if let Some(cmd) = &v.down_command {
        return vip_shell(c, v, "VIP down_command", cmd);
    }
    if vip_held(c, v)? {
        if let Err(f) = ip_addr(c, v, "del")
            && vip_held(c, v)?
        {
            return Err(f);
        }
        log::info!("VIP {} released from {}", v.address, v.interface);
    }
    Ok(())
}

fn admin(b: &PgbouncerSettings, limit: Duration, sql: &str) -> Result<(), Failure> {
    match probe::run_on(&b.admin, limit, sql) {
        Ok(()) => Ok(()),
        Err(SqlFailure::Query(m)) => {
            log::warn!("pgbouncer {sql}: {m}");
            Err(Failure::Exit(1))
        }
        Err(SqlFailure::Probe(r)) => {
            log::warn!("pgbouncer {sql}: {}", r.name());
            Err(match r {
                pgha_core::ProbeResult::Timeout => Failure::Timeout,
                pgha_core::ProbeResult::Refused => Failure::Refused,
                _ => Failure::Io,
            })
        }
    }
}

/// `PAUSE`: PgBouncer lets running transactions finish and holds new ones (bounded by
/// `pause_timeout`).
pub fn pgbouncer_pause(c: &FileConfig) -> Result<(), Failure> {
    let Some(b) = &c.pgbouncer else { return Ok(()) };
    admin(b, ms(b.pause_timeout_ms), "PAUSE")
}

/// `RESUME` (a pooler that is not paused is fine).
pub fn pgbouncer_resume(c: &FileConfig) -> Result<(), Failure> {
    let Some(b) = &c.pgbouncer else { return Ok(()) };
    match probe::run_on(&b.admin, ms(c.timeouts.command_ms), "RESUME") {
        Err(SqlFailure::Query(m)) if m.contains("not paused") => Ok(()),
        Ok(()) => Ok(()),
        Err(_) => admin(b, ms(c.timeouts.command_ms), "RESUME"),
    }
}

/// Rewrites the `[databases]` entries named in `names` to `host`/`port`, keeping their other
/// parameters; entries missing are added. Returns the new text.
pub fn rewrite_databases(text: &str, names: &[String], host: &str, port: u16) -> String {
    let entry = |name: &str, old: Option<&str>| {
        let mut params: Vec<String> = old
            .unwrap_or("")
            .split_whitespace()
            .filter(|kv| !kv.starts_with("host=") && !kv.starts_with("port="))
            .map(str::to_string)
            .collect();
        if !params.iter().any(|kv| kv.starts_with("dbname=")) {
            params.push(format!("dbname={name}"));
        }
        let mut v = vec![format!("host={host}"), format!("port={port}")];
        v.extend(params);
        format!("{name} = {}", v.join(" "))
    };
    let mut out = Vec::new();
    let mut in_db = false;
    let mut seen = vec![false; names.len()];
    let flush_missing = |out: &mut Vec<String>, seen: &mut Vec<bool>| {
        for (i, n) in names.iter().enumerate() {
            if !seen[i] {
                out.push(entry(n, None));
                seen[i] = true;
            }
        }
    };
    let mut had_section = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            if in_db {
                flush_missing(&mut out, &mut seen);
            }
            in_db = t.eq_ignore_ascii_case("[databases]");
            had_section |= in_db;
            out.push(line.to_string());
            continue;
        }
        if in_db
            && let Some((k, v)) = t.split_once('=')
            && let Some(i) = names.iter().position(|n| n == k.trim())
        {
            out.push(entry(k.trim(), Some(v)));
            seen[i] = true;
            continue;
        }
        out.push(line.to_string());
    }
    if in_db {
        flush_missing(&mut out, &mut seen);
    }
    if !had_section {
        out.insert(0, "[databases]".into());
        let mut head = Vec::new();
        flush_missing(&mut head, &mut seen);
        for (i, l) in head.into_iter().enumerate() {
            out.insert(1 + i, l);
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Points PgBouncer's databases at `target` (rewrites the ini atomically: temp file, fsync,
/// rename) and `RELOAD`s it. Server connections to the old address are closed by PgBouncer
/// when their database's address changes.
pub fn pgbouncer_repoint(c: &FileConfig, target: ProxyTarget) -> Result<(), Failure> {
    let Some(b) = &c.pgbouncer else { return Ok(()) };
    let (host, port) = match target {
        ProxyTarget::Local => (c.node.host.clone(), c.node.port),
        ProxyTarget::Peer(p) => match c.peer(p) {
            Some(e) => (e.host.clone(), e.port),
            None => return Err(Failure::Refused),
        },
    };
    let io = |what: &str, e: std::io::Error| {
        log::error!("pgbouncer.ini = {}: {what}: {e}", b.ini.display());
        Failure::Io
    };
    let text = std::fs::read_to_string(&b.ini).map_err(|e| io("read", e))?;
    let new = rewrite_databases(&text, &b.databases, &host, port);
    if new != text {
        let tmp = crate::config::sibling(&b.ini, "pgha-tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(|e| io("write a temp file", e))?;
            if let Ok(m) = std::fs::metadata(&b.ini) {
                let _ = f.set_permissions(m.permissions());
            }
            f.write_all(new.as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| io("write a temp file", e))?;
        }
        std::fs::rename(&tmp, &b.ini).map_err(|e| io("rename the temp file", e))?;
    }
    log::info!(
        "pgbouncer: {} -> {host}:{port}; reloading",
        b.databases.join(", ")
    );
    admin(b, ms(c.timeouts.command_ms), "RELOAD")
}

/// Runs a user hook (`sh -c CMD`) with PGHA_* variables, bounded by `hooks.timeout`.
pub fn run_hook(c: &FileConfig, key: &str, cmd: &str, env: &[(&str, String)]) -> HookOutcome {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(cmd)
        .env("PGHA_NODE", &c.node.name)
        .env("PGHA_HOOK", key);
    for (k, v) in env {
        sh.env(k, v);
    }
    let start = Instant::now();
    let (r, stderr) = process::run_capturing(&format!("hook {key}"), sh, ms(c.hooks.timeout_ms));
    let exit = match r {
        Ok(_) => HookExit::Code(0),
        Err(Failure::Exit(code)) => HookExit::Code(code),
        Err(Failure::Signal(sig)) => HookExit::Signal(sig),
        Err(Failure::Timeout) => HookExit::TimedOut,
        Err(_) => HookExit::SpawnFailed,
    };
    match &r {
        Ok(_) => log::info!("hook {key}: done"),
        Err(f) => log::warn!("hook {key}: failed: {f:?}"),
    }
    HookOutcome {
        exit,
        duration_ms: start.elapsed().as_millis() as u64,
        stderr: StderrTail::of(&stderr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_repointed_and_other_entries_kept() {
        let ini = "[databases]\napp = host=10.0.0.1 port=5432 dbname=app pool_size=5\nother = host=x\n\n[pgbouncer]\nlisten_port = 6432\n";
        let names = vec!["app".to_string(), "new".to_string()];
        let out = rewrite_databases(ini, &names, "10.0.0.2", 6433);
        assert!(
            out.contains("app = host=10.0.0.2 port=6433 dbname=app pool_size=5\n"),
            "{out}"
        );
        assert!(out.contains("other = host=x\n"), "{out}");
        assert!(
            out.contains("new = host=10.0.0.2 port=6433 dbname=new\n"),
            "{out}"
        );
        assert!(out.contains("[pgbouncer]\nlisten_port = 6432\n"), "{out}");
        assert_eq!(
            rewrite_databases(&out, &names, "10.0.0.2", 6433),
            out,
            "idempotent"
        );
        let bare = rewrite_databases("[pgbouncer]\nx = 1\n", &names, "h", 1);
        assert!(
            bare.starts_with("[databases]\napp = host=h port=1 dbname=app\nnew = "),
            "{bare}"
        );
    }
}
