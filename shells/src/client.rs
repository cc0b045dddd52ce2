//! The operator commands that talk to a running daemon's HTTP API: `status`, `check`,
//! `recover`, `promote` (with `--force`: a switchover), `pause`, `resume`. One request per
//! connection (HTTP/1.0, `Connection: close`), every call bounded as a whole in time
//! ([`call`]'s timeout, however slowly the server answers) and in bytes ([`MAX_REPLY`]).
//! Operator requests go over the local socket (`[api] socket`) when this user can use it,
//! else over TCP with the token of `[api] token_file`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::FileConfig;
use crate::error::DaemonError;
use crate::status::{HealthReply, OperatorAnswer, StatusReply};

/// The most bytes of a reply the client reads.
pub const MAX_REPLY: usize = 1 << 20;
/// The bound of one status or check call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The bound of one operator call (the daemon waits up to 10 s for its main loop).
pub const OPERATOR_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a daemon's API listens.
#[derive(Debug, Clone)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A reply: status code, whether it says "overloaded" (could not tell), and the body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub overloaded: bool,
    pub body: String,
}

/// Why a call to `target` failed: the daemon could not be reached at all ([`CallError::Connect`]),
/// or it did not answer properly.
#[derive(Debug)]
pub enum CallError {
    /// Nothing could be connected to.
    Connect {
        target: Target,
        source: std::io::Error,
    },
    /// No complete reply within the call's bound.
    Timeout { target: Target, limit: Duration },
    /// The reply grew past `max` bytes.
    TooLarge { target: Target, max: usize },
    /// The exchange broke off, or the reply is not HTTP.
    Broken { target: Target, why: Broken },
}

