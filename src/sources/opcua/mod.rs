//! OPC UA source: one session per configured server; the mapped nodes either in one
//! subscription (monitored items) or read cyclically; every value turned into a [`Reading`].
//!
//! Modules, one concern each:
//! - [`config`]: the `[[opcua]]` section and its `validate()`;
//! - [`session`]: client set-up (security, PKI, identity tokens), connect, the event-loop driver
//!   that catches rejected credentials/certificates and kicks publishing after reconnects;
//! - [`subscription`]: monitored items with per-node sampling/queue/DataChangeFilter, batching,
//!   the notification handler (sequence gaps, queue overflows), which never blocks;
//! - [`handoff`]: from the handler to the pipeline; back-pressure by pausing publishing;
//! - [`reader`]: cyclic-read mode;
//! - [`slot`]: where the source announces its session (write-back, readiness, audit);
//! - [`limits`]: the server's OperationLimits, which size every batch;
//! - [`node_ref`]: node ids in all forms, `nsu=` resolved against the NamespaceArray;
//! - [`convert`]: every built-in type to a [`crate::core::TypedValue`];
//! - [`browse`]: the address-space walker behind `aas-gateway browse`;
//! - [`pki`]: the gateway's certificate store (`aas-gateway pki`).
//!
//! Robustness rules (see `shared/reference/dependencies.md` for why each exists):
//! - the session reconnects forever with backoff, but credentials or certificates the server
//!   rejects end this source with one clear error instead of a silent retry loop;
//! - after a reconnect the client is told to publish at once, or notifications do not resume;
//! - `nsu=` ids are resolved after every connect; on a new session whose NamespaceArray
//!   changed, the source starts over so that every item monitors the right node;
//! - a server that sends neither data nor keep-alives for `silence_timeout` is treated as
//!   stalled: logged, disconnected and connected afresh. Our own back-pressure cannot look
//!   like that: the handler never blocks the session, and a subscription whose publishing we
//!   paused still sends keep-alives (the watch says so when it fires during a pause).

pub mod browse;
pub mod browse_aas;
pub mod config;
pub mod convert;
pub mod handoff;
pub mod limits;
pub mod node_ref;
pub mod pki;
pub mod reader;
pub mod session;
pub mod slot;
pub mod source;
pub mod subscription;
pub mod typecheck;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opcua::client::SessionConnectMode;
use opcua::types::{DataValue, NamespaceMap, NodeId, StatusCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::core::{Backoff, Reading, ReadingBatch};
use config::{
    AcquisitionMode, DataChangeTriggerKind, DeadbandKind, NodeOverrides, OpcUaSourceConfig,
};
use node_ref::NodeRef;
use session::{Connection, SessionEvent};

pub use super::SourceStats;
pub use session::{security_mode, security_policy_uri};
pub use source::OpcUaSource;

/// How one node is acquired: the source's settings with the mapping rule's overrides applied.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSettings {
    /// Subscribe or read cyclically.
    pub mode: AcquisitionMode,
    /// Read period in read mode, milliseconds.
    pub read_interval_ms: u64,
    /// Requested sampling interval, milliseconds (0 = as fast as the server can).
    pub sampling_interval_ms: f64,
    /// Server-side queue size of the monitored item.
    pub queue_size: u32,
    /// Drop the oldest queued value when the queue is full.
    pub discard_oldest: bool,
    /// DataChangeFilter trigger.
    pub trigger: DataChangeTriggerKind,
    /// DataChangeFilter deadband kind.
    pub deadband: DeadbandKind,
    /// DataChangeFilter deadband value.
    pub deadband_value: f64,
}

impl MonitorSettings {
    /// The source's settings, overridden by whatever the rule sets.
    pub fn resolve(src: &OpcUaSourceConfig, rule: &NodeOverrides) -> MonitorSettings {
        MonitorSettings {
            mode: rule.mode.unwrap_or(src.mode),
            read_interval_ms: rule.read_interval_ms.unwrap_or(src.read_interval_ms),
            sampling_interval_ms: rule
                .sampling_interval_ms
                .or(src.sampling_interval_ms)
                .unwrap_or(src.publishing_interval_ms) as f64,
            queue_size: rule.queue_size.unwrap_or(src.queue_size),
            discard_oldest: rule.discard_oldest.unwrap_or(src.discard_oldest),
            trigger: rule.data_change_trigger.unwrap_or(src.data_change_trigger),
            deadband: rule.deadband_type.unwrap_or(src.deadband_type),
            deadband_value: rule.deadband_value.unwrap_or(src.deadband_value),
        }
    }
}

