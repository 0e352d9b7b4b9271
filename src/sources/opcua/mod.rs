//! OPC UA source: one session per configured server, one subscription carrying the mapped
//! nodes, every data change turned into a [`Reading`].
//!
//! Robustness rules (see `shared/reference/dependencies.md` for why each exists):
//! - the session reconnects forever with backoff, but credentials or certificates the server
//!   rejects end this source with one clear error instead of a silent retry loop;
//! - after a reconnect the client is told to publish at once, or notifications do not resume;
//! - `nsu=` node ids are resolved against the server's NamespaceArray on connect;
//! - monitored items are created in batches, and every node the server rejects is named in the
//!   log while the others keep running;
//! - gaps in publish sequence numbers (lost notification messages) are counted and logged.

pub mod convert;
pub mod node_ref;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opcua::client::{
    Client, ClientBuilder, IdentityToken, MonitoredItemMap, OnSubscriptionNotificationCore,
    Session, SessionPollResult,
};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    DataChangeNotification, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NotificationMessage, ReadValueId, StatusCode, TimestampsToReturn,
    UserTokenPolicy,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::OpcUaSourceConfig;
use crate::model::{Reading, ReadingBatch};
use node_ref::NodeRef;

/// A node this source must monitor, and the mapping rule its values belong to.
#[derive(Debug, Clone)]
pub struct MonitoredNode {
    pub rule: u32,
    pub node: NodeRef,
}

/// Counters of one source, readable while it runs.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub notifications: AtomicU64,
    pub sequence_gaps: AtomicU64,
    pub reconnects: AtomicU64,
    /// The session, announced for write-back, readiness and the audit log.
    pub session: crate::writeback::SessionSlot,
}

/// Maps a config name to the security policy URI, `None` if unknown.
pub fn security_policy_uri(name: &str) -> Option<&'static str> {
    match name {
        "None" => Some(SecurityPolicy::None.to_uri()),
        "Basic256Sha256" => Some(SecurityPolicy::Basic256Sha256.to_uri()),
        "Aes128Sha256RsaOaep" | "Aes128_Sha256_RsaOaep" => {
            Some(SecurityPolicy::Aes128Sha256RsaOaep.to_uri())
        }
        "Aes256Sha256RsaPss" | "Aes256_Sha256_RsaPss" => {
            Some(SecurityPolicy::Aes256Sha256RsaPss.to_uri())
        }
        _ => None,
    }
}

/// Maps a config name to the message security mode, `None` if unknown.
pub fn security_mode(name: &str) -> Option<MessageSecurityMode> {
    match name {
        "None" => Some(MessageSecurityMode::None),
        "Sign" => Some(MessageSecurityMode::Sign),
        "SignAndEncrypt" => Some(MessageSecurityMode::SignAndEncrypt),
        _ => None,
    }
}

/// Status codes after which retrying cannot help: the server does not accept who we are.
fn is_fatal(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadIdentityTokenRejected
            | StatusCode::BadIdentityTokenInvalid
            | StatusCode::BadUserAccessDenied
            | StatusCode::BadCertificateInvalid
            | StatusCode::BadCertificateUntrusted
            | StatusCode::BadCertificateRevoked
            | StatusCode::BadSecurityChecksFailed
            | StatusCode::BadSecurityPolicyRejected
    )
}

