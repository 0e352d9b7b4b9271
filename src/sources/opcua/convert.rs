//! OPC UA values → [`TypedValue`] and timestamps → nanoseconds.
//!
//! | OPC UA built-in type | TypedValue | natural `xs:*` type |
//! |---|---|---|
//! | Boolean | Bool | xs:boolean |
//! | SByte, Int16, Int32, Int64 | Int | xs:byte, xs:short, xs:int, xs:long |
//! | Byte, UInt16, UInt32, UInt64 | UInt | xs:unsignedByte … xs:unsignedLong |
//! | Float, Double (NaN, ±INF included) | Float | xs:float, xs:double |
//! | String, XmlElement | Text | xs:string |
//! | DateTime | DateTime (exact; RFC 3339 UTC text once coerced) | xs:dateTime |
//! | Guid | Text, `72962b91-fa75-…` | xs:string |
//! | ByteString | Bytes (base64 text once coerced) | xs:base64Binary |
//! | LocalizedText | Text (the text; the locale is dropped) | xs:string / MultiLanguageProperty |
//! | QualifiedName, NodeId, ExpandedNodeId | Text | xs:string |
//! | StatusCode (as a value) | UInt, the 32-bit code | xs:unsignedInt |
//! | ExtensionObject (structure) | Text, OPC UA JSON encoding (`{"UaTypeId":…,"UaBody":{…}}`) | xs:string |
//! | arrays of these (any dimension, flattened) | List | SubmodelElementList |
//! | no value (Empty; e.g. a Bad DataValue without value) | Null | element value removed |
//!
//! The source converts every value here, before it leaves the source: readings carry the
//! core's [`TypedValue`], no OPC UA type passes the hand-off to the pipeline.
//!
//! Structures become JSON text rather than a new value kind: every AAS consumer can store and
//! show an xs:string, and the OPC UA JSON encoding is a published format (Part 6, 5.4). The
//! source encodes them with the session's context ([`StructureEncoder`]), which knows the
//! server's namespaces and custom data types; without it, unknown structures keep their
//! binary body as base64.

use std::sync::Arc;

use opcua::types::{ContextOwned, DateTime, ExtensionObject, Variant};

use crate::core::TypedValue;

