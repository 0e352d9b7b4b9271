//! Sessions and delivery of the Sparkplug sink.
//!
//! One MQTT connection is one Sparkplug session: it takes the next `bdSeq` (stored before the
//! CONNECT, see [`super::bdseq`]), carries NDEATH as its will, waits for the primary host (if
//! one is configured), births, and then publishes the outbox as DDATA. Whatever ends it (broker
//! gone, a PUBACK that does not come, the host going offline) ends the session: the next one
//! connects with the next `bdSeq`, births again and re-reads the outbox from the sink's cursor.
//!
//! Historical values: at birth the node reads what waits in its outbox (values kept while the
//! host was offline or the broker unreachable, and values published but not confirmed) once,
//! to report each metric's newest value in the births, and then sends that backlog again in
//! order with `is_historical = true`; everything appended after the birth goes out live.
//!
//! As in the MQTT sink, windows of values are acknowledged to the outbox in order, each once
//! every message up to its last was confirmed (PUBACKs matched by packet id,
//! [`crate::sinks::mqtt::confirm`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::bdseq::BdSeq;
use super::node::Node;
use super::payload::{self, HostState};
use super::SparkplugConfig;
use crate::core::Backoff;
use crate::outbox::Pos;
use crate::sinks::mqtt::confirm::{confirm_windows, Tracker, Window};
use crate::sinks::SinkContext;

/// The sink's name: its outbox cursor and its label in `/metrics`.
pub const NAME: &str = "sparkplug";

/// How long the sink keeps trying to deliver after shutdown was requested.
pub const DRAIN_TIMEOUT: Duration = crate::sinks::mqtt::sink::DRAIN_TIMEOUT;

/// Values read from the outbox per window (one DDATA per shell and window).
const WINDOW: usize = 1000;

/// Windows published but not yet confirmed.
const WINDOWS_IN_FLIGHT: usize = 4;

/// The node's identity on the broker.
struct Ids {
    group: String,
    node: String,
    /// The primary host's STATE topic, when one is configured.
    state_topic: Option<String>,
}

/// How a session ended.
enum Outcome {
    /// Outbox closed and drained, or out of drain time: the sink is done.
    Finished,
    /// Connect again (after a back-off unless `now`).
    Again { now: bool },
}

/// Runs the Sparkplug sink until the outbox is closed and drained, or [`DRAIN_TIMEOUT`] after
/// shutdown.
pub async fn run(
    cfg: SparkplugConfig,
    edge_node_id: String,
    tls: Option<rumqttc::TlsConfiguration>,
    ctx: SinkContext,
) {
    let out_of_time = CancellationToken::new();
    let timer = {
        let (shutdown, out) = (ctx.shutdown.clone(), out_of_time.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
            out.cancel();
        })
    };
    let ids = Ids {
        group: cfg.group_id.clone(),
        node: edge_node_id,
        state_topic: cfg.primary_host_id.as_deref().map(payload::state_topic),
    };
    let dir = ctx
        .outbox
        .path()
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let bd = BdSeq::in_dir(&dir);
    let mut node = Node::new(&ctx.elements);
    let mut host = HostWatch::default();
    let writes = spawn_writer(ctx.writer.clone());
    let mut backoff = Backoff::new();
    loop {
        let bd_seq = match bd.next() {
            Ok(n) => n,
            Err(e) => {
                // Without a stored bdSeq a crash would repeat it: do not connect.
                error!(dir = %dir.display(), error = %e, "Sparkplug sink cannot store its bdSeq; retrying");
                ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
                if wait(backoff.next_delay(), &out_of_time, &ctx.shutdown).await {
                    break;
                }
                continue;
            }
        };
        let state = Session {
            tls: tls.clone(),
            node: &mut node,
            host: &mut host,
            writes: &writes,
        };
        match session(&cfg, &ids, bd_seq, &ctx, state, &out_of_time).await {
            Outcome::Finished => break,
            Outcome::Again { now: true } => backoff.reset(),
            Outcome::Again { now: false } => {
                if wait(backoff.next_delay(), &out_of_time, &ctx.shutdown).await {
                    break;
                }
            }
        }
    }
    timer.abort();
    ctx.stats.connected.store(false, Ordering::Relaxed);
}

