//! The daemon's HTTP API on `[node] api`: Patroni-compatible health checks (`/primary`,
//! `/replica?lag=`, `/read-only`, `/health`, ...), `GET /status`, and the operator requests
//! `POST /recover`, `/promote`, `/pause`, `/resume` (each enters the core as
//! `Event::Operator` and the reply says what the daemon did).
//!
//! A small accept loop with hard bounds, so a slow or hostile client cannot stall the daemon:
//! at most [`Limits::max_connections`] connections at once (one more is answered 503 and
//! closed at once), a request head of at most [`Limits::max_request`] bytes (431), the whole
//! head within [`Limits::read_timeout`] however slowly it trickles in (408), and every write
//! bounded by [`Limits::write_timeout`]. One request per connection (`Connection: close`).
//! Requests are parsed with `httparse` (no hand-written HTTP parsing).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pgha_core::OperatorRequest;

use crate::daemon::Status;
use crate::runtime::Msg;

/// Sends a message to the running main loop; false when it is gone.
pub type Submit = Arc<dyn Fn(Msg) -> bool + Send + Sync>;

/// The local probe's result name for a postgres that is alive but overloaded (too many
/// connections): it cannot say its role, and it is not down.
fn overloaded(result: &str) -> bool {
    result == pgha_core::ProbeResult::Overloaded.name()
}

/// A healthy master: the core says master and the local postgres answered as master, or
/// answered "too many connections" (alive and still the master the core says it is: a full
/// master marked down would have every session cut by HAProxy's `on-marked-down`).
pub fn is_healthy_master(s: &Status) -> bool {
    s.state == "master"
        && s.local
            .as_ref()
            .is_some_and(|l| l.result == "master" || overloaded(&l.result))
}

/// A healthy streaming replica: the core says replica, postgres answered as a replica whose
/// WAL receiver streams.
pub fn is_healthy_replica(s: &Status) -> bool {
    s.state == "replica"
        && s.local
            .as_ref()
            .is_some_and(|l| l.result == "replica" && l.streaming)
}

/// Postgres runs and answers (as master or replica, or "too many connections").
pub fn is_running(s: &Status) -> bool {
    s.local
        .as_ref()
        .is_some_and(|l| l.result == "master" || l.result == "replica" || overloaded(&l.result))
}

/// The bounds of the API server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_request: usize,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 32,
            max_request: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// A running API server; stop it with [`Api::stop`].
#[derive(Debug)]
pub struct Api {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl Api {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `addr` (an error names it), before anything else starts.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("cannot listen on node.api = {addr}: {e}"))
}

/// One reply: status code, body (JSON) and whether it is sent for a HEAD request.
#[derive(Debug)]
struct Reply {
    code: u16,
    body: String,
}

fn reply(code: u16, body: impl Into<String>) -> Reply {
    Reply {
        code,
        body: body.into(),
    }
}

fn error(code: u16, msg: &str) -> Reply {
    reply(code, serde_json::json!({ "error": msg }).to_string())
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
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

/// Counts a connection while it is served.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves on a thread of its own, with the default [`Limits`].
pub fn serve(
    listener: TcpListener,
    status: Arc<Mutex<Status>>,
    submit: Submit,
) -> Result<Api, String> {
    serve_with(listener, status, submit, Limits::default())
}

/// Serves with explicit limits (tests use short ones).
pub fn serve_with(
    listener: TcpListener,
    status: Arc<Mutex<Status>>,
    submit: Submit,
    limits: Limits,
) -> Result<Api, String> {
    let addr = listener
        .local_addr()
        .map_err(|e| format!("node.api: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let active = Arc::new(AtomicUsize::new(0));
    let thread = std::thread::Builder::new()
        .name("pgha-api".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
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
                let _ = stream.set_write_timeout(Some(limits.write_timeout));
                if active.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
                    let _slot = Slot(active.clone());
                    log::debug!(
                        "api: {} connections open: refusing one",
                        limits.max_connections
                    );
                    let _ = stream.set_nonblocking(true);
                    write_reply(&stream, &error(503, "too many connections"), false);
                    continue;
                }
                let slot = Slot(active.clone());
                let status = status.clone();
                let submit = submit.clone();
                let spawned = std::thread::Builder::new()
                    .name("pgha-api-conn".into())
                    .spawn(move || {
                        let _slot = slot;
                        serve_connection(stream, &status, &submit, limits);
                    });
                if let Err(e) = spawned {
                    log::warn!("api: cannot start a connection thread: {e}");
                }
            }
        })
        .map_err(|e| format!("cannot start the API thread: {e}"))?;
    Ok(Api {
        stop,
        addr,
        thread: Some(thread),
    })
}

