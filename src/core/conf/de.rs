//! A serde `Deserializer` over the config [tree](super::tree) that
//! - knows the path of every value, so an error says `opcua[0].queue_size`, not just "invalid
//!   type";
//! - skips keys a struct does not have and records them (with a "did you mean" from the
//!   struct's own field list, which serde hands to `deserialize_struct`), so that one unknown
//!   key does not hide the rest; the config structs keep `deny_unknown_fields` for any other
//!   format, it just never triggers here;
//! - turns text from an environment variable into what the field asks for (a number, a
//!   boolean, text), so a password `12345` stays text;
//! - turns a [`Kind::Placeholder`] into the zero of whatever is asked, so the loader can go on
//!   checking the rest of the config after a value was found wrong.
//!
//! Structs deserialized through `deserialize_map` instead of `deserialize_struct` (e.g. with
//! `#[serde(flatten)]`) get no unknown-key check here; the config structs use none.

use std::cell::RefCell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};

use super::tree::{Kind, Node, Origin, Path, Seg};

/// A deserialization error and where it happened.
#[derive(Debug)]
pub struct Error {
    /// What is wrong.
    pub message: String,
    /// Path of the value (set by the innermost map or list the error passes through).
    pub path: Option<Path>,
    /// For "missing field" errors: the missing key (a child of `path`).
    pub missing: Option<&'static str>,
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            path: None,
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Error {
            message: "missing: this key is required".into(),
            path: None,
            missing: Some(field),
        }
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut message = format!("{variant:?} is not one of {}", expected.join(", "));
        if let Some(s) = did_you_mean(variant, expected) {
            message += &format!("; did you mean `{s}`?");
        }
        Error::custom(message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The closest of `known` to `key`, when it is close enough to be a typo.
pub fn did_you_mean<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    // A third of the length (at least 1) in edits, swaps counting once: catches
    // `publishing_intervall_ms`, `hots`, `endpiont`, not unrelated short words.
    let limit = (key.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A key the structs do not have.
#[derive(Debug, Clone)]
pub struct Unknown {
    /// Its path.
    pub path: Path,
    /// Where it was set.
    pub origin: Origin,
    /// The keys the struct does have.
    pub known: &'static [&'static str],
}

/// What one deserialization pass found besides its result.
#[derive(Debug, Default)]
pub struct Found {
    /// Keys that were skipped because their struct has no such field.
    pub unknown: RefCell<Vec<Unknown>>,
}

/// One step of the current path, on the stack (no allocation unless an error needs the path).
pub struct Link<'a> {
    parent: Option<&'a Link<'a>>,
    seg: Option<SegRef<'a>>,
}

#[derive(Clone, Copy)]
enum SegRef<'a> {
    Key(&'a str),
    Index(usize),
}

impl Link<'_> {
    /// The root.
    pub const ROOT: Link<'static> = Link {
        parent: None,
        seg: None,
    };

    fn path(&self) -> Path {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(link) = cur {
            match link.seg {
                Some(SegRef::Key(k)) => segs.push(Seg::Key(k.to_string())),
                Some(SegRef::Index(i)) => segs.push(Seg::Index(i)),
                None => {}
            }
            cur = link.parent;
        }
        segs.reverse();
        Path(segs)
    }
}

fn at<T>(result: Result<T, Error>, link: &Link<'_>) -> Result<T, Error> {
    result.map_err(|mut e| {
        if e.path.is_none() {
            e.path = Some(link.path());
        }
        e
    })
}

static PLACEHOLDER: Node = Node {
    kind: Kind::Placeholder,
    origin: Origin::Unknown,
};

/// Deserializes one node of the tree.
#[derive(Clone, Copy)]
pub struct NodeDe<'a> {
    node: &'a Node,
    link: &'a Link<'a>,
    found: &'a Found,
}

impl<'a> NodeDe<'a> {
    /// A deserializer for the whole tree.
    pub fn root(node: &'a Node, found: &'a Found) -> NodeDe<'a> {
        NodeDe {
            node,
            link: &Link::ROOT,
            found,
        }
    }

    fn env_table<'de, V: Visitor<'de>>(
        self,
        text: &str,
        visitor: V,
        then: impl FnOnce(NodeDe<'_>, V) -> Result<V::Value, Error>,
    ) -> Result<V::Value, Error> {
        // A list or table from one variable, written as TOML: `["a.json", "b.json"]`.
        let doc = format!("v = {text}");
        match super::tree::parse_toml(&doc)
            .ok()
            .and_then(|t| match t.kind {
                Kind::Table(mut e) if e.len() == 1 => Some(e.remove(0).1),
                _ => None,
            }) {
            Some(mut node) if matches!(node.kind, Kind::Array(_) | Kind::Table(_)) => {
                relabel(&mut node, &self.node.origin);
                then(
                    NodeDe {
                        node: &node,
                        link: self.link,
                        found: self.found,
                    },
                    visitor,
                )
            }
            _ => Err(de::Error::invalid_type(Unexpected::Str(text), &visitor)),
        }
    }
}

