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

/// A batch of readings from one publish response (or one cyclic read), with the moment it
/// arrived at the gateway: the start of the gateway's own share of a value's latency, reported
/// apart from the device's publishing interval (`aas_gateway_sink_added_latency_seconds`).
///
/// Derefs to the `Vec<Reading>`, so it is filled and read like one.
#[derive(Debug, Clone)]
pub struct ReadingBatch {
    /// The readings, in arrival order.
    pub readings: Vec<Reading>,
    /// When the source received the response that carried them.
    pub received: std::time::Instant,
}

impl ReadingBatch {
    /// An empty batch received now.
    pub fn new() -> ReadingBatch {
        ReadingBatch::from(Vec::new())
    }
}

impl Default for ReadingBatch {
    fn default() -> Self {
        ReadingBatch::new()
    }
}

/// Readings received now.
impl From<Vec<Reading>> for ReadingBatch {
    fn from(readings: Vec<Reading>) -> Self {
        ReadingBatch {
            readings,
            received: std::time::Instant::now(),
        }
    }
}

/// Readings received now.
impl FromIterator<Reading> for ReadingBatch {
    fn from_iter<I: IntoIterator<Item = Reading>>(iter: I) -> Self {
        ReadingBatch::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl std::ops::Deref for ReadingBatch {
    type Target = Vec<Reading>;
    fn deref(&self) -> &Vec<Reading> {
        &self.readings
    }
}

impl std::ops::DerefMut for ReadingBatch {
    fn deref_mut(&mut self) -> &mut Vec<Reading> {
        &mut self.readings
    }
}

impl IntoIterator for ReadingBatch {
    type Item = Reading;
    type IntoIter = std::vec::IntoIter<Reading>;
    fn into_iter(self) -> Self::IntoIter {
        self.readings.into_iter()
    }
}
