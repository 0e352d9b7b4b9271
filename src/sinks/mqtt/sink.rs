//! The MQTT delivery loop.
//!
//! The rumqttc event loop is polled continuously by its own task (nothing moves otherwise) and
//! reconnects with backoff; the session is persistent (`clean_session = false`). Values come
//! from the durable outbox in windows of up to 1000 values, up to 16 windows on the wire at once;
//! a window is acknowledged to the outbox, in order, only once the broker confirmed every
//! message of it (QoS 1: each PUBACK matched to its message by packet id, see
//! [`super::confirm`]), so a broker or gateway outage never loses a value: it is re-sent (at
//! least once, in order per element).
//!
//! A PUBACK that does not come within `puback_timeout_s` is never waited on forever: the
//! connection is dropped and rumqttc sends every unconfirmed message again (counted as retries).
//! When the broker lost the session (and rumqttc with it the unconfirmed messages), the sink
//! starts over from its outbox cursor and publishes them again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::confirm::{confirm_windows, Tracker, Window};
use super::payload::{basyx_payload, basyx_topic, payload, submodel_messages};
use super::topic::element_topic;
use super::{MessagePer, MqttConfig};
use crate::core::Backoff;
use crate::outbox::OutboxReader;
use crate::sinks::SinkContext;

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

/// Topic of the gateway's retained online/offline state.
pub fn state_topic(cfg: &MqttConfig, gateway_name: &str) -> String {
    format!("{}/_gateway/{gateway_name}/state", cfg.topic_prefix)
}

/// How long the sink keeps trying to deliver after shutdown was requested. What is still
/// unconfirmed then stays in the outbox and is sent after the next start.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Values read from the outbox and published as one unit; the outbox is acknowledged per window.
const WINDOW: usize = 1000;

/// Windows published but not yet confirmed; `WINDOWS_IN_FLIGHT * WINDOW` is also the client's
/// in-flight limit (unacknowledged QoS 1 messages). Enough for a whole burst (10k values per
/// publishing cycle) to be on the wire while the broker confirms the first windows: with 4, the
/// publisher waited a broker round trip (milliseconds for a 1000-value submodel message) after
/// every fourth window. Memory: the windows' timestamps and rumqttc's copies of the messages
/// in flight (at most 16 × 256 KiB).
const WINDOWS_IN_FLIGHT: usize = 16;

/// The MQTT socket's send buffer (see where it is set).
const SEND_BUFFER_BYTES: u32 = 4 << 20;

/// How a session ended.
enum Outcome {
    /// Outbox closed and drained, or out of drain time: the sink is done.
    Finished,
    /// Unconfirmed messages were lost with the broker's session: read again from the cursor.
    StartOver,
}

/// Runs the MQTT sink until the outbox is closed and drained, or [`DRAIN_TIMEOUT`] after
/// shutdown.
pub async fn run(cfg: MqttConfig, tls: Option<rumqttc::TlsConfiguration>, ctx: SinkContext) {
    // Cancelled DRAIN_TIMEOUT after shutdown: every wait below ends then.
    let out_of_time = CancellationToken::new();
    let timer = {
        let (shutdown, out) = (ctx.shutdown.clone(), out_of_time.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
            out.cancel();
        })
    };
    loop {
        let reader = ctx.outbox.reader("mqtt");
        match session(&cfg, tls.clone(), &ctx, reader, &out_of_time).await {
            Outcome::Finished => break,
            Outcome::StartOver => {
                warn!("MQTT broker lost the session with unconfirmed messages; publishing them again from the outbox");
            }
        }
    }
    timer.abort();
    ctx.stats.connected.store(false, Ordering::Relaxed);
}

