//! One sink's outage never stops anything else (issue #14), on real peers: mosquitto and
//! VictoriaMetrics as the ILP server, the bundled OPC UA simulator changing its CNC values every
//! 20 ms plus `ISOLATION_ITEMS` load variables (default 1,000) every `ISOLATION_INTERVAL_MS`
//! (default 200): about 5,000 values/s (`ISOLATION_ITEMS=2000` for the issue's 10,000/s).
//!
//! - The ILP server is down for a long stretch while values flow and the QuestDB sink has a small
//!   buffer: MQTT receives every value throughout, the API's values keep changing, the OPC UA
//!   session never reconnects; when the ILP server is back it receives what was inside its bound,
//!   and the values it lost are exactly the drop counted in `/metrics`. The mirror case (broker
//!   down, ILP unaffected) runs in parallel. The outage lasts `ISOLATION_OUTAGE_S` seconds
//!   (default 30; the issue's 5 minutes: `ISOLATION_OUTAGE_S=300`).
//! - SIGTERM with both peers down and full `block` buffers ends within a bound, and what was
//!   unconfirmed is delivered after the next start.
//! - A broker that never answers one PUBACK (a proxy swallows it): the message is sent again,
//!   counted in `/metrics`, and nothing is lost.
//! - ILP over `tcp::` (no confirmation): the gateway says at start that delivery is at most
//!   once, and values still arrive.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use common::cnc::{self, now_nanos};
use common::*;
use tokio_util::sync::CancellationToken;

/// Elements whose values an ILP server can hold (numbers and booleans): the loss accounting
/// compares them one by one.
const NUMERIC: &[&str] = &[
    "SpindleSpeed",
    "SpindleLoad",
    "FeedRate",
    "PartCount",
    "AlarmCode",
    "Running",
];

/// Simulator tick: every machine variable changes up to 50 times a second.
const TICK_MS: u64 = 20;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn outage() -> Duration {
    Duration::from_secs(env_or("ISOLATION_OUTAGE_S", 30))
}

/// Submodel of the load variables (shell `Load`, submodel `Scale`, elements `V<i>`).
const LOAD_SUBMODEL: &str = "urn:aas-gateway:test:sm:load";

/// An AAS environment with `n` xs:double Properties for the simulator's scale variables.
fn write_load_environment(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let elements: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"idShort": format!("V{i}"), "valueType": "xs:double", "modelType": "Property"}))
        .collect();
    let env = serde_json::json!({
        "assetAdministrationShells": [{
            "idShort": "Load", "id": "urn:aas-gateway:test:aas:load",
            "assetInformation": {"assetKind": "Instance", "globalAssetId": "urn:aas-gateway:test:asset:load"},
            "submodels": [{"type": "ModelReference", "keys": [{"type": "Submodel", "value": LOAD_SUBMODEL}]}],
            "modelType": "AssetAdministrationShell"
        }],
        "submodels": [{"idShort": "Scale", "id": LOAD_SUBMODEL, "kind": "Instance",
            "submodelElements": elements, "modelType": "Submodel"}]
    });
    let path = dir.join("load.aas.json");
    std::fs::write(&path, serde_json::to_vec(&env).unwrap()).unwrap();
    path
}

/// A gateway config mapping the numeric elements; `extra` goes at the end (buffers).
fn config(
    endpoint: &str,
    mqtt_port: u16,
    ilp_conf: &str,
    dir: &std::path::Path,
    extra: &str,
) -> String {
    config_with_load(endpoint, mqtt_port, ilp_conf, dir, extra, 0)
}

