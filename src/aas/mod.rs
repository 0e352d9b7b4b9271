//! The in-memory AAS environment: shells and submodels loaded from JSON, live values applied.
//!
//! The environment is kept in the official JSON form so that everything a template contains is
//! served back unchanged, including parts of the metamodel the gateway does not interpret:
//! shells and concept descriptions (few) as `serde_json::Value`, submodels (nearly all elements)
//! as the compact [`tree::Node`], materialised as `Value` only for what a request serves. Mapped elements are located once at start ([`AasStore::locate`]) and updated
//! through that precomputed location, so the hot path never searches by name.
//!
//! Every document passes the typed metamodel in [`model`] on its way in, so what is stored is
//! known to be well-formed AAS v3; [`view`] computes the API's serialisations from the store and
//! [`aasx`] packages an environment as an AASX file.

#![warn(missing_docs)]

pub mod aasx;
pub mod aid;
pub mod live;
pub mod model;
pub mod tree;
pub mod view;
/// The `xs:*` types now live in the leaf module [`crate::core::xs`].
pub use crate::core::xs;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::core::TypedValue;
pub use tree::{JsonRead, Node};
pub use xs::XsType;

/// Encodes an identifier the way the AAS Part 2 API puts it into a path and the MQTT payload
/// refers to it (base64url without padding).
pub fn encode_id(id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// Loaded shells and submodels, with live values applied.
#[derive(Debug, Default)]
pub struct Environment {
    /// Asset Administration Shells, in file order.
    pub shells: Vec<Value>,
    /// Submodels, in file order (indexed by id for lookups), as compact trees: they hold
    /// nearly all of the elements (see [`tree`]).
    pub submodels: Vec<Node>,
    /// Concept descriptions, served by `/serialization` and used for default units.
    pub concept_descriptions: Vec<Value>,
    submodel_index: HashMap<String, usize>,
}

/// The child positions walked from a submodel down to an element (see [`find_element`]).
type ChildPositions = Vec<usize>;

/// Where a mapped element lives, resolved once.
///
/// Every mapped element has one in its route and one in the live store, so it is kept small
/// (24 bytes, no heap allocation for elements at most three levels deep): a `Vec<usize>` of
/// steps cost 24 bytes plus a 32-byte heap chunk per copy, about 14 MB at 100k elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementLocation {
    /// Position of the submodel in [`Environment::submodels`].
    submodel: u32,
    /// What the element is: a Property, a SubmodelElementList of Properties, or a MultiLanguageProperty.
    pub kind: ElementKind,
    /// The `xs:*` type values are converted to (lists: `valueTypeListElement`; MLP: string).
    pub value_type: XsType,
    steps: Steps,
}

impl ElementLocation {
    /// Position of the submodel in [`Environment::submodels`].
    pub fn submodel(&self) -> usize {
        self.submodel as usize
    }

    /// The element's position in its parent's child array, for each level from the submodel
    /// down (`submodelElements`, then `value` or `statements`).
    pub fn steps(&self) -> &[u32] {
        self.steps.as_slice()
    }
}

/// Child positions from a submodel to an element: inline up to [`Steps::INLINE`] levels (a
/// top-level element, or one or two collections down: nearly every mapped element), boxed
/// beyond. 16 bytes either way.
#[derive(Clone, PartialEq, Eq)]
enum Steps {
    /// `at[..len]`.
    Inline { len: u8, at: [u32; Steps::INLINE] },
    /// Deeper elements. Boxed twice so that the enum stays 16 bytes (a `Box<[u32]>` alone is
    /// 16 bytes, which would make every location 8 bytes larger for a rare case).
    Deep(Box<Box<[u32]>>),
}

impl Steps {
    /// Levels held without a heap allocation.
    const INLINE: usize = 3;

    /// `None` when a position exceeds `u32` (an array of more than four billion elements:
    /// not something that fits in memory).
    fn new(positions: &[usize]) -> Option<Steps> {
        let narrow = |&p: &usize| u32::try_from(p).ok();
        if positions.len() <= Steps::INLINE {
            let mut at = [0; Steps::INLINE];
            for (slot, p) in at.iter_mut().zip(positions) {
                *slot = narrow(p)?;
            }
            Some(Steps::Inline {
                len: positions.len() as u8,
                at,
            })
        } else {
            let deep: Box<[u32]> = positions.iter().map(narrow).collect::<Option<_>>()?;
            Some(Steps::Deep(Box::new(deep)))
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Steps::Inline { len, at } => &at[..*len as usize],
            Steps::Deep(steps) => steps,
        }
    }
}

