//! Topics, metric names, datatypes and the bodies of each Sparkplug message the node sends, and
//! the reading of what it receives (NCMD, STATE).
//!
//! Naming: Edge Node = the gateway, Device = a shell (its idShort), metric name =
//! `<submodel idShort>/<idShortPath with / for .>` (Ignition shows `/` as folders), e.g.
//! `OperationalData/SpindleSpeed`. Datatypes follow the element's `xs:*` type
//! ([`DataType::of`]); lists become the Sparkplug 3.0 array types. The unit and the semanticId
//! are metric properties (`engUnit`, `semanticId`) in the births. A value whose OPC UA status
//! is not Good carries the property `Quality` (Int32, the OPC DA codes that Ignition and
//! Tahu read: 192 good, 64 uncertain, 0 bad) and `StatusCode` (UInt32, the OPC UA status); a
//! value that has none (a Bad value without a value) is sent with `is_null = true`.

use base64::Engine;
use prost::Message;

use super::proto::{Metric, MetricValue, Payload, PropertySet, PropertyValue, PropertyValueValue};
use crate::core::{Quality, TypedValue, XsType};
use crate::model::ElementTarget;

/// First topic level of Sparkplug B.
pub const NAMESPACE: &str = "spBv1.0";

/// Name of the node's rebirth control metric (NBIRTH; NCMD writes `true` to it).
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";

/// Alias of [`REBIRTH_METRIC`]; element metrics get 1, 2, ...
pub const REBIRTH_ALIAS: u64 = 0;

/// The topic of a node message: `spBv1.0/<group>/<type>/<node>`.
pub fn node_topic(group: &str, kind: &str, node: &str) -> String {
    format!("{NAMESPACE}/{group}/{kind}/{node}")
}

/// The topic of a device message: `spBv1.0/<group>/<type>/<node>/<device>`.
pub fn device_topic(group: &str, kind: &str, node: &str, device: &str) -> String {
    format!("{NAMESPACE}/{group}/{kind}/{node}/{device}")
}

/// The primary host's state topic (Sparkplug 3.0): `spBv1.0/STATE/<host id>`.
pub fn state_topic(host_id: &str) -> String {
    format!("{NAMESPACE}/STATE/{host_id}")
}

/// The metric name of an element: `<submodel idShort>/<idShortPath with / for .>`.
pub fn metric_name(t: &ElementTarget) -> String {
    format!(
        "{}/{}",
        t.submodel.id_short,
        t.id_short_path.replace('.', "/")
    )
}

/// Sparkplug B datatypes the gateway sends (numbers from the specification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DataType {
    Int8 = 1,
    Int16 = 2,
    Int32 = 3,
    Int64 = 4,
    UInt8 = 5,
    UInt16 = 6,
    UInt32 = 7,
    UInt64 = 8,
    Float = 9,
    Double = 10,
    Boolean = 11,
    String = 12,
    DateTime = 13,
    Bytes = 17,
    Int8Array = 22,
    Int16Array = 23,
    Int32Array = 24,
    Int64Array = 25,
    UInt8Array = 26,
    UInt16Array = 27,
    UInt32Array = 28,
    UInt64Array = 29,
    FloatArray = 30,
    DoubleArray = 31,
    BooleanArray = 32,
    StringArray = 33,
    DateTimeArray = 34,
}

impl DataType {
    /// The datatype of an element of type `xs` (`list`: a SubmodelElementList of them).
    /// xs:integer (unbounded) goes as Int64 and xs:decimal as Double: Sparkplug has nothing
    /// wider, and the gateway's values of them are 64-bit already.
    pub fn of(xs: XsType, list: bool) -> DataType {
        use DataType as D;
        let (scalar, array) = match xs {
            XsType::Boolean => (D::Boolean, D::BooleanArray),
            XsType::Byte => (D::Int8, D::Int8Array),
            XsType::Short => (D::Int16, D::Int16Array),
            XsType::Int => (D::Int32, D::Int32Array),
            XsType::Long | XsType::Integer => (D::Int64, D::Int64Array),
            XsType::UnsignedByte => (D::UInt8, D::UInt8Array),
            XsType::UnsignedShort => (D::UInt16, D::UInt16Array),
            XsType::UnsignedInt => (D::UInt32, D::UInt32Array),
            XsType::UnsignedLong => (D::UInt64, D::UInt64Array),
            XsType::Float => (D::Float, D::FloatArray),
            XsType::Double | XsType::Decimal => (D::Double, D::DoubleArray),
            XsType::String | XsType::AnyUri => (D::String, D::StringArray),
            XsType::DateTime => (D::DateTime, D::DateTimeArray),
            // No Sparkplug array of byte strings: a list of them goes as their base64 texts.
            XsType::Base64Binary => (D::Bytes, D::StringArray),
        };
        if list {
            array
        } else {
            scalar
        }
    }
}

