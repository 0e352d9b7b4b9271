//! MQTT sink: one message per value on `<prefix>/<shell>/<submodel>/<idShortPath with />`.
//!
//! Payload (JSON): `{"value": 8123.5, "valueType": "xs:double", "timestamp": "...Z",
//! "serverTimestamp": "...Z", "quality": "good", "statusCode": 0, "submodelId": "...",
//! "idShortPath": "..."}`. The gateway's own state is retained on `<prefix>/_gateway/<name>/state`
//! (`online` after connecting, `offline` as last will).
//!
//! The rumqttc event loop is polled continuously by its own task (nothing moves otherwise) and
//! reconnects with backoff; the session is persistent (`clean_session = false`). Values come
//! from the durable outbox in windows of up to 1000 messages; a window is acknowledged to the
//! outbox only after the broker sent a PUBACK for every message of it (QoS 1), so a broker or
//! gateway outage never loses a value: it is re-sent (at least once, in order per element).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::SinkStats;
use crate::config::MqttConfig;
use crate::model::{format_timestamp, SubmodelUpdate};
use crate::outbox::OutboxReader;
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

/// Builds the TLS settings from the config (files already resolved against the config dir).
/// Errors name the file that could not be read.
pub fn tls_configuration(
    cfg: &MqttConfig,
    resolve: impl Fn(&std::path::Path) -> std::path::PathBuf,
) -> anyhow::Result<Option<rumqttc::TlsConfiguration>> {
    if !cfg.tls {
        return Ok(None);
    }
    // rumqttc is built without a default crypto provider (two linked providers panic at start);
    // install ring, the one the rest of the gateway uses, once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |field: &str, p: &std::path::Path| {
        let p = resolve(p);
        std::fs::read(&p).map_err(|e| anyhow::anyhow!("{field}: cannot read {}: {e}", p.display()))
    };
    let Some(ca_file) = &cfg.ca_file else {
        return Ok(Some(rumqttc::TlsConfiguration::default()));
    };
    let ca = read("mqtt.ca_file", ca_file)?;
    let client_auth = match (&cfg.client_cert_file, &cfg.client_key_file) {
        (Some(c), Some(k)) => Some((
            read("mqtt.client_cert_file", c)?,
            read("mqtt.client_key_file", k)?,
        )),
        _ => None,
    };
    Ok(Some(rumqttc::TlsConfiguration::Simple {
        ca,
        alpn: None,
        client_auth,
    }))
}

/// BaSyx-compatible event topic of an element.
pub fn basyx_topic(repo_id: &str, u: &SubmodelUpdate) -> String {
    format!(
        "sm-repository/{repo_id}/submodels/{}/submodelElements/{}/updated",
        crate::api::encode_id(&u.target.submodel_id),
        u.target.id_short_path
    )
}

/// BaSyx-compatible event payload: the element as AAS JSON with its new value.
pub fn basyx_payload(u: &SubmodelUpdate) -> Vec<u8> {
    let t = &u.target;
    let id_short = t
        .id_short_path
        .rsplit('.')
        .next()
        .unwrap_or(&t.id_short_path);
    let value_type = t.value_type.as_str();
    let element = match &u.value {
        crate::model::TypedValue::List(items) => serde_json::json!({
            "modelType": "SubmodelElementList",
            "idShort": id_short,
            "typeValueListElement": "Property",
            "valueTypeListElement": value_type,
            "value": items.iter().map(|v| serde_json::json!({
                "modelType": "Property", "valueType": value_type, "value": t.value_type.lexical(v)
            })).collect::<Vec<_>>(),
        }),
        v => serde_json::json!({
            "modelType": "Property",
            "idShort": id_short,
            "valueType": value_type,
            "value": t.value_type.lexical(v),
        }),
    };
    serde_json::to_vec(&element).expect("element serialises")
}

/// Topic of the gateway's retained online/offline state.
pub fn state_topic(cfg: &MqttConfig, gateway_name: &str) -> String {
    format!("{}/_gateway/{gateway_name}/state", cfg.topic_prefix)
}