impl std::fmt::Debug for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

/// The element kinds a live value can be written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementKind {
    /// A Property: one value.
    Property,
    /// A SubmodelElementList of Properties: an OPC UA array, one item per element.
    PropertyList,
    /// A MultiLanguageProperty: text (e.g. a LocalizedText), stored as language `en`.
    MultiLanguageProperty,
}

impl Environment {
    /// Loads and merges AAS JSON environment files; identifiers must be unique across files.
    pub fn load_files(files: &[impl AsRef<Path>]) -> anyhow::Result<Environment> {
        let mut env = Environment::default();
        for file in files {
            let file = file.as_ref();
            let json = read_environment_file(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            env.merge(json)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        }
        Ok(env)
    }

    /// Adds the shells, submodels and concept descriptions of one environment document.
    ///
    /// The document is first parsed through the typed metamodel ([`model`]) and checked
    /// ([`model::validate`]); every problem is reported with its JSON path, one per line.
    pub fn merge(&mut self, doc: Value) -> Result<(), String> {
        if !doc.is_object() {
            return Err("an AAS environment must be a JSON object".into());
        }
        let typed = model::parse_environment(&doc)?;
        let problems = model::validate(&typed);
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        let Value::Object(mut doc) = doc else {
            unreachable!("checked above")
        };
        let mut take = |key: &str| match doc.remove(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(format!("{key} must be an array")),
        };
        let shells = take("assetAdministrationShells")?;
        let submodels = take("submodels")?;
        let cds = take("conceptDescriptions")?;
        for (i, shell) in shells.iter().enumerate() {
            let id = id_of(shell).ok_or(format!("assetAdministrationShells[{i}] has no id"))?;
            if self.shells.iter().any(|s| id_of(s) == Some(id)) {
                return Err(format!("shell {id:?} is defined twice"));
            }
        }
        for (i, sm) in submodels.iter().enumerate() {
            let id = id_of(sm).ok_or(format!("submodels[{i}] has no id"))?;
            if self.submodel_index.contains_key(id) {
                return Err(format!("submodel {id:?} is defined twice"));
            }
            self.submodel_index
                .insert(id.to_string(), self.submodels.len() + i);
        }
        self.shells.extend(shells);
        self.submodels.extend(submodels.into_iter().map(Node::from));
        self.concept_descriptions.extend(cds);
        Ok(())
    }

    /// The whole environment as one AAS v3 JSON document (empty parts left out, since the
    /// metamodel forbids empty lists).
    pub fn to_json(&self) -> Value {
        let mut doc = serde_json::Map::new();
        let submodels = self.submodels.iter().map(Node::to_value).collect();
        for (key, items) in [
            ("assetAdministrationShells", self.shells.clone()),
            ("submodels", submodels),
            ("conceptDescriptions", self.concept_descriptions.clone()),
        ] {
            if !items.is_empty() {
                doc.insert(key.into(), Value::Array(items));
            }
        }
        Value::Object(doc)
    }

    /// The submodel with identifier `id`.
    pub fn submodel(&self, id: &str) -> Option<&Node> {
        self.submodel_index.get(id).map(|&i| &self.submodels[i])
    }

    /// The IEC 61360 `unit` of the ConceptDescription with identifier `id`, if any.
    pub fn concept_description_unit(&self, id: &str) -> Option<String> {
        self.concept_descriptions
            .iter()
            .find(|cd| id_of(*cd) == Some(id))?
            .get("embeddedDataSpecifications")?
            .as_array()?
            .iter()
            .find_map(|eds| eds.pointer("/dataSpecificationContent/unit")?.as_str())
            .map(str::to_string)
    }

    /// Gives the element at `loc` the semanticId `id` (an ExternalReference with one
    /// GlobalReference key), replacing the template's.
    pub fn set_semantic_id(&mut self, loc: &ElementLocation, id: &str) {
        let element = self.element_mut(loc);
        let reference = serde_json::json!({
            "type": "ExternalReference",
            "keys": [{"type": "GlobalReference", "value": id}]
        });
        element.insert("semanticId", Node::from(reference));
    }

    /// The element at `loc` (which must come from this environment).
    pub fn element(&self, loc: &ElementLocation) -> &Node {
        let mut element = &self.submodels[loc.submodel()];
        for &step in loc.steps() {
            let key = view::children_key(element).unwrap_or("value");
            element = element
                .get(key)
                .and_then(|children| children.as_array()?.get(step as usize))
                .expect("a location comes from this environment");
        }
        element
    }

    fn element_mut(&mut self, loc: &ElementLocation) -> &mut Node {
        let mut element = &mut self.submodels[loc.submodel()];
        for &step in loc.steps() {
            // Same walk as find_chain: `submodelElements`, then `value` or `statements`.
            let key = view::children_key(element).unwrap_or("value");
            element = element
                .get_mut(key)
                .and_then(|children| children.as_array_mut()?.get_mut(step as usize))
                .expect("a location comes from this environment");
        }
        element
    }

    /// The shell with identifier `id`.
    pub fn shell(&self, id: &str) -> Option<&Value> {
        self.shells.iter().find(|s| id_of(*s) == Some(id))
    }

    /// idShort of the first shell that references submodel `id`.
    pub fn shell_of_submodel(&self, id: &str) -> Option<&str> {
        self.shells.iter().find_map(|shell| {
            let refs = shell.get("submodels")?.as_array()?;
            let referenced = refs.iter().any(|r| {
                r.get("keys")
                    .and_then(Value::as_array)
                    .and_then(|keys| keys.last())
                    .and_then(|k| k.get("value"))
                    .and_then(Value::as_str)
                    == Some(id)
            });
            if referenced {
                shell.get("idShort").and_then(Value::as_str)
            } else {
                None
            }
        })
    }

    /// Resolves `path` (e.g. `Axes.X`, `Positions[1]`) in submodel `submodel_id` to a location
    /// the pipeline can update.
    pub fn locate(&self, submodel_id: &str, path: &str) -> Result<ElementLocation, String> {
        self.locate_indexed(None, submodel_id, path)
    }

    /// Positions of every submodel's top-level elements by idShort. Resolving many mapping rules
    /// with it is linear instead of quadratic: with 100,000 rules onto one submodel the linear
    /// search per rule kept the gateway busy for minutes at start.
    pub fn top_level_index(&self) -> TopLevelIndex {
        fn top_level(sm: &Node) -> &[Node] {
            let children = sm.get("submodelElements").and_then(Node::as_array);
            children.unwrap_or_default()
        }
        let count = self.submodels.iter().map(|sm| top_level(sm).len()).sum();
        let mut index = Vec::with_capacity(count);
        for (sm, submodel) in self.submodels.iter().enumerate() {
            for (i, child) in top_level(submodel).iter().enumerate() {
                let id_short = child.get("idShort").and_then(Node::as_str);
                // (An element beyond u32 is left to the linear search.)
                if let (Some(id_short), Ok(sm), Ok(i)) =
                    (id_short, u32::try_from(sm), u32::try_from(i))
                {
                    index.push((TopLevelIndex::hash(id_short), sm, i));
                }
            }
        }
        // Sorted by position too: the first of duplicate idShorts wins, as in the linear search.
        index.sort_unstable();
        TopLevelIndex(index)
    }

    /// [`Self::locate`], finding top-level elements through `index` when given (it must come
    /// from this environment, unchanged since).
    pub fn locate_indexed(
        &self,
        index: Option<&TopLevelIndex>,
        submodel_id: &str,
        path: &str,
    ) -> Result<ElementLocation, String> {
        let &sm_index = self.submodel_index.get(submodel_id).ok_or_else(|| {
            format!("no submodel with id {submodel_id:?} in the AAS environments")
        })?;
        let submodel = &self.submodels[sm_index];
        let indexed = index
            .and_then(|ix| ix.find(submodel, sm_index, path))
            .and_then(|i| {
                Some((
                    vec![i],
                    submodel.get("submodelElements")?.as_array()?.get(i)?,
                ))
            });
        let (steps, element) = match indexed {
            Some(found) => found,
            None => find_element(submodel, path)?,
        };
        let model_type = element
            .get("modelType")
            .and_then(Node::as_str)
            .unwrap_or("");
        let (kind, type_key) = match model_type {
            "Property" => (ElementKind::Property, "valueType"),
            "SubmodelElementList" => {
                let item_type = element.get("typeValueListElement").and_then(Node::as_str);
                if item_type != Some("Property") {
                    return Err(format!(
                        "{path:?} is a SubmodelElementList of {item_type:?}; only lists of Property can take values"
                    ));
                }
                (ElementKind::PropertyList, "valueTypeListElement")
            }
            "MultiLanguageProperty" => (ElementKind::MultiLanguageProperty, ""),
            other => {
                return Err(format!(
                    "{path:?} is a {other}; values can be mapped to Property, SubmodelElementList or MultiLanguageProperty"
                ))
            }
        };
        let value_type = if kind == ElementKind::MultiLanguageProperty {
            XsType::String
        } else {
            element
                .get(type_key)
                .and_then(Node::as_str)
                .ok_or_else(|| format!("{path:?} has no {type_key}"))?
                .parse::<XsType>()
                .map_err(|e| format!("{path:?}: {e}"))?
        };
        // Positions beyond u32 would need an array of more than four billion elements.
        let too_big = || format!("{path:?}: more elements than a location can address");
        Ok(ElementLocation {
            submodel: u32::try_from(sm_index).map_err(|_| too_big())?,
            kind,
            value_type,
            steps: Steps::new(&steps).ok_or_else(too_big)?,
        })
    }

    /// Writes a live value into the element at `loc`: in place, except that the first value
    /// of an element without one adds the `value` member (its object is rebuilt once).
    pub fn apply(&mut self, loc: &ElementLocation, value: &TypedValue) {
        let element = self.element_mut(loc);
        match (loc.kind, value) {
            // No value (a Bad status without one): the element shows none rather than a stale
            // value that would look current (an empty list would break AAS constraints).
            (_, TypedValue::Null) => element.remove("value"),
            (ElementKind::PropertyList, TypedValue::List(items)) => {
                let children = element.get("value").and_then(Node::as_array).unwrap_or(&[]);
                if children.len() != items.len() {
                    let template = children.first().cloned().unwrap_or_else(|| {
                        Node::from(serde_json::json!({"modelType": "Property", "valueType": loc.value_type.as_str()}))
                    });
                    element.insert("value", Node::Array(vec![template; items.len()].into()));
                }
                let children = element.get_mut("value").and_then(Node::as_array_mut);
                for (child, item) in children.into_iter().flatten().zip(items) {
                    child.insert("value", Node::text(&loc.value_type.lexical(item)));
                }
            }
            (ElementKind::MultiLanguageProperty, v) => {
                let text =
                    serde_json::json!([{"language": "en", "text": loc.value_type.lexical(v)}]);
                element.insert("value", Node::from(text));
            }
            (_, v) => element.insert("value", Node::text(&loc.value_type.lexical(v))),
        }
    }
}

/// Reads one environment document: AAS JSON, or an AASX package (`.aasx`: the JSON part the
/// package's `aas-spec` relationship names, as [`aasx::write_aasx`] writes it; other tools'
/// packages work when their spec part is JSON).
pub fn read_environment_file(file: &Path) -> Result<Value, String> {
    let is_aasx = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("aasx"));
    if is_aasx {
        return aasx::read_aasx(file);
    }
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))
}

