//! MQTT sink: one message per value on `<prefix>/<shell>/<submodel>/<idShortPath with />`.
//!
//! Payload (JSON): `{"value": 8123.5, "valueType": "xs:double", "timestamp": "...Z",
//! "serverTimestamp": "...Z", "quality": "good", "statusCode": 0, "submodelId": "...",
//! "idShortPath": "..."}`. The gateway's own state is retained on `<prefix>/_gateway/<name>/state`
//! (`online` after connecting, `offline` as last will).
//!
//! The rumqttc event loop is polled continuously by its own task (nothing moves otherwise) and
//! reconnects with backoff; the session is persistent (`clean_session = false`) so the broker
//! and the client both keep unacknowledged QoS 1 messages across a reconnect.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::SinkStats;
use crate::config::MqttConfig;
use crate::model::{format_timestamp, SubmodelUpdate, UpdateBatch};
use crate::sources::opcua::Backoff;

/// The JSON body of a value message.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    value: serde_json::Value,
    value_type: &'static str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_timestamp: Option<String>,
    quality: &'static str,
    status_code: u32,
    submodel_id: &'a str,
    id_short_path: &'a str,
}

pub fn payload(u: &SubmodelUpdate) -> Vec<u8> {
    let p = Payload {
        value: u.target.value_type.json(&u.value),
        value_type: u.target.value_type.as_str(),
        timestamp: format_timestamp(u.source_ts_nanos),
        server_timestamp: (u.server_ts_nanos != 0).then(|| format_timestamp(u.server_ts_nanos)),
        quality: u.quality().as_str(),
        status_code: u.status,
        submodel_id: &u.target.submodel_id,
        id_short_path: &u.target.id_short_path,
    };
    serde_json::to_vec(&p).expect("payload serialises")
}

/// Topic of the gateway's retained online/offline state.
pub fn state_topic(cfg: &MqttConfig, gateway_name: &str) -> String {
    format!("{}/_gateway/{gateway_name}/state", cfg.topic_prefix)
}

/// Runs the MQTT sink until `rx` closes (pipeline drained), then waits for outstanding PUBACKs.
pub async fn run(
    cfg: MqttConfig,
    gateway_name: String,
    mut rx: mpsc::Receiver<UpdateBatch>,
    stats: Arc<SinkStats>,
    shutdown: CancellationToken,
) {
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| gateway_name.clone());
    let state_topic = state_topic(&cfg, &gateway_name);
    let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)))
        .set_clean_session(false)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(1000)
        .set_last_will(LastWill::new(
            &state_topic,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    let (client, mut event_loop) = AsyncClient::new(opts, cfg.queue_capacity);
    let qos = if cfg.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };

    // The event loop task: polls forever, counts confirmations, announces the gateway.
    let loop_stats = stats.clone();
    let loop_client = client.clone();
    let stop_polling = CancellationToken::new();
    let stop = stop_polling.clone();
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let poller = tokio::spawn(async move {
        let mut backoff = Backoff::new();
        let mut connected = false;
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = event_loop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    info!(broker = %broker, "connected to the MQTT broker");
                    connected = true;
                    backoff.reset();
                    // QoS 0 so that its PUBACK never counts as a confirmed value.
                    let _ = loop_client.try_publish(&state_topic, QoS::AtMostOnce, true, "online");
                }
                Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => {
                    loop_stats.confirmed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    loop_stats.errors.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.next_delay();
                    if connected {
                        warn!(broker = %broker, error = %e, "lost the MQTT broker; messages wait in the session until it is back");
                    } else {
                        warn!(broker = %broker, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot reach the MQTT broker");
                    }
                    connected = false;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    });

    let mut published = 0u64;
    while let Some(batch) = rx.recv().await {
        for u in batch.iter() {
            stats.received.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = client
                .publish(u.target.topic.as_str(), qos, cfg.retain, payload(u))
                .await
            {
                // Only happens when the event loop is gone, i.e. during shutdown.
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, topic = %u.target.topic, "MQTT publish failed");
            } else {
                published += 1;
                if qos == QoS::AtMostOnce {
                    // QoS 0 has no confirmation: handing it to the client is all there is.
                    stats.confirmed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    // Drained: wait (bounded) until the broker confirmed everything we handed over.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while stats.confirmed.load(Ordering::Relaxed) < published
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let confirmed = stats.confirmed.load(Ordering::Relaxed);
    if confirmed < published {
        warn!(
            published,
            confirmed, "MQTT broker did not confirm every value before shutdown"
        );
    }
    let _ = shutdown; // shutdown is driven by the pipeline closing `rx`
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_polling.cancel();
    let _ = poller.await;
}