/// Milliseconds since the epoch of an RFC 3339 text (xs:dateTime after coercion).
fn text_ms(s: &str) -> Option<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    u64::try_from(t.timestamp_millis()).ok()
}

fn as_i64(v: &TypedValue) -> Option<i64> {
    match v {
        TypedValue::Int(i) => Some(*i),
        TypedValue::UInt(u) => i64::try_from(*u).ok(),
        TypedValue::Bool(b) => Some(*b as i64),
        _ => None,
    }
}

fn as_u64(v: &TypedValue) -> Option<u64> {
    match v {
        TypedValue::UInt(u) => Some(*u),
        TypedValue::Int(i) => u64::try_from(*i).ok(),
        TypedValue::Bool(b) => Some(*b as u64),
        _ => None,
    }
}

fn as_f64(v: &TypedValue) -> Option<f64> {
    match v {
        TypedValue::Float(f) => Some(*f),
        TypedValue::Int(i) => Some(*i as f64),
        TypedValue::UInt(u) => Some(*u as f64),
        _ => None,
    }
}

fn as_text(v: &TypedValue) -> Option<String> {
    match v {
        TypedValue::Text(s) => Some(s.clone()),
        TypedValue::DateTime(t) => Some(TypedValue::datetime_text(t)),
        TypedValue::Bytes(b) => Some(TypedValue::bytes_text(b)),
        _ => None,
    }
}

