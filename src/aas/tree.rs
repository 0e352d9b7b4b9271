//! A compact JSON tree for the stored submodels.
//!
//! A `serde_json::Value` object is a `BTreeMap`: a 632-byte leaf node however few keys it has,
//! plus a heap `String` per key and per string value. A submodel of 100,000 Properties cost
//! about 720 bytes an element that way (72 MB of the gateway's live heap at 100k items). A
//! [`Node`] object is one boxed slice of (key, node) pairs: keys are interned process-wide
//! (their vocabulary is the metamodel's plus the templates' few extensions), short strings
//! (idShorts, lexical values, `xs:*` types) are stored inline without an allocation, and
//! enumeration values (`modelType`, `type`, ...) are interned. A Property is about 200 bytes.
//!
//! The tree has the shape of the JSON it was built from; it is read through [`JsonRead`] (which
//! `Value` implements as well, so navigation is written once) and turned back into a `Value`
//! ([`Node::to_value`]) only for what is served.

use serde_json::{Map, Number, Value};

use crate::core::LeakedSet;

/// An object key: a thin pointer to an interned name, so each distinct key is stored once
/// per process and a member is 32 bytes, not 40 with a `&str` (a Property's three members
/// fit a 96-byte allocation instead of 128: 3 MB at 100k elements).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key(&'static &'static str);

impl Key {
    /// The key named `name` (interned on first sight).
    pub fn new(name: &str) -> Key {
        static KEYS: LeakedSet<&'static str> = LeakedSet::new();
        let name = intern(name);
        Key(KEYS.get_or_leak(&name, || Box::new(name)))
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        *self.0 == other
    }
}

/// Longest string stored inline in a [`Node`] (no allocation).
const INLINE: usize = 22;

/// One JSON value of a stored submodel (24 bytes).
///
/// (No `PartialEq`: the same text may be held inline or interned; compare
/// [`Node::to_value`]s.)
#[derive(Clone)]
pub enum Node {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as parsed.
    Number(Number),
    /// A string of at most [`INLINE`] bytes: `bytes[..len]`.
    Inline {
        /// Length in bytes.
        len: u8,
        /// UTF-8 text, zero padded.
        bytes: [u8; INLINE],
    },
    /// A string from a bounded vocabulary (enumeration values), interned.
    Interned(&'static str),
    /// Any other string.
    Str(Box<str>),
    /// An array.
    Array(Box<[Node]>),
    /// An object: its members in the order they were built from.
    Object(Box<[(Key, Node)]>),
}

// Every element of a 100k-element submodel holds a few of these: keep them small.
const _: () = assert!(std::mem::size_of::<Node>() == 24);
const _: () = assert!(std::mem::size_of::<(Key, Node)>() == 32);

/// Keys whose string values are enumerations of the metamodel (a bounded vocabulary), so
/// they are interned rather than copied per element.
const ENUM_KEYS: &[&str] = &[
    "modelType",
    "valueType",
    "valueTypeListElement",
    "typeValueListElement",
    "type",
    "kind",
    "language",
    "category",
    "entityType",
    "assetKind",
    "direction",
    "state",
    "contentType",
];

/// The process-wide interned copy of `s` (see [`crate::core::LeakedSet`]: only for the
/// bounded vocabulary of the loaded templates).
pub fn intern(s: &str) -> &'static str {
    crate::core::leaked_str(s)
}

