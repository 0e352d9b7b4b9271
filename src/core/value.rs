//! The values every stage exchanges: [`TypedValue`] and its [`Quality`].

/// A value in the gateway's own, protocol-free form.
///
/// A source converts what it receives into the variant that keeps the value exactly (an OPC UA
/// `Int16` becomes `Int`, a `DateTime` stays a [`TypedValue::DateTime`], a `ByteString` stays
/// [`TypedValue::Bytes`]). The mapping then brings it to the element's `xs:*` type with
/// [`crate::core::XsType::coerce`], which leaves only `Bool`, `Int`, `UInt`, `Float`, `Text`,
/// `List` and `Null`: the AAS store, the outbox and the sinks never see `DateTime` or `Bytes`
/// (their lexical text is what AAS stores for `xs:dateTime` and `xs:base64Binary`).
#[derive(Debug, Clone, PartialEq)]
pub enum TypedValue {
    /// A boolean.
    Bool(bool),
    /// A signed integer (any width up to 64 bits).
    Int(i64),
    /// An unsigned integer (any width up to 64 bits).
    UInt(u64),
    /// A floating point number (NaN and ±INF included).
    Float(f64),
    /// Every type whose natural form is text: xs:string, GUIDs, node ids, structures as JSON;
    /// after coercion also xs:dateTime and xs:base64Binary in their lexical forms.
    Text(String),
    /// An instant, exact to the nanosecond over the whole range a source can send (OPC UA
    /// DateTimes reach back to 1601, beyond what nanoseconds since 1970 in an `i64` hold).
    /// Only in readings: coercion turns it into its RFC 3339 text.
    DateTime(chrono::DateTime<chrono::Utc>),
    /// Raw bytes (an OPC UA ByteString). Only in readings: coercion turns them into base64 text.
    Bytes(Vec<u8>),
    /// An array (mapped to a SubmodelElementList of Properties).
    List(Vec<TypedValue>),
    /// No value, only a status: servers may omit the value of a Bad DataValue (asyncua does),
    /// and the status must still reach every consumer. The AAS element then has no value,
    /// MQTT carries `"value": null`, QuestDB only the status column.
    Null,
}

impl TypedValue {
    /// The text form of an instant: RFC 3339 UTC with as many fractional digits as needed
    /// (whole seconds have none), e.g. `2023-11-14T22:13:20.123Z`.
    pub fn datetime_text(t: &chrono::DateTime<chrono::Utc>) -> String {
        t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    }

    /// The text form of bytes: standard base64 with padding (the xs:base64Binary lexical form).
    pub fn bytes_text(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    }
}

/// Quality class of a value, derived from the two top bits of its status code (the OPC UA
/// StatusCode layout, which other protocols' qualities map onto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// Severity 00.
    Good,
    /// Severity 01.
    Uncertain,
    /// Severity 10 or 11.
    Bad,
}

impl Quality {
    /// The class of a 32-bit status code.
    pub fn from_status(status: u32) -> Quality {
        match status >> 30 {
            0 => Quality::Good,
            1 => Quality::Uncertain,
            _ => Quality::Bad,
        }
    }

    /// `good`, `uncertain` or `bad` (MQTT payloads, the ILP `quality` symbol).
    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain => "uncertain",
            Quality::Bad => "bad",
        }
    }
}

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
