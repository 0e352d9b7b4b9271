//! Real peers for integration tests: each test starts its own mosquitto and VictoriaMetrics (a
//! real ILP server) on free loopback ports and stops them on drop. They are installed by
//! `.ci/peers.sh install`; a missing binary fails the test with that hint, never skips it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A mosquitto broker of the test's own.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Mosquitto {
        let bin = require("mosquitto");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 1000000\nmax_inflight_messages 1000\nuser root\nlog_dest stderr\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        wait_for_port(port, "mosquitto", &mut child);
        Mosquitto {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn stop(mut self) -> u16 {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.port
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VictoriaMetrics, accepting ILP over HTTP on `/write`.
pub struct VictoriaMetrics {
    pub port: u16,
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
        let bin = require("victoria-metrics");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = Command::new(bin)
            .arg(format!("-storageDataPath={}", dir.path().display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=100y")
            .arg("-search.disableCache")
            .arg("-search.latencyOffset=0s")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start victoria-metrics");
        wait_for_port(port, "victoria-metrics", &mut child);
        VictoriaMetrics {
            port,
            child,
            _dir: dir,
        }
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
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(format!("test-collector-{port}"), "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
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
