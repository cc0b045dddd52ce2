//! Why a shell operation failed, typed: the daemon's start-up checks, the journal, the API
//! server and client, `pgha demo`. Every message names the input it concerns (a setting and
//! its value, a file, an address, a node), as the operator reads it on stderr or in the
//! journal's `stop` row (the message of a wrapped error included). [`Error::source`] gives
//! the wrapped error itself (I/O, the journal, a system call, PostgreSQL, the configuration)
//! to code that wants it.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;

use pgha_journal::JournalError;

use crate::client::CallError;

/// A failed shell operation; its `Display` is the message the operator reads.
#[derive(Debug)]
pub enum DaemonError {
    /// The journal at `path` (`journal.path`) could not be opened, or its run begun.
    JournalOpen { path: PathBuf, source: JournalError },
    /// A step could not be journaled (the daemon stops: nothing is carried out unrecorded).
    JournalWrite { path: PathBuf, source: JournalError },
    /// The configuration or a file it names (the token file): the configuration's own error,
    /// which names the file and the key.
    Config(Box<dyn Error + Send + Sync>),
    /// An I/O operation failed; `what` names it and its input (`cannot listen on node.api =
    /// 127.0.0.1:8008`, `api.socket = "/run/pgha/db0.sock": chmod 600`).
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A system call failed; `what` names it and its input.
    Sys {
        what: String,
        source: nix::errno::Errno,
    },
    /// A setting whose value cannot be used: `key` is the setting with its value
    /// (`api.socket = "/run/pgha/db0.sock"`), `problem` says why.
    Setting { key: String, problem: String },
    /// `node.data_dir` cannot be used (checked before anything starts).
    DataDir {
        path: PathBuf,
        problem: DataDirProblem,
    },
    /// Another pgha daemon holds the lock of `what` (`node.data_dir = /x/db0`).
    Locked {
        what: String,
        holder: String,
        lock: PathBuf,
    },
    /// A pgha API could not be reached, or gave no complete reply.
    Call(CallError),
    /// A pgha API answered, but not as a pgha daemon does: `target` names it (its address).
    Answer { target: String, problem: String },
    /// `pgha check`'s HAProxy arguments name no node of the configuration.
    CheckArgs(String),
    /// An operator request over TCP without `[api] token_file`.
    NoToken,
    /// A PostgreSQL client call failed (`pgha demo`); `what` names the node.
    Postgres {
        what: String,
        source: postgres::Error,
    },
    /// Something the command needs is missing (PostgreSQL's programs, the `postgres` user).
    Missing(String),
    /// A wait ended at its limit: `what` did not happen within `secs` (`see`: the log).
    Waited {
        what: String,
        secs: u64,
        see: Option<PathBuf>,
    },
    /// A signal interrupted `pgha demo`.
    Interrupted { signal: String },
}

/// Why `node.data_dir` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirProblem {
    /// It holds files and no `PG_VERSION`; `entries`: a few of their names.
    Foreign { entries: String },
    /// The daemon's `user` cannot write it.
    NotWritable { user: String },
    /// The daemon's `user` cannot write its directory `parent`.
    ParentNotWritable { parent: PathBuf, user: String },
}

impl DaemonError {
    /// An I/O error of the operation `what` names.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> DaemonError {
        DaemonError::Io {
            what: what.into(),
            source,
        }
    }

    /// A failed system call of the operation `what` names.
    pub fn sys(what: impl Into<String>, source: nix::errno::Errno) -> DaemonError {
        DaemonError::Sys {
            what: what.into(),
            source,
        }
    }

    /// The configuration's error (a `String` or a typed error), as is.
    pub fn config(e: impl Into<Box<dyn Error + Send + Sync>>) -> DaemonError {
        DaemonError::Config(e.into())
    }

    /// A setting (`key` with its value) that cannot be used.
    pub fn setting(key: &str, problem: impl Into<String>) -> DaemonError {
        DaemonError::Setting {
            key: key.to_string(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::JournalOpen { path, source } => {
                write!(f, "journal.path = {}: {source}", path.display())
            }
            DaemonError::JournalWrite { path, source } => {
                write!(f, "journal {}: {source}", path.display())
            }
            DaemonError::Config(e) => write!(f, "{e}"),
            DaemonError::Io { what, source } => write!(f, "{what}: {source}"),
            DaemonError::Sys { what, source } => write!(f, "{what}: {source}"),
            DaemonError::Setting { key, problem } => write!(f, "{key}: {problem}"),
            DaemonError::DataDir { path, problem } => match problem {
                DataDirProblem::Foreign { entries } => write!(
                    f,
                    "node.data_dir = {:?} holds files that are not a PostgreSQL cluster (no \
                     PG_VERSION; {entries}): refusing to initdb or clone over them. Use an empty \
                     or absent directory, or a cluster",
                    path.display()
                ),
                DataDirProblem::NotWritable { user } => write!(
                    f,
                    "node.data_dir = {:?} is not writable by {user}, the daemon's user",
                    path.display()
                ),
                DataDirProblem::ParentNotWritable { parent, user } => write!(
                    f,
                    "node.data_dir = {:?}: its directory {} is not writable by {user}, the \
                     daemon's user (pgha creates the data dir, its markers and its copies there)",
                    path.display(),
                    parent.display()
                ),
            },
            DaemonError::Locked { what, holder, lock } => write!(
                f,
                "{what} is in use by another pgha daemon ({holder}; lock file {}): refusing to \
                 run a second daemon on it",
                lock.display()
            ),
            DaemonError::Call(e) => write!(f, "{e}"),
            DaemonError::Answer { target, problem } => write!(f, "{target}: {problem}"),
            DaemonError::CheckArgs(problem) => f.write_str(problem),
            DaemonError::NoToken => f.write_str(
                "operator requests over TCP need a token: set [api] token_file (the same token \
                 on every node; see docs/security.md)",
            ),
            DaemonError::Postgres { what, source } => write!(f, "{what}: {source}"),
            DaemonError::Missing(what) => f.write_str(what),
            DaemonError::Waited { what, secs, see } => {
                write!(f, "{what} within {secs} s")?;
                match see {
                    Some(p) => write!(f, "; see {}", p.display()),
                    None => Ok(()),
                }
            }
            DaemonError::Interrupted { signal } => {
                write!(f, "interrupted by {signal}: stopping everything it started")
            }
        }
    }
}

