//! MQTT sink: one message per value on `<prefix>/<shell>/<submodel>/<idShortPath with />`.
//!
//! Payload (JSON): `{"value": 8123.5, "valueType": "xs:double", "timestamp": "...Z",
//! "serverTimestamp": "...Z", "quality": "good", "statusCode": 0, "submodelId": "...",
//! "idShortPath": "..."}`.
//!
//! With `message_per = "submodel"` the values of one submodel in a delivery window go in one
//! message on `<prefix>/<shell>/<submodel>`: `{"submodelId": "...", "values": [{"idShortPath":
//! "...", "value": ..., ...}, ...]}`, each item the per-value payload without `submodelId`.
//!
//! The gateway's own state is retained on `<prefix>/_gateway/<name>/state` (`online` after
//! connecting, `offline` as last will).
//!
//! The rumqttc event loop is polled continuously by its own task (nothing moves otherwise) and
//! reconnects with backoff; the session is persistent (`clean_session = false`). Values come
//! from the durable outbox in windows of up to 1000 values, up to 4 windows on the wire at once;
//! a window is acknowledged to the outbox, in order, only after the broker sent a PUBACK for
//! every message of it (QoS 1), so a broker or gateway outage never loses a value: it is re-sent
//! (at least once, in order per element).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::SinkStats;
use crate::config::{MessagePer, MqttConfig};
use crate::model::{format_timestamp, SubmodelUpdate};
use crate::outbox::{OutboxAcker, OutboxReader};
use crate::sources::opcua::Backoff;

/// The JSON body of a value message (also an item of a submodel message, without
/// `submodelId`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    #[serde(rename = "idShortPath", skip_serializing_if = "Option::is_none")]
    id_short_path_first: Option<&'a str>,
    value: serde_json::Value,
    value_type: &'static str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_timestamp: Option<String>,
    quality: &'static str,
    status_code: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    submodel_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_short_path: Option<&'a str>,
}

/// The payload of a value message.
pub fn payload(u: &SubmodelUpdate) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_payload(u, false, &mut out);
    out
}

/// Appends the JSON of `u`: the value message's payload, or (`in_submodel`) an item of a
/// submodel message, which starts with its `idShortPath` and leaves out `submodelId`.
fn write_payload(u: &SubmodelUpdate, in_submodel: bool, out: &mut Vec<u8>) {
    let path = u.target.id_short_path.as_str();
    let p = Payload {
        id_short_path_first: in_submodel.then_some(path),
        value: u.target.value_type.json(&u.value),
        value_type: u.target.value_type.as_str(),
        timestamp: format_timestamp(u.source_ts_nanos),
        server_timestamp: (u.server_ts_nanos != 0).then(|| format_timestamp(u.server_ts_nanos)),
        quality: u.quality().as_str(),
        status_code: u.status,
        submodel_id: (!in_submodel).then_some(u.target.submodel_id.as_str()),
        id_short_path: (!in_submodel).then_some(path),
    };
    serde_json::to_writer(out, &p).expect("payload serialises");
}

/// Largest submodel message body before the rest of its values go in the next one.
const SUBMODEL_MESSAGE_BYTES: usize = 256 * 1024;