/// The value field of `v` as datatype `dt`; `None` when it has no value or does not fit
/// (then the metric goes out with `is_null`).
pub fn metric_value(dt: DataType, v: &TypedValue) -> Option<MetricValue> {
    use DataType as D;
    use MetricValue as M;
    // Signed integers go in their own width, two's complement (what the specification's
    // reference implementations read back).
    let int_bits = |bits: u32| {
        let i = as_i64(v)?;
        let (min, max) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
        (min..=max)
            .contains(&i)
            .then(|| M::IntValue((i as u32) & (u32::MAX >> (32 - bits))))
    };
    let uint_bits = |bits: u32| {
        let u = as_u64(v)?;
        (u <= u64::from(u32::MAX >> (32 - bits))).then_some(M::IntValue(u as u32))
    };
    let list = || match v {
        TypedValue::List(items) => Some(items),
        _ => None,
    };
    // Packs every item with `f`, or gives up when one does not fit.
    fn pack<T>(
        items: &[TypedValue],
        f: impl Fn(&TypedValue) -> Option<T>,
        put: impl Fn(T, &mut Vec<u8>),
    ) -> Option<MetricValue> {
        let mut out = Vec::with_capacity(items.len() * 8);
        for item in items {
            put(f(item)?, &mut out);
        }
        Some(MetricValue::BytesValue(out))
    }
    match dt {
        D::Boolean => match v {
            TypedValue::Bool(b) => Some(M::BooleanValue(*b)),
            _ => None,
        },
        D::Int8 => int_bits(8),
        D::Int16 => int_bits(16),
        D::Int32 => int_bits(32),
        D::Int64 => as_i64(v).map(|i| M::LongValue(i as u64)),
        D::UInt8 => uint_bits(8),
        D::UInt16 => uint_bits(16),
        D::UInt32 => uint_bits(32),
        D::UInt64 => as_u64(v).map(M::LongValue),
        D::Float => as_f64(v).map(|f| M::FloatValue(f as f32)),
        D::Double => as_f64(v).map(M::DoubleValue),
        D::String => as_text(v).map(M::StringValue),
        D::DateTime => match v {
            TypedValue::Text(s) => text_ms(s).map(M::LongValue),
            TypedValue::DateTime(t) => u64::try_from(t.timestamp_millis()).ok().map(M::LongValue),
            _ => None,
        },
        D::Bytes => match v {
            TypedValue::Text(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .ok()
                .map(M::BytesValue),
            TypedValue::Bytes(b) => Some(M::BytesValue(b.clone())),
            _ => None,
        },
        D::Int8Array => pack(
            list()?,
            |x| i8::try_from(as_i64(x)?).ok(),
            |x, o| o.extend(x.to_le_bytes()),
        ),
        D::Int16Array => pack(
            list()?,
            |x| i16::try_from(as_i64(x)?).ok(),
            |x, o| o.extend(x.to_le_bytes()),
        ),
        D::Int32Array => pack(
            list()?,
            |x| i32::try_from(as_i64(x)?).ok(),
            |x, o| o.extend(x.to_le_bytes()),
        ),
        D::Int64Array => pack(list()?, as_i64, |x, o| o.extend(x.to_le_bytes())),
        D::UInt8Array => pack(list()?, |x| u8::try_from(as_u64(x)?).ok(), |x, o| o.push(x)),
        D::UInt16Array => pack(
            list()?,
            |x| u16::try_from(as_u64(x)?).ok(),
            |x, o| o.extend(x.to_le_bytes()),
        ),
        D::UInt32Array => pack(
            list()?,
            |x| u32::try_from(as_u64(x)?).ok(),
            |x, o| o.extend(x.to_le_bytes()),
        ),
        D::UInt64Array => pack(list()?, as_u64, |x, o| o.extend(x.to_le_bytes())),
        D::FloatArray => pack(
            list()?,
            |x| as_f64(x).map(|f| f as f32),
            |x, o| o.extend(x.to_le_bytes()),
        ),
        D::DoubleArray => pack(list()?, as_f64, |x, o| o.extend(x.to_le_bytes())),
        D::DateTimeArray => pack(
            list()?,
            |x| match x {
                TypedValue::Text(s) => text_ms(s),
                _ => None,
            },
            |x, o| o.extend(x.to_le_bytes()),
        ),
        D::StringArray => pack(list()?, as_text, |x, o| {
            // Each string null-terminated.
            o.extend(x.as_bytes());
            o.push(0);
        }),
        D::BooleanArray => {
            // A 4-byte little-endian count, then the bits, first value in the highest bit.
            let items = list()?;
            let mut out = (items.len() as u32).to_le_bytes().to_vec();
            out.resize(4 + items.len().div_ceil(8), 0);
            for (i, item) in items.iter().enumerate() {
                match item {
                    TypedValue::Bool(true) => out[4 + i / 8] |= 0x80 >> (i % 8),
                    TypedValue::Bool(false) => {}
                    _ => return None,
                }
            }
            Some(M::BytesValue(out))
        }
    }
}

/// OPC DA quality code of a status, as Ignition and Tahu read the `Quality` property.
fn quality_code(q: Quality) -> u32 {
    match q {
        Quality::Good => 192,
        Quality::Uncertain => 64,
        Quality::Bad => 0,
    }
}

/// A metric's declaration: what its birth says about it.
#[derive(Debug, Clone)]
pub struct MetricDef {
    /// Metric name (see [`metric_name`]).
    pub name: String,
    /// Alias, unique in the node.
    pub alias: u64,
    /// Datatype.
    pub datatype: DataType,
    /// Unit of the element (`engUnit` property).
    pub unit: Option<String>,
    /// semanticId of the element (`semanticId` property).
    pub semantic_id: Option<String>,
    /// The element: its submodel's id and idShortPath (where a DCMD writes).
    pub submodel_id: String,
    /// idShortPath of the element.
    pub path: String,
}

/// A value of a metric, as the node last had it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The value (`Null`: none).
    pub value: TypedValue,
    /// OPC UA status code.
    pub status: u32,
    /// Source timestamp, ns since the epoch.
    pub ts_nanos: i64,
}

fn prop_string(keys: &mut Vec<String>, values: &mut Vec<PropertyValue>, key: &str, v: &str) {
    keys.push(key.into());
    values.push(PropertyValue {
        r#type: Some(DataType::String as u32),
        is_null: None,
        value: Some(PropertyValueValue::StringValue(v.into())),
    });
}

