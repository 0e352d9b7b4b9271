//! Sparkplug B sink (issue #18) on real peers: mosquitto, the bundled OPC UA simulator and an
//! independent Sparkplug host application (`tests/peers/sparkplug_host.py`, PyPI `pysparkplug`,
//! whose protobuf code is generated from the official `sparkplug_b.proto`) that decodes every
//! message and resolves DDATA aliases through the DBIRTHs it decoded itself.
//!
//! - NBIRTH, one DBIRTH per shell with every metric, then DDATA equal to the simulator's values
//!   with consecutive `seq` across the 255 wrap; a rebirth request gives fresh births.
//! - SIGKILL and restart: NDEATH (the will) with the old `bdSeq`, then NBIRTH with the next.
//! - The OPC UA server stops: DDEATH per shell; it is back: DBIRTH per shell, then DDATA.
//! - The primary host offline for `SPARKPLUG_HOST_OFFLINE_S` seconds (default 30): afterwards
//!   it gets every value of that window, historical, in order, then live values again.
//! - Births and data over TLS.
//! - A DCMD write reaches the simulator and is in the audit log; one to a read-only element
//!   is refused, and audited too.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use opcua::types::Variant;
use serde_json::{json, Value};

/// Simulator tick: the CNC values change up to 50 times a second.
const TICK_MS: u64 = 20;

const CNC_SUBMODEL: &str = "urn:aas-gateway:sim:sm:cnc1:operational-data";
const METER_SUBMODEL: &str = "urn:aas-gateway:sim:sm:meter1:operational-data";

