//! XSD value types (`DataTypeDefXsd`) and the conversions between them and [`TypedValue`].
//!
//! AAS keeps every Property value as a string in the XSD lexical form; the Part 2 "ValueOnly"
//! form and our MQTT payloads use JSON numbers/booleans where the type allows.

use std::fmt;
use std::str::FromStr;

use super::TypedValue;

/// The `xs:*` types a mapped element can have (variants named after the XSD types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum XsType {
    Boolean,
    Byte,
    Short,
    Int,
    Long,
    Integer,
    UnsignedByte,
    UnsignedShort,
    UnsignedInt,
    UnsignedLong,
    Float,
    Double,
    Decimal,
    String,
    DateTime,
    Base64Binary,
    AnyUri,
}

impl XsType {
    /// The type's name as AAS JSON spells it, e.g. `xs:double`.
    pub fn as_str(self) -> &'static str {
        match self {
            XsType::Boolean => "xs:boolean",
            XsType::Byte => "xs:byte",
            XsType::Short => "xs:short",
            XsType::Int => "xs:int",
            XsType::Long => "xs:long",
            XsType::Integer => "xs:integer",
            XsType::UnsignedByte => "xs:unsignedByte",
            XsType::UnsignedShort => "xs:unsignedShort",
            XsType::UnsignedInt => "xs:unsignedInt",
            XsType::UnsignedLong => "xs:unsignedLong",
            XsType::Float => "xs:float",
            XsType::Double => "xs:double",
            XsType::Decimal => "xs:decimal",
            XsType::String => "xs:string",
            XsType::DateTime => "xs:dateTime",
            XsType::Base64Binary => "xs:base64Binary",
            XsType::AnyUri => "xs:anyURI",
        }
    }

    /// Inclusive range of the integer types, `None` for the others.
    pub fn int_range(self) -> Option<(i128, i128)> {
        Some(match self {
            XsType::Byte => (i8::MIN as i128, i8::MAX as i128),
            XsType::Short => (i16::MIN as i128, i16::MAX as i128),
            XsType::Int => (i32::MIN as i128, i32::MAX as i128),
            XsType::Long | XsType::Integer => (i64::MIN as i128, i64::MAX as i128),
            XsType::UnsignedByte => (0, u8::MAX as i128),
            XsType::UnsignedShort => (0, u16::MAX as i128),
            XsType::UnsignedInt => (0, u32::MAX as i128),
            XsType::UnsignedLong => (0, u64::MAX as i128),
            _ => return None,
        })
    }

    /// Checks that a value fits this type and brings it to the canonical variant
    /// (`Int` for signed, `UInt` for unsigned, `Float` for floating point, `Text` for text types).
    ///
    /// Instants and bytes become their lexical text here, and only for the types that hold
    /// them exactly: a `DateTime` fits `xs:dateTime` (RFC 3339, every sub-second digit kept) and
    /// `xs:string`; `Bytes` fit `xs:base64Binary` and `xs:string` (base64). So the result
    /// never is a `DateTime` or `Bytes`.
    pub fn coerce(self, value: TypedValue) -> Result<TypedValue, String> {
        use TypedValue::*;
        match value {
            Null => return Ok(Null),
            DateTime(t) => {
                return match self {
                    XsType::DateTime | XsType::String => Ok(Text(TypedValue::datetime_text(&t))),
                    _ => Err(format!(
                        "the instant {} cannot be stored as {}",
                        TypedValue::datetime_text(&t),
                        self.as_str()
                    )),
                }
            }
            Bytes(b) => {
                return match self {
                    XsType::Base64Binary | XsType::String => Ok(Text(TypedValue::bytes_text(&b))),
                    _ => Err(format!(
                        "{} bytes cannot be stored as {}",
                        b.len(),
                        self.as_str()
                    )),
                }
            }
            _ => {}
        }
        if let List(items) = value {
            return items
                .into_iter()
                .map(|v| self.coerce(v))
                .collect::<Result<Vec<_>, _>>()
                .map(List);
        }
        if let Some((lo, hi)) = self.int_range() {
            let n: i128 = match value {
                Int(i) => i as i128,
                UInt(u) => u as i128,
                Bool(b) => b as i128,
                Float(f) if f.fract() == 0.0 && f.is_finite() => f as i128,
                other => return Err(format!("{other:?} is not an integer")),
            };
            if n < lo || n > hi {
                return Err(format!("{n} is out of range for {}", self.as_str()));
            }
            return Ok(if lo < 0 {
                Int(n as i64)
            } else {
                UInt(n as u64)
            });
        }
        match (self, value) {
            (XsType::Boolean, Bool(b)) => Ok(Bool(b)),
            (XsType::Boolean, Int(i)) if i == 0 || i == 1 => Ok(Bool(i == 1)),
            (XsType::Boolean, UInt(u)) if u <= 1 => Ok(Bool(u == 1)),
            (XsType::Float | XsType::Double | XsType::Decimal, Float(f)) => Ok(Float(f)),
            (XsType::Float | XsType::Double | XsType::Decimal, Int(i)) => Ok(Float(i as f64)),
            (XsType::Float | XsType::Double | XsType::Decimal, UInt(u)) => Ok(Float(u as f64)),
            (XsType::String | XsType::AnyUri, Text(s)) => Ok(Text(s)),
            (XsType::String, Bool(b)) => Ok(Text(b.to_string())),
            (XsType::String, Int(i)) => Ok(Text(i.to_string())),
            (XsType::String, UInt(u)) => Ok(Text(u.to_string())),
            (XsType::String, Float(f)) => Ok(Text(format_double(f))),
            (XsType::DateTime | XsType::Base64Binary, Text(s)) => Ok(Text(s)),
            (t, other) => Err(format!("{other:?} cannot be stored as {}", t.as_str())),
        }
    }

    /// The XSD lexical form of a (coerced) scalar value, as AAS stores it in `Property.value`.
    pub fn lexical(self, value: &TypedValue) -> String {
        match value {
            TypedValue::Bool(b) => b.to_string(),
            TypedValue::Int(i) => i.to_string(),
            TypedValue::UInt(u) => u.to_string(),
            TypedValue::Float(f) if self == XsType::Float => format_float(*f as f32),
            TypedValue::Float(f) => format_double(*f),
            TypedValue::Text(s) => s.clone(),
            TypedValue::DateTime(t) => TypedValue::datetime_text(t),
            TypedValue::Bytes(b) => TypedValue::bytes_text(b),
            TypedValue::Null => String::new(),
            TypedValue::List(items) => items
                .iter()
                .map(|v| self.lexical(v))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// The JSON form (Part 2 ValueOnly): numbers and booleans as JSON, non-finite floats and
    /// text as strings.
    pub fn json(self, value: &TypedValue) -> serde_json::Value {
        use serde_json::Value as J;
        match value {
            TypedValue::Bool(b) => J::Bool(*b),
            TypedValue::Int(i) => J::from(*i),
            TypedValue::UInt(u) => J::from(*u),
            TypedValue::Float(f) if f.is_finite() => {
                if self == XsType::Float {
                    // Print through f32 so 0.1f32 stays 0.1, not 0.10000000149011612.
                    serde_json::from_str(&format_float(*f as f32)).unwrap_or(J::Null)
                } else {
                    J::from(*f)
                }
            }
            TypedValue::Float(f) => J::String(format_double(*f)),
            TypedValue::Text(s) => J::String(s.clone()),
            TypedValue::DateTime(t) => J::String(TypedValue::datetime_text(t)),
            TypedValue::Bytes(b) => J::String(TypedValue::bytes_text(b)),
            TypedValue::Null => J::Null,
            TypedValue::List(items) => J::Array(items.iter().map(|v| self.json(v)).collect()),
        }
    }

    /// Appends [`XsType::json`]'s JSON text to `out` without building a `serde_json::Value`
    /// (the MQTT sink writes every value this way). Same value as `json()` once parsed; an
    /// xs:float is printed from its `f32` (`0.1`, not `0.10000000149011612`).
    pub fn write_json(self, value: &TypedValue, out: &mut Vec<u8>) {
        match value {
            TypedValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            // serde_json's own number formatting (itoa, and its shortest float form), so the
            // bytes are what serialising `json()` gave.
            TypedValue::Int(i) => write_json_number(i, out),
            TypedValue::UInt(u) => write_json_number(u, out),
            TypedValue::Float(f) if f.is_finite() && self == XsType::Float => {
                write_json_number(&(*f as f32), out)
            }
            TypedValue::Float(f) if f.is_finite() => write_json_number(f, out),
            TypedValue::Float(f) => write_json_str(&format_double(*f), out),
            TypedValue::Text(s) => write_json_str(s, out),
            TypedValue::DateTime(t) => write_json_str(&TypedValue::datetime_text(t), out),
            TypedValue::Bytes(b) => write_json_str(&TypedValue::bytes_text(b), out),
            TypedValue::Null => out.extend_from_slice(b"null"),
            TypedValue::List(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_json(item, out);
                }
                out.push(b']');
            }
        }
    }

    /// Parses a lexical value of this type (template values, write-back input).
    pub fn parse_lexical(self, s: &str) -> Result<TypedValue, String> {
        let bad = || format!("{s:?} is not a valid {}", self.as_str());
        if self.int_range().is_some() {
            let v = if let Ok(i) = s.parse::<i64>() {
                TypedValue::Int(i)
            } else {
                TypedValue::UInt(s.parse::<u64>().map_err(|_| bad())?)
            };
            return self.coerce(v);
        }
        match self {
            XsType::Boolean => match s {
                "true" | "1" => Ok(TypedValue::Bool(true)),
                "false" | "0" => Ok(TypedValue::Bool(false)),
                _ => Err(bad()),
            },
            XsType::Float | XsType::Double | XsType::Decimal => {
                let f = match s {
                    "INF" => f64::INFINITY,
                    "-INF" => f64::NEG_INFINITY,
                    "NaN" => f64::NAN,
                    _ => s.parse::<f64>().map_err(|_| bad())?,
                };
                Ok(TypedValue::Float(f))
            }
            _ => Ok(TypedValue::Text(s.to_string())),
        }
    }
}

