//! Processes the benchmark starts, killed by PID at the end (also on error or panic), the
//! programs it needs, and small time helpers.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Milliseconds since the epoch, now.
pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

pub use pgha_tests::poll;

pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

pub fn signal(pid: i32, sig: Signal) -> bool {
    kill(Pid::from_raw(pid), sig).is_ok()
}

pub fn alive(pid: i32) -> bool {
    // A zombie still has /proc/PID; its state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// The postmaster PID of a data directory, when one runs.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

/// SIGCONT + SIGKILL of a postmaster, then waits until it and its port are gone.
pub fn kill_postmaster(data_dir: &Path) {
    if let Some(pid) = postmaster_pid(data_dir) {
        signal(pid, Signal::SIGCONT);
        signal(pid, Signal::SIGKILL);
        poll(Duration::from_secs(10), Duration::from_millis(20), || {
            (!alive(pid)).then_some(())
        });
    }
}

/// The postgres OS user's uid and gid.
pub fn postgres_ids() -> Result<(u32, u32), String> {
    let u = nix::unistd::User::from_name("postgres")
        .map_err(|e| e.to_string())?
        .ok_or("no `postgres` OS user (apt-get install postgresql-15)")?;
    Ok((u.uid.as_raw(), u.gid.as_raw()))
}

pub fn chown_postgres(path: &Path) -> Result<(), String> {
    let st = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .map_err(|e| e.to_string())?;
    st.success()
        .then_some(())
        .ok_or_else(|| format!("chown postgres {}", path.display()))
}

/// Whether `program` is on PATH (or is an existing path).
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// What a part of the benchmark needs: (program, Debian package).
pub fn missing(needs: &[(&str, &str)]) -> Vec<String> {
    let mut pkgs: Vec<String> = needs
        .iter()
        .filter(|(prog, _)| !have(prog))
        .map(|(_, pkg)| pkg.to_string())
        .collect();
    pkgs.dedup();
    pkgs
}

/// Every process the benchmark started, with the data directories whose postmasters it
/// owns; all are killed by PID on [`Procs::kill_all`] and on drop.
#[derive(Debug, Default)]
pub struct Procs {
    children: Vec<(String, Child)>,
    data_dirs: Vec<PathBuf>,
    temp_dirs: Vec<PathBuf>,
    pub keep: bool,
}

impl Procs {
    /// Spawns `cmd` (as the postgres user when `as_postgres`), output appended to `log`.
    pub fn spawn(
        &mut self,
        name: &str,
        mut cmd: Command,
        log: &Path,
        as_postgres: bool,
    ) -> Result<i32, String> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let f2 = f.try_clone().map_err(|e| e.to_string())?;
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            cmd.uid(uid).gid(gid).env("HOME", "/var/lib/postgresql");
            cmd.env("USER", "postgres");
        }
        cmd.stdin(Stdio::null()).stdout(f).stderr(f2);
        let child = cmd.spawn().map_err(|e| format!("spawn {name}: {e}"))?;
        let pid = child.id() as i32;
        if as_postgres {
            let _ =
                std::fs::set_permissions(log, std::os::unix::fs::PermissionsExt::from_mode(0o666));
        }
        self.children.push((name.to_string(), child));
        Ok(pid)
    }

    pub fn own_data_dir(&mut self, d: &Path) {
        self.data_dirs.push(d.to_path_buf());
    }

    pub fn own_temp_dir(&mut self, d: &Path) {
        self.temp_dirs.push(d.to_path_buf());
    }

    /// SIGKILL of one process we started (by PID), reaped.
    pub fn kill(&mut self, pid: i32) {
        signal(pid, Signal::SIGCONT);
        signal(pid, Signal::SIGKILL);
        if let Some(i) = self.children.iter().position(|(_, c)| c.id() as i32 == pid) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.wait();
        }
    }

    /// Reaps exited children (so `alive` sees them gone).
    pub fn reap(&mut self) {
        self.children
            .retain_mut(|(_, c)| !matches!(c.try_wait(), Ok(Some(_))));
    }

    pub fn kill_all(&mut self) {
        for (_, c) in &mut self.children {
            signal(c.id() as i32, Signal::SIGCONT);
            let _ = c.kill();
        }
        for (_, mut c) in self.children.drain(..) {
            let _ = c.wait();
        }
        for d in self.data_dirs.drain(..) {
            kill_postmaster(&d);
        }
        for d in self.temp_dirs.drain(..) {
            if self.keep {
                eprintln!("kept {}", d.display());
            } else {
                let _ = std::fs::remove_dir_all(&d);
            }
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// `YYYY-MM-DD HH:MM:SS[.,]fff` (UTC) to milliseconds since the epoch.
pub fn parse_utc_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (date, time) = s.split_once([' ', 'T'])?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once(['.', ',']).unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let frac: String = frac.chars().take_while(char::is_ascii_digit).collect();
    let ms = format!("0.{frac}").parse::<f64>().ok()? * 1000.0;
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) as f64 + ms)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_utc() {
        assert_eq!(
            super::parse_utc_ms("1970-01-02 00:00:01.5"),
            Some(86_401_500.0)
        );
        assert_eq!(
            super::parse_utc_ms("2000-03-01 00:00:00,250"),
            Some(951_868_800_250.0)
        );
    }
}
