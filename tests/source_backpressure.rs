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
use aas_gateway::sources::{build_all, SourceContext, SourceStats};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pipeline_pauses_publishing_keeps_the_session_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), TICK_MS).await;
    let mut changes = sim.subscribe_changes();
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
        endpoint = sim.endpoint_url(),
        pki = gateway_pki().display(),
    );
    for n in NODES {
        toml += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:types;s=Types.{n}\"\nsubmodel = \"{SUBMODEL}\"\npath = \"{n}\"\n"
        );
    }
    let path = dir.path().join("gw.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = Config::load(&path).unwrap();
    let (_, router) = aas_gateway::pipeline::check(&cfg).unwrap();
    let rule_node: Vec<String> = cfg.mapping.iter().map(|m| m.node_id.clone()).collect();

    // The pipeline: capacity 1, and nobody reads it until the stall is over.
    let (tx, mut rx) = mpsc::channel::<ReadingBatch>(1);
    let shutdown = CancellationToken::new();
    // Built and started the way the pipeline does it: through the source registry.
    let mut built = build_all(&SourceContext {
        config: &cfg,
        targets: router.rule_targets().into(),
    })
    .unwrap();
    assert_eq!(built.len(), 1);
    let source = built.remove(0);
    assert_eq!(source.name(), "sim");
    let stats = source.stats();
    let source = tokio::spawn(source.run(tx, shutdown.clone()));

    // Publishing gets paused once the hand-off holds more than 20 values.
    let t0 = Instant::now();
    while load(&stats, |s| &s.publishing_pauses) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "publishing was not paused (waiting values: {})",
            load(&stats, |s| &s.handoff_waiting)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stats.is_paused());
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
    let waiting = load(&stats, |s| &s.handoff_waiting);
    assert!(
        waiting < 20 + 10 * 10_000,
        "the hand-off grew past its bound: {waiting}"
    );

    // The consumer resumes: read everything, until the values produced up to now arrived.
    let resumed_at = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let mut received = Values::new();
    let mut duplicates = Vec::new();
    let mut take = |batch: ReadingBatch, received: &mut Values| {
        for r in batch {
            let node = rule_node[r.rule as usize].clone();
            if received
                .entry(node.clone())
                .or_default()
                .insert(r.source_ts_nanos, r.value)
                .is_some()
            {
                duplicates.push((node, r.source_ts_nanos));
            }
        }
    };
    let t1 = Instant::now();
    loop {
        let caught_up = received.len() == NODES.len()
            && received
                .values()
                .all(|v| v.keys().next_back().is_some_and(|ts| *ts >= resumed_at));
        if caught_up {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "the values of the stall did not arrive within 30 s after the consumer resumed"
        );
        if let Ok(Some(batch)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            take(batch, &mut received);
        }
    }
    // Publishing is on again once the hand-off is empty.
    let t2 = Instant::now();
    while stats.is_paused() {
        while let Ok(batch) = rx.try_recv() {
            take(batch, &mut received);
        }
        assert!(
            t2.elapsed() < Duration::from_secs(10),
            "publishing not resumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    while let Some(batch) = rx.recv().await {
        take(batch, &mut received);
    }
    source.await.unwrap().unwrap();
    assert!(duplicates.is_empty(), "arrived twice: {duplicates:?}");

    // Compare with the simulator's change log: from the first value every node delivered
    // (the monitored items' initial values) to the moment the consumer resumed.
    let from = NODES
        .iter()
        .map(|n| {
            let key = format!("nsu=urn:opcua-sim:types;s=Types.{n}");
            *received[&key].keys().next().unwrap()
        })
        .max()
        .unwrap();
    let mut produced = Values::new();
    while let Ok(c) = changes.try_recv() {
        let ts = datetime_nanos(&c.source_timestamp);
        let short = c.node_id.rsplit('.').next().unwrap_or_default();
        if NODES.contains(&short)
            && c.node_id.starts_with("nsu=urn:opcua-sim:types;")
            && ts >= from
            && ts <= resumed_at
        {
            produced
                .entry(c.node_id.clone())
                .or_default()
                .insert(ts, variant_to_typed(&c.value).unwrap());
        }
    }
    let received: Values = received
        .into_iter()
        .map(|(n, v)| {
            let inside = v
                .into_iter()
                .filter(|(ts, _)| *ts >= from && *ts <= resumed_at)
                .collect();
            (n, inside)
        })
        .collect();
    let count: usize = produced.values().map(BTreeMap::len).sum();
    let stall_ticks = (STALL.as_millis() as u64 / TICK_MS) as usize;
    assert!(
        count >= NODES.len() * stall_ticks,
        "only {count} changes in the window"
    );
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