/// (shell, node prefix, submodel, elements) of the two machines mapped.
const MACHINES: &[(&str, &str, &str, &[&str])] = &[
    (
        "CNC1",
        "nsu=urn:opcua-sim:cnc;s=CNC1.",
        CNC_SUBMODEL,
        &[
            "SpindleSpeed",
            "SpindleLoad",
            "FeedRate",
            "AxisPositions",
            "ProgramName",
            "PartCount",
            "ExecutionState",
            "AlarmCode",
            "Running",
            "LastCycleEnd",
        ],
    ),
    (
        "Meter1",
        "nsu=urn:opcua-sim:energy;s=Meter1.",
        METER_SUBMODEL,
        &[
            "ActivePower",
            "EnergyTotal",
            "Voltage",
            "Current",
            "PowerFactor",
            "Frequency",
        ],
    ),
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn gateway_config(endpoint: &str, dir: &std::path::Path, port: u16, extra: &str) -> String {
    let root = repo_root();
    let mut s = format!(
        r#"
[gateway]
name = "sp-{port}-{pid}"
[api]
listen = "127.0.0.1:0"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json", "{root}/aas-templates/meter1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
publishing_interval_ms = 100
sampling_interval_ms = 0
queue_size = 20
pki_dir = "{pki}"
[outbox]
dir = "outbox"
[mqtt]
enabled = false
[sparkplug]
enabled = true
port = {port}
group_id = "g{port}"
edge_node_id = "gw"
puback_timeout_s = 5
{extra}
"#,
        root = root.display(),
        pki = dir.join("pki").display(),
        pid = std::process::id(),
    );
    for (_, prefix, submodel, elements) in MACHINES {
        for e in *elements {
            s += &format!(
                "[[mapping]]\nnode_id = \"{prefix}{e}\"\nsubmodel = \"{submodel}\"\npath = \"{e}\"\n"
            );
        }
    }
    s
}

/// The metric name of an element: `OperationalData/<element>`; its shell and node id.
fn metric_of_node(node_id: &str) -> Option<(&'static str, String)> {
    MACHINES.iter().find_map(|(shell, prefix, _, elements)| {
        let e = node_id.strip_prefix(prefix)?;
        elements
            .contains(&e)
            .then(|| (*shell, format!("OperationalData/{e}")))
    })
}

/// How the host decodes a simulator value: floats as f64 (f32 widened exactly), instants as
/// ms since the epoch, arrays as lists. Written independently of the gateway's conversion.
fn expected(v: &Variant) -> Value {
    match v {
        Variant::Double(f) => json!(f),
        Variant::Float(f) => json!(*f as f64),
        Variant::Int32(i) => json!(i),
        Variant::UInt32(u) => json!(u),
        Variant::UInt16(u) => json!(u),
        Variant::Boolean(b) => json!(b),
        Variant::String(s) => json!(s.as_ref()),
        Variant::DateTime(dt) => json!(dt.as_chrono().timestamp_millis()),
        Variant::Array(a) => Value::Array(a.values.iter().map(expected).collect()),
        other => panic!("test does not expect {other:?}"),
    }
}

/// (shell, metric) → source ms → value, as the simulator produced them.
type Values = BTreeMap<(String, String), BTreeMap<i64, Value>>;

struct Produced {
    rx: tokio::sync::broadcast::Receiver<opcua_sim::Change>,
    all: Values,
}

impl Produced {
    fn drain(&mut self) -> &Values {
        loop {
            match self.rx.try_recv() {
                Ok(c) => {
                    let Some((shell, metric)) = metric_of_node(&c.node_id) else {
                        continue;
                    };
                    let ms = c.source_timestamp.as_chrono().timestamp_millis();
                    self.all
                        .entry((shell.to_string(), metric))
                        .or_default()
                        .insert(ms, expected(&c.value));
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    panic!("the test fell {n} changes behind the simulator")
                }
                Err(_) => break,
            }
        }
        &self.all
    }
}

/// The Sparkplug host: a child process whose stdout lines are collected.
struct Host {
    child: KillOnDrop,
    stdin: ChildStdin,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Host {
    fn start(port: u16, group: &str, host_id: Option<&str>) -> Host {
        let python = repo_root().join(".venv/bin/python");
        assert!(
            python.is_file(),
            "{} missing: run `.ci/peers.sh install`",
            python.display()
        );
        let mut cmd = Command::new(python);
        cmd.arg(repo_root().join("tests/peers/sparkplug_host.py"))
            .args([
                "--port",
                &port.to_string(),
                "--group",
                group,
                "--node",
                "gw",
            ]);
        if let Some(h) = host_id {
            cmd.args(["--host-id", h]);
        }
        let mut child: Child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Sparkplug host");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("host printed {line:?}: {e}"));
                sink.lock().unwrap().push(v);
            }
        });
        let host = Host {
            child: KillOnDrop(child),
            stdin,
            lines,
        };
        host.wait_for("host ready", Duration::from_secs(30), |l| {
            l.iter().any(|m| m["type"] == "ready")
        });
        host
    }

    fn command(&mut self, cmd: &str) {
        let before = self.count_type("done");
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        self.wait_for(cmd, Duration::from_secs(15), |l| {
            l.iter().filter(|m| m["type"] == "done").count() > before
        });
    }

    fn count_type(&self, t: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == t)
            .count()
    }

    fn snapshot(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the lines so far; fails naming `what` and the decoding
    /// errors seen.
    fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                let errors: Vec<_> = lines.iter().filter(|m| m["type"] == "ERROR").collect();
                assert!(errors.is_empty(), "the host could not decode: {errors:?}");
                if done(&lines) {
                    return;
                }
            }
            if Instant::now() >= deadline {
                let lines = self.snapshot();
                panic!(
                    "{what}: not seen within {within:?}; the host saw {} messages, last: {:?}",
                    lines.len(),
                    lines.iter().rev().take(3).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.0.kill();
    }
}

/// Equal values; numbers to 1e-12 relative (the host prints shortest round-trip decimals, which
/// serde_json's default float parser may read one ulp off).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

