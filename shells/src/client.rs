//! The operator commands that talk to a running daemon's HTTP API: `status`, `check`,
//! `recover`, `promote`, `pause`, `resume`. The client side is one request per connection
//! (HTTP/1.0, `Connection: close`), bounded by a timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::FileConfig;

/// One request; returns the status code and the body.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(15);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("cannot reach the pgha API at {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("{addr}: reading the reply: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP reply"))?;
    Ok((code, body.to_string()))
}

fn get_status(addr: SocketAddr) -> Result<serde_json::Value, String> {
    let (code, body) = request(addr, "GET", "/status")?;
    if code != 200 {
        return Err(format!("{addr}: GET /status answered {code}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{addr}: bad status JSON: {e}"))
}

fn s<'a>(v: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// `pgha status`: this node and its peers, from their APIs.
pub fn status(cfg: &FileConfig, as_json: bool) -> ExitCode {
    let mut nodes = vec![(cfg.node.name.clone(), cfg.node.api)];
    nodes.extend(cfg.peers.iter().map(|p| (p.name.clone(), p.api)));
    let mut all = Vec::new();
    let mut local_ok = false;
    for (i, (name, api)) in nodes.iter().enumerate() {
        let r = get_status(*api);
        if i == 0 {
            local_ok = r.is_ok();
        }
        all.push((name.clone(), *api, r));
    }
    if as_json {
        let v: Vec<serde_json::Value> = all
            .iter()
            .map(|(name, api, r)| match r {
                Ok(v) => v.clone(),
                Err(e) => serde_json::json!({"name": name, "api": api.to_string(), "error": e}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "{:<10} {:<8} {:<18} {:>3} {:<12} {:>10}  last transition",
            "node", "role", "state", "tl", "lsn", "lag"
        );
        for (name, api, r) in &all {
            match r {
                Ok(v) => println!(
                    "{:<10} {:<8} {:<18} {:>3} {:<12} {:>10}  {}{}",
                    name,
                    text(s(v, &["role"])),
                    text(s(v, &["state"])),
                    text(s(v, &["timeline"])),
                    text(s(v, &["local", "lsn"])),
                    text(s(v, &["lag_bytes"])),
                    text(s(v, &["last_transition", "reason"])),
                    if v["paused"] == serde_json::Value::Bool(true) {
                        " [paused]"
                    } else {
                        ""
                    }
                ),
                Err(e) => println!("{name:<10} unreachable ({api}): {e}"),
            }
        }
    }
    if local_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Which node `pgha check` asks: the one whose postgres is at HAProxy's server address
/// (from its external-check arguments `<proxy_addr> <proxy_port> <server_addr> <server_port>`,
/// else `HAPROXY_SERVER_ADDR` / `HAPROXY_SERVER_PORT`), else this node.
pub fn check_target<'a>(
    cfg: &'a FileConfig,
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<&'a crate::config::Endpoint, String> {
    let server = match args {
        [] => match (env("HAPROXY_SERVER_ADDR"), env("HAPROXY_SERVER_PORT")) {
            (Some(a), Some(p)) if !a.is_empty() => Some((a, p)),
            _ => None,
        },
        [_, _, addr, port] => Some((addr.clone(), port.clone())),
        other => {
            return Err(format!(
                "expected HAProxy's four external-check arguments (<proxy_address> <proxy_port> \
                 <server_address> <server_port>), got {}: {other:?}",
                other.len()
            ));
        }
    };
    let Some((addr, port)) = server else {
        return Ok(&cfg.node);
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("server port {port:?} is not a port number"))?;
    std::iter::once(&cfg.node)
        .chain(cfg.peers.iter())
        .find(|e| e.port == port && (e.host == addr || e.api.ip().to_string() == addr))
        .ok_or_else(|| {
            format!("server {addr}:{port} is not the postgres of any node in the configuration")
        })
}

/// `pgha check primary|replica [HAProxy's arguments]`: 0 only for a healthy master (or
/// streaming replica).
pub fn check(cfg: &FileConfig, want: &str, args: &[String]) -> ExitCode {
    let path = if want == "primary" {
        "/primary"
    } else {
        "/replica"
    };
    let target = match check_target(cfg, args, &|k| std::env::var(k).ok()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("pgha check: {e}");
            return ExitCode::from(2);
        }
    };
    match request(target.api, "GET", path) {
        Ok((200, _)) => ExitCode::SUCCESS,
        Ok((code, _)) => {
            eprintln!(
                "{}: not a healthy {want} ({path} answered {code})",
                target.name
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `pgha recover|promote|pause|resume`: sends the request and prints what the daemon did.
pub fn operator(cfg: &FileConfig, what: &str) -> ExitCode {
    match request(cfg.node.api, "POST", &format!("/{what}")) {
        Ok((code, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if let Some(e) = v.get("error") {
                eprintln!("{}: {what}: {}", cfg.node.name, text(e));
                return ExitCode::from(2);
            }
            let empty = Vec::new();
            let ts = v["transitions"].as_array().unwrap_or(&empty);
            for t in ts {
                println!(
                    "{}: {} -> {}: {}",
                    cfg.node.name,
                    text(&t["from"]),
                    text(&t["to"]),
                    text(&t["reason"])
                );
            }
            if ts.is_empty() {
                println!("{}: {what}: no change", cfg.node.name);
            }
            if code == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_picks_the_node_haproxy_names() {
        let text = crate::config::tests::sample(&std::env::temp_dir());
        let (cfg, _) = crate::config::parse(std::path::Path::new("x.toml"), &text).unwrap();
        let none = |_: &str| None;
        assert_eq!(check_target(&cfg, &[], &none).unwrap().name, "db0");
        let args: Vec<String> = ["0.0.0.0", "5432", "127.0.0.1", "6433"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(check_target(&cfg, &args, &none).unwrap().name, "db1");
        let env = |k: &str| match k {
            "HAPROXY_SERVER_ADDR" => Some("127.0.0.1".to_string()),
            "HAPROXY_SERVER_PORT" => Some("6433".to_string()),
            _ => None,
        };
        assert_eq!(check_target(&cfg, &[], &env).unwrap().name, "db1");
        let bad: Vec<String> = ["a", "b", "127.0.0.1", "99"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = check_target(&cfg, &bad, &none).unwrap_err();
        assert!(e.contains("127.0.0.1:99"), "{e}");
        let e = check_target(&cfg, &bad[..2], &none).unwrap_err();
        assert!(e.contains("four"), "{e}");
        let e = check_target(
            &cfg,
            &[
                bad[0].clone(),
                bad[1].clone(),
                "127.0.0.1".into(),
                "x".into(),
            ],
            &none,
        )
        .unwrap_err();
        assert!(e.contains("\"x\""), "{e}");
    }
}
