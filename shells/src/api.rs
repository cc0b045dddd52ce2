//! The daemon's HTTP API on `[node] api`: Patroni-compatible health checks (`/primary`,
//! `/replica?lag=`, `/read-only`, `/health`, ...), `GET /status`, and the operator requests
//! `POST /recover`, `/force-recover` (`pgha recover --force`), `/promote`, `/pause`,
//! `/resume`, `/step-down` (each enters the core as `Event::Operator` and the reply says what
//! the daemon did).
//!
//! Who may ask for what (docs/security.md): health and status reads are open (load balancers
//! use them). Operator requests over TCP need `Authorization: Bearer <token>` with the token
//! of `[api] token_file` (compared in constant time; 401 without it, 403 when no token file is
//! configured); on the local Unix socket (`[api] socket`, 0600 in a 0700 directory) they need
//! a caller whose uid is the daemon's or root's (SO_PEERCRED).
//!
//! A small accept loop with hard bounds, so a slow or hostile client cannot stall the daemon
//! and load never reads as "not primary": at most [`Limits::max_connections`] connections;
//! at the bound the oldest connection that has not sent a complete request head is cut to
//! make room (a health check sends its request at once), and only when every connection is
//! busy with a request does a new one wait up to [`Limits::overload_wait`], then get a 503
//! marked `X-Pgha-Overloaded` (which `pgha check` reports as "could not tell", never "no").
//! A connection that sends nothing within [`Limits::idle_timeout`] is closed; the whole head
//! must arrive within [`Limits::read_timeout`] (408) and be at most [`Limits::max_request`]
//! bytes (431); every write is bounded by [`Limits::write_timeout`]. One request per
//! connection (`Connection: close`). Requests are parsed with `httparse`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pgha_core::{OperatorRequest, ProbeResult, State};

use crate::error::DaemonError;
use crate::runtime::Msg;
use crate::status::Status;

/// Sends a message to the running main loop; false when it is gone.
pub type Submit = Arc<dyn Fn(Msg) -> bool + Send + Sync>;

/// The header that marks a 503 as "overloaded" (could not tell) rather than "no".
pub const OVERLOADED_HEADER: &str = "X-Pgha-Overloaded";

/// A healthy master: the core says master and the local postgres answered as master, or
/// answered "too many connections" (alive and still the master the core says it is: a full
/// master marked down would have every session cut by HAProxy's `on-marked-down`).
pub fn is_healthy_master(s: &Status) -> bool {
    s.state == State::Master
        && s.local_result()
            .is_some_and(|r| matches!(r, ProbeResult::Master { .. } | ProbeResult::Overloaded))
}

/// A healthy streaming replica: the core says replica, postgres answered as a replica whose
/// WAL receiver streams.
pub fn is_healthy_replica(s: &Status) -> bool {
    matches!(s.state, State::Replica { .. })
        && s.local
            .as_ref()
            .is_some_and(|l| matches!(l.result, ProbeResult::Replica { .. }) && l.streaming)
}

/// Postgres runs and answers (as master or replica, or "too many connections").
pub fn is_running(s: &Status) -> bool {
    s.local_result().is_some_and(|r| {
        matches!(
            r,
            ProbeResult::Master { .. } | ProbeResult::Replica { .. } | ProbeResult::Overloaded
        )
    })
}

/// The bounds of the API server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_request: usize,
    /// A connection that has sent no byte within this is closed.
    pub idle_timeout: Duration,
    /// The whole request head must arrive within this (408).
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// At the bound, a connection still sending its head may be cut once it is this old.
    pub evict_after: Duration,
    /// At the bound with every connection busy, how long a new one waits for room (503
    /// overloaded after).
    pub overload_wait: Duration,
    /// How long an operator request waits for the main loop's answer.
    pub operator_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            max_request: 8 * 1024,
            idle_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            evict_after: Duration::from_millis(100),
            overload_wait: Duration::from_secs(1),
            operator_timeout: Duration::from_secs(10),
        }
    }
}

/// Who may send operator requests.
#[derive(Clone, Default)]
pub struct Auth {
    /// The token operator requests over TCP must carry (`[api] token_file`); `None` refuses
    /// them over TCP.
    pub token: Option<String>,
    /// The local socket, named in refusals.
    pub socket: Option<PathBuf>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("socket", &self.socket)
            .finish()
    }
}

/// Where a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Tcp,
    /// The local socket, from a caller the daemon's uid or root.
    Local,
}

/// A running API server; stop it with [`Api::stop`].
#[derive(Debug)]
pub struct Api {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    socket: Option<PathBuf>,
    #[cfg_attr(not(test), allow(dead_code))]
    open: Arc<Mutex<Conns>>,
    threads: Vec<JoinHandle<()>>,
}

impl Api {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accepts.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(p) = &self.socket {
            let _ = UnixStream::connect(p);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(p) = &self.socket {
            let _ = std::fs::remove_file(p);
        }
    }

    /// TCP connections open now (tests wait on it).
    #[cfg(test)]
    pub fn open_connections(&self) -> usize {
        self.open.lock().map(|c| c.open.len()).unwrap_or(0)
    }
}

