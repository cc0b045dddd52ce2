//! etcd's v3 API through its JSON gateway (issue 13, the etcd-lease mode): the shell's hands
//! for the leader lease. It talks; it decides nothing (the core will).
//!
//! Why the gateway: the `etcd-client` crate brings tonic, prost, tokio and `protoc` into the
//! build; the gateway is HTTP/1 + JSON on the same port, which pgha already speaks
//! (`httparse`, `serde_json`). What the gateway really answers (etcd 3.4.23, checked; see
//! docs/etcd.md) and how this module handles it:
//!
//! - keys and values are base64 both ways, 64-bit numbers are JSON strings (either is read);
//! - a txn whose compare failed comes back without `succeeded`: absent means false;
//! - a keepalive of an unknown or expired lease answers 200 without `TTL`: the lease is gone;
//! - a put on a revoked lease answers 404 with gRPC code 5: [`EtcdError::Refused`];
//! - every reply header carries `raft_term`: a reply from a term older than one already seen
//!   comes from a member cut off from the quorum and is not believed ([`EtcdError::StaleTerm`]);
//! - several endpoints are tried in turn within `retry_timeout`; the one that answered is
//!   tried first next time.
//!
//! Every call is bounded in time (what is left of `retry_timeout`, and a connect bound per
//! endpoint) and in bytes ([`MAX_REPLY`]).

// The etcd-lease mode (issue 13) is being built on this client; until the daemon drives it
// only the tests call it (the effector, the watch and the runner included).
#![allow(dead_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::client::{Broken, CallError, Target, exchange};

pub mod effector;
pub mod runner;
pub mod watch;

/// The largest reply read from etcd: a range of the cluster's keys (a member record is a few
/// hundred bytes, a cluster has at most a few dozen keys) fits many times over.
pub const MAX_REPLY: usize = 4 << 20;

/// The header of every etcd reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: u64,
    pub revision: i64,
    pub raft_term: u64,
}

/// A key and its value, with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    /// The lease the key is bound to; 0 for none.
    pub lease: i64,
}

/// A txn's condition on one key (all compare for equality, as the leader key needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's create revision: 0 means the key does not exist.
    CreateRevision(Vec<u8>, i64),
    /// The key's last modification revision: compare-and-swap of shared keys, and the leader
    /// key's confirm and delete act only on the version seen.
    ModRevision(Vec<u8>, i64),
    /// The key's value: the leader key's renew, confirm and delete need "value == me".
    Value(Vec<u8>, Vec<u8>),
    /// The lease the key is bound to (0: none, or no key): the holder renews only a key bound
    /// to its own lease.
    Lease(Vec<u8>, i64),
}

/// A txn's operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put a value, bound to a lease (`None`: no lease).
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: Option<i64>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Read a key (in a failure branch: who holds it now).
    Get {
        key: Vec<u8>,
    },
}

/// A txn's outcome: whether the compares held, and the keys its `Get`s read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnReply {
    pub header: Header,
    pub succeeded: bool,
    pub read: Vec<KeyValue>,
}

/// A lease keepalive's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Renewed, with the TTL the server granted.
    Alive { ttl_s: i64 },
    /// The lease does not exist any more (expired or revoked): keys bound to it are gone.
    Gone,
}

/// Why a call to etcd gave no answer to act on. Each names the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdError {
    /// Could not connect, or no complete reply in time.
    Unreachable { endpoint: SocketAddr, why: String },
    /// etcd answered with an HTTP error: a definite "no" (a put on a revoked lease, a bad
    /// request), with etcd's gRPC code when it gave one.
    Refused {
        endpoint: SocketAddr,
        status: u16,
        grpc_code: Option<i64>,
        message: String,
    },
    /// The reply came from a member on an older raft term than one already seen: a member
    /// cut off from the quorum; not believed.
    StaleTerm {
        endpoint: SocketAddr,
        term: u64,
        seen: u64,
    },
    /// Something that is not the gateway's JSON: a wrong port, a proxy, garbage.
    BadReply { endpoint: SocketAddr, what: String },
    /// No endpoint answered believably within `retry_timeout`; the last error of each tried.
    AllFailed { tried: Vec<EtcdError> },
}

impl EtcdError {
    /// etcd's "not found" for a lease: the lease expired or was revoked.
    pub fn is_lease_gone(&self) -> bool {
        matches!(
            self,
            EtcdError::Refused {
                grpc_code: Some(5),
                ..
            }
        )
    }

