//! Probes and short SQL commands, each bounded as a whole (connect, startup, query) by a
//! time limit. The `postgres` crate's `connect_timeout` only bounds the TCP connect, and a
//! SIGSTOPped postmaster completes the connect and then never answers the startup packet; so
//! every exchange here runs on a private current-thread runtime of `tokio-postgres` (the async
//! core of the `postgres` crate) under `tokio::time::timeout`. At the deadline the future is
//! dropped, the socket closed, and the call returns: nothing is left hanging.

use std::time::Duration;

use pgha_core::{Lsn, PeerId, ProbeResult, Timeline};
use tokio_postgres::error::SqlState;

/// Where to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub application_name: String,
}

/// What a probe found, with details the shell keeps for status (the core sees `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeDetail {
    pub result: ProbeResult,
    /// A replica's WAL receiver is streaming.
    pub streaming: bool,
}

impl ProbeDetail {
    fn of(result: ProbeResult) -> ProbeDetail {
        ProbeDetail {
            result,
            streaming: false,
        }
    }
}

/// The failure of an exchange, classified.
#[derive(Debug)]
pub enum SqlFailure {
    Probe(ProbeResult),
    /// The query ran and returned something unusable, or an SQL error.
    Query(String),
}

impl std::fmt::Display for SqlFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlFailure::Probe(r) => write!(f, "{}", r.name()),
            SqlFailure::Query(s) => write!(f, "{s}"),
        }
    }
}

const PROBE_SQL: &str = "select pg_is_in_recovery()::text, \
    case when pg_is_in_recovery() then coalesce(pg_last_wal_replay_lsn(), pg_last_wal_receive_lsn(), '0/0')::text \
         else pg_current_wal_lsn()::text end, \
    case when pg_is_in_recovery() then coalesce((select received_tli::text from pg_stat_wal_receiver), \
                                               (select timeline_id::text from pg_control_checkpoint())) \
         else substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) end, \
    (select status from pg_stat_wal_receiver), \
    (select sender_host from pg_stat_wal_receiver), \
    (select sender_port::text from pg_stat_wal_receiver), \
    current_setting('is_superuser'), \
    current_setting('superuser_reserved_connections'), \
    current_setting('reserved_connections', true), \
    (select pg_has_role(current_user, oid, 'MEMBER')::text from pg_roles \
      where rolname = 'pg_use_reserved_connections')";

/// Whether the probe's role can use a connection slot that applications cannot take: a
/// superuser with `superuser_reserved_connections` > 0, or (PostgreSQL 16+) a member of
/// `pg_use_reserved_connections` with `reserved_connections` > 0. `None` when the server did
/// not say.
fn has_reserved_slots(
    superuser: &str,
    superuser_reserved: &str,
    reserved: Option<&str>,
    use_reserved: Option<&str>,
) -> Option<bool> {
    let n = |v: &str| v.parse::<u32>().ok();
    let su = match superuser {
        "on" => true,
        "off" => false,
        _ => return None,
    };
    if su && n(superuser_reserved)? > 0 {
        return Some(true);
    }
    let pg16 = use_reserved == Some("true") && reserved.and_then(n).is_some_and(|r| r > 0);
    Some(pg16)
}

/// Warned once per daemon: pgha's role has no reserved slot.
static NO_RESERVED_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Classifies a connection or query error into a typed probe result.
///
/// "Could not tell" is never "down": an error that only a running server sends says so.
/// - SQLSTATE class 53 (insufficient resources: 53000, disk full 53100, out of memory 53200,
///   too many connections 53300 for the server, a role or a database, configuration limit
///   exceeded 53400) comes from a live postmaster and its backend: [`ProbeResult::Overloaded`].
/// - 57P03 "in recovery mode" is a server resetting after a backend crashed (crash recovery):
///   it comes back by itself, as from "starting up"; 57P02 "terminating connection because
///   of crash of another server process" is the same reset seen from inside a session.
/// - 57P01 (terminated by an administrator's command, or a shutdown) and 57P03 "shutting
///   down" are a stopping server.
pub fn classify(e: &tokio_postgres::Error) -> ProbeResult {
    if let Some(db) = e.as_db_error() {
        return classify_db(db.code(), db.message());
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => ProbeResult::Refused,
                std::io::ErrorKind::TimedOut => ProbeResult::Timeout,
                _ => ProbeResult::OtherError,
            };
        }
        source = s.source();
    }
    if e.to_string().contains("timeout") {
        return ProbeResult::Timeout;
    }
    ProbeResult::OtherError
}