/// Binds `addr` (an error names it), before anything else starts.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .map_err(|e| DaemonError::io(format!("cannot listen on node.api = {addr}"), e))
}

/// Binds the local socket at `path`: its directory is created 0700 when missing, else must
/// be owned by this user and closed to group and others; a socket left by a daemon that is
/// gone is replaced, one a live daemon serves is an error. The socket is made 0600.
pub fn bind_local(path: &Path) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
    let key = format!("api.socket = {:?}", path.display());
    let io = |what: String| {
        let key = &key;
        move |e| DaemonError::io(format!("{key}: {what}"), e)
    };
    let dir = path
        .parent()
        .ok_or_else(|| DaemonError::setting(&key, "names no directory"))?;
    let me = nix::unistd::geteuid().as_raw();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(io(format!("cannot create its directory {}", dir.display())))?;
        }
        Err(e) => return Err(io(format!("its directory {}", dir.display()))(e)),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if !m.is_dir() || m.uid() != me || mode & 0o077 != 0 {
                return Err(DaemonError::setting(
                    &key,
                    format!(
                        "its directory {} must be a directory owned by uid {me} with mode 700 (it is {}owned by uid {}, mode {mode:o})",
                        dir.display(),
                        if m.is_dir() { "" } else { "not a directory, " },
                        m.uid()
                    ),
                ));
            }
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(DaemonError::setting(
                    &key,
                    "another daemon serves this socket",
                ));
            }
            std::fs::remove_file(path).map_err(io("cannot remove the stale socket".into()))?;
        }
        Ok(_) => return Err(DaemonError::setting(&key, "exists and is not a socket")),
        Err(_) => {}
    }
    let l = UnixListener::bind(path).map_err(io("cannot listen".into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod 600".into()))?;
    Ok(l)
}

/// One reply: status code, extra headers and body (JSON).
#[derive(Debug)]
struct Reply {
    code: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(code: u16, body: impl Into<String>) -> Reply {
    Reply {
        code,
        headers: Vec::new(),
        body: body.into(),
    }
}

fn error(code: u16, msg: &str) -> Reply {
    reply(code, serde_json::json!({ "error": msg }).to_string())
}

fn overloaded(what: &str) -> Reply {
    let mut r = reply(
        503,
        serde_json::json!({ "error": format!("overloaded: {what}; try again"), "overloaded": true })
            .to_string(),
    );
    r.headers.push((OVERLOADED_HEADER, "1".into()));
    r
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The TCP connections open, in the order accepted, and whether each has sent its head.
#[derive(Debug, Default)]
struct Conns {
    next: u64,
    open: BTreeMap<u64, Open>,
}

#[derive(Debug)]
struct Open {
    since: Instant,
    head_done: bool,
    /// A handle to cut it.
    stream: TcpStream,
}

/// Removes a connection from [`Conns`] when its thread ends.
struct Registered {
    id: u64,
    conns: Arc<Mutex<Conns>>,
}

impl Registered {
    fn head_done(&self) {
        if let Ok(mut c) = self.conns.lock()
            && let Some(o) = c.open.get_mut(&self.id)
        {
            o.head_done = true;
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut c) = self.conns.lock() {
            c.open.remove(&self.id);
        }
    }
}

/// Counts a local connection while it is served.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What every connection handler shares.
struct Shared {
    status: Arc<Mutex<Status>>,
    submit: Submit,
    auth: Auth,
    limits: Limits,
}

/// Serves on threads of its own, with the default [`Limits`].
pub fn serve(
    listener: TcpListener,
    local: Option<(UnixListener, PathBuf)>,
    status: Arc<Mutex<Status>>,
    submit: Submit,
    auth: Auth,
) -> Result<Api, DaemonError> {
    serve_with(listener, local, status, submit, auth, Limits::default())
}

/// Serves with explicit limits (tests use short ones).
pub fn serve_with(
    listener: TcpListener,
    local: Option<(UnixListener, PathBuf)>,
    status: Arc<Mutex<Status>>,
    submit: Submit,
    auth: Auth,
    limits: Limits,
) -> Result<Api, DaemonError> {
    let addr = listener
        .local_addr()
        .map_err(|e| DaemonError::io("node.api", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        status,
        submit,
        auth,
        limits,
    });
    let conns = Arc::new(Mutex::new(Conns::default()));
    let mut threads = Vec::new();
    let (flag, sh, open) = (stop.clone(), shared.clone(), conns.clone());
    threads.push(
        std::thread::Builder::new()
            .name("pgha-api".into())
            .spawn(move || accept_tcp(listener, &flag, &sh, &open))
            .map_err(|e| DaemonError::io("cannot start the API thread", e))?,
    );
    let socket = match local {
        None => None,
        Some((l, path)) => {
            let (flag, sh) = (stop.clone(), shared.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("pgha-api-local".into())
                    .spawn(move || accept_local(l, &flag, &sh))
                    .map_err(|e| DaemonError::io("cannot start the API thread", e))?,
            );
            Some(path)
        }
    };
    Ok(Api {
        stop,
        addr,
        socket,
        open: conns,
        threads,
    })
}

/// Makes room for one more connection: true when there is (a connection still sending its
/// head may have been cut for it), false when every connection stayed busy for
/// `overload_wait`.
fn make_room(conns: &Mutex<Conns>, limits: &Limits) -> bool {
    let give_up = Instant::now() + limits.overload_wait;
    loop {
        {
            let Ok(mut c) = conns.lock() else {
                return false;
            };
            if c.open.len() < limits.max_connections {
                return true;
            }
            let oldest = c
                .open
                .iter()
                .find(|(_, o)| !o.head_done && o.since.elapsed() >= limits.evict_after)
                .map(|(id, _)| *id);
            if let Some(id) = oldest
                && let Some(o) = c.open.remove(&id)
            {
                log::debug!(
                    "api: {} connections open: cutting one that sent no request in {} ms",
                    limits.max_connections,
                    o.since.elapsed().as_millis()
                );
                let _ = o.stream.shutdown(std::net::Shutdown::Both);
                return true;
            }
        }
        if Instant::now() >= give_up {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn accept_tcp(
    listener: TcpListener,
    stop: &AtomicBool,
    shared: &Arc<Shared>,
    conns: &Arc<Mutex<Conns>>,
) {
    let refusing = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("api: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let limits = shared.limits;
        let _ = stream.set_write_timeout(Some(limits.write_timeout));
        if !make_room(conns, &limits) {
            // Answered on a thread of its own (bounded in number), so a slow reader does not
            // hold the accept loop; past that bound the connection is just closed.
            if refusing.fetch_add(1, Ordering::SeqCst) < 64 {
                let slot = Slot(refusing.clone());
                let _ = std::thread::Builder::new()
                    .name("pgha-api-busy".into())
                    .spawn(move || {
                        let _slot = slot;
                        write_reply(&stream, &overloaded("every connection is busy"), false);
                    });
            } else {
                refusing.fetch_sub(1, Ordering::SeqCst);
            }
            continue;
        }
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let reg = {
            let Ok(mut c) = conns.lock() else {
                continue;
            };
            let id = c.next;
            c.next += 1;
            c.open.insert(
                id,
                Open {
                    since: Instant::now(),
                    head_done: false,
                    stream: handle,
                },
            );
            Registered {
                id,
                conns: conns.clone(),
            }
        };
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("pgha-api-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve_connection(stream, &sh, Channel::Tcp, || reg.head_done());
                drop(reg);
            });
        if let Err(e) = spawned {
            log::warn!("api: cannot start a connection thread: {e}");
        }
    }
}

/// Local connections at once; the socket is for one operator at a time.
const MAX_LOCAL: usize = 16;

fn accept_local(listener: UnixListener, stop: &AtomicBool, shared: &Arc<Shared>) {
    let active = Arc::new(AtomicUsize::new(0));
    let me = nix::unistd::geteuid().as_raw();
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                log::warn!("api: accept on the local socket: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_write_timeout(Some(shared.limits.write_timeout));
        let uid = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
            .map(|c| c.uid());
        let slot = Slot(active.clone());
        let over = active.fetch_add(1, Ordering::SeqCst) >= MAX_LOCAL;
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("pgha-api-local-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let _slot = slot;
                match uid {
                    Ok(u) if u == me || u == 0 => {}
                    Ok(u) => {
                        log::warn!("api: local socket: refused a caller with uid {u}");
                        let msg = format!(
                            "uid {u} may not use this socket: only the daemon's user (uid {me}) and root"
                        );
                        write_reply(&stream, &error(403, &msg), false);
                        return;
                    }
                    Err(e) => {
                        write_reply(&stream, &error(403, &format!("caller unknown: {e}")), false);
                        return;
                    }
                }
                if over {
                    write_reply(&stream, &overloaded("too many local connections"), false);
                    return;
                }
                serve_connection(stream, &sh, Channel::Local, || {});
            });
        if let Err(e) = spawned {
            log::warn!("api: cannot start a connection thread: {e}");
        }
    }
}

/// A stream the server answers on: TCP or the local socket.
trait Conn: Read + Write {
    fn read_timeout(&self, t: Duration);
    fn shutdown_write(&self);
}

impl Conn for TcpStream {
    fn read_timeout(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Conn for UnixStream {
    fn read_timeout(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

fn write_reply<S: Conn>(stream: &S, r: &Reply, head_only: bool)
where
    for<'a> &'a S: Read + Write,
{
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.code,
        reason(r.code),
        r.body.len()
    );
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !head_only {
        bytes.extend_from_slice(r.body.as_bytes());
    }
    let mut w = stream;
    if let Err(e) = w.write_all(&bytes).and_then(|_| w.flush()) {
        log::debug!("api: writing a reply: {e}");
    }
    // Close our side, then drain briefly what the client still sends (bounded), so the
    // reply is not lost to a reset caused by unread request bytes.
    stream.shutdown_write();
    let until = Instant::now() + Duration::from_millis(500);
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let mut r = stream;
    while drained < 64 * 1024 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.read_timeout(left);
        match r.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Reads one request head within the limits, answers it and closes the connection.
/// `head_done` is called once the head is complete.
fn serve_connection<S: Conn>(stream: S, shared: &Shared, channel: Channel, head_done: impl FnOnce())
where
    for<'a> &'a S: Read + Write,
{
    let limits = shared.limits;
    let start = Instant::now();
    let deadline = start + limits.read_timeout;
    let idle_deadline = start + limits.idle_timeout.min(limits.read_timeout);
    let mut buf = vec![0u8; limits.max_request];
    let mut len = 0;
    let mut r = &stream;
    loop {
        let until = if len == 0 { idle_deadline } else { deadline };
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            write_reply(&stream, &error(408, "request not received in time"), false);
            return;
        }
        stream.read_timeout(left);
        if len == buf.len() {
            write_reply(
                &stream,
                &error(
                    431,
                    &format!("request head over {} bytes", limits.max_request),
                ),
                false,
            );
            return;
        }
        match r.read(&mut buf[len..]) {
            Ok(0) => return,
            Ok(n) => len += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                write_reply(&stream, &error(408, "request not received in time"), false);
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => {
                head_done();
                let method = req.method.unwrap_or("").to_string();
                let target = req.path.unwrap_or("").to_string();
                let bearer = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| h.value.to_vec());
                let r = handle(&method, &target, bearer.as_deref(), channel, shared);
                write_reply(&stream, &r, method == "HEAD");
                return;
            }
            Err(e) => {
                write_reply(&stream, &error(400, &format!("bad request: {e}")), false);
                return;
            }
        }
    }
}

/// Compares two tokens in time that depends only on the expected token's length.
fn same_token(given: &[u8], want: &[u8]) -> bool {
    let mut diff = given.len() ^ want.len();
    for (i, w) in want.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ w);
    }
    diff == 0
}

/// Whether an operator request may go to the core; the refusal otherwise.
fn authorize(authorization: Option<&[u8]>, channel: Channel, auth: &Auth) -> Result<(), Reply> {
    if channel == Channel::Local {
        return Ok(());
    }
    let socket = auth
        .socket
        .as_ref()
        .map(|p| format!(" or use the local socket {} on this host", p.display()))
        .unwrap_or_default();
    let Some(token) = &auth.token else {
        return Err(error(
            403,
            &format!(
                "operator requests over TCP are disabled: set [api] token_file in the node's configuration (see docs/security.md){socket}"
            ),
        ));
    };
    let given = authorization.and_then(|v| {
        let v = v.trim_ascii();
        (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| v[7..].trim_ascii())
    });
    match given {
        Some(g) if same_token(g, token.as_bytes()) => Ok(()),
        _ => {
            let mut r = error(
                401,
                &format!(
                    "operator requests need `Authorization: Bearer <the token of [api] token_file>`{socket}"
                ),
            );
            r.headers.push(("WWW-Authenticate", "Bearer".into()));
            Err(r)
        }
    }
}

/// A byte count as Patroni's `?lag=` takes it: plain bytes, or a number with a PostgreSQL
/// memory unit (`B`, `kB`, `MB`, `GB`, `TB`; powers of 1024).
pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" | "k" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        "TB" | "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// What a health endpoint checks, from the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Primary,
    Replica,
    ReadOnly,
    Health,
    Liveness,
    Status,
}

fn check_of(path: &str) -> Option<Check> {
    Some(match path {
        "/primary" | "/master" | "/read-write" | "/leader" => Check::Primary,
        "/replica" => Check::Replica,
        "/read-only" => Check::ReadOnly,
        "/health" => Check::Health,
        "/liveness" => Check::Liveness,
        "/status" | "/" => Check::Status,
        _ => return None,
    })
}

/// Answers one request: `method` and the request target (path and query).
fn handle(
    method: &str,
    target: &str,
    authorization: Option<&[u8]>,
    channel: Channel,
    shared: &Shared,
) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = match path {
        "/recover" => Some(OperatorRequest::Recover),
        "/force-recover" => Some(OperatorRequest::ForceRecover),
        "/promote" => Some(OperatorRequest::Promote),
        "/pause" => Some(OperatorRequest::Pause),
        "/resume" => Some(OperatorRequest::Resume),
        "/step-down" => Some(OperatorRequest::StepDown),
        _ => None,
    };
    if let Some(request) = request {
        if method != "POST" {
            return error(405, "use POST");
        }
        if let Err(refused) = authorize(authorization, channel, &shared.auth) {
            log::warn!(
                "api: operator request {} refused ({})",
                request.name(),
                refused.code
            );
            return refused;
        }
        return operator(request, &shared.submit, shared.limits.operator_timeout);
    }
    let Some(check) = check_of(path) else {
        return error(404, &format!("no such endpoint: {path}"));
    };
    if !matches!(method, "GET" | "HEAD" | "OPTIONS") {
        return error(405, "use GET, HEAD or OPTIONS");
    }
    // Query: `lag` is the only value checked; other keys (Patroni's tags) are ignored.
    let mut max_lag = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "lag" {
            match parse_bytes(v) {
                Some(n) => max_lag = Some(n),
                None => {
                    return error(
                        400,
                        &format!("lag={v:?}: expected bytes, e.g. 1048576 or 16MB"),
                    );
                }
            }
        }
    }
    let Ok(s) = shared.status.lock().map(|s| s.clone()) else {
        return error(500, "status unavailable");
    };
    let lag_ok = |s: &Status| match max_lag {
        None => true,
        Some(max) => s.lag_bytes.is_some_and(|l| l <= max),
    };
    let ok = match check {
        Check::Primary => is_healthy_master(&s),
        Check::Replica => is_healthy_replica(&s) && lag_ok(&s),
        Check::ReadOnly => is_healthy_master(&s) || (is_healthy_replica(&s) && lag_ok(&s)),
        Check::Health => is_running(&s),
        Check::Liveness | Check::Status => true,
    };
    let body = if check == Check::Status {
        serde_json::to_string_pretty(&s).unwrap_or_default()
    } else {
        serde_json::to_string(&s).unwrap_or_default()
    };
    reply(if ok { 200 } else { 503 }, body)
}

fn operator(request: OperatorRequest, submit: &Submit, timeout: Duration) -> Reply {
    let (tx, rx) = mpsc::channel();
    if !submit(Msg::Operator { request, reply: tx }) {
        return error(503, "the daemon is stopping");
    }
    match rx.recv_timeout(timeout) {
        Ok(r) => reply(
            if r.accepted { 200 } else { 409 },
            serde_json::to_string_pretty(&r).unwrap_or_default(),
        ),
        Err(_) => error(
            503,
            &format!("no reply from the daemon within {} s", timeout.as_secs()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Target, call};
    use crate::runtime::OperatorReply;
    use crate::status::ProbeView;
    use pgha_core::{Lsn, PeerId, Role};

    /// A state by its name.
    fn state_named(name: &str) -> State {
        match name {
            "master" => State::Master,
            "replica" => State::Replica {
                upstream: PeerId(0),
            },
            "fenced" => State::Fenced,
            "waiting_for_local" => State::WaitingForLocal { expect: None },
            other => panic!("no state {other:?} in these tests"),
        }
    }

    /// A probe result by its name.
    fn result_named(name: &str) -> ProbeResult {
        match name {
            "master" => ProbeResult::Master {
                timeline: 1,
                lsn: Lsn(0),
            },
            "replica" => ProbeResult::Replica {
                timeline: 1,
                replay_lsn: Lsn(0),
                upstream: None,
            },
            "overloaded" => ProbeResult::Overloaded,
            "refused" => ProbeResult::Refused,
            other => panic!("no probe result {other:?} in these tests"),
        }
    }

    fn status(state: &str, result: &str, streaming: bool, lag: Option<u64>) -> Status {
        let state = state_named(state);
        Status {
            name: "db0".into(),
            index: 0,
            role: state.role(),
            state,
            paused: false,
            timeline: Some(1),
            uptime: pgha_core::Timestamp::ZERO,
            local: Some(ProbeView::of(result_named(result), streaming)),
            lag_bytes: lag,
            peers: Vec::new(),
            last_transition: None,
            journal: PathBuf::new(),
            runtime: "threads".into(),
            report: pgha_core::PeerReport {
                index: 0,
                role: Role::None,
                standing: pgha_core::Standing::Busy,
                data: None,
                upstream: None,
                upstream_failures: 0,
            },
        }
    }

    fn server(s: Status, limits: Limits) -> (Api, SocketAddr, Arc<Mutex<Status>>) {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let st = Arc::new(Mutex::new(s));
        let submit: Submit = Arc::new(|_| false);
        let api = serve_with(l, None, st.clone(), submit, Auth::default(), limits).unwrap();
        (api, addr, st)
    }

    /// A main loop stand-in that accepts every operator request, counting them.
    fn accepting(count: Arc<AtomicUsize>) -> Submit {
        Arc::new(move |m| {
            if let Msg::Operator { request, reply } = m {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = reply.send(OperatorReply {
                    request: request.name().into(),
                    accepted: true,
                    transitions: Vec::new(),
                    role: "replica".into(),
                    state: "replica".into(),
                });
            }
            true
        })
    }

    /// A server on a free TCP port (and `local`, the local socket, if given) whose main loop
    /// accepts every operator request: the API, its TCP address and the count of requests.
    fn operator_server(
        s: Status,
        local: Option<(UnixListener, PathBuf)>,
        auth: Auth,
    ) -> (Api, SocketAddr, Arc<AtomicUsize>) {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let st = Arc::new(Mutex::new(s));
        let count = Arc::new(AtomicUsize::new(0));
        let api = serve_with(
            l,
            local,
            st,
            accepting(count.clone()),
            auth,
            Limits::default(),
        )
        .unwrap();
        (api, addr, count)
    }

    fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        crate::client::request(addr, method, path).unwrap()
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgha-api-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Everything the server sent until it closed (what arrived before a reset too).
    fn read_all(mut s: &TcpStream) -> String {
        let mut out = Vec::new();
        let mut chunk = [0u8; 1024];
        while let Ok(n) = s.read(&mut chunk) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Waits (bounded) until the server has `n` TCP connections open.
    fn wait_open(api: &Api, n: usize) {
        let give_up = Instant::now() + Duration::from_secs(20);
        while api.open_connections() != n {
            assert!(
                Instant::now() < give_up,
                "{} connections open, expected {n}",
                api.open_connections()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn the_health_endpoints_answer_by_role() {
        let (api, addr, st) = server(status("master", "master", false, None), Limits::default());
        for p in [
            "/primary",
            "/master",
            "/read-write",
            "/leader",
            "/read-only",
            "/health",
        ] {
            for m in ["GET", "OPTIONS"] {
                assert_eq!(get(addr, m, p).0, 200, "{m} {p} on a master");
            }
        }
        let (code, body) = get(addr, "HEAD", "/primary");
        assert_eq!((code, body.as_str()), (200, ""), "HEAD has no body");
        assert_eq!(get(addr, "GET", "/replica").0, 503);
        *st.lock().unwrap() = status("replica", "replica", true, Some(100));
        assert_eq!(get(addr, "GET", "/primary").0, 503);
        assert_eq!(get(addr, "GET", "/replica").0, 200);
        assert_eq!(get(addr, "GET", "/read-only").0, 200);
        assert_eq!(get(addr, "GET", "/replica?lag=100").0, 200);
        assert_eq!(get(addr, "GET", "/replica?lag=99").0, 503);
        assert_eq!(get(addr, "GET", "/replica?lag=1kB").0, 200);
        assert_eq!(get(addr, "GET", "/read-only?lag=10").0, 503);
        let (code, body) = get(addr, "GET", "/replica?lag=lots");
        assert_eq!(code, 400);
        assert!(body.contains("lots"), "{body}");
        // A replica that does not stream is not a healthy replica, but postgres runs.
        *st.lock().unwrap() = status("replica", "replica", false, None);
        assert_eq!(get(addr, "GET", "/replica").0, 503);
        assert_eq!(get(addr, "GET", "/health").0, 200);
        *st.lock().unwrap() = status("waiting_for_local", "refused", false, None);
        assert_eq!(get(addr, "GET", "/health").0, 503);
        assert_eq!(get(addr, "GET", "/liveness").0, 200);
        let (code, body) = get(addr, "GET", "/status");
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["state"], "waiting_for_local");
        assert_eq!(get(addr, "GET", "/nope").0, 404);
        assert_eq!(get(addr, "POST", "/primary").0, 405);
        assert_eq!(get(addr, "GET", "/promote").0, 405);
        api.stop();
    }

    #[test]
    fn operator_requests_over_tcp_need_the_bearer_token_and_nothing_reaches_the_core_without_it() {
        let auth = Auth {
            token: Some("s3cret-token".into()),
            socket: None,
        };
        let (api, addr, count) =
            operator_server(status("replica", "replica", true, Some(0)), None, auth);
        let tcp = Target::Tcp(addr);
        for path in [
            "/promote",
            "/recover",
            "/force-recover",
            "/pause",
            "/resume",
            "/step-down",
        ] {
            for token in [
                None,
                Some("wrong"),
                Some("s3cret-toke"),
                Some("s3cret-token2"),
            ] {
                let r = call(&tcp, "POST", path, token, Duration::from_secs(10)).unwrap();
                assert_eq!(r.code, 401, "{path} with {token:?}: {}", r.body);
                assert!(r.body.contains("token_file"), "{}", r.body);
            }
        }
        assert_eq!(
            count.load(Ordering::SeqCst),
            0,
            "a refused request reached the core"
        );
        let r = call(
            &tcp,
            "POST",
            "/pause",
            Some("s3cret-token"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.code, 200, "{}", r.body);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // Health reads stay open.
        assert_eq!(get(addr, "GET", "/replica").0, 200);
        api.stop();
    }

    #[test]
    fn force_recover_reaches_the_core_as_recover_force_with_the_token_only() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let submit: Submit = Arc::new(move |m| {
            if let Msg::Operator { request, reply } = m {
                s2.lock().unwrap().push(request);
                let _ = reply.send(OperatorReply {
                    request: request.name().into(),
                    accepted: true,
                    transitions: Vec::new(),
                    role: "none".into(),
                    state: "fenced".into(),
                });
            }
            true
        });
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let auth = Auth {
            token: Some("tok".into()),
            socket: None,
        };
        let st = Arc::new(Mutex::new(status("fenced", "refused", false, None)));
        let api = serve_with(l, None, st, submit, auth, Limits::default()).unwrap();
        let tcp = Target::Tcp(addr);
        let r = call(
            &tcp,
            "POST",
            "/force-recover",
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.code, 401, "{}", r.body);
        let r = call(
            &tcp,
            "GET",
            "/force-recover",
            Some("tok"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.code, 405, "{}", r.body);
        assert!(seen.lock().unwrap().is_empty());
        let r = call(
            &tcp,
            "POST",
            "/force-recover",
            Some("tok"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.code, 200, "{}", r.body);
        assert!(r.body.contains("recover --force"), "{}", r.body);
        let r = call(
            &tcp,
            "POST",
            "/recover",
            Some("tok"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.code, 200, "{}", r.body);
        assert_eq!(
            *seen.lock().unwrap(),
            [OperatorRequest::ForceRecover, OperatorRequest::Recover]
        );
        api.stop();
    }

    #[test]
    fn without_a_token_file_operator_requests_over_tcp_are_refused_saying_how_to_enable_them() {
        let auth = Auth {
            token: None,
            socket: Some("/run/pgha/db0.sock".into()),
        };
        let (api, addr, count) =
            operator_server(status("master", "master", false, None), None, auth);
        let r = call(
            &Target::Tcp(addr),
            "POST",
            "/promote",
            Some("x"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.code, 403);
        assert!(
            r.body.contains("token_file") && r.body.contains("/run/pgha/db0.sock"),
            "{}",
            r.body
        );
        assert_eq!(count.load(Ordering::SeqCst), 0);
        assert_eq!(get(addr, "GET", "/primary").0, 200);
        api.stop();
    }

    #[test]
    fn the_local_socket_takes_operator_requests_without_a_token_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir("local");
        let _cleanup = crate::testutil::RemoveOnDrop(dir.clone());
        let sock = dir.join("run").join("api.sock");
        let local = bind_local(&sock).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&sock), 0o600);
        assert_eq!(mode(sock.parent().unwrap()), 0o700);
        let (api, _, count) = operator_server(
            status("replica", "replica", true, Some(0)),
            Some((local, sock.clone())),
            Auth::default(),
        );
        let r = call(
            &Target::Unix(sock.clone()),
            "POST",
            "/pause",
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.code, 200, "{}", r.body);
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // A second daemon cannot take it over.
        let e = bind_local(&sock).unwrap_err().to_string();
        assert!(
            e.contains("api.socket") && e.contains("another daemon"),
            "{e}"
        );
        api.stop();
        assert!(!sock.exists(), "the socket is removed when the API stops");
        // A stale socket (its daemon gone) is replaced.
        drop(UnixListener::bind(&sock).unwrap());
        drop(bind_local(&sock).unwrap());
        // A directory others may enter is refused, naming the key and the directory.
        let open = dir.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = bind_local(&open.join("api.sock")).unwrap_err().to_string();
        assert!(e.contains("api.socket") && e.contains("mode 700"), "{e}");
    }

    #[test]
    fn the_local_socket_refuses_a_caller_of_another_uid() {
        use std::os::unix::fs::PermissionsExt;
        if !nix::unistd::geteuid().is_root() || !Path::new("/usr/bin/curl").is_file() {
            return; // needs another user to connect as, and curl to connect with
        }
        let dir = tempdir("peercred");
        let _cleanup = crate::testutil::RemoveOnDrop(dir.clone());
        let sock = dir.join("run").join("api.sock");
        let local = bind_local(&sock).unwrap();
        // Opened up for the test only, so the other user reaches the socket at all.
        for (p, m) in [
            (&dir, 0o755),
            (&sock.parent().unwrap().to_path_buf(), 0o755),
            (&sock, 0o666),
        ] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        let (api, _, count) = operator_server(
            status("replica", "replica", true, Some(0)),
            Some((local, sock.clone())),
            Auth::default(),
        );
        let out = std::process::Command::new("runuser")
            .args([
                "-u",
                "nobody",
                "--",
                "curl",
                "-s",
                "-m",
                "10",
                "-X",
                "POST",
                "--unix-socket",
            ])
            .arg(&sock)
            .arg("http://localhost/pause")
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(body.contains("may not use this socket"), "{body} {out:?}");
        assert_eq!(count.load(Ordering::SeqCst), 0);
        api.stop();
    }

    #[test]
    fn a_master_whose_connections_are_full_stays_primary_for_health_checks() {
        let (api, addr, st) = server(
            status("master", "overloaded", false, None),
            Limits::default(),
        );
        for p in ["/primary", "/read-write", "/read-only", "/health"] {
            assert_eq!(get(addr, "GET", p).0, 200, "{p} on a full master");
        }
        assert_eq!(get(addr, "GET", "/replica").0, 503);
        // Full in any other state is not a master.
        *st.lock().unwrap() = status("waiting_for_local", "overloaded", false, None);
        assert_eq!(get(addr, "GET", "/primary").0, 503);
        // A full replica's streaming cannot be seen: not a healthy replica, but it runs.
        *st.lock().unwrap() = status("replica", "overloaded", false, None);
        assert_eq!(get(addr, "GET", "/replica").0, 503);
        assert_eq!(get(addr, "GET", "/health").0, 200);
        api.stop();
    }

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(same_token(b"abc", b"abc"));
        for other in [&b""[..], b"ab", b"abd", b"abcd", b"ABC"] {
            assert!(!same_token(other, b"abc"), "{other:?}");
        }
    }

    #[test]
    fn lag_values_parse_like_patroni() {
        assert_eq!(parse_bytes("0"), Some(0));
        assert_eq!(parse_bytes("1048576"), Some(1 << 20));
        assert_eq!(parse_bytes("10MB"), Some(10 << 20));
        assert_eq!(parse_bytes("16kB"), Some(16 << 10));
        assert_eq!(parse_bytes("1GB"), Some(1 << 30));
        for bad in ["", "-1", "1.5MB", "10XB", "MB", "99999999999999999999TB"] {
            assert_eq!(parse_bytes(bad), None, "{bad:?}");
        }
    }

    fn short_limits() -> Limits {
        Limits {
            max_connections: 4,
            max_request: 1024,
            idle_timeout: Duration::from_millis(600),
            read_timeout: Duration::from_millis(600),
            write_timeout: Duration::from_millis(600),
            evict_after: Duration::from_millis(50),
            overload_wait: Duration::from_millis(200),
            operator_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_slowloris_client_is_cut_off_and_does_not_block_others() {
        let (api, addr, _) = server(status("master", "master", false, None), short_limits());
        // A client that trickles its request one byte at a time.
        let slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let trickle = std::thread::spawn({
            let mut w = slow.try_clone().unwrap();
            let stop = stop.clone();
            move || {
                for b in b"GET /primary HTTP/1.1\r\nHost: x\r\n"
                    .iter()
                    .cycle()
                    .take(10_000)
                {
                    if stop.load(Ordering::SeqCst) || w.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        // Others are answered meanwhile.
        assert_eq!(get(addr, "GET", "/primary").0, 200);
        // The slow one is cut off at the read timeout, with 408.
        let answer = read_all(&slow);
        stop.store(true, Ordering::SeqCst);
        assert!(answer.contains(" 408 "), "{answer:?}");
        let _ = trickle.join();
        // An oversized head is refused with 431.
        let mut big = TcpStream::connect(addr).unwrap();
        big.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = big.write_all(format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000)).as_bytes());
        let answer = read_all(&big);
        assert!(answer.contains(" 431 "), "{answer:?}");
        api.stop();
    }

    #[test]
    fn with_every_connection_held_idle_a_health_check_is_still_answered() {
        // Idle connections are held for the whole test: room comes from cutting them.
        let limits = Limits {
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            ..short_limits()
        };
        let (api, addr, _) = server(status("master", "master", false, None), limits);
        let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        wait_open(&api, 4);
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..3 {
            assert_eq!(get(addr, "GET", "/primary").0, 200);
        }
        drop(idle);
        api.stop();
    }

    #[test]
    fn with_thirty_two_idle_connections_two_hundred_concurrent_health_checks_all_get_real_answers()
    {
        let limits = Limits {
            idle_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let (api, addr, _) = server(status("master", "master", false, None), limits);
        let idle: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(addr).unwrap()).collect();
        wait_open(&api, 32);
        assert_eq!(get(addr, "GET", "/primary").0, 200);
        let go = Arc::new(std::sync::Barrier::new(200));
        let clients: Vec<_> = (0..200)
            .map(|_| {
                let go = go.clone();
                std::thread::spawn(move || {
                    go.wait();
                    crate::client::request(addr, "GET", "/primary")
                })
            })
            .collect();
        let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        let bad: Vec<_> = answers
            .iter()
            .filter(|a| !matches!(a, Ok((200, _))))
            .collect();
        assert!(
            bad.is_empty(),
            "{} of 200 not answered 200: {:?}",
            bad.len(),
            bad.first()
        );
        drop(idle);
        api.stop();
    }

    #[test]
    fn when_every_connection_is_busy_the_answer_says_overloaded_and_check_cannot_tell() {
        // Two operator requests the main loop never answers hold both connections.
        let held = Arc::new(Mutex::new(Vec::new()));
        let submit: Submit = {
            let held = held.clone();
            Arc::new(move |m| {
                if let Msg::Operator { reply, .. } = m {
                    held.lock().unwrap().push(reply);
                }
                true
            })
        };
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let st = Arc::new(Mutex::new(status("master", "master", false, None)));
        let limits = Limits {
            max_connections: 2,
            operator_timeout: Duration::from_secs(20),
            ..short_limits()
        };
        let auth = Auth {
            token: Some("t".into()),
            socket: None,
        };
        let api = serve_with(l, None, st, submit, auth, limits).unwrap();
        let busy: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    call(
                        &Target::Tcp(addr),
                        "POST",
                        "/pause",
                        Some("t"),
                        Duration::from_secs(30),
                    )
                })
            })
            .collect();
        let give_up = Instant::now() + Duration::from_secs(20);
        while held.lock().unwrap().len() < 2 {
            assert!(
                Instant::now() < give_up,
                "the operator requests did not arrive"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let r = call(
            &Target::Tcp(addr),
            "GET",
            "/primary",
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.code, 503);
        assert!(r.overloaded, "{r:?}");
        assert_eq!(crate::client::verdict(&r), crate::client::Verdict::Unknown);
        // `pgha check` exits 2 (could not tell), never 1 (not primary).
        let text = crate::config::tests::sample(&std::env::temp_dir())
            .replace("api = \"127.0.0.1:8008\"", &format!("api = \"{addr}\""));
        let (cfg, _) = crate::config::parse(Path::new("x.toml"), &text).unwrap();
        let code = crate::client::check(&cfg, "primary", &[]);
        assert_eq!(
            format!("{code:?}"),
            format!("{:?}", std::process::ExitCode::from(2))
        );
        held.lock().unwrap().clear();
        for b in busy {
            let _ = b.join();
        }
        api.stop();
    }
}
