//! Load client for scale mode: subscribes to all `Scale.V<i>` and counts notifications.
//!
//! `cargo run --release -p opcua-sim --example scale_client -- URL N INTERVAL_MS SECONDS`

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use opcua::{
    client::{ClientBuilder, DataChangeCallback, IdentityToken},
    crypto::SecurityPolicy,
    types::{MessageSecurityMode, MonitoredItemCreateRequest, NodeId, TimestampsToReturn},
};

const SUBSCRIPTIONS: usize = 4;
const PER_CALL: usize = 10_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or("opc.tcp://127.0.0.1:4840/".into());
    let n: usize = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let interval_ms: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let seconds: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(30);

    // The client's own PKI (no key pair is created): a folder of this run, removed at exit.
    let pki = tempfile::tempdir()?;
    let mut client = ClientBuilder::new()
        .application_name("opcua-sim-scale-client")
        .application_uri("urn:opcua-sim-scale-client")
        .pki_dir(pki.path())
        .create_sample_keypair(false)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .max_message_size(64 * 1024 * 1024)
        .max_chunk_count(4096)
        .max_array_length(1_000_000)
        .client()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (session, event_loop) = client
        .connect_to_matching_endpoint(
            (
                url.as_str(),
                SecurityPolicy::None.to_str(),
                MessageSecurityMode::None,
            ),
            IdentityToken::Anonymous,
        )
        .await?;
    let _h = event_loop.spawn();
    session.wait_for_connection().await;
    let ns = session
        .get_namespace_index("urn:opcua-sim:scale")
        .await
        .map_err(|e| anyhow::anyhow!("namespace: {e}"))?;

    let count = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for _ in 0..SUBSCRIPTIONS {
        let c = count.clone();
        subs.push(
            session
                .create_subscription(
                    Duration::from_millis(interval_ms),
                    30,
                    10,
                    10_000,
                    0,
                    true,
                    DataChangeCallback::new(move |_, _| {
                        c.fetch_add(1, Ordering::Relaxed);
                    }),
                )
                .await?,
        );
    }
    let t0 = Instant::now();
    for start in (0..n).step_by(PER_CALL) {
        let items: Vec<MonitoredItemCreateRequest> = (start..(start + PER_CALL).min(n))
            .map(|i| {
                let mut r: MonitoredItemCreateRequest =
                    NodeId::new(ns, format!("Scale.V{i}")).into();
                r.requested_parameters.sampling_interval = interval_ms as f64;
                r.requested_parameters.queue_size = 2;
                r
            })
            .collect();
        let sub = subs[(start / PER_CALL) % SUBSCRIPTIONS];
        let res = session
            .create_monitored_items(sub, TimestampsToReturn::Both, items)
            .await?;
        let bad = res
            .iter()
            .filter(|r| !r.result.status_code.is_good())
            .count();
        anyhow::ensure!(bad == 0, "{bad} monitored items failed");
    }
    eprintln!("monitored {n} items in {:?}", t0.elapsed());

    // Skip the initial values, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c0 = count.load(Ordering::Relaxed);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let got = count.load(Ordering::Relaxed) - c0;
    let secs = t0.elapsed().as_secs_f64();
    let expected = n as f64 * secs * 1000.0 / interval_ms as f64;
    println!(
        "notifications/s {:.0} (expected {:.0}, {:.1} %)",
        got as f64 / secs,
        expected / secs,
        100.0 * got as f64 / expected
    );
    let _ = session.disconnect().await;
    Ok(())
}
