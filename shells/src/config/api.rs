//! `[api]`: who may send operator requests, and how (docs/security.md).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, err, read_bounded, sibling};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub(super) token_file: Option<PathBuf>,
    pub(super) socket: Option<PathBuf>,
}

/// `[api]`: who may send operator requests, and how (docs/security.md).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The file holding the bearer token that operator requests over TCP must carry; `None`:
    /// operator requests over TCP are refused.
    pub token_file: Option<PathBuf>,
    /// The local Unix socket for operator requests (its directory is pgha's, mode 0700).
    pub socket: PathBuf,
}

/// The most bytes a token file may have.
pub const MAX_TOKEN_BYTES: u64 = 4096;
/// The longest path a Unix socket address holds (`sun_path` less its terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Checks what can be checked of `[api] token_file` without reading it: a regular file, not
/// readable or writable by group or others, not empty, at most [`MAX_TOKEN_BYTES`]. A file
/// this user may not even look at is left to the daemon, which reads it ([`read_token`]):
/// `pgha check` as another user must still work.
fn check_token_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let key = format!("api.token_file = {:?}", path.display());
    if !path.is_absolute() {
        return Err(format!("{key}: must be an absolute path"));
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(()),
        Err(e) => return Err(format!("{key}: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("{key}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{key}: readable or writable by group or others (mode {mode:o}): the token is a secret, `chmod 600` it"
        ));
    }
    if meta.len() == 0 {
        return Err(format!("{key}: the file is empty"));
    }
    if meta.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "{key}: larger than {MAX_TOKEN_BYTES} bytes (a token is one line)"
        ));
    }
    Ok(())
}

/// Reads the operator token from `[api] token_file` (checked as [`check_token_file`] says,
/// then read): one line of visible ASCII, surrounding white space ignored. Errors name the
/// key and the file.
pub fn read_token(path: &Path) -> Result<String, String> {
    check_token_file(path)?;
    let key = format!("api.token_file = {:?}", path.display());
    let text =
        read_bounded(path, MAX_TOKEN_BYTES, "the token file").map_err(|e| format!("{key}: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{key}: the file holds no token"));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{key}: the token must be one word of visible ASCII (no spaces, no control characters)"
        ));
    }
    Ok(token.to_string())
}

/// `[api]`: the token file's checks, and the socket (by default beside `journal.path`).
pub(super) fn api(file: &Path, raw: &RawApi, journal: &Path) -> Result<ApiSettings, ConfigError> {
    if let Some(t) = &raw.token_file {
        check_token_file(t).map_err(|e| err(file, e))?;
    }
    let (socket, defaulted) = match &raw.socket {
        Some(s) => (s.clone(), false),
        None => (sibling(journal, "d").join("api.sock"), true),
    };
    let key = if defaulted {
        format!(
            "api.socket (by default {:?}, beside journal.path)",
            socket.display()
        )
    } else {
        format!("api.socket = {:?}", socket.display())
    };
    if !socket.is_absolute() {
        return Err(err(file, format!("{key}: must be an absolute path")));
    }
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(err(
            file,
            format!(
                "{key}: longer than the {MAX_SOCKET_PATH} bytes a Unix socket path may have; set [api] socket to a shorter path"
            ),
        ));
    }
    if socket.parent().is_none_or(|p| p.as_os_str().is_empty()) {
        return Err(err(file, format!("{key}: names no directory")));
    }
    Ok(ApiSettings {
        token_file: raw.token_file.clone(),
        socket,
    })
}
