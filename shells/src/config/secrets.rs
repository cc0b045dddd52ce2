//! Secrets in the configuration text: what the journal keeps has them replaced.

/// What replaces a secret in the configuration text the journal keeps.
pub const REDACTED: &str = "<set; not journaled>";

/// `text` with every secret replaced by [`REDACTED`]: `[postgres] password`, and a password
/// inside `[pgbouncer] admin`'s connection string. Text without secrets is kept as written.
pub fn redact(text: &str) -> String {
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return String::new();
    };
    let mut changed = false;
    if let Some(toml::Value::Table(pg)) = table.get_mut("postgres")
        && let Some(pw) = pg.get_mut("password")
    {
        *pw = toml::Value::String(REDACTED.into());
        changed = true;
    }
    if let Some(toml::Value::Table(b)) = table.get_mut("pgbouncer")
        && let Some(toml::Value::String(admin)) = b.get_mut("admin")
    {
        let r = redact_conninfo(admin);
        if r != *admin {
            *admin = r;
            changed = true;
        }
    }
    if !changed {
        return text.to_string();
    }
    format!(
        "# secrets replaced by \"{REDACTED}\"\n{}",
        toml::to_string(&table).unwrap_or_default()
    )
}

/// A libpq connection string with its password replaced: `password=...` (quoted or not) in
/// the keyword form, `user:password@` in the URI form.
pub fn redact_conninfo(conninfo: &str) -> String {
    if let Some(rest) = conninfo
        .strip_prefix("postgresql://")
        .or_else(|| conninfo.strip_prefix("postgres://"))
    {
        let scheme = &conninfo[..conninfo.len() - rest.len()];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!("{scheme}{}:{REDACTED}{}", &rest[..colon], &rest[at..]);
        }
        return conninfo.to_string();
    }
    let b = conninfo.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // One `key = value` pair.
        while i < b.len() && b[i].is_ascii_whitespace() {
            out.push(b[i]);
            i += 1;
        }
        let key_start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &b[key_start..i];
        out.extend_from_slice(key);
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'=') {
            out.push(b[i]);
            i += 1;
        }
        let value_start = i;
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
        }
        i = i.min(b.len());
        if key == b"password" {
            out.extend_from_slice(format!("'{REDACTED}'").as_bytes());
        } else {
            out.extend_from_slice(&b[value_start..i]);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