fn metric_names(m: &Value) -> Vec<String> {
    m["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect()
}

/// Index of the first message of `kind` at or after `from`.
fn find(lines: &[Value], from: usize, kind: &str) -> Option<usize> {
    (from..lines.len()).find(|&i| lines[i]["type"] == kind)
}

/// Sparkplug messages (those with a topic) from `from` on.
fn sparkplug_messages(lines: &[Value], from: usize) -> Vec<Value> {
    lines[from..]
        .iter()
        .filter(|m| m.get("topic").is_some())
        .cloned()
        .collect()
}

/// Checks NBIRTH then one DBIRTH per shell with every metric, starting at line `at`; returns
/// the NBIRTH's bdSeq.
fn check_births(lines: &[Value], at: usize) -> i64 {
    let nbirth = &lines[at];
    assert_eq!(nbirth["type"], "NBIRTH", "{nbirth}");
    assert_eq!(nbirth["seq"], 0);
    assert!(metric_names(nbirth).contains(&"Node Control/Rebirth".to_string()));
    let bd_seq = nbirth["bdSeq"].as_i64().expect("NBIRTH carries bdSeq");
    let msgs = sparkplug_messages(lines, at + 1);
    for (i, (shell, _, _, elements)) in MACHINES.iter().enumerate() {
        let dbirth = &msgs[i];
        assert_eq!(dbirth["type"], "DBIRTH", "{dbirth}");
        assert_eq!(dbirth["device"], *shell);
        assert_eq!(dbirth["seq"], i as i64 + 1);
        let mut names = metric_names(dbirth);
        names.sort();
        let mut want: Vec<_> = elements
            .iter()
            .map(|e| format!("OperationalData/{e}"))
            .collect();
        want.sort();
        assert_eq!(names, want, "{shell}: DBIRTH has every metric");
        for m in dbirth["metrics"].as_array().unwrap() {
            assert!(m["alias"].is_u64(), "every metric has an alias: {m}");
        }
    }
    bd_seq
}

async fn start_machines(dir: &std::path::Path) -> (opcua_sim::Simulator, Mosquitto, Produced) {
    let sim = start_sim(dir, TICK_MS).await;
    let produced = Produced {
        rx: sim.subscribe_changes(),
        all: Values::new(),
    };
    (sim, Mosquitto::start(), produced)
}

/// NBIRTH, one DBIRTH per shell with all metrics and their datatypes, then DDATA whose values
/// equal the simulator's, with consecutive `seq` across the 255 wrap; a rebirth request gives
/// fresh births with the same bdSeq and current values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn births_then_data_equal_to_the_simulator_across_the_seq_wrap_and_rebirth() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, broker, mut produced) = start_machines(dir.path()).await;
    let group = format!("g{}", broker.port);
    let mut host = Host::start(broker.port, &group, None);
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        gateway_config(&sim.endpoint_url(), dir.path(), broker.port, ""),
    )
    .unwrap();
    let (_gw, _api) = spawn_gateway(&cfg, &dir.path().join("gw.log"));

    // Enough messages for the seq to wrap (NBIRTH 0, DBIRTHs 1-2, then DDATA).
    host.wait_for("300 Sparkplug messages", Duration::from_secs(120), |l| {
        l.iter().filter(|m| m.get("topic").is_some()).count() >= 300
    });
    let lines = host.snapshot();
    let first = find(&lines, 0, "NBIRTH").expect("NBIRTH");
    assert_eq!(
        check_births(&lines, first),
        0,
        "a fresh node starts at bdSeq 0"
    );
    let msgs = sparkplug_messages(&lines, first);
    let types: Vec<_> = msgs.iter().map(|m| m["type"].clone()).collect();
    let seqs: Vec<i64> = msgs.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    for (i, s) in seqs.iter().enumerate() {
        assert_eq!(*s, i as i64 % 256, "seq of message {i} ({})", types[i]);
    }
    assert!(seqs.len() > 256 && seqs[256] == 0, "the seq wrapped");
    let datatypes: BTreeMap<String, i64> = msgs[1..3]
        .iter()
        .flat_map(|b| b["metrics"].as_array().unwrap().clone())
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["datatype"].as_i64().unwrap(),
            )
        })
        .collect();
    for (name, dt) in [
        ("OperationalData/SpindleSpeed", 10),
        ("OperationalData/AxisPositions", 31),
        ("OperationalData/PartCount", 7),
        ("OperationalData/AlarmCode", 3),
        ("OperationalData/Running", 11),
        ("OperationalData/ProgramName", 12),
        ("OperationalData/LastCycleEnd", 13),
        ("OperationalData/Voltage", 9),
    ] {
        assert_eq!(datatypes[name], dt, "{name}");
    }

    // Every DDATA value equals a simulator value of that element at that source time.
    let all = produced.drain().clone();
    let mut got: Values = Values::new();
    let mut newest = 0i64;
    for m in msgs.iter().filter(|m| m["type"] == "DDATA") {
        let shell = m["device"].as_str().unwrap().to_string();
        for x in m["metrics"].as_array().unwrap() {
            assert_eq!(x["historical"], false, "no backlog in this test: {x}");
            let name = x["name"].as_str().unwrap().to_string();
            let ts = x["ts"].as_i64().unwrap();
            newest = newest.max(ts);
            let key = (shell.clone(), name);
            let produced = all.get(&key);
            match produced.and_then(|v| v.get(&ts)) {
                Some(want) => assert!(
                    same(&x["value"], want),
                    "{key:?}@{ts}: {} != {want}",
                    x["value"]
                ),
                // The value the element had when the subscription started was set before
                // the test listened to the simulator's changes: older than every change (or
                // the element did not change at all during the test).
                None => assert!(
                    produced.is_none_or(|v| v.keys().next().is_some_and(|first| ts < *first)),
                    "{key:?}@{ts}: {} is no simulator value",
                    x["value"]
                ),
            }
            got.entry(key).or_default().insert(ts, x["value"].clone());
        }
    }
    // And none is missing: every simulator change from 2 s after the births to 2 s before
    // the newest value arrived.
    let births_ms = msgs[0]["metrics"][0]["ts"].as_i64().unwrap();
    let (from, to) = (births_ms + 2000, newest - 2000);
    assert!(to > from, "data for long enough");
    let mut compared = 0;
    for (key, values) in &all {
        for ts in values.range(from..=to).map(|(ts, _)| ts) {
            assert!(
                got.get(key).is_some_and(|g| g.contains_key(ts)),
                "{key:?}@{ts} produced but not received"
            );
            compared += 1;
        }
    }
    assert!(compared > 100, "only {compared} values compared");

    // Rebirth: fresh NBIRTH (seq 0, same bdSeq), DBIRTHs with current (non-null) values.
    let before = host.snapshot().len();
    host.command("rebirth");
    host.wait_for("births after rebirth", Duration::from_secs(20), |l| {
        find(l, before, "NBIRTH")
            .is_some_and(|i| l[i..].iter().filter(|m| m["type"] == "DBIRTH").count() >= 2)
    });
    let lines = host.snapshot();
    let at = find(&lines, before, "NBIRTH").unwrap();
    assert_eq!(
        check_births(&lines, at),
        0,
        "rebirth keeps the session's bdSeq"
    );
    let msgs = sparkplug_messages(&lines, at);
    for dbirth in &msgs[1..3] {
        for m in dbirth["metrics"].as_array().unwrap() {
            assert_eq!(m["null"], false, "current value in the rebirth: {m}");
        }
    }
    sim.stop().await;
}