/// Sleeps `d`; true when the sink should stop instead (out of time, or shut down while it
/// cannot deliver: what waits stays in the outbox for the next start).
async fn wait(d: Duration, out_of_time: &CancellationToken, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => shutdown.is_cancelled(),
        _ = out_of_time.cancelled() => true,
        _ = shutdown.cancelled() => true,
    }
}

/// The primary host's state as last announced (Sparkplug 3.0: a STATE older than the newest
/// one seen is ignored).
#[derive(Debug, Default)]
struct HostWatch {
    newest: Option<HostState>,
}

impl HostWatch {
    /// Takes a STATE body; returns the host's state when it is news.
    fn update(&mut self, body: &[u8]) -> Option<bool> {
        let s = payload::host_state(body)?;
        if self.newest.is_some_and(|n| n.timestamp > s.timestamp) {
            return None;
        }
        self.newest = Some(s);
        Some(s.online)
    }

    fn online(&self) -> bool {
        self.newest.is_some_and(|s| s.online)
    }
}

/// What the event loop task tells the session.
enum Incoming {
    /// The broker accepted the connection.
    Connected,
    /// A message on a subscribed topic.
    Message(String, Vec<u8>),
}

/// Publishes counting the confirmed (QoS 1) messages, whose ordinals the PUBACK watermark is
/// compared with.
struct Publisher {
    client: AsyncClient,
    qos: QoS,
    published: u64,
    seq: u8,
}

impl Publisher {
    async fn send(&mut self, topic: String, body: Vec<u8>) -> Result<(), rumqttc::ClientError> {
        self.client.publish(topic, self.qos, false, body).await?;
        if self.qos == QoS::AtLeastOnce {
            self.published += 1;
        }
        Ok(())
    }

    /// The next `seq` (0–255, wrapping).
    fn next_seq(&mut self) -> u8 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    /// NBIRTH (`seq` 0) and one DBIRTH per device with every metric and its newest value;
    /// then DDEATH for the devices whose sources are lost.
    async fn births(
        &mut self,
        ids: &Ids,
        bd_seq: u8,
        node: &mut Node,
        up: &[bool],
    ) -> Result<(), rumqttc::ClientError> {
        self.seq = 0;
        let seq = self.next_seq();
        debug_assert_eq!(seq, 0);
        let topic = payload::node_topic(&ids.group, "NBIRTH", &ids.node);
        self.send(topic, payload::nbirth(bd_seq)).await?;
        for d in 0..node.devices.len() {
            self.dbirth(ids, node, d).await?;
        }
        self.deaths(ids, node, up).await
    }

    /// DBIRTH of device `d` with every metric and its newest value.
    async fn dbirth(
        &mut self,
        ids: &Ids,
        node: &mut Node,
        d: usize,
    ) -> Result<(), rumqttc::ClientError> {
        let seq = self.next_seq();
        let body = payload::device_payload(seq, node.birth_metrics(d));
        let topic = payload::device_topic(&ids.group, "DBIRTH", &ids.node, &node.devices[d].id);
        self.send(topic, body).await?;
        node.devices[d].born = true;
        Ok(())
    }

    /// DDEATH for every born device whose sources are all lost (its values are no longer
    /// current). It is born again when a source is back, or when a value of it still comes
    /// from the outbox (values read before the loss are never held back).
    async fn deaths(
        &mut self,
        ids: &Ids,
        node: &mut Node,
        up: &[bool],
    ) -> Result<(), rumqttc::ClientError> {
        for d in 0..node.devices.len() {
            if node.devices[d].born && !node.alive(d, up) {
                let seq = self.next_seq();
                let topic =
                    payload::device_topic(&ids.group, "DDEATH", &ids.node, &node.devices[d].id);
                self.send(topic, payload::device_payload(seq, Vec::new()))
                    .await?;
                node.devices[d].born = false;
                info!(device = %node.devices[d].id, "Sparkplug DDEATH: its source is lost");
            }
        }
        Ok(())
    }

    /// Follows a change of source health: DDEATH for devices whose sources are lost, DBIRTH
    /// for dead devices whose source is back.
    async fn follow_sources(
        &mut self,
        ids: &Ids,
        node: &mut Node,
        up: &[bool],
    ) -> Result<(), rumqttc::ClientError> {
        for d in 0..node.devices.len() {
            if !node.devices[d].born && node.alive(d, up) {
                self.dbirth(ids, node, d).await?;
            }
        }
        self.deaths(ids, node, up).await
    }
}

