//! A client that records acknowledged writes: a thread inserting numbered rows, one
//! autocommit insert at a time, into `acked (id bigint primary key)` through one port, keeping
//! every id the server acknowledged (and when), reconnecting after any error. What a test then
//! checks on the survivor: every acknowledged id is there, or where it went.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{connect_port, wait_for};

/// The table the writer inserts into; create it on the master first.
pub const ACK_TABLE: &str = "create table if not exists acked (id bigint primary key)";

/// One acknowledged insert: its id and when the acknowledgement came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub id: i64,
    pub at: Instant,
}

#[derive(Debug)]
pub struct AckWriter {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    thread: Option<JoinHandle<()>>,
}

impl AckWriter {
    /// Writes ids `first`, `first + 1`, ... through 127.0.0.1:`port` every `pace`, each id
    /// tried once (an id whose insert failed is skipped: it may or may not have committed).
    /// Calls are not bounded beyond the connect: point it at a server that may stop or refuse,
    /// not one that may hang.
    pub fn start(port: u16, first: i64, pace: Duration) -> AckWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acks.clone());
        let thread = std::thread::spawn(move || {
            let mut client = None;
            let mut id = first;
            while !s.load(Ordering::SeqCst) {
                let c = match client.take() {
                    Some(c) => c,
                    None => match connect_port(port, "postgres", Duration::from_secs(1)) {
                        Ok(c) => c,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(50));
                            continue;
                        }
                    },
                };
                let mut c: postgres::Client = c;
                let r = c.batch_execute(&format!("insert into acked values ({id})"));
                let done = id;
                id += 1;
                match r {
                    Ok(()) => {
                        let ack = Ack {
                            id: done,
                            at: Instant::now(),
                        };
                        a.lock().unwrap_or_else(|e| e.into_inner()).push(ack);
                        client = Some(c);
                        std::thread::sleep(pace);
                    }
                    // Read-only (a replica) or gone: reconnect after a pause.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        AckWriter {
            stop,
            acks,
            thread: Some(thread),
        }
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until at least `n` writes were acknowledged after `since` (None: ever).
    pub fn wait_acks(&self, n: usize, since: Option<Instant>, limit: Duration) {
        wait_for(limit, &format!("{n} acknowledged writes"), || {
            let got = self
                .acks()
                .iter()
                .filter(|a| since.is_none_or(|t| a.at > t))
                .count();
            (got >= n).then_some(())
        });
    }

    /// Stops the thread (after its call in flight) and returns every acknowledgement.
    pub fn stop(mut self) -> Vec<Ack> {
        self.halt();
        self.acks()
    }

    /// Stops the thread; one whose call hangs (a hung server) is left behind after 10 s.
    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let done = crate::poll(Duration::from_secs(10), Duration::from_millis(20), || {
                t.is_finished().then_some(())
            });
            if done.is_some() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for AckWriter {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The ids of `acks`.
pub fn ids(acks: &[Ack]) -> BTreeSet<i64> {
    acks.iter().map(|a| a.id).collect()
}
