//! Compact binary encoding of outbox records and of the entries (values) in them.
//!
//! A record is one dispatcher batch: `[version u8 = 1][count u32][newest source_ts i64]`
//! followed by `count` entries, each `[length u32][entry]`. The length prefix lets a reader skip a
//! damaged entry and keep the rest of the record; the newest timestamp lets the age bound judge a
//! record without decoding it.
//!
//! An entry is `[target u32][status u32][source_ts i64][server_ts i64][value]`, little endian,
//! where a value is a tag byte and its payload (text: u32 length + UTF-8; list: u32 count +
//! values). The element target is stored once in its own table and referenced by id, so an entry
//! of a double costs 37 bytes (with its length prefix) instead of a few hundred for JSON.

use crate::model::TypedValue;

/// The fields of an update that are stored per entry.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryData {
    pub target: u32,
    pub status: u32,
    pub source_ts_nanos: i64,
    pub server_ts_nanos: i64,
    pub value: TypedValue,
}

const TAG_BOOL: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_UINT: u8 = 3;
const TAG_FLOAT: u8 = 4;
const TAG_TEXT: u8 = 5;
const TAG_LIST: u8 = 6;
const TAG_NULL: u8 = 7;

pub fn encode(e: &EntryData, out: &mut Vec<u8>) {
    encode_ref(&e.as_ref(), out);
}

/// The fields of an entry, borrowed from wherever they are (no copy of the value).
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub target: u32,
    pub status: u32,
    pub source_ts_nanos: i64,
    pub server_ts_nanos: i64,
    pub value: &'a TypedValue,
}

impl EntryData {
    /// The entry's fields, borrowed.
    pub fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            target: self.target,
            status: self.status,
            source_ts_nanos: self.source_ts_nanos,
            server_ts_nanos: self.server_ts_nanos,
            value: &self.value,
        }
    }
}

fn encode_ref(e: &EntryRef, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.target.to_le_bytes());
    out.extend_from_slice(&e.status.to_le_bytes());
    out.extend_from_slice(&e.source_ts_nanos.to_le_bytes());
    out.extend_from_slice(&e.server_ts_nanos.to_le_bytes());
    encode_value(e.value, out);
}

