//! MQTT sink: one message per value on `<prefix>/<shell>/<submodel>/<idShortPath with />`.
//!
//! Payload (JSON): `{"value": 8123.5, "valueType": "xs:double", "timestamp": "...Z",
//! "serverTimestamp": "...Z", "quality": "good", "statusCode": 0, "submodelId": "...",
//! "idShortPath": "..."}`. The gateway's own state is retained on `<prefix>/_gateway/<name>/state`
//! (`online` after connecting, `offline` as last will).
//!
//! The rumqttc event loop is polled continuously by its own task (nothing moves otherwise) and
//! reconnects with backoff; the session is persistent (`clean_session = false`). Values come
//! from the durable outbox in windows of up to 1000 messages, several windows in flight; a window
//! is acknowledged to the outbox only after the broker sent a PUBACK for every message of it and
//! of all windows before it (QoS 1), so a broker or gateway outage never loses a value: it is
//! re-sent (at least once, in order per element).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::SinkStats;
use crate::aas::XsType;
use crate::config::MqttConfig;
use crate::model::{format_timestamp, SubmodelUpdate, TypedValue};
use crate::outbox::OutboxReader;
use crate::sources::opcua::Backoff;

/// The JSON body of a value message.
///
/// Written by hand into one buffer of about the right size instead of serialising a struct: at
/// 100k values/s the serde path cost a `serde_json::Value`, two timestamp `String`s and several
/// buffer growths per value. The bytes are exactly those the struct produced (field order;
/// numbers and strings are still written by serde_json); `payload_matches_the_serde_form` checks.
pub fn payload(u: &SubmodelUpdate) -> Vec<u8> {
    let t = &u.target;
    let mut out = Vec::with_capacity(200 + t.submodel_id.len() + t.id_short_path.len());
    let vt = t.value_type;
    out.extend_from_slice(b"{\"value\":");
    // Writing JSON into a Vec cannot fail.
    let written = match &u.value {
        // The bulk of the traffic, printed as serde_json::Value would print them.
        TypedValue::Float(f) if f.is_finite() && vt != XsType::Float => {
            serde_json::to_writer(&mut out, f)
        }
        TypedValue::Int(i) => serde_json::to_writer(&mut out, i),
        TypedValue::UInt(n) => serde_json::to_writer(&mut out, n),
        TypedValue::Bool(b) => serde_json::to_writer(&mut out, b),
        other => serde_json::to_writer(&mut out, &vt.json(other)),
    };
    written.expect("JSON into a Vec");
    out.extend_from_slice(b",\"valueType\":\"");
    out.extend_from_slice(vt.as_str().as_bytes());
    out.extend_from_slice(b"\",\"timestamp\":\"");
    write_timestamp(&mut out, u.source_ts_nanos);
    if u.server_ts_nanos != 0 {
        out.extend_from_slice(b"\",\"serverTimestamp\":\"");
        write_timestamp(&mut out, u.server_ts_nanos);
    }
    out.extend_from_slice(b"\",\"quality\":\"");
    out.extend_from_slice(u.quality().as_str().as_bytes());
    out.extend_from_slice(b"\",\"statusCode\":");
    serde_json::to_writer(&mut out, &u.status).expect("JSON into a Vec");
    out.extend_from_slice(b",\"submodelId\":");
    serde_json::to_writer(&mut out, t.submodel_id.as_str()).expect("JSON into a Vec");
    out.extend_from_slice(b",\"idShortPath\":");
    serde_json::to_writer(&mut out, t.id_short_path.as_str()).expect("JSON into a Vec");
    out.push(b'}');
    out
}

/// Appends what [`format_timestamp`] returns, without allocating:
/// `YYYY-MM-DDTHH:MM:SS[.fff[fff[fff]]]Z`, with as many sub-second digits as needed (chrono's
/// `SecondsFormat::AutoSi`). Years outside 0000–9999 go through chrono.
fn write_timestamp(out: &mut Vec<u8>, nanos: i64) {
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        out.extend_from_slice(format_timestamp(nanos).as_bytes());
        return;
    }
    write_digits(out, y as u32, 4);
    for (sep, v) in [
        (b'-', m),
        (b'-', d),
        (b'T', sod / 3600),
        (b':', sod / 60 % 60),
        (b':', sod % 60),
    ] {
        out.push(sep);
        write_digits(out, v, 2);
    }
    if sub != 0 {
        out.push(b'.');
        if sub.is_multiple_of(1_000_000) {
            write_digits(out, sub / 1_000_000, 3);
        } else if sub.is_multiple_of(1_000) {
            write_digits(out, sub / 1_000, 6);
        } else {
            write_digits(out, sub, 9);
        }
    }
    out.push(b'Z');
}