/// [`config`] plus `load` scale variables mapped onto the `Load` shell.
fn config_with_load(
    endpoint: &str,
    mqtt_port: u16,
    ilp_conf: &str,
    dir: &std::path::Path,
    extra: &str,
    load: usize,
) -> String {
    let load_env = if load > 0 {
        format!(", \"{}\"", write_load_environment(dir, load).display())
    } else {
        String::new()
    };
    let mut s = format!(
        r#"
[gateway]
name = "iso-{mqtt_port}"
[api]
listen = "127.0.0.1:0"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"{load_env}]
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
publishing_interval_ms = 100
sampling_interval_ms = 0
queue_size = 20
max_notifications_per_publish = 10000
pki_dir = "{pki}"
[outbox]
dir = "outbox"
"#,
        root = repo_root().display(),
        pki = dir.join("pki").display(),
    );
    for node in NUMERIC {
        s += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.{node}\"\nsubmodel = \"{}\"\npath = \"{node}\"\n",
            cnc::SUBMODEL
        );
    }
    for i in 0..load {
        s += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:scale;s=Scale.V{i}\"\nsubmodel = \"{LOAD_SUBMODEL}\"\npath = \"V{i}\"\n"
        );
    }
    s += &format!(
        "[mqtt]\nport = {mqtt_port}\ntopic_prefix = \"t\"\npuback_timeout_s = 2\n[questdb]\nenabled = true\nconf = \"{ilp_conf}\"\nflush_interval_ms = 200\n{extra}\n"
    );
    s
}

/// Everything the simulator produced so far, kept (the change channel is drained often so a
/// long outage does not overrun it).
struct Produced {
    rx: tokio::sync::broadcast::Receiver<opcua_sim::Change>,
    all: cnc::Values,
}

impl Produced {
    fn drain(&mut self) {
        for (path, values) in cnc::produced(&mut self.rx, &[(i64::MIN, i64::MAX)]) {
            self.all.entry(path).or_default().extend(values);
        }
    }

    fn within(&mut self, window: (i64, i64)) -> cnc::Values {
        self.drain();
        let mut out = cnc::Values::new();
        for (path, values) in &self.all {
            if !NUMERIC.contains(&path.as_str()) {
                continue;
            }
            let v: BTreeMap<_, _> = values
                .range(window.0..=window.1)
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            if !v.is_empty() {
                out.insert(path.clone(), v);
            }
        }
        out
    }
}