    /// Whether the next endpoint may do better (unreachable, stale, garbage, a server error),
    /// as opposed to a definite answer.
    fn try_next(&self) -> bool {
        match self {
            EtcdError::Refused { status, .. } => *status >= 500,
            _ => true,
        }
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unreachable { endpoint, why } => write!(f, "etcd {endpoint}: {why}"),
            EtcdError::Refused {
                endpoint,
                status,
                grpc_code,
                message,
            } => {
                write!(f, "etcd {endpoint} refused: HTTP {status}")?;
                if let Some(c) = grpc_code {
                    write!(f, ", code {c}")?;
                }
                write!(f, ": {message}")
            }
            EtcdError::StaleTerm {
                endpoint,
                term,
                seen,
            } => write!(
                f,
                "etcd {endpoint} answered from raft term {term}, older than term {seen} already \
                 seen: a member cut off from the quorum; not believed"
            ),
            EtcdError::BadReply { endpoint, what } => {
                write!(f, "etcd {endpoint}: not an etcd v3 gateway reply: {what}")
            }
            EtcdError::AllFailed { tried } => {
                write!(f, "no etcd endpoint answered")?;
                for (i, e) in tried.iter().enumerate() {
                    write!(f, "{}{e}", if i == 0 { ": " } else { "; " })?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for EtcdError {}

/// Parses one `[etcd] endpoints` entry: `host:port` or `http://host:port`.
pub fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let bare = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    if s.starts_with("https://") {
        return Err(format!(
            "etcd endpoint {s:?}: https is not supported yet; use http://host:port"
        ));
    }
    if bare.is_empty() || bare.contains('/') {
        return Err(format!(
            "etcd endpoint {s:?}: expected host:port or http://host:port"
        ));
    }
    bare.to_socket_addrs()
        .map_err(|e| format!("etcd endpoint {s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("etcd endpoint {s:?}: resolves to no address"))
}

/// A client of one etcd cluster through its JSON gateway. A clone carries on from the same
/// endpoint and raft term (one per request in flight); [`Gateway::saw_term`] merges back.
#[derive(Debug, Clone)]
pub struct Gateway {
    endpoints: Vec<SocketAddr>,
    retry_timeout: Duration,
    /// The highest raft term seen in a reply.
    term: u64,
    /// The endpoint tried first: the one that answered last.
    current: usize,
}

impl Gateway {
    /// A client of `endpoints`, each call bounded by `retry_timeout` over all of them.
    pub fn new(endpoints: Vec<SocketAddr>, retry_timeout: Duration) -> Gateway {
        assert!(!endpoints.is_empty(), "the config requires an endpoint");
        Gateway {
            endpoints,
            retry_timeout,
            term: 0,
            current: 0,
        }
    }

    /// The highest raft term seen.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The endpoint that answered last (tried first next time).
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoints[self.current]
    }

    /// A raft term seen by a clone: replies from older terms are not believed from now on.
    pub fn saw_term(&mut self, term: u64) {
        self.term = self.term.max(term);
    }

    /// One gateway call: each endpoint in turn, from the last that answered, until one gives
    /// a believable answer, a definite refusal, or `retry_timeout` is spent.
    fn call(&mut self, path: &str, body: &Value) -> Result<(Header, Value), EtcdError> {
        let deadline = Instant::now() + self.retry_timeout;
        let body = body.to_string();
        let mut tried = Vec::new();
        let n = self.endpoints.len();
        let mut i = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(EtcdError::AllFailed {
                    tried: tried.into_iter().map(|(_, e)| e).collect(),
                });
            }
            let at = (self.current + i) % n;
            match self.call_one(self.endpoints[at], path, &body, left) {
                Ok(answer) => {
                    self.current = at;
                    return Ok(answer);
                }
                Err(e) if !e.try_next() => {
                    self.current = at;
                    return Err(e);
                }
                Err(e) => {
                    // What each endpoint said last, an answer preferred over silence: the
                    // list stays bounded by the number of endpoints.
                    match tried.iter_mut().find(|(j, _)| *j == at) {
                        Some((_, old)) => {
                            if !matches!(e, EtcdError::Unreachable { .. })
                                || matches!(old, EtcdError::Unreachable { .. })
                            {
                                *old = e;
                            }
                        }
                        None => tried.push((at, e)),
                    }
                    i += 1;
                    if i % n == 0 {
                        // Every endpoint failed this round: pause before the next, within
                        // the bound, rather than spin on refused connections.
                        let left = deadline.saturating_duration_since(Instant::now());
                        std::thread::sleep(Duration::from_millis(100).min(left));
                    }
                }
            }
        }
    }

    fn call_one(
        &mut self,
        endpoint: SocketAddr,
        path: &str,
        body: &str,
        limit: Duration,
    ) -> Result<(Header, Value), EtcdError> {
        let target = Target::Tcp(endpoint);
        let reply = exchange(
            &target,
            "POST",
            path,
            None,
            body.as_bytes(),
            limit,
            MAX_REPLY,
        )
        .map_err(|e| call_error(endpoint, e))?;
        let (status, text) = (reply.code, reply.body);
        let bad = |what: String| EtcdError::BadReply { endpoint, what };
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("HTTP {status}, body is not JSON ({e})")))?;
        if status != 200 {
            let message = v
                .get("message")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            return Err(EtcdError::Refused {
                endpoint,
                status,
                grpc_code: v.get("code").and_then(int),
                message,
            });
        }
        // A keepalive's header sits inside the stream message the gateway wraps in "result".
        let h = v
            .get("header")
            .or_else(|| v.get("result").and_then(|r| r.get("header")))
            .ok_or_else(|| bad("no header".into()))?;
        let header = Header {
            cluster_id: h.get("cluster_id").and_then(uint).unwrap_or(0),
            member_id: h.get("member_id").and_then(uint).unwrap_or(0),
            revision: h.get("revision").and_then(int).unwrap_or(0),
            raft_term: h
                .get("raft_term")
                .and_then(uint)
                .ok_or_else(|| bad("no raft_term in the header".into()))?,
        };
        if header.raft_term < self.term {
            return Err(EtcdError::StaleTerm {
                endpoint,
                term: header.raft_term,
                seen: self.term,
            });
        }
        self.term = header.raft_term;
        Ok((header, v))
    }