async fn session(
    cfg: &MqttConfig,
    tls: Option<rumqttc::TlsConfiguration>,
    ctx: &SinkContext,
    mut reader: OutboxReader,
    out_of_time: &CancellationToken,
) -> Outcome {
    let stats = &ctx.stats;
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| ctx.gateway_name.clone());
    let state_topic = state_topic(cfg, &ctx.gateway_name);
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
    // Nagle off: the last segment of a window's last PUBLISH would otherwise wait for the
    // broker's (delayed, up to 40 ms) ACK of the previous one before it leaves, and with it that
    // window's PUBACK. Measured at 10k values per 100 ms: the last windows of each burst were
    // confirmed about 40 ms late.
    let mut network = event_loop.network_options();
    network.set_tcp_nodelay(true);
    // A whole burst fits into the socket's send buffer (10 windows of ~170 KB at 10k values
    // per cycle): rumqttc reads no PUBACK while a write waits for room (its event loop awaits
    // the flush), so with the kernel's small starting buffer the burst's PUBACKs waited behind
    // its own writes. Kernel memory, bounded by this size (and `net.core.wmem_max`).
    network.set_tcp_send_buffer_size(SEND_BUFFER_BYTES);
    event_loop.set_network_options(network);
    let qos = if cfg.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let (watermark_tx, watermark_rx) = watch::channel(0u64);
    // Cancelled by the poller when this session must start over.
    let start_over = CancellationToken::new();

    // The event loop task: polls forever (nothing moves otherwise), matches PUBACKs to their
    // messages, retries overdue ones, reconnects with backoff and announces the gateway.
    let loop_client = client.clone();
    let stop_polling = CancellationToken::new();
    let stop = stop_polling.clone();
    let broker = format!("{}:{}", cfg.host, cfg.port);
    let loop_stats = stats.clone();
    let lost = start_over.clone();
    let puback_timeout = Duration::from_secs(cfg.puback_timeout_s.max(1));
    // Told when the DISCONNECT went out, so that stopping does not drop the connection first
    // (the broker would then publish the last will, "offline", for a clean stop).
    let disconnected = Arc::new(tokio::sync::Notify::new());
    let said_goodbye = disconnected.clone();
    let poller = tokio::spawn(async move {
        let mut backoff = Backoff::new();
        let mut connected = false;
        let mut tracker = Tracker::default();
        // Overdue PUBACKs are looked for between events, never by racing a timer against
        // `poll()`: dropping a `poll()` future mid-connect closes the connection after the
        // CONNECT (the broker then publishes the last will), so the poll is never cancelled
        // except to stop. Events come at least every keep-alive (PINGRESP).
        let mut last_check = Instant::now();
        loop {
            if connected && last_check.elapsed() >= Duration::from_secs(1) {
                last_check = Instant::now();
                if tracker.overdue(last_check, puback_timeout) {
                    warn!(broker = %broker, timeout_s = puback_timeout.as_secs(), "MQTT broker did not confirm a message in time; reconnecting to send the unconfirmed messages again");
                    loop_stats.errors.fetch_add(1, Ordering::Relaxed);
                    // Drops the connection; rumqttc re-sends what is in flight on the next poll.
                    event_loop.clean();
                    connected = false;
                    loop_stats.connected.store(false, Ordering::Relaxed);
                }
            }
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                e = event_loop.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(broker = %broker, "connected to the MQTT broker");
                    connected = true;
                    loop_stats.connected.store(true, Ordering::Relaxed);
                    backoff.reset();
                    if !ack.session_present && tracker.session_lost() {
                        lost.cancel();
                        break;
                    }
                    // QoS 0: its packet id 0 never counts as a confirmed value. Queued from a
                    // task of its own: the request channel may be full of values, and this loop
                    // is what empties it.
                    let (client, topic) = (loop_client.clone(), state_topic.clone());
                    tokio::spawn(async move {
                        let _ = client.publish(topic, QoS::AtMostOnce, true, "online").await;
                    });
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => said_goodbye.notify_one(),
                Ok(ref event) if tracker.observe(event, &loop_stats.retries, &watermark_tx) => {}
                Ok(_) => {}
                Err(e) => {
                    loop_stats.errors.fetch_add(1, Ordering::Relaxed);
                    loop_stats.connected.store(false, Ordering::Relaxed);
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

    // Publishing and confirming overlap: while the broker acknowledges one window, the next
    // ones are already on the wire. Stop-and-wait per window left the connection idle at every
    // window's end (TCP delayed ACK then held the last PUBACKs), which capped delivery at about
    // 25k messages/s on loopback.
    let (window_tx, window_rx) = mpsc::channel::<Window>(WINDOWS_IN_FLIGHT - 1);
    let confirmer = confirm_windows(
        window_rx,
        watermark_rx,
        qos,
        reader.acker(),
        stats.clone(),
        out_of_time.clone(),
        start_over.clone(),
        "MQTT",
    );
    let publisher = async {
        let mut published = 0u64;
        'deliver: loop {
            let next = tokio::select! {
                r = reader.next_batch(WINDOW) => r,
                _ = out_of_time.cancelled() => break,
                _ = start_over.cancelled() => break,
            };
            let delivery = match next {
                Ok(Some(d)) => d,
                Ok(None) => break, // outbox closed and fully read
                Err(e) => {
                    error!(error = %e, "MQTT sink cannot read the outbox; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let batch = &delivery.values;
            stats
                .received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            // Value messages, or one message per submodel; then (optionally) a BaSyx event
            // per value. Built lazily: no per-value Vec.
            let per_value = cfg.message_per == MessagePer::Value;
            let submodel_msgs = if per_value {
                Vec::new()
            } else {
                submodel_messages(&cfg.topic_prefix, batch.iter())
            };
            let value_msgs = batch.iter().flat_map(|u| {
                let value_msg = per_value.then(|| {
                    let t = u.target;
                    let topic = element_topic(
                        &cfg.topic_prefix,
                        &t.submodel.shell_id_short,
                        &t.submodel.id_short,
                        &t.id_short_path,
                    );
                    (topic, payload(u))
                });
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
                    _ = out_of_time.cancelled() => break 'deliver,
                    _ = start_over.cancelled() => break 'deliver,
                }
            }
            let window = Window {
                published_after: published,
                end: delivery.end,
                source_ts: batch.iter().map(|u| u.source_ts_nanos).collect(),
            };
            tokio::select! {
                r = window_tx.send(window) => if r.is_err() { break },
                _ = out_of_time.cancelled() => break,
                _ = start_over.cancelled() => break,
            }
        }
        // Closing the channel lets the confirmer finish the windows still waiting.
        drop(window_tx);
    };
    tokio::join!(publisher, confirmer);
    if !start_over.is_cancelled() {
        // Bounded: a broker that is gone never sees it, and shutdown must not wait for it.
        let goodbye = async {
            if client.disconnect().await.is_ok() {
                disconnected.notified().await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), goodbye).await;
    }
    stop_polling.cancel();
    let _ = poller.await;
    if start_over.is_cancelled() && !out_of_time.is_cancelled() {
        Outcome::StartOver
    } else {
        Outcome::Finished
    }
}