/// What a session works on that outlives it.
struct Session<'a> {
    /// TLS settings of the broker connection (`None`: plain MQTT).
    tls: Option<rumqttc::TlsConfiguration>,
    node: &'a mut Node,
    host: &'a mut HostWatch,
    /// Queue of DCMD writes (see [`spawn_writer`]).
    writes: &'a mpsc::Sender<Write>,
}

/// One DCMD write: element and JSON value.
struct Write {
    who: String,
    submodel_id: String,
    path: String,
    value: serde_json::Value,
}

/// DCMD writes queued at most; more at once are refused (logged).
const WRITES_QUEUED: usize = 64;

/// The task that performs DCMD writes one after the other (in the order they came), through
/// the gateway's write-back (its checks and audit log).
fn spawn_writer(
    writer: Arc<std::sync::OnceLock<Arc<dyn crate::sinks::ElementWriter>>>,
) -> mpsc::Sender<Write> {
    let (tx, mut rx) = mpsc::channel::<Write>(WRITES_QUEUED);
    tokio::spawn(async move {
        while let Some(w) = rx.recv().await {
            let Some(writer) = writer.get() else {
                warn!(path = %w.path, "Sparkplug DCMD before the sources started; not written");
                continue;
            };
            match writer.write(&w.who, &w.submodel_id, &w.path, w.value).await {
                Ok(()) => info!(path = %w.path, by = %w.who, "Sparkplug DCMD written"),
                Err(e) => {
                    warn!(path = %w.path, by = %w.who, error = %e, "Sparkplug DCMD not written")
                }
            }
        }
    });
    tx
}

/// Queues the writes of a DCMD to `device`. Metrics the device does not have, values that do
/// not fit and a full queue are logged and skipped; the write-back checks the rest.
fn device_command(node: &Node, device: &str, body: &[u8], writes: &mpsc::Sender<Write>) {
    let p = match <super::proto::Payload as prost::Message>::decode(body) {
        Ok(p) => p,
        Err(e) => {
            warn!(device, error = %e, "Sparkplug DCMD is no Sparkplug payload; ignored");
            return;
        }
    };
    for m in &p.metrics {
        let Some(at) = node.find_command(device, m) else {
            warn!(device, metric = ?m.name, alias = ?m.alias, "Sparkplug DCMD names no metric of this device; ignored");
            continue;
        };
        let def = &node.devices[at.0].metrics[at.1];
        let value = match payload::command_value(def.datatype, m) {
            Ok(v) => v,
            Err(e) => {
                warn!(device, metric = %def.name, error = %e, "Sparkplug DCMD not written");
                continue;
            }
        };
        let w = Write {
            who: format!("sparkplug:{device}"),
            submodel_id: def.submodel_id.clone(),
            path: def.path.clone(),
            value,
        };
        if writes.try_send(w).is_err() {
            warn!(device, metric = %def.name, "too many Sparkplug DCMD writes waiting; this one is refused");
        }
    }
}