fn write_json_number<N: serde::Serialize>(n: &N, out: &mut Vec<u8>) {
    serde_json::to_writer(out, n).expect("writing a number to a Vec cannot fail");
}

/// Appends `s` as a JSON string (quoted, escaped).
pub fn write_json_str(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
}

fn format_double(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "INF" } else { "-INF" }.into()
    } else {
        // Rust's shortest round-trip representation; it is valid xs:double lexical form.
        format!("{f:?}")
    }
}

fn format_float(f: f32) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "INF" } else { "-INF" }.into()
    } else {
        format!("{f:?}")
    }
}

impl serde::Serialize for XsType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for XsType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for XsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for XsType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "xs:boolean" => XsType::Boolean,
            "xs:byte" => XsType::Byte,
            "xs:short" => XsType::Short,
            "xs:int" => XsType::Int,
            "xs:long" => XsType::Long,
            "xs:integer" => XsType::Integer,
            "xs:unsignedByte" => XsType::UnsignedByte,
            "xs:unsignedShort" => XsType::UnsignedShort,
            "xs:unsignedInt" => XsType::UnsignedInt,
            "xs:unsignedLong" => XsType::UnsignedLong,
            "xs:float" => XsType::Float,
            "xs:double" => XsType::Double,
            "xs:decimal" => XsType::Decimal,
            "xs:string" => XsType::String,
            "xs:dateTime" => XsType::DateTime,
            "xs:base64Binary" => XsType::Base64Binary,
            "xs:anyURI" => XsType::AnyUri,
            other => return Err(format!("{other:?} is not a supported xs value type")),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn written_json_is_the_json_value_for_every_type() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut values = vec![
            TypedValue::Bool(true),
            TypedValue::Bool(false),
            TypedValue::Int(i64::MIN),
            TypedValue::UInt(u64::MAX),
            TypedValue::Float(f64::NAN),
            TypedValue::Float(f64::NEG_INFINITY),
            TypedValue::Float(0.1),
            TypedValue::Float(1e300),
            TypedValue::Float(-0.0),
            TypedValue::Text("quote \" backslash \\ newline \n tab \t \u{1} é 漢".into()),
            TypedValue::Null,
            TypedValue::List(vec![TypedValue::Float(1.5), TypedValue::Null]),
            TypedValue::Bytes(vec![0, 255, 7]),
        ];
        for _ in 0..5000 {
            let bits = next();
            values.push(TypedValue::Float(f64::from_bits(bits)));
            values.push(TypedValue::Float(f32::from_bits(bits as u32) as f64));
            values.push(TypedValue::Float((bits % 1_000_000) as f64 / 1000.0));
            values.push(TypedValue::Int(bits as i64));
        }
        for xs in [XsType::Double, XsType::Long, XsType::String] {
            for v in &values {
                let mut out = Vec::new();
                xs.write_json(v, &mut out);
                let expected = serde_json::to_vec(&xs.json(v)).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&expected),
                    "{xs} {v:?}"
                );
            }
        }
        // xs:float: text that reads back as the same f32 (Rust's exact parser; serde_json's
        // default one may be an ulp off, which is why `json()` is not the reference here).
        for v in &values {
            let mut out = Vec::new();
            XsType::Float.write_json(v, &mut out);
            let text = String::from_utf8(out).unwrap();
            match v {
                TypedValue::Float(f) if (*f as f32).is_finite() => {
                    assert_eq!(text.parse::<f32>().unwrap(), *f as f32, "{v:?} → {text}");
                }
                _ => assert_eq!(
                    text,
                    serde_json::to_string(&XsType::Float.json(v)).unwrap(),
                    "{v:?}"
                ),
            }
        }
    }

    use super::*;
    use TypedValue::*;

    #[test]
    fn integers_are_range_checked() {
        assert_eq!(XsType::UnsignedInt.coerce(Int(5)), Ok(UInt(5)));
        assert!(XsType::UnsignedInt.coerce(Int(-1)).is_err());
        assert!(XsType::Byte.coerce(Int(200)).is_err());
        assert_eq!(XsType::Int.coerce(UInt(7)), Ok(Int(7)));
    }

    #[test]
    fn floats_use_xsd_lexical_forms() {
        assert_eq!(XsType::Double.lexical(&Float(f64::INFINITY)), "INF");
        assert_eq!(XsType::Double.lexical(&Float(f64::NAN)), "NaN");
        assert_eq!(XsType::Double.lexical(&Float(1.5)), "1.5");
        assert_eq!(XsType::Float.lexical(&Float(0.1f32 as f64)), "0.1");
        assert_eq!(
            XsType::Float.json(&Float(0.1f32 as f64)),
            serde_json::json!(0.1)
        );
        assert_eq!(
            XsType::Double.json(&Float(f64::NAN)),
            serde_json::json!("NaN")
        );
    }

    #[test]
    fn a_double_does_not_fit_a_boolean() {
        assert!(XsType::Boolean.coerce(Float(1.5)).is_err());
        assert_eq!(XsType::Boolean.parse_lexical("true"), Ok(Bool(true)));
        assert!(XsType::Boolean.parse_lexical("yes").is_err());
    }

    #[test]
    fn instants_and_bytes_fit_only_their_types_exactly() {
        // 1601-01-01T00:00:00.0000001Z: OPC UA's first tick, far before nanoseconds since 1970.
        let early = chrono::DateTime::from_timestamp(-11_644_473_600, 100).unwrap();
        assert_eq!(
            XsType::DateTime.coerce(DateTime(early)),
            Ok(Text("1601-01-01T00:00:00.000000100Z".into()))
        );
        let t = chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        assert_eq!(
            XsType::String.coerce(DateTime(t)),
            Ok(Text("2023-11-14T22:13:20.123Z".into()))
        );
        assert!(XsType::Long.coerce(DateTime(t)).is_err());
        assert!(XsType::Base64Binary.coerce(DateTime(t)).is_err());
        assert_eq!(
            XsType::Base64Binary.coerce(Bytes(vec![0, 1, 254, 255])),
            Ok(Text("AAH+/w==".into()))
        );
        assert!(XsType::DateTime.coerce(Bytes(vec![1])).is_err());
        assert!(XsType::Int.coerce(Bytes(vec![1])).is_err());
    }

    #[test]
    fn every_name_round_trips() {
        for name in [
            "xs:boolean",
            "xs:unsignedLong",
            "xs:dateTime",
            "xs:anyURI",
            "xs:double",
        ] {
            assert_eq!(name.parse::<XsType>().unwrap().as_str(), name);
        }
        assert!("xs:nope".parse::<XsType>().is_err());
    }
}
