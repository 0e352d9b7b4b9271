//! The config as a tree of values that remember where they came from: a line of the TOML file
//! or an environment variable. The loader deserializes a typed config from this tree (see
//! [`super::de`]), and error messages use it to say `file:line` or the variable.
//!
//! Why our own tree and not the `config` crate's layered sources (which the loader used
//! before): the `config` crate forgets line numbers, parses an environment value by guessing
//! its type (a password `12345` became a number, `007` became `7`), and turns
//! `AAS_GATEWAY__OPCUA__0__PASSWORD` into a map key `"0"` instead of an array index. Here an
//! environment value stays text until the field it lands in asks for a number or a boolean, and
//! a numeric segment indexes an array.

use std::fmt;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line (1-based) of the config file.
    Line(usize),
    /// An environment variable (its name).
    Env(String),
    /// Neither (a default the loader filled in).
    Unknown,
}

/// One step of a path into the config: a key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A key of a table.
    Key(String),
    /// An index of an array.
    Index(usize),
}

/// A path like `opcua[0].password`, as used in every error message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Path(pub Vec<Seg>);

impl Path {
    /// `self` extended by `seg`.
    pub fn child(&self, seg: Seg) -> Path {
        let mut p = self.clone();
        p.0.push(seg);
        p
    }

    /// True when `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &Path) -> bool {
        self.0.starts_with(&other.0)
    }

    /// Parses the path at the start of an error message (`mapping[3].node_id`); `None` when the
    /// text is not a config path.
    pub fn parse(text: &str) -> Option<Path> {
        let mut segs = Vec::new();
        for part in text.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            let key_ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !key_ok {
                return None;
            }
            segs.push(Seg::Key(key.to_string()));
            while let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']')?;
                segs.push(Seg::Index(r[..end].parse().ok()?));
                rest = &r[end + 1..];
            }
            if !rest.is_empty() {
                return None;
            }
        }
        Some(Path(segs))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A value of the tree.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A table (keys in the parser's order; error lists are sorted by line anyway).
    Table(Vec<(String, Node)>),
    /// An array (also `[[name]]` arrays of tables).
    Array(Vec<Node>),
    /// A TOML string.
    Str(String),
    /// A TOML integer.
    Int(i64),
    /// A TOML float.
    Float(f64),
    /// A TOML boolean.
    Bool(bool),
    /// A TOML date/time, as written.
    Datetime(String),
    /// Text from an environment variable: becomes whatever type the field asks for.
    Env(String),
    /// Stands in for a value that was already reported as wrong (or missing), so the rest of
    /// the config can still be checked; deserializes as the "zero" of whatever type is asked.
    Placeholder,
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub struct Node {
    /// The value.
    pub kind: Kind,
    /// Where it came from (for a table: its header or first key).
    pub origin: Origin,
}

impl Node {
    fn table(origin: Origin) -> Node {
        Node {
            kind: Kind::Table(Vec::new()),
            origin,
        }
    }

    /// The value at `path`, if there is one.
    pub fn get(&self, path: &Path) -> Option<&Node> {
        let mut cur = self;
        for seg in &path.0 {
            cur = match (&cur.kind, seg) {
                (Kind::Table(entries), Seg::Key(k)) => {
                    &entries.iter().find(|(name, _)| name == k)?.1
                }
                (Kind::Array(items), Seg::Index(i)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Where the value at `path` came from; for a path that is not in the tree (a missing key),
    /// where its closest existing parent came from.
    pub fn origin_of(&self, path: &Path) -> Origin {
        let mut cur = self;
        let mut best = &self.origin;
        for seg in &path.0 {
            let next = match (&cur.kind, seg) {
                (Kind::Table(entries), Seg::Key(k)) => {
                    entries.iter().find(|(name, _)| name == k).map(|e| &e.1)
                }
                (Kind::Array(items), Seg::Index(i)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => {
                    cur = n;
                    if n.origin != Origin::Unknown {
                        best = &n.origin;
                    }
                }
                None => break,
            }
        }
        best.clone()
    }

    /// Replaces the value at `path` by a [`Kind::Placeholder`], adding the key when it is
    /// missing. False when there is no such place (the root, or a path through a non-table).
    pub fn set_placeholder(&mut self, path: &Path) -> bool {
        let Some((last, parents)) = path.0.split_last() else {
            return false;
        };
        let mut cur = self;
        for seg in parents {
            cur = match (&mut cur.kind, seg) {
                (Kind::Table(entries), Seg::Key(k)) => {
                    match entries.iter_mut().find(|(name, _)| name == k) {
                        Some(e) => &mut e.1,
                        None => return false,
                    }
                }
                (Kind::Array(items), Seg::Index(i)) => match items.get_mut(*i) {
                    Some(n) => n,
                    None => return false,
                },
                _ => return false,
            };
        }
        let origin = cur.origin.clone();
        match (&mut cur.kind, last) {
            (Kind::Table(entries), Seg::Key(k)) => {
                match entries.iter_mut().find(|(name, _)| name == k) {
                    Some(e) => e.1.kind = Kind::Placeholder,
                    None => entries.push((
                        k.clone(),
                        Node {
                            kind: Kind::Placeholder,
                            origin,
                        },
                    )),
                }
                true
            }
            (Kind::Array(items), Seg::Index(i)) => match items.get_mut(*i) {
                Some(n) => {
                    n.kind = Kind::Placeholder;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }
}

/// A syntax error of the file: its line and message.
#[derive(Debug)]
pub struct SyntaxError {
    /// 1-based line, when the parser gave a position.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Parses TOML text into a tree whose values know their line. Returns every syntax error the
/// parser finds (it recovers and goes on), not just the first.
pub fn parse_toml(text: &str) -> Result<Node, Vec<SyntaxError>> {
    let lines = LineIndex::new(text);
    let (root, errors) = toml::de::DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let mut errors: Vec<SyntaxError> = errors
            .iter()
            .map(|e| SyntaxError {
                line: e.span().map(|s| lines.line(s.start)),
                message: e.message().trim().to_string(),
            })
            .collect();
        errors.sort_by_key(|e| e.line);
        return Err(errors);
    }
    let origin = Origin::Unknown; // the root has no line of its own
    Ok(Node {
        kind: Kind::Table(table_entries(root.get_ref(), &lines)),
        origin,
    })
}

fn table_entries(table: &toml::de::DeTable<'_>, lines: &LineIndex) -> Vec<(String, Node)> {
    table
        .iter()
        .map(|(k, v)| {
            let mut node = convert(v, lines);
            // A key's line is the best place to point at for the whole entry (a table created
            // by a `[header]` gets the header's line from its own span).
            if !matches!(node.kind, Kind::Table(_) | Kind::Array(_)) {
                node.origin = Origin::Line(lines.line(k.span().start));
            }
            (k.get_ref().to_string(), node)
        })
        .collect()
}

fn convert(v: &toml::Spanned<toml::de::DeValue<'_>>, lines: &LineIndex) -> Node {
    use toml::de::DeValue;
    let origin = Origin::Line(lines.line(v.span().start));
    let kind = match v.get_ref() {
        DeValue::String(s) => Kind::Str(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Kind::Int(n),
            // Larger than TOML allows: keep the digits so the error shows them.
            Err(_) => Kind::Str(i.to_string()),
        },
        DeValue::Float(f) => Kind::Float(f.as_str().parse().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Kind::Bool(*b),
        DeValue::Datetime(d) => Kind::Datetime(d.to_string()),
        DeValue::Array(items) => Kind::Array(items.iter().map(|i| convert(i, lines)).collect()),
        DeValue::Table(t) => Kind::Table(table_entries(t, lines)),
    };
    Node { kind, origin }
}

/// Byte offset → line number.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        LineIndex(
            std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        )
    }

    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

/// Prefix of environment overrides; segments are separated by `__`.
pub const ENV_PREFIX: &str = "AAS_GATEWAY__";

/// Applies `AAS_GATEWAY__…` overrides (from `vars`, e.g. `std::env::vars_os()`) to the tree.
///
/// `AAS_GATEWAY__MQTT__HOST` sets `mqtt.host`, `AAS_GATEWAY__MQTT__TLS__X` sets `mqtt.tls.x`,
/// and a numeric segment indexes an array: `AAS_GATEWAY__OPCUA__0__PASSWORD` sets the password
/// of the first `[[opcua]]` entry. The value stays text until the field asks for a type. An
/// index past the end of the array is an error (an override cannot add an entry: the entry's
/// other required keys would be missing); so is a path through a plain value. Unknown keys are
/// reported later, by the deserializer, which knows the structs' keys.
pub fn apply_env(
    root: &mut Node,
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, Result<String, ()>)> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            // Case-insensitive, as the `config` crate the loader used before matched it.
            k.get(..ENV_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .then(|| (k, v.into_string().map_err(|_| ())))
        })
        .collect();
    // Sorted, so that overlapping variables apply in the same order on every start.
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut errors = Vec::new();
    for (var, value) in vars {
        let result = value
            .map_err(|()| "the value is not valid UTF-8".to_string())
            .and_then(|value| set_from_env(root, &var, value));
        if let Err(e) = result {
            errors.push((var, e));
        }
    }
    errors
}

fn set_from_env(root: &mut Node, var: &str, value: String) -> Result<(), String> {
    let segs: Vec<Seg> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| match s.parse::<usize>() {
            Ok(i) if !s.is_empty() => Ok(Seg::Index(i)),
            _ if s.is_empty() => Err("empty name segment (`____`)".to_string()),
            _ => Ok(Seg::Key(s.to_ascii_lowercase())),
        })
        .collect::<Result<_, _>>()?;
    let origin = Origin::Env(var.to_string());
    let mut cur = root;
    let mut at = Path::default();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let next_is_index = matches!(segs.get(i + 1), Some(Seg::Index(_)));
        cur = match (&mut cur.kind, seg) {
            (Kind::Table(entries), Seg::Key(k)) => {
                let pos = match entries.iter().position(|(name, _)| name == k) {
                    Some(pos) => pos,
                    None if next_is_index => {
                        let n = match segs.get(i + 1) {
                            Some(Seg::Index(n)) => *n,
                            _ => 0,
                        };
                        return Err(format!(
                            "{}[{n}]: index past the end: the file has no `{k}` entry \
                             (an override sets keys of entries the file has)",
                            at.child(seg.clone())
                        ));
                    }
                    None => {
                        entries.push((k.clone(), Node::table(origin.clone())));
                        entries.len() - 1
                    }
                };
                &mut entries[pos].1
            }
            (Kind::Array(items), Seg::Index(n)) => {
                let len = items.len();
                match items.get_mut(*n) {
                    Some(node) => node,
                    None => {
                        return Err(format!(
                        "{at}[{n}]: index past the end: the file has {len} entr{} (indexes from 0)",
                        if len == 1 { "y" } else { "ies" }
                    ))
                    }
                }
            }
            (Kind::Array(_), Seg::Key(k)) => {
                return Err(format!(
                    "{at} is a list: name an entry by its index, e.g. {}{}__0__{}",
                    ENV_PREFIX,
                    path_to_env(&at),
                    k.to_ascii_uppercase()
                ))
            }
            (_, Seg::Index(n)) => {
                return Err(format!("{at} is not a list, so [{n}] names nothing"))
            }
            (_, Seg::Key(_)) => {
                return Err(format!("{at} is a single value, not a section with keys"))
            }
        };
        at = at.child(seg.clone());
        if last {
            *cur = Node {
                kind: Kind::Env(value),
                origin,
            };
            return Ok(());
        }
    }
    Err("no key after the prefix".into())
}

/// `opcua[0].password` → `OPCUA__0__PASSWORD`.
pub fn path_to_env(path: &Path) -> String {
    path.0
        .iter()
        .map(|s| match s {
            Seg::Key(k) => k.to_ascii_uppercase(),
            Seg::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join("__")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn lines_and_paths() {
        let text = "[mqtt]\nhost = \"h\"\n\n[[opcua]]\nname = \"a\"\n[[opcua]]\nname = \"b\"\n";
        let root = parse_toml(text).unwrap();
        let at = |p: &str| root.origin_of(&Path::parse(p).unwrap());
        assert_eq!(at("mqtt.host"), Origin::Line(2));
        assert_eq!(at("opcua[1].name"), Origin::Line(7));
        assert_eq!(at("opcua[1].missing"), Origin::Line(6));
        assert_eq!(at("mqtt"), Origin::Line(1));
        assert_eq!(
            Path::parse("opcua[1].name").unwrap().to_string(),
            "opcua[1].name"
        );
        assert!(Path::parse("/tmp/x.toml").is_none());
    }

    #[test]
    fn syntax_errors_are_all_reported_with_lines() {
        let errors = parse_toml("a = \nb = 1\nc = [\n").unwrap_err();
        assert!(errors.len() >= 2, "{errors:?}");
        let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
        assert!(
            lines.contains(&Some(1)) && lines.contains(&Some(3)),
            "{errors:?}"
        );
    }

    #[test]
    fn env_overrides_index_arrays_and_create_sections() {
        let mut root = parse_toml("[[opcua]]\nname = \"a\"\n").unwrap();
        let errors = apply_env(
            &mut root,
            env(&[
                ("AAS_GATEWAY__OPCUA__0__PASSWORD", "12345"),
                ("AAS_GATEWAY__MQTT__TLS__CA", "x"),
                ("AAS_GATEWAY__OPCUA__1__PASSWORD", "x"),
                ("AAS_GATEWAY__MAPPING__0__NODE_ID", "x"),
                ("AAS_GATEWAY__OPCUA__NAME", "x"),
                ("OTHER", "x"),
            ]),
        );
        let pw = root
            .get(&Path::parse("opcua[0].password").unwrap())
            .unwrap();
        assert!(matches!(&pw.kind, Kind::Env(v) if v == "12345"));
        assert_eq!(
            pw.origin,
            Origin::Env("AAS_GATEWAY__OPCUA__0__PASSWORD".into())
        );
        assert!(root.get(&Path::parse("mqtt.tls.ca").unwrap()).is_some());
        let vars: Vec<_> = errors.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            vars,
            [
                "AAS_GATEWAY__MAPPING__0__NODE_ID",
                "AAS_GATEWAY__OPCUA__1__PASSWORD",
                "AAS_GATEWAY__OPCUA__NAME"
            ]
        );
        assert!(errors[1].1.contains("past the end"), "{errors:?}");
        assert!(
            errors[2].1.contains("AAS_GATEWAY__OPCUA__0__NAME"),
            "{errors:?}"
        );
    }
}