fn prop_u32(
    keys: &mut Vec<String>,
    values: &mut Vec<PropertyValue>,
    key: &str,
    dt: DataType,
    v: u32,
) {
    keys.push(key.into());
    values.push(PropertyValue {
        r#type: Some(dt as u32),
        is_null: None,
        value: Some(PropertyValueValue::IntValue(v)),
    });
}

fn ms(nanos: i64) -> u64 {
    u64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(0)
}

/// A metric carrying `sample` (or null when there is none yet). `birth`: with name, datatype
/// and the declaration's properties; otherwise by alias only.
pub fn metric(def: &MetricDef, sample: Option<&Sample>, birth: bool, historical: bool) -> Metric {
    let value = sample.and_then(|s| metric_value(def.datatype, &s.value));
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    if birth {
        if let Some(u) = &def.unit {
            prop_string(&mut keys, &mut values, "engUnit", u);
        }
        if let Some(id) = &def.semantic_id {
            prop_string(&mut keys, &mut values, "semanticId", id);
        }
    }
    if let Some(s) = sample {
        let q = Quality::from_status(s.status);
        if q != Quality::Good {
            prop_u32(
                &mut keys,
                &mut values,
                "Quality",
                DataType::Int32,
                quality_code(q),
            );
            prop_u32(
                &mut keys,
                &mut values,
                "StatusCode",
                DataType::UInt32,
                s.status,
            );
        }
    }
    Metric {
        name: birth.then(|| def.name.clone()),
        alias: Some(def.alias),
        timestamp: Some(sample.map_or_else(now_ms, |s| ms(s.ts_nanos))),
        datatype: Some(def.datatype as u32),
        is_historical: historical.then_some(true),
        is_transient: None,
        is_null: value.is_none().then_some(true),
        properties: (!keys.is_empty()).then_some(PropertySet { keys, values }),
        value,
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The `bdSeq` metric of NBIRTH and NDEATH (Int64, as the specification asks).
fn bd_seq_metric(bd_seq: u8) -> Metric {
    Metric {
        name: Some("bdSeq".into()),
        timestamp: Some(now_ms()),
        datatype: Some(DataType::Int64 as u32),
        value: Some(MetricValue::LongValue(u64::from(bd_seq))),
        ..Default::default()
    }
}

/// NBIRTH body: `bdSeq`, the rebirth control, `seq` 0.
pub fn nbirth(bd_seq: u8) -> Vec<u8> {
    Payload {
        timestamp: Some(now_ms()),
        metrics: vec![
            bd_seq_metric(bd_seq),
            Metric {
                name: Some(REBIRTH_METRIC.into()),
                alias: Some(REBIRTH_ALIAS),
                timestamp: Some(now_ms()),
                datatype: Some(DataType::Boolean as u32),
                value: Some(MetricValue::BooleanValue(false)),
                ..Default::default()
            },
        ],
        seq: Some(0),
        ..Default::default()
    }
    .encode_to_vec()
}

/// NDEATH body (the MQTT will): only `bdSeq`, no `seq`.
pub fn ndeath(bd_seq: u8) -> Vec<u8> {
    Payload {
        timestamp: Some(now_ms()),
        metrics: vec![bd_seq_metric(bd_seq)],
        ..Default::default()
    }
    .encode_to_vec()
}

/// A DBIRTH, DDATA or DDEATH body.
pub fn device_payload(seq: u8, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(now_ms()),
        metrics,
        seq: Some(u64::from(seq)),
        ..Default::default()
    }
    .encode_to_vec()
}

/// The JSON value (as the API's `$value` takes it) a DCMD metric writes to an element of
/// datatype `dt`; an error says why it cannot be written.
pub fn command_value(dt: DataType, m: &Metric) -> Result<serde_json::Value, String> {
    use serde_json::json;
    use DataType as D;
    use MetricValue as M;
    if m.is_null == Some(true) {
        return Err("a null value cannot be written".into());
    }
    let v = m.value.as_ref().ok_or("the metric has no value")?;
    Ok(match (dt, v) {
        (D::Boolean, M::BooleanValue(b)) => json!(b),
        (D::Int8, M::IntValue(u)) => json!(*u as u8 as i8),
        (D::Int16, M::IntValue(u)) => json!(*u as u16 as i16),
        (D::Int32, M::IntValue(u)) => json!(*u as i32),
        (D::UInt8 | D::UInt16 | D::UInt32, M::IntValue(u)) => json!(u),
        (D::Int64, M::LongValue(u)) => json!(*u as i64),
        (D::UInt64, M::LongValue(u)) => json!(u),
        (D::Float, M::FloatValue(f)) => json!(*f as f64),
        (D::Float | D::Double, M::DoubleValue(f)) => json!(f),
        (D::Double, M::FloatValue(f)) => json!(*f as f64),
        (D::String, M::StringValue(s)) => json!(s),
        (D::DateTime, M::LongValue(ms)) => {
            let t = i64::try_from(*ms)
                .ok()
                .and_then(chrono::DateTime::from_timestamp_millis)
                .ok_or("the DateTime is out of range")?;
            json!(TypedValue::datetime_text(&t))
        }
        (D::Bytes, M::BytesValue(b)) => json!(TypedValue::bytes_text(b)),
        (dt, _) => {
            return Err(format!(
                "a {dt:?} metric cannot be written with this value (arrays are not written)"
            ))
        }
    })
}

/// True when an NCMD body asks for a rebirth (`Node Control/Rebirth` = true, by name or alias).
pub fn is_rebirth_request(body: &[u8]) -> bool {
    let Ok(p) = Payload::decode(body) else {
        return false;
    };
    p.metrics.iter().any(|m| {
        let named = match &m.name {
            Some(n) => n == REBIRTH_METRIC,
            None => m.alias == Some(REBIRTH_ALIAS),
        };
        named && m.value == Some(MetricValue::BooleanValue(true))
    })
}

/// A primary host's STATE message (Sparkplug 3.0 JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct HostState {
    /// The host is online.
    pub online: bool,
    /// When the host said so (ms since the epoch); older messages than one seen are ignored.
    pub timestamp: u64,
}