impl Node {
    /// A string node: inline when short, else boxed.
    pub fn text(s: &str) -> Node {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Node::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Node::Str(s.into())
        }
    }

    /// Builds from `v` (consumed); `key` is the member name `v` was found under.
    fn build(v: Value, key: Option<&str>) -> Node {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) if key.is_some_and(|k| ENUM_KEYS.contains(&k)) => {
                Node::Interned(intern(&s))
            }
            Value::String(s) if s.len() <= INLINE => Node::text(&s),
            Value::String(s) => Node::Str(s.into_boxed_str()),
            Value::Array(items) => {
                Node::Array(items.into_iter().map(|v| Node::build(v, key)).collect())
            }
            Value::Object(members) => Node::Object(
                members
                    .into_iter()
                    .map(|(k, v)| {
                        let k = Key::new(&k);
                        (k, Node::build(v, Some(k.as_str())))
                    })
                    .collect(),
            ),
        }
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Object(members) => members.iter().find(|(k, _)| *k == *key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The member `key` of an object, for writing.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Object(members) => members.iter_mut().find(|(k, _)| *k == *key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets member `key` of an object (in place when present; a new member rebuilds the
    /// object's slice once). Does nothing to a non-object.
    pub fn insert(&mut self, key: &str, value: Node) {
        if let Some(slot) = self.get_mut(key) {
            *slot = value;
            return;
        }
        if let Node::Object(members) = self {
            let mut grown = std::mem::take(members).into_vec();
            grown.push((Key::new(key), value));
            *members = grown.into_boxed_slice();
        }
    }

    /// Removes member `key` of an object, if present.
    pub fn remove(&mut self, key: &str) {
        if let Node::Object(members) = self {
            if members.iter().any(|(k, _)| *k == *key) {
                let kept: Vec<_> = std::mem::take(members)
                    .into_vec()
                    .into_iter()
                    .filter(|(k, _)| *k != *key)
                    .collect();
                *members = kept.into_boxed_slice();
            }
        }
    }

    /// The text of a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Inline { len, bytes } => std::str::from_utf8(&bytes[..*len as usize]).ok(),
            Node::Interned(s) => Some(s),
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items of an array.
    pub fn as_array(&self) -> Option<&[Node]> {
        match self {
            Node::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The items of an array, for writing.
    pub fn as_array_mut(&mut self) -> Option<&mut [Node]> {
        match self {
            Node::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The node at JSON pointer `pointer` (RFC 6901, as [`Value::pointer`]).
    pub fn pointer(&self, pointer: &str) -> Option<&Node> {
        if pointer.is_empty() {
            return Some(self);
        }
        let rest = pointer.strip_prefix('/')?;
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .try_fold(self, |node, token| match node {
                Node::Object(_) => node.get(&token),
                Node::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
    }

    /// The `Value` of an object without its member `skip` (e.g. a submodel's `$metadata`
    /// without materialising its elements); other nodes as [`Node::to_value`].
    pub fn to_value_without(&self, skip: &str) -> Value {
        match self {
            Node::Object(members) => Value::Object(
                members
                    .iter()
                    .filter(|(k, _)| *k != *skip)
                    .map(|(k, v)| (k.as_str().to_string(), v.to_value()))
                    .collect(),
            ),
            _ => self.to_value(),
        }
    }

    /// The `Value` this node stands for (a deep copy).
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::Inline { .. } | Node::Interned(_) | Node::Str(_) => {
                Value::String(self.as_str().unwrap_or_default().to_string())
            }
            Node::Array(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.to_value()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

impl From<Value> for Node {
    fn from(v: Value) -> Node {
        Node::build(v, None)
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_value().fmt(f)
    }
}

/// Read access shared by `Value` and [`Node`], so that navigation (idShortPaths, child
/// elements) is written once for both.
pub trait JsonRead: Sized {
    /// The member `key` of an object.
    fn get(&self, key: &str) -> Option<&Self>;
    /// The text of a string.
    fn as_str(&self) -> Option<&str>;
    /// The items of an array.
    fn as_array(&self) -> Option<&[Self]>;
    /// The node at JSON pointer `pointer`.
    fn pointer(&self, pointer: &str) -> Option<&Self>;
    /// A `Value` copy.
    fn to_value(&self) -> Value;
}

impl JsonRead for Value {
    fn get(&self, key: &str) -> Option<&Value> {
        Value::get(self, key)
    }
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn as_array(&self) -> Option<&[Value]> {
        Value::as_array(self).map(Vec::as_slice)
    }
    fn pointer(&self, pointer: &str) -> Option<&Value> {
        Value::pointer(self, pointer)
    }
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl JsonRead for Node {
    fn get(&self, key: &str) -> Option<&Node> {
        Node::get(self, key)
    }
    fn as_str(&self) -> Option<&str> {
        Node::as_str(self)
    }
    fn as_array(&self) -> Option<&[Node]> {
        Node::as_array(self)
    }
    fn pointer(&self, pointer: &str) -> Option<&Node> {
        Node::pointer(self, pointer)
    }
    fn to_value(&self) -> Value {
        Node::to_value(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_tree_converts_back_unchanged() {
        let v = json!({"idShort": "V1", "modelType": "SubmodelElementCollection", "n": 1.5, "i": -3,
            "b": true, "z": null, "long": "a string longer than twenty-two bytes",
            "exact": "0123456789012345678901", "e": "", "ü": "äöü",
            "value": [{"modelType": "Property", "valueType": "xs:double"}, [], {}]});
        let node = Node::from(v.clone());
        assert_eq!(node.to_value(), v);
        assert_eq!(node.get("idShort").and_then(Node::as_str), Some("V1"));
        assert!(matches!(node.get("modelType"), Some(Node::Interned(_))));
        assert!(matches!(node.get("exact"), Some(Node::Inline { .. })));
        assert!(matches!(node.get("long"), Some(Node::Str(_))));
        assert_eq!(
            node.pointer("/value/0/valueType").and_then(Node::as_str),
            Some("xs:double")
        );
    }

    #[test]
    fn members_are_set_and_removed_in_place() {
        let mut node = Node::from(json!({"idShort": "P", "valueType": "xs:int"}));
        node.insert("value", Node::text("5"));
        node.insert("value", Node::text("6"));
        assert_eq!(
            node.to_value(),
            json!({"idShort": "P", "valueType": "xs:int", "value": "6"})
        );
        node.remove("value");
        node.remove("nothing");
        assert_eq!(
            node.to_value(),
            json!({"idShort": "P", "valueType": "xs:int"})
        );
    }

    #[test]
    fn keys_are_interned_once() {
        assert!(std::ptr::eq(
            intern("someKey"),
            intern(&String::from("someKey"))
        ));
        assert!(Key::new("someKey") == Key::new(&String::from("someKey")));
        assert!(Key::new("someKey") != Key::new("otherKey"));
        assert!(Key::new("someKey") == *"someKey");
    }
}
