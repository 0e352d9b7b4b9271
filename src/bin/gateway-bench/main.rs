//! `gateway-bench`: end-to-end benchmark of aas-gateway beside two baselines on the same
//! simulator (see `benches/README.md`; one command: `bash benches/run.sh`).
//!
//! Per case (N scale variables changing every M ms) it starts the release `opcua-sim` as a
//! separate process, then in turn:
//! 1. the gateway (`aas-gateway run`, separate process, generated AAS + mapping for N elements,
//!    both sinks on) with its own mosquitto and VictoriaMetrics; it measures the gateway's CPU/RSS
//!    from `/proc`, counts every value once in both sinks (MQTT: counting subscriber with a
//!    persistent session; ILP: rows in VictoriaMetrics), compares with what the simulator produced
//!    (N × ticks) and measures latency source timestamp → arrival at the subscriber;
//! 2. the bare async-opcua client (`examples/scale_client`, the ceiling), counting notifications;
//! 3. Node-RED + node-red-contrib-opcua publishing to mosquitto (what integrators use today).
//!
//! A maximum-throughput mode raises the rate until the gateway no longer holds it with zero loss.
//! The Markdown report goes to stdout and `--out`.

mod analysis;
mod bound;
mod nodered;
mod peers;
mod procs;
mod prom;
mod scenario;
mod subscriber;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use peers::{Mosquitto, Victoria};
use procs::{HostSampler, HostUsage, Proc, Sampler, Usage};
use subscriber::{now_nanos, Subscriber};

#[derive(Parser, Debug, Clone)]
// A flag given twice takes the last value: `benches/run.sh` passes its defaults first and the
// caller's arguments after them.
#[command(
    name = "gateway-bench",
    about = "End-to-end benchmark of aas-gateway",
    args_override_self = true
)]
struct Args {
    /// Cases as ITEMS@INTERVAL_MS, comma-separated.
    #[arg(long, default_value = "10000@1000,50000@1000,100000@1000,10000@100")]
    cases: String,
    /// Measurement window per gateway run, seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Measurement window of each maximum-rate step, seconds.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// After the window, wait at most this long for its values; a gateway still behind then is
    /// reported as behind (not held), with what had not arrived yet.
    #[arg(long, default_value_t = 30)]
    drain_cap_s: u64,
    /// Measurement window of each baseline, seconds.
    #[arg(long, default_value_t = 20)]
    baseline_seconds: u64,
    /// The gateway binary; repeat as LABEL=PATH to compare builds in the same run.
    #[arg(long = "gateway", value_name = "[LABEL=]PATH")]
    gateways: Vec<String>,
    /// The simulator binary (default: next to this binary).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
    /// Run the simulator inside this process instead (CI smoke test: no timing figures).
    #[arg(long)]
    sim_in_process: bool,
    /// The bare async-opcua client (default: examples/scale_client next to this binary).
    #[arg(long)]
    client_bin: Option<PathBuf>,
    /// MQTT message layouts to run each gateway with (`mqtt.message_per`), comma-separated;
    /// the maximum-throughput search uses the last.
    #[arg(long, default_value = "value,submodel")]
    mqtt_message_per: String,
    /// Cases above this many values/s skip the one-message-per-value layout: on a 2-core box
    /// the broker cannot take 100k messages/s beside everything else, and such a run only
    /// measures a growing backlog (for a minute per case). 0 = no limit.
    #[arg(long, default_value_t = 50_000)]
    per_value_max_rate: u64,
    /// Skip the bare-client baseline.
    #[arg(long)]
    no_bare: bool,
    /// Rounds of each case: every gateway build and the bare client run once per round, in
    /// turn, and the comparison with the baselines takes the median of the rounds (with their
    /// range). A single run's CPU moves by about a point at 100k values/s with what else the
    /// box does (the ILP server's merges, the simulator): one run can put the ratio on either
    /// side of a target.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Directory with Node-RED installed (benches/node-red); omit to skip that baseline.
    #[arg(long)]
    node_red: Option<PathBuf>,
    /// Largest item count Node-RED is run with (it loses whole publish cycles beyond ~5k/s).
    #[arg(long, default_value_t = 10_000)]
    node_red_max_items: usize,
    /// Maximum-throughput mode: items, then intervals (ms) tried in order until one fails
    /// (0 = off).
    #[arg(long)]
    max_items: Option<usize>,
    /// (100k @ 1 s is already a case; the search starts above it and reaches 400k values/s.)
    #[arg(long, default_value = "800,667,500,400,333,250")]
    max_intervals: String,
    /// RSS by item count: item counts, comma-separated (empty = off), each run with the
    /// simulator changing every `--rss-interval-ms` and the last MQTT layout.
    #[arg(long, default_value = "")]
    rss_items: String,
    /// Change interval of the RSS runs, ms.
    #[arg(long, default_value_t = 1000)]
    rss_interval_ms: u64,
    /// Steady flow after the initial values arrived before RSS is read, seconds (the RSS is the
    /// mean of the last samples of this window).
    #[arg(long, default_value_t = 20)]
    rss_settle_s: u64,
    /// Soak: minutes of steady flow with the gateway's RSS sampled every 5 s (0 = off).
    #[arg(long, default_value_t = 0)]
    soak_minutes: u64,
    /// Items of the soak.
    #[arg(long, default_value_t = 100_000)]
    soak_items: usize,
    /// Change interval of the soak, ms.
    #[arg(long, default_value_t = 1000)]
    soak_interval_ms: u64,
    /// The gateway's histogram of its added latency per sink, read from its `/metrics` (another
    /// histogram with a `sink` label, e.g. `aas_gateway_end_to_end_latency_seconds`, checks the
    /// scraping against a build without it).
    #[arg(long, default_value = prom::ADDED_LATENCY)]
    added_latency_metric: String,
    /// Steady flow after the initial values arrived before the soak's window starts, seconds (the
    /// RSS of the first minutes of a process includes one-off growth: allocator arenas, buffers
    /// reaching their working size, a backlog from the start).
    #[arg(long, default_value_t = 60)]
    soak_warmup_s: u64,
    /// Where the soak's RSS samples go as CSV (default: soak-rss.csv next to `--out`).
    #[arg(long)]
    soak_csv: Option<PathBuf>,
    /// The brokers' `set_tcp_nodelay` (mosquitto's default is false). With false, mosquitto's
    /// Nagle holds a PUBACK while the previous one waits for the gateway's delayed ACK (up to
    /// 40 ms): the last windows of every burst are confirmed that much later.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    broker_tcp_nodelay: bool,
    /// Write the Markdown report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Exit with an error unless every gateway run delivered every value to both sinks.
    #[arg(long)]
    assert_zero_loss: bool,
}

/// One measured gateway run.
#[derive(Debug, Clone, Default)]
struct GatewayRun {
    label: String,
    n: usize,
    interval_ms: u64,
    /// Ticks (change cycles) in the window, and values the simulator produced in them.
    ticks: u64,
    produced: u64,
    mqtt_values: u64,
    mqtt_duplicates: u64,
    ilp_values: u64,
    ilp_duplicates: u64,
    gateway: Usage,
    /// The simulator's process; `None` when it ran inside the bench (`--sim-in-process`).
    sim: Option<Usage>,
    /// VictoriaMetrics, the ILP server of the run.
    ilp_server: Usage,
    /// mosquitto.
    broker: Usage,
    /// The bench process itself: the counting MQTT subscriber is a task of it.
    bench: Usage,
    /// The whole box over the window: the run's processes, the kernel and any other work.
    host: HostUsage,
    /// Length of the measurement window, seconds.
    window_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// Seconds after the window until all of it (and a complete tick after it) arrived over MQTT:
    /// how far delivery lags.
    drain_s: f64,
    max_outbox_depth: u64,
    unreadable: u64,
    /// The window's values had not all arrived `--drain-cap-s` after it: "lost" counts values
    /// still on their way (e.g. in the outbox), not values gone.
    behind: bool,
    /// The gateway's RSS over the window: (seconds since its start, MiB).
    rss_series: Vec<(f64, f64)>,
    /// Gateway-added latency per sink over the window (from its `/metrics`): p50, p99 and the
    /// number of values observed. Empty when the gateway build does not expose it.
    added: BTreeMap<String, AddedLatency>,
}

/// p50, p99 and the number of values of one sink's gateway-added latency in a window.
type AddedLatency = (Option<prom::Quantile>, Option<prom::Quantile>, f64);

