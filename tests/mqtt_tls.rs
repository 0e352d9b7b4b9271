//! MQTT over TLS against a real mosquitto TLS listener: values arrive when the broker's CA is
//! configured; with a CA that did not sign the broker, nothing is sent and the refused handshake
//! is counted as a sink error.

mod common;

use std::time::Duration;

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use common::*;
use tokio_util::sync::CancellationToken;

async fn run_gateway(
    tls_port: u16,
    ca: &std::path::Path,
    sim_url: &str,
    dir: &std::path::Path,
) -> (Gateway, CancellationToken) {
    let toml = cnc::config_toml(
        sim_url,
        tls_port,
        "http::addr=127.0.0.1:1;",
        &dir.join("pki"),
    )
    .replace(
        "topic_prefix = \"t\"",
        &format!(
            "topic_prefix = \"t\"\ntls = true\nca_file = \"{}\"",
            ca.display()
        ),
    )
    .replace("[questdb]\nenabled = true", "[questdb]\nenabled = false");
    let cfg_path = dir.join("gateway.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&cfg_path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    (gateway, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_flow_over_tls_and_a_wrong_ca_is_refused() {
    let certs = TlsCerts::generate();
    let (broker, tls_port) = Mosquitto::start_with_tls(&certs);
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 200).await;
    // The collector listens on the broker's plain listener; the gateway must use TLS.
    let collector = MqttCollector::start(broker.port, "t/#").await;

    let (gateway, shutdown) =
        run_gateway(tls_port, &certs.ca, &sim.endpoint_url(), dir.path()).await;
    collector
        .wait_for("t/CNC1/", 0, Duration::from_secs(30))
        .await;
    shutdown.cancel();
    gateway.wait().await.unwrap();
    let over_tls = collector.len();
    assert!(over_tls > 0);

    // A CA that did not sign the broker's certificate: the handshake fails, nothing arrives.
    let other = TlsCerts::generate();
    let dir2 = tempfile::tempdir().unwrap();
    let (gateway, shutdown) =
        run_gateway(tls_port, &other.ca, &sim.endpoint_url(), dir2.path()).await;
    // Wait until values reached the outbox (connecting can take a while on a busy machine),
    // then give the sink time to try the broker.
    let t0 = std::time::Instant::now();
    while gateway
        .stats
        .updates
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no values from the simulator"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refused handshake is counted as a sink error (and the sink never reports connected).
    let mqtt = gateway
        .stats
        .sinks
        .iter()
        .find(|(name, _)| name == "mqtt")
        .map(|(_, stats)| stats.clone())
        .expect("the mqtt sink's counters");
    let t1 = std::time::Instant::now();
    while mqtt.errors.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            t1.elapsed() < Duration::from_secs(60),
            "the refused TLS handshake was not counted as an MQTT sink error"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!mqtt.connected.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(
        collector.len(),
        over_tls,
        "nothing may be delivered to an unverified broker"
    );
    let pending = gateway.stats.outbox.as_ref().unwrap().lag("mqtt");
    assert!(pending > 0, "values wait in the outbox instead");
    shutdown.cancel();
    gateway.wait().await.unwrap();
    sim.stop().await;
}
