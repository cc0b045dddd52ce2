//! A network partition between the nodes of a loopback cluster, no namespace needed: every
//! node reaches each peer's postgres and API through TCP forwarders of its own (one per
//! direction and per port), which a test cuts and heals.
//!
//! A cut link is a blackhole, as far as loopback allows: connections already open stay open
//! but nothing crosses them (the forwarder stops reading, so a sender's buffers fill and its
//! reads wait), and a new connection is accepted but never answered, until it is healed (then
//! it is forwarded) or its client gives up. Nothing is refused, so clients see timeouts as
//! with a real partition, not errors. The one difference: a real blackhole also leaves the
//! TCP handshake unanswered; here it completes and the first answer never comes, as with a
//! SIGSTOPped postmaster. Cuts are per direction: `cut(a, b)` hangs what `a` opened to `b`
//! (its probes of `b`, its replication from `b`), not what `b` opened to `a`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Cluster, extra_ports, poll};

/// How often a waiting forwarder thread looks at its link's flags.
const TICK: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    stop: AtomicBool,
    /// Connection threads still running.
    live: AtomicUsize,
    /// Both sockets of every open connection, shut down when the link is dropped (a thread
    /// blocked writing to a peer that reads nothing would otherwise never see `stop`).
    open: Mutex<Vec<(usize, TcpStream)>>,
}

/// One forwarder: 127.0.0.1:`port` to `target`.
#[derive(Debug)]
pub struct Link {
    pub port: u16,
    pub target: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Link {
    /// Forwards 127.0.0.1:`port` to `target` until dropped.
    pub fn start(port: u16, target: SocketAddr) -> Link {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("forwarder on port {port}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            let mut next = 0;
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        next += 1;
                        s.live.fetch_add(1, Ordering::SeqCst);
                        let s = s.clone();
                        let id = next;
                        std::thread::spawn(move || {
                            connection(&s, id, client, target);
                            s.open
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .retain(|(i, _)| *i != id);
                            s.live.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(TICK),
                    Err(_) => std::thread::sleep(TICK),
                }
            }
        });
        Link {
            port,
            target,
            shared,
            accept: Some(accept),
        }
    }

    /// Nothing crosses the link until [`Link::heal`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, s) in self
            .shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = poll(Duration::from_secs(5), TICK, || {
            (self.shared.live.load(Ordering::SeqCst) == 0).then_some(())
        });
    }
}

/// One accepted connection: held unanswered while the link is cut, then forwarded both ways.
fn connection(s: &Arc<Shared>, id: usize, client: TcpStream, target: SocketAddr) {
    let _ = client.set_nonblocking(false);
    while s.cut.load(Ordering::SeqCst) {
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(TICK);
    }
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    s.open
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend([(id, c3), (id, s3)]);
    let back = {
        let s = s.clone();
        std::thread::spawn(move || pump(&s, s2, c2))
    };
    pump(s, client, server);
    let _ = back.join();
}

/// Copies `from` to `to` while the link is up; stops reading while it is cut.
fn pump(s: &Shared, mut from: TcpStream, mut to: TcpStream) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 16 * 1024];
    while !s.stop.load(Ordering::SeqCst) {
        if s.cut.load(Ordering::SeqCst) {
            std::thread::sleep(TICK);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                // Cut while this read waited: the bytes wait for the heal too.
                while s.cut.load(Ordering::SeqCst) && !s.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(TICK);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// The links of a cluster: node `from` reaches node `to`'s postgres and API through
/// `links[(from, to)]`.
#[derive(Debug)]
pub struct Partition {
    /// (from, to, postgres link, API link).
    links: Vec<(usize, usize, Link, Link)>,
}

impl Partition {
    /// Routes every node's peers through forwarders (rewriting the configurations: call it
    /// before the nodes start).
    pub fn new(c: &mut Cluster) -> Partition {
        let n = c.nodes.len();
        let mut links = Vec::new();
        for from in 0..n {
            for to in (0..n).filter(|&to| to != from) {
                let port = extra_ports(2);
                let pg = Link::start(
                    port,
                    SocketAddr::new(
                        c.nodes[to].host.parse().expect("a host address"),
                        c.nodes[to].pg_port,
                    ),
                );
                let api = Link::start(port + 1, c.nodes[to].api);
                c.route_peer(from, to, pg.port, api.port);
                links.push((from, to, pg, api));
            }
        }
        Partition { links }
    }

    fn links(&self, from: usize, to: usize) -> impl Iterator<Item = &Link> {
        self.links
            .iter()
            .filter(move |(f, t, _, _)| *f == from && *t == to)
            .flat_map(|(_, _, pg, api)| [pg, api])
    }

    /// Node `from` no longer reaches node `to` (its connections to `to` hang); `to` still
    /// reaches `from` unless cut too.
    pub fn cut(&self, from: usize, to: usize) {
        self.links(from, to).for_each(Link::cut);
    }

    pub fn heal(&self, from: usize, to: usize) {
        self.links(from, to).for_each(Link::heal);
    }

    /// Only node `from`'s requests to node `to`'s API hang (its daemon hears nothing of
    /// `to`'s daemon; postgres still crosses).
    pub fn cut_api(&self, from: usize, to: usize) {
        self.links
            .iter()
            .filter(|(f, t, _, _)| *f == from && *t == to)
            .for_each(|(_, _, _, api)| api.cut());
    }

    /// Both ways between `a` and `b`.
    pub fn cut_between(&self, a: usize, b: usize) {
        self.cut(a, b);
        self.cut(b, a);
    }

    pub fn heal_between(&self, a: usize, b: usize) {
        self.heal(a, b);
        self.heal(b, a);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port, answering each connection until it closes.
    fn echo() -> (u16, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for mut c in l.incoming().take(2).flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (port, t)
    }

    fn round_trip(c: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        c.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn a_cut_link_hangs_open_and_new_connections_and_a_healed_one_delivers_what_waited() {
        let (target, _server) = echo();
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let link = Link::start(port, SocketAddr::from(([127, 0, 0, 1], target)));
        let mut open = TcpStream::connect(("127.0.0.1", port)).unwrap();
        open.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(round_trip(&mut open, b"one").unwrap(), b"one");
        link.cut();
        // Open connections hang: no answer, no error.
        let e = round_trip(&mut open, b"two").unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        );
        // New connections are accepted, not refused, and never answered.
        let mut new = TcpStream::connect(("127.0.0.1", port)).unwrap();
        new.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let e = round_trip(&mut new, b"three").unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        );
        link.heal();
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        new.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = [0u8; 3];
        open.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"two");
        let mut got = [0u8; 5];
        new.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"three");
        drop((open, new));
        drop(link);
    }
}