fn encode_value(v: &TypedValue, out: &mut Vec<u8>) {
    match v {
        TypedValue::Null => out.push(TAG_NULL),
        TypedValue::Bool(b) => out.extend_from_slice(&[TAG_BOOL, *b as u8]),
        TypedValue::Int(i) => {
            out.push(TAG_INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        TypedValue::UInt(u) => {
            out.push(TAG_UINT);
            out.extend_from_slice(&u.to_le_bytes());
        }
        TypedValue::Float(f) => {
            out.push(TAG_FLOAT);
            out.extend_from_slice(&f.to_le_bytes());
        }
        TypedValue::Text(s) => {
            out.push(TAG_TEXT);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        // Coercion turns these into text before a value reaches the outbox (see
        // `XsType::coerce`); should one arrive anyway, it is stored as that same text.
        TypedValue::DateTime(t) => {
            encode_value(&TypedValue::Text(TypedValue::datetime_text(t)), out)
        }
        TypedValue::Bytes(b) => encode_value(&TypedValue::Text(TypedValue::bytes_text(b)), out),
        TypedValue::List(items) => {
            out.push(TAG_LIST);
            out.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for item in items {
                encode_value(item, out);
            }
        }
    }
}

/// Version byte of the record layout above.
pub const RECORD_VERSION: u8 = 1;
/// Bytes before the first entry of a record.
pub const RECORD_HEADER: usize = 1 + 4 + 8;

/// Starts a record in `out` (cleared); entries follow with [`push_entry`].
pub fn begin_record(out: &mut Vec<u8>) {
    out.clear();
    out.push(RECORD_VERSION);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&i64::MIN.to_le_bytes());
}

/// Appends one entry to a record begun with [`begin_record`], updating its header.
pub fn push_entry(e: &EntryData, out: &mut Vec<u8>) {
    push_ref(&e.as_ref(), out);
}

/// [`push_entry`] from borrowed fields (the value is encoded where it is, not copied).
pub fn push_ref(e: &EntryRef, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    encode_ref(e, out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    let count = u32::from_le_bytes(out[1..5].try_into().expect("header")) + 1;
    out[1..5].copy_from_slice(&count.to_le_bytes());
    let newest = i64::from_le_bytes(out[5..13].try_into().expect("header"));
    if e.source_ts_nanos > newest {
        out[5..13].copy_from_slice(&e.source_ts_nanos.to_le_bytes());
    }
}

/// The header of a record: (entry count, newest source timestamp).
pub fn record_header(bytes: &[u8]) -> Result<(u32, i64), String> {
    if bytes.len() < RECORD_HEADER {
        return Err("record is truncated".into());
    }
    if bytes[0] != RECORD_VERSION {
        return Err(format!("unknown record version {}", bytes[0]));
    }
    let count = u32::from_le_bytes(bytes[1..5].try_into().expect("length checked"));
    let newest = i64::from_le_bytes(bytes[5..13].try_into().expect("length checked"));
    Ok((count, newest))
}

/// Decodes every entry of a record, in order; a damaged entry is an `Err` in its place (the
/// others still decode). Fails as a whole only when the framing itself is damaged.
pub fn decode_record(bytes: &[u8]) -> Result<Vec<Result<EntryData, String>>, String> {
    let (count, _) = record_header(bytes)?;
    let mut out = Vec::with_capacity(count as usize);
    let mut pos = RECORD_HEADER;
    for _ in 0..count {
        let len = bytes
            .get(pos..pos + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or("record is truncated")?;
        let entry = bytes
            .get(pos + 4..pos + 4 + len)
            .ok_or("record is truncated")?;
        out.push(decode(entry));
        pos += 4 + len;
    }
    if pos != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the record",
            bytes.len() - pos
        ));
    }
    Ok(out)
}

/// Decodes an entry; an error means the file is damaged (named by the caller).
pub fn decode(bytes: &[u8]) -> Result<EntryData, String> {
    let mut r = Reader { bytes, pos: 0 };
    let target = u32::from_le_bytes(r.take()?);
    let status = u32::from_le_bytes(r.take()?);
    let source_ts_nanos = i64::from_le_bytes(r.take()?);
    let server_ts_nanos = i64::from_le_bytes(r.take()?);
    let value = r.value(0)?;
    if r.pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - r.pos));
    }
    Ok(EntryData {
        target,
        status,
        source_ts_nanos,
        server_ts_nanos,
        value,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let end = self.pos + N;
        let slice = self.bytes.get(self.pos..end).ok_or("entry is truncated")?;
        self.pos = end;
        Ok(slice.try_into().expect("length checked"))
    }

    fn value(&mut self, depth: u32) -> Result<TypedValue, String> {
        if depth > 8 {
            return Err("lists nested too deeply".into());
        }
        let [tag] = self.take::<1>()?;
        Ok(match tag {
            TAG_NULL => TypedValue::Null,
            TAG_BOOL => TypedValue::Bool(self.take::<1>()?[0] != 0),
            TAG_INT => TypedValue::Int(i64::from_le_bytes(self.take()?)),
            TAG_UINT => TypedValue::UInt(u64::from_le_bytes(self.take()?)),
            TAG_FLOAT => TypedValue::Float(f64::from_le_bytes(self.take()?)),
            TAG_TEXT => {
                let len = u32::from_le_bytes(self.take()?) as usize;
                let end = self.pos.checked_add(len).ok_or("bad text length")?;
                let text = self.bytes.get(self.pos..end).ok_or("text is truncated")?;
                self.pos = end;
                TypedValue::Text(String::from_utf8(text.to_vec()).map_err(|_| "text is not UTF-8")?)
            }
            TAG_LIST => {
                let n = u32::from_le_bytes(self.take()?) as usize;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                TypedValue::List(items)
            }
            other => return Err(format!("unknown value tag {other}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_kind_round_trips() {
        for value in [
            TypedValue::Null,
            TypedValue::Bool(true),
            TypedValue::Int(-5),
            TypedValue::UInt(u64::MAX),
            TypedValue::Float(f64::NAN),
            TypedValue::Float(-0.25),
            TypedValue::Text("Spindel ü".into()),
            TypedValue::List(vec![
                TypedValue::Float(1.0),
                TypedValue::Text(String::new()),
            ]),
        ] {
            let e = EntryData {
                target: 7,
                status: 0x8000_0000,
                source_ts_nanos: 1_700_000_000_123_000_000,
                server_ts_nanos: -1,
                value,
            };
            let mut buf = Vec::new();
            encode(&e, &mut buf);
            let back = decode(&buf).unwrap();
            match (&e.value, &back.value) {
                (TypedValue::Float(a), TypedValue::Float(b)) if a.is_nan() => assert!(b.is_nan()),
                _ => assert_eq!(back, e),
            }
        }
    }

    #[test]
    fn a_record_keeps_its_entries_in_order_and_a_damaged_one_alone() {
        let mut rec = Vec::new();
        begin_record(&mut rec);
        for i in 0..3 {
            push_entry(
                &EntryData {
                    target: i,
                    status: 0,
                    source_ts_nanos: 10 - i as i64,
                    server_ts_nanos: 0,
                    value: TypedValue::Int(i as i64),
                },
                &mut rec,
            );
        }
        assert_eq!(record_header(&rec).unwrap(), (3, 10));
        let back = decode_record(&rec).unwrap();
        let targets: Vec<u32> = back.iter().map(|e| e.as_ref().unwrap().target).collect();
        assert_eq!(targets, [0, 1, 2]);
        // Damage the second entry's value tag: only that entry fails.
        let second = RECORD_HEADER + 4 + 33 + 4 + 24;
        rec[second] = 99;
        let back = decode_record(&rec).unwrap();
        assert!(back[0].is_ok() && back[1].is_err() && back[2].is_ok());
        assert!(decode_record(&rec[..rec.len() - 1]).is_err());
    }

    #[test]
    fn damaged_entries_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode(
            &EntryData {
                target: 1,
                status: 0,
                source_ts_nanos: 0,
                server_ts_nanos: 0,
                value: TypedValue::Text("abc".into()),
            },
            &mut buf,
        );
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err());
        }
        buf.push(0);
        assert!(decode(&buf).is_err());
    }
}
