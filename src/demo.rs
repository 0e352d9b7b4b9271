//! The zero-setup demo: the bundled OPC UA simulator, an embedded MQTT broker (rumqttd) and the
//! gateway, in one process, on loopback. Nothing external is needed.
//!
//! The config is `config/demo.toml` from the working directory when it exists (so edits to it
//! take effect), else a copy compiled into the binary. Its OPC UA endpoint and MQTT broker are
//! replaced by the ones the demo starts.
//!
//! The demo keeps its state (outbox, audit log) in a temporary directory of its own, removed
//! when it ends: two demos can run side by side (with `--port 0`), and a demo never delivers
//! values that a `run -c config/factory.toml` left in `data/`. Only with an explicit `--config`
//! are the `[outbox]` and `[audit]` directories of that file used.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::pipeline::Gateway;

const EMBEDDED_CONFIG: &str = include_str!("../config/demo.toml");
const EMBEDDED_CNC1: &str = include_str!("../aas-templates/cnc1.aas.json");

/// A running demo.
pub struct Demo {
    pub gateway: Gateway,
    pub simulator: opcua_sim::Simulator,
    pub broker_addr: SocketAddr,
    /// The demo's state and, when needed, its built-in config; removed on drop.
    _scratch: tempfile_dir::ScratchDir,
}

impl Demo {
    pub async fn start(
        api_port: u16,
        questdb: Option<String>,
        config: Option<PathBuf>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Demo> {
        let dir = tempfile_dir::ScratchDir::new()?;
        let explicit_config = config.is_some();
        let mut cfg = match config {
            Some(path) => Config::load(&path)?,
            None if std::path::Path::new("config/demo.toml").is_file() => {
                info!("demo: using config/demo.toml");
                Config::load(std::path::Path::new("config/demo.toml"))?
            }
            None => {
                info!("demo: config/demo.toml not found here; using the built-in copy");
                std::fs::create_dir_all(dir.path().join("config"))?;
                std::fs::create_dir_all(dir.path().join("aas-templates"))?;
                std::fs::write(dir.path().join("config/demo.toml"), EMBEDDED_CONFIG)?;
                std::fs::write(
                    dir.path().join("aas-templates/cnc1.aas.json"),
                    EMBEDDED_CNC1,
                )?;
                Config::load(&dir.path().join("config/demo.toml"))?
            }
        };
        if !explicit_config {
            cfg.outbox.dir = dir.path().join("state");
            cfg.audit.dir = dir.path().join("state/audit");
            info!(dir = %dir.path().join("state").display(), "demo: outbox and audit log in a temporary directory (removed at exit)");
        }

        let pki_dir = cfg.resolve(&PathBuf::from("../pki/simulator"));
        let simulator = opcua_sim::Simulator::start(opcua_sim::SimOptions {
            port: 0,
            pki_dir,
            ..Default::default()
        })
        .await?;
        info!(endpoint = %simulator.endpoint_url(), "demo: OPC UA simulator started");

        let broker_addr = start_embedded_broker()?;
        info!(broker = %broker_addr, "demo: embedded MQTT broker started");

        for src in &mut cfg.opcua {
            src.endpoint = simulator.endpoint_url();
        }
        cfg.mqtt.enabled = true;
        cfg.mqtt.host = broker_addr.ip().to_string();
        cfg.mqtt.port = broker_addr.port();
        cfg.api.listen = crate::api::with_port(&cfg.api.listen, api_port);
        match questdb {
            Some(conf) => {
                cfg.questdb.enabled = true;
                cfg.questdb.conf = conf;
            }
            None => info!("demo: QuestDB sink off; pass --questdb \"http::addr=HOST:9000;\" to write there too"),
        }
        let topic_filter = format!("{}/#", cfg.mqtt.topic_prefix);
        let gateway = Gateway::start(cfg, shutdown.clone()).await?;
        tokio::spawn(watch_mqtt(broker_addr, topic_filter, shutdown));
        Ok(Demo {
            gateway,
            simulator,
            broker_addr,
            _scratch: dir,
        })
    }

    pub async fn wait(self) -> anyhow::Result<()> {
        let result = self.gateway.wait().await;
        self.simulator.stop().await;
        result
    }
}

/// Starts rumqttd on a free loopback port, in a thread of its own (its `start` blocks).
fn start_embedded_broker() -> anyhow::Result<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let config: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {
            "id": 0, "max_connections": 100, "max_outgoing_packet_count": 1000,
            "max_segment_size": 104857600, "max_segment_count": 10
        },
        "v4": { "1": {
            "name": "v4-1", "listen": addr.to_string(), "next_connection_delay_ms": 1,
            "connections": {
                "connection_timeout_ms": 60000, "max_payload_size": 1048576,
                "max_inflight_count": 1000, "dynamic_filters": true
            }
        }}
    }))?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    // Wait until it accepts connections.
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("the embedded MQTT broker did not start on {addr}")
}

/// Subscribes to the demo's topics and logs a sample every few seconds, proving the MQTT path.
async fn watch_mqtt(broker: SocketAddr, filter: String, shutdown: CancellationToken) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let opts = MqttOptions::new("demo-watcher", broker.ip().to_string(), broker.port());
    let (client, mut events) = AsyncClient::new(opts, 100);
    if let Err(e) = client.subscribe(&filter, QoS::AtMostOnce).await {
        warn!(error = %e, "demo: MQTT watcher could not subscribe");
        return;
    }
    let mut received = 0u64;
    let mut last_log = tokio::time::Instant::now();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                received += 1;
                if last_log.elapsed() >= Duration::from_secs(5) {
                    last_log = tokio::time::Instant::now();
                    info!(
                        messages = received,
                        topic = %p.topic,
                        payload = %String::from_utf8_lossy(&p.payload),
                        "demo: MQTT sample"
                    );
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A temporary directory removed on drop (for the built-in config copy).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct ScratchDir(PathBuf);

    impl ScratchDir {
        pub fn new() -> std::io::Result<Self> {
            // A fresh directory of this process: two demos never share one.
            let dir = std::env::temp_dir().join(format!("aas-gateway-demo-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir); // left by a killed process with a reused pid
            std::fs::create_dir_all(&dir)?;
            Ok(ScratchDir(dir))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