    /// The value of one key, if it exists.
    pub fn get(&mut self, key: &[u8]) -> Result<(Header, Option<KeyValue>), EtcdError> {
        let (h, v) = self.call("/v3/kv/range", &json!({ "key": B64.encode(key) }))?;
        let mut kvs = kvs(&v).map_err(|what| self.bad(what))?;
        Ok((h, kvs.pop()))
    }

    /// Every key under `prefix`, in key order.
    pub fn get_prefix(&mut self, prefix: &[u8]) -> Result<(Header, Vec<KeyValue>), EtcdError> {
        let body =
            json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)) });
        let (h, v) = self.call("/v3/kv/range", &body)?;
        let kvs = kvs(&v).map_err(|what| self.bad(what))?;
        Ok((h, kvs))
    }

    /// Puts a value, bound to `lease` if given. A revoked lease: [`EtcdError::is_lease_gone`].
    pub fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<Header, EtcdError> {
        let (h, _) = self.call("/v3/kv/put", &put_body(key, value, lease))?;
        Ok(h)
    }

    /// Deletes one key; returns how many were deleted (0 or 1).
    pub fn delete(&mut self, key: &[u8]) -> Result<(Header, i64), EtcdError> {
        let (h, v) = self.call("/v3/kv/deleterange", &json!({ "key": B64.encode(key) }))?;
        Ok((h, v.get("deleted").and_then(int).unwrap_or(0)))
    }

    /// A transaction: if every compare holds, `success`, else `failure`.
    pub fn txn(
        &mut self,
        compare: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnReply, EtcdError> {
        let body = json!({
            "compare": compare.iter().map(compare_json).collect::<Vec<_>>(),
            "success": success.iter().map(op_json).collect::<Vec<_>>(),
            "failure": failure.iter().map(op_json).collect::<Vec<_>>(),
        });
        let (header, v) = self.call("/v3/kv/txn", &body)?;
        // A failed compare comes back without `succeeded`.
        let succeeded = v.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
        let mut read = Vec::new();
        if let Some(rs) = v.get("responses").and_then(Value::as_array) {
            for r in rs {
                if let Some(range) = r.get("response_range") {
                    read.extend(kvs(range).map_err(|what| self.bad(what))?);
                }
            }
        }
        Ok(TxnReply {
            header,
            succeeded,
            read,
        })
    }

    /// A new lease; returns its ID and the TTL the server granted (it may round up: etcd's
    /// minimum TTL is about 2 s with default election timeouts).
    pub fn lease_grant(&mut self, ttl_s: i64) -> Result<(Header, i64, i64), EtcdError> {
        let (h, v) = self.call("/v3/lease/grant", &json!({ "TTL": ttl_s.to_string() }))?;
        let id = v
            .get("ID")
            .and_then(int)
            .ok_or_else(|| self.bad("lease grant without ID".into()))?;
        let ttl = v
            .get("TTL")
            .and_then(int)
            .ok_or_else(|| self.bad("lease grant without TTL".into()))?;
        Ok((h, id, ttl))
    }

    /// Renews a lease. Time the holder's own deadline from when this call was *sent*.
    pub fn lease_keepalive(&mut self, id: i64) -> Result<(Header, KeepAlive), EtcdError> {
        let (h, v) = self.call("/v3/lease/keepalive", &json!({ "ID": id.to_string() }))?;
        // The gateway wraps the stream's one message in "result"; a lease it does not know
        // comes back without TTL.
        let r = v.get("result").unwrap_or(&v);
        let outcome = match r.get("TTL").and_then(int) {
            Some(ttl) if ttl > 0 => KeepAlive::Alive { ttl_s: ttl },
            _ => KeepAlive::Gone,
        };
        Ok((h, outcome))
    }

    /// Revokes a lease (a clean stop releases the leader key at once). A lease already gone
    /// is not an error.
    pub fn lease_revoke(&mut self, id: i64) -> Result<Option<Header>, EtcdError> {
        match self.call("/v3/lease/revoke", &json!({ "ID": id.to_string() })) {
            Ok((h, _)) => Ok(Some(h)),
            Err(e) if e.is_lease_gone() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn bad(&self, what: String) -> EtcdError {
        EtcdError::BadReply {
            endpoint: self.endpoints[self.current],
            what,
        }
    }
}

/// What a failed exchange with an endpoint means: unreachable, or not a gateway at all.
fn call_error(endpoint: SocketAddr, e: CallError) -> EtcdError {
    let unreachable = |why: String| EtcdError::Unreachable { endpoint, why };
    match e {
        CallError::Connect { source, .. } => unreachable(format!("cannot connect: {source}")),
        CallError::Timeout { limit, .. } => unreachable(format!(
            "no complete reply within {:.1} s",
            limit.as_secs_f64()
        )),
        CallError::TooLarge { max, .. } => EtcdError::BadReply {
            endpoint,
            what: format!("reply larger than {max} bytes"),
        },
        CallError::Broken { why, .. } => match why {
            Broken::Reading(e) => unreachable(format!("reading the reply: {e}")),
            Broken::Sending(e) => unreachable(format!("sending the request: {e}")),
            Broken::Closed => unreachable("closed without a reply".into()),
            Broken::NotHttp => EtcdError::BadReply {
                endpoint,
                what: "not an HTTP reply".into(),
            },
        },
    }
}

/// A JSON number or a string holding one (the gateway writes 64-bit numbers as strings).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        v => v.as_i64(),
    }
}

fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    }
}

fn bytes(v: Option<&Value>) -> Result<Vec<u8>, String> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => B64.decode(s).map_err(|e| format!("bad base64 {s:?}: {e}")),
        Some(other) => Err(format!("expected a base64 string, got {other}")),
    }
}

/// The `kvs` of a range reply (absent when nothing matched).
fn kvs(v: &Value) -> Result<Vec<KeyValue>, String> {
    let Some(list) = v.get("kvs") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("kvs is not a list")?;
    list.iter()
        .map(|kv| {
            Ok(KeyValue {
                key: bytes(kv.get("key"))?,
                value: bytes(kv.get("value"))?,
                create_revision: kv.get("create_revision").and_then(int).unwrap_or(0),
                mod_revision: kv.get("mod_revision").and_then(int).unwrap_or(0),
                version: kv.get("version").and_then(int).unwrap_or(0),
                lease: kv.get("lease").and_then(int).unwrap_or(0),
            })
        })
        .collect()
}

/// The end of a prefix range: the prefix with its last byte below 0xff incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the key space.
    vec![0]
}

fn put_body(key: &[u8], value: &[u8], lease: Option<i64>) -> Value {
    let mut b = json!({ "key": B64.encode(key), "value": B64.encode(value) });
    if let Some(l) = lease {
        b["lease"] = json!(l.to_string());
    }
    b
}

fn compare_json(c: &Compare) -> Value {
    match c {
        Compare::CreateRevision(k, r) => json!({
            "key": B64.encode(k), "target": "CREATE", "result": "EQUAL",
            "create_revision": r.to_string()
        }),
        Compare::ModRevision(k, r) => json!({
            "key": B64.encode(k), "target": "MOD", "result": "EQUAL",
            "mod_revision": r.to_string()
        }),
        Compare::Value(k, v) => json!({
            "key": B64.encode(k), "target": "VALUE", "result": "EQUAL",
            "value": B64.encode(v)
        }),
        Compare::Lease(k, l) => json!({
            "key": B64.encode(k), "target": "LEASE", "result": "EQUAL",
            "lease": l.to_string()
        }),
    }
}

fn op_json(op: &Op) -> Value {
    match op {
        Op::Put { key, value, lease } => json!({ "request_put": put_body(key, value, *lease) }),
        Op::Delete { key } => json!({ "request_delete_range": { "key": B64.encode(key) } }),
        Op::Get { key } => json!({ "request_range": { "key": B64.encode(key) } }),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod lease_tests;