/// `v` as exactly `n` (≤ 9) decimal digits, zero-padded.
fn write_digits(out: &mut Vec<u8>, mut v: u32, n: usize) {
    let mut buf = [b'0'; 9];
    for slot in buf[..n].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..n]);
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Topic of the gateway's retained online/offline state.
pub fn state_topic(cfg: &MqttConfig, gateway_name: &str) -> String {
    format!("{}/_gateway/{gateway_name}/state", cfg.topic_prefix)
}

/// How long the sink keeps trying to deliver after shutdown was requested. What is still
/// unconfirmed then stays in the outbox and is sent after the next start.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages read from the outbox and published as one window.
const WINDOW: usize = 1000;

/// Windows in flight (published, PUBACKs outstanding) at most; the client's in-flight limit is
/// `WINDOW * (PIPELINE + 1)`.
const PIPELINE: usize = 4;

/// Acknowledges to the outbox every pending window the broker fully confirmed (`acked` PUBACKs
/// so far), with one outbox write for all of them. A window counts only once all its messages
/// and all before it are confirmed, so the outbox never forgets an unconfirmed value.
async fn settle(
    pending: &mut VecDeque<(u64, u64, u64)>,
    acked: u64,
    reader: &OutboxReader,
    stats: &SinkStats,
) {
    let mut upto = None;
    while let Some(&(target, seq, n)) = pending.front() {
        if acked < target {
            break;
        }
        pending.pop_front();
        stats.confirmed.fetch_add(n, Ordering::Relaxed);
        upto = Some(seq);
    }
    if let Some(seq) = upto {
        if let Err(e) = reader.ack(seq).await {
            error!(error = %e, "MQTT sink cannot record its outbox position; values may be sent again");
        }
    }
}