/// RSS samples averaged for the steady state at the end of an RSS run (10 × 500 ms = 5 s).
const STEADY_SAMPLES: usize = 10;

impl GatewayRun {
    fn lost_mqtt(&self) -> i64 {
        self.produced as i64 - self.mqtt_values as i64
    }
    fn lost_ilp(&self) -> i64 {
        self.produced as i64 - self.ilp_values as i64
    }
    fn rate(&self) -> f64 {
        self.n as f64 * 1000.0 / self.interval_ms as f64
    }
    fn zero_loss(&self) -> bool {
        self.ticks > 0 && self.lost_mqtt() == 0 && self.lost_ilp() == 0 && self.unreadable == 0
    }
    /// Held the rate: nothing lost and the tail of the window arrived soon after it (lag did
    /// not build up).
    fn held(&self) -> bool {
        self.zero_loss() && self.drain_s <= 10.0 && !self.behind
    }
    /// Values per second the simulator actually produced in the window (its timer delays
    /// ticks when it gets too little CPU: it never skips one, so a busy box makes it produce
    /// less than the nominal rate). 0 when the window's length is unknown.
    fn produced_rate(&self) -> f64 {
        if self.window_s > 0.0 {
            self.produced as f64 / self.window_s
        } else {
            0.0
        }
    }
    /// The simulator produced at least [`bound::SIM_PACE`] of the nominal rate (unknown
    /// window: assumed).
    fn sim_kept_pace(&self) -> bool {
        self.window_s <= 0.0 || self.produced_rate() >= bound::SIM_PACE * self.rate()
    }
    /// A maximum-rate step held: [`GatewayRun::held`] at the rate it names, i.e. the simulator
    /// really offered it (a step where it produced half the nominal rate proves nothing about
    /// the nominal one).
    fn held_at_rate(&self) -> bool {
        self.held() && self.sim_kept_pace()
    }
    /// What the rule of [`bound::explain`] reads from this run.
    fn step_figures(&self, drain_cap_s: u64) -> bound::StepFigures {
        bound::StepFigures {
            rate: self.rate(),
            // An unknown window (0 s) is assumed to have held the pace, as in `sim_kept_pace`.
            produced_rate: if self.window_s > 0.0 {
                self.produced_rate()
            } else {
                self.rate()
            },
            held: self.held_at_rate(),
            cpu: bound::RunCpu {
                gateway: self.gateway.cpu_pct,
                simulator: self.sim.map(|u| u.cpu_pct),
                ilp_server: self.ilp_server.cpu_pct,
                broker: self.broker.cpu_pct,
                bench: self.bench.cpu_pct,
            },
            host: self.host,
            not_arrived_mqtt: self.lost_mqtt(),
            not_arrived_ilp: self.lost_ilp(),
            ticks: self.ticks,
            drain_s: self.drain_s,
            behind: self.behind,
            drain_cap_s,
        }
    }

    /// The "lost MQTT / ILP" cell of the report.
    fn lost_cell(&self, drain_cap_s: u64) -> String {
        if self.behind && self.lost_mqtt() == 0 && self.lost_ilp() == 0 {
            format!("0 / 0, but behind: no later tick had arrived {drain_cap_s} s after the window")
        } else if self.behind {
            format!(
                "behind: {} / {} not yet arrived {drain_cap_s} s after the window",
                self.lost_mqtt(),
                self.lost_ilp()
            )
        } else {
            format!("{} / {}", self.lost_mqtt(), self.lost_ilp())
        }
    }
}

/// One baseline run (bare client or Node-RED).
#[derive(Debug, Clone, Default)]
struct BaselineRun {
    delivered_per_s: f64,
    delivered_pct: f64,
    usage: Usage,
    note: String,
}

#[derive(Default)]
struct CaseResult {
    /// Every gateway run of the case, round after round.
    runs: Vec<GatewayRun>,
    /// The bare client, once per round.
    bare: Vec<BaselineRun>,
    node_red: Option<BaselineRun>,
}