fn write_reply(mut stream: &TcpStream, r: &Reply, head_only: bool) {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.code,
        reason(r.code),
        r.body.len()
    );
    let mut bytes = head.into_bytes();
    if !head_only {
        bytes.extend_from_slice(r.body.as_bytes());
    }
    if let Err(e) = stream.write_all(&bytes).and_then(|_| stream.flush()) {
        log::debug!("api: writing a reply: {e}");
    }
    // Close our side, then drain briefly what the client still sends (bounded), so the
    // reply is not lost to a reset caused by unread request bytes.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let until = Instant::now() + Duration::from_millis(100);
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 64 * 1024 {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Reads one request head within the limits, answers it and closes the connection.
fn serve_connection(
    mut stream: TcpStream,
    status: &Arc<Mutex<Status>>,
    submit: &Submit,
    limits: Limits,
) {
    let deadline = Instant::now() + limits.read_timeout;
    let mut buf = vec![0u8; limits.max_request];
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            write_reply(&stream, &error(408, "request not received in time"), false);
            return;
        }
        let _ = stream.set_read_timeout(Some(left));
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
        match stream.read(&mut buf[len..]) {
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
                let method = req.method.unwrap_or("").to_string();
                let target = req.path.unwrap_or("").to_string();
                let r = handle(&method, &target, status, submit);
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
fn handle(method: &str, target: &str, status: &Arc<Mutex<Status>>, submit: &Submit) -> Reply {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = match path {
        "/recover" => Some(OperatorRequest::Recover),
        "/promote" => Some(OperatorRequest::Promote),
        "/pause" => Some(OperatorRequest::Pause),
        "/resume" => Some(OperatorRequest::Resume),
        _ => None,
    };
    if let Some(request) = request {
        if method != "POST" {
            return error(405, "use POST");
        }
        return operator(request, submit);
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
    let Ok(s) = status.lock().map(|s| s.clone()) else {
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

fn operator(request: OperatorRequest, submit: &Submit) -> Reply {
    let (tx, rx) = mpsc::channel();
    if !submit(Msg::Operator { request, reply: tx }) {
        return error(503, "the daemon is stopping");
    }
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => reply(
            if r.accepted { 200 } else { 409 },
            serde_json::to_string_pretty(&r).unwrap_or_default(),
        ),
        Err(_) => error(503, "no reply from the daemon within 10 s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::ProbeView;

    fn status(state: &str, result: &str, streaming: bool, lag: Option<u64>) -> Status {
        Status {
            name: "db0".into(),
            role: "x".into(),
            state: state.into(),
            paused: false,
            timeline: Some(1),
            uptime_ms: 0,
            local: Some(ProbeView {
                result: result.into(),
                streaming,
                ..ProbeView::default()
            }),
            lag_bytes: lag,
            peers: Vec::new(),
            last_transition: None,
            journal: String::new(),
            runtime: "threads".into(),
        }
    }

    fn server(s: Status, limits: Limits) -> (Api, SocketAddr, Arc<Mutex<Status>>) {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let st = Arc::new(Mutex::new(s));
        let submit: Submit = Arc::new(|_| false);
        (serve_with(l, st.clone(), submit, limits).unwrap(), addr, st)
    }

    fn get(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        crate::client::request(addr, method, path).unwrap()
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
        assert_eq!(get(addr, "POST", "/promote").0, 503, "no daemon behind it");
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

    #[test]
    fn a_slowloris_client_is_cut_off_and_does_not_block_others() {
        let limits = Limits {
            max_connections: 4,
            max_request: 1024,
            read_timeout: Duration::from_millis(600),
            write_timeout: Duration::from_millis(600),
        };
        let (api, addr, _) = server(status("master", "master", false, None), limits);
        // A client that trickles its request one byte at a time.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t0 = Instant::now();
        let trickle = std::thread::spawn({
            let mut w = slow.try_clone().unwrap();
            move || {
                for b in b"GET /primary HTTP/1.1\r\nHost: x\r\n" {
                    if w.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        // Others are answered meanwhile.
        let t1 = Instant::now();
        assert_eq!(get(addr, "GET", "/primary").0, 200);
        assert!(
            t1.elapsed() < Duration::from_millis(300),
            "{:?}",
            t1.elapsed()
        );
        // The slow one is cut off at the read timeout, with 408.
        let mut answer = String::new();
        let _ = slow.read_to_string(&mut answer);
        let took = t0.elapsed();
        assert!(answer.contains(" 408 "), "{answer:?}");
        assert!(took < Duration::from_millis(1500), "cut off after {took:?}");
        let _ = trickle.join();
        // Connections over the bound are refused at once with 503.
        let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(100));
        let t2 = Instant::now();
        assert_eq!(get(addr, "GET", "/primary").0, 503);
        assert!(t2.elapsed() < Duration::from_millis(300));
        drop(idle);
        // Once they time out, the server answers again.
        std::thread::sleep(Duration::from_millis(900));
        assert_eq!(get(addr, "GET", "/primary").0, 200);
        // An oversized head is refused with 431.
        let mut big = TcpStream::connect(addr).unwrap();
        let _ = big.write_all(format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000)).as_bytes());
        let mut answer = String::new();
        let _ = big.read_to_string(&mut answer);
        assert!(answer.contains(" 431 "), "{answer:?}");
        api.stop();
    }
}