/// Nanoseconds since the Unix epoch of an OPC UA DateTime (100 ns ticks since 1601).
///
/// Read from the chrono value the DateTime wraps: `DateTime::ticks` builds the 1601 epoch and
/// subtracts it for every call (a few percent of the gateway's CPU at 100k values/s). Instants
/// outside the ±292 years `i64` nanoseconds reach saturate, as they always did.
pub fn datetime_nanos(dt: &DateTime) -> i64 {
    let t = dt.as_chrono();
    t.timestamp_nanos_opt().unwrap_or(if t.timestamp() < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// RFC 3339 UTC with as many fractional digits as needed (whole seconds have none). Works for
/// the whole DateTime range, also before 1677 where nanoseconds since 1970 overflow.
pub fn datetime_text(dt: &DateTime) -> String {
    TypedValue::datetime_text(&dt.as_chrono())
}

/// Encodes structures (ExtensionObjects) as OPC UA JSON with a session's encoding context, so
/// that namespace URIs and the server's custom data types are known.
#[derive(Clone)]
pub struct StructureEncoder {
    ctx: Arc<opcua::sync::RwLock<ContextOwned>>,
}

impl StructureEncoder {
    /// An encoder using the session's context (`Session::context()`).
    pub fn new(ctx: Arc<opcua::sync::RwLock<ContextOwned>>) -> Self {
        StructureEncoder { ctx }
    }

    /// Converts a value to a [`TypedValue`], encoding structures (scalar or array element) as
    /// OPC UA JSON with the session's context.
    pub fn to_typed(&self, v: &Variant) -> Result<TypedValue, String> {
        convert(v, &|eo| self.json(eo))
    }

    fn json(&self, eo: &ExtensionObject) -> String {
        let ctx = self.ctx.read();
        structure_json(eo, &ctx)
    }
}

/// The OPC UA JSON encoding of a structure; an encoding failure is reported inside the JSON
/// (`{"UaError": "..."}`) so the element shows why instead of silently keeping an old value.
pub fn structure_json(eo: &ExtensionObject, ctx: &ContextOwned) -> String {
    match opcua::types::json::to_string(eo, &ctx.context()) {
        Ok(s) => s,
        Err(e) => serde_json::json!({ "UaError": e.to_string() }).to_string(),
    }
}

/// Converts a variant to the gateway's typed value. Types without a natural AAS form are an
/// error naming the type, so the caller can report which node sent it. Structures are encoded
/// without a session context (see [`StructureEncoder::to_typed`] for the source's path).
pub fn variant_to_typed(v: &Variant) -> Result<TypedValue, String> {
    // Without a session context standard structures still encode field by field, unknown
    // ones as base64.
    convert(v, &|eo| structure_json(eo, &ContextOwned::default()))
}

/// The conversion, with `structure` turning an ExtensionObject into its JSON text.
fn convert(
    v: &Variant,
    structure: &dyn Fn(&ExtensionObject) -> String,
) -> Result<TypedValue, String> {
    use TypedValue::*;
    Ok(match v {
        Variant::Boolean(b) => Bool(*b),
        Variant::SByte(x) => Int(*x as i64),
        Variant::Int16(x) => Int(*x as i64),
        Variant::Int32(x) => Int(*x as i64),
        Variant::Int64(x) => Int(*x),
        Variant::Byte(x) => UInt(*x as u64),
        Variant::UInt16(x) => UInt(*x as u64),
        Variant::UInt32(x) => UInt(*x as u64),
        Variant::UInt64(x) => UInt(*x),
        Variant::Float(x) => Float(*x as f64),
        Variant::Double(x) => Float(*x),
        Variant::String(s) => Text(s.as_ref().to_string()),
        Variant::XmlElement(s) => Text(s.to_string()),
        Variant::DateTime(dt) => DateTime(dt.as_chrono()),
        Variant::Guid(g) => Text(g.to_string().to_lowercase()),
        // A null ByteString is the empty one (as before: an empty base64 text).
        Variant::ByteString(b) => Bytes(b.value.clone().unwrap_or_default()),
        Variant::LocalizedText(lt) => Text(lt.text.as_ref().to_string()),
        Variant::QualifiedName(q) => Text(q.name.as_ref().to_string()),
        Variant::NodeId(n) => Text(n.to_string()),
        Variant::ExpandedNodeId(n) => Text(n.to_string()),
        Variant::StatusCode(s) => UInt(s.bits() as u64),
        Variant::ExtensionObject(eo) => Text(structure(eo)),
        Variant::DataValue(dv) => match &dv.value {
            Some(inner) => convert(inner, structure)?,
            None => return Err("the value is an empty DataValue".into()),
        },
        Variant::Variant(inner) => convert(inner, structure)?,
        Variant::Array(a) => List(
            a.values
                .iter()
                .map(|x| convert(x, structure))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Variant::Empty => Null,
        other => {
            return Err(format!(
                "values of type {:?} have no AAS form",
                other.type_id()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_nanos_is_the_tick_arithmetic_over_the_whole_range() {
        const TICKS_1601_TO_1970: i64 = 116_444_736_000_000_000;
        let by_ticks = |dt: &DateTime| (dt.ticks() - TICKS_1601_TO_1970).saturating_mul(100);
        let mut instants = vec![
            DateTime::ymd(1601, 1, 1),
            DateTime::ymd_hms(1677, 9, 21, 0, 12, 44),
            DateTime::ymd_hms(1677, 9, 22, 0, 0, 0),
            DateTime::ymd(1970, 1, 1),
            DateTime::ymd_hms(2262, 4, 11, 23, 47, 16),
            DateTime::ymd(2263, 1, 1),
            DateTime::endtimes(),
            DateTime::now(),
        ];
        // Every 97 days with an odd number of ticks, from 1900 to 2100.
        let mut t: i64 = 94_354_848_000_000_000;
        while t < 157_469_184_000_000_000 {
            instants.push(DateTime::from(t));
            t += 97 * 864_000_000_000 + 1_234_567;
        }
        for dt in &instants {
            assert_eq!(datetime_nanos(dt), by_ticks(dt), "{dt:?}");
        }
    }

    #[test]
    fn scalars_keep_sign_and_width() {
        assert_eq!(
            variant_to_typed(&Variant::SByte(-3)),
            Ok(TypedValue::Int(-3))
        );
        assert_eq!(
            variant_to_typed(&Variant::UInt64(u64::MAX)),
            Ok(TypedValue::UInt(u64::MAX))
        );
        assert_eq!(
            variant_to_typed(&Variant::Float(0.5)),
            Ok(TypedValue::Float(0.5))
        );
        assert_eq!(
            variant_to_typed(&Variant::from("x")),
            Ok(TypedValue::Text("x".into()))
        );
        assert_eq!(variant_to_typed(&Variant::Empty), Ok(TypedValue::Null));
    }

    #[test]
    fn arrays_become_lists() {
        let v = Variant::from(vec![1.0f64, 2.0, 3.0]);
        assert_eq!(
            variant_to_typed(&v),
            Ok(TypedValue::List(vec![
                TypedValue::Float(1.0),
                TypedValue::Float(2.0),
                TypedValue::Float(3.0)
            ]))
        );
    }

    #[test]
    fn every_builtin_type_has_a_form() {
        use opcua::types::{ByteString, Guid, LocalizedText, StatusCode};
        let guid: Guid = "72962B91-FA75-4AE6-8D28-B404DC7DAF63".parse().unwrap();
        let cases: Vec<(Variant, TypedValue)> = vec![
            (Variant::from(f64::NAN), TypedValue::Float(f64::NAN)),
            (
                Variant::from(f32::INFINITY),
                TypedValue::Float(f64::INFINITY),
            ),
            (
                Variant::from(guid),
                TypedValue::Text("72962b91-fa75-4ae6-8d28-b404dc7daf63".into()),
            ),
            (
                Variant::from(ByteString::from(vec![0u8, 1, 254, 255])),
                TypedValue::Text("AAH+/w==".into()),
            ),
            (
                Variant::from(ByteString::null()),
                TypedValue::Text(String::new()),
            ),
            (
                Variant::from(LocalizedText::new("de", "Hallo")),
                TypedValue::Text("Hallo".into()),
            ),
            (
                Variant::from(StatusCode::BadSensorFailure),
                TypedValue::UInt(0x808C_0000),
            ),
            (
                Variant::from(DateTime::null()),
                TypedValue::Text("1601-01-01T00:00:00Z".into()),
            ),
        ];
        for (v, want) in cases {
            // Instants and bytes stay exact in the reading; the texts expected here are what
            // they become in the element they fit (xs:dateTime, xs:base64Binary).
            let got = in_natural_element(variant_to_typed(&v).unwrap());
            match (&got, &want) {
                (TypedValue::Float(a), TypedValue::Float(b)) if a.is_nan() => assert!(b.is_nan()),
                _ => assert_eq!(got, want, "{v:?}"),
            }
        }
    }

    #[test]
    fn structures_become_opcua_json() {
        let range = opcua::types::Range {
            low: 0.5,
            high: 100.0,
        };
        let v = Variant::from(ExtensionObject::from_message(range));
        let TypedValue::Text(json) = variant_to_typed(&v).unwrap() else {
            panic!("text expected")
        };
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["UaBody"]["Low"], 0.5, "{json}");
        assert_eq!(parsed["UaBody"]["High"], 100.0, "{json}");
        assert!(!parsed["UaTypeId"].is_null(), "{json}");
    }

    use opcua::types::ByteString;

    #[test]
    fn datetimes_are_rfc3339_utc() {
        let dt =
            DateTime::from(chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap());
        assert_eq!(datetime_nanos(&dt), 1_700_000_000_123_000_000);
        let typed = variant_to_typed(&Variant::from(dt)).unwrap();
        assert_eq!(typed, TypedValue::DateTime(dt.as_chrono()));
        assert_eq!(
            in_natural_element(typed),
            TypedValue::Text("2023-11-14T22:13:20.123Z".into())
        );
    }

    /// A value as its natural element type stores it: instants as xs:dateTime, bytes as
    /// xs:base64Binary, everything else unchanged.
    fn in_natural_element(v: TypedValue) -> TypedValue {
        use crate::core::XsType;
        match v {
            TypedValue::DateTime(_) => XsType::DateTime.coerce(v).unwrap(),
            TypedValue::Bytes(_) => XsType::Base64Binary.coerce(v).unwrap(),
            other => other,
        }
    }

    #[test]
    fn instants_keep_every_tick_and_the_whole_range() {
        // OPC UA's 100 ns ticks survive, also before 1677 where i64 nanoseconds end.
        let first_tick = DateTime::from(1i64);
        assert_eq!(
            in_natural_element(variant_to_typed(&Variant::from(first_tick)).unwrap()),
            TypedValue::Text("1601-01-01T00:00:00.000000100Z".into())
        );
        let bytes = variant_to_typed(&Variant::from(ByteString::from(vec![7u8, 8]))).unwrap();
        assert_eq!(bytes, TypedValue::Bytes(vec![7, 8]));
    }
}
