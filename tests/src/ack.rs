//! A client that records every write the server acknowledged, to check none is lost after a
//! failover: numbered rows inserted one at a time in autocommit, each call bounded (a hung
//! server never hangs the writer), the ids of the acknowledged ones kept.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::db::Db;

/// One acknowledged insert: the row's id and which target (index in the writer's list)
/// acknowledged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub id: i64,
    pub target: usize,
}

/// A thread inserting `insert into <table> (id) values (<id>)` with ids counting up from
/// `first_id`, every `pace`; see [`AckWriter::session`] and [`AckWriter::anywhere`].
#[derive(Debug)]
pub struct AckWriter {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Ack>>>,
    ended: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The bound of one connect or insert.
const CALL_LIMIT: Duration = Duration::from_secs(2);

impl AckWriter {
    /// Writes on one session to `host:port`, opened before this returns (panics if it cannot
    /// be), never reopened: once the server ends it (or a call passes its bound) the writer
    /// stops by itself ([`AckWriter::ended`]). What a client connected to a master before a
    /// fault does.
    pub fn session(host: &str, port: u16, table: &str, first_id: i64, pace: Duration) -> AckWriter {
        let db = Db::session(host, port, CALL_LIMIT)
            .unwrap_or_else(|e| panic!("a session to {host}:{port}: {e}"));
        AckWriter::spawn(vec![db], table, first_id, pace)
    }

    /// Writes on the first of `targets` (host, port) that takes the write, reconnecting to
    /// any of them as needed: what a client that follows the master does.
    pub fn anywhere(
        targets: &[(String, u16)],
        table: &str,
        first_id: i64,
        pace: Duration,
    ) -> AckWriter {
        let dbs = targets
            .iter()
            .map(|(h, p)| Db::at(h, *p, CALL_LIMIT))
            .collect();
        AckWriter::spawn(dbs, table, first_id, pace)
    }

    fn spawn(mut dbs: Vec<Db>, table: &str, first_id: i64, pace: Duration) -> AckWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let (s, a, e) = (stop.clone(), acked.clone(), ended.clone());
        let table = table.to_string();
        let thread = std::thread::spawn(move || {
            let mut id = first_id;
            while !s.load(Ordering::SeqCst) {
                let sql = format!("insert into {table} (id) values ({id})");
                let mut done = false;
                let mut gone = 0;
                for (target, db) in dbs.iter_mut().enumerate() {
                    match db.execute(&sql) {
                        Ok(()) => {
                            a.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Ack { id, target });
                            done = true;
                            break;
                        }
                        // Committed earlier without an acknowledgement: it is there.
                        Err(m) if m.contains("duplicate key") => {
                            done = true;
                            break;
                        }
                        Err(m) if m.contains("the session is gone") => gone += 1,
                        Err(_) => {}
                    }
                }
                if gone == dbs.len() {
                    e.store(true, Ordering::SeqCst);
                    return;
                }
                if done {
                    id += 1;
                    std::thread::sleep(pace);
                } else {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        AckWriter {
            stop,
            acked,
            ended,
            thread: Some(thread),
        }
    }

    /// The writes acknowledged so far.
    pub fn acked(&self) -> Vec<Ack> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many writes target `target` acknowledged so far.
    pub fn count_on(&self, target: usize) -> usize {
        self.acked().iter().filter(|a| a.target == target).count()
    }

    /// Whether a [`AckWriter::session`] writer's session is gone (it stopped by itself).
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Stops the writer (within one bounded call) and returns every acknowledged write.
    pub fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acked()
    }
}

impl Drop for AckWriter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The ids in table `t` of node `i` (panics naming the node when it cannot be read).
pub fn ids_on(c: &crate::Cluster, i: usize) -> BTreeSet<i64> {
    parse_ids(c.try_rows(i, "select id from t"))
        .unwrap_or_else(|e| panic!("{}: {e}", c.nodes[i].name))
}

/// The ids of rows read as text.
pub fn parse_ids(rows: Result<Vec<String>, String>) -> Result<BTreeSet<i64>, String> {
    Ok(rows?.iter().filter_map(|v| v.parse().ok()).collect())
}

/// The ids of `acked` missing from `present` (the ids a node holds), in order.
pub fn lost(acked: &[Ack], present: &BTreeSet<i64>) -> Vec<i64> {
    acked
        .iter()
        .map(|a| a.id)
        .filter(|id| !present.contains(id))
        .collect()
}
