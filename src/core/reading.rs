//! What a source emits: [`Reading`]s, in batches.

use super::TypedValue;

/// One observed value change, straight from a source, before mapping. Protocol-free: the
/// source has already converted its value to a [`TypedValue`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Index of the mapping rule this value belongs to (see `mapping::Router`).
    pub rule: u32,
    /// The value in its natural typed form (coerced to the element's type by the mapping).
    pub value: TypedValue,
    /// Status code of the value in the OPC UA layout (0 = Good; see [`super::Quality`]).
    pub status: u32,
    /// Source timestamp, nanoseconds since the Unix epoch (falls back to the server timestamp,
    /// then to the arrival time, so that every reading has a time).
    pub source_ts_nanos: i64,
    /// Server timestamp, nanoseconds since the Unix epoch (0 if the server sent none).
    pub server_ts_nanos: i64,
}

/// A batch of readings from one publish response (or one cyclic read).
pub type ReadingBatch = Vec<Reading>;
