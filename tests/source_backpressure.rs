//! Back-pressure never stalls an OPC UA session (issue #14).
//!
//! The OPC UA source runs against the bundled simulator with a pipeline that does not read: a
//! channel of capacity 1 whose receiver this test holds. The source must hand off without
//! blocking the session's event loop, pause publishing (SetPublishingMode) once its hand-off is
//! full, keep receiving keep-alives, and never take its own back-pressure for a silent server
//! (no stall, no reconnect) during several silence timeouts. When the test starts reading,
//! every value change the simulator made (its own change log) must arrive, exactly once; the
//! server kept them in its monitored-item queues while publishing was paused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aas_gateway::config::Config;
use aas_gateway::core::{ReadingBatch, TypedValue};
use aas_gateway::sources::opcua::convert::{datetime_nanos, variant_to_typed};
use aas_gateway::sources::SourceStats;
use common::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SUBMODEL: &str = "urn:aas-gateway:sim:sm:types:values";
/// Types.* nodes: every one changes at every simulator tick.
const NODES: &[&str] = &["Double", "Int32", "UInt32", "Boolean", "String"];
const TICK_MS: u64 = 100;
const SILENCE_MS: u64 = 1500;
/// How long the pipeline stays stalled: several silence timeouts.
const STALL: Duration = Duration::from_millis(6 * SILENCE_MS);

fn load(v: &Arc<SourceStats>, f: impl Fn(&SourceStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    f(v).load(Ordering::Relaxed)
}

/// node → source timestamp → value
type Values = BTreeMap<String, BTreeMap<i64, TypedValue>>;

/// A running source whose pipeline is a channel of capacity 1 that nobody reads yet.
struct Harness {
    rx: mpsc::Receiver<ReadingBatch>,
    stats: Arc<SourceStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), aas_gateway::sources::SourceError>>,
    /// Node id of each mapping rule.
    rule_node: Vec<String>,
}

/// Starts the OPC UA source on `endpoint` the way the pipeline does: through the registry.
fn start_source(dir: &std::path::Path, endpoint: &str) -> Harness {
    let mut toml = format!(
        r#"
[api]
enabled = false
[mqtt]
enabled = false
[questdb]
enabled = false
[aas]
environments = ["{root}/aas-templates/types.aas.json"]
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
publishing_interval_ms = 100
sampling_interval_ms = 0
# Deep enough for every change of the stall (the simulator allows 1000).
queue_size = 1000
keep_alive_count = 3
silence_timeout_ms = {SILENCE_MS}
pause_publishing_above = 20
pki_dir = "{pki}"
"#,
        root = repo_root().display(),
        endpoint = endpoint,
        pki = gateway_pki().display(),
    );
    for n in NODES {
        toml += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:types;s=Types.{n}\"\nsubmodel = \"{SUBMODEL}\"\npath = \"{n}\"\n"
        );
    }
    let path = dir.join("gw.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = Config::load(&path).unwrap();
    let (_, router) = aas_gateway::pipeline::check(&cfg).unwrap();
    let rule_node: Vec<String> = cfg.mapping.iter().map(|m| m.node_id.clone()).collect();

    // The pipeline: capacity 1, and nobody reads it until the stall is over.
    let (tx, rx) = mpsc::channel::<ReadingBatch>(1);
    let shutdown = CancellationToken::new();
    // Built and started the way the pipeline does it: through the source registry.
    let mut built = cfg.build_sources(&std::sync::Arc::new(router)).unwrap();
    assert_eq!(built.len(), 1);
    let source = built.remove(0);
    assert_eq!(source.name(), "sim");
    let stats = source.stats();
    let task = tokio::spawn(source.run(tx, shutdown.clone()));
    Harness {
        rx,
        stats,
        shutdown,
        task,
        rule_node,
    }
}

