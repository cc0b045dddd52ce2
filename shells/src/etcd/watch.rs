//! A bounded watch of the leader key through the gateway's `/v3/watch`: the core learns of a
//! released or expired key when etcd deletes it, not at its next read (`LeaseEvent::Watched`).
//!
//! The gateway streams one JSON object per line (the first with `"created": true`, then one per
//! batch of events) and never ends the request itself. Every request here is bounded: it is
//! sent as HTTP/1.0 (the reply is then close-delimited, not chunked), read for at most a window
//! (`loop_wait`) and at most [`MAX_MESSAGE`] bytes per line, then closed; the next one starts
//! from the revision after the last event seen. A compacted start revision, an error, a stale
//! raft term or garbage ends the request; the watcher then reads the key through the
//! [`Gateway`] (endpoints in turn, within `retry_timeout`), reports that view, and watches on
//! from after it. A lost event is never silent: each re-watch starts at the next revision, or
//! after a read of the key.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use pgha_core::lease::LeaderKey;
use serde_json::{Value, json};

use super::effector::leader_key_view;
use super::{EtcdError, Gateway, Header, KeyValue, int, kvs, uint};

/// The most bytes of one watch message: a leader key event is a few hundred bytes.
pub const MAX_MESSAGE: usize = 64 << 10;

/// How one watch request ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The window passed (or the server closed the stream): watch on from this revision.
    From(u64),
    /// The start revision was compacted: read the key, then watch from after it.
    Compacted,
}

/// One bounded watch request on `endpoint`: the key's changes from `start` on, each handed to
/// `seen` in order, for at most `window`. Replies on a raft term older than `term` are not
/// believed.
pub fn watch_once(
    endpoint: SocketAddr,
    key: &[u8],
    start: u64,
    window: Duration,
    term: u64,
    mut seen: impl FnMut(LeaderKey, u64),
) -> Result<WatchEnd, EtcdError> {
    let until = Instant::now() + window;
    let unreachable = |why: String| EtcdError::Unreachable { endpoint, why };
    let bad = |what: String| EtcdError::BadReply { endpoint, what };
    let body = json!({ "create_request": {
        "key": B64.encode(key), "start_revision": start.to_string() } })
    .to_string();
    let mut s = TcpStream::connect_timeout(&endpoint, window.min(Duration::from_secs(3)))
        .map_err(|e| unreachable(format!("cannot connect: {e}")))?;
    s.set_write_timeout(Some(window))
        .and_then(|()| {
            write!(
                s,
                "POST /v3/watch HTTP/1.0\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
        })
        .map_err(|e| unreachable(format!("sending the watch: {e}")))?;
    let mut buf = Vec::new();
    let mut head_done = false;
    let mut created = false;
    let mut next = start;
    let mut chunk = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(WatchEnd::From(next));
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| unreachable(e.to_string()))?;
        let (n, closed) = match s.read(&mut chunk) {
            Ok(n) => (n, n == 0),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !created {
                    return Err(unreachable(format!(
                        "the watch was not created within {:.1} s",
                        window.as_secs_f64()
                    )));
                }
                return Ok(WatchEnd::From(next));
            }
            Err(e) => return Err(unreachable(format!("reading the watch: {e}"))),
        };
        buf.extend_from_slice(&chunk[..n]);
        if closed && !buf.is_empty() {
            // The last message, if the stream ended without its newline.
            buf.push(b'\n');
        }
        if !head_done {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                if closed {
                    return Err(unreachable("closed without a reply".into()));
                }
                if buf.len() > MAX_MESSAGE {
                    return Err(bad("an HTTP head larger than the bound".into()));
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.split(' ').nth(1).unwrap_or("");
            if status != "200" {
                return Err(bad(format!(
                    "the watch answered {:?}",
                    head.lines().next().unwrap_or("")
                )));
            }
            buf.drain(..end + 4);
            head_done = true;
        }
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line.trim())
                .map_err(|e| bad(format!("a watch message is not JSON ({e})")))?;
            let Some(r) = v.get("result") else {
                return Err(bad(format!("a watch message without result: {v}")));
            };
            let h = r.get("header").ok_or_else(|| bad("no header".into()))?;
            let message_term = h.get("raft_term").and_then(uint).unwrap_or(0);
            if message_term < term {
                return Err(EtcdError::StaleTerm {
                    endpoint,
                    term: message_term,
                    seen: term,
                });
            }
            if r.get("compact_revision").and_then(int).unwrap_or(0) > 0 {
                return Ok(WatchEnd::Compacted);
            }
            if r.get("canceled").and_then(Value::as_bool) == Some(true) {
                return Err(bad(format!("the watch was canceled: {r}")));
            }
            if r.get("created").and_then(Value::as_bool) == Some(true) {
                created = true;
            }
            if !created {
                return Err(bad("the first watch message is not 'created'".into()));
            }
            for ev in r
                .get("events")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let kv = ev
                    .get("kv")
                    .ok_or_else(|| bad("an event without kv".into()))?;
                let kv: KeyValue = kvs(&json!({ "kvs": [kv] }))
                    .map_err(&bad)?
                    .pop()
                    .unwrap_or_default();
                let revision = u64::try_from(kv.mod_revision).unwrap_or(0);
                let view = if ev.get("type").and_then(Value::as_str) == Some("DELETE") {
                    LeaderKey::Absent { revision }
                } else {
                    leader_key_view(&Header::default(), Some(&kv))
                };
                next = next.max(revision + 1);
                seen(view, message_term);
            }
        }
        if closed && created {
            return Ok(WatchEnd::From(next));
        }
        if closed {
            return Err(unreachable("closed before the watch was created".into()));
        }
        if buf.len() > MAX_MESSAGE {
            return Err(bad(format!(
                "a watch message longer than {MAX_MESSAGE} bytes"
            )));
        }
    }
}

/// Watches the key on a thread of its own until `stop` is set (noticed within one window):
/// reads the key, hands the view to `seen`, watches from after it in windows of `window`;
/// after an error, pauses `window`, reads again. `seen` gets each view and the raft term it
/// came with; `term` is the highest raft term the owner has seen (replies on an older one are
/// not believed), read before each request.
pub fn spawn_watcher(
    mut gateway: Gateway,
    key: Vec<u8>,
    window: Duration,
    stop: Arc<AtomicBool>,
    term: Arc<AtomicU64>,
    mut seen: impl FnMut(LeaderKey, u64) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut next = None;
        while !stop.load(Ordering::SeqCst) {
            gateway.saw_term(term.load(Ordering::SeqCst));
            let start = match next {
                Some(start) => start,
                None => match gateway.get(&key) {
                    Ok((h, kv)) => {
                        seen(leader_key_view(&h, kv.as_ref()), h.raft_term);
                        u64::try_from(h.revision).unwrap_or(0) + 1
                    }
                    Err(e) => {
                        log::debug!("etcd watch: reading the leader key: {e}");
                        std::thread::sleep(window);
                        continue;
                    }
                },
            };
            let term = gateway.term();
            let seen = &mut seen;
            let outcome = watch_once(gateway.endpoint(), &key, start, window, term, |k, t| {
                seen(k, t)
            });
            match outcome {
                Ok(WatchEnd::From(from)) => next = Some(from),
                Ok(WatchEnd::Compacted) => next = None,
                Err(e) => {
                    log::debug!("etcd watch: {e}");
                    next = None;
                    std::thread::sleep(window);
                }
            }
        }
    })
}