impl Error for DaemonError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            DaemonError::JournalOpen { source, .. } | DaemonError::JournalWrite { source, .. } => {
                Some(source)
            }
            DaemonError::Config(e) => Some(&**e),
            DaemonError::Io { source, .. } => Some(source),
            DaemonError::Sys { source, .. } => Some(source),
            DaemonError::Call(e) => Some(e),
            DaemonError::Postgres { source, .. } => Some(source),
            DaemonError::Setting { .. }
            | DaemonError::DataDir { .. }
            | DaemonError::Locked { .. }
            | DaemonError::Answer { .. }
            | DaemonError::CheckArgs(_)
            | DaemonError::NoToken
            | DaemonError::Missing(_)
            | DaemonError::Waited { .. }
            | DaemonError::Interrupted { .. } => None,
        }
    }
}

impl From<CallError> for DaemonError {
    fn from(e: CallError) -> DaemonError {
        DaemonError::Call(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_names_its_input_as_the_string_errors_did() {
        let io = || std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let cases: Vec<(DaemonError, &str)> = vec![
            (
                DaemonError::io("cannot listen on node.api = 127.0.0.1:8008", io()),
                "cannot listen on node.api = 127.0.0.1:8008: address in use",
            ),
            (
                DaemonError::sys(
                    "node.data_dir = /x/db0: cannot lock /x/db0.pgha-lock",
                    nix::errno::Errno::EBADF,
                ),
                "node.data_dir = /x/db0: cannot lock /x/db0.pgha-lock: EBADF: Bad file number",
            ),
            (
                DaemonError::setting("api.socket = \"/run/x.sock\"", "exists and is not a socket"),
                "api.socket = \"/run/x.sock\": exists and is not a socket",
            ),
            (
                DaemonError::config(String::from("x.toml: node.name: missing")),
                "x.toml: node.name: missing",
            ),
            (
                DaemonError::Locked {
                    what: "journal.path = /x/db0.journal".into(),
                    holder: "pid 7, node db0".into(),
                    lock: "/x/db0.journal.lock".into(),
                },
                "journal.path = /x/db0.journal is in use by another pgha daemon (pid 7, node db0; \
                 lock file /x/db0.journal.lock): refusing to run a second daemon on it",
            ),
            (
                DaemonError::DataDir {
                    path: "/x/db0".into(),
                    problem: DataDirProblem::NotWritable {
                        user: "postgres".into(),
                    },
                },
                "node.data_dir = \"/x/db0\" is not writable by postgres, the daemon's user",
            ),
            (
                DaemonError::Answer {
                    target: "127.0.0.1:8009".into(),
                    problem: "GET /status answered 500".into(),
                },
                "127.0.0.1:8009: GET /status answered 500",
            ),
            (
                DaemonError::Waited {
                    what: "db1 did not become master".into(),
                    secs: 30,
                    see: Some("/tmp/db1.log".into()),
                },
                "db1 did not become master within 30 s; see /tmp/db1.log",
            ),
            (
                DaemonError::Interrupted {
                    signal: "SIGINT".into(),
                },
                "interrupted by SIGINT: stopping everything it started",
            ),
        ];
        for (e, says) in cases {
            assert_eq!(e.to_string(), says);
        }
    }

    #[test]
    fn a_journal_error_is_named_by_the_journal_and_kept_as_the_source() {
        let source = || JournalError::Exists {
            file: "/x/db0.journal".into(),
        };
        let open = DaemonError::JournalOpen {
            path: "/x/db0.journal".into(),
            source: source(),
        };
        assert!(
            open.to_string()
                .starts_with("journal.path = /x/db0.journal: "),
            "{open}"
        );
        assert!(open.to_string().ends_with(&source().to_string()), "{open}");
        let write = DaemonError::JournalWrite {
            path: "/x/db0.journal".into(),
            source: source(),
        };
        assert!(
            write.to_string().starts_with("journal /x/db0.journal: "),
            "{write}"
        );
        let inner = write.source().expect("the journal's error");
        assert!(inner.downcast_ref::<JournalError>().is_some());
        assert!(DaemonError::NoToken.source().is_none());
        assert!(
            DaemonError::NoToken
                .to_string()
                .contains("[api] token_file")
        );
    }
}
