//! The Sparkplug B payload (`org.eclipse.tahu.protobuf.Payload` of the Eclipse Sparkplug 3.0
//! specification's `sparkplug_b.proto`), as `prost` messages written out by hand.
//!
//! Why by hand and not generated in a `build.rs`: `prost-build` needs the `protoc` compiler,
//! which a fresh CI box or an edge build does not have. The schema is small and frozen (proto2,
//! unchanged since Sparkplug B 1.0 but for new datatype numbers), so the part the gateway sends
//! and reads is spelled out here with the specification's field numbers and types, and checked
//! against an independent decoder generated from the official file (PyPI `pysparkplug`, in
//! `tests/sparkplug.rs`). Left out: `MetaData`, `DataSet`, `Template` and extensions, which the
//! gateway never sends; `prost` skips them when decoding a command.

/// A Sparkplug B message body.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Milliseconds since the Unix epoch when the message was sent.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Message sequence number, 0–255 (absent in NDEATH and STATE).
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// Schema id (unused here).
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// Opaque body (unused here).
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// One metric value (or, in a birth, a metric's declaration with its current value).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Metric name; only in births (and commands), data messages use the alias.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Alias, bound to the name by the birth.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Milliseconds since the Unix epoch when the value was acquired.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// Sparkplug datatype number ([`super::payload::DataType`]).
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// Historical value: store it, do not update the live tag.
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Transient value: do not store it as a tag.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The value is null (no value field is set).
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// Properties (unit, semantic id, quality).
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    /// The value.
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

/// The value field of a [`Metric`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    /// Int8/16/32 (two's complement in the type's width) and UInt8/16/32.
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64 (two's complement), UInt64 and DateTime (ms since the epoch).
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "12")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    StringValue(String),
    /// Bytes, File and the array types (packed little-endian).
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// Named properties of a metric.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySet {
    /// Property names.
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    /// Property values, one per key.
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

/// One property value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertyValue {
    /// Sparkplug datatype number.
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    /// The property has no value.
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "PropertyValueValue", tags = "3, 4, 5, 6, 7, 8")]
    pub value: Option<PropertyValueValue>,
}

/// The value field of a [`PropertyValue`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PropertyValueValue {
    /// 32-bit integers.
    #[prost(uint32, tag = "3")]
    IntValue(u32),
    /// 64-bit integers.
    #[prost(uint64, tag = "4")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "5")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "6")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "7")]
    BooleanValue(bool),
    /// String.
    #[prost(string, tag = "8")]
    StringValue(String),
}