/// A run's label without its round (`"MQTT per submodel (round 2)"` → `"MQTT per submodel"`).
fn without_round(label: &str) -> &str {
    label
        .rsplit_once(" (round ")
        .map_or(label, |(base, _)| base)
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// CPU of a baseline comparison: the one run's, or the median of the rounds with their range.
fn cpu_cell(cpu: &[f64]) -> String {
    match cpu {
        [one] => format!("{one:.1} %"),
        _ => {
            let lo = cpu.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = cpu.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!(
                "{:.1} % (median of {}: {lo:.1}–{hi:.1})",
                median(cpu.to_vec()),
                cpu.len()
            )
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

fn exe_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
}

async fn run(args: Args) -> Result<()> {
    let gateways: Vec<(String, PathBuf)> = if args.gateways.is_empty() {
        vec![("gateway".into(), exe_dir().join("aas-gateway"))]
    } else {
        args.gateways
            .iter()
            .map(|g| match g.split_once('=') {
                Some((l, p)) => (l.to_string(), PathBuf::from(p)),
                None => ("gateway".to_string(), PathBuf::from(g)),
            })
            .collect()
    };
    for (_, p) in &gateways {
        if !p.is_file() {
            bail!(
                "gateway binary {} not found (cargo build --release)",
                p.display()
            );
        }
    }
    // Every build in every MQTT layout: (label, binary, message_per).
    let modes: Vec<&str> = args
        .mqtt_message_per
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if let Some(bad) = modes.iter().find(|m| !["value", "submodel"].contains(m)) {
        bail!("--mqtt-message-per: {bad:?} is neither value nor submodel");
    }
    let gateways: Vec<(String, PathBuf, &str)> = gateways
        .iter()
        .flat_map(|(label, bin)| {
            modes.iter().map(move |&mode| {
                let label = if label == "gateway" {
                    format!("MQTT per {mode}")
                } else {
                    format!("{label}, MQTT per {mode}")
                };
                (label, bin.clone(), mode)
            })
        })
        .collect();
    if gateways.is_empty() {
        bail!("--mqtt-message-per names no layout");
    }
    let load_before = loadavg();
    let started = Instant::now();
    let mut report = String::new();
    let mut failures = Vec::new();

    let mut cases = Vec::new();
    for c in args.cases.split(',').filter(|c| !c.trim().is_empty()) {
        let (n, m) = c
            .trim()
            .split_once('@')
            .context("a case is ITEMS@INTERVAL_MS")?;
        cases.push((n.parse::<usize>()?, m.parse::<u64>()?));
    }
    let mut results = Vec::new();
    for &(n, interval_ms) in &cases {
        eprintln!("== case {n} items @ {interval_ms} ms");
        let sim = Sim::start(&args, n, interval_ms).await?;
        let mut case = CaseResult::default();
        let rate = n as u64 * 1000 / interval_ms.max(1);
        let rounds = args.rounds.max(1);
        for round in 1..=rounds {
            for (label, bin, mode) in &gateways {
                if *mode == "value" && args.per_value_max_rate > 0 && rate > args.per_value_max_rate
                {
                    if round == 1 {
                        eprintln!(
                            "   {label}: skipped above {} values/s (--per-value-max-rate)",
                            args.per_value_max_rate
                        );
                    }
                    continue;
                }
                let label = match rounds {
                    1 => label.clone(),
                    _ => format!("{label} (round {round})"),
                };
                let r = run_gateway(&RunSpec::new(
                    &args,
                    (&label, bin, mode),
                    &sim,
                    n,
                    interval_ms,
                    args.seconds,
                ))
                .await?;
                eprintln!("   {}", summary(&r));
                if !r.zero_loss() {
                    failures.push(format!("{}: {}", label, summary(&r)));
                }
                case.runs.push(r);
            }
            if !args.no_bare {
                let bin = args
                    .client_bin
                    .clone()
                    .unwrap_or_else(|| exe_dir().join("examples").join("scale_client"));
                let b = run_bare(&bin, &sim.url, n, interval_ms, args.baseline_seconds).await?;
                eprintln!("   bare client: {b:?}");
                case.bare.push(b);
            }
        }
        if let Some(dir) = &args.node_red {
            if n <= args.node_red_max_items {
                match nodered::run(
                    dir,
                    &sim.url,
                    n,
                    interval_ms,
                    args.baseline_seconds,
                    args.broker_tcp_nodelay,
                )
                .await
                {
                    Ok(b) => {
                        eprintln!("   Node-RED: {b:?}");
                        case.node_red = Some(b)
                    }
                    Err(e) => {
                        eprintln!("   Node-RED failed: {e:#}");
                        case.node_red = Some(BaselineRun {
                            note: format!("failed: {e}"),
                            ..Default::default()
                        })
                    }
                }
            }
        }
        sim.stop().await;
        results.push(((n, interval_ms), case));
    }

    // The extra modes run the last layout given (MQTT per submodel by default).
    let (label, bin, mode) = &gateways[gateways.len() - 1];
    let mut max_runs = Vec::new();
    if let Some(n) = args.max_items.filter(|&n| n > 0) {
        for m in args.max_intervals.split(',') {
            let interval_ms: u64 = m
                .trim()
                .parse()
                .with_context(|| format!("--max-intervals: {m:?} is not a number of ms"))?;
            eprintln!("== max throughput: {n} items @ {interval_ms} ms");
            let sim = Sim::start(&args, n, interval_ms).await?;
            let r = run_gateway(&RunSpec::new(
                &args,
                (label, bin, mode),
                &sim,
                n,
                interval_ms,
                args.max_seconds,
            ))
            .await?;
            sim.stop().await;
            let held = r.held_at_rate();
            eprintln!(
                "   {} held={held} (simulator produced {:.0} values/s)",
                summary(&r),
                r.produced_rate()
            );
            max_runs.push(r);
            if !held {
                break;
            }
        }
    }

    // RSS by item count: each N until its initial values arrived, then `--rss-settle-s` of
    // steady flow; the RSS is read at the end of that window.
    let mut rss_runs = Vec::new();
    for n in parse_counts(&args.rss_items, "--rss-items")? {
        let interval_ms = args.rss_interval_ms;
        eprintln!("== RSS: {n} items @ {interval_ms} ms");
        let sim = Sim::start(&args, n, interval_ms).await?;
        let r = run_gateway(&RunSpec::new(
            &args,
            (label, bin, mode),
            &sim,
            n,
            interval_ms,
            args.rss_settle_s,
        ))
        .await?;
        sim.stop().await;
        eprintln!(
            "   {} steady RSS {:?} MiB",
            summary(&r),
            analysis::steady_mean(&r.rss_series, STEADY_SAMPLES)
        );
        rss_runs.push(r);
    }

    // Soak: one long window, the RSS sampled every 5 s.
    let mut soak = None;
    if args.soak_minutes > 0 {
        let (n, interval_ms) = (args.soak_items, args.soak_interval_ms);
        eprintln!(
            "== soak: {n} items @ {interval_ms} ms for {} min",
            args.soak_minutes
        );
        let sim = Sim::start(&args, n, interval_ms).await?;
        let r = run_gateway(&RunSpec {
            rss_every: Duration::from_secs(5),
            settle: Duration::from_secs(args.soak_warmup_s),
            ..RunSpec::new(
                &args,
                (label, bin, mode),
                &sim,
                n,
                interval_ms,
                args.soak_minutes * 60,
            )
        })
        .await?;
        sim.stop().await;
        eprintln!("   {}", summary(&r));
        if !r.zero_loss() {
            failures.push(format!("soak: {}", summary(&r)));
        }
        let csv = args
            .soak_csv
            .clone()
            .or_else(|| args.out.as_ref().map(|o| o.with_file_name("soak-rss.csv")));
        if let Some(csv) = &csv {
            if let Some(dir) = csv.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(csv, analysis::series_csv(&r.rss_series))
                .with_context(|| format!("writing {}", csv.display()))?;
            eprintln!("soak RSS samples written to {}", csv.display());
        }
        soak = Some((r, csv));
    }

    let load_after = loadavg();
    write_report(
        &mut report,
        &args,
        &Sections {
            cases: &results,
            max_runs: &max_runs,
            rss_runs: &rss_runs,
            soak: soak.as_ref().map(|(r, csv)| (r, csv.as_deref())),
        },
        &load_before,
        &load_after,
        started.elapsed(),
    );
    println!("{report}");
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, &report)?;
        eprintln!("report written to {}", out.display());
    }
    if args.assert_zero_loss && !failures.is_empty() {
        bail!("values were lost:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// Item counts such as `10000,50000` (empty = none); a bad one is an error naming the flag.
fn parse_counts(list: &str, flag: &str) -> Result<Vec<usize>> {
    list.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            c.parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .with_context(|| format!("{flag}: {c:?} is not a positive item count"))
        })
        .collect()
}

fn summary(r: &GatewayRun) -> String {
    format!(
        "{} {}@{}ms: produced {} mqtt {} (dup {}) ilp {} (dup {}) cpu {:.1}% rss {:.0} MiB p50 {:?} p99 {:?} drain {:.1}s outbox max {} added p50/p99 ms {}",
        r.label, r.n, r.interval_ms, r.produced, r.mqtt_values, r.mqtt_duplicates, r.ilp_values,
        r.ilp_duplicates, r.gateway.cpu_pct, r.gateway.rss_max_mib, r.p50_ms, r.p99_ms, r.drain_s,
        r.max_outbox_depth, added_cell(&r.added)
    ) + &format!(
        "; sim cpu {} ilp server cpu {:.1}% broker cpu {:.1}% bench cpu {:.1}% box busy {}",
        r.sim.map_or("in bench".into(), |u| format!("{:.1}%", u.cpu_pct)),
        r.ilp_server.cpu_pct,
        r.broker.cpu_pct,
        r.bench.cpu_pct,
        host_cell(&r.host)
    )
}

/// The simulator of one case: a separate process, or in this one for the smoke test.
struct Sim {
    url: String,
    proc: Option<Proc>,
    inproc: Option<opcua_sim::Simulator>,
    _dir: TempDir,
}

impl Sim {
    async fn start(args: &Args, n: usize, interval_ms: u64) -> Result<Sim> {
        let dir = TempDir::new("sim")?;
        if args.sim_in_process {
            let sim = opcua_sim::Simulator::start(opcua_sim::SimOptions {
                port: 0,
                seed: SIM_SEED,
                scale: n,
                scale_interval_ms: interval_ms,
                pki_dir: dir.path.join("pki"),
                ..Default::default()
            })
            .await?;
            return Ok(Sim {
                url: sim.endpoint_url(),
                proc: None,
                inproc: Some(sim),
                _dir: dir,
            });
        }
        let bin = args
            .sim_bin
            .clone()
            .unwrap_or_else(|| exe_dir().join("opcua-sim"));
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", "0", "--scale", &n.to_string()])
            .args(["--seed", &SIM_SEED.to_string()])
            .args(["--interval-ms", &interval_ms.to_string()])
            .arg("--pki-dir")
            .arg(dir.path.join("pki"));
        let mut p = Proc::spawn("opcua-sim", cmd, &dir.path.join("sim.log"))?;
        let url = p.first_line(Duration::from_secs(120))?;
        Ok(Sim {
            url,
            proc: Some(p),
            inproc: None,
            _dir: dir,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    async fn stop(mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(10));
        }
        if let Some(s) = self.inproc.take() {
            s.stop().await;
        }
    }
}

/// A scratch directory removed on drop (the binary cannot use dev-dependencies such as tempfile).
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(what: &str) -> Result<TempDir> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "aas-bench-{}-{what}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("BENCH_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One gateway run: which build, which case, how long.
struct RunSpec<'a> {
    label: &'a str,
    bin: &'a Path,
    /// `mqtt.message_per`: `value` or `submodel`.
    message_per: &'a str,
    sim_url: &'a str,
    n: usize,
    interval_ms: u64,
    /// The measurement window, seconds.
    seconds: u64,
    /// See `--drain-cap-s`.
    drain_cap: Duration,
    /// The simulator's process (its CPU is reported beside), when it runs as one.
    sim_pid: Option<u32>,
    /// Cadence of the gateway's RSS series ([`GatewayRun::rss_series`]).
    rss_every: Duration,
    /// See `--added-latency-metric`.
    added_metric: &'a str,
    /// The broker's `set_tcp_nodelay` (`--broker-tcp-nodelay`).
    broker_nodelay: bool,
    /// Steady flow between the initial values' arrival and the window.
    settle: Duration,
}

impl<'a> RunSpec<'a> {
    /// A run of gateway `(label, bin, message_per)` against `sim` with N items changing every
    /// `interval_ms`, measured for `seconds`: RSS every 500 ms, 3 s of flow before the window.
    fn new(
        args: &'a Args,
        (label, bin, message_per): (&'a str, &'a Path, &'a str),
        sim: &'a Sim,
        n: usize,
        interval_ms: u64,
        seconds: u64,
    ) -> RunSpec<'a> {
        RunSpec {
            label,
            bin,
            message_per,
            sim_url: &sim.url,
            n,
            interval_ms,
            seconds,
            drain_cap: Duration::from_secs(args.drain_cap_s),
            sim_pid: sim.pid(),
            rss_every: Duration::from_millis(500),
            settle: Duration::from_secs(3),
            added_metric: &args.added_latency_metric,
            broker_nodelay: args.broker_tcp_nodelay,
        }
    }
}

/// Runs the gateway on one case and measures it: the warm-up (every item's initial value
/// arrived, then 3 s), the window (CPU, RSS, gateway-added latency), then the drain and the loss
/// accounting in both sinks. The cases, the maximum-rate steps, the RSS runs and the soak all
/// run through here.
async fn run_gateway(spec: &RunSpec<'_>) -> Result<GatewayRun> {
    let &RunSpec {
        label,
        bin,
        message_per,
        sim_url,
        n,
        interval_ms,
        seconds,
        drain_cap,
        sim_pid,
        rss_every,
        added_metric,
        settle,
        broker_nodelay,
    } = spec;
    let dir = TempDir::new("gw")?;
    let mosquitto = Mosquitto::start(&dir.path, broker_nodelay)?;
    let vm = Victoria::start(&dir.path)?;
    let sub = Subscriber::start(
        mosquitto.port,
        "bench-counter",
        &format!("{}/#", scenario::TOPIC_PREFIX),
    )
    .await?;
    let cfg = scenario::write_config(
        &dir.path,
        &scenario::GatewaySetup {
            n,
            interval_ms,
            endpoint: sim_url,
            mqtt_port: mosquitto.port,
            ilp_conf: &vm.ilp_conf(),
            message_per,
        },
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("-c").arg(&cfg);
    let log = dir.path.join("gateway.log");
    let t_start = Instant::now();
    let mut gw = Proc::spawn("aas-gateway", cmd, &log)?;
    // The first line is the API URL; `/metrics` is on the same listener.
    let api_url = gw.first_line(Duration::from_secs(300))?;
    eprintln!(
        "   {label}: started in {:.1} s",
        t_start.elapsed().as_secs_f64()
    );

    // Warm-up: the initial values of all N items, then `settle` of steady flow.
    let deadline = Instant::now() + Duration::from_secs(300);
    while sub.messages() < n as u64 {
        gw.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "{label}: only {} of {n} initial values arrived within 300 s; log:\n{}",
                sub.messages(),
                procs::tail(&log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(settle).await;

    let window_start = now_nanos();
    let window_end = window_start + seconds as i64 * 1_000_000_000;
    sub.counts.lock().expect("counts").window = (window_start, window_end);
    let added_before = prom::scrape_histograms(&api_url, added_metric);
    let mut gw_sampler = Sampler::start(gw.pid(), rss_every);
    // Every other process of the run and the box as a whole over the same window: at high rates
    // the simulator and the peers share the cores with the gateway, and the report says who
    // took them.
    let mut sim_sampler = sim_pid.map(|p| Sampler::start(p, rss_every));
    let mut vm_sampler = Sampler::start(vm.pid(), rss_every);
    let mut broker_sampler = Sampler::start(mosquitto.pid(), rss_every);
    let mut bench_sampler = Sampler::start(std::process::id(), rss_every);
    let host_sampler = HostSampler::start();
    let t0 = Instant::now();
    let mut progress = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        gw.check_alive()?;
        gw_sampler.sample();
        if let Some(s) = sim_sampler.as_mut() {
            s.sample();
        }
        for s in [&mut vm_sampler, &mut broker_sampler, &mut bench_sampler] {
            s.sample();
        }
        if progress.elapsed() >= Duration::from_secs(60) {
            // Long windows (the soak) say they are alive.
            progress = Instant::now();
            eprintln!(
                "   {label}: {:.0} of {seconds} s, RSS {:.0} MiB",
                t0.elapsed().as_secs_f64(),
                procs::rss_mib(gw.pid()).unwrap_or(0.0)
            );
        }
    }
    let (gateway, rss_series) = gw_sampler.finish_with_series();
    let sim_usage = sim_sampler.map(Sampler::finish);
    let (ilp_server, broker, bench) = (
        vm_sampler.finish(),
        broker_sampler.finish(),
        bench_sampler.finish(),
    );
    let host = host_sampler.finish();
    let added = prom::added_quantiles(
        &added_before,
        &prom::scrape_histograms(&api_url, added_metric),
    );

    // Drain: wait until the window's ticks are complete over MQTT (or nothing moves for 15 s).
    // Expected is what changed: a tick leaves ~1 in 10,000 variables unchanged (4 decimals),
    // and OPC UA reports changes only, so N per tick would call those "lost".
    let step = interval_ms as i64 * 1_000_000;
    let window_done = Instant::now();
    let mut last = (0u64, Instant::now());
    // Changes per simulator tick k, computed once each (a soak has thousands of ticks of
    // 100k items: recomputing them all whenever the window's last tick moves would take long).
    let mut changes: HashMap<u64, u64> = HashMap::new();
    let mut behind = false;
    let (mqtt_values, ticks, produced) = loop {
        let (got, first_last, k_first, after_window) = {
            let c = sub.counts.lock().expect("counts");
            let ticks = c.ticks(window_start, window_end, n);
            // A complete tick after the window: delivery is in order per element, so
            // everything of the window that is coming has come (a lagging gateway takes long).
            let after = c.ticks(window_end, i64::MAX, n).first().copied();
            match (ticks.first(), ticks.last()) {
                (Some(&a), Some(&b)) => {
                    let end = after.unwrap_or(b + step);
                    let samples = |t: i64| c.samples.get(&t).map(Vec::as_slice).unwrap_or(&[]);
                    // Both ends numbered from their values, not the last from the time span:
                    // a simulator that fell behind (its timer delays late ticks, it never skips
                    // one) made fewer ticks than the span says, and counting by time would
                    // credit it with ticks it never made, reported as missed.
                    let k = tick_number(samples(a), 1)
                        .and_then(|k0| Some((k0, tick_number(samples(b), k0)?)));
                    (c.values_of_ticks(a, end), Some((a, b)), k, after)
                }
                _ => (0, None, None, after),
            }
        };
        let (ticks, produced) = match (first_last, k_first) {
            (Some(_), Some((k0, k1))) => {
                // Whole ticks missing between a and b are counted too: k runs over all of them.
                let produced: u64 = (k0..=k1)
                    .map(|k| *changes.entry(k).or_insert_with(|| changes_in_tick(n, k)))
                    .sum();
                (k1 - k0 + 1, produced)
            }
            _ => (0, 0),
        };
        if produced > 0 && after_window.is_some() && got >= produced {
            break (got, ticks, produced);
        }
        if window_done.elapsed() > drain_cap {
            behind = true;
            eprintln!(
                "   {label}: still behind {drain_cap:?} after the window; not waiting longer"
            );
            break (got, ticks, produced);
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(15) {
            if produced == 0 {
                // Recorded as a run that did not hold the rate (zero_loss needs ticks > 0).
                eprintln!("   {label}: no complete tick of the window arrived: far behind");
            }
            break (got, ticks, produced);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drain_s = window_done.elapsed().as_secs_f64();
    let (p50_ms, p99_ms, mqtt_duplicates, unreadable, ticks_seen) = {
        let c = sub.counts.lock().expect("counts");
        (
            c.latency_percentile(0.5),
            c.latency_percentile(0.99),
            c.duplicates,
            c.unreadable,
            c.ticks(window_start, window_end, n),
        )
    };
    if std::env::var_os("BENCH_DEBUG").is_some() {
        let c = sub.counts.lock().expect("counts");
        let mut rel: Vec<_> = c
            .per_tick
            .iter()
            .filter(|(t, _)| **t >= window_start - step && **t < window_end + step)
            .map(|(t, v)| ((t - window_start) / 1_000_000, *v))
            .collect();
        rel.sort_unstable();
        eprintln!("   timestamps around the window (ms after start, values): {rel:?}");
    }

    // ILP rows in the same ticks, per series clamped to the tick count (duplicates apart).
    let (ilp_values, ilp_duplicates) = match (ticks_seen.first(), ticks_seen.last()) {
        (Some(&first), Some(&last_tick)) => {
            // (first - 1 ms, next tick - 1 ms]: the same timestamps as values_of_ticks.
            let next = sub
                .counts
                .lock()
                .expect("counts")
                .ticks(last_tick + 1, i64::MAX, n)
                .first()
                .copied()
                // Not seen over MQTT (behind): half a step, not a whole one. A tick that came
                // late puts the next one less than a step after it, and a whole step then took
                // the next tick's ILP rows in too: one more row per series, reported as
                // "duplicates" (50k at 50k items when MQTT per value lagged on a busy box).
                .unwrap_or(last_tick + step / 2);
            let first_ms = first / 1_000_000;
            let end_ms = next / 1_000_000 - 1;
            let range = format!("{}ms", end_ms - first_ms + 1);
            let at = end_ms as f64 / 1000.0;
            let metric = format!("{}_value_double", scenario::SUBMODEL_ID_SHORT);
            let mut prev = (-1.0, Instant::now());
            let t_ilp = Instant::now();
            loop {
                vm.force_flush()?;
                let clamped = vm.query_scalar(
                    &format!(
                        "sum(clamp_max(count_over_time({metric}[{range}]), {}))",
                        ticks_seen.len()
                    ),
                    at,
                )?;
                if clamped >= (ticks_seen.len() * n) as f64
                    || (clamped == prev.0 && prev.1.elapsed() > Duration::from_secs(10))
                    || t_ilp.elapsed() > Duration::from_secs(120)
                {
                    let raw =
                        vm.query_scalar(&format!("sum(count_over_time({metric}[{range}]))"), at)?;
                    break (clamped as u64, (raw - clamped).max(0.0) as u64);
                }
                if clamped != prev.0 {
                    prev = (clamped, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        _ => (0, 0),
    };
    let max_outbox_depth = max_outbox_depth(&log);
    gw.stop(Duration::from_secs(20));
    drop(sub);
    Ok(GatewayRun {
        label: label.to_string(),
        n,
        interval_ms,
        ticks,
        produced,
        mqtt_values,
        mqtt_duplicates,
        ilp_values,
        ilp_duplicates,
        gateway,
        sim: sim_usage,
        window_s: seconds as f64,
        ilp_server,
        broker,
        bench,
        host,
        p50_ms,
        p99_ms,
        drain_s,
        max_outbox_depth,
        unreadable,
        behind,
        rss_series,
        added,
    })
}

/// Seed of the simulator (its default, passed explicitly so the expected values match).
const SIM_SEED: u64 = 42;

/// The simulator's tick number k of a timestamp, from a few (element, value) samples of it: the
/// first k from `from` on for which every sample equals the simulator's deterministic value.
fn tick_number(samples: &[(usize, f64)], from: u64) -> Option<u64> {
    if samples.len() < 2 {
        return None;
    }
    (from..5_000_000u64).find(|&k| {
        samples
            .iter()
            .all(|&(i, v)| opcua_sim::scale_value(SIM_SEED, i, k) == v)
    })
}

/// Values of N variables that changed in tick k (what OPC UA reports).
fn changes_in_tick(n: usize, k: u64) -> u64 {
    (0..n)
        .filter(|&i| {
            opcua_sim::scale_value(SIM_SEED, i, k) != opcua_sim::scale_value(SIM_SEED, i, k - 1)
        })
        .count() as u64
}

/// Highest `outbox_depth=` the gateway logged in its 10 s "flowing" reports.
fn max_outbox_depth(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("outbox_depth=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// The bare async-opcua client: subscribes to all N items and only counts.
async fn run_bare(
    bin: &Path,
    sim_url: &str,
    n: usize,
    interval_ms: u64,
    seconds: u64,
) -> Result<BaselineRun> {
    if !bin.is_file() {
        bail!(
            "{} not found (cargo build --release -p opcua-sim --example scale_client)",
            bin.display()
        );
    }
    let dir = TempDir::new("bare")?;
    let mut cmd = Command::new(bin);
    cmd.args([
        sim_url,
        &n.to_string(),
        &interval_ms.to_string(),
        &seconds.to_string(),
    ]);
    let log = dir.path.join("client.log");
    let mut p = Proc::spawn("scale_client", cmd, &log)?;
    // Its own window starts 3 s after it printed "monitored"; sample the same window.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("monitored")
    {
        p.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "scale_client did not subscribe; log:\n{}",
                procs::tail(&log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut s = Sampler::start(p.pid(), Duration::from_millis(500));
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.sample();
    }
    let usage = s.finish();
    let line = tokio::task::block_in_place(|| p.first_line(Duration::from_secs(60)))?;
    // "notifications/s 99993 (expected 100000, 100.0 %)"
    let mut it = line.split_whitespace();
    let per_s: f64 = it
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("scale_client output")?;
    let pct: f64 = line
        .rsplit_once(", ")
        .and_then(|(_, s)| s.trim_end_matches(" %)").parse().ok())
        .unwrap_or(0.0);
    p.stop(Duration::from_secs(5));
    Ok(BaselineRun {
        delivered_per_s: per_s,
        delivered_pct: pct,
        usage,
        note: String::new(),
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0);
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "{nproc} CPUs ({model}), {:.1} GiB RAM",
        mem_kib / 1024.0 / 1024.0
    )
}

/// "61.0 % / 25 MiB": a process's CPU over the window and its highest RSS.
fn usage_cell(u: &Usage) -> String {
    format!("{:.1} % / {:.0} MiB", u.cpu_pct, u.rss_max_mib)
}

/// "196 % (idle 4 %)", with the time stolen by the hypervisor when there was any.
fn host_cell(h: &HostUsage) -> String {
    if h.capacity_pct <= 0.0 {
        return "–".into();
    }
    let steal = if h.steal_pct >= 1.0 {
        format!(", stolen {:.0} %", h.steal_pct)
    } else {
        String::new()
    };
    format!("{:.0} % (idle {:.0} %{steal})", h.busy_pct, h.idle_pct)
}

/// The box's capacity in % of one core (100 × cores) for a table's header: from the runs, else
/// from this box.
fn capacity<'a>(runs: impl Iterator<Item = &'a GatewayRun>) -> f64 {
    runs.map(|r| r.host.capacity_pct)
        .fold(0.0, f64::max)
        .max(procs::CpuTimes::now().map_or(0.0, |c| 100.0 * c.cores as f64))
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.1}×", a / b)
    } else {
        "–".into()
    }
}

/// The gateway-added latency cell: p50 / p99 (ms) per sink, e.g. `mqtt 2.1 / 8.4 · questdb 31 / 95`.
fn added_cell(added: &BTreeMap<String, AddedLatency>) -> String {
    if added.is_empty() {
        return "–".into();
    }
    added
        .iter()
        .map(|(sink, (p50, p99, count))| {
            if *count <= 0.0 {
                return format!("{sink} no values");
            }
            let q = |q: &Option<prom::Quantile>| q.map_or("–".into(), |q| q.ms_cell());
            format!("{sink} {} / {}", q(p50), q(p99))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Everything measured, by report section.
struct Sections<'a> {
    cases: &'a [((usize, u64), CaseResult)],
    max_runs: &'a [GatewayRun],
    rss_runs: &'a [GatewayRun],
    /// The soak run and where its RSS samples were written.
    soak: Option<(&'a GatewayRun, Option<&'a Path>)>,
}

fn write_report(
    out: &mut String,
    args: &Args,
    sections: &Sections,
    load_before: &str,
    load_after: &str,
    took: Duration,
) {
    let &Sections {
        cases: results,
        max_runs,
        rss_runs,
        soak,
    } = sections;
    let _ = writeln!(out, "## Benchmark results\n");
    let _ = writeln!(
        out,
        "Machine: {}. Load average (1/5/15 min) before: {load_before}, after: {load_after}. Run took {:.0} s{}. CPU is % of **one** core (utime+stime from /proc over the window); RSS is the highest VmRSS sampled. Broker: mosquitto with `set_tcp_nodelay {}`.\n",
        machine(),
        took.as_secs_f64(),
        if results.is_empty() {
            String::new()
        } else {
            format!(
                "; gateway window {} s, baselines {} s per case",
                args.seconds, args.baseline_seconds
            )
        },
        args.broker_tcp_nodelay,
    );
    if !results.is_empty() {
        let _ = writeln!(
            out,
            "### Gateway (both sinks on: MQTT QoS 1 + ILP over HTTP, durable outbox)\n"
        );
        let _ = writeln!(out, "| case | build | values/s produced | MQTT values/s | ILP rows/s | lost MQTT / ILP | duplicates MQTT / ILP | gateway CPU | gateway RSS | latency p50 / p99 (ms) | gateway-added p50 / p99 (ms) | max outbox depth | sim CPU | ILP server CPU | broker CPU | box busy (of {:.0} %) |", capacity(results.iter().flat_map(|(_, c)| &c.runs)));
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
    }
    for ((n, m), case) in results {
        for r in &case.runs {
            let span = r.ticks as f64 * r.interval_ms as f64 / 1000.0;
            let _ = writeln!(
                out,
                "| {n} @ {m} ms | {} | {:.0} | {:.0} | {:.0} | {} | {} / {} | {:.1} % | {:.0} MiB | {} / {} | {} | {} | {} | {:.1} % | {:.1} % | {} |",
                r.label,
                r.rate(),
                r.mqtt_values as f64 / span.max(1e-9),
                r.ilp_values as f64 / span.max(1e-9),
                r.lost_cell(args.drain_cap_s),
                r.mqtt_duplicates,
                r.ilp_duplicates,
                r.gateway.cpu_pct,
                r.gateway.rss_max_mib,
                opt_ms(r.p50_ms),
                opt_ms(r.p99_ms),
                added_cell(&r.added),
                r.max_outbox_depth,
                r.sim.map_or("in bench".into(), |u| format!("{:.1} %", u.cpu_pct)),
                r.ilp_server.cpu_pct,
                r.broker.cpu_pct,
                host_cell(&r.host),
            );
        }
    }
    if !results.is_empty() {
        let _ = writeln!(
            out,
            "\n### Beside the baselines (same simulator, same case)\n"
        );
        let _ = writeln!(out, "| case | gateway CPU / RSS | bare client CPU / RSS (delivered) | gateway ÷ bare CPU | Node-RED CPU / RSS (delivered) | gateway ÷ Node-RED CPU |");
        let _ = writeln!(out, "|---|---|---|---|---|---|");
    }
    for ((n, m), case) in results {
        let Some(last) = case.runs.last() else {
            continue;
        };
        // The last build and layout, in every round.
        let compared: Vec<&GatewayRun> = (case.runs.iter())
            .filter(|r| without_round(&r.label) == without_round(&last.label))
            .collect();
        let gateway_cpu: Vec<f64> = compared.iter().map(|r| r.gateway.cpu_pct).collect();
        let gateway_median = median(gateway_cpu.clone());
        let bare_cpu: Vec<f64> = case.bare.iter().map(|b| b.usage.cpu_pct).collect();
        let bare = match case.bare.first() {
            None => "not run".into(),
            Some(b) => {
                let rss = case.bare.iter().map(|b| b.usage.rss_max_mib);
                let worst = case
                    .bare
                    .iter()
                    .min_by(|x, y| x.delivered_pct.total_cmp(&y.delivered_pct))
                    .unwrap_or(b);
                format!(
                    "{} / {:.0} MiB ({:.0}/s, {:.1} %)",
                    cpu_cell(&bare_cpu),
                    rss.fold(0.0, f64::max),
                    worst.delivered_per_s,
                    worst.delivered_pct
                )
            }
        };
        let bare_ratio = match bare_cpu.is_empty() {
            true => "–".into(),
            false => ratio(gateway_median, median(bare_cpu)),
        };
        let (nr, nr_ratio) = match &case.node_red {
            None => ("not run".to_string(), "–".to_string()),
            Some(b) if !b.note.is_empty() && b.usage.cpu_pct == 0.0 => (b.note.clone(), "–".into()),
            Some(b) => (
                format!(
                    "{:.1} % / {:.0} MiB ({:.0}/s, {:.1} %{})",
                    b.usage.cpu_pct,
                    b.usage.rss_max_mib,
                    b.delivered_per_s,
                    b.delivered_pct,
                    if b.note.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", b.note)
                    }
                ),
                ratio(gateway_median, b.usage.cpu_pct),
            ),
        };
        let delivered = (compared.iter())
            .map(|g| 100.0 * g.mqtt_values.min(g.ilp_values) as f64 / g.produced.max(1) as f64)
            .fold(f64::INFINITY, f64::min);
        let rss = compared.iter().map(|g| g.gateway.rss_max_mib);
        let _ = writeln!(
            out,
            "| {n} @ {m} ms | {} / {:.0} MiB ({delivered:.1} % delivered) | {bare} | {bare_ratio} | {nr} | {nr_ratio} |",
            cpu_cell(&gateway_cpu),
            rss.fold(0.0, f64::max),
        );
    }
    if !max_runs.is_empty() {
        let _ = writeln!(out, "\n### Maximum sustained rate (each step {} s, {}; held = the simulator produced at least {:.0} % of the rate, zero loss in both sinks and the window's last values delivered within 10 s)\n", args.max_seconds, max_runs[0].label, 100.0 * bound::SIM_PACE);
        let _ = writeln!(out, "| items @ interval | values/s | values/s produced | held | lost MQTT / ILP | gateway CPU | gateway RSS | p99 (ms) | gateway-added p50 / p99 (ms) | drain after window | max outbox depth | sim CPU / RSS | ILP server CPU / RSS | broker CPU / RSS | bench (subscriber) CPU | box busy (of {:.0} %) |", capacity(max_runs.iter()));
        let _ = writeln!(
            out,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in max_runs {
            let _ = writeln!(
                out,
                "| {} @ {} ms | {:.0} | {:.0} | {} | {} | {:.1} % | {:.0} MiB | {} | {} | {:.1} s | {} | {} | {} | {} | {:.1} % | {} |",
                r.n,
                r.interval_ms,
                r.rate(),
                r.produced_rate(),
                if r.held_at_rate() {
                    "yes"
                } else if r.held() {
                    "**no** (simulator short)"
                } else {
                    "**no**"
                },
                r.lost_cell(args.drain_cap_s),
                r.gateway.cpu_pct,
                r.gateway.rss_max_mib,
                opt_ms(r.p99_ms),
                added_cell(&r.added),
                r.drain_s,
                r.max_outbox_depth,
                r.sim.as_ref().map_or("in bench".into(), usage_cell),
                usage_cell(&r.ilp_server),
                usage_cell(&r.broker),
                r.bench.cpu_pct,
                host_cell(&r.host),
            );
        }
        // What bounded the search: the first step not held, else the last one run.
        if let Some(r) = max_runs
            .iter()
            .find(|r| !r.held_at_rate())
            .or(max_runs.last())
        {
            let _ = writeln!(
                out,
                "\n**What bounds it:** {}",
                bound::explain(&r.step_figures(args.drain_cap_s))
            );
        }
        let best = max_runs
            .iter()
            .filter(|r| r.held_at_rate())
            .map(GatewayRun::rate)
            .fold(0.0, f64::max);
        if best > 0.0 {
            let _ = writeln!(out, "\nHighest rate held: **{best:.0} values/s**.");
        } else {
            let _ = writeln!(out, "\nHighest rate held: **none of the steps run**.");
        }
    }
    if !rss_runs.is_empty() {
        write_rss_section(out, args, rss_runs);
    }
    if let Some((r, csv)) = soak {
        write_soak_section(out, args, r, csv);
    }
    let _ = writeln!(
        out,
        "\nLatency is source timestamp (set by the simulator when the value changes) → arrival at the counting MQTT subscriber, so it includes up to one publishing interval of OPC UA batching. Gateway-added latency is the gateway's own histogram `{}` (per value: arrival at the gateway of the OPC UA publish response that carried it → the sink's confirmation, PUBACK for MQTT, HTTP 2xx for ILP), scraped from its `/metrics` at the start and the end of the window and differenced; p50 / p99 are interpolated linearly inside the bucket holding the rank (as Prometheus' `histogram_quantile`), so they are as fine as the buckets (\"> X\": above the largest finite bucket; \"–\": this gateway build does not expose the histogram). \"lost\" = values the simulator produced in the window's ticks that never arrived (N per tick; whole missing ticks count too).",
        args.added_latency_metric
    );
    if results
        .iter()
        .any(|(_, c)| !c.bare.is_empty() || c.node_red.is_some())
    {
        let _ = writeln!(out, "\n{}", baseline_edge_note(args.baseline_seconds));
    }
}

/// Why the baselines' "delivered" may read 95 % or 100.5 % while nothing was lost: the ±1-tick
/// edge effect of a timed window (the gateway runs count by tick and have none).
fn baseline_edge_note(seconds: u64) -> String {
    let s = seconds.max(1);
    format!(
        "**The baselines' \"delivered\" is exact only to ±1 tick.** The gateway runs count whole simulator ticks by their source timestamps, so their loss figures are exact. The bare client and Node-RED instead count the notifications that arrive inside a timed window of {s} s on their own clock. A tick's N values arrive as a burst (one or a few publish responses), and the bursts do not arrive exactly one interval apart: the subscription's publishing timer runs beside the simulator's change timer, and responses queue behind each other on a busy box. A burst that lands close to the window's start or end falls in or out of it depending on that jitter, so the window holds one tick more or one less than {s} s ÷ interval, with nothing missing. At 1 s ticks that is ±{:.1} % ({:.1} % or {:.1} % instead of 100 %), at 100 ms ticks ±{:.1} %. Read the baselines' \"delivered\" as \"kept up\" when it is within that band.",
        100.0 / s as f64,
        100.0 - 100.0 / s as f64,
        100.0 + 100.0 / s as f64,
        10.0 / s as f64,
    )
}

/// The "RSS by item count" section: a row per N and the least-squares line through them.
fn write_rss_section(out: &mut String, args: &Args, runs: &[GatewayRun]) {
    let _ = writeln!(out, "\n### RSS by item count (each N @ {} ms, {}, both sinks; RSS read after the initial values arrived plus {} s of steady flow)\n", args.rss_interval_ms, runs[0].label, args.rss_settle_s);
    let _ = writeln!(out, "| items | RSS steady (MiB) | RSS max (MiB) | RSS per item (KiB) | gateway CPU | kept up (lost MQTT / ILP) | gateway-added p50 / p99 (ms) |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let mut points = Vec::new();
    for r in runs {
        let steady = analysis::steady_mean(&r.rss_series, STEADY_SAMPLES).unwrap_or(0.0);
        points.push((r.n as f64, steady));
        let _ = writeln!(
            out,
            "| {} | {steady:.1} | {:.1} | {:.2} | {:.1} % | {} ({}) | {} |",
            r.n,
            r.gateway.rss_max_mib,
            steady * 1024.0 / r.n.max(1) as f64,
            r.gateway.cpu_pct,
            if r.held() { "yes" } else { "**no**" },
            r.lost_cell(args.drain_cap_s),
            added_cell(&r.added),
        );
    }
    match analysis::fit(&points) {
        Some(f) => {
            let _ = writeln!(
                out,
                "\nLeast-squares fit: RSS ≈ **{:.1} MiB + {:.3} MiB per 1,000 items**; largest residual {:.1} % of the measured value: {}.",
                f.intercept_mib,
                f.slope_mib_per_k,
                100.0 * f.max_rel_residual,
                if f.points < 3 {
                    "too few item counts to call it linear (a line through two points always fits)".to_string()
                } else if f.is_linear() {
                    format!("**linear** (every residual below {:.0} %)", 100.0 * analysis::LINEAR_TOLERANCE)
                } else {
                    format!("**not linear** (a residual of {:.0} % or more)", 100.0 * analysis::LINEAR_TOLERANCE)
                }
            );
        }
        None => {
            let _ = writeln!(out, "\n(A fit needs at least two different item counts.)");
        }
    }
    let _ = writeln!(out, "\nRSS steady = mean VmRSS of the last {STEADY_SAMPLES} samples (500 ms apart) of the window; CPU is over the window. \"kept up\" = the window's values arrived in both sinks without loss and within 10 s (not required here: a gateway that fell behind holds a backlog, which the RSS then includes).");
}

/// The "Soak" section: first vs last five minutes of RSS, loss over the whole run.
fn write_soak_section(out: &mut String, args: &Args, r: &GatewayRun, csv: Option<&Path>) {
    let _ = writeln!(
        out,
        "\n### Soak ({} items @ {} ms for {} min, {}, both sinks; RSS sampled every 5 s after the warm-up: initial values, then {} s of flow)\n",
        r.n, r.interval_ms, args.soak_minutes, r.label, args.soak_warmup_s
    );
    let _ = writeln!(out, "| RSS first part (MiB) | RSS last part (MiB) | difference | flat (within ±{:.0} %) | RSS max | gateway CPU | lost MQTT / ILP | duplicates MQTT / ILP | latency p50 / p99 (ms) | gateway-added p50 / p99 (ms) | max outbox depth |", 100.0 * analysis::SOAK_TOLERANCE);
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let cmp = analysis::compare_soak(&r.rss_series, 300.0);
    let (first, last, diff, flat) = match cmp {
        Some(c) => (
            format!("{:.1}", c.first_mib),
            format!("{:.1}", c.last_mib),
            format!("{:+.1} %", c.diff_pct()),
            if c.flat() { "yes" } else { "**no**" },
        ),
        None => ("–".into(), "–".into(), "–".into(), "–"),
    };
    let _ = writeln!(
        out,
        "| {first} | {last} | {diff} | {flat} | {:.0} MiB | {:.1} % | {} | {} / {} | {} / {} | {} | {} |",
        r.gateway.rss_max_mib,
        r.gateway.cpu_pct,
        r.lost_cell(args.drain_cap_s),
        r.mqtt_duplicates,
        r.ilp_duplicates,
        opt_ms(r.p50_ms),
        opt_ms(r.p99_ms),
        added_cell(&r.added),
        r.max_outbox_depth,
    );
    let span = cmp.map_or(300.0, |c| c.span_s);
    let _ = writeln!(
        out,
        "\nParts: the first and the last {:.0} s of the window (five minutes; half the run when it is shorter than ten). Loss is counted over the whole run, CPU is its mean.{}",
        span,
        csv.map_or(String::new(), |p| format!(
            " The {} RSS samples: `{}`.",
            r.rss_series.len(),
            p.file_name().map_or(p.display().to_string(), |f| f.to_string_lossy().into_owned())
        ))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report of `sections` (load averages and run time are placeholders).
    fn report(args: &Args, sections: Sections<'_>) -> String {
        let mut out = String::new();
        write_report(
            &mut out,
            args,
            &sections,
            "0 0 0",
            "0 0 0",
            Duration::from_secs(1),
        );
        out
    }

    fn run(n: usize, steady: f64, added: bool) -> GatewayRun {
        let mut r = GatewayRun {
            label: "MQTT per submodel".into(),
            n,
            interval_ms: 1000,
            ticks: 20,
            produced: 20 * n as u64,
            mqtt_values: 20 * n as u64,
            ilp_values: 20 * n as u64,
            rss_series: (0..40).map(|i| (i as f64 * 0.5, steady)).collect(),
            ..Default::default()
        };
        r.gateway.rss_max_mib = steady + 1.0;
        if added {
            r.added.insert(
                "mqtt".into(),
                (
                    Some(prom::Quantile::Within(0.0021)),
                    Some(prom::Quantile::Within(0.0184)),
                    1000.0,
                ),
            );
            r.added.insert(
                "questdb".into(),
                (None, Some(prom::Quantile::Above(30.0)), 5.0),
            );
        }
        r
    }

    #[test]
    fn the_tables_show_every_process_and_the_box_and_what_bounded_the_search() {
        let args = Args::parse_from(["gateway-bench"]);
        let with_peers = |mut r: GatewayRun, sim: f64, vm: f64, busy: f64| {
            r.sim = Some(Usage {
                cpu_pct: sim,
                rss_max_mib: 30.0,
            });
            r.ilp_server = Usage {
                cpu_pct: vm,
                rss_max_mib: 400.0,
            };
            r.broker = Usage {
                cpu_pct: 9.5,
                rss_max_mib: 12.0,
            };
            r.bench.cpu_pct = 5.0;
            r.gateway.cpu_pct = 40.0;
            r.host = HostUsage {
                capacity_pct: 200.0,
                busy_pct: busy,
                idle_pct: 200.0 - busy,
                steal_pct: 0.0,
            };
            r
        };
        let held = with_peers(run(100_000, 200.0, false), 50.0, 60.0, 170.0);
        let mut fell_behind = with_peers(run(100_000, 200.0, false), 65.0, 70.0, 196.0);
        fell_behind.interval_ms = 333;
        fell_behind.ticks = 180;
        fell_behind.produced = 180 * 100_000;
        fell_behind.mqtt_values = fell_behind.produced;
        fell_behind.ilp_values = fell_behind.produced - 2_137_944;
        fell_behind.behind = true;
        fell_behind.window_s = 60.0;
        // A step after the first one not held (never run by the search, but the line must
        // name the first one not held).
        let later = with_peers(run(100_000, 200.0, false), 1.0, 1.0, 20.0);
        let max_runs = [held.clone(), fell_behind, later];
        let mut case = CaseResult::default();
        case.runs.push(held);
        let cases = [((100_000, 1000), case)];
        let out = report(
            &args,
            Sections {
                cases: &cases,
                max_runs: &max_runs,
                rss_runs: &[],
                soak: None,
            },
        );
        assert!(
            out.contains("| max outbox depth | sim CPU | ILP server CPU | broker CPU | box busy (of 200 %) |"),
            "{out}"
        );
        assert!(
            out.contains("| 0 | 50.0 % | 60.0 % | 9.5 % | 170 % (idle 30 %) |"),
            "{out}"
        );
        assert!(out.contains("| sim CPU / RSS | ILP server CPU / RSS | broker CPU / RSS | bench (subscriber) CPU | box busy (of 200 %) |"), "{out}");
        assert!(
            out.contains("| 65.0 % / 30 MiB | 70.0 % / 400 MiB | 9.5 % / 12 MiB | 5.0 % | 196 % (idle 4 %) |"),
            "{out}"
        );
        assert!(
            out.contains("| 100000 @ 333 ms | 300300 | 300000 | **no** |"),
            "{out}"
        );
        assert!(
            out.contains("**What bounds it:** 300300 values/s was not held: **box saturated** (busy 196 % of 200 %: ILP server 70.0 %, simulator 65.0 %, gateway 40.0 %, broker 9.5 %, bench (subscriber) 5.0 %, rest of the box 6.5 %); the **ILP** sink fell behind (2137944 rows not arrived 30 s after the window)."),
            "{out}"
        );
        // All held: the line speaks of the last step.
        let mut out = String::new();
        // A step whose simulator made half its ticks is not held at its rate.
        let mut short = max_runs[0].clone();
        short.window_s = 40.0;
        let mut max_runs = max_runs;
        max_runs[2] = short;
        let mut out_short = String::new();
        write_report(
            &mut out_short,
            &args,
            &Sections {
                cases: &[],
                max_runs: &max_runs[2..],
                rss_runs: &[],
                soak: None,
            },
            "0 0 0",
            "0 0 0",
            Duration::from_secs(1),
        );
        assert!(
            out_short.contains("| 100000 @ 1000 ms | 100000 | 50000 | **no** (simulator short) |")
                && out_short.contains("the simulator produced only 50000 values/s")
                && out_short.contains("Highest rate held: **none of the steps run**."),
            "{out_short}"
        );
        write_report(
            &mut out,
            &args,
            &Sections {
                cases: &[],
                max_runs: &max_runs[..1],
                rss_runs: &[],
                soak: None,
            },
            "0 0 0",
            "0 0 0",
            Duration::from_secs(1),
        );
        assert!(out.contains("**What bounds it:** The last step run (100000 values/s) was held (busy 170 % of 200 %"), "{out}");
    }

    #[test]
    fn a_tick_is_numbered_from_its_values_not_from_its_time() {
        let samples = |k: u64| -> Vec<(usize, f64)> {
            [3usize, 17, 4242]
                .iter()
                .map(|&i| (i, opcua_sim::scale_value(SIM_SEED, i, k)))
                .collect()
        };
        assert_eq!(tick_number(&samples(7), 1), Some(7));
        // A simulator that fell behind made tick 9 however late it came: the window's last
        // tick is numbered from its own values, searched from the first tick on.
        assert_eq!(tick_number(&samples(9), 7), Some(9));
        assert_eq!(tick_number(&samples(9), 10).filter(|&k| k < 1000), None);
        assert_eq!(
            tick_number(&samples(9)[..1], 1),
            None,
            "one sample is ambiguous"
        );
    }

    #[test]
    fn later_flags_override_earlier_ones_and_new_modes_are_off_by_default() {
        let a = Args::parse_from(["gateway-bench", "--seconds", "20", "--seconds", "5"]);
        assert_eq!(a.seconds, 5);
        assert_eq!(a.soak_minutes, 0);
        assert!(parse_counts(&a.rss_items, "--rss-items")
            .unwrap()
            .is_empty());
        assert_eq!(a.max_intervals, "800,667,500,400,333,250");
        assert_eq!(
            parse_counts(" 10000, 50000,", "--rss-items").unwrap(),
            [10_000, 50_000]
        );
        let e = parse_counts("10k", "--rss-items").unwrap_err().to_string();
        assert!(e.contains("--rss-items") && e.contains("10k"), "{e}");
        assert!(parse_counts("0", "--rss-items").is_err());
    }

    /// With rounds, the comparison with the bare client is median against median, with each
    /// side's range; the build compared is the last one, in every round.
    #[test]
    fn rounds_compare_the_medians_of_the_last_build() {
        let args = Args::parse_from(["gateway-bench", "--rounds", "3"]);
        let mut case = CaseResult::default();
        for (round, cpu) in [(1, 12.0), (2, 14.5), (3, 13.0)] {
            let mut other = run(100_000, 90.0, false);
            other.label = format!("old, MQTT per submodel (round {round})");
            other.gateway.cpu_pct = 30.0;
            case.runs.push(other);
            let mut r = run(100_000, 100.0 + round as f64, false);
            r.label = format!("new, MQTT per submodel (round {round})");
            r.gateway.cpu_pct = cpu;
            case.runs.push(r);
        }
        for cpu in [6.0, 7.0, 6.5] {
            let mut b = BaselineRun {
                delivered_per_s: 100_000.0,
                delivered_pct: 100.0,
                ..Default::default()
            };
            b.usage.cpu_pct = cpu;
            b.usage.rss_max_mib = 70.0;
            case.bare.push(b);
        }
        let cases = [((100_000, 1000), case)];
        let out = report(
            &args,
            Sections {
                cases: &cases,
                max_runs: &[],
                rss_runs: &[],
                soak: None,
            },
        );
        assert!(
            out.contains("| 100000 @ 1000 ms | 13.0 % (median of 3: 12.0–14.5) / 104 MiB (100.0 % delivered) | 6.5 % (median of 3: 6.0–7.0) / 70 MiB (100000/s, 100.0 %) | 2.0× |"),
            "{out}"
        );
        assert_eq!(
            without_round("a, MQTT per value (round 12)"),
            "a, MQTT per value"
        );
        assert_eq!(without_round("MQTT per value"), "MQTT per value");
        assert_eq!(median(vec![3.0, 1.0]), 2.0);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn report_has_the_added_latency_rss_fit_and_soak() {
        let args = Args::parse_from(["gateway-bench", "--soak-minutes", "30"]);
        let rss: Vec<_> = [10_000, 50_000, 100_000, 200_000]
            .iter()
            .map(|&n| run(n, 40.0 + 0.4 * n as f64 / 1000.0, false))
            .collect();
        let mut soak = run(100_000, 80.0, true);
        soak.rss_series = (0..=360).map(|i| (i as f64 * 5.0, 80.0)).collect();
        let mut case = CaseResult::default();
        case.runs.push(run(10_000, 50.0, true));
        let cases = [((10_000, 1000), case)];
        let out = report(
            &args,
            Sections {
                cases: &cases,
                max_runs: &[],
                rss_runs: &rss,
                soak: Some((&soak, Some(Path::new("/x/soak-rss.csv")))),
            },
        );
        assert!(
            out.contains("| mqtt 2.1 / 18 · questdb – / > 30000 |"),
            "{out}"
        );
        assert!(out.contains("| 200000 | 120.0 | 121.0 | 0.61 |"), "{out}");
        assert!(
            out.contains("RSS ≈ **40.0 MiB + 0.400 MiB per 1,000 items**"),
            "{out}"
        );
        assert!(out.contains("**linear**"), "{out}");
        assert!(out.contains("| 80.0 | 80.0 | +0.0 % | yes |"), "{out}");
        assert!(
            out.contains("The 361 RSS samples: `soak-rss.csv`."),
            "{out}"
        );
        // No baselines ran: no paragraph about their edge effect.
        assert!(!out.contains("±1 tick"), "{out}");
        assert!(baseline_edge_note(20).contains("±5.0 % (95.0 % or 105.0 %"));
    }
}