/// How long the sink keeps trying to deliver after shutdown was requested. What is still
/// unconfirmed then stays in the outbox and is sent after the next start.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages published before waiting for their PUBACKs (also the client's in-flight window).
const WINDOW: usize = 1000;

/// Runs the MQTT sink: reads the outbox in order, publishes, and acknowledges to the outbox only
/// what the broker confirmed. Ends when the outbox is closed and drained, or [`DRAIN_TIMEOUT`]
/// after `shutdown`.
pub async fn run(
    cfg: MqttConfig,
    tls: Option<rumqttc::TlsConfiguration>,
    gateway_name: String,
    mut reader: OutboxReader,
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
        // A persistent session: unacknowledged QoS 1 messages are re-sent after a reconnect.
        .set_clean_session(false)
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(WINDOW as u16)
        .set_last_will(LastWill::new(
            &state_topic,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        opts.set_credentials(u.clone(), p.clone());
    }
    if let Some(tls) = tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(tls));
    }
    let (client, mut event_loop) = AsyncClient::new(opts, cfg.queue_capacity.max(WINDOW));
    let qos = if cfg.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let (acked_tx, mut acked_rx) = watch::channel(0u64);

    // The event loop task: polls forever (nothing moves otherwise), counts PUBACKs,
    // reconnects with backoff and announces the gateway.
    let loop_client = client.clone();
    let stop_polling = CancellationToken::new();
    let stop = stop_polling.clone();
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let loop_stats = stats.clone();
    let poller = tokio::spawn(async move {
        let mut backoff = Backoff::new();
        let mut connected = false;
        let mut acked = 0u64;
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
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    let _ = acked_tx.send(acked);
                }
                Ok(_) => {}
                Err(e) => {
                    loop_stats.errors.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff.next_delay();
                    if connected {
                        warn!(broker = %broker, error = %e, "lost the MQTT broker; values wait in the outbox until it is back");
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

    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::pin!(deadline);
    let mut acked_so_far = 0u64;
    'deliver: loop {
        let next = tokio::select! {
            r = reader.next_batch(WINDOW) => r,
            _ = &mut deadline => break,
        };
        let batch = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => break, // outbox closed and fully delivered
            Err(e) => {
                error!(error = %e, "MQTT sink cannot read the outbox; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let last_seq = batch
            .last()
            .map(|(seq, _)| *seq)
            .expect("batches are never empty");
        stats
            .received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut messages = 0u64;
        for (_, u) in &batch {
            // The value message, then (optionally) its BaSyx event; no per-value Vec.
            let value_msg = std::iter::once((u.target.topic.clone(), payload(u)));
            let basyx_msg = cfg
                .basyx_events
                .then(|| (basyx_topic(&cfg.basyx_repo_id, u), basyx_payload(u)));
            for (topic, body) in value_msg.chain(basyx_msg) {
                messages += 1;
                tokio::select! {
                    r = client.publish(topic, qos, cfg.retain, body) => if let Err(e) = r {
                        // Only when the event loop is gone; the batch stays in the outbox.
                        warn!(error = %e, "MQTT client stopped; undelivered values stay in the outbox");
                        break 'deliver;
                    },
                    _ = &mut deadline => break 'deliver,
                }
            }
        }
        if qos == QoS::AtLeastOnce {
            let target = acked_so_far + messages;
            tokio::select! {
                r = acked_rx.wait_for(|&n| n >= target) => if r.is_err() { break },
                _ = &mut deadline => {
                    warn!("MQTT broker did not confirm every value before shutdown; they stay in the outbox");
                    break;
                }
            }
            acked_so_far = target;
        }
        stats
            .confirmed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let now = crate::metrics::LatencyHistogram::now_nanos();
        for (_, u) in &batch {
            stats.latency.observe_since(u.source_ts_nanos, now);
        }
        if let Err(e) = reader.ack(last_seq).await {
            error!(error = %e, "MQTT sink cannot record its outbox position; values may be sent again");
        }
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_polling.cancel();
    let _ = poller.await;
}
