//! Sinks: where updates go after the AAS store. Each sink owns its task (or thread), reads
//! batches from a bounded channel and counts what the far side confirmed.

pub mod mqtt;
pub mod questdb;

use std::sync::atomic::AtomicU64;

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Values handed to the sink.
    pub received: AtomicU64,
    /// Values the far side confirmed (MQTT PUBACK for QoS 1 / sent for QoS 0; HTTP 2xx for ILP).
    pub confirmed: AtomicU64,
    /// Failed attempts (each is retried).
    pub errors: AtomicU64,
    /// Values given up on (only at shutdown when the far side stays unreachable; logged).
    pub dropped: AtomicU64,
    /// Source timestamp → confirmation latency of the confirmed values.
    pub latency: crate::metrics::LatencyHistogram,
}