/// The submodel messages of a window, `(topic, payload)`: one per submodel (more when one grows
/// past [`SUBMODEL_MESSAGE_BYTES`]), each keeping the window's order of its values.
pub fn submodel_messages<'a>(
    topic_prefix: &str,
    updates: impl IntoIterator<Item = &'a SubmodelUpdate>,
) -> Vec<(String, Vec<u8>)> {
    // Open messages: the first value's target names the submodel; few per window.
    let mut open: Vec<(&'a SubmodelUpdate, Vec<u8>)> = Vec::new();
    let mut done = Vec::new();
    let finish = |first: &SubmodelUpdate, mut body: Vec<u8>| {
        body.extend_from_slice(b"]}");
        let t = &first.target;
        let topic =
            crate::mapping::submodel_topic(topic_prefix, &t.shell_id_short, &t.submodel_id_short);
        (topic, body)
    };
    for u in updates {
        let same_submodel = |first: &SubmodelUpdate| {
            first.target.submodel_id == u.target.submodel_id
                && first.target.shell_id_short == u.target.shell_id_short
        };
        let at = match open.iter().position(|(first, _)| same_submodel(first)) {
            Some(at) => {
                open[at].1.push(b',');
                at
            }
            None => {
                let mut body = Vec::with_capacity(16 * 1024);
                body.extend_from_slice(b"{\"submodelId\":");
                serde_json::to_writer(&mut body, &u.target.submodel_id).expect("string");
                body.extend_from_slice(b",\"values\":[");
                open.push((u, body));
                open.len() - 1
            }
        };
        write_payload(u, true, &mut open[at].1);
        if open[at].1.len() >= SUBMODEL_MESSAGE_BYTES {
            let (first, body) = open.swap_remove(at);
            done.push(finish(first, body));
        }
    }
    done.extend(open.into_iter().map(|(first, body)| finish(first, body)));
    done
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

/// Completes [`DRAIN_TIMEOUT`] after shutdown was requested.
async fn drain_deadline(shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(DRAIN_TIMEOUT).await;
}

/// Values read from the outbox and published as one unit; the outbox is acknowledged per window.
const WINDOW: usize = 1000;

/// Windows published but not yet confirmed; `WINDOWS_IN_FLIGHT * WINDOW` is also the client's
/// in-flight limit (unacknowledged QoS 1 messages).
const WINDOWS_IN_FLIGHT: usize = 4;

/// A published window waiting for its PUBACKs.
struct Window {
    /// Messages published since start once this window was out (PUBACKs to wait for).
    published_after: u64,
    batch: Vec<(u64, SubmodelUpdate)>,
}

/// Acknowledges windows to the outbox in order, each once the broker confirmed all of its
/// messages (QoS 1: by PUBACK count; QoS 0: once written). Ends when the publisher closed the
/// channel and every window was confirmed, or [`DRAIN_TIMEOUT`] after `shutdown`.
async fn confirm_windows(
    mut windows: mpsc::Receiver<Window>,
    mut acked: watch::Receiver<u64>,
    qos: QoS,
    outbox: OutboxAcker,
    stats: Arc<SinkStats>,
    shutdown: CancellationToken,
) {
    let deadline = drain_deadline(&shutdown);
    tokio::pin!(deadline);
    while let Some(window) = windows.recv().await {
        if qos == QoS::AtLeastOnce {
            tokio::select! {
                r = acked.wait_for(|&n| n >= window.published_after) => if r.is_err() { return },
                _ = &mut deadline => {
                    warn!("MQTT broker did not confirm every value before shutdown; they stay in the outbox");
                    return;
                }
            }
        }
        let batch = &window.batch;
        stats
            .confirmed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let now = crate::metrics::LatencyHistogram::now_nanos();
        for (_, u) in batch {
            stats.latency.observe_since(u.source_ts_nanos, now);
        }
        let last_seq = batch
            .last()
            .map(|(seq, _)| *seq)
            .expect("batches are never empty");
        if let Err(e) = outbox.ack(last_seq).await {
            error!(error = %e, "MQTT sink cannot record its outbox position; values may be sent again");
        }
    }
}

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
        .set_inflight((WINDOWS_IN_FLIGHT * WINDOW) as u16)
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
    let (acked_tx, acked_rx) = watch::channel(0u64);

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

    let deadline = drain_deadline(&shutdown);
    tokio::pin!(deadline);
    // Publishing and confirming overlap: while the broker acknowledges one window, the next
    // ones are already on the wire. Stop-and-wait per window left the connection idle at every
    // window's end (TCP delayed ACK then held the last PUBACKs), which capped delivery at about
    // 25k messages/s on loopback.
    let (window_tx, window_rx) = mpsc::channel::<Window>(WINDOWS_IN_FLIGHT - 1);
    let confirmer = confirm_windows(
        window_rx,
        acked_rx,
        qos,
        reader.acker(),
        stats.clone(),
        shutdown.clone(),
    );
    let publisher = async {
        let mut published = 0u64;
        'deliver: loop {
            let next = tokio::select! {
                r = reader.next_batch(WINDOW) => r,
                _ = &mut deadline => break,
            };
            let batch = match next {
                Ok(Some(batch)) => batch,
                Ok(None) => break, // outbox closed and fully read
                Err(e) => {
                    error!(error = %e, "MQTT sink cannot read the outbox; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            stats
                .received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            // Value messages, or one message per submodel; then (optionally) a BaSyx event
            // per value. Built lazily: no per-value Vec.
            let per_value = cfg.message_per == MessagePer::Value;
            let submodel_msgs = if per_value {
                Vec::new()
            } else {
                submodel_messages(&cfg.topic_prefix, batch.iter().map(|(_, u)| u))
            };
            let value_msgs = batch.iter().flat_map(|(_, u)| {
                let value_msg = per_value.then(|| (u.target.topic.clone(), payload(u)));
                let basyx_msg = cfg
                    .basyx_events
                    .then(|| (basyx_topic(&cfg.basyx_repo_id, u), basyx_payload(u)));
                value_msg.into_iter().chain(basyx_msg)
            });
            for (topic, body) in submodel_msgs.into_iter().chain(value_msgs) {
                published += 1;
                tokio::select! {
                    r = client.publish(topic, qos, cfg.retain, body) => if let Err(e) = r {
                        // Only when the event loop is gone; the batch stays in the outbox.
                        warn!(error = %e, "MQTT client stopped; undelivered values stay in the outbox");
                        break 'deliver;
                    },
                    _ = &mut deadline => break 'deliver,
                }
            }
            let window = Window {
                published_after: published,
                batch,
            };
            tokio::select! {
                r = window_tx.send(window) => if r.is_err() { break },
                _ = &mut deadline => break,
            }
        }
        // Closing the channel lets the confirmer finish the windows still waiting.
        drop(window_tx);
    };
    tokio::join!(publisher, confirmer);
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_polling.cancel();
    let _ = poller.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aas::XsType;
    use crate::model::{ElementTarget, TypedValue};

    fn target(submodel: &str, path: &str) -> Arc<ElementTarget> {
        Arc::new(ElementTarget {
            submodel_id: format!("urn:sm:{submodel}"),
            submodel_id_short: submodel.into(),
            shell_id_short: "Cnc1".into(),
            id_short_path: path.into(),
            value_type: XsType::Double,
            topic: format!("aas/Cnc1/{submodel}/{path}"),
            unit: None,
            semantic_id: None,
            outbox_id: Default::default(),
        })
    }

    fn update(t: &Arc<ElementTarget>, v: f64, ts: i64) -> SubmodelUpdate {
        SubmodelUpdate {
            target: t.clone(),
            value: TypedValue::Float(v),
            status: 0,
            source_ts_nanos: ts,
            server_ts_nanos: 0,
        }
    }

    #[test]
    fn value_payload_names_its_submodel_and_element() {
        let p = payload(&update(
            &target("Op", "Speed"),
            1.5,
            1_700_000_000_000_000_000,
        ));
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"value": 1.5, "valueType": "xs:double",
                "timestamp": "2023-11-14T22:13:20Z", "quality": "good", "statusCode": 0,
                "submodelId": "urn:sm:Op", "idShortPath": "Speed"})
        );
    }

    #[test]
    fn submodel_messages_group_by_submodel_and_keep_order() {
        let (speed, temp, energy) = (
            target("Op", "Speed"),
            target("Op", "Axes.Temp"),
            target("Energy", "Power"),
        );
        let window = [
            update(&speed, 1.0, 1),
            update(&energy, 10.0, 1),
            update(&temp, 2.0, 1),
            update(&speed, 3.0, 2),
        ];
        let msgs = submodel_messages("aas", &window);
        let topics: Vec<_> = msgs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(topics, ["aas/Cnc1/Op", "aas/Cnc1/Energy"]);
        let op: serde_json::Value = serde_json::from_slice(&msgs[0].1).unwrap();
        assert_eq!(op["submodelId"], "urn:sm:Op");
        let items = op["values"].as_array().unwrap();
        let seen: Vec<_> = items
            .iter()
            .map(|i| {
                (
                    i["idShortPath"].as_str().unwrap(),
                    i["value"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(seen, [("Speed", 1.0), ("Axes.Temp", 2.0), ("Speed", 3.0)]);
        // An item is the value payload without the submodel id.
        assert!(items[0].get("submodelId").is_none());
        assert_eq!(items[0]["valueType"], "xs:double");
        let energy: serde_json::Value = serde_json::from_slice(&msgs[1].1).unwrap();
        assert_eq!(energy["values"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_large_submodel_window_is_split_into_several_messages() {
        let t = target("Op", "Speed");
        let window: Vec<_> = (0..5000).map(|i| update(&t, i as f64, i)).collect();
        let msgs = submodel_messages("aas", &window);
        assert!(msgs.len() > 1, "5000 values exceed one message");
        let mut values = Vec::new();
        for (topic, body) in &msgs {
            assert_eq!(topic, "aas/Cnc1/Op");
            assert!(body.len() <= SUBMODEL_MESSAGE_BYTES + 1024);
            let doc: serde_json::Value = serde_json::from_slice(body).unwrap();
            values.extend(
                doc["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["value"].as_f64().unwrap()),
            );
        }
        assert_eq!(values, (0..5000).map(|i| i as f64).collect::<Vec<_>>());
    }
}