/// SIGKILL: the broker publishes the will, NDEATH with the session's bdSeq; the restarted
/// gateway's NBIRTH has the next bdSeq. A clean stop (SIGTERM) sends NDEATH itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_give_ndeath_with_the_old_bdseq_then_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, broker, _produced) = start_machines(dir.path()).await;
    let group = format!("g{}", broker.port);
    let host = Host::start(broker.port, &group, None);
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        gateway_config(&sim.endpoint_url(), dir.path(), broker.port, ""),
    )
    .unwrap();
    let log = dir.path().join("gw.log");
    let nbirths = |l: &[Value]| l.iter().filter(|m| m["type"] == "NBIRTH").count();
    let ndeaths = |l: &[Value]| l.iter().filter(|m| m["type"] == "NDEATH").count();

    let (mut gw, _) = spawn_gateway(&cfg, &log);
    host.wait_for("NBIRTH", Duration::from_secs(60), |l| nbirths(l) == 1);
    gw.kill().unwrap(); // SIGKILL
    gw.wait().unwrap();
    host.wait_for("NDEATH (will)", Duration::from_secs(30), |l| {
        ndeaths(l) == 1
    });
    let (mut gw, _) = spawn_gateway(&cfg, &log);
    host.wait_for("second NBIRTH", Duration::from_secs(60), |l| {
        nbirths(l) == 2
    });
    // SIGTERM: a clean stop announces its death itself (a DISCONNECT does not fire the will).
    Command::new("kill")
        .args(["-TERM", &gw.id().to_string()])
        .status()
        .unwrap();
    gw.wait().unwrap();
    host.wait_for("NDEATH (clean stop)", Duration::from_secs(30), |l| {
        ndeaths(l) == 2
    });
    let (_gw, _) = spawn_gateway(&cfg, &log);
    // The births come as NBIRTH then one DBIRTH per shell: wait for all of them.
    host.wait_for(
        "third NBIRTH and its DBIRTHs",
        Duration::from_secs(60),
        |l| {
            nbirths(l) == 3
                && l.iter()
                    .rposition(|m| m["type"] == "NBIRTH")
                    .is_some_and(|at| {
                        l[at..].iter().filter(|m| m["type"] == "DBIRTH").count() >= MACHINES.len()
                    })
        },
    );

    let lines = host.snapshot();
    let seen: Vec<(String, i64)> = lines
        .iter()
        .filter(|m| m["type"] == "NBIRTH" || m["type"] == "NDEATH")
        .map(|m| {
            (
                m["type"].as_str().unwrap().to_string(),
                m["bdSeq"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = [
        ("NBIRTH", 0),
        ("NDEATH", 0),
        ("NBIRTH", 1),
        ("NDEATH", 1),
        ("NBIRTH", 2),
    ]
    .iter()
    .map(|(t, n)| (t.to_string(), *n))
    .collect();
    assert_eq!(seen, want);
    let at = lines.iter().rposition(|m| m["type"] == "NBIRTH").unwrap();
    check_births(&lines, at);
    sim.stop().await;
}

/// The primary host goes offline: the node sends NDEATH, disconnects and publishes nothing
/// until the host is back; then it births with the next bdSeq and the host receives every
/// value of the offline window, historical, in order, then live values again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_host_offline_window_arrives_historical_in_order() {
    let offline = Duration::from_secs(env_or("SPARKPLUG_HOST_OFFLINE_S", 30));
    let dir = tempfile::tempdir().unwrap();
    let (sim, broker, mut produced) = start_machines(dir.path()).await;
    let group = format!("g{}", broker.port);
    let mut host = Host::start(broker.port, &group, Some("scada"));
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        gateway_config(
            &sim.endpoint_url(),
            dir.path(),
            broker.port,
            "primary_host_id = \"scada\"",
        ),
    )
    .unwrap();
    let (_gw, _api) = spawn_gateway(&cfg, &dir.path().join("gw.log"));
    host.wait_for("live DDATA", Duration::from_secs(60), |l| {
        l.iter().filter(|m| m["type"] == "DDATA").count() >= 20
    });

    host.command("offline");
    host.wait_for(
        "NDEATH after the host went offline",
        Duration::from_secs(20),
        |l| l.iter().any(|m| m["type"] == "NDEATH"),
    );
    let offline_from = cnc_now_ms();
    let quiet_from = host.snapshot().len();
    std::thread::sleep(offline);
    let lines = host.snapshot();
    let during: Vec<_> = sparkplug_messages(&lines, quiet_from);
    assert!(
        during.is_empty(),
        "nothing is published while the primary host is offline: {:?}",
        during.first()
    );
    let online_at = cnc_now_ms();
    host.command("online");
    host.wait_for(
        "births and live data again",
        Duration::from_secs(120),
        |l| {
            let Some(at) = find(l, quiet_from, "NBIRTH") else {
                return false;
            };
            l[at..].iter().any(|m| {
                m["type"] == "DDATA"
                    && m["metrics"].as_array().unwrap().iter().any(|x| {
                        x["historical"] == false && x["ts"].as_i64().unwrap() > online_at + 2000
                    })
            })
        },
    );
    let lines = host.snapshot();
    let at = find(&lines, quiet_from, "NBIRTH").unwrap();
    assert_eq!(check_births(&lines, at), 1, "the next session's bdSeq");
    let msgs = sparkplug_messages(&lines, at);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(
            m["seq"].as_i64().unwrap(),
            i as i64 % 256,
            "seq after rebirth"
        );
    }

    // Historical values: in order per metric, equal to the simulator's; every value of the
    // offline window among them; once live values come, no historical one follows.
    let all = produced.drain().clone();
    let mut historical: Values = Values::new();
    let mut last_ts: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut live_started = false;
    for m in msgs.iter().filter(|m| m["type"] == "DDATA") {
        let shell = m["device"].as_str().unwrap().to_string();
        for x in m["metrics"].as_array().unwrap() {
            let key = (shell.clone(), x["name"].as_str().unwrap().to_string());
            let ts = x["ts"].as_i64().unwrap();
            if x["historical"] == true {
                assert!(!live_started, "{key:?}@{ts}: historical after live values");
                let last = last_ts.entry(key.clone()).or_insert(i64::MIN);
                assert!(
                    ts > *last,
                    "{key:?}: historical {ts} after {last}: out of order"
                );
                *last = ts;
                let want = all.get(&key).and_then(|v| v.get(&ts));
                assert!(
                    want.is_some_and(|w| same(&x["value"], w)),
                    "{key:?}@{ts}: {} != {want:?}",
                    x["value"]
                );
                historical
                    .entry(key)
                    .or_default()
                    .insert(ts, x["value"].clone());
            } else {
                live_started = true;
            }
        }
    }
    // The window: from the NDEATH to shortly before the host came back (a value produced in
    // the last moment may reach the outbox after the births and go live).
    let (from, to) = (offline_from, online_at - 1000);
    let mut window = 0;
    for (key, values) in &all {
        for ts in values.range(from..=to).map(|(ts, _)| ts) {
            assert!(
                historical.get(key).is_some_and(|h| h.contains_key(ts)),
                "{key:?}@{ts} produced while the host was offline, not received as historical"
            );
            window += 1;
        }
    }
    assert!(window > 50, "only {window} values in the offline window");
    sim.stop().await;
}