/// How an exchange broke off.
#[derive(Debug)]
pub enum Broken {
    Reading(std::io::Error),
    Sending(std::io::Error),
    /// Closed without a byte of reply.
    Closed,
    NotHttp,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect {
                target: Target::Tcp(addr),
                source,
            } => write!(f, "cannot reach the pgha API at {addr}: {source}"),
            CallError::Connect {
                target: Target::Unix(p),
                source,
            } => write!(f, "cannot reach the pgha socket {}: {source}", p.display()),
            CallError::Timeout { target, limit } => write!(
                f,
                "{target}: no complete reply within {} s",
                limit.as_secs_f64()
            ),
            CallError::TooLarge { target, max } => {
                write!(f, "{target}: reply larger than {max} bytes: not a pgha API")
            }
            CallError::Broken { target, why } => match why {
                Broken::Reading(e) => write!(f, "{target}: reading the reply: {e}"),
                Broken::Sending(e) => write!(f, "{target}: sending the request: {e}"),
                Broken::Closed => write!(f, "{target}: closed without a reply"),
                Broken::NotHttp => write!(f, "{target}: not an HTTP reply"),
            },
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Connect { source, .. }
            | CallError::Broken {
                why: Broken::Reading(source) | Broken::Sending(source),
                ..
            } => Some(source),
            _ => None,
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, t: Duration) {
        let _ = match self {
            Stream::Tcp(s) => s
                .set_read_timeout(Some(t))
                .and(s.set_write_timeout(Some(t))),
            Stream::Unix(s) => s
                .set_read_timeout(Some(t))
                .and(s.set_write_timeout(Some(t))),
        };
    }

    /// Writes without raising SIGPIPE (the CLI restores its default disposition).
    fn send_all(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(buf),
            Stream::Unix(s) => {
                use std::os::fd::AsRawFd;
                while !buf.is_empty() {
                    match nix::sys::socket::send(
                        s.as_raw_fd(),
                        buf,
                        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                    ) {
                        Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                        Ok(n) => buf = &buf[n..],
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            }
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

/// One request, bounded as a whole by `timeout` and the reply by [`MAX_REPLY`]. A reply that
/// arrives before the request is fully written (a server that answered 503 and closed) is
/// still read and returned.
pub fn call(
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Reply, CallError> {
    call_bounded(target, method, path, token, timeout, MAX_REPLY)
}

/// [`call`] with a reply of at most `max_reply` bytes (a daemon probing its peer reads 64 KiB).
pub fn call_bounded(
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
    max_reply: usize,
) -> Result<Reply, CallError> {
    exchange(target, method, path, token, b"", timeout, max_reply)
}

/// One HTTP/1.0 exchange with a request body (sent as JSON when not empty), bounded as a whole
/// by `timeout` and the reply by `max_reply` bytes: what [`call_bounded`] and the etcd
/// gateway client share.
pub fn exchange(
    target: &Target,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
    timeout: Duration,
    max_reply: usize,
) -> Result<Reply, CallError> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let connect = |source| CallError::Connect {
        target: target.clone(),
        source,
    };
    let mut s = match target {
        Target::Tcp(addr) => TcpStream::connect_timeout(addr, left().min(Duration::from_secs(3)))
            .map(Stream::Tcp)
            .map_err(connect)?,
        Target::Unix(p) => UnixStream::connect(p).map(Stream::Unix).map_err(connect)?,
    };
    let timed_out = || CallError::Timeout {
        target: target.clone(),
        limit: timeout,
    };
    let host = match target {
        Target::Tcp(a) => a.to_string(),
        Target::Unix(_) => "localhost".into(),
    };
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let kind = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.set_timeouts(left().max(Duration::from_millis(1)));
    let write_err = s.send_all(&req).err();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let read_err = loop {
        let l = left();
        if l.is_zero() {
            return Err(timed_out());
        }
        s.set_timeouts(l);
        match s.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > max_reply {
                    return Err(CallError::TooLarge {
                        target: target.clone(),
                        max: max_reply,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(timed_out());
            }
            Err(e) => break Some(e),
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf) {
        Ok(httparse::Status::Complete(off)) => {
            let code = resp.code.unwrap_or(0);
            let overloaded = resp
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(crate::api::OVERLOADED_HEADER));
            let body = String::from_utf8_lossy(&buf[off..]).into_owned();
            Ok(Reply {
                code,
                overloaded,
                body,
            })
        }
        _ => {
            let why = match (write_err, read_err) {
                (_, Some(e)) => Broken::Reading(e),
                (Some(e), None) => Broken::Sending(e),
                (None, None) if buf.is_empty() => Broken::Closed,
                (None, None) => Broken::NotHttp,
            };
            Err(CallError::Broken {
                target: target.clone(),
                why,
            })
        }
    }
}

/// One request over TCP with the status-call bound; returns the status code and the body.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), CallError> {
    call(&Target::Tcp(addr), method, path, None, CALL_TIMEOUT).map(|r| (r.code, r.body))
}

/// A daemon's `GET /status`: the JSON as it came (`pgha status --json` prints it whole) and
/// what the command line reads of it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub json: serde_json::Value,
    pub status: StatusReply,
}

/// `GET /status` of the daemon at `addr`; an error names `addr` and says what was wrong (no
/// answer, another code, not a pgha status).
pub fn get_status(addr: SocketAddr) -> Result<Answer, DaemonError> {
    let (code, body) = request(addr, "GET", "/status")?;
    let odd = |problem: String| DaemonError::Answer {
        target: addr.to_string(),
        problem,
    };
    if code != 200 {
        return Err(odd(format!("GET /status answered {code}")));
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| odd(format!("bad status JSON: {e}")))?;
    let status =
        StatusReply::deserialize(&json).map_err(|e| odd(format!("bad status JSON: {e}")))?;
    Ok(Answer { json, status })
}

/// An optional value as the status table prints it: "-" when absent.
fn text<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `pgha status`: this node and its peers, from their APIs.
pub fn status(cfg: &FileConfig, as_json: bool) -> ExitCode {
    let mut nodes = vec![(cfg.node.name.clone(), cfg.node.api)];
    nodes.extend(cfg.peers.iter().map(|p| (p.name.clone(), p.api)));
    let mut all = Vec::new();
    let mut local_ok = false;
    for (i, (name, api)) in nodes.iter().enumerate() {
        let r = get_status(*api);
        if i == 0 {
            local_ok = r.is_ok();
        }
        all.push((name.clone(), *api, r));
    }
    if as_json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|(name, api, r)| match r {
                Ok(a) => a.json.clone(),
                Err(e) => {
                    serde_json::json!({"name": name, "api": api.to_string(), "error": e.to_string()})
                }
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "{:<10} {:<8} {:<18} {:>3} {:<12} {:>10}  last transition",
            "node", "role", "state", "tl", "lsn", "lag"
        );
        for (name, api, r) in &all {
            match r {
                Ok(Answer { status: v, .. }) => println!(
                    "{:<10} {:<8} {:<18} {:>3} {:<12} {:>10}  {}{}",
                    name,
                    v.role.name(),
                    v.state,
                    text(v.timeline),
                    text(v.local.as_ref().and_then(|l| l.lsn.as_ref())),
                    text(v.lag_bytes),
                    text(v.last_transition.as_ref().map(|t| &t.reason)),
                    if v.paused { " [paused]" } else { "" }
                ),
                Err(e) => println!("{name:<10} unreachable ({api}): {e}"),
            }
        }
    }
    if local_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Which node `pgha check` asks: the one whose postgres is at HAProxy's server address
/// (from its external-check arguments `<proxy_addr> <proxy_port> <server_addr> <server_port>`,
/// else `HAPROXY_SERVER_ADDR` / `HAPROXY_SERVER_PORT`), else this node.
pub fn check_target<'a>(
    cfg: &'a FileConfig,
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<&'a crate::config::Endpoint, DaemonError> {
    let server = match args {
        [] => match (env("HAPROXY_SERVER_ADDR"), env("HAPROXY_SERVER_PORT")) {
            (Some(a), Some(p)) if !a.is_empty() => Some((a, p)),
            _ => None,
        },
        [_, _, addr, port] => Some((addr.clone(), port.clone())),
        other => {
            return Err(DaemonError::CheckArgs(format!(
                "expected HAProxy's four external-check arguments (<proxy_address> <proxy_port> \
                 <server_address> <server_port>), got {}: {other:?}",
                other.len()
            )));
        }
    };
    let Some((addr, port)) = server else {
        return Ok(&cfg.node);
    };
    let port: u16 = port.parse().map_err(|_| {
        DaemonError::CheckArgs(format!("server port {port:?} is not a port number"))
    })?;
    std::iter::once(&cfg.node)
        .chain(cfg.peers.iter())
        .find(|e| e.port == port && (e.host == addr || e.api.ip().to_string() == addr))
        .ok_or_else(|| {
            DaemonError::CheckArgs(format!(
                "server {addr}:{port} is not the postgres of any node in the configuration"
            ))
        })
}

/// What a health endpoint's reply says about the role: yes, no, or could not tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    No,
    Unknown,
}