/// Classifies an error the server sent, by its SQLSTATE (and, for 57P03, which the server
/// uses for several phases, its message).
fn classify_db(code: &SqlState, msg: &str) -> ProbeResult {
    if *code == SqlState::CANNOT_CONNECT_NOW {
        if msg.contains("starting up")
            || msg.contains("not yet accepting connections")
            || msg.contains("in recovery mode")
        {
            return ProbeResult::StartingUp;
        }
        if msg.contains("shutting down") {
            return ProbeResult::ShuttingDown;
        }
        return ProbeResult::OtherError;
    }
    if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CRASH_SHUTDOWN {
        return ProbeResult::ShuttingDown;
    }
    if *code == SqlState::INVALID_PASSWORD || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    {
        return ProbeResult::AuthFailed;
    }
    if code.code().starts_with("53") {
        return ProbeResult::Overloaded;
    }
    ProbeResult::OtherError
}

/// When the last "overloaded" warning was logged: one a minute is enough to say what happens
/// and what to do, without a line per probe.
static OVERLOAD_WARNED: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);

fn warn_overloaded(what: &str, e: &tokio_postgres::Error) {
    let Ok(mut last) = OVERLOAD_WARNED.lock() else {
        return;
    };
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
        log::debug!(
            "{what}: {}",
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.to_string())
        );
        return;
    }
    *last = Some(std::time::Instant::now());
    // The server's own words ("FATAL: sorry, too many clients already"), not "db error".
    let said = e
        .as_db_error()
        .map_or_else(|| e.to_string(), |d| d.to_string());
    let advice = match e.as_db_error().map(|d| d.message()) {
        Some(m) if m.contains("reserved") => {
            "pgha's [postgres] user cannot use the reserved connection slots: connect pgha as \
             a superuser the applications do not use"
        }
        Some(m) if m.contains("too many clients") => {
            "every connection slot is taken, the reserved ones too: the applications connect \
             as a superuser, or superuser_reserved_connections is too small"
        }
        _ => "the server is short of resources",
    };
    log::warn!(
        "{what}: {said}: the server is alive but cannot serve pgha now (alive, not down); {advice} (see \"Connection slots for pgha\" in docs/configuration.md)"
    );
}

/// Runs `f` on a fresh connection, the whole exchange bounded by `limit`.
fn with_client<T, F>(target: &Target, limit: Duration, f: F) -> Result<T, SqlFailure>
where
    F: AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
{
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&target.host)
        .port(target.port)
        .user(&target.user)
        .dbname(&target.dbname)
        .application_name(&target.application_name);
    if let Some(p) = &target.password {
        cfg.password(p);
    }
    let what = format!("{}:{}", target.host, target.port);
    with_config(cfg, &what, limit, f)
}

/// One exchange on a connection described by `cfg`, bounded as a whole by `limit`.
fn with_config<T, F>(
    mut cfg: tokio_postgres::Config,
    what: &str,
    limit: Duration,
    f: F,
) -> Result<T, SqlFailure>
where
    F: AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SqlFailure::Query(format!("cannot build a runtime: {e}")))?;
    cfg.connect_timeout(limit);
    rt.block_on(async move {
        let work = async {
            let (client, connection) = cfg.connect(tokio_postgres::NoTls).await?;
            let conn = tokio::spawn(connection);
            let out = f(&client).await;
            drop(client);
            let _ = conn.await;
            out
        };
        match tokio::time::timeout(limit, work).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let r = classify(&e);
                if r == ProbeResult::Overloaded {
                    warn_overloaded(what, &e);
                }
                if r == ProbeResult::OtherError {
                    log::debug!("{what}: {e}");
                    if e.as_db_error().is_some() {
                        return Err(SqlFailure::Query(e.to_string()));
                    }
                }
                Err(SqlFailure::Probe(r))
            }
            Err(_) => Err(SqlFailure::Probe(ProbeResult::Timeout)),
        }
    })
}