/// The OPC UA server stops: DDEATH for each shell it feeds (their values are no longer
/// current); it is back: DBIRTH for each, then DDATA again; `seq` stays consecutive throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_source_gives_ddeath_and_its_return_dbirth() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, broker, _produced) = start_machines(dir.path()).await;
    let (port, endpoint) = (sim.port(), sim.endpoint_url());
    let group = format!("g{}", broker.port);
    let host = Host::start(broker.port, &group, None);
    let cfg = dir.path().join("gw.toml");
    std::fs::write(&cfg, gateway_config(&endpoint, dir.path(), broker.port, "")).unwrap();
    let (_gw, _api) = spawn_gateway(&cfg, &dir.path().join("gw.log"));
    let count = |l: &[Value], t: &str| l.iter().filter(|m| m["type"] == t).count();
    host.wait_for("live DDATA", Duration::from_secs(60), |l| {
        count(l, "DDATA") >= 10
    });

    sim.stop().await;
    host.wait_for("DDEATH of both shells", Duration::from_secs(60), |l| {
        count(l, "DDEATH") >= 2
    });
    let died = host.snapshot().len();
    let sim = opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port,
        tick_ms: TICK_MS,
        pki_dir: dir.path().join("sim-pki"),
        ..Default::default()
    })
    .await
    .unwrap();
    host.wait_for("DBIRTHs and data again", Duration::from_secs(90), |l| {
        count(&l[died..], "DBIRTH") >= 2 && count(&l[died..], "DDATA") >= 5
    });

    let lines = host.snapshot();
    let first = find(&lines, 0, "NBIRTH").unwrap();
    let msgs = sparkplug_messages(&lines, first);
    assert_eq!(
        count(&msgs, "NBIRTH"),
        1,
        "no new session: only the devices died"
    );
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["seq"].as_i64().unwrap(), i as i64 % 256, "seq of {m}");
    }
    let ddeaths: Vec<_> = msgs
        .iter()
        .filter(|m| m["type"] == "DDEATH")
        .map(|m| m["device"].as_str().unwrap())
        .collect();
    assert_eq!(ddeaths, ["CNC1", "Meter1"]);
    // After its DDEATH a shell has no DDATA until its DBIRTH.
    for shell in ["CNC1", "Meter1"] {
        let death = msgs
            .iter()
            .position(|m| m["type"] == "DDEATH" && m["device"] == shell)
            .unwrap();
        let next = msgs[death + 1..]
            .iter()
            .find(|m| m["device"] == shell)
            .expect("the shell comes back");
        assert_eq!(next["type"], "DBIRTH", "{shell}: {next}");
    }
    sim.stop().await;
}

