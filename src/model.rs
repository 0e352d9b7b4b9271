//! The types every stage of the pipeline shares.
//!
//! A [`Reading`] is what a source observed (a value change, already a protocol-free
//! [`TypedValue`]; both live in [`crate::core`]); the mapping turns it into a
//! [`SubmodelUpdate`], which the AAS store, the sinks and the API all consume. Updates travel in
//! batches (`Arc<[SubmodelUpdate]>`) so that fanning one batch out to several sinks costs one
//! reference count per sink, not one copy per value.

use std::sync::Arc;

// The protocol-free types live in the leaf module `core`; re-exported so that every stage
// keeps naming them `model::…`.
pub use crate::core::{format_timestamp, Quality, Reading, ReadingBatch, TypedValue};

/// Where an update goes: resolved once, at start, from a mapping rule.
///
/// Serialised once into the outbox (entries refer to it by id), so a restart with a changed
/// config still delivers what an earlier config queued.
///
/// Targets live as long as the process (see [`ElementTarget::leak`]): every update refers to
/// its target by a plain `&'static` reference. A shared `Arc` cost a reference count increment
/// and decrement per value, each a cache miss on a different target: about a tenth of the
/// gateway's CPU at 100k values/s.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ElementTarget {
    /// Submodel identifier (IRI/URN) the element lives in. The three ids are the same for
    /// every element of a submodel: shared (interned), not copied per element. Serialised as
    /// plain strings, as before (serde's `rc` feature), so older outbox files read back.
    pub submodel_id: Arc<str>,
    /// Submodel idShort (used for the time-series table name).
    pub submodel_id_short: Arc<str>,
    /// idShort of the shell that references the submodel (the asset, in MQTT topics and ILP).
    pub shell_id_short: Arc<str>,
    /// Dotted idShortPath of the element inside the submodel, e.g. `Axis.Speed` or `Positions[2]`.
    pub id_short_path: String,
    /// The element's `valueType` (`xs:double`, ...); for lists, the list's `valueTypeListElement`.
    pub value_type: crate::core::XsType,
    /// MQTT topic of this element (computed once from the topic scheme).
    pub topic: String,
    /// Id of this target in the outbox's target table, assigned on first use.
    #[serde(skip)]
    pub outbox_id: std::sync::OnceLock<u32>,
    /// Unit of the value (mapping rule `unit`, else the IEC 61360 unit of the element's
    /// ConceptDescription), for sinks that label values.
    pub unit: Option<String>,
    /// Semantic id of the element (mapping rule `semantic_id`, else the first key of the
    /// element's semanticId), for sinks that label values.
    pub semantic_id: Option<String>,
}

impl ElementTarget {
    /// Gives the target the lifetime of the process. Targets are made once, at start (one per
    /// mapping rule, all in one slice, see `Router::build`; and those of an outbox file that
    /// records still refer to); they are never freed, which is what lets an update carry a
    /// reference without a reference count.
    pub fn leak(self) -> &'static ElementTarget {
        Box::leak(Box::new(self))
    }
}

/// One value for one submodel element, ready for the store and the sinks.
#[derive(Debug, Clone)]
pub struct SubmodelUpdate {
    /// Where the value goes (shared by every update of the element, see [`ElementTarget`]).
    pub target: &'static ElementTarget,
    pub value: TypedValue,
    /// OPC UA status code (0 = Good); Bad/Uncertain values are forwarded, never hidden.
    pub status: u32,
    pub source_ts_nanos: i64,
    pub server_ts_nanos: i64,
}

impl SubmodelUpdate {
    pub fn quality(&self) -> Quality {
        Quality::from_status(self.status)
    }
}

/// A batch of updates shared by every consumer.
pub type UpdateBatch = Arc<[SubmodelUpdate]>;