/// See [`Environment::top_level_index`]: (hash of the idShort, submodel, position) of every
/// top-level element, sorted.
///
/// 16 bytes an element and no copy of its idShort: a `HashMap` keyed by `(usize, String)` cost
/// about 10 MB at 100k elements, and although it lives only during start, glibc keeps freed
/// heap in the process, so it showed in the gateway's resident memory for good.
#[derive(Debug, Default)]
pub struct TopLevelIndex(Vec<(u64, u32, u32)>);

impl TopLevelIndex {
    fn hash(id_short: &str) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        id_short.hash(&mut hasher);
        hasher.finish()
    }

    /// Position of the first top-level element of `submodel` (position `sm`) whose idShort is
    /// `path`. The hash only narrows the search: each candidate's idShort is compared.
    fn find(&self, submodel: &Node, sm: usize, path: &str) -> Option<usize> {
        let key = (TopLevelIndex::hash(path), u32::try_from(sm).ok()?);
        let children = submodel.get("submodelElements")?.as_array()?;
        let start = self.0.partition_point(|&(h, s, _)| (h, s) < key);
        self.0[start..]
            .iter()
            .take_while(|&&(h, s, _)| (h, s) == key)
            .map(|&(_, _, i)| i as usize)
            .find(|&i| {
                let child = children.get(i).and_then(|c| c.get("idShort"));
                child.and_then(Node::as_str) == Some(path)
            })
    }
}

