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
}

/// A configured sink, before it starts.
pub trait Sink: Send {
    /// Name of the sink: its outbox cursor, its label in `/metrics` and `/ready`.
    fn name(&self) -> &'static str;
    /// Where it delivers, without secrets; a new destination does not inherit the old backlog.
    fn destination(&self) -> String;
    /// Its share of the outbox as configured.
    fn buffer(&self) -> &BufferConfig;
    /// Starts delivering from the outbox.
    fn start(self: Box<Self>, ctx: SinkContext) -> anyhow::Result<SinkTask>;
}

/// What building a sink needs besides its own config section.
pub struct BuildContext<'a> {
    /// Makes a path from the config absolute (relative paths are relative to the config file).
    pub resolve: &'a dyn Fn(&Path) -> PathBuf,
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