fn parse_lsn(s: &str) -> Option<Lsn> {
    let (hi, lo) = s.split_once('/')?;
    Some(Lsn(
        (u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?
    ))
}

/// Probes a server: role, timeline, LSN and (for a replica) its upstream, mapped to a peer
/// by `peer_of(host, port)`.
pub fn probe(
    target: &Target,
    limit: Duration,
    peer_of: &dyn Fn(&str, u16) -> Option<PeerId>,
) -> ProbeDetail {
    let rows = with_client(target, limit, async |c| c.simple_query(PROBE_SQL).await);
    let rows = match rows {
        Ok(r) => r,
        Err(SqlFailure::Probe(r)) => return ProbeDetail::of(r),
        Err(SqlFailure::Query(e)) => {
            log::debug!("probe {}:{}: {e}", target.host, target.port);
            return ProbeDetail::of(ProbeResult::OtherError);
        }
    };
    let row = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    let Some(row) = row else {
        return ProbeDetail::of(ProbeResult::OtherError);
    };
    let get = |i: usize| row.get(i).unwrap_or("");
    if has_reserved_slots(get(6), get(7), row.get(8), row.get(9)) == Some(false)
        && !NO_RESERVED_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        log::warn!(
            "{}:{}: pgha's user {:?} can use no reserved connection slot (not a superuser with \
             superuser_reserved_connections > 0, nor a member of pg_use_reserved_connections \
             with reserved_connections > 0 on PostgreSQL 16+): when the applications fill \
             max_connections, pgha cannot see this server's role (see \"Connection slots for \
             pgha\" in docs/configuration.md)",
            target.host,
            target.port,
            target.user
        );
    }
    let in_recovery = get(0) == "true";
    let lsn = parse_lsn(get(1)).unwrap_or_default();
    let timeline: Timeline = if in_recovery {
        get(2).parse().unwrap_or(0)
    } else {
        u32::from_str_radix(get(2), 16).unwrap_or(0)
    };
    if in_recovery {
        let streaming = get(3) == "streaming";
        let upstream = match (row.get(4), row.get(5).and_then(|p| p.parse::<u16>().ok())) {
            (Some(h), Some(p)) => peer_of(h, p),
            _ => None,
        };
        ProbeDetail {
            result: ProbeResult::Replica {
                timeline,
                replay_lsn: lsn,
                upstream,
            },
            streaming,
        }
    } else {
        ProbeDetail {
            result: ProbeResult::Master { timeline, lsn },
            streaming: false,
        }
    }
}

/// Runs one SQL statement and returns the first column of the first row, if any.
pub fn query_one(
    target: &Target,
    limit: Duration,
    sql: &str,
) -> Result<Option<String>, SqlFailure> {
    let sql = sql.to_string();
    let rows = with_client(target, limit, async move |c| c.simple_query(&sql).await)?;
    Ok(rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    }))
}