/// The `id` of a shell or submodel.
pub fn id_of<T: JsonRead>(v: &T) -> Option<&str> {
    v.get("id").and_then(T::as_str)
}

/// One segment of an idShortPath.
#[derive(Debug, PartialEq)]
pub enum PathSegment<'a> {
    /// `Name`: a child by idShort.
    IdShort(&'a str),
    /// `[n]`: an item of a SubmodelElementList by position.
    Index(usize),
}

/// Splits `A.B[2].C` into `[IdShort(A), IdShort(B), Index(2), IdShort(C)]`.
pub fn parse_id_short_path(path: &str) -> Result<Vec<PathSegment<'_>>, String> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() && out.is_empty() {
            return Err(format!("{path:?}: empty idShort"));
        }
        if !name.is_empty() {
            out.push(PathSegment::IdShort(name));
        } else if rest.is_empty() {
            return Err(format!("{path:?}: empty idShort"));
        }
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .filter(|_| rest.starts_with('['))
                .ok_or_else(|| format!("{path:?}: malformed index"))?;
            let n = rest[1..close]
                .parse::<usize>()
                .map_err(|_| format!("{path:?}: {:?} is not a list index", &rest[1..close]))?;
            out.push(PathSegment::Index(n));
            rest = &rest[close + 1..];
        }
    }
    Ok(out)
}

