//! The running gateway's counters, in one place: written by the pipeline's stages (each
//! source and sink keeps its own), read by `/metrics`, `/ready` and the periodic report without
//! taking a lock on the data path.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::outbox::Outbox;
use crate::sinks::SinkStats;
use crate::sources::SourceStats;

/// Counters of a running gateway.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Readings received from all sources.
    pub readings: AtomicU64,
    /// Readings turned into submodel updates.
    pub updates: AtomicU64,
    /// Readings whose value did not fit the mapped element (logged once per rule).
    pub conversion_errors: AtomicU64,
    /// Mapping rules that delivered at least one value since start.
    pub rules_with_value: AtomicU64,
    /// Values the dispatcher could not persist before shutdown (a `block` sink stayed full).
    pub unpersisted: AtomicU64,
    pub sources: Vec<Arc<SourceStats>>,
    /// Each enabled sink's counters, by name.
    pub sinks: Vec<(String, Arc<SinkStats>)>,
    /// The durable outbox (set once started).
    pub outbox: Option<Arc<Outbox>>,
}
