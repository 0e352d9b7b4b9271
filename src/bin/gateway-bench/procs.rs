//! Child processes of the benchmark and their CPU/RSS, read from `/proc` (Linux only).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    /// Where its stderr goes (shown when it fails).
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stderr to `log` and stdout piped (read it with [`Proc::first_line`]).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let err = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line the process prints on stdout (our binaries print their URL there),
    /// waiting up to `within`. The rest of stdout is drained in the background so the child
    /// never blocks on a full pipe.
    pub fn first_line(&mut self, within: Duration) -> Result<String> {
        let out = self.child.stdout.take().context("stdout already taken")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        match rx.recv_timeout(within) {
            Ok(Some(Ok(line))) => Ok(line.trim().to_string()),
            _ => bail!(
                "{} printed no first line within {within:?}; its log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 20)
            ),
        }
    }

    /// Fails with the log's tail when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "{} exited ({status}); its log {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            );
        }
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn clock_ticks_per_s() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, i.e. 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_s())
}

/// Resident set size of a process, MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU and memory of one process over a measurement window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// Mean CPU over the window, % of one core.
    pub cpu_pct: f64,
    /// Highest RSS sampled, MiB.
    pub rss_max_mib: f64,
}

/// Samples a process: CPU as the difference of its CPU time over the window, RSS at every
/// [`Sampler::sample`] call (the highest kept), and an RSS series for the RSS and soak sections.
pub struct Sampler {
    pid: u32,
    cpu0: f64,
    t0: Instant,
    rss_max: f64,
    /// (seconds since start, VmRSS MiB), one point per `every` at most: bounded by the
    /// window's length (30 min at 5 s = 361 points).
    series: Vec<(f64, f64)>,
    every: Duration,
}

impl Sampler {
    /// Starts sampling `pid`; the RSS series gets a point at most every `every`.
    pub fn start(pid: u32, every: Duration) -> Sampler {
        let rss = rss_mib(pid).unwrap_or(0.0);
        Sampler {
            pid,
            cpu0: cpu_seconds(pid).unwrap_or(0.0),
            t0: Instant::now(),
            rss_max: rss,
            series: vec![(0.0, rss)],
            every,
        }
    }

    /// Records an RSS sample (call regularly during the window).
    pub fn sample(&mut self) {
        if let Some(r) = rss_mib(self.pid) {
            self.rss_max = self.rss_max.max(r);
            let t = self.t0.elapsed().as_secs_f64();
            let due = self
                .series
                .last()
                .is_none_or(|last| t - last.0 >= self.every.as_secs_f64() - 0.05);
            if due {
                self.series.push((t, r));
            }
        }
    }

    pub fn finish(self) -> Usage {
        self.finish_with_series().0
    }

    /// The usage and the RSS series: (seconds since start, MiB).
    pub fn finish_with_series(mut self) -> (Usage, Vec<(f64, f64)>) {
        self.sample();
        let cpu = cpu_seconds(self.pid).unwrap_or(self.cpu0) - self.cpu0;
        let usage = Usage {
            cpu_pct: 100.0 * cpu / self.t0.elapsed().as_secs_f64(),
            rss_max_mib: self.rss_max,
        };
        (usage, self.series)
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until something listens on `port`.
pub fn wait_for_port(p: &mut Proc, port: u16, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        p.check_alive()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{} did not listen on port {port} within {within:?}", p.name)
}

/// Finds an installed program in the usual places.
pub fn require(binary: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join(binary);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{binary} is not installed: run `.ci/peers.sh install` (benches/run.sh does)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rss_series_keeps_one_point_per_cadence_and_the_max_of_all() {
        let me = std::process::id();
        let mut every_sample = Sampler::start(me, Duration::ZERO);
        let mut hourly = Sampler::start(me, Duration::from_secs(3600));
        for _ in 0..3 {
            every_sample.sample();
            hourly.sample();
        }
        let (usage, series) = every_sample.finish_with_series();
        // The start, three samples and the one `finish` takes.
        assert_eq!(series.len(), 5, "{series:?}");
        assert!(series.windows(2).all(|w| w[0].0 <= w[1].0), "{series:?}");
        let max = series.iter().map(|s| s.1).fold(0.0, f64::max);
        assert!(
            max > 0.0 && usage.rss_max_mib >= max,
            "{usage:?} {series:?}"
        );
        // Within the hour only the starting point.
        assert_eq!(hourly.finish_with_series().1.len(), 1);
    }
}