/// 200 is yes; a 503 carrying the daemon's status (its answer that the node is not in the
/// role) is no; anything else (overloaded, another code, no status) is "could not tell".
pub fn verdict(r: &Reply) -> Verdict {
    match r.code {
        200 => Verdict::Yes,
        503 if !r.overloaded => match serde_json::from_str::<HealthReply>(&r.body) {
            // A daemon whose own postgres is alive but full cannot see its role either.
            Ok(h)
                if h.local.as_ref().map(|l| l.result.as_str())
                    == Some(pgha_core::ProbeResult::Overloaded.name()) =>
            {
                Verdict::Unknown
            }
            Ok(_) => Verdict::No,
            Err(_) => Verdict::Unknown,
        },
        _ => Verdict::Unknown,
    }
}

/// `pgha check primary|replica [HAProxy's arguments]`: 0 only for a healthy master (or
/// streaming replica), 1 when the daemon answered that the node is not, 2 when it could not
/// tell (unreachable, overloaded, a bad answer).
pub fn check(cfg: &FileConfig, want: &str, args: &[String]) -> ExitCode {
    let path = if want == "primary" {
        "/primary"
    } else {
        "/replica"
    };
    let target = match check_target(cfg, args, &|k| std::env::var(k).ok()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pgha check: {e}");
            return ExitCode::from(2);
        }
    };
    match call(&Target::Tcp(target.api), "GET", path, None, CALL_TIMEOUT) {
        Ok(r) => match verdict(&r) {
            Verdict::Yes => ExitCode::SUCCESS,
            Verdict::No => {
                eprintln!(
                    "{}: not a healthy {want} ({path} answered {})",
                    target.name, r.code
                );
                ExitCode::from(1)
            }
            Verdict::Unknown => {
                eprintln!(
                    "{}: could not tell ({path} answered {}{})",
                    target.name,
                    r.code,
                    if r.overloaded { ", overloaded" } else { "" }
                );
                ExitCode::from(2)
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// The token of `[api] token_file`, or an error saying how to set one.
fn token(cfg: &FileConfig) -> Result<String, DaemonError> {
    match &cfg.api.token_file {
        Some(p) => crate::config::read_token(p).map_err(DaemonError::config),
        None => Err(DaemonError::NoToken),
    }
}

/// Sends an operator request to this node's daemon: over the local socket when this user
/// can use it, else over TCP with the token.
fn local_operator(cfg: &FileConfig, what: &str) -> Result<Reply, DaemonError> {
    let path = format!("/{what}");
    let sock = Target::Unix(cfg.api.socket.clone());
    match call(&sock, "POST", &path, None, OPERATOR_TIMEOUT) {
        // 403 on the socket: another user; TCP with the token may still be allowed.
        Ok(r) if r.code != 403 => return Ok(r),
        Err(e @ CallError::Connect { .. }) => log::debug!("{e}: trying TCP"),
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    let token = match &cfg.api.token_file {
        Some(_) => Some(token(cfg)?),
        None => None,
    };
    Ok(call(
        &Target::Tcp(cfg.node.api),
        "POST",
        &path,
        token.as_deref(),
        OPERATOR_TIMEOUT,
    )?)
}

/// Prints an operator reply's transitions (or its error); the exit code: 0 carried out, 1
/// refused, 2 not delivered.
fn print_operator(name: &str, what: &str, r: &Reply) -> ExitCode {
    let v = match serde_json::from_str::<OperatorAnswer>(&r.body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{name}: {what}: not a pgha reply ({}): {e}", r.code);
            return ExitCode::from(2);
        }
    };
    if let Some(e) = &v.error {
        eprintln!("{name}: {what}: {e} ({})", r.code);
        return ExitCode::from(2);
    }
    for t in &v.transitions {
        println!("{name}: {} -> {}: {}", t.from, t.to, t.reason);
    }
    if v.transitions.is_empty() {
        println!("{name}: {what}: no change");
    }
    if r.code == 200 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `pgha recover|promote|pause|resume`: sends the request and prints what the daemon did.
/// `promote --force` is a switchover ([`switchover`]).
pub fn operator(cfg: &FileConfig, what: &str, force: bool) -> ExitCode {
    if what == "promote" && force {
        return switchover(cfg);
    }
    match local_operator(cfg, what) {
        Ok(r) => print_operator(&cfg.node.name, what, &r),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn status_of(addr: SocketAddr) -> Option<StatusReply> {
    get_status(addr).ok().map(|a| a.status)
}

/// `pgha promote --force` on a replica: a switchover that never makes two masters. The
/// master's daemon is asked to step down (fast stop: every WAL record reaches the streaming
/// replica first, and it never leads again on its own); once it has stopped and this
/// replica sees it stopped, this replica is promoted; the old master rejoins it. Bounded:
/// the stop may take `timeouts.stop`, plus 30 s.
pub fn switchover(cfg: &FileConfig) -> ExitCode {
    let me = &cfg.node.name;
    let st = match get_status(cfg.node.api) {
        Ok(a) => a.status,
        Err(e) => {
            eprintln!("{me}: its daemon does not answer on {}: {e}", cfg.node.api);
            return ExitCode::from(2);
        }
    };
    if st.state != "replica" {
        eprintln!(
            "{me}: promote --force: this node is {}, not a replica",
            st.state
        );
        return ExitCode::from(1);
    }
    // The master it follows, as this node's core sees it.
    let master = cfg
        .peers
        .iter()
        .find(|p| {
            st.local.as_ref().and_then(|l| l.upstream.as_deref()) == Some(p.name.as_str())
                && st.seen(&p.name) == Some("master")
        })
        .or_else(|| {
            cfg.peers
                .iter()
                .find(|p| st.seen(&p.name) == Some("master"))
        });
    let Some(master) = master else {
        // No healthy master in sight: a plain promote (the core refuses it otherwise).
        return operator(cfg, "promote", false);
    };
    if !(st.local_result() == Some("replica") && st.local.as_ref().is_some_and(|l| l.streaming)) {
        eprintln!(
            "{me}: promote --force: this replica does not stream from {} now, so it may miss WAL: refusing the switchover",
            master.name
        );
        return ExitCode::from(1);
    }
    let token = match token(cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "{me}: promote --force asks {}'s daemon to step down: {e}",
                master.name
            );
            return ExitCode::from(2);
        }
    };
    println!(
        "{me}: switchover: asking {} to step down first",
        master.name
    );
    let r = match call(
        &Target::Tcp(master.api),
        "POST",
        "/step-down",
        Some(&token),
        OPERATOR_TIMEOUT,
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "{}: {e}; nothing changed (stop {}'s postgres yourself, then `pgha promote`)",
                master.name, master.name
            );
            return ExitCode::from(2);
        }
    };
    let code = print_operator(&master.name, "step-down", &r);
    if r.code != 200 {
        return code;
    }
    // Wait until the old master has stopped (its stop is complete: its WAL is on the
    // replica) and this replica no longer sees a master there.
    let limit = Duration::from_millis(cfg.timeouts.stop_ms) + Duration::from_secs(30);
    let give_up = Instant::now() + limit;
    let stopped = [
        "stepped_down",
        "cloning",
        "starting",
        "waiting_for_local",
        "replica",
    ];
    loop {
        let old = status_of(master.api);
        let old_state = old.as_ref().map(|s| s.state.clone());
        let mine = status_of(cfg.node.api);
        let my_state = mine.as_ref().map(|s| s.state.clone());
        if matches!(my_state.as_deref(), Some("promoting" | "master")) {
            println!("{me}: promoted itself once {} stopped", master.name);
            return ExitCode::SUCCESS;
        }
        let old_stopped = old_state.as_deref().is_some_and(|s| stopped.contains(&s));
        let seen_stopped = mine
            .as_ref()
            .and_then(|s| s.seen(&master.name))
            .is_some_and(|r| r != "master" && r != "shutting down");
        if old_stopped && seen_stopped {
            break;
        }
        if Instant::now() >= give_up {
            eprintln!(
                "{me}: {} did not stop within {} s (state {}); this node was not promoted. \
                 `pgha recover` on {} lets it lead again",
                master.name,
                limit.as_secs(),
                old_state.as_deref().unwrap_or("unknown"),
                master.name
            );
            return ExitCode::from(1);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{me}: {} has stopped: promoting {me}", master.name);
    match local_operator(cfg, "promote") {
        Ok(r) => {
            let code = print_operator(me, "promote", &r);
            if r.code == 200 {
                println!(
                    "{me}: switchover done; {} rejoins {me} as a replica",
                    master.name
                );
            }
            code
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-connection server running `f` on the accepted stream.
    fn fake(f: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((s, _)) = l.accept() {
                f(s);
            }
        });
        addr
    }

    #[test]
    fn a_call_against_a_server_that_trickles_its_reply_ends_at_its_deadline() {
        let addr = fake(|mut s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
            for _ in 0..600 {
                if s.write_all(b"X").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let e = call(
            &Target::Tcp(addr),
            "GET",
            "/primary",
            None,
            Duration::from_secs(1),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no complete reply within"), "{e}");
    }

    #[test]
    fn a_call_nothing_listens_for_is_a_connect_error_naming_the_address() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = call(
            &Target::Tcp(addr),
            "GET",
            "/status",
            None,
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(e, CallError::Connect { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot reach the pgha API at {addr}: ")),
            "{e}"
        );
        let e = DaemonError::from(e);
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn a_call_against_a_server_that_streams_stops_reading_at_one_mebibyte() {
        let addr = fake(|mut s| {
            let chunk = vec![b'x'; 64 * 1024];
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            while s.write_all(&chunk).is_ok() {}
        });
        let e = call(
            &Target::Tcp(addr),
            "GET",
            "/status",
            None,
            Duration::from_secs(60),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn a_503_answered_before_the_request_was_written_is_reported_not_a_broken_pipe() {
        let addr = fake(|mut s| {
            let body = "{\"error\":\"overloaded: busy\"}";
            let _ = write!(
                s,
                "HTTP/1.1 503 Service Unavailable\r\nX-Pgha-Overloaded: 1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            // Closed with the request unread: the client's write fails.
        });
        // A request far larger than the socket buffers, so it cannot be written in full.
        let big = "x".repeat(4 << 20);
        let r = call(
            &Target::Tcp(addr),
            "GET",
            "/primary",
            Some(&big),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(r.code, 503);
        assert!(r.overloaded);
        assert_eq!(verdict(&r), Verdict::Unknown);
    }

    #[test]
    fn only_a_503_carrying_the_daemons_status_means_no() {
        let r = |code, overloaded, body: &str| Reply {
            code,
            overloaded,
            body: body.into(),
        };
        assert_eq!(verdict(&r(200, false, "{}")), Verdict::Yes);
        assert_eq!(
            verdict(&r(503, false, "{\"state\":\"replica\"}")),
            Verdict::No
        );
        assert_eq!(
            verdict(&r(503, true, "{\"state\":\"replica\"}")),
            Verdict::Unknown
        );
        assert_eq!(
            verdict(&r(503, false, "{\"error\":\"x\"}")),
            Verdict::Unknown
        );
        assert_eq!(verdict(&r(500, false, "")), Verdict::Unknown);
        assert_eq!(verdict(&r(404, false, "")), Verdict::Unknown);
        // A replica whose postgres is full: its daemon could not tell either.
        assert_eq!(
            verdict(&r(
                503,
                false,
                "{\"state\":\"replica\",\"local\":{\"result\":\"overloaded\"}}"
            )),
            Verdict::Unknown
        );
    }

    #[test]
    fn check_picks_the_node_haproxy_names() {
        let text = crate::config::tests::sample(&std::env::temp_dir());
        let (cfg, _) = crate::config::parse(std::path::Path::new("x.toml"), &text).unwrap();
        let none = |_: &str| None;
        assert_eq!(check_target(&cfg, &[], &none).unwrap().name, "db0");
        let args: Vec<String> = ["0.0.0.0", "5432", "127.0.0.1", "6433"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(check_target(&cfg, &args, &none).unwrap().name, "db1");
        let env = |k: &str| match k {
            "HAPROXY_SERVER_ADDR" => Some("127.0.0.1".to_string()),
            "HAPROXY_SERVER_PORT" => Some("6433".to_string()),
            _ => None,
        };
        assert_eq!(check_target(&cfg, &[], &env).unwrap().name, "db1");
        let bad: Vec<String> = ["a", "b", "127.0.0.1", "99"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = check_target(&cfg, &bad, &none).unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:99"), "{e}");
        let e = check_target(&cfg, &bad[..2], &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("four"), "{e}");
        let e = check_target(
            &cfg,
            &[
                bad[0].clone(),
                bad[1].clone(),
                "127.0.0.1".into(),
                "x".into(),
            ],
            &none,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"x\""), "{e}");
    }
}
