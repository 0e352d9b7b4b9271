//! Sinks: where values go after the AAS store, each behind the [`Sink`] trait.
//!
//! A sink is one folder (`mqtt/`, `questdb/`): its config section with `validate()`, its code
//! and its tests. It reads the durable outbox through its own cursor, at its own pace, within
//! its own bound (`[<sink>.buffer]`), and acknowledges in order only what its far side
//! confirmed. The pipeline, `/metrics` and `/ready` know sinks only through the [`SinkConfig`]
//! and [`Sink`] traits and the [`SinkStats`] each reports under its name: adding a sink is its
//! folder, its section in `crate::config::Config` and one line in `Config::sink_sections`
//! (the registry; it lives with the sections so that this module never depends on the
//! aggregate config).

pub mod mqtt;
pub mod questdb;
pub mod sparkplug;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::outbox::{BufferConfig, Outbox, OutboxConfig, SinkSpec};

/// Counters and health of one sink, read by `/metrics` and `/ready`.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Values handed to the sink.
    pub received: AtomicU64,
    /// Values the far side confirmed (MQTT PUBACK for QoS 1 / sent for QoS 0; HTTP 2xx for ILP).
    pub confirmed: AtomicU64,
    /// Failed attempts (each is retried).
    pub errors: AtomicU64,
    /// Messages sent again because their confirmation did not come (timeout or reconnect).
    pub retries: AtomicU64,
    /// Values the far side cannot take (e.g. a name ILP refuses); logged, skipped.
    pub rejected: AtomicU64,
    /// True while the sink is connected to its far side.
    pub connected: AtomicBool,
    /// Source timestamp → confirmation latency of the confirmed values.
    pub latency: crate::core::LatencyHistogram,
}

/// A started sink: completes once it stopped (outbox closed and drained, or its drain time
/// after shutdown ran out).
pub type SinkTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a sink gets when it starts.
pub struct SinkContext {
    /// The outbox; the sink reads it through `outbox.reader(name)`.
    pub outbox: Arc<Outbox>,
    /// Its counters (already registered for `/metrics`).
    pub stats: Arc<SinkStats>,
    /// Cancelled when the gateway stops.
    pub shutdown: CancellationToken,
    /// The gateway's name (`[gateway] name`).
    pub gateway_name: String,
    /// Every element the mapping writes (once each, in rule order), for sinks that declare
    /// their data up front (Sparkplug births); empty unless some sink
    /// [needs](Sink::needs_elements) it.
    pub elements: Arc<[SinkElement]>,
    /// Per source (index = [`SinkElement::source`]): false while its connection is lost, so a
    /// sink can tell that the values of that source's elements are no longer current.
    pub sources_up: tokio::sync::watch::Receiver<Vec<bool>>,
    /// Writes to OPC UA nodes; set once the sources run (empty before, and when the gateway
    /// has no write-back).
    pub writer: Arc<std::sync::OnceLock<Arc<dyn ElementWriter>>>,
}

/// What [`ElementWriter::write`] returns: `Err` with the reason when nothing was written.
pub type WriteFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Writes a value to the OPC UA node an element is mapped from, for sinks that take commands
/// (Sparkplug DCMD). The gateway's write-back implements it with the API's checks and audit.
pub trait ElementWriter: Send + Sync {
    /// Writes `value` (JSON, as the API's `$value`) to element `path` of `submodel_id`;
    /// `who` names the requester in the audit log.
    fn write<'a>(
        &'a self,
        who: &'a str,
        submodel_id: &'a str,
        path: &'a str,
        value: serde_json::Value,
    ) -> WriteFuture<'a>;
}

/// An element the mapping writes, as a sink that declares its data up front sees it.
#[derive(Debug, Clone)]
pub struct SinkElement {
    /// Where its values go (the same target its updates carry).
    pub target: &'static crate::model::ElementTarget,
    /// The element is a SubmodelElementList (its values are arrays).
    pub list: bool,
    /// Index of the source its values come from (`[[opcua]]` order).
    pub source: usize,
}

/// A configured sink, before it starts.
pub trait Sink: Send {
    /// Name of the sink: its outbox cursor, its label in `/metrics` and `/ready`.
    fn name(&self) -> &'static str;
    /// Where it delivers, without secrets; a new destination does not inherit the old backlog.
    fn destination(&self) -> String;
    /// Its share of the outbox as configured.
    fn buffer(&self) -> &BufferConfig;
    /// Whether it reads [`SinkContext::elements`] (built only then: 24 bytes an element).
    fn needs_elements(&self) -> bool {
        false
    }
    /// Starts delivering from the outbox.
    fn start(self: Box<Self>, ctx: SinkContext) -> anyhow::Result<SinkTask>;
}

/// What building a sink needs besides its own config section.
pub struct BuildContext<'a> {
    /// Makes a path from the config absolute (relative paths are relative to the config file).
    pub resolve: &'a dyn Fn(&Path) -> PathBuf,
    /// The gateway's name (`[gateway] name`), for sinks that name themselves after it.
    pub gateway_name: &'a str,
}

/// A sink's config section (`[mqtt]`, `[questdb]`): builds the sink it describes.
pub trait SinkConfig {
    /// The sink, or `None` when the section disables it (logged, so the operator sees why
    /// nothing arrives there).
    fn build(&self, ctx: &BuildContext<'_>) -> anyhow::Result<Option<Box<dyn Sink>>>;
    /// Turns the sink off (e.g. `export --live`, which only wants the API's store).
    fn disable(&mut self);
}

/// The outbox's view of a sink: name, destination and effective bound (its own
/// `[<sink>.buffer]` over the `[outbox]` defaults).
pub fn spec(sink: &dyn Sink, defaults: &OutboxConfig) -> SinkSpec {
    SinkSpec {
        name: sink.name().to_string(),
        destination: sink.destination(),
        buffer: sink.buffer().resolve(defaults),
    }
}
