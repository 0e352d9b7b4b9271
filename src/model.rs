//! The types every stage of the pipeline shares.
//!
//! A [`Reading`] is what a source observed (one OPC UA data change); the mapping turns it into a
//! [`SubmodelUpdate`], which the AAS store, the sinks and the API all consume. Updates travel in
//! batches (`Arc<[SubmodelUpdate]>`) so that fanning one batch out to several sinks costs one
//! reference count per sink, not one copy per value.

use std::sync::Arc;

/// One observed value change, straight from a source, before mapping.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Index of the mapping rule this node belongs to (see [`crate::mapping::Router`]).
    pub rule: u32,
    /// The OPC UA value as received.
    pub value: opcua::types::Variant,
    /// OPC UA status code of the value (0 = Good).
    pub status: u32,
    /// Source timestamp, nanoseconds since the Unix epoch (falls back to the server timestamp).
    pub source_ts_nanos: i64,
    /// Server timestamp, nanoseconds since the Unix epoch (0 if the server sent none).
    pub server_ts_nanos: i64,
}

/// A batch of readings from one publish response (or one cyclic read).
pub type ReadingBatch = Vec<Reading>;

/// OPC UA quality class, derived from the two top bits of the status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Good,
    Uncertain,
    Bad,
}

impl Quality {
    pub fn from_status(status: u32) -> Quality {
        match status >> 30 {
            0 => Quality::Good,
            1 => Quality::Uncertain,
            _ => Quality::Bad,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
        }
    }
}

/// A value already converted to the element's `xs:*` type.
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Every type whose natural form is text: xs:string, xs:dateTime, xs:base64Binary, GUIDs.
    Text(String),
    /// An array (mapped to a SubmodelElementList of Properties).
    List(Vec<TypedValue>),
    /// No value, only a status: servers may omit the value of a Bad DataValue (asyncua does),
    /// and the status must still reach every consumer. The AAS element then has no value,
    /// MQTT carries `"value": null`, QuestDB only the status column.
    Null,
}

/// Where an update goes: resolved once, at start, from a mapping rule.
///
/// Serialised once into the outbox (entries refer to it by id), so a restart with a changed
/// config still delivers what an earlier config queued.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ElementTarget {
    /// Submodel identifier (IRI/URN) the element lives in.
    pub submodel_id: String,
    /// Submodel idShort (used for the time-series table name).
    pub submodel_id_short: String,
    /// idShort of the shell that references the submodel (the asset, in MQTT topics and ILP).
    pub shell_id_short: String,
    /// Dotted idShortPath of the element inside the submodel, e.g. `Axis.Speed` or `Positions[2]`.
    pub id_short_path: String,
    /// The element's `valueType` (`xs:double`, ...); for lists, the list's `valueTypeListElement`.
    pub value_type: crate::aas::XsType,
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

/// One value for one submodel element, ready for the store and the sinks.
#[derive(Debug, Clone)]
pub struct SubmodelUpdate {
    pub target: Arc<ElementTarget>,
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

/// Formats nanoseconds since the epoch as RFC 3339 UTC (`2026-11-25T17:03:25.123Z`), keeping every
/// non-zero sub-second digit so that timestamps round-trip exactly.
pub fn format_timestamp(nanos: i64) -> String {
    use chrono::{DateTime, SecondsFormat, Utc};
    DateTime::<Utc>::from_timestamp_nanos(nanos).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_follows_status_severity_bits() {
        assert_eq!(Quality::from_status(0), Quality::Good);
        assert_eq!(Quality::from_status(0x4000_0000), Quality::Uncertain);
        assert_eq!(Quality::from_status(0x808B_0000), Quality::Bad);
    }

    #[test]
    fn timestamps_keep_milliseconds_and_zone() {
        assert_eq!(
            format_timestamp(1_700_000_000_123_000_000),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format_timestamp(1_700_000_000_000_000_000),
            "2023-11-14T22:13:20Z"
        );
    }
}
