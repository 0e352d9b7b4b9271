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

/// The box's CPU time counters from the aggregate `cpu` line of `/proc/stat` (clock ticks,
/// summed over all cores).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq (guest time is already inside user and nice).
    pub busy: u64,
    /// idle + iowait: time no process wanted a core.
    pub idle: u64,
    /// Time the hypervisor gave this VM's cores to someone else: neither ours nor idle.
    pub steal: u64,
    /// Cores counted (`cpuN` lines).
    pub cores: usize,
}

impl CpuTimes {
    /// Parses the text of `/proc/stat`; `None` when it has no `cpu ` line.
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| f.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal guest guest_nice
        let cores = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        Some(CpuTimes {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3) + at(4),
            steal: at(7),
            cores: cores.max(1),
        })
    }

    /// The counters now.
    pub fn now() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }
}

/// The whole box's CPU over a window, in % of one core like the processes' figures, so that
/// `busy_pct + idle_pct + steal_pct = capacity_pct` (200 % on two cores).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostUsage {
    /// 100 × cores.
    pub capacity_pct: f64,
    /// Cores running anything: the run's processes, the kernel, and everything else on the box.
    pub busy_pct: f64,
    /// Cores with nothing to run.
    pub idle_pct: f64,
    /// Cores taken by the hypervisor (a VM's neighbours).
    pub steal_pct: f64,
}

impl HostUsage {
    /// The window between two readings of the counters (zero when nothing elapsed).
    pub fn between(a: CpuTimes, b: CpuTimes) -> HostUsage {
        let busy = b.busy.saturating_sub(a.busy) as f64;
        let idle = b.idle.saturating_sub(a.idle) as f64;
        let steal = b.steal.saturating_sub(a.steal) as f64;
        let total = busy + idle + steal;
        let capacity = 100.0 * b.cores as f64;
        let share = |x: f64| {
            if total > 0.0 {
                capacity * x / total
            } else {
                0.0
            }
        };
        HostUsage {
            capacity_pct: capacity,
            busy_pct: share(busy),
            idle_pct: share(idle),
            steal_pct: share(steal),
        }
    }

    /// Busy or stolen: the share of the box nothing of ours could have had.
    pub fn used_pct(&self) -> f64 {
        self.busy_pct + self.steal_pct
    }
}

/// Samples the box's CPU over a window (see [`HostUsage`]).
pub struct HostSampler {
    start: Option<CpuTimes>,
}

impl HostSampler {
    pub fn start() -> HostSampler {
        HostSampler {
            start: CpuTimes::now(),
        }
    }

    /// The window since [`HostSampler::start`]; zero when `/proc/stat` is unreadable.
    pub fn finish(self) -> HostUsage {
        match (self.start, CpuTimes::now()) {
            (Some(a), Some(b)) => HostUsage::between(a, b),
            _ => HostUsage::default(),
        }
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
    fn the_box_share_splits_the_cores_into_busy_idle_and_steal() {
        let a = "cpu  100 0 50 1000 10 0 0 0 0 0\ncpu0 50 0 25 500 5 0 0 0 0 0\ncpu1 50 0 25 500 5 0 0 0 0 0\nintr 1\n";
        // 300 ticks later: 240 busy (user 200, system 20, irq 5, softirq 15), 50 idle, 10 steal.
        let b = "cpu  300 0 70 1040 20 5 15 10 7 0\ncpu0 1 0 0 0 0 0 0 0 0 0\ncpu1 1 0 0 0 0 0 0 0 0 0\n";
        let (a, b) = (CpuTimes::parse(a).unwrap(), CpuTimes::parse(b).unwrap());
        assert_eq!(a.cores, 2);
        let h = HostUsage::between(a, b);
        assert_eq!(h.capacity_pct, 200.0);
        assert!((h.busy_pct - 160.0).abs() < 1e-9, "{h:?}");
        assert!((h.idle_pct - 200.0 * 50.0 / 300.0).abs() < 1e-9, "{h:?}");
        assert!((h.steal_pct - 200.0 * 10.0 / 300.0).abs() < 1e-9, "{h:?}");
        assert!((h.busy_pct + h.idle_pct + h.steal_pct - 200.0).abs() < 1e-9);
        assert_eq!(HostUsage::between(b, b).busy_pct, 0.0);
        assert_eq!(CpuTimes::parse("intr 1\n"), None);
        // The real file parses and a real window adds up to the capacity.
        let s = HostSampler::start();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(300) {
            std::hint::black_box(spin.elapsed());
        }
        let h = s.finish();
        assert!(h.capacity_pct >= 100.0, "{h:?}");
        assert!(
            h.busy_pct > 0.0
                && (h.busy_pct + h.idle_pct + h.steal_pct - h.capacity_pct).abs() < 1e-6,
            "{h:?}"
        );
    }

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