/// Reads a STATE body; `None` for anything else (e.g. the Sparkplug 2.2 `ONLINE` text).
pub fn host_state(body: &[u8]) -> Option<HostState> {
    serde_json::from_slice(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_integers_use_their_own_width_and_out_of_range_is_null() {
        assert_eq!(
            metric_value(DataType::Int8, &TypedValue::Int(-1)),
            Some(MetricValue::IntValue(255))
        );
        assert_eq!(
            metric_value(DataType::Int16, &TypedValue::Int(-2)),
            Some(MetricValue::IntValue(0xfffe))
        );
        assert_eq!(
            metric_value(DataType::Int32, &TypedValue::Int(-1)),
            Some(MetricValue::IntValue(u32::MAX))
        );
        assert_eq!(
            metric_value(DataType::Int64, &TypedValue::Int(-1)),
            Some(MetricValue::LongValue(u64::MAX))
        );
        assert_eq!(metric_value(DataType::Int8, &TypedValue::Int(200)), None);
        assert_eq!(
            metric_value(DataType::UInt16, &TypedValue::UInt(70_000)),
            None
        );
        assert_eq!(metric_value(DataType::Double, &TypedValue::Null), None);
    }

    #[test]
    fn arrays_are_packed_little_endian_and_booleans_as_bits() {
        let v = TypedValue::List(vec![TypedValue::Float(1.0), TypedValue::Float(-2.5)]);
        let mut want = 1.0f64.to_le_bytes().to_vec();
        want.extend((-2.5f64).to_le_bytes());
        assert_eq!(
            metric_value(DataType::DoubleArray, &v),
            Some(MetricValue::BytesValue(want))
        );
        let b = TypedValue::List(
            [true, false, true, true, false, false, false, false, true]
                .map(TypedValue::Bool)
                .to_vec(),
        );
        assert_eq!(
            metric_value(DataType::BooleanArray, &b),
            Some(MetricValue::BytesValue(vec![
                9,
                0,
                0,
                0,
                0b1011_0000,
                0b1000_0000
            ]))
        );
        let s = TypedValue::List(vec![
            TypedValue::Text("ab".into()),
            TypedValue::Text("".into()),
        ]);
        assert_eq!(
            metric_value(DataType::StringArray, &s),
            Some(MetricValue::BytesValue(b"ab\0\0".to_vec()))
        );
    }

    #[test]
    fn names_types_and_dates() {
        let t = ElementTarget::new(
            crate::model::SubmodelNames::shared("urn:sm", "OperationalData", "CNC1"),
            "Axes.X",
            XsType::Double,
            None,
            None,
        );
        assert_eq!(metric_name(&t), "OperationalData/Axes/X");
        assert_eq!(DataType::of(XsType::UnsignedShort, false), DataType::UInt16);
        assert_eq!(DataType::of(XsType::Double, true), DataType::DoubleArray);
        assert_eq!(
            metric_value(
                DataType::DateTime,
                &TypedValue::Text("2023-11-14T22:13:20.123Z".into())
            ),
            Some(MetricValue::LongValue(1_700_000_000_123))
        );
    }

    #[test]
    fn bad_values_carry_quality_and_missing_values_are_null() {
        let def = MetricDef {
            name: "S/V".into(),
            alias: 7,
            datatype: DataType::Double,
            unit: Some("rpm".into()),
            semantic_id: None,
            submodel_id: "urn:sm".into(),
            path: "V".into(),
        };
        let bad = Sample {
            value: TypedValue::Null,
            status: 0x8000_0000,
            ts_nanos: 5_000_000,
        };
        let m = metric(&def, Some(&bad), false, true);
        assert_eq!(m.name, None);
        assert_eq!(m.alias, Some(7));
        assert_eq!(m.is_null, Some(true));
        assert_eq!(m.is_historical, Some(true));
        assert_eq!(m.timestamp, Some(5));
        let props = m.properties.unwrap();
        assert_eq!(props.keys, ["Quality", "StatusCode"]);
        assert_eq!(props.values[0].value, Some(PropertyValueValue::IntValue(0)));
        let birth = metric(&def, None, true, false);
        assert_eq!(birth.name.as_deref(), Some("S/V"));
        assert_eq!(birth.properties.unwrap().keys, ["engUnit"]);
    }

    #[test]
    fn command_values_follow_the_birth_datatype() {
        let m = |v| Metric {
            value: Some(v),
            ..Default::default()
        };
        assert_eq!(
            command_value(DataType::Int8, &m(MetricValue::IntValue(255))),
            Ok(serde_json::json!(-1))
        );
        assert_eq!(
            command_value(DataType::Double, &m(MetricValue::DoubleValue(1.5))),
            Ok(serde_json::json!(1.5))
        );
        assert_eq!(
            command_value(
                DataType::DateTime,
                &m(MetricValue::LongValue(1_700_000_000_123))
            ),
            Ok(serde_json::json!("2023-11-14T22:13:20.123Z"))
        );
        assert!(command_value(DataType::Boolean, &m(MetricValue::IntValue(1))).is_err());
        assert!(command_value(DataType::DoubleArray, &m(MetricValue::BytesValue(vec![]))).is_err());
        let null = Metric {
            is_null: Some(true),
            ..Default::default()
        };
        assert!(command_value(DataType::Double, &null).is_err());
    }

    #[test]
    fn rebirth_requests_and_host_states_are_read() {
        let req = Payload {
            timestamp: Some(1),
            metrics: vec![Metric {
                name: Some(REBIRTH_METRIC.into()),
                datatype: Some(DataType::Boolean as u32),
                value: Some(MetricValue::BooleanValue(true)),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(is_rebirth_request(&req.encode_to_vec()));
        assert!(!is_rebirth_request(&nbirth(3)));
        assert!(!is_rebirth_request(b"garbage"));
        assert_eq!(
            host_state(br#"{"online":true,"timestamp":17}"#),
            Some(HostState {
                online: true,
                timestamp: 17
            })
        );
        assert_eq!(host_state(b"ONLINE"), None);
        let death = Payload::decode(ndeath(255).as_slice()).unwrap();
        assert_eq!(death.seq, None);
        assert_eq!(death.metrics[0].value, Some(MetricValue::LongValue(255)));
    }
}