/// Finds an element by idShortPath; returns the child positions walked and the element.
pub fn find_element<'v, T: JsonRead>(
    submodel: &'v T,
    path: &str,
) -> Result<(ChildPositions, &'v T), String> {
    let chain = find_chain(submodel, path)?;
    let steps = chain.iter().map(|(i, _)| *i).collect();
    let (_, el) = *chain
        .last()
        .ok_or_else(|| format!("{path:?}: empty path"))?;
    Ok((steps, el))
}

/// Walks an idShortPath; returns every element passed (position in its parent, element),
/// outermost first, the target last.
pub fn find_chain<'v, T: JsonRead>(
    submodel: &'v T,
    path: &str,
) -> Result<Vec<(usize, &'v T)>, String> {
    let segments = parse_id_short_path(path)?;
    let mut chain = Vec::with_capacity(segments.len());
    let mut children = view::children(submodel);
    let mut current: Option<&T> = None;
    for seg in &segments {
        if let Some(el) = current {
            if view::children_key(el).is_none() {
                return Err(format!("{path:?}: {} has no child elements", describe(el)));
            }
            children = view::children(el);
        }
        let is_list = current
            .and_then(|el| el.get("modelType"))
            .and_then(T::as_str)
            == Some("SubmodelElementList");
        let (i, child) = match seg {
            PathSegment::IdShort(name) => children
                .iter()
                .enumerate()
                .find(|(_, c)| c.get("idShort").and_then(T::as_str) == Some(name))
                .ok_or_else(|| format!("{path:?}: no element {name:?} here"))?,
            // Indices address list items only; a collection's children are found by name.
            PathSegment::Index(n) if is_list => children
                .get(*n)
                .map(|c| (*n, c))
                .ok_or_else(|| format!("{path:?}: index {n} is out of range"))?,
            PathSegment::Index(n) => {
                return Err(format!(
                    "{path:?}: [{n}] used on something that is not a SubmodelElementList"
                ))
            }
        };
        chain.push((i, child));
        current = Some(child);
    }
    if chain.is_empty() {
        return Err(format!("{path:?}: empty path"));
    }
    Ok(chain)
}

