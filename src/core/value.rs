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
    let mut out = Vec::with_capacity(30);
    write_timestamp(nanos, &mut out);
    String::from_utf8(out).expect("ASCII")
}

/// [`write_timestamp`] that remembers the text of the last instant it wrote.
///
/// The values of one publish response mostly share their timestamps (a server samples many
/// items in the same instant, and its server timestamp is the same for the whole response):
/// copying the 24–30 bytes again is cheaper than the calendar arithmetic, which was about 5 %
/// of the gateway's CPU at 100k values/s in submodel messages.
#[derive(Debug, Clone, Default)]
pub struct TimestampText {
    nanos: i64,
    /// Length of `text`; 0 until the first write.
    len: u8,
    text: [u8; 32],
}

impl TimestampText {
    /// Appends the text of `nanos` (as [`write_timestamp`]) to `out`.
    pub fn write(&mut self, nanos: i64, out: &mut Vec<u8>) {
        if self.len != 0 && self.nanos == nanos {
            out.extend_from_slice(&self.text[..self.len as usize]);
            return;
        }
        let start = out.len();
        write_timestamp(nanos, out);
        let text = &out[start..];
        // Always fits (30 bytes at most: i64 nanoseconds reach the years 1677–2262); checked.
        if let Some(slot) = self.text.get_mut(..text.len()) {
            slot.copy_from_slice(text);
            self.len = text.len() as u8;
            self.nanos = nanos;
        }
    }
}

/// Appends [`format_timestamp`]'s text to `out` without allocating: 0, 3, 6 or 9 fractional
/// digits (the fewest that keep the value exact, chrono's `SecondsFormat::AutoSi`), `Z`.
/// Every value a payload carries has two timestamps; formatting them through chrono cost more
/// than the rest of the payload.
pub fn write_timestamp(nanos: i64, out: &mut Vec<u8>) {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000) as u32;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    let (year, month, day) = civil_from_days(days);
    let two = |out: &mut Vec<u8>, v: u32| {
        out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8])
    };
    if (0..=9999).contains(&year) {
        let y = year as u32;
        two(out, y / 100);
        two(out, y % 100);
    } else {
        // Outside 0000–9999 (i64 nanoseconds reach 1677–2262, so never from a real clock).
        out.extend_from_slice(format!("{year:+}").as_bytes());
    }
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, sod / 3600);
    out.push(b':');
    two(out, sod / 60 % 60);
    out.push(b':');
    two(out, sod % 60);
    if frac != 0 {
        let (value, digits) = if frac.is_multiple_of(1_000_000) {
            (frac / 1_000_000, 3)
        } else if frac.is_multiple_of(1_000) {
            (frac / 1_000, 6)
        } else {
            (frac, 9)
        };
        out.push(b'.');
        let mut buf = [b'0'; 9];
        let mut v = value;
        for i in (0..digits).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..digits]);
    }
    out.push(b'Z');
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_timestamp_text_is_the_text_of_the_instant_asked() {
        let mut cache = TimestampText::default();
        let mut out = Vec::new();
        let instants = [
            0,
            0,
            1_700_000_000_123_000_000,
            1_700_000_000_123_000_000,
            1_700_000_000_123_000_001,
            -5,
            i64::MAX,
            i64::MIN,
            0,
        ];
        let mut expected = String::new();
        for nanos in instants {
            cache.write(nanos, &mut out);
            out.push(b' ');
            expected.push_str(&format_timestamp(nanos));
            expected.push(' ');
        }
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn quality_follows_status_severity_bits() {
        assert_eq!(Quality::from_status(0), Quality::Good);
        assert_eq!(Quality::from_status(0x4000_0000), Quality::Uncertain);
        assert_eq!(Quality::from_status(0x808B_0000), Quality::Bad);
    }

    #[test]
    fn timestamps_are_written_exactly_as_chrono_formats_them() {
        use chrono::{DateTime, SecondsFormat, Utc};
        let chrono_text = |n: i64| {
            DateTime::<Utc>::from_timestamp_nanos(n).to_rfc3339_opts(SecondsFormat::AutoSi, true)
        };
        // Edges (epoch, before it, leap days, centuries, the i64 range) and a spread of
        // pseudo-random instants with every kind of fraction.
        let mut cases = vec![
            0,
            -1,
            1,
            999_999_999,
            -1_000_000_000,
            951_782_400_000_000_000,    // 2000-02-29
            4_107_542_400_000_000_000,  // 2100-03-01
            -2_208_988_800_000_000_000, // 1900-01-01
            i64::MAX,
            i64::MIN,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = x as i64;
            // Every fourth case with a whole-millisecond or whole-microsecond fraction.
            cases.push(match i % 4 {
                0 => n - n.rem_euclid(1_000_000),
                1 => n - n.rem_euclid(1_000),
                2 => n - n.rem_euclid(1_000_000_000),
                _ => n,
            });
        }
        for n in cases {
            assert_eq!(format_timestamp(n), chrono_text(n), "nanos {n}");
        }
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