/// DCMD: a write to a `writable` element reaches the simulator (its new value comes back as
/// DDATA) and is in the audit log; a write to a read-only element is refused and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmd_writes_reach_the_simulator_and_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, broker, _produced) = start_machines(dir.path()).await;
    let group = format!("g{}", broker.port);
    let mut host = Host::start(broker.port, &group, None);
    let cfg = dir.path().join("gw.toml");
    let text = gateway_config(
        &sim.endpoint_url(),
        dir.path(),
        broker.port,
        "accept_writes = true",
    ) + &format!(
        "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeedSetpoint\"\n\
             submodel = \"{CNC_SUBMODEL}\"\npath = \"SpindleSpeedSetpoint\"\nwritable = true\n\
             [audit]\ndir = \"audit\"\n"
    );
    std::fs::write(&cfg, text).unwrap();
    let (_gw, _api) = spawn_gateway(&cfg, &dir.path().join("gw.log"));
    let setpoint = "OperationalData/SpindleSpeedSetpoint";
    host.wait_for("DBIRTH of CNC1", Duration::from_secs(60), |l| {
        l.iter()
            .any(|m| m["type"] == "DBIRTH" && metric_names(m).contains(&setpoint.to_string()))
    });
    // Data flows: the OPC UA session is up (a write before it is refused, and audited).
    host.wait_for("DDATA of CNC1", Duration::from_secs(60), |l| {
        l.iter()
            .any(|m| m["type"] == "DDATA" && m["device"] == "CNC1")
    });

    host.command(&format!("dcmd CNC1 {setpoint} DOUBLE 12345.5"));
    host.wait_for(
        "the written setpoint as DDATA",
        Duration::from_secs(30),
        |l| {
            l.iter().any(|m| {
                m["type"] == "DDATA"
                    && m["metrics"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["name"] == setpoint && x["value"] == json!(12345.5))
            })
        },
    );
    host.command("dcmd CNC1 OperationalData/SpindleSpeed DOUBLE 1.0");

    let audit_dir = dir.path().join("audit");
    let writes = || -> Vec<Value> {
        let mut out = Vec::new();
        for (_, _, path) in aas_gateway::audit::list_files(&audit_dir).unwrap_or_default() {
            for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    if v["event"] == "write" {
                        out.push(v);
                    }
                }
            }
        }
        out
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while writes().len() < 2 {
        assert!(Instant::now() < deadline, "audit: {:?}", writes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let w = writes();
    assert_eq!(w[0]["user"], "sparkplug:CNC1");
    assert_eq!(w[0]["via"], "sparkplug");
    assert_eq!(w[0]["path"], "SpindleSpeedSetpoint");
    assert_eq!(w[0]["new"], json!(12345.5));
    assert_eq!(w[0]["result"], "Good");
    assert_eq!(w[1]["path"], "SpindleSpeed");
    assert_eq!(w[1]["http_status"], 403, "{}", w[1]);
    sim.stop().await;
}

/// Over TLS (broker certificate checked against the configured CA): births and data arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn births_and_data_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), TICK_MS).await;
    let certs = TlsCerts::generate();
    let (broker, tls_port) = Mosquitto::start_with_tls(&certs);
    // The host listens on the plain listener of the same broker.
    let host = Host::start(broker.port, &format!("g{tls_port}"), None);
    let cfg = dir.path().join("gw.toml");
    let extra = format!("tls = true\nca_file = \"{}\"", certs.ca.display());
    std::fs::write(
        &cfg,
        gateway_config(&sim.endpoint_url(), dir.path(), tls_port, &extra),
    )
    .unwrap();
    let (_gw, _api) = spawn_gateway(&cfg, &dir.path().join("gw.log"));
    host.wait_for("births and data over TLS", Duration::from_secs(60), |l| {
        l.iter().filter(|m| m["type"] == "DDATA").count() >= 3
    });
    let lines = host.snapshot();
    check_births(&lines, find(&lines, 0, "NBIRTH").unwrap());
    sim.stop().await;
}

fn cnc_now_ms() -> i64 {
    cnc::now_nanos() / 1_000_000
}