/// One statement on a connection string (`host=... port=... user=... dbname=...`), e.g.
/// PgBouncer's admin console, bounded as a whole by `limit`. SQL errors come back as
/// [`SqlFailure::Query`] with the server's message.
pub fn run_on(conninfo: &str, limit: Duration, sql: &str) -> Result<(), SqlFailure> {
    let cfg: tokio_postgres::Config = conninfo
        .parse()
        .map_err(|e| SqlFailure::Query(format!("bad connection string: {e}")))?;
    let sql = sql.to_string();
    with_config(cfg, "admin console", limit, async move |c| {
        c.simple_query(&sql).await.map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(port: u16) -> Target {
        Target {
            host: "127.0.0.1".into(),
            port,
            user: "postgres".into(),
            password: None,
            dbname: "postgres".into(),
            application_name: "pgha-test".into(),
        }
    }

    #[test]
    fn lsns_parse_as_postgres_prints_them() {
        assert_eq!(parse_lsn("0/3000060"), Some(Lsn(0x3000060)));
        assert_eq!(parse_lsn("1/0"), Some(Lsn(1 << 32)));
        assert_eq!(parse_lsn("x"), None);
    }

    #[test]
    fn a_listener_that_never_answers_times_out_within_the_bound() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = local(port);
        let start = std::time::Instant::now();
        let r = probe(&t, Duration::from_millis(300), &|_, _| None);
        assert_eq!(r.result, ProbeResult::Timeout);
        // Bounded, not fast: an unbounded probe would wait for the TCP stack (minutes); how
        // close to 300 ms it comes is the benchmarks' business on a loaded machine.
        assert!(start.elapsed() < Duration::from_secs(30));
        drop(l);
    }

    /// A fake server that reads the startup packet and answers with an ErrorResponse of this
    /// SQLSTATE and message, as a postmaster's backend does when it cannot take the session.
    fn answering(code: &'static str, message: &'static str) -> u16 {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut len = [0u8; 4];
            s.read_exact(&mut len).unwrap();
            let mut rest = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            s.read_exact(&mut rest).unwrap();
            let mut body = Vec::new();
            for (k, v) in [
                (b'S', "FATAL"),
                (b'V', "FATAL"),
                (b'C', code),
                (b'M', message),
            ] {
                body.push(k);
                body.extend_from_slice(v.as_bytes());
                body.push(0);
            }
            body.push(0);
            let mut msg = vec![b'E'];
            msg.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            msg.extend_from_slice(&body);
            let _ = s.write_all(&msg);
        });
        port
    }

    #[test]
    fn a_server_that_answers_too_many_clients_is_overloaded_not_down() {
        for (code, msg) in [
            ("53300", "sorry, too many clients already"),
            (
                "53300",
                "remaining connection slots are reserved for non-replication superuser connections",
            ),
            ("53300", "too many connections for role \"app\""),
        ] {
            let r = probe(
                &local(answering(code, msg)),
                Duration::from_secs(3),
                &|_, _| None,
            );
            assert_eq!(r.result, ProbeResult::Overloaded, "{code} {msg}");
        }
    }

    #[test]
    fn every_insufficient_resources_error_means_alive_but_overloaded() {
        for code in ["53000", "53100", "53200", "53300", "53400"] {
            assert_eq!(
                classify_db(&SqlState::from_code(code), "whatever"),
                ProbeResult::Overloaded,
                "{code}"
            );
        }
        // Genuine failures stay failures.
        assert_eq!(
            classify_db(&SqlState::from_code("XX000"), "internal error"),
            ProbeResult::OtherError
        );
        assert_eq!(
            classify_db(&SqlState::from_code("58030"), "could not read"),
            ProbeResult::OtherError
        );
    }

    #[test]
    fn a_server_in_crash_recovery_is_starting_up_not_failed() {
        let r = probe(
            &local(answering(
                "57P03",
                "the database system is in recovery mode",
            )),
            Duration::from_secs(3),
            &|_, _| None,
        );
        assert_eq!(r.result, ProbeResult::StartingUp);
        assert_eq!(
            classify_db(
                &SqlState::CRASH_SHUTDOWN,
                "terminating connection because of crash of another server process"
            ),
            ProbeResult::ShuttingDown
        );
        assert_eq!(
            classify_db(
                &SqlState::CANNOT_CONNECT_NOW,
                "the database system is not yet accepting connections"
            ),
            ProbeResult::StartingUp
        );
    }

    #[test]
    fn pgha_has_reserved_slots_as_a_superuser_or_a_pg16_reserved_role() {
        assert_eq!(has_reserved_slots("on", "3", None, None), Some(true));
        assert_eq!(has_reserved_slots("on", "0", None, None), Some(false));
        assert_eq!(has_reserved_slots("off", "3", None, None), Some(false));
        assert_eq!(
            has_reserved_slots("off", "3", Some("5"), Some("true")),
            Some(true)
        );
        assert_eq!(
            has_reserved_slots("off", "3", Some("0"), Some("true")),
            Some(false)
        );
        assert_eq!(
            has_reserved_slots("off", "3", Some("5"), Some("false")),
            Some(false)
        );
        assert_eq!(has_reserved_slots("", "", None, None), None);
    }

    #[test]
    fn a_closed_port_is_refused() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = local(port);
        let r = probe(&t, Duration::from_millis(500), &|_, _| None);
        assert_eq!(r.result, ProbeResult::Refused);
    }
}
