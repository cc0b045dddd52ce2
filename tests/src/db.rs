//! A PostgreSQL client whose every call (connect, startup and query together) is bounded: a
//! SIGSTOPped postmaster accepts TCP and never answers, so a plain connect would hang.

use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls};

/// One connection to `host:port`, reopened after any error (unless it is a
/// [`Db::session`]).
#[derive(Debug)]
pub struct Db {
    rt: Runtime,
    client: Option<Client>,
    host: String,
    port: u16,
    limit: Duration,
    /// Open a new connection when the last one is gone.
    reconnect: bool,
    /// A connection was opened once.
    opened: bool,
}

impl Db {
    /// A client of `host:port` (a node in a network namespace, for the partition fault).
    pub fn at(host: &str, port: u16, limit: Duration) -> Db {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        Db {
            rt,
            client: None,
            host: host.to_string(),
            port,
            limit,
            reconnect: true,
            opened: false,
        }
    }

    /// One session, opened now: once it is lost (an error that closes it, a call past the
    /// limit) every call fails, and no new connection is opened.
    pub fn session(host: &str, port: u16, limit: Duration) -> Result<Db, String> {
        let mut db = Db::at(host, port, limit);
        db.reconnect = false;
        db.run(async |_| Ok(()))?;
        Ok(db)
    }

    /// Whether a connection is open.
    pub fn is_open(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    fn run<T>(
        &mut self,
        f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, String> {
        let port = self.port;
        let host = self.host.clone();
        let limit = self.limit;
        let had = self.client.take().filter(|c| !c.is_closed());
        if had.is_none() && self.opened && !self.reconnect {
            return Err("the session is gone".into());
        }
        self.opened = true;
        let out = self.rt.block_on(async {
            tokio::time::timeout(limit, async {
                let client = match had {
                    Some(c) => c,
                    None => {
                        let (c, conn) = tokio_postgres::Config::new()
                            .host(&host)
                            .port(port)
                            .user("postgres")
                            .dbname("postgres")
                            .connect(NoTls)
                            .await
                            .map_err(|e| e.to_string())?;
                        tokio::spawn(conn);
                        c
                    }
                };
                let r = f(&client).await;
                Ok::<_, String>((client, r))
            })
            .await
        });
        match out {
            Err(_) => Err("timeout".into()),
            Ok(Err(e)) => Err(e),
            Ok(Ok((client, r))) => {
                // Keep the connection after an SQL error (e.g. read-only): it still works.
                self.client = Some(client);
                r.map_err(|e| {
                    e.as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or(e.to_string())
                })
            }
        }
    }

    pub fn execute(&mut self, sql: &str) -> Result<(), String> {
        let sql = sql.to_string();
        self.run(async move |c| c.batch_execute(&sql).await)
    }

    /// The first column of the first row, as text.
    pub fn query_text(&mut self, sql: &str) -> Result<String, String> {
        let sql = sql.to_string();
        let rows = self.run(async move |c| c.simple_query(&sql).await)?;
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .ok_or_else(|| "no row".to_string())
    }

    /// Every value of the first column.
    pub fn query_column(&mut self, sql: &str) -> Result<Vec<String>, String> {
        let sql = sql.to_string();
        let rows = self.run(async move |c| c.simple_query(&sql).await)?;
        Ok(rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect())
    }
}