/// Gives a tree parsed from an environment value the variable as origin.
fn relabel(node: &mut Node, origin: &Origin) {
    node.origin = origin.clone();
    match &mut node.kind {
        Kind::Table(entries) => entries.iter_mut().for_each(|(_, n)| relabel(n, origin)),
        Kind::Array(items) => items.iter_mut().for_each(|n| relabel(n, origin)),
        _ => {}
    }
}

fn env_bool<'de, V: Visitor<'de>>(s: &str, visitor: V) -> Result<V::Value, Error> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" => visitor.visit_bool(true),
        "false" => visitor.visit_bool(false),
        _ => Err(de::Error::invalid_value(Unexpected::Str(s), &visitor)),
    }
}

fn env_int<'de, V: Visitor<'de>>(s: &str, visitor: V) -> Result<V::Value, Error> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        visitor.visit_i64(n)
    } else if let Ok(n) = t.parse::<u64>() {
        visitor.visit_u64(n)
    } else {
        Err(de::Error::invalid_type(Unexpected::Str(s), &visitor))
    }
}

fn env_float<'de, V: Visitor<'de>>(s: &str, visitor: V) -> Result<V::Value, Error> {
    match s.trim().parse::<f64>() {
        Ok(f) => visitor.visit_f64(f),
        Err(_) => Err(de::Error::invalid_type(Unexpected::Str(s), &visitor)),
    }
}

macro_rules! scalar {
    ($($method:ident => $env:ident, |$v:ident| $zero:expr;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $v: V) -> Result<V::Value, Error> {
            match &self.node.kind {
                Kind::Env(s) => $env(s, $v),
                Kind::Placeholder => $zero,
                _ => self.deserialize_any($v),
            }
        }
    )*};
}

