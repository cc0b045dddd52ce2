//! One daemon per data directory and per journal: `pgha run` takes an exclusive, non-blocking
//! `flock` on a file pgha owns beside each (`<data_dir>.pgha-lock`, `<journal>.lock`, mode
//! 0600, holding the holder's PID, configuration and API address) before it opens or starts
//! anything, and holds both for its whole life. A second daemon is refused, naming the holder.
//!
//! The locks are `flock`s on descriptors opened close-on-exec, so no program the daemon starts
//! (postgres above all) inherits them: they go with the daemon, however it ends (SIGKILL too).
//! The files stay behind, unlocked; the next daemon locks and rewrites them.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::config::FileConfig;
use crate::error::DaemonError;

/// The locks a running daemon holds; dropping them releases them.
#[derive(Debug)]
pub struct Locks {
    _held: Vec<Flock<File>>,
}

/// `path` with its directory resolved (symbolic links, `..`), so two spellings of one data
/// dir or journal lock the same file. `path` itself need not exist; its parent must. An error
/// names `key`, the setting that gave `path`.
fn resolved(key: &str, path: &Path) -> Result<PathBuf, DaemonError> {
    if let Ok(p) = path.canonicalize() {
        return Ok(p);
    }
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(DaemonError::setting(
            key,
            format!("{}: not a file or directory name", path.display()),
        ));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    parent
        .canonicalize()
        .map(|p| p.join(name))
        .map_err(|e| DaemonError::io(format!("{key}: {}", parent.display()), e))
}

/// `<path><suffix>` (a sibling of `path`, never inside it).
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Takes the exclusive lock on `lock` for `what` (e.g. "node.data_dir = /x/db0"), and
/// writes `holder` into it; or says who holds it.
pub fn take_one(what: &str, lock: &Path, holder: &str) -> Result<Flock<File>, DaemonError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(lock)
        .map_err(|e| {
            DaemonError::io(
                format!("{what}: cannot open its lock file {}", lock.display()),
                e,
            )
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut held) => {
            let written = held
                .set_len(0)
                .and_then(|()| held.write_all(holder.as_bytes()))
                .and_then(|()| held.flush());
            if let Err(e) = written {
                // The lock holds; only the note for a second daemon is missing.
                log::warn!(
                    "lock file {}: cannot record the holder: {e}",
                    lock.display()
                );
            }
            Ok(held)
        }
        Err((_, Errno::EWOULDBLOCK)) => Err(DaemonError::Locked {
            what: what.to_string(),
            holder: holder_of(lock),
            lock: lock.to_path_buf(),
        }),
        Err((_, e)) => Err(DaemonError::sys(
            format!("{what}: cannot lock {}", lock.display()),
            e,
        )),
    }
}

/// What the lock file says about its holder, in words.
fn holder_of(lock: &Path) -> String {
    let mut text = String::new();
    let read = File::open(lock).and_then(|f| f.take(4096).read_to_string(&mut text));
    match read {
        Err(e) => format!("holder unknown: {e}"),
        Ok(_) if text.trim().is_empty() => "holder unknown: it has not written its name yet".into(),
        Ok(_) => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Takes the data dir's and the journal's locks for the daemon of `cfg` (loaded from
/// `config`), in that order.
pub fn take(cfg: &FileConfig, config: &Path) -> Result<Locks, DaemonError> {
    let holder = format!(
        "pid {}, node {}, config {}, API {}\n",
        std::process::id(),
        cfg.node.name,
        config.display(),
        cfg.node.api
    );
    let data_key = format!("node.data_dir = {}", cfg.data_dir.display());
    let journal_key = format!("journal.path = {}", cfg.journal.display());
    let data = resolved(&data_key, &cfg.data_dir)?;
    let journal = resolved(&journal_key, &cfg.journal)?;
    let held = vec![
        take_one(&data_key, &beside(&data, ".pgha-lock"), &holder)?,
        take_one(&journal_key, &beside(&journal, ".lock"), &holder)?,
    ];
    Ok(Locks { _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_naming_the_holder_until_the_first_goes() {
        let dir = std::env::temp_dir().join(format!("pgha-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let lock = dir.join("db0.pgha-lock");
        let first = take_one("node.data_dir = /x/db0", &lock, "pid 1, config /a.toml\n").unwrap();
        // flock conflicts between two open files even in one process.
        let err = take_one("node.data_dir = /x/db0", &lock, "pid 2, config /b.toml\n")
            .expect_err("a second lock")
            .to_string();
        assert!(err.contains("node.data_dir = /x/db0"), "{err}");
        assert!(err.contains("pid 1, config /a.toml"), "{err}");
        assert!(err.contains(lock.to_str().unwrap()), "{err}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(first);
        // Released: the next one takes it and records itself.
        let again = take_one("node.data_dir = /x/db0", &lock, "pid 3\n").unwrap();
        assert_eq!(std::fs::read_to_string(&lock).unwrap(), "pid 3\n");
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_spellings_of_one_path_lock_the_same_file() {
        let dir = std::env::temp_dir().join(format!("pgha-lock-spell-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let a = resolved("node.data_dir", &dir.join("db0")).unwrap();
        let b = resolved("node.data_dir", &dir.join("sub/../db0")).unwrap();
        assert_eq!(a, b);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
