//! Network namespaces for the partition fault (after tests/tests/routing/mod.rs and
//! pgha_tests::Net): one namespace per node, each with `eth0` on a bridge of the root
//! namespace, which has 198.51.100.1/24 so the benchmark's clients reach both nodes. Not
//! 192.0.2.0/24: machines of this kind use it for their uplink. The namespaces, their veths
//! and the bridge are deleted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::procs::PG_BIN;

pub const NET: &str = "198.51.100";
/// A MAC address nobody has: a neighbour entry pointing at it blackholes an address.
const NOWHERE: &str = "02:00:00:00:00:99";

use pgha_tests::ip;

/// Why namespaces cannot be used here, if they cannot (not root, no `ip netns`).
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    match ip(&["netns", "list"]) {
        Ok(_) => None,
        Err(e) => Some(format!("`ip netns` is not available ({e})")),
    }
}

#[derive(Debug)]
pub struct Net {
    pub ns: Vec<String>,
    pub hosts: Vec<String>,
    outer: Vec<String>,
    bridge: String,
    /// Neighbour entries in place: (namespace or None for the root, address, device).
    cut: Vec<(Option<String>, String, String)>,
}

impl Net {
    /// `n` namespaces, hosts 198.51.100.10, .11, ...
    pub fn new(n: usize) -> Result<Net, String> {
        let id = std::process::id() % 100_000;
        let bridge = format!("pgbbr{id}");
        let subnet = format!("{NET}.0/24");
        let routes = ip(&["route", "show", &subnet]).unwrap_or_default();
        if !routes.trim().is_empty() && !routes.contains(&bridge) {
            return Err(format!(
                "{subnet} is already in use on this machine ({routes})"
            ));
        }
        let mut net = Net {
            ns: Vec::new(),
            hosts: Vec::new(),
            outer: Vec::new(),
            bridge: bridge.clone(),
            cut: Vec::new(),
        };
        let _ = ip(&["link", "del", &bridge]);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{NET}.1/24"), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for k in 0..n {
            let ns = format!("pgb{id}h{k}");
            let outer = format!("pgbv{id}h{k}");
            let host = format!("{NET}.{}", 10 + k);
            let _ = ip(&["netns", "del", &ns]);
            ip(&["netns", "add", &ns])?;
            net.ns.push(ns.clone());
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &outer,
            ])?;
            net.outer.push(outer.clone());
            ip(&["link", "set", &outer, "master", &bridge, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{host}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            net.hosts.push(host);
        }
        Ok(net)
    }

    fn neigh(&mut self, ns: Option<&str>, addr: &str, dev: &str) -> Result<(), String> {
        let mut args: Vec<&str> = Vec::new();
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        args.extend([
            "neigh",
            "replace",
            addr,
            "lladdr",
            NOWHERE,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
        ip(&args)?;
        self.cut
            .push((ns.map(str::to_string), addr.to_string(), dev.to_string()));
        Ok(())
    }

    /// Cuts host `k`'s link: its packets to every other host and to the root namespace, and
    /// theirs to it, go to a MAC address nobody has (connections hang, nothing is refused).
    pub fn partition(&mut self, k: usize) -> Result<(), String> {
        let (ns, host) = (self.ns[k].clone(), self.hosts[k].clone());
        let root = format!("{NET}.1");
        self.neigh(Some(&ns), &root, "eth0")?;
        let bridge = self.bridge.clone();
        self.neigh(None, &host, &bridge)?;
        for j in (0..self.ns.len()).filter(|j| *j != k) {
            let (other_ns, other) = (self.ns[j].clone(), self.hosts[j].clone());
            self.neigh(Some(&ns), &other, "eth0")?;
            self.neigh(Some(&other_ns), &host, "eth0")?;
        }
        Ok(())
    }

    /// Removes every neighbour entry [`Net::partition`] put in place.
    pub fn heal(&mut self) {
        for (ns, addr, dev) in self.cut.drain(..) {
            let mut args: Vec<&str> = Vec::new();
            if let Some(ns) = &ns {
                args.extend(["-n", ns]);
            }
            args.extend(["neigh", "del", &addr, "dev", &dev]);
            let _ = ip(&args);
        }
    }

    /// A command running `program` in host `k`'s namespace as the postgres user.
    pub fn command_as_postgres(&self, k: usize, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[k], "setpriv"])
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(program);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.heal();
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
        for o in &self.outer {
            let _ = ip(&["link", "del", o]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// A `bin_dir` in `dir` whose `initdb` also trusts 198.51.100.0/24 in `pg_hba.conf`; the
/// other programs are PostgreSQL's own.
pub fn bin_dir_trusting(dir: &Path) -> Result<PathBuf, String> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    for e in std::fs::read_dir(PG_BIN)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        if e.file_name() != "initdb" {
            let _ = std::os::unix::fs::symlink(e.path(), bin.join(e.file_name()));
        }
    }
    let script = format!(
        "#!/bin/sh\n{PG_BIN}/initdb \"$@\" || exit $?\nwhile [ $# -gt 0 ]; do [ \"$1\" = -D ] && d=$2; shift; done\n\
         printf 'host all all {NET}.0/24 trust\\nhost replication all {NET}.0/24 trust\\n' >> \"$d/pg_hba.conf\"\n"
    );
    let initdb = bin.join("initdb");
    std::fs::write(&initdb, script).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&initdb, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(bin)
}