/// Runs the MQTT sink: reads the outbox in order, publishes, and acknowledges to the outbox only
/// what the broker confirmed. Ends when the outbox is closed and drained, or [`DRAIN_TIMEOUT`]
/// after `shutdown`.
pub async fn run(
    cfg: MqttConfig,
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
        .set_inflight((WINDOW * (PIPELINE + 1)) as u16)
        .set_last_will(LastWill::new(
            &state_topic,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        opts.set_credentials(u.clone(), p.clone());
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
    // Windows published but not yet confirmed: (PUBACK count that completes it, its last outbox
    // seq, its size). Up to PIPELINE windows are in flight at once: waiting for every PUBACK
    // before reading and publishing the next window capped the sink near 100k values/s.
    let mut pending: VecDeque<(u64, u64, u64)> = VecDeque::new();
    let mut published = 0u64;
    'deliver: loop {
        // Record what the broker confirmed (oldest windows first), then read more.
        // The borrow must end before the await (it is not Send).
        let acked = *acked_rx.borrow();
        settle(&mut pending, acked, &reader, &stats).await;
        let next = tokio::select! {
            r = reader.next_batch(WINDOW) => r,
            // Nothing new to send: still record confirmations as they come.
            r = acked_rx.changed(), if !pending.is_empty() => {
                if r.is_err() { break }
                continue;
            }
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
        let last_seq = batch
            .last()
            .map(|(seq, _)| *seq)
            .expect("batches are never empty");
        stats
            .received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (_, u) in &batch {
            let publish = client.publish(u.target.topic.as_str(), qos, cfg.retain, payload(u));
            tokio::select! {
                r = publish => if let Err(e) = r {
                    // Only when the event loop is gone; the batch stays in the outbox.
                    warn!(error = %e, "MQTT client stopped; undelivered values stay in the outbox");
                    break 'deliver;
                },
                _ = &mut deadline => break 'deliver,
            }
        }
        let n = batch.len() as u64;
        if qos == QoS::AtLeastOnce {
            published += n;
            pending.push_back((published, last_seq, n));
            // Bound what is in flight: wait for the oldest window before publishing more.
            while pending.len() > PIPELINE {
                let target = pending.front().expect("non-empty").0;
                tokio::select! {
                    r = acked_rx.wait_for(|&a| a >= target) => if r.is_err() { break 'deliver },
                    _ = &mut deadline => break 'deliver,
                }
                // The borrow must end before the await (it is not Send).
                let acked = *acked_rx.borrow();
                settle(&mut pending, acked, &reader, &stats).await;
            }
        } else {
            stats.confirmed.fetch_add(n, Ordering::Relaxed);
            if let Err(e) = reader.ack(last_seq).await {
                error!(error = %e, "MQTT sink cannot record its outbox position; values may be sent again");
            }
        }
    }
    // Drain: the confirmations of what was published (until the deadline).
    while let Some(&(target, _, _)) = pending.front() {
        tokio::select! {
            r = acked_rx.wait_for(|&a| a >= target) => if r.is_err() { break },
            _ = &mut deadline => {
                warn!("MQTT broker did not confirm every value before shutdown; they stay in the outbox");
                break;
            }
        }
        // The borrow must end before the await (it is not Send).
        let acked = *acked_rx.borrow();
        settle(&mut pending, acked, &reader, &stats).await;
    }
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop_polling.cancel();
    let _ = poller.await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde::Serialize;

    use super::*;
    use crate::model::ElementTarget;

    /// The serde struct the hand-written payload replaced: the reference for its bytes.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Reference<'a> {
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

    fn reference(u: &SubmodelUpdate) -> Vec<u8> {
        serde_json::to_vec(&Reference {
            value: u.target.value_type.json(&u.value),
            value_type: u.target.value_type.as_str(),
            timestamp: format_timestamp(u.source_ts_nanos),
            server_timestamp: (u.server_ts_nanos != 0).then(|| format_timestamp(u.server_ts_nanos)),
            quality: u.quality().as_str(),
            status_code: u.status,
            submodel_id: &u.target.submodel_id,
            id_short_path: &u.target.id_short_path,
        })
        .unwrap()
    }

    #[test]
    fn payload_matches_the_serde_form() {
        let values = [
            (XsType::Double, TypedValue::Float(8123.5)),
            (XsType::Double, TypedValue::Float(-0.0001)),
            (XsType::Double, TypedValue::Float(1e21)),
            (XsType::Double, TypedValue::Float(f64::NAN)),
            (XsType::Float, TypedValue::Float(0.1f32 as f64)),
            (XsType::Long, TypedValue::Int(-9_000_000_000)),
            (XsType::UnsignedLong, TypedValue::UInt(u64::MAX)),
            (XsType::Boolean, TypedValue::Bool(true)),
            (XsType::String, TypedValue::Text("Spindel \"ü\"\n".into())),
            (
                XsType::Double,
                TypedValue::List(vec![TypedValue::Float(1.0), TypedValue::Float(2.5)]),
            ),
        ];
        let stamps = [
            1_700_000_000_123_000_000,
            1_700_000_000_000_000_000,
            1_700_000_000_000_100_000,
            1_700_000_000_000_000_007,
            0,
            -1,
            -9_000_000_000_000_000_000, // 1684
            9_000_000_000_000_000_001,  // 2255
        ];
        for (vt, value) in values {
            for (k, &ts) in stamps.iter().enumerate() {
                let u = SubmodelUpdate {
                    target: Arc::new(ElementTarget {
                        submodel_id: "urn:sm:\"1\"".into(),
                        submodel_id_short: "Op".into(),
                        shell_id_short: "M1".into(),
                        id_short_path: "Axes.X".into(),
                        value_type: vt,
                        topic: "t".into(),
                        outbox_id: Default::default(),
                    }),
                    value: value.clone(),
                    status: [0, 0x4093_0000, 0x808C_0000][k % 3],
                    source_ts_nanos: ts,
                    server_ts_nanos: if k % 2 == 0 { ts + 1_000_000 } else { 0 },
                };
                assert_eq!(
                    String::from_utf8(payload(&u)).unwrap(),
                    String::from_utf8(reference(&u)).unwrap()
                );
            }
        }
    }
}
