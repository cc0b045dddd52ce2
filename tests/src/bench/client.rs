//! PostgreSQL clients whose every call (connect, startup and query together) is bounded:
//! a SIGSTOPped postmaster accepts TCP and never answers, so a plain connect would hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use pgha_tests::db::Db;

/// An acknowledged write: row number, the server port that acknowledged it, when.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub n: i64,
    pub port: u16,
    pub at: Instant,
}

/// A client writing numbered rows every `pace` through `port` (a server, HAProxy or
/// PgBouncer), each call bounded by `limit`, reconnecting every 50 ms after an error; every
/// acknowledgement is kept, and the time of every error.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    errors: Arc<Mutex<Vec<Instant>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(host: &str, port: u16, run: u32, pace: Duration, limit: Duration) -> Writer {
        let host = host.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let (s, a, e) = (stop.clone(), acks.clone(), errors.clone());
        let thread = std::thread::spawn(move || {
            let mut db = Db::at(&host, port, limit);
            let mut n: i64 = 0;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let sql = format!(
                    "insert into bench_rows(run, n) values ({run}, {n}) returning inet_server_port()"
                );
                match db.query_text(&sql) {
                    Ok(p) => {
                        let ack = Ack {
                            n,
                            port: p.parse().unwrap_or(0),
                            at: Instant::now(),
                        };
                        a.lock().unwrap_or_else(|e| e.into_inner()).push(ack);
                        std::thread::sleep(pace);
                    }
                    Err(_) => {
                        e.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Instant::now());
                        std::thread::sleep(Duration::from_millis(50))
                    }
                }
            }
        });
        Writer {
            stop,
            acks,
            errors,
            thread: Some(thread),
        }
    }

    /// How many calls failed (connect, timeout or SQL error) at or after `t`.
    pub fn errors_since(&self, t: Instant) -> usize {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| **e >= t)
            .count()
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acks()
    }
}

/// A background loop running `probe` every `every` on its own client until it returns
/// true once (or it is stopped); the time of that first success is kept.
#[derive(Debug)]
pub struct FirstSuccess {
    stop: Arc<AtomicBool>,
    at: Arc<Mutex<Option<Instant>>>,
    thread: Option<JoinHandle<()>>,
}

impl FirstSuccess {
    pub fn start(
        host: &str,
        port: u16,
        every: Duration,
        probe: impl Fn(&mut Db) -> bool + Send + 'static,
    ) -> FirstSuccess {
        let stop = Arc::new(AtomicBool::new(false));
        let at = Arc::new(Mutex::new(None));
        let (s, a) = (stop.clone(), at.clone());
        let host = host.to_string();
        let thread = std::thread::spawn(move || {
            let mut db = Db::at(&host, port, Duration::from_secs(1));
            while !s.load(Ordering::SeqCst) {
                let t = Instant::now();
                if probe(&mut db) {
                    *a.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    return;
                }
                std::thread::sleep(every.saturating_sub(t.elapsed()));
            }
        });
        FirstSuccess {
            stop,
            at,
            thread: Some(thread),
        }
    }

    pub fn get(&self) -> Option<Instant> {
        *self.at.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stop(mut self) -> Option<Instant> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.get()
    }
}
