//! OPC UA values → [`TypedValue`] and timestamps → nanoseconds.

use base64::Engine;
use opcua::types::{DateTime, Variant};

use crate::model::TypedValue;

/// Nanoseconds since the Unix epoch of an OPC UA DateTime (100 ns ticks since 1601).
pub fn datetime_nanos(dt: &DateTime) -> i64 {
    const TICKS_1601_TO_1970: i64 = 116_444_736_000_000_000;
    (dt.ticks() - TICKS_1601_TO_1970).saturating_mul(100)
}

/// Converts a variant to the gateway's typed value. Types without a natural AAS form are an
/// error naming the type, so the caller can report which node sent it.
pub fn variant_to_typed(v: &Variant) -> Result<TypedValue, String> {
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
        Variant::DateTime(dt) => Text(crate::model::format_timestamp(datetime_nanos(dt))),
        Variant::Guid(g) => Text(g.to_string()),
        Variant::ByteString(b) => Text(
            b.value
                .as_deref()
                .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
                .unwrap_or_default(),
        ),
        Variant::LocalizedText(lt) => Text(lt.text.as_ref().to_string()),
        Variant::QualifiedName(q) => Text(q.name.as_ref().to_string()),
        Variant::NodeId(n) => Text(n.to_string()),
        Variant::StatusCode(s) => UInt(s.bits() as u64),
        Variant::Variant(inner) => variant_to_typed(inner)?,
        Variant::Array(a) => List(
            a.values
                .iter()
                .map(variant_to_typed)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Variant::Empty => return Err("the value is empty (null)".into()),
        other => {
            return Err(format!(
                "values of type {:?} are not supported yet",
                other.type_id()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(variant_to_typed(&Variant::Empty).is_err());
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
    fn datetimes_are_rfc3339_utc() {
        let dt =
            DateTime::from(chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap());
        assert_eq!(datetime_nanos(&dt), 1_700_000_000_123_000_000);
        assert_eq!(
            variant_to_typed(&Variant::from(dt)),
            Ok(TypedValue::Text("2023-11-14T22:13:20.123Z".into()))
        );
    }
}