/// Runs one OPC UA source until `shutdown`, sending readings to `tx`.
///
/// Returns an error only for problems retrying cannot fix (rejected credentials, bad config).
pub async fn run_source(
    cfg: OpcUaSourceConfig,
    pki_dir: std::path::PathBuf,
    nodes: Vec<MonitoredNode>,
    tx: mpsc::Sender<ReadingBatch>,
    stats: Arc<SourceStats>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = cfg.name.clone();
    let policy = security_policy_uri(&cfg.security_policy)
        .ok_or_else(|| anyhow::anyhow!("source {name}: unknown security policy"))?;
    let mode = security_mode(&cfg.security_mode)
        .ok_or_else(|| anyhow::anyhow!("source {name}: unknown security mode"))?;
    if cfg.trust_server_certs && policy != SecurityPolicy::None.to_uri() {
        warn!(source = %name, "trust_server_certs is on: any server certificate is accepted");
    }
    let mut client = build_client(&cfg, &pki_dir)?;
    let (identity, token_policy) = match (&cfg.username, &cfg.password) {
        (Some(u), Some(p)) => (
            IdentityToken::new_user_name(u.clone(), p.clone()),
            UserTokenPolicy {
                token_type: opcua::types::UserTokenType::UserName,
                ..UserTokenPolicy::anonymous()
            },
        ),
        _ => (IdentityToken::Anonymous, UserTokenPolicy::anonymous()),
    };

    // The first connection: retry with backoff while the server is unreachable.
    let mut backoff = Backoff::new();
    let (session, event_loop) = loop {
        let endpoint: opcua::types::EndpointDescription =
            (cfg.endpoint.as_str(), policy, mode, token_policy.clone()).into();
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = client.connect_to_matching_endpoint(endpoint, identity.clone()) => r,
        };
        match attempt {
            Ok(pair) => break pair,
            Err(e) if is_fatal(e.status()) => {
                anyhow::bail!("source {name}: {} refused us: {e}", cfg.endpoint)
            }
            Err(e) => {
                let wait = backoff.next_delay();
                warn!(source = %name, endpoint = %cfg.endpoint, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot reach the OPC UA server");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    };

    stats.session.attach(&session);
    // Drive the session; it reports reconnects, and a fatal status ends the source.
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<StatusCode>(1);
    let loop_session = session.clone();
    let loop_name = name.clone();
    let loop_stats = stats.clone();
    let driver = tokio::spawn(async move {
        let mut stream = std::pin::pin!(event_loop.enter());
        while let Some(event) = stream.next().await {
            match event {
                Ok(SessionPollResult::Reconnected(mode)) => {
                    loop_stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    loop_stats.session.reconnected();
                    info!(source = %loop_name, ?mode, "reconnected to the OPC UA server");
                    // Without this, restored subscriptions stay silent (async-opcua pitfall).
                    loop_session.trigger_publish_now();
                }
                Ok(SessionPollResult::ConnectionLost(status)) => {
                    loop_stats.session.lost();
                    warn!(source = %loop_name, %status, "connection to the OPC UA server lost; reconnecting")
                }
                Ok(SessionPollResult::ReconnectFailed(status)) if is_fatal(status) => {
                    let _ = fatal_tx.send(status).await;
                    return;
                }
                Ok(SessionPollResult::ReconnectFailed(status)) => {
                    warn!(source = %loop_name, %status, "reconnect failed; retrying")
                }
                Ok(_) => {}
                Err(status) => {
                    let _ = fatal_tx.send(status).await;
                    return;
                }
            }
        }
    });

    let result = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        Some(status) = fatal_rx.recv() => Err(anyhow::anyhow!(
            "source {name}: the session to {} ended: {status} ({})", cfg.endpoint, describe_status(status))),
        r = subscribe(&session, &cfg, &nodes, tx, stats.clone()) => match r {
            Ok(()) => {
                // Subscribed: now run until shutdown or a fatal session error.
                tokio::select! {
                    _ = shutdown.cancelled() => Ok(()),
                    Some(status) = fatal_rx.recv() => Err(anyhow::anyhow!(
                        "source {name}: the session to {} ended: {status} ({})", cfg.endpoint, describe_status(status))),
                }
            }
            Err(e) => Err(e),
        },
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
    driver.abort();
    stats.session.clear();
    result
}

fn describe_status(status: StatusCode) -> &'static str {
    if is_fatal(status) {
        "the server rejected the gateway's identity or certificate; check username/password and trust"
    } else {
        "retrying did not help"
    }
}

fn build_client(cfg: &OpcUaSourceConfig, pki_dir: &std::path::Path) -> anyhow::Result<Client> {
    ClientBuilder::new()
        .application_name("aas-gateway")
        .application_uri("urn:aas-gateway")
        .product_uri("urn:aas-gateway")
        .pki_dir(pki_dir)
        .create_sample_keypair(true)
        .trust_server_certs(cfg.trust_server_certs)
        .session_retry_limit(-1)
        .session_retry_initial(Duration::from_millis(500))
        .session_retry_max(Duration::from_secs(10))
        .keep_alive_interval(Duration::from_secs(5))
        .max_message_size(64 * 1024 * 1024)
        .max_chunk_count(1024)
        .max_array_length(1_000_000)
        .client()
        .map_err(|errors| {
            anyhow::anyhow!("source {}: client setup: {}", cfg.name, errors.join("; "))
        })
}

/// Creates the subscription and its monitored items (in server-sized batches).
async fn subscribe(
    session: &Arc<Session>,
    cfg: &OpcUaSourceConfig,
    nodes: &[MonitoredNode],
    tx: mpsc::Sender<ReadingBatch>,
    stats: Arc<SourceStats>,
) -> anyhow::Result<()> {
    session.wait_for_connection().await;
    let namespaces = session.read_namespace_array().await.map_err(|e| {
        anyhow::anyhow!(
            "source {}: reading the NamespaceArray failed: {e}",
            cfg.name
        )
    })?;
    let publishing = Duration::from_millis(cfg.publishing_interval_ms);
    let sampling = cfg
        .sampling_interval_ms
        .unwrap_or(cfg.publishing_interval_ms) as f64;
    let handler = NotificationHandler {
        source: cfg.name.clone(),
        tx,
        stats,
        last_sequence: None,
    };
    let subscription_id = session
        .create_subscription(
            publishing,
            60,
            10,
            cfg.max_notifications_per_publish,
            0,
            true,
            handler,
        )
        .await
        .map_err(|e| anyhow::anyhow!("source {}: CreateSubscription failed: {e}", cfg.name))?;

    let mut requests = Vec::with_capacity(nodes.len());
    for n in nodes {
        match n.node.resolve(&namespaces) {
            Ok(node_id) => requests.push((
                n,
                MonitoredItemCreateRequest {
                    item_to_monitor: ReadValueId::from(node_id),
                    monitoring_mode: MonitoringMode::Reporting,
                    requested_parameters: MonitoringParameters {
                        // Client handle = rule + 1 (0 means "assign one for me" to async-opcua).
                        client_handle: n.rule + 1,
                        sampling_interval: sampling,
                        queue_size: cfg.queue_size,
                        discard_oldest: true,
                        ..Default::default()
                    },
                },
            )),
            Err(e) => error!(source = %cfg.name, node = %n.node, "cannot monitor this node: {e}"),
        }
    }
    let mut accepted = 0usize;
    for batch in requests.chunks(cfg.create_batch_size) {
        let items = batch.iter().map(|(_, r)| r.clone()).collect();
        let results = session
            .create_monitored_items(subscription_id, TimestampsToReturn::Both, items)
            .await
            .map_err(|e| {
                anyhow::anyhow!("source {}: CreateMonitoredItems failed: {e}", cfg.name)
            })?;
        for ((node, _), result) in batch.iter().zip(&results) {
            if result.result.status_code.is_good() {
                accepted += 1;
            } else {
                error!(source = %cfg.name, node = %node.node, status = %result.result.status_code, "the server rejected this node; the others keep running");
            }
        }
    }
    info!(source = %cfg.name, endpoint = %cfg.endpoint, monitored = accepted, rejected = nodes.len() - accepted, "subscribed");
    Ok(())
}

/// Turns publish responses into reading batches.
struct NotificationHandler {
    source: String,
    tx: mpsc::Sender<ReadingBatch>,
    stats: Arc<SourceStats>,
    last_sequence: Option<u32>,
}

impl OnSubscriptionNotificationCore for NotificationHandler {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        let Some(data) = notification.notification_data else {
            return; // keep-alive
        };
        if let Some(last) = self.last_sequence {
            let expected = last.wrapping_add(1);
            if notification.sequence_number != expected && notification.sequence_number > last {
                let missing = notification.sequence_number.wrapping_sub(expected) as u64;
                self.stats
                    .sequence_gaps
                    .fetch_add(missing, Ordering::Relaxed);
                warn!(source = %self.source, expected, got = notification.sequence_number, "notification messages were lost between the server and the gateway");
            }
        }
        self.last_sequence = Some(notification.sequence_number);

        let mut batch = Vec::new();
        for obj in data {
            let Some(change) = obj.into_inner_as::<DataChangeNotification>() else {
                continue;
            };
            for item in change.monitored_items.into_iter().flatten() {
                let dv = item.value;
                let server_ts = dv.server_timestamp.as_ref().map(convert::datetime_nanos);
                let source_ts = dv
                    .source_timestamp
                    .as_ref()
                    .map(convert::datetime_nanos)
                    .or(server_ts)
                    .unwrap_or_else(now_nanos);
                batch.push(Reading {
                    rule: item.client_handle.saturating_sub(1),
                    value: dv.value.unwrap_or_default(),
                    status: dv.status.map(|s| s.bits()).unwrap_or(0),
                    source_ts_nanos: source_ts,
                    server_ts_nanos: server_ts.unwrap_or(0),
                });
            }
        }
        if batch.is_empty() {
            return;
        }
        self.stats
            .notifications
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Back-pressure: when the pipeline is full, hold this publish response (the server keeps
        // queueing) instead of dropping values. The callback is synchronous, so wait in place.
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(batch)) => {
                let tx = self.tx.clone();
                let sent = tokio::task::block_in_place(move || tx.blocking_send(batch));
                if sent.is_err() {
                    warn!(source = %self.source, "pipeline closed; dropping readings during shutdown");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                warn!(source = %self.source, "pipeline closed; dropping readings during shutdown")
            }
        }
    }
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// Exponential backoff 0.5 s → 30 s.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff {
            next: Duration::from_millis(500),
        }
    }
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(30));
        d
    }
    pub fn reset(&mut self) {
        self.next = Duration::from_millis(500);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}