fn env_str<'de, V: Visitor<'de>>(s: &str, visitor: V) -> Result<V::Value, Error> {
    visitor.visit_str(s)
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Table(entries) => visitor.visit_map(MapDe::new(entries, None, self)),
            Kind::Array(items) => visitor.visit_seq(SeqDe {
                items: items.iter().enumerate(),
                parent: self,
            }),
            Kind::Str(s) | Kind::Datetime(s) => visitor.visit_str(s),
            Kind::Int(n) => visitor.visit_i64(*n),
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Bool(b) => visitor.visit_bool(*b),
            // Nothing says what type is wanted: text unless it reads as a boolean or number.
            Kind::Env(s) => match s.as_str() {
                "true" => visitor.visit_bool(true),
                "false" => visitor.visit_bool(false),
                _ => match s.parse::<i64>() {
                    Ok(n) => visitor.visit_i64(n),
                    Err(_) => visitor.visit_str(s),
                },
            },
            Kind::Placeholder => visitor.visit_unit(),
        }
    }

    scalar! {
        deserialize_bool => env_bool, |v| v.visit_bool(false);
        deserialize_i8 => env_int, |v| v.visit_i64(0);
        deserialize_i16 => env_int, |v| v.visit_i64(0);
        deserialize_i32 => env_int, |v| v.visit_i64(0);
        deserialize_i64 => env_int, |v| v.visit_i64(0);
        deserialize_i128 => env_int, |v| v.visit_i64(0);
        deserialize_u8 => env_int, |v| v.visit_u64(0);
        deserialize_u16 => env_int, |v| v.visit_u64(0);
        deserialize_u32 => env_int, |v| v.visit_u64(0);
        deserialize_u64 => env_int, |v| v.visit_u64(0);
        deserialize_u128 => env_int, |v| v.visit_u64(0);
        deserialize_f32 => env_float, |v| v.visit_f64(0.0);
        deserialize_f64 => env_float, |v| v.visit_f64(0.0);
        deserialize_char => env_str, |v| v.visit_char(' ');
        deserialize_str => env_str, |v| v.visit_str("");
        deserialize_string => env_str, |v| v.visit_str("");
        deserialize_bytes => env_str, |v| v.visit_bytes(&[]);
        deserialize_byte_buf => env_str, |v| v.visit_bytes(&[]);
        deserialize_identifier => env_str, |v| v.visit_str("");
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.kind {
            Kind::Placeholder => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.node.kind {
            Kind::Placeholder => visitor.visit_unit(),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Env(s) => self.env_table(s, visitor, |d, v| d.deserialize_any(v)),
            Kind::Placeholder => visitor.visit_seq(SeqDe {
                items: [].iter().enumerate(),
                parent: self,
            }),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Env(s) => self.env_table(s, visitor, |d, v| d.deserialize_any(v)),
            Kind::Placeholder => visitor.visit_map(MapDe::new(&[], None, self)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Table(entries) => visitor.visit_map(MapDe::new(entries, Some(fields), self)),
            Kind::Env(s) => {
                self.env_table(s, visitor, |d, v| d.deserialize_struct(name, fields, v))
            }
            Kind::Placeholder => visitor.visit_map(MapDe::new(&[], Some(fields), self)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.kind {
            // `mode = "read"`: a unit variant by name.
            Kind::Str(s) | Kind::Env(s) => visitor.visit_enum(EnumDe {
                variant: s,
                content: None,
                parent: self,
            }),
            // `{ name = { ... } }`: a variant with content.
            Kind::Table(entries) if entries.len() == 1 => visitor.visit_enum(EnumDe {
                variant: &entries[0].0,
                content: Some(&entries[0].1),
                parent: self,
            }),
            Kind::Placeholder => visitor.visit_enum(EnumDe {
                variant: variants.first().copied().unwrap_or(""),
                content: Some(&PLACEHOLDER),
                parent: self,
            }),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct MapDe<'a> {
    entries: std::slice::Iter<'a, (String, Node)>,
    fields: Option<&'static [&'static str]>,
    parent: NodeDe<'a>,
    value: Option<&'a (String, Node)>,
}

impl<'a> MapDe<'a> {
    fn new(
        entries: &'a [(String, Node)],
        fields: Option<&'static [&'static str]>,
        parent: NodeDe<'a>,
    ) -> MapDe<'a> {
        MapDe {
            entries: entries.iter(),
            fields,
            parent,
            value: None,
        }
    }
}

impl<'de, 'a> MapAccess<'de> for MapDe<'a> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        for entry in self.entries.by_ref() {
            if let Some(fields) = self.fields {
                if !fields.contains(&entry.0.as_str()) {
                    let link = Link {
                        parent: Some(self.parent.link),
                        seg: Some(SegRef::Key(&entry.0)),
                    };
                    self.parent.found.unknown.borrow_mut().push(Unknown {
                        path: link.path(),
                        origin: entry.1.origin.clone(),
                        known: fields,
                    });
                    continue;
                }
            }
            self.value = Some(entry);
            let key: de::value::StrDeserializer<'_, Error> = entry.0.as_str().into_deserializer();
            return seed.deserialize(key).map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, Error> {
        let (key, node) = self
            .value
            .take()
            .ok_or_else(|| <Error as de::Error>::custom("value without key"))?;
        let link = Link {
            parent: Some(self.parent.link),
            seg: Some(SegRef::Key(key)),
        };
        at(
            seed.deserialize(NodeDe {
                node,
                link: &link,
                found: self.parent.found,
            }),
            &link,
        )
    }
}

struct SeqDe<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    parent: NodeDe<'a>,
}

impl<'de, 'a> SeqAccess<'de> for SeqDe<'a> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let link = Link {
            parent: Some(self.parent.link),
            seg: Some(SegRef::Index(i)),
        };
        at(
            seed.deserialize(NodeDe {
                node,
                link: &link,
                found: self.parent.found,
            }),
            &link,
        )
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct EnumDe<'a> {
    variant: &'a str,
    content: Option<&'a Node>,
    parent: NodeDe<'a>,
}

impl<'de, 'a> EnumAccess<'de> for EnumDe<'a> {
    type Error = Error;
    type Variant = VariantDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantDe<'a>), Error> {
        let name: de::value::StrDeserializer<'_, Error> = self.variant.into_deserializer();
        let value = seed.deserialize(name)?;
        Ok((
            value,
            VariantDe {
                variant: self.variant,
                content: self.content,
                parent: self.parent,
            },
        ))
    }
}

struct VariantDe<'a> {
    variant: &'a str,
    content: Option<&'a Node>,
    parent: NodeDe<'a>,
}

impl<'a> VariantDe<'a> {
    fn with_content<T>(self, f: impl FnOnce(NodeDe<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let Some(node) = self.content else {
            return Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"a variant with content ({ name = ... })",
            ));
        };
        let link = Link {
            parent: Some(self.parent.link),
            seg: Some(SegRef::Key(self.variant)),
        };
        at(
            f(NodeDe {
                node,
                link: &link,
                found: self.parent.found,
            }),
            &link,
        )
    }
}

impl<'de, 'a> VariantAccess<'de> for VariantDe<'a> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        match self.content.map(|n| &n.kind) {
            None | Some(Kind::Placeholder) => Ok(()),
            Some(_) => Err(de::Error::invalid_type(
                Unexpected::Map,
                &"a plain name (\"variant\")",
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        self.with_content(|d| seed.deserialize(d))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.with_content(|d| de::Deserializer::deserialize_seq(d, visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.with_content(|d| de::Deserializer::deserialize_struct(d, "", fields, visitor))
    }
}