fn describe<T: JsonRead>(el: &T) -> String {
    format!(
        "{} {}",
        el.get("modelType").and_then(T::as_str).unwrap_or("element"),
        el.get("idShort").and_then(T::as_str).unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> Environment {
        let mut env = Environment::default();
        env.merge(json!({
            "assetAdministrationShells": [{"id": "urn:aas:1", "idShort": "M1", "modelType": "AssetAdministrationShell",
                "assetInformation": {"assetKind": "Instance", "globalAssetId": "urn:asset:1"},
                "submodels": [{"type": "ModelReference", "keys": [{"type": "Submodel", "value": "urn:sm:1"}]}]}],
            "submodels": [{"id": "urn:sm:1", "idShort": "Op", "modelType": "Submodel", "submodelElements": [
                {"modelType": "Property", "idShort": "Speed", "valueType": "xs:double", "value": "0"},
                {"modelType": "SubmodelElementCollection", "idShort": "Axes", "value": [
                    {"modelType": "Property", "idShort": "X", "valueType": "xs:int"}]},
                {"modelType": "SubmodelElementList", "idShort": "Pos", "typeValueListElement": "Property",
                 "valueTypeListElement": "xs:double", "value": [
                    {"modelType": "Property", "valueType": "xs:double", "value": "0"}]}
            ]}]
        }))
        .unwrap();
        env
    }

    #[test]
    fn paths_parse_with_indices() {
        assert_eq!(
            parse_id_short_path("A.B[2].C").unwrap(),
            vec![
                PathSegment::IdShort("A"),
                PathSegment::IdShort("B"),
                PathSegment::Index(2),
                PathSegment::IdShort("C")
            ]
        );
        assert!(parse_id_short_path("A[x]").is_err());
        assert!(parse_id_short_path("").is_err());
    }

    #[test]
    fn locate_finds_nested_elements_and_types() {
        let env = env();
        assert_eq!(
            env.locate("urn:sm:1", "Axes.X").unwrap().value_type,
            XsType::Int
        );
        let list = env.locate("urn:sm:1", "Pos").unwrap();
        assert_eq!(list.kind, ElementKind::PropertyList);
        assert!(env
            .locate("urn:sm:1", "Axes.Y")
            .unwrap_err()
            .contains("no element \"Y\""));
        assert!(env
            .locate("urn:sm:2", "Speed")
            .unwrap_err()
            .contains("no submodel"));
        assert_eq!(env.shell_of_submodel("urn:sm:1"), Some("M1"));
    }

    #[test]
    fn entity_statements_are_on_the_path() {
        let mut env = Environment::default();
        env.merge(json!({"submodels": [{"id": "urn:sm:e", "modelType": "Submodel", "submodelElements": [
            {"modelType": "Entity", "idShort": "Motor", "entityType": "CoManagedEntity", "statements": [
                {"modelType": "Property", "idShort": "Temp", "valueType": "xs:double"}]}]}]}))
        .unwrap();
        let loc = env.locate("urn:sm:e", "Motor.Temp").unwrap();
        env.apply(&loc, &TypedValue::Float(21.5));
        let (_, el) = find_element(env.submodel("urn:sm:e").unwrap(), "Motor.Temp").unwrap();
        assert_eq!(el.get("value").and_then(Node::as_str), Some("21.5"));
    }

    #[test]
    fn indexed_locate_equals_linear_locate() {
        let env = env();
        let index = env.top_level_index();
        for path in ["Speed", "Axes.X", "Pos", "Pos[0]", "Nope", "Axes"] {
            let linear = env.locate("urn:sm:1", path).map(|l| format!("{l:?}"));
            let indexed = env
                .locate_indexed(Some(&index), "urn:sm:1", path)
                .map(|l| format!("{l:?}"));
            assert_eq!(linear, indexed, "{path}");
        }
    }

    #[test]
    fn locations_are_small_and_keep_every_step() {
        // Route, live store: two copies per mapped element (see `ElementLocation`).
        assert!(std::mem::size_of::<ElementLocation>() <= 24);
        for depth in 1..=6usize {
            let positions: Vec<usize> = (0..depth).map(|d| d * 70_000 + 1).collect();
            let steps = Steps::new(&positions).unwrap();
            let want: Vec<u32> = positions.iter().map(|&p| p as u32).collect();
            assert_eq!(steps.as_slice(), want, "depth {depth}");
        }
        assert!(Steps::new(&[1, u32::MAX as usize + 1]).is_none());
    }

    #[test]
    fn the_index_finds_the_first_of_duplicate_id_shorts() {
        let mut env = Environment::default();
        // The typed model may refuse duplicates; the index must still agree with the linear
        // search on whatever the tree holds.
        env.submodels.push(Node::from(
            json!({"id": "urn:sm:d", "modelType": "Submodel", "submodelElements": [
            {"modelType": "Property", "idShort": "A", "valueType": "xs:int"},
            {"modelType": "Property", "idShort": "B", "valueType": "xs:int"},
            {"modelType": "Property", "idShort": "A", "valueType": "xs:string"}]}),
        ));
        env.submodel_index.insert("urn:sm:d".into(), 0);
        let index = env.top_level_index();
        for path in ["A", "B", "C"] {
            let linear = env.locate("urn:sm:d", path).map(|l| format!("{l:?}"));
            let indexed = env
                .locate_indexed(Some(&index), "urn:sm:d", path)
                .map(|l| format!("{l:?}"));
            assert_eq!(linear, indexed, "{path}");
        }
        assert_eq!(env.locate("urn:sm:d", "A").unwrap().value_type, XsType::Int);
    }

    #[test]
    fn the_tree_and_its_json_navigate_alike() {
        let env = env();
        let sm = env.submodel("urn:sm:1").unwrap();
        let json = sm.to_value();
        for path in [
            "Speed", "Axes.X", "Pos[0]", "Pos[1]", "Axes.Y", "Speed.X", "Axes[0]",
        ] {
            let tree = find_chain(sm, path).map(|chain| {
                chain
                    .iter()
                    .map(|(i, e)| (*i, e.to_value()))
                    .collect::<Vec<_>>()
            });
            let value = find_chain(&json, path).map(|chain| {
                chain
                    .iter()
                    .map(|(i, e)| (*i, (*e).clone()))
                    .collect::<Vec<_>>()
            });
            assert_eq!(tree, value, "{path}");
        }
    }

    #[test]
    fn values_are_written_into_the_tree() {
        let mut env = env();
        let value_at = |env: &Environment, path: &str| {
            let (_, el) = find_element(env.submodel("urn:sm:1").unwrap(), path).unwrap();
            el.get("value").map(Node::to_value)
        };
        let x = env.locate("urn:sm:1", "Axes.X").unwrap();
        assert_eq!(value_at(&env, "Axes.X"), None);
        env.apply(&x, &TypedValue::Int(3));
        assert_eq!(value_at(&env, "Axes.X"), Some(json!("3")));
        env.apply(&x, &TypedValue::Int(-40000000000));
        assert_eq!(value_at(&env, "Axes.X"), Some(json!("-40000000000")));
        env.apply(&x, &TypedValue::Null);
        assert_eq!(value_at(&env, "Axes.X"), None);
        let speed = env.locate("urn:sm:1", "Speed").unwrap();
        let long = TypedValue::Float(0.123_456_789_012_345_68);
        env.apply(&speed, &long);
        assert_eq!(value_at(&env, "Speed"), Some(json!("0.12345678901234568")));
        let pos = env.locate("urn:sm:1", "Pos").unwrap();
        env.apply(
            &pos,
            &TypedValue::List(vec![TypedValue::Float(1.5), TypedValue::Float(2.0)]),
        );
        assert_eq!(
            value_at(&env, "Pos"),
            Some(json!([
                {"modelType": "Property", "valueType": "xs:double", "value": "1.5"},
                {"modelType": "Property", "valueType": "xs:double", "value": "2.0"}]))
        );
        env.set_semantic_id(&speed, "urn:semantic:speed");
        let (_, el) = find_element(env.submodel("urn:sm:1").unwrap(), "Speed").unwrap();
        assert_eq!(
            el.pointer("/semanticId/keys/0/value")
                .and_then(Node::as_str),
            Some("urn:semantic:speed")
        );
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let mut e = env();
        let err = e
            .merge(json!({"submodels": [{"id": "urn:sm:1", "modelType": "Submodel"}]}))
            .unwrap_err();
        assert!(err.contains("defined twice"));
    }

    #[test]
    fn value_only_types_values() {
        let env = env();
        let sm = env.submodel("urn:sm:1").unwrap().to_value();
        let v = view::named_values(view::children(&sm), view::Extent::WithoutBlobValue);
        assert_eq!(v, json!({"Speed": 0.0, "Axes": {"X": null}, "Pos": [0.0]}));
    }
}