/// A node this source must acquire, the mapping rule its values belong to, and how.
#[derive(Debug, Clone)]
pub struct MonitoredNode {
    /// Index of the mapping rule.
    pub rule: u32,
    /// The node id as configured (shared with the mapping's route, and with the process's
    /// lifetime: cloning a node list copies no node ids).
    pub node: &'static NodeRef,
    /// Acquisition settings, shared by the nodes that have the same.
    pub settings: Arc<MonitorSettings>,
}

// One per monitored node (100k and more).
const _: () = assert!(std::mem::size_of::<MonitoredNode>() <= 24);

/// Time of the last sign of life of a subscription (any publish response).
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    fn new() -> Heartbeat {
        Heartbeat {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records a sign of life now.
    pub fn beat(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last sign of life.
    pub fn silent_for(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A DataValue as a reading of `rule`, its value converted to a [`crate::core::TypedValue`]
/// (structures become JSON text, see [`convert`]); the source timestamp falls back to the
/// server timestamp, then to the arrival time, so that every reading has a time. An error
/// names the value's type when it has no typed form.
pub fn data_value_reading(
    rule: u32,
    dv: DataValue,
    encoder: &convert::StructureEncoder,
) -> Result<Reading, String> {
    let server_ts = dv.server_timestamp.as_ref().map(convert::datetime_nanos);
    let source_ts = dv
        .source_timestamp
        .as_ref()
        .map(convert::datetime_nanos)
        .or(server_ts)
        .unwrap_or_else(now_nanos);
    let value = match &dv.value {
        Some(v) => encoder.to_typed(v)?,
        None => crate::core::TypedValue::Null,
    };
    Ok(Reading {
        rule,
        value,
        status: dv.status.map(|s| s.bits()).unwrap_or(0),
        source_ts_nanos: source_ts,
        server_ts_nanos: server_ts.unwrap_or(0),
    })
}

/// Counts a value the source cannot represent and names it in the log once per rule (a
/// stream of them must not flood the log).
pub fn report_unconvertible(
    source: &str,
    stats: &SourceStats,
    logged: &mut std::collections::HashSet<u32>,
    rule: u32,
    error: &str,
) {
    stats.unconvertible.fetch_add(1, Ordering::Relaxed);
    if logged.insert(rule) {
        warn!(source = %source, "mapping[{rule}]: a value was not taken (logged once per rule, counted always): {error}");
    }
}

/// Why one connection of a source ended.
enum Outcome {
    Shutdown,
    /// Start a new session (changed namespaces, ended event loop).
    Restart,
    /// The server stopped answering: start a new session without waiting for a polite
    /// disconnect it would not answer either.
    Stalled,
    Fatal(anyhow::Error),
}

/// Checks a node's DataType against its mapping rule (rule index, DataType node id); an error
/// names both (see [`typecheck::check_data_type`]).
pub type TypeCheck = Arc<dyn Fn(u32, &NodeId) -> Result<(), String> + Send + Sync>;

/// Runs one OPC UA source until `shutdown`, sending readings to `tx`.
///
/// Returns an error only for problems retrying cannot fix (rejected credentials or
/// certificates, bad config); unreachable or restarting servers are retried forever.
pub async fn run_source(
    cfg: OpcUaSourceConfig,
    pki_dir: std::path::PathBuf,
    nodes: Vec<MonitoredNode>,
    type_check: TypeCheck,
    tx: mpsc::Sender<ReadingBatch>,
    stats: Arc<SourceStats>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = cfg.name.clone();
    if cfg.trust_server_certs && cfg.security_policy != "None" {
        warn!(source = %name, "trust_server_certs is on: any server certificate is accepted");
    }
    if !cfg.verify_server_certs && cfg.security_policy != "None" {
        warn!(source = %name, "verify_server_certs is off: the server certificate's host name and dates are not checked");
    }
    let identity = session::identity(&cfg)?;
    let mut client = session::build_client(&cfg, &pki_dir)?;
    let mut backoff = Backoff::new();
    // One hand-off for the source's whole life: values waiting in it survive a reconnect.
    let handoff = handoff::HandOff::new(
        name.clone(),
        cfg.pause_publishing_above,
        cfg.handoff_max_values(),
        stats.clone(),
    );
    let forwarder_stop = CancellationToken::new();
    let forwarder = tokio::spawn(handoff.clone().forward(tx.clone(), forwarder_stop.clone()));
    let result = run_sessions(
        &cfg,
        &mut client,
        &identity,
        &mut backoff,
        &nodes,
        &type_check,
        &handoff,
        &tx,
        &stats,
        &shutdown,
    )
    .await;
    // Pass on what the last session delivered before the source ends.
    forwarder_stop.cancel();
    let _ = forwarder.await;
    result
}

/// Opens sessions one after the other until shutdown or an error retrying cannot fix.
#[allow(clippy::too_many_arguments)]
async fn run_sessions(
    cfg: &OpcUaSourceConfig,
    client: &mut opcua::client::Client,
    identity: &(opcua::client::IdentityToken, opcua::types::UserTokenPolicy),
    backoff: &mut Backoff,
    nodes: &[MonitoredNode],
    type_check: &TypeCheck,
    handoff: &Arc<handoff::HandOff>,
    tx: &mpsc::Sender<ReadingBatch>,
    stats: &Arc<SourceStats>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let on_retry = |why: String| stats.health.problem(why);
        let opened = session::open(client, cfg, identity, backoff, shutdown, &on_retry).await;
        let Some(mut conn) = opened.inspect_err(|_| stats.session.clear())? else {
            stats.session.clear();
            return Ok(());
        };
        stats.session.attach(&conn.session);
        let outcome = run_connection(
            cfg, nodes, type_check, &mut conn, backoff, handoff, tx, stats, shutdown,
        )
        .await;
        match outcome {
            Outcome::Fatal(e) => {
                stats.session.clear();
                conn.abandon();
                return Err(e);
            }
            Outcome::Shutdown => {
                stats.session.clear();
                conn.close().await;
                return Ok(());
            }
            Outcome::Restart | Outcome::Stalled => {
                if matches!(outcome, Outcome::Stalled) {
                    conn.abandon();
                } else {
                    conn.close().await;
                }
                let wait = backoff.next_delay();
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Runs one session: waits for it to connect, subscribes / starts the readers, then watches
/// for reconnects, namespace changes, silence and shutdown.
#[allow(clippy::too_many_arguments)]
async fn run_connection(
    cfg: &OpcUaSourceConfig,
    nodes: &[MonitoredNode],
    type_check: &TypeCheck,
    conn: &mut Connection,
    backoff: &mut Backoff,
    handoff: &Arc<handoff::HandOff>,
    tx: &mpsc::Sender<ReadingBatch>,
    stats: &Arc<SourceStats>,
    shutdown: &CancellationToken,
) -> Outcome {
    let events = &mut conn.events;
    let name = &cfg.name;
    let fatal = |status: StatusCode| {
        Outcome::Fatal(anyhow::Error::new(super::SourceError::Refused {
            source_name: name.clone(),
            endpoint: cfg.endpoint.clone(),
            status: status.to_string(),
            hint: session::describe_fatal(status).to_string(),
        }))
    };
    // The first connect happens in the event loop: wait for it.
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Outcome::Shutdown,
            e = events.recv() => match e {
                Some(SessionEvent::Connected(_)) => {
                    stats.session.reconnected();
                    break;
                }
                Some(SessionEvent::Lost(_)) => {}
                Some(SessionEvent::Fatal(status)) => return fatal(status),
                Some(SessionEvent::Ended(status)) => {
                    stats.health.problem(format!("the session ended: {status}"));
                    warn!(source = %name, %status, "the session ended; starting a new one");
                    return Outcome::Restart;
                }
                None => return Outcome::Restart,
            }
        }
    }
    backoff.reset();
    let session = conn.session.clone();
    let namespaces = match session.read_namespace_array().await {
        Ok(ns) => ns,
        Err(e) => {
            warn!(source = %name, error = %e, "reading the NamespaceArray failed; starting a new session");
            return Outcome::Restart;
        }
    };
    let limits = limits::read(&session).await;
    info!(source = %name, ?limits, "server operation limits");
    if cfg.load_data_types {
        load_data_types(&session, name, &limits).await;
    }
    let encoder = convert::StructureEncoder::new(session.context());

    // Resolve every node; unresolvable ones (unknown namespace URI) are named, the rest run.
    stats.health.clear_rejected();
    let mut resolved = Vec::with_capacity(nodes.len());
    for n in nodes {
        match n.node.resolve(&namespaces) {
            Ok(id) => resolved.push((n, id)),
            Err(e) => {
                error!(source = %name, node = %n.node, "cannot acquire this node: {e}");
                stats.health.reject(n.node, e);
            }
        }
    }
    // A node whose DataType cannot fit its element (a Double node on an xs:boolean) is a
    // mapping error: named once, left out; the others run.
    let mismatched = mismatched_types(
        &session,
        &resolved,
        type_check,
        limits.read_batch(cfg.create_batch_size),
    )
    .await;
    for (rule, e) in &mismatched {
        error!(source = %name, "mapping[{rule}]: {e}; this node is not acquired");
        if let Some(n) = nodes.iter().find(|n| n.rule == *rule) {
            stats.health.reject(n.node, e);
        }
    }
    let mut subscribed = Vec::new();
    let mut read_groups: BTreeMap<u64, Vec<(MonitoredNode, NodeId)>> = BTreeMap::new();
    for (n, id) in resolved {
        if mismatched.iter().any(|(rule, _)| *rule == n.rule) {
            continue;
        }
        {
            match n.settings.mode {
                AcquisitionMode::Subscribe => subscribed.push((n, id)),
                AcquisitionMode::Read => read_groups
                    .entry(n.settings.read_interval_ms)
                    .or_default()
                    .push((n.clone(), id)),
            }
        }
    }

    let heartbeat = Arc::new(Heartbeat::new());
    heartbeat.beat();
    let has_subscription = !subscribed.is_empty();
    if has_subscription {
        let handler = subscription::NotificationHandler {
            source: name.clone(),
            handoff: handoff.clone(),
            stats: stats.clone(),
            heartbeat: heartbeat.clone(),
            encoder: encoder.clone(),
            last_sequence: None,
            unconvertible_logged: Default::default(),
        };
        let created = tokio::select! {
            _ = shutdown.cancelled() => return Outcome::Shutdown,
            r = subscription::create(&session, cfg, &subscribed, &limits, handler) => r,
        };
        if let Err(e) = created {
            warn!(source = %name, "{e:#}; starting a new session");
            return Outcome::Restart;
        }
    }
    // The client keeps its own copy of every item; this list (48 bytes a node, 6 MB at 100k
    // nodes) would otherwise live as long as the session.
    drop(subscribed);
    let readers = CancellationToken::new();
    let _stop_readers = readers.clone().drop_guard();
    // Told after every reconnect, so that a pause is applied again to a recreated subscription.
    let reconnected = Arc::new(tokio::sync::Notify::new());
    if has_subscription {
        // Pauses and resumes publishing of this session's subscription for the hand-off.
        let control = handoff::PublishingControl {
            session: session.clone(),
            source: name.clone(),
            stats: stats.clone(),
            reconnected: reconnected.clone(),
        };
        tokio::spawn(control.run(handoff.pause_wanted(), readers.clone()));
    }
    for (interval, group) in read_groups {
        info!(source = %name, nodes = group.len(), interval_ms = interval, "cyclic read");
        tokio::spawn(reader::run(
            name.clone(),
            session.clone(),
            reader::ReadGroup {
                nodes: group,
                interval: Duration::from_millis(interval),
                batch_size: limits.read_batch(cfg.create_batch_size),
            },
            encoder.clone(),
            tx.clone(),
            stats.clone(),
            readers.clone(),
        ));
    }

    let silence = cfg.silence_timeout();
    let mut connected = true;
    let mut watch = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Outcome::Shutdown,
            _ = watch.tick() => {
                // Keep-alives beat the heartbeat too, also while we pause publishing, and the
                // handler never waits for the pipeline: silence here is the server's own.
                if has_subscription && connected && heartbeat.silent_for() > silence {
                    stats.stalls.fetch_add(1, Ordering::Relaxed);
                    stats.health.problem(format!("the server was silent for longer than silence_timeout ({} ms); reconnecting", silence.as_millis()));
                    warn!(source = %name, endpoint = %cfg.endpoint, silent_ms = heartbeat.silent_for().as_millis() as u64,
                        publishing_paused = stats.is_paused(),
                        "the server sent neither data nor keep-alive within silence_timeout; reconnecting");
                    return Outcome::Stalled;
                }
            }
            e = events.recv() => match e {
                Some(SessionEvent::Connected(mode)) => {
                    stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    stats.session.reconnected();
                    connected = true;
                    heartbeat.beat();
                    reconnected.notify_one();
                    if let SessionConnectMode::NewSession(_) = mode {
                        // Namespace indexes may differ on a restarted server. async-opcua has
                        // recreated the items with the old indexes; if those are stale, start
                        // over so that every item is resolved again.
                        match session.read_namespace_array().await {
                            Ok(now) if same_namespaces(&now, &namespaces) => {}
                            Ok(_) => {
                                warn!(source = %name, "the server's namespace indexes changed; re-subscribing every node");
                                return Outcome::Restart;
                            }
                            Err(e) => {
                                warn!(source = %name, error = %e, "reading the NamespaceArray after reconnect failed; starting a new session");
                                return Outcome::Restart;
                            }
                        }
                    }
                }
                Some(SessionEvent::Lost(status)) => {
                    connected = false;
                    stats.health.problem(format!("connection lost: {status}"));
                    stats.session.lost();
                }
                Some(SessionEvent::Fatal(status)) => return fatal(status),
                Some(SessionEvent::Ended(status)) => {
                    stats.health.problem(format!("the session ended: {status}"));
                    warn!(source = %name, %status, "the session ended; starting a new one");
                    return Outcome::Restart;
                }
                None => return Outcome::Restart,
            }
        }
    }
}

/// Reads the DataType attribute of every node and returns the rules whose element type cannot
/// hold the node's values. Nodes whose DataType cannot be read are not judged here (their
/// values are still checked one by one on arrival).
async fn mismatched_types(
    session: &opcua::client::Session,
    nodes: &[(&MonitoredNode, NodeId)],
    type_check: &TypeCheck,
    batch: usize,
) -> Vec<(u32, String)> {
    use opcua::types::{AttributeId, ReadValueId, TimestampsToReturn, Variant};
    let mut out = Vec::new();
    for chunk in nodes.chunks(batch.max(1)) {
        let ids: Vec<ReadValueId> = chunk
            .iter()
            .map(|(_, id)| ReadValueId {
                node_id: id.clone(),
                attribute_id: AttributeId::DataType as u32,
                ..Default::default()
            })
            .collect();
        let Ok(values) = session.read(&ids, TimestampsToReturn::Neither, 0.0).await else {
            return out;
        };
        for ((n, _), dv) in chunk.iter().zip(values) {
            if let Some(Variant::NodeId(dt)) = dv.value {
                if let Err(e) = type_check(n.rule, &dt) {
                    out.push((n.rule, e));
                }
            }
        }
    }
    out
}

/// Reads the server's data type definitions, so that its own structures decode field by field
/// (and become readable JSON) instead of opaque bytes. Failing is not fatal: structures then
/// keep their binary body as base64.
async fn load_data_types(
    session: &Arc<opcua::client::Session>,
    source: &str,
    limits: &limits::OperationLimits,
) {
    let started = Instant::now();
    match opcua::client::custom_types::DataTypeTreeBuilder::new(|_| true)
        // Within the server's limits, like every other call.
        .values_per_read(limits.read_batch(1000))
        .config(
            opcua::client::browser::BrowserConfig::new()
                .max_nodes_per_request(limits.browse_batch(100)),
        )
        .build(session)
        .await
    {
        Ok(tree) => {
            session.add_type_loader(Arc::new(opcua::types::custom::DynamicTypeLoader::new(
                Arc::new(tree),
            )));
            info!(source = %source, ms = started.elapsed().as_millis() as u64, "loaded the server's data type definitions");
        }
        Err(e) => {
            warn!(source = %source, error = %e, "cannot load the server's data type definitions; its structures arrive as base64")
        }
    }
}

/// Whether two namespace tables map every URI to the same index.
fn same_namespaces(a: &NamespaceMap, b: &NamespaceMap) -> bool {
    a.known_namespaces() == b.known_namespaces()
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}
