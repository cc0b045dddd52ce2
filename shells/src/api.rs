//! The daemon's HTTP API on `[node] api`, served with `tiny_http`: `GET /status`, the
//! operator requests `POST /recover`, `/promote`, `/pause`, `/resume` (each enters the core as
//! `Event::Operator` and the reply says what the daemon did), and the health checks
//! `GET /primary` and `GET /replica` (200 or 503).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use pgha_core::OperatorRequest;
use tiny_http::{Header, Method, Response, Server};

use crate::daemon::Status;
use crate::runtime::Msg;

/// Sends a message to the running main loop; false when it is gone.
pub type Submit = Arc<dyn Fn(Msg) -> bool + Send + Sync>;

/// A healthy master: the core says master and the local postgres answered as master.
pub fn is_healthy_master(s: &Status) -> bool {
    s.state == "master" && s.local.as_ref().is_some_and(|l| l.result == "master")
}

/// A healthy streaming replica: the core says replica, postgres answered as a replica whose
/// WAL receiver streams.
pub fn is_healthy_replica(s: &Status) -> bool {
    s.state == "replica"
        && s.local
            .as_ref()
            .is_some_and(|l| l.result == "replica" && l.streaming)
}

/// A running API server; stop it with [`Api::stop`].
#[derive(Debug)]
pub struct Api {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Api {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn json_header() -> Header {
    Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]).expect("static header")
}

fn json(code: u16, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(code)
        .with_header(json_header())
}

/// Binds `addr` (an error names it), before anything else starts.
pub fn bind(addr: SocketAddr) -> Result<Server, String> {
    Server::http(addr).map_err(|e| format!("cannot listen on node.api = {addr}: {e}"))
}

/// Serves on a thread of its own.
pub fn serve(server: Server, status: Arc<Mutex<Status>>, submit: Submit) -> Result<Api, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("pgha-api".into())
        .spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let req = match server.recv_timeout(Duration::from_millis(200)) {
                    Ok(Some(r)) => r,
                    Ok(None) => continue,
                    Err(e) => {
                        log::warn!("api: {e}");
                        continue;
                    }
                };
                let path = req.url().split('?').next().unwrap_or("").to_string();
                let method = req.method().clone();
                let response = handle(&method, &path, &status, &submit);
                if let Err(e) = req.respond(response) {
                    log::debug!("api: reply to {method} {path}: {e}");
                }
            }
        })
        .map_err(|e| format!("cannot start the API thread: {e}"))?;
    Ok(Api {
        stop,
        thread: Some(thread),
    })
}

fn handle(
    method: &Method,
    path: &str,
    status: &Arc<Mutex<Status>>,
    submit: &Submit,
) -> Response<std::io::Cursor<Vec<u8>>> {
    let snapshot = || status.lock().map(|s| s.clone()).ok();
    let request = match path {
        "/recover" => Some(OperatorRequest::Recover),
        "/promote" => Some(OperatorRequest::Promote),
        "/pause" => Some(OperatorRequest::Pause),
        "/resume" => Some(OperatorRequest::Resume),
        _ => None,
    };
    if let Some(request) = request {
        if *method != Method::Post {
            return json(405, r#"{"error":"use POST"}"#.into());
        }
        let (tx, rx) = mpsc::channel();
        if !submit(Msg::Operator { request, reply: tx }) {
            return json(503, r#"{"error":"the daemon is stopping"}"#.into());
        }
        return match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(reply) => {
                let code = if reply.accepted { 200 } else { 409 };
                json(
                    code,
                    serde_json::to_string_pretty(&reply).unwrap_or_default(),
                )
            }
            Err(_) => json(
                503,
                r#"{"error":"no reply from the daemon within 10 s"}"#.into(),
            ),
        };
    }
    if *method != Method::Get && *method != Method::Head {
        return json(405, r#"{"error":"use GET"}"#.into());
    }
    let Some(s) = snapshot() else {
        return json(500, r#"{"error":"status unavailable"}"#.into());
    };
    match path {
        "/status" => json(200, serde_json::to_string_pretty(&s).unwrap_or_default()),
        "/primary" | "/master" | "/read-write" => {
            let ok = is_healthy_master(&s);
            json(
                if ok { 200 } else { 503 },
                serde_json::to_string(&s).unwrap_or_default(),
            )
        }
        "/replica" => {
            let ok = is_healthy_replica(&s);
            json(
                if ok { 200 } else { 503 },
                serde_json::to_string(&s).unwrap_or_default(),
            )
        }
        _ => json(404, format!("{{\"error\":\"no such endpoint: {path}\"}}")),
    }
}
