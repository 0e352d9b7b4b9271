//! Real peers for integration tests: each test starts its own mosquitto and VictoriaMetrics (a
//! real ILP server) on free loopback ports and stops them on drop. They are installed by
//! `.ci/peers.sh install`; a missing binary fails the test with that hint, never skips it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bundled simulator on a free port, changing its values every `tick_ms`, with its PKI
/// under `<dir>/sim-pki`.
pub async fn start_sim(dir: &std::path::Path, tick_ms: u64) -> opcua_sim::Simulator {
    opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port: 0,
        tick_ms,
        pki_dir: dir.join("sim-pki"),
        ..Default::default()
    })
    .await
    .expect("start the bundled simulator")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(binary: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join(binary);
        if p.is_file() {
            return p;
        }
    }
    panic!("{binary} is not installed: run `.ci/peers.sh install` (or the README's test command)");
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during start: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on port {port} within 15 s");
}

/// Sends SIGTERM (so the peer saves its state) and waits for the process to end.
fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A mosquitto broker of the test's own, with persistence so that subscribers' persistent
/// sessions survive a broker restart.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    conf: PathBuf,
    _dir: tempfile::TempDir,
    /// Files the config refers to (e.g. the password file).
    _extra_dir: Option<tempfile::TempDir>,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_with("")
    }

    /// A broker with a second, TLS listener (certificates from [`TlsCerts`]); returns it and
    /// the TLS port.
    pub fn start_with_tls(certs: &TlsCerts) -> (Mosquitto, u16) {
        let tls_port = free_port();
        let extra = format!(
            "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            certs.ca.display(),
            certs.server_cert.display(),
            certs.server_key.display()
        );
        let m = Self::start_with(&extra);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto's TLS listener did not open"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        (m, tls_port)
    }

    /// A broker that accepts only `user` with `password` (no anonymous clients).
    pub fn start_with_password(user: &str, password: &str) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        let status = Command::new(require("mosquitto_passwd"))
            .args(["-b", "-c"])
            .arg(&file)
            .args([user, password])
            .status()
            .expect("run mosquitto_passwd");
        assert!(status.success(), "mosquitto_passwd failed");
        let mut m = Self::start_conf(false, &format!("password_file {}\n", file.display()));
        m._extra_dir = Some(dir);
        m
    }

    fn start_with(extra: &str) -> Mosquitto {
        Self::start_conf(true, extra)
    }

    fn start_conf(allow_anonymous: bool, extra: &str) -> Mosquitto {
        let bin = require("mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous {allow_anonymous}\npersistence true\npersistence_location {}/\n\
                 max_queued_messages 1000000\nmax_inflight_messages 1000\nuser root\nlog_dest stderr\n",
                dir.path().display()
            ) + extra,
        )
        .unwrap();
        let child = Self::spawn(&bin, &conf, port);
        Mosquitto {
            port,
            child,
            conf,
            _dir: dir,
            _extra_dir: None,
        }
    }

    fn spawn(bin: &std::path::Path, conf: &std::path::Path, port: u16) -> Child {
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        wait_for_port(port, "mosquitto", &mut child);
        child
    }

    /// Stops the broker (it saves its sessions).
    pub fn stop(&mut self) {
        terminate(&mut self.child);
    }

    /// Starts it again on the same port with the same state.
    pub fn restart(&mut self) {
        self.child = Self::spawn(&require("mosquitto"), &self.conf, self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VictoriaMetrics, accepting ILP over HTTP on `/write` (and over TCP when started with
/// [`VictoriaMetrics::start_with_tcp`]).
pub struct VictoriaMetrics {
    pub port: u16,
    /// Port of the plain-TCP line-protocol listener, if started with one.
    pub tcp_port: Option<u16>,
    child: Child,
    _dir: tempfile::TempDir,
}

/// One exported series: its labels and samples.
#[derive(Debug, Clone)]
pub struct Series {
    pub metric: serde_json::Map<String, serde_json::Value>,
    pub values: Vec<f64>,
    pub timestamps_ms: Vec<i64>,
}

impl VictoriaMetrics {
    pub fn start() -> VictoriaMetrics {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(dir.path(), port, None);
        VictoriaMetrics {
            port,
            tcp_port: None,
            child,
            _dir: dir,
        }
    }

    /// Also listens for the line protocol over plain TCP (ILP `tcp::`).
    pub fn start_with_tcp() -> VictoriaMetrics {
        let dir = tempfile::tempdir().unwrap();
        let (port, tcp_port) = (free_port(), free_port());
        let child = Self::spawn(dir.path(), port, Some(tcp_port));
        VictoriaMetrics {
            port,
            tcp_port: Some(tcp_port),
            child,
            _dir: dir,
        }
    }

    fn spawn(dir: &std::path::Path, port: u16, tcp_port: Option<u16>) -> Child {
        let mut command = Command::new(require("victoria-metrics"));
        if let Some(tcp) = tcp_port {
            command.arg(format!("-influxListenAddr=127.0.0.1:{tcp}"));
        }
        let mut child = command
            .arg(format!("-storageDataPath={}", dir.display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .arg("-search.disableCache")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start victoria-metrics");
        wait_for_port(port, "victoria-metrics", &mut child);
        if let Some(tcp) = tcp_port {
            wait_for_port(tcp, "victoria-metrics (line protocol over TCP)", &mut child);
        }
        child
    }

    /// Stops the server (it flushes its data first).
    pub fn stop(&mut self) {
        terminate(&mut self.child);
    }

    /// Starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self._dir.path(), self.port, self.tcp_port);
    }

    /// questdb-rs config string for this server (VictoriaMetrics speaks ILP protocol version 1).
    pub fn ilp_conf(&self) -> String {
        format!("http::addr=127.0.0.1:{};protocol_version=1;", self.port)
    }

    /// All series whose name matches `regex`, read back after forcing a flush.
    pub async fn export(&self, regex: &str) -> Vec<Series> {
        let base = format!("http://127.0.0.1:{}", self.port);
        let http = reqwest::Client::new();
        http.get(format!("{base}/internal/force_flush"))
            .send()
            .await
            .unwrap();
        let text = http
            .get(format!("{base}/api/v1/export"))
            .query(&[
                ("match[]", format!("{{__name__=~\"{regex}\"}}")),
                ("end", "4000000000".to_string()),
            ])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                Series {
                    metric: v["metric"].as_object().unwrap().clone(),
                    values: v["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap())
                        .collect(),
                    timestamps_ms: v["timestamps"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_i64().unwrap())
                        .collect(),
                }
            })
            .collect()
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects every message on `filter` from a broker, in a background task.
pub struct MqttCollector {
    pub messages: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MqttCollector {
    pub async fn start(port: u16, filter: &str) -> MqttCollector {
        Self::start_as(port, filter, None).await
    }

    /// [`MqttCollector::start`], logging in with `(user, password)` when given.
    pub async fn start_as(
        port: u16,
        filter: &str,
        credentials: Option<(&str, &str)>,
    ) -> MqttCollector {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(format!("test-collector-{port}"), "127.0.0.1", port);
        if let Some((user, password)) = credentials {
            opts.set_credentials(user, password);
        }
        opts.set_max_packet_size(1 << 20, 1 << 20);
        // A persistent session: the broker keeps our messages while we (or it) reconnect.
        opts.set_clean_session(false);
        let (client, mut events) = AsyncClient::new(opts, 100);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = messages.clone();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let task = tokio::spawn(async move {
            let _client = client; // keep the request channel open
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let body = serde_json::from_slice(&p.payload).unwrap_or_else(|_| {
                            serde_json::Value::String(String::from_utf8_lossy(&p.payload).into())
                        });
                        sink.lock().unwrap().push((p.topic.clone(), body));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("MQTT collector subscribed")
            .unwrap();
        MqttCollector { messages, task }
    }

    pub fn snapshot(&self) -> Vec<(String, serde_json::Value)> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits until a message whose topic starts with `prefix` arrived after `already` messages.
    pub async fn wait_for(&self, prefix: &str, already: usize, within: Duration) {
        let t0 = Instant::now();
        loop {
            if self
                .messages
                .lock()
                .unwrap()
                .iter()
                .skip(already)
                .any(|(t, _)| t.starts_with(prefix))
            {
                return;
            }
            assert!(
                t0.elapsed() < within,
                "no message on {prefix}* within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn len(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
}

impl Drop for MqttCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Path of the repository root (for config and template files).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Parses an RFC 3339 timestamp to nanoseconds since the epoch.
pub fn parse_ts(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .timestamp_nanos_opt()
        .unwrap()
}

/// The scenario most tests share: the simulator's CNC machine mapped onto CNC1's
/// OperationalData, and helpers to compare what it produced with what arrived.
pub mod cnc {
    use std::collections::BTreeMap;

    use opcua::types::Variant;
    use serde_json::{json, Value};

    pub const SUBMODEL: &str = "urn:aas-gateway:sim:sm:cnc1:operational-data";

    /// The CNC nodes mapped, each onto the element of the same idShort.
    pub const NODES: &[&str] = &[
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
    ];

    /// Per element: source timestamp (ns) → value as JSON.
    pub type Values = BTreeMap<String, BTreeMap<i64, Value>>;

    /// A gateway config for the scenario; the outbox lives next to the config file.
    pub fn config_toml(
        endpoint: &str,
        mqtt_port: u16,
        ilp_conf: &str,
        pki: &std::path::Path,
    ) -> String {
        let mut s = format!(
            r#"
[gateway]
name = "test-gateway-{mqtt_port}-{pid}"
[api]
listen = "127.0.0.1:0"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
publishing_interval_ms = 100
sampling_interval_ms = 0
queue_size = 20
pki_dir = "{pki}"
[mqtt]
port = {mqtt_port}
topic_prefix = "t"
[questdb]
enabled = true
conf = "{ilp_conf}"
flush_interval_ms = 200
[outbox]
dir = "outbox"
"#,
            root = super::repo_root().display(),
            pki = pki.display(),
            // The process id too: a gateway of another test run that outlived its broker may
            // reconnect to a broker that reuses the port, and must not share our client id.
            pid = std::process::id(),
        );
        for node in NODES {
            s += &format!(
                "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.{node}\"\nsubmodel = \"{SUBMODEL}\"\npath = \"{node}\"\n"
            );
        }
        s
    }

    /// The JSON value a simulator variant must appear as — written independently of the
    /// gateway's own conversion code.
    pub fn expected_json(v: &Variant) -> Value {
        match v {
            Variant::Double(f) => json!(f),
            Variant::Float(f) => json!(f),
            Variant::Int32(i) => json!(i),
            Variant::UInt32(u) => json!(u),
            Variant::UInt16(u) => json!(u),
            Variant::Boolean(b) => json!(b),
            Variant::String(s) => json!(s.as_ref()),
            Variant::DateTime(dt) => json!(dt
                .as_chrono()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            Variant::Array(a) => Value::Array(a.values.iter().map(expected_json).collect()),
            other => panic!("test does not expect {other:?}"),
        }
    }

    fn in_windows(ts: i64, windows: &[(i64, i64)]) -> bool {
        windows.iter().any(|(a, b)| ts >= *a && ts <= *b)
    }

    /// What the simulator produced inside the windows (drains the receiver).
    pub fn produced(
        rx: &mut tokio::sync::broadcast::Receiver<opcua_sim::Change>,
        windows: &[(i64, i64)],
    ) -> Values {
        let mut out = Values::new();
        loop {
            match rx.try_recv() {
                Ok(c) => {
                    let Some(name) = c.node_id.strip_prefix("nsu=urn:opcua-sim:cnc;s=CNC1.") else {
                        continue;
                    };
                    if !NODES.contains(&name) {
                        continue;
                    }
                    let ts =
                        aas_gateway::sources::opcua::convert::datetime_nanos(&c.source_timestamp);
                    if in_windows(ts, windows) {
                        out.entry(name.to_string())
                            .or_default()
                            .insert(ts, expected_json(&c.value));
                    }
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    panic!("the test fell {n} changes behind the simulator")
                }
                Err(_) => break,
            }
        }
        out
    }

    /// What arrived over MQTT inside the windows; also checks per-element order (duplicates of
    /// an already seen timestamp are allowed: at least once) and returns the duplicate count.
    pub fn received(
        messages: &[(String, Value)],
        prefix: &str,
        windows: &[(i64, i64)],
    ) -> (Values, usize) {
        let mut out = Values::new();
        let mut seen: BTreeMap<String, std::collections::BTreeSet<i64>> = BTreeMap::new();
        let mut newest: BTreeMap<String, i64> = BTreeMap::new();
        let mut duplicates = 0;
        for (topic, body) in messages {
            let Some(path) = topic.strip_prefix(prefix) else {
                continue;
            };
            let ts = super::parse_ts(body["timestamp"].as_str().unwrap());
            if !seen.entry(path.to_string()).or_default().insert(ts) {
                duplicates += 1;
                continue;
            }
            let last = newest.entry(path.to_string()).or_insert(i64::MIN);
            assert!(
                ts > *last,
                "{path}: value of {ts} arrived after a newer one ({last})"
            );
            *last = ts;
            if in_windows(ts, windows) {
                out.entry(path.replace('/', "."))
                    .or_default()
                    .insert(ts, body["value"].clone());
            }
        }
        out.retain(|_, v| !v.is_empty());
        (out, duplicates)
    }

    /// Numeric values (what VictoriaMetrics can hold) of `values`, at millisecond precision.
    pub fn numeric_ms(values: &Values) -> BTreeMap<String, BTreeMap<i64, String>> {
        let mut out: BTreeMap<String, BTreeMap<i64, String>> = BTreeMap::new();
        for (path, vs) in values {
            for (ts, v) in vs {
                let number = match v {
                    Value::Number(n) => n.as_f64().unwrap(),
                    Value::Bool(b) => *b as u8 as f64,
                    _ => continue,
                };
                out.entry(path.clone())
                    .or_default()
                    .insert(ts / 1_000_000, format!("{number}"));
            }
        }
        out
    }

    /// The numeric values stored in the ILP server inside the windows.
    pub async fn stored(
        ilp: &super::VictoriaMetrics,
        windows: &[(i64, i64)],
    ) -> BTreeMap<String, BTreeMap<i64, String>> {
        let mut out: BTreeMap<String, BTreeMap<i64, String>> = BTreeMap::new();
        for s in ilp.export("OperationalData_value_(double|long|bool)").await {
            assert_eq!(s.metric["asset"], "CNC1");
            let element = s.metric["element"].as_str().unwrap().to_string();
            for (v, ts) in s.values.iter().zip(&s.timestamps_ms) {
                if in_windows(ts * 1_000_000, windows) {
                    out.entry(element.clone())
                        .or_default()
                        .insert(*ts, format!("{v}"));
                }
            }
        }
        out
    }

    pub fn now_nanos() -> i64 {
        chrono::Utc::now().timestamp_nanos_opt().unwrap()
    }
}

/// A throw-away CA and a server certificate for 127.0.0.1, made with the openssl CLI.
pub struct TlsCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsCerts {
    pub fn generate() -> TlsCerts {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl is installed");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=aas-gateway test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        TlsCerts {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            _dir: dir,
        }
    }
}

/// A PKI directory for gateways under test whose certificate already exists: creating an RSA
/// key pair takes seconds in a debug build, which would blur the timing tests measure. Shared
/// by the tests of one test binary; created once.
pub fn gateway_pki() -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    let name = exe.file_stem().unwrap().to_string_lossy().to_string();
    let dir = std::env::temp_dir().join(format!("aas-gateway-test-pki-{name}"));
    aas_gateway::sources::opcua::pki::ensure_own_certificate(&dir).unwrap();
    dir
}

/// An OPC UA server of another implementation, started as a child process that prints its
/// endpoint URL as the first line on stdout when ready. Killed on drop.
pub struct PeerServer {
    /// Endpoint URL as printed by the peer.
    pub url: String,
    child: Child,
}

impl PeerServer {
    /// Starts `program args...` and waits up to 60 s for the URL line (the first stdout line
    /// that starts with `opc.tcp://`).
    pub fn start(program: &std::path::Path, args: &[String]) -> PeerServer {
        use std::io::BufRead;
        assert!(
            program.exists(),
            "{} is missing: run `.ci/peers.sh install`",
            program.display()
        );
        let mut child = Command::new(program)
            .args(args)
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The URL line; libraries may log to stdout before it (node-opcua does), and the
            // pipe keeps being drained so the peer never blocks on it.
            let mut sent = false;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && line.trim().starts_with("opc.tcp://") {
                    let _ = tx.send(line);
                    sent = true;
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url.trim().to_string(),
            Err(_) => {
                let _ = child.kill();
                panic!("{} {args:?} printed no URL within 60 s", program.display());
            }
        };
        PeerServer { url, child }
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Validates AAS JSON files with the independent Python validators (aas-core3.0, basyx).
pub fn check_aas_file(path: &std::path::Path) {
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/validators/check_aas.py"))
        .arg("--check-refs")
        .arg(path)
        .output()
        .expect("run tests/validators/check_aas.py (.ci/peers.sh install)");
    assert!(
        out.status.success(),
        "{} is not a valid AAS environment:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP forwarder that can "freeze": connections open at the moment of `freeze()` stay open
/// but carry no more bytes in either direction (a server that hangs without closing), while
/// connections opened afterwards work normally.
pub struct FreezingProxy {
    /// The port clients connect to.
    pub port: u16,
    epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingProxy {
    /// Forwards 127.0.0.1:`port` → 127.0.0.1:`target`.
    pub async fn start(target: u16) -> FreezingProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let epoch = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let ep = epoch.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let born = ep.load(Ordering::SeqCst);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (mut r, mut w) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let ep = ep.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if ep.load(Ordering::SeqCst) != born {
                                // Frozen: hold both sockets open, forward nothing, forever.
                                std::future::pending::<()>().await;
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        FreezingProxy { port, epoch, task }
    }

    /// Freezes every connection open now.
    pub fn freeze(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A child process that is killed when the guard drops, so a failing test leaves no gateway
/// running behind it.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `aas-gateway run -c cfg` with its log appended to `log`, waits for the API URL on
/// stdout and returns the process with the API address (`127.0.0.1:port`).
pub fn spawn_gateway(cfg: &std::path::Path, log: &std::path::Path) -> (KillOnDrop, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["run", "-c"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let api = line
        .trim()
        .strip_prefix("http://")
        .and_then(|l| l.strip_suffix("/api/v3.0"))
        .unwrap_or_else(|| panic!("first stdout line: {line:?}"))
        .to_string();
    (KillOnDrop(child), api)
}