async fn session(
    cfg: &SparkplugConfig,
    ids: &Ids,
    bd_seq: u8,
    ctx: &SinkContext,
    state: Session<'_>,
    out_of_time: &CancellationToken,
) -> Outcome {
    let Session {
        tls,
        node,
        host,
        writes,
    } = state;
    let stats = &ctx.stats;
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("{}-sparkplug", ctx.gateway_name));
    let ndeath_topic = payload::node_topic(&ids.group, "NDEATH", &ids.node);
    let mut opts = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(cfg.keep_alive_s.max(5)))
        // Sparkplug 3.0: a clean session per connection; unconfirmed values are re-sent from
        // the outbox after the next birth instead.
        .set_clean_session(true)
        .set_max_packet_size(16 << 20, 16 << 20)
        .set_inflight((WINDOWS_IN_FLIGHT * WINDOW) as u16)
        .set_last_will(LastWill::new(
            &ndeath_topic,
            payload::ndeath(bd_seq),
            QoS::AtLeastOnce,
            false,
        ));
    if let Some(u) = &cfg.username {
        opts.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(tls) = tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(tls));
    }
    let (client, mut event_loop) = AsyncClient::new(opts, WINDOWS_IN_FLIGHT * WINDOW);
    let qos = if cfg.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };

    // The event loop task: polls (nothing moves otherwise), matches PUBACKs, notices overdue
    // ones. It never reconnects: a lost connection ends the session (`lost`).
    let (watermark_tx, watermark_rx) = watch::channel(0u64);
    // Commands and STATE: few; a full queue drops (logged) rather than stalling the poller,
    // which the publisher needs to empty the request queue.
    let (incoming_tx, mut incoming) = mpsc::channel::<Incoming>(256);
    let lost = CancellationToken::new();
    let stop_polling = CancellationToken::new();
    let disconnected = Arc::new(tokio::sync::Notify::new());
    let poller = {
        let (lost, stop, said_goodbye) = (lost.clone(), stop_polling.clone(), disconnected.clone());
        let stats = stats.clone();
        let broker = format!("{}:{}", cfg.host, cfg.port);
        let puback_timeout = Duration::from_secs(cfg.puback_timeout_s.max(1));
        tokio::spawn(async move {
            let mut tracker = Tracker::default();
            let mut last_check = Instant::now();
            loop {
                if last_check.elapsed() >= Duration::from_secs(1) {
                    last_check = Instant::now();
                    if tracker.overdue(last_check, puback_timeout) {
                        warn!(broker = %broker, "MQTT broker did not confirm a Sparkplug message in time; reconnecting (new bdSeq, births, unconfirmed values again)");
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    e = event_loop.poll() => e,
                };
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        stats.connected.store(true, Ordering::Relaxed);
                        let _ = incoming_tx.try_send(Incoming::Connected);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = p.topic.to_string();
                        if incoming_tx
                            .try_send(Incoming::Message(topic, p.payload.to_vec()))
                            .is_err()
                        {
                            warn!("Sparkplug sink: too many commands at once; one was dropped");
                        }
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => said_goodbye.notify_one(),
                    Ok(ref event) if tracker.observe(event, &stats.retries, &watermark_tx) => {}
                    Ok(_) => {}
                    Err(e) => {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                        warn!(broker = %broker, error = %e, "Sparkplug sink: no MQTT broker connection; values wait in the outbox");
                        break;
                    }
                }
            }
            stats.connected.store(false, Ordering::Relaxed);
            lost.cancel();
        })
    };
    let end = |outcome: Outcome| async {
        stop_polling.cancel();
        outcome
    };

    // 1. Connected.
    tokio::select! {
        m = incoming.recv() => if !matches!(m, Some(Incoming::Connected)) {
            return end(Outcome::Again { now: false }).await;
        },
        _ = lost.cancelled() => return end(Outcome::Again { now: false }).await,
        _ = out_of_time.cancelled() => return end(Outcome::Finished).await,
    }
    info!(broker = %format!("{}:{}", cfg.host, cfg.port), group = %ids.group, node = %ids.node, bd_seq, "Sparkplug node connected");
    let ncmd = payload::node_topic(&ids.group, "NCMD", &ids.node);
    let dcmd_prefix = format!("{}/", payload::node_topic(&ids.group, "DCMD", &ids.node));
    let mut subscriptions = vec![ncmd.clone()];
    subscriptions.extend(ids.state_topic.clone());
    if cfg.accept_writes {
        subscriptions.push(format!("{dcmd_prefix}+"));
    }
    for t in &subscriptions {
        if client.subscribe(t, QoS::AtLeastOnce).await.is_err() {
            return end(Outcome::Again { now: false }).await;
        }
    }

    // 2. The primary host online (its STATE is retained: it comes right after subscribing).
    if let Some(state_topic) = &ids.state_topic {
        let mut said = false;
        while !host.online() {
            if !said {
                info!(host = %state_topic, "Sparkplug node waits for its primary host to be online; values stay in the outbox");
                said = true;
            }
            tokio::select! {
                m = incoming.recv() => match m {
                    Some(Incoming::Message(t, body)) if &t == state_topic => { host.update(&body); }
                    Some(_) => {}
                    None => return end(Outcome::Again { now: false }).await,
                },
                _ = lost.cancelled() => return end(Outcome::Again { now: false }).await,
                // Nothing can be delivered now: stop at once, the values stay in the outbox.
                _ = ctx.shutdown.cancelled() => return goodbye(&client, &ndeath_topic, bd_seq, &disconnected, stop_polling, poller).await,
            }
        }
    }

    // 3. Births: the backlog's newest values first, then the backlog again, historical.
    let historical_end = scan_backlog(ctx, node).await;
    let mut reader = ctx.outbox.reader(NAME);
    let mut out = Publisher {
        client: client.clone(),
        qos,
        published: 0,
        seq: 0,
    };
    let mut sources_up = ctx.sources_up.clone();
    let up = sources_up.borrow_and_update().clone();
    for dev in &mut node.devices {
        dev.born = false;
    }
    if out.births(ids, bd_seq, node, &up).await.is_err() {
        return end(Outcome::Again { now: false }).await;
    }
    info!(
        bd_seq,
        devices = node.devices.len(),
        backlog_historical = historical_end.is_some(),
        "Sparkplug births published"
    );

    // 4. Data.
    let (window_tx, window_rx) = mpsc::channel::<Window>(WINDOWS_IN_FLIGHT - 1);
    let session_over = CancellationToken::new();
    let confirmer = confirm_windows(
        window_rx,
        watermark_rx,
        qos,
        reader.acker(),
        stats.clone(),
        out_of_time.clone(),
        session_over.clone(),
        "Sparkplug",
    );
    let mut unknown_reported = std::collections::HashSet::new();
    let mut sources_watched = true;
    let publisher = async {
        let outcome = 'deliver: loop {
            let next = tokio::select! {
                r = reader.next_batch(WINDOW) => r,
                m = incoming.recv() => {
                    match m {
                        Some(Incoming::Message(t, body)) => {
                            if t == ncmd && payload::is_rebirth_request(&body) {
                                info!("Sparkplug rebirth requested (NCMD Node Control/Rebirth)");
                                let up = sources_up.borrow().clone();
                                if out.births(ids, bd_seq, node, &up).await.is_err() {
                                    break 'deliver Outcome::Again { now: false };
                                }
                            } else if let Some(device) = t.strip_prefix(&dcmd_prefix) {
                                device_command(node, device, &body, writes);
                            } else if ids.state_topic.as_deref() == Some(t.as_str())
                                && host.update(&body) == Some(false)
                            {
                                info!("Sparkplug primary host went offline: NDEATH, disconnect; values stay in the outbox until it is back");
                                break 'deliver Outcome::Again { now: true };
                            }
                        }
                        Some(Incoming::Connected) => {}
                        None => break 'deliver Outcome::Again { now: false },
                    }
                    continue;
                }
                r = sources_up.changed(), if sources_watched => {
                    if r.is_err() {
                        sources_watched = false; // the gateway is stopping
                    } else {
                        let up = sources_up.borrow_and_update().clone();
                        if out.follow_sources(ids, node, &up).await.is_err() {
                            break 'deliver Outcome::Again { now: false };
                        }
                    }
                    continue;
                }
                _ = lost.cancelled() => break Outcome::Again { now: false },
                _ = out_of_time.cancelled() => break Outcome::Finished,
            };
            let delivery = match next {
                Ok(Some(d)) => d,
                Ok(None) => break Outcome::Finished, // outbox closed and fully read
                Err(e) => {
                    error!(error = %e, "Sparkplug sink cannot read the outbox; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let batch = &delivery.values;
            stats
                .received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let historical = historical_end.is_some_and(|h| delivery.end <= h);
            // One DDATA per device, in the order devices first appear in the window; each
            // device's values keep their order.
            let mut per_device: Vec<(usize, Vec<super::proto::Metric>)> = Vec::new();
            for u in batch {
                let Some(at) = node.find(u.target) else {
                    stats.rejected.fetch_add(1, Ordering::Relaxed);
                    // Targets live for the whole process: the address names one.
                    if unknown_reported.insert(std::ptr::from_ref(u.target) as usize) {
                        warn!(submodel = %u.target.submodel.id, element = %u.target.id_short_path, "Sparkplug sink: value of an element the mapping no longer has; skipped (logged once)");
                    }
                    continue;
                };
                let metric = node.data_metric(at, u, historical);
                node.remember(at, u);
                match per_device.iter_mut().find(|(d, _)| *d == at.0) {
                    Some((_, ms)) => ms.push(metric),
                    None => per_device.push((at.0, vec![metric])),
                }
            }
            for (d, metrics) in per_device {
                if !node.devices[d].born {
                    // A value read from the outbox for a device that died since: born again
                    // for it (and dead again after the window if its sources still are lost).
                    if out.dbirth(ids, node, d).await.is_err() {
                        break 'deliver Outcome::Again { now: false };
                    }
                }
                let seq = out.next_seq();
                let topic =
                    payload::device_topic(&ids.group, "DDATA", &ids.node, &node.devices[d].id);
                let body = payload::device_payload(seq, metrics);
                tokio::select! {
                    r = out.send(topic, body) => if r.is_err() { break 'deliver Outcome::Again { now: false } },
                    _ = lost.cancelled() => break 'deliver Outcome::Again { now: false },
                    _ = out_of_time.cancelled() => break 'deliver Outcome::Finished,
                }
            }
            let up = sources_up.borrow().clone();
            if out.deaths(ids, node, &up).await.is_err() {
                break 'deliver Outcome::Again { now: false };
            }
            let window = Window {
                published_after: out.published,
                end: delivery.end,
                source_ts: batch.iter().map(|u| u.source_ts_nanos).collect(),
            };
            tokio::select! {
                r = window_tx.send(window) => if r.is_err() { break Outcome::Again { now: false } },
                _ = lost.cancelled() => break Outcome::Again { now: false },
                _ = out_of_time.cancelled() => break Outcome::Finished,
            }
        };
        drop(window_tx);
        outcome
    };
    let (outcome, ()) = tokio::join!(publisher, async {
        confirmer.await;
    });
    session_over.cancel();
    match outcome {
        Outcome::Finished | Outcome::Again { now: true } if !lost.is_cancelled() => {
            // A deliberate end: NDEATH first (a clean DISCONNECT does not fire the will).
            goodbye(
                &client,
                &ndeath_topic,
                bd_seq,
                &disconnected,
                stop_polling,
                poller,
            )
            .await;
            outcome
        }
        _ => {
            stop_polling.cancel();
            let _ = poller.await;
            if out_of_time.is_cancelled() {
                Outcome::Finished
            } else {
                outcome
            }
        }
    }
}

/// Sends NDEATH and disconnects cleanly (bounded: a broker that is gone never sees it, and
/// shutdown must not wait for it).
async fn goodbye(
    client: &AsyncClient,
    ndeath_topic: &str,
    bd_seq: u8,
    disconnected: &tokio::sync::Notify,
    stop_polling: CancellationToken,
    poller: tokio::task::JoinHandle<()>,
) -> Outcome {
    let bye = async {
        let _ = client
            .publish(
                ndeath_topic,
                QoS::AtLeastOnce,
                false,
                payload::ndeath(bd_seq),
            )
            .await;
        if client.disconnect().await.is_ok() {
            disconnected.notified().await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
    stop_polling.cancel();
    let _ = poller.await;
    Outcome::Finished
}

/// Reads what waits in the outbox for this sink once, remembering each metric's newest value
/// for the births; returns the position up to which values are historical (`None`: nothing
/// waited).
async fn scan_backlog(ctx: &SinkContext, node: &mut Node) -> Option<Pos> {
    let waiting = ctx.outbox.lag(NAME);
    if waiting == 0 {
        return None;
    }
    let mut reader = ctx.outbox.reader(NAME);
    let (mut seen, mut end) = (0u64, None);
    while seen < waiting {
        // Bounded: values skipped meanwhile (drop_oldest) would otherwise leave it waiting.
        match tokio::time::timeout(Duration::from_secs(1), reader.next_batch(WINDOW)).await {
            Ok(Ok(Some(d))) => {
                seen += d.values.len() as u64;
                for u in &d.values {
                    if let Some(at) = node.find(u.target) {
                        node.remember(at, u);
                    }
                }
                end = Some(d.end);
            }
            _ => break,
        }
    }
    info!(
        values = seen,
        "Sparkplug backlog: sent again as historical after the births"
    );
    end
}