/// The value of a Prometheus sample (`name{labels}` as written), 0 when absent.
fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn metrics(api: &str) -> String {
    reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A live value from the API that changes every load tick (the CNC spindle rests between
/// cycles, so its speed can stay 0 for seconds).
async fn live_value(api: &str) -> serde_json::Value {
    let encoded = aas_gateway::api::encode_id(LOAD_SUBMODEL);
    reqwest::get(format!(
        "http://{api}/api/v3.0/submodels/{encoded}/submodel-elements/V0/$value"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

/// Every value the simulator produced in `window` arrived over MQTT, but for what the server
/// itself never sent: values its queue dropped (flagged), and, when `allow_unsent` (a long
/// run on a busy box), at most 0.5 % per element.
fn assert_mqtt_complete(
    label: &str,
    collector: &MqttCollector,
    produced: &cnc::Values,
    window: (i64, i64),
    allow_unsent: bool,
) {
    let messages = collector.snapshot();
    let (received, _) = cnc::received(&messages, "t/CNC1/OperationalData/", &[window]);
    for (path, values) in produced {
        let got = received.get(path).cloned().unwrap_or_default();
        let missing = values.keys().filter(|ts| !got.contains_key(ts)).count();
        if missing == 0 {
            continue;
        }
        // This compares with the simulator's own change log, so it also sees what the OPC UA
        // server never sent: its item queue overflowed (flagged with the Overflow bit, 0x80, on
        // the value after the gap, which the gateway forwards), or, on a CPU-starved box, the
        // simulator's tick ran late and two changes landed in one sample (seen once in a suite
        // at load average 6.5: 1 of 826, while the exact accounting below held). That the
        // gateway delivered everything it received is asserted exactly by the callers
        // (`other_side == updates`); here a few values per thousand may be the server's, a
        // stalled sink (the bug this guards against) loses whole seconds.
        let topic = format!("t/CNC1/OperationalData/{path}");
        let server_flagged = messages.iter().any(|(t, body)| {
            *t == topic && body["statusCode"].as_u64().is_some_and(|s| s & 0x80 != 0)
        });
        assert!(
            server_flagged || (allow_unsent && missing * 200 <= values.len()),
            "{label}: {path}: {missing} of {} values missing over MQTT (more than 0.5 %, and the server reported no queue overflow)",
            values.len()
        );
        println!(
            "{label}: {path}: {missing} of {} values never reached the gateway (server overflow flagged: {server_flagged})",
            values.len()
        );
    }
}

/// Which peer is down in [`outage_case`].
#[derive(Clone, Copy, PartialEq, Debug)]
enum Down {
    Ilp,
    Broker,
}

/// Values delivered over MQTT: distinct (topic, source timestamp) of value messages.
fn mqtt_unique(collector: &MqttCollector) -> usize {
    collector
        .snapshot()
        .iter()
        .filter(|(t, _)| t.starts_with("t/CNC1/") || t.starts_with("t/Load/"))
        .map(|(t, b)| (t.clone(), b["timestamp"].as_str().unwrap_or("").to_string()))
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// Values stored in the ILP server: distinct (series, timestamp) of value columns.
async fn ilp_unique(ilp: &VictoriaMetrics) -> usize {
    let mut seen = std::collections::HashSet::new();
    for s in ilp
        .export("(OperationalData|Scale)_value_(double|long|bool)")
        .await
    {
        let key = format!("{:?}", s.metric);
        for ts in &s.timestamps_ms {
            seen.insert((key.clone(), *ts));
        }
    }
    seen.len()
}

/// One sink's peer is down for [`outage()`] while about 5,000 values/s flow, with a 1 MiB
/// buffer for that sink (exceeded within seconds); the other sink, the API and the OPC UA
/// session must not notice, and what the sink lost must equal what it counted.
async fn outage_case(down: Down) {
    let mut broker = Mosquitto::start();
    let mut ilp = VictoriaMetrics::start();
    let dir = tempfile::tempdir().unwrap();
    let load = env_or("ISOLATION_ITEMS", 1000).max(1) as usize;
    let sim = opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port: 0,
        tick_ms: TICK_MS,
        scale: load,
        scale_interval_ms: env_or("ISOLATION_INTERVAL_MS", 200),
        pki_dir: dir.path().join("sim-pki"),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut produced = Produced {
        rx: sim.subscribe_changes(),
        all: Default::default(),
    };
    let collector = MqttCollector::start(broker.port, "t/#").await;
    let (sink, other, small) = match down {
        Down::Ilp => ("questdb", "mqtt", "[questdb.buffer]\nmax_bytes = 1048576\n"),
        Down::Broker => ("mqtt", "questdb", "[mqtt.buffer]\nmax_bytes = 1048576\n"),
    };
    let cfg_path = dir.path().join("gateway.toml");
    let toml = config_with_load(
        &sim.endpoint_url(),
        broker.port,
        &ilp.ilp_conf(),
        dir.path(),
        small,
        load,
    );
    std::fs::write(&cfg_path, toml).unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&cfg_path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let api = gateway.api_addr.unwrap().to_string();
    collector
        .wait_for("t/CNC1/", 0, Duration::from_secs(30))
        .await;
    let start = now_nanos() + 500_000_000;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let t0 = Instant::now();
    match down {
        Down::Ilp => ilp.stop(),
        Down::Broker => broker.stop(),
    }
    // Throughout the outage: the other sink keeps confirming, the API's values keep changing.
    let mut last_other = 0;
    let mut last_live = serde_json::Value::Null;
    let mut checks = 0;
    while t0.elapsed() < outage() {
        tokio::time::sleep(Duration::from_secs(3)).await;
        produced.drain();
        let text = metrics(&api).await;
        let confirmed = metric(
            &text,
            &format!("aas_gateway_sink_confirmed_total{{sink=\"{other}\"}}"),
        );
        assert!(
            confirmed > last_other,
            "{other} stopped confirming during the {sink} outage at {:?}",
            t0.elapsed()
        );
        last_other = confirmed;
        let live = live_value(&api).await;
        assert_ne!(
            live,
            last_live,
            "the API's values stopped changing at {:?}",
            t0.elapsed()
        );
        last_live = live;
        checks += 1;
    }
    let text = metrics(&api).await;
    assert!(
        metric(
            &text,
            &format!("aas_gateway_sink_dropped_total{{sink=\"{sink}\"}}")
        ) > 0,
        "the outage must exceed the {sink} buffer bound to test anything"
    );
    assert_eq!(
        metric(&text, "aas_gateway_source_reconnects_total{source=\"sim\"}"),
        0,
        "no OPC UA reconnect"
    );
    assert_eq!(
        metric(
            &text,
            &format!("aas_gateway_sink_dropped_total{{sink=\"{other}\"}}")
        ),
        0,
        "{other} lost nothing"
    );
    let ready: serde_json::Value = reqwest::get(format!("http://{api}/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shown = ready["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == sink)
        .unwrap()
        .clone();
    assert!(
        shown["buffer"]["dropping"] == true && shown["buffer"]["dropped"].as_u64().unwrap() > 0,
        "/ready shows the loss: {shown}"
    );

    match down {
        Down::Ilp => ilp.restart(),
        Down::Broker => broker.restart(),
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = now_nanos() - 1_000_000_000;
    let window = (start, end);
    // Stop the values; then both sinks drain completely.
    let expected = produced.within(window);
    sim.stop().await;
    let drained = Instant::now();
    loop {
        let text = metrics(&api).await;
        let lag = |s: &str| metric(&text, &format!("aas_gateway_outbox_lag{{sink=\"{s}\"}}"));
        let updates = metric(&text, "aas_gateway_updates_total");
        if lag("mqtt") == 0 && lag("questdb") == 0 && updates > 0 {
            break;
        }
        assert!(
            drained.elapsed() < Duration::from_secs(120),
            "sinks did not drain after the outage: mqtt lag {}, questdb lag {}",
            lag("mqtt"),
            lag("questdb")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = metrics(&api).await;
    let updates = metric(&text, "aas_gateway_updates_total");
    let dropped = metric(
        &text,
        &format!("aas_gateway_sink_dropped_total{{sink=\"{sink}\"}}"),
    );
    // Delivered values settle (broker queues, ILP flushes) shortly after the lag reached 0.
    let settle = Instant::now();
    let (mut mqtt_got, mut ilp_got);
    loop {
        mqtt_got = mqtt_unique(&collector) as u64;
        ilp_got = ilp_unique(&ilp).await as u64;
        let down_side = if down == Down::Ilp { ilp_got } else { mqtt_got };
        let other_side = if down == Down::Ilp { mqtt_got } else { ilp_got };
        if (down_side + dropped >= updates && other_side >= updates)
            || settle.elapsed() > Duration::from_secs(30)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (lost_side, other_side) = match down {
        Down::Ilp => (ilp_got, mqtt_got),
        Down::Broker => (mqtt_got, ilp_got),
    };
    let rate = updates as f64 / t0.elapsed().as_secs_f64().max(1.0);
    println!(
        "{down:?} down for {:?}: {updates} values through the gateway (~{rate:.0}/s); {sink} delivered {lost_side}, lost {} = counted {dropped}; {other} delivered {other_side}; {checks} checks of the other sink and the API",
        outage(),
        updates - lost_side
    );
    assert_eq!(
        updates - lost_side,
        dropped,
        "values {sink} lost vs the drop counted in /metrics"
    );
    assert_eq!(other_side, updates, "{other} delivered every value");
    // And the CNC values in the window, value by value, against the simulator's own log.
    match down {
        Down::Ilp => assert_mqtt_complete(
            "MQTT during the ILP outage",
            &collector,
            &expected,
            window,
            true,
        ),
        Down::Broker => assert_eq!(
            cnc::stored(&ilp, &[window]).await,
            cnc::numeric_ms(&expected),
            "ILP during the broker outage"
        ),
    }
    shutdown.cancel();
    gateway.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ilp_down_past_its_bound_stops_nothing_else_and_loses_exactly_the_counted_values() {
    outage_case(Down::Ilp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_past_its_bound_stops_nothing_else_and_loses_exactly_the_counted_values() {
    outage_case(Down::Broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_both_peers_down_and_full_block_buffers_ends_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), TICK_MS).await;
    // Both peers are down from the start (started once for their ports, then stopped).
    let mut broker = Mosquitto::start();
    broker.stop();
    let mut ilp = VictoriaMetrics::start();
    ilp.stop();
    let mqtt_port = broker.port;
    let ilp_conf = ilp.ilp_conf();
    let blocking = "[mqtt.buffer]\nmax_bytes = 8192\nwhen_full = \"block\"\n[questdb.buffer]\nmax_bytes = 8192\nwhen_full = \"block\"\n";
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg_path,
        config(
            &sim.endpoint_url(),
            mqtt_port,
            &ilp_conf,
            dir.path(),
            blocking,
        ),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let (mut gateway, api) = spawn_gateway(&cfg_path, &log);

    // Wait until the buffers are full and the dispatcher is held.
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("is full; holding the dispatcher") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the block buffers never filled; log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = metrics(&api).await;
    assert!(metric(&text, "aas_gateway_outbox_lag{sink=\"mqtt\"}") > 0);
    // Let it sit blocked a little, as an operator would find it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held_before_stop = now_nanos() - 2_000_000_000;

    let stop = Instant::now();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(gateway.id().to_string())
        .status();
    let status = loop {
        if let Some(status) = gateway.try_wait().unwrap() {
            break status;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(45),
            "SIGTERM did not stop the gateway within 45 s; log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = stop.elapsed();
    println!("SIGTERM with both peers down and full block buffers: stopped in {took:?} ({status})");
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(35),
        "stop took {took:?}, the documented bound is 30 s"
    );

    // What was not confirmed stayed in the outbox: with a broker there now, the next start
    // delivers values from before the stop.
    broker.restart();
    let collector = MqttCollector::start(broker.port, "t/#").await;
    let (_gateway, _api) = spawn_gateway(&cfg_path, &log);
    let t1 = Instant::now();
    loop {
        let old = collector.snapshot().iter().any(|(_, body)| {
            body["timestamp"]
                .as_str()
                .is_some_and(|ts| parse_ts(ts) < held_before_stop)
        });
        if old {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "values held in the outbox were not delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sim.stop().await;
}

/// A TCP proxy to mosquitto that swallows the broker's `swallow_at`-th PUBACK (once) and
/// forwards everything else: a broker that never answers one message.
struct PubackSwallower {
    port: u16,
    swallowed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PubackSwallower {
    async fn start(target: u16, swallow_at: u64) -> PubackSwallower {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let swallowed = Arc::new(AtomicBool::new(false));
        let pubacks = Arc::new(AtomicU64::new(0));
        let flag = swallowed.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let (flag, pubacks) = (flag.clone(), pubacks.clone());
                // Broker → gateway: split the stream into MQTT packets to find PUBACKs.
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let mut out = Vec::with_capacity(buf.len());
                        let mut pos = 0;
                        while let Some(len) = packet_len(&buf[pos..]) {
                            let packet = &buf[pos..pos + len];
                            let is_puback = packet[0] >> 4 == 4;
                            let swallow = is_puback
                                && pubacks.fetch_add(1, Ordering::SeqCst) + 1 == swallow_at
                                && !flag.swap(true, Ordering::SeqCst);
                            if !swallow {
                                out.extend_from_slice(packet);
                            }
                            pos += len;
                        }
                        buf.drain(..pos);
                        if cw.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        PubackSwallower {
            port,
            swallowed,
            task,
        }
    }
}

impl Drop for PubackSwallower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Length of the first complete MQTT packet in `b` (fixed header + remaining length).
fn packet_len(b: &[u8]) -> Option<usize> {
    let mut remaining = 0usize;
    for i in 1..5 {
        let byte = *b.get(i)?;
        remaining |= ((byte & 0x7f) as usize) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            let total = 1 + i + remaining;
            return (b.len() >= total).then_some(total);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puback_that_never_comes_is_retried_and_counted_and_nothing_is_lost() {
    let broker = Mosquitto::start();
    let ilp = VictoriaMetrics::start();
    let proxy = PubackSwallower::start(broker.port, 200).await;
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 200).await;
    let mut produced = Produced {
        rx: sim.subscribe_changes(),
        all: Default::default(),
    };
    let collector = MqttCollector::start(broker.port, "t/#").await;
    let cfg_path = dir.path().join("gateway.toml");
    // The gateway talks to the broker through the proxy; the collector directly.
    let toml = config(
        &sim.endpoint_url(),
        proxy.port,
        &ilp.ilp_conf(),
        dir.path(),
        "",
    )
    .replace(
        &format!("name = \"iso-{}\"", proxy.port),
        "name = \"iso-puback\"",
    );
    std::fs::write(&cfg_path, toml).unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&cfg_path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let api = gateway.api_addr.unwrap().to_string();
    collector
        .wait_for("t/CNC1/", 0, Duration::from_secs(30))
        .await;
    let start = now_nanos() + 500_000_000;
    let t0 = Instant::now();
    while !proxy.swallowed.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the proxy never saw 200 PUBACKs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The timeout is 2 s: the retry must come, and delivery must go on after it.
    let t1 = Instant::now();
    let retries = loop {
        let r = metric(
            &metrics(&api).await,
            "aas_gateway_sink_retries_total{sink=\"mqtt\"}",
        );
        if r > 0 {
            break r;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "no retry counted after a missing PUBACK"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let confirmed_after_retry = metric(
        &metrics(&api).await,
        "aas_gateway_sink_confirmed_total{sink=\"mqtt\"}",
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = now_nanos() - 1_000_000_000;
    let expected = produced.within((start, end));
    let t2 = Instant::now();
    loop {
        let (received, _) = cnc::received(
            &collector.snapshot(),
            "t/CNC1/OperationalData/",
            &[(start, end)],
        );
        if received == expected || t2.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_mqtt_complete(
        "MQTT with one PUBACK swallowed",
        &collector,
        &expected,
        (start, end),
        false,
    );
    let confirmed = metric(
        &metrics(&api).await,
        "aas_gateway_sink_confirmed_total{sink=\"mqtt\"}",
    );
    assert!(
        confirmed > confirmed_after_retry,
        "the sink goes on after the retry"
    );
    println!(
        "one PUBACK swallowed: {retries} message(s) sent again, {} values checked",
        expected.values().map(|v| v.len()).sum::<usize>()
    );
    shutdown.cancel();
    gateway.wait().await.unwrap();
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ilp_over_tcp_is_announced_as_at_most_once_and_still_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), TICK_MS).await;
    let broker = Mosquitto::start();
    let ilp = VictoriaMetrics::start_with_tcp();
    let tcp_conf = format!("tcp::addr=127.0.0.1:{};", ilp.tcp_port.unwrap());
    let cfg_path = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg_path,
        config(&sim.endpoint_url(), broker.port, &tcp_conf, dir.path(), ""),
    )
    .unwrap();
    let log = dir.path().join("gateway.log");
    let (_gateway, _api) = spawn_gateway(&cfg_path, &log);

    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let warned = text.contains("WARN") && text.contains("at most once");
        let stored = ilp.export("OperationalData_value_.*").await;
        if warned && stored.iter().any(|s| !s.values.is_empty()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "within 60 s: warned = {warned}, series over TCP = {}; log:\n{text}",
            stored.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sim.stop().await;
}