impl Harness {
    /// Waits until publishing is paused.
    async fn wait_for_pause(&self) {
        let t0 = Instant::now();
        while !self.stats.is_paused() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "publishing was not paused (waiting values: {})",
                load(&self.stats, |s| &s.handoff_waiting)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn take(&self, batch: ReadingBatch, received: &mut Values) {
        for r in batch {
            let node = self.rule_node[r.rule as usize].clone();
            let prev = received
                .entry(node.clone())
                .or_default()
                .insert(r.source_ts_nanos, r.value);
            assert!(
                prev.is_none(),
                "{node} at {} arrived twice",
                r.source_ts_nanos
            );
        }
    }

    /// Reads until every node delivered a value produced at or after `since`, then until
    /// publishing is on again; returns everything read.
    async fn catch_up(&mut self, since: i64) -> Values {
        let mut received = Values::new();
        let t1 = Instant::now();
        loop {
            let caught_up = received.len() == NODES.len()
                && received
                    .values()
                    .all(|v| v.keys().next_back().is_some_and(|ts| *ts >= since));
            if caught_up {
                break;
            }
            assert!(
                t1.elapsed() < Duration::from_secs(30),
                "the values of the stall did not arrive within 30 s after the consumer resumed"
            );
            if let Ok(Some(batch)) =
                tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await
            {
                self.take(batch, &mut received);
            }
        }
        // Publishing is on again once the hand-off is empty.
        let t2 = Instant::now();
        while self.stats.is_paused() {
            while let Ok(batch) = self.rx.try_recv() {
                self.take(batch, &mut received);
            }
            assert!(
                t2.elapsed() < Duration::from_secs(10),
                "publishing not resumed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        received
    }

    /// Stops the source and reads what is left.
    async fn stop(mut self, received: &mut Values) -> Arc<SourceStats> {
        self.shutdown.cancel();
        while let Some(batch) = self.rx.recv().await {
            self.take(batch, received);
        }
        self.task.await.unwrap().unwrap();
        self.stats
    }
}

/// The simulator's changes of the compared nodes, collected while the test runs, starting with
/// the values current when it starts (the monitored items' initial values may be those, set
/// before any change was broadcast). Its broadcast channel holds the last 65,536 changes of all
/// its nodes: a test that read it only at the end lost the oldest on a slow box, and then saw
/// values "nobody produced".
struct ChangeLog {
    seen: Arc<std::sync::Mutex<Values>>,
    /// Changes the collector missed (the channel overflowed under it): the comparison is void.
    lagged: Arc<std::sync::atomic::AtomicU64>,
    /// Source timestamp of the newest change seen, of any node.
    newest: Arc<std::sync::atomic::AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

/// A change of one of the compared nodes ([`NODES`]).
fn is_compared(c: &opcua_sim::Change) -> bool {
    let short = c.node_id.rsplit('.').next().unwrap_or_default();
    NODES.contains(&short) && c.node_id.starts_with("nsu=urn:opcua-sim:types;")
}

impl ChangeLog {
    fn start(sim: &opcua_sim::Simulator) -> ChangeLog {
        // Subscribed first, then the snapshot: no change falls between the two.
        let mut changes = sim.subscribe_changes();
        let mut initial = Values::new();
        for c in sim.snapshot() {
            if is_compared(&c) {
                initial.entry(c.node_id.clone()).or_default().insert(
                    datetime_nanos(&c.source_timestamp),
                    variant_to_typed(&c.value).unwrap(),
                );
            }
        }
        let seen = Arc::new(std::sync::Mutex::new(initial));
        let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let newest = Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN));
        let task = tokio::spawn({
            let (seen, lagged, newest) = (seen.clone(), lagged.clone(), newest.clone());
            async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match changes.recv().await {
                        Ok(c) => {
                            let ts = datetime_nanos(&c.source_timestamp);
                            if is_compared(&c) {
                                seen.lock()
                                    .unwrap()
                                    .entry(c.node_id.clone())
                                    .or_default()
                                    .insert(ts, variant_to_typed(&c.value).unwrap());
                            }
                            newest.fetch_max(ts, Ordering::Relaxed);
                        }
                        Err(RecvError::Lagged(n)) => {
                            lagged.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
            }
        });
        ChangeLog {
            seen,
            lagged,
            newest,
            task,
        }
    }

    /// The collected changes with a source timestamp in `[from, to]`, once the collector has
    /// seen a change after `to` (the simulator keeps ticking).
    async fn between(&self, from: i64, to: i64) -> Values {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.newest.load(Ordering::Relaxed) <= to {
            assert!(
                Instant::now() < deadline,
                "the simulator's change log never went past the window"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            self.lagged.load(Ordering::Relaxed),
            0,
            "the change log collector fell behind the simulator: the comparison would be void"
        );
        self.task.abort();
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|(n, v)| {
                let inside = v.range(from..=to).map(|(t, v)| (*t, v.clone())).collect();
                (n.clone(), inside)
            })
            .collect()
    }
}

/// Asserts that every change of the simulator's log with a source timestamp in `[from, to]`
/// was received, with its value, and nothing else in that window. Returns the count.
async fn assert_every_change_arrived(
    changes: &ChangeLog,
    received: &Values,
    from: i64,
    to: i64,
) -> usize {
    let produced: Values = changes
        .between(from, to)
        .await
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let received: Values = received
        .iter()
        .map(|(n, v)| {
            let inside = v
                .iter()
                .filter(|(ts, _)| **ts >= from && **ts <= to)
                .map(|(ts, v)| (*ts, v.clone()))
                .collect();
            (n.clone(), inside)
        })
        .collect();
    let count: usize = produced.values().map(BTreeMap::len).sum();
    let missing: BTreeSet<_> = produced
        .iter()
        .flat_map(|(n, v)| v.keys().map(move |ts| (n.clone(), *ts)))
        .filter(|(n, ts)| !received.get(n).is_some_and(|r| r.contains_key(ts)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {count} changes did not arrive, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        received, produced,
        "received values differ from the change log"
    );
    count
}

/// The latest of the nodes' first source timestamps at or after `since`: from then on every
/// node's monitored item reports every change.
fn first_common_ts(received: &Values, since: i64) -> i64 {
    NODES
        .iter()
        .map(|n| {
            let key = format!("nsu=urn:opcua-sim:types;s=Types.{n}");
            *received[&key].range(since..).next().unwrap().0
        })
        .max()
        .unwrap()
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pipeline_pauses_publishing_keeps_the_session_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), TICK_MS).await;
    let changes = ChangeLog::start(&sim);
    let mut h = start_source(dir.path(), &sim.endpoint_url());
    let stats = h.stats.clone();

    // Publishing gets paused once the hand-off holds more than 20 values.
    h.wait_for_pause().await;
    let paused_at = Instant::now();
    let keep_alives_at_pause = load(&stats, |s| &s.keep_alives);
    // The stall: several silence timeouts with nobody reading.
    while paused_at.elapsed() < STALL {
        assert_eq!(
            load(&stats, |s| &s.stalls),
            0,
            "back-pressure was taken for a silent server"
        );
        assert_eq!(
            load(&stats, |s| &s.reconnects),
            0,
            "the session reconnected"
        );
        assert!(stats.session.is_connected(), "the session is not connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keep_alives = load(&stats, |s| &s.keep_alives) - keep_alives_at_pause;
    // One keep-alive per 3 × 100 ms: about 30 in the stall; demand a third of that.
    assert!(
        keep_alives >= 10,
        "only {keep_alives} keep-alives during a {STALL:?} pause"
    );
    assert!(stats.is_paused(), "publishing resumed while nobody read");
    assert_eq!(load(&stats, |s| &s.publishing_pauses), 1);

    // The consumer resumes: everything produced until now must arrive.
    let resumed_at = now_nanos();
    let mut received = h.catch_up(resumed_at).await;
    let stats = h.stop(&mut received).await;

    // Compare with the simulator's change log: from the first value every node delivered
    // (the monitored items' initial values) to the moment the consumer resumed.
    let from = first_common_ts(&received, 0);
    let count = assert_every_change_arrived(&changes, &received, from, resumed_at).await;
    let stall_ticks = (STALL.as_millis() as u64 / TICK_MS) as usize;
    assert!(
        count >= NODES.len() * stall_ticks,
        "only {count} changes in the window"
    );
    assert_eq!(load(&stats, |s| &s.handoff_dropped), 0);
    assert_eq!(
        load(&stats, |s| &s.overflows),
        0,
        "the server's queues overflowed"
    );
    assert_eq!(load(&stats, |s| &s.sequence_gaps), 0);
    assert_eq!(load(&stats, |s| &s.stalls), 0);
    assert_eq!(load(&stats, |s| &s.reconnects), 0);
    eprintln!(
        "source_backpressure: {count} changes compared, {} pause(s), {keep_alives} keep-alives in a {STALL:?} stall",
        load(&stats, |s| &s.publishing_pauses)
    );
    sim.stop().await;
}

/// A server restart while publishing is paused: async-opcua recreates the subscription (under
/// a new id, still paused); publishing must resume on that new subscription once the consumer
/// reads again, and every change of the restarted server must arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_resumes_on_the_subscription_recreated_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), TICK_MS).await;
    let port = sim.port();
    let mut h = start_source(dir.path(), &sim.endpoint_url());
    let stats = h.stats.clone();
    h.wait_for_pause().await;

    // Restart the server on the same port while paused.
    sim.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sim = opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port,
        tick_ms: TICK_MS,
        pki_dir: dir.path().join("sim-pki"),
        ..Default::default()
    })
    .await
    .unwrap();
    let changes = ChangeLog::start(&sim);
    let restarted_at = now_nanos();
    let t0 = Instant::now();
    while load(&stats, |s| &s.reconnects) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no reconnect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several silence timeouts on the new session while the pipeline still stalls.
    tokio::time::sleep(Duration::from_millis(3 * SILENCE_MS)).await;
    assert_eq!(
        load(&stats, |s| &s.stalls),
        0,
        "back-pressure taken for silence"
    );

    let resumed_at = now_nanos();
    let mut received = h.catch_up(resumed_at).await;
    let stats = h.stop(&mut received).await;
    let from = first_common_ts(&received, restarted_at);
    let count = assert_every_change_arrived(&changes, &received, from, resumed_at).await;
    assert!(
        count >= NODES.len() * 20,
        "only {count} changes in the window"
    );
    assert_eq!(load(&stats, |s| &s.handoff_dropped), 0);
    eprintln!(
        "source_backpressure/restart: {count} changes of the restarted server compared, {} pause(s), {} reconnect(s)",
        load(&stats, |s| &s.publishing_pauses),
        load(&stats, |s| &s.reconnects)
    );
    sim.stop().await;
}
