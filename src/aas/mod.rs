//! The in-memory AAS environment: shells and submodels loaded from JSON, live values applied.
//!
//! The environment is kept in the official JSON form (`serde_json::Value`) so that everything a
//! template contains is served back unchanged, including parts of the metamodel the gateway does
//! not interpret. Mapped elements are located once at start ([`AasStore::locate`]) and updated
//! through that precomputed location, so the hot path never searches by name.

pub mod xs;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::model::{SubmodelUpdate, TypedValue};
pub use xs::XsType;

/// Loaded shells and submodels.
#[derive(Debug, Default)]
pub struct Environment {
    pub shells: Vec<Value>,
    pub submodels: Vec<Value>,
    pub concept_descriptions: Vec<Value>,
    submodel_index: HashMap<String, usize>,
}

/// A step from a parent element to a child: the child's position in the parent's child array.
type Steps = Vec<usize>;

/// Where a mapped element lives, resolved once.
#[derive(Debug, Clone)]
pub struct ElementLocation {
    pub submodel: usize,
    steps: Steps,
    /// What the element is: a Property, a SubmodelElementList of Properties, or a MultiLanguageProperty.
    pub kind: ElementKind,
    pub value_type: XsType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementKind {
    Property,
    PropertyList,
    MultiLanguageProperty,
}

impl Environment {
    /// Loads and merges AAS JSON environment files; identifiers must be unique across files.
    pub fn load_files(files: &[impl AsRef<Path>]) -> anyhow::Result<Environment> {
        let mut env = Environment::default();
        for file in files {
            let file = file.as_ref();
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let json: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not valid JSON: {e}", file.display()))?;
            env.merge(json)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        }
        Ok(env)
    }

    /// Adds the shells, submodels and concept descriptions of one environment document.
    pub fn merge(&mut self, doc: Value) -> Result<(), String> {
        let Value::Object(mut doc) = doc else {
            return Err("an AAS environment must be a JSON object".into());
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
        self.submodels.extend(submodels);
        self.concept_descriptions.extend(cds);
        Ok(())
    }

    pub fn submodel(&self, id: &str) -> Option<&Value> {
        self.submodel_index.get(id).map(|&i| &self.submodels[i])
    }

    pub fn shell(&self, id: &str) -> Option<&Value> {
        self.shells.iter().find(|s| id_of(s) == Some(id))
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
        let mut index = HashMap::new();
        for (sm, submodel) in self.submodels.iter().enumerate() {
            let children = submodel.get("submodelElements").and_then(Value::as_array);
            for (i, child) in children.into_iter().flatten().enumerate() {
                if let Some(id_short) = child.get("idShort").and_then(Value::as_str) {
                    // The first of duplicate idShorts wins, as in the linear search.
                    index.entry((sm, id_short.to_string())).or_insert(i);
                }
            }
        }
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
            .and_then(|ix| ix.0.get(&(sm_index, path.to_string())))
            .and_then(|&i| Some((vec![i], submodel.get("submodelElements")?.get(i)?)));
        let (steps, element) = match indexed {
            Some(found) => found,
            None => find_element(submodel, path)?,
        };
        let model_type = element
            .get("modelType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let (kind, type_key) = match model_type {
            "Property" => (ElementKind::Property, "valueType"),
            "SubmodelElementList" => {
                let item_type = element.get("typeValueListElement").and_then(Value::as_str);
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
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{path:?} has no {type_key}"))?
                .parse::<XsType>()
                .map_err(|e| format!("{path:?}: {e}"))?
        };
        Ok(ElementLocation {
            submodel: sm_index,
            steps,
            kind,
            value_type,
        })
    }

    /// Writes a live value into the element at `loc`.
    pub fn apply(&mut self, loc: &ElementLocation, update: &SubmodelUpdate) {
        let mut element = &mut self.submodels[loc.submodel];
        let mut children_key = "submodelElements";
        for &step in &loc.steps {
            element = &mut element[children_key][step];
            children_key = "value";
        }
        match (loc.kind, &update.value) {
            (ElementKind::PropertyList, TypedValue::List(items)) => {
                let template = element["value"]
                    .get(0)
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"modelType": "Property", "valueType": loc.value_type.as_str()}));
                let children = element["value"].as_array().map(Vec::len).unwrap_or(0);
                if children != items.len() {
                    element["value"] = Value::Array(vec![template; items.len()]);
                }
                for (child, item) in element["value"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                    .zip(items)
                {
                    child["value"] = Value::String(loc.value_type.lexical(item));
                }
            }
            (ElementKind::MultiLanguageProperty, v) => {
                element["value"] =
                    serde_json::json!([{"language": "en", "text": loc.value_type.lexical(v)}]);
            }
            (_, v) => element["value"] = Value::String(loc.value_type.lexical(v)),
        }
    }
}

/// See [`Environment::top_level_index`].
#[derive(Debug, Default)]
pub struct TopLevelIndex(HashMap<(usize, String), usize>);

/// The `id` of a shell or submodel.
pub fn id_of(v: &Value) -> Option<&str> {
    v.get("id").and_then(Value::as_str)
}

/// One segment of an idShortPath.
#[derive(Debug, PartialEq)]
pub enum PathSegment<'a> {
    IdShort(&'a str),
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
pub fn find_element<'v>(submodel: &'v Value, path: &str) -> Result<(Steps, &'v Value), String> {
    let segments = parse_id_short_path(path)?;
    let mut steps = Vec::with_capacity(segments.len());
    let mut children = submodel
        .get("submodelElements")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut current: Option<&Value> = None;
    for seg in &segments {
        if let Some(el) = current {
            children = el
                .get("value")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .ok_or_else(|| format!("{path:?}: {} has no child elements", describe(el)))?;
        }
        let (i, child) = match seg {
            PathSegment::IdShort(name) => children
                .iter()
                .enumerate()
                .find(|(_, c)| c.get("idShort").and_then(Value::as_str) == Some(name))
                .ok_or_else(|| format!("{path:?}: no element {name:?} here"))?,
            PathSegment::Index(n) => children
                .get(*n)
                .map(|c| (*n, c))
                .ok_or_else(|| format!("{path:?}: index {n} is out of range"))?,
        };
        steps.push(i);
        current = Some(child);
    }
    current
        .map(|el| (steps, el))
        .ok_or_else(|| format!("{path:?}: empty path"))
}

fn describe(el: &Value) -> String {
    format!(
        "{} {}",
        el.get("modelType")
            .and_then(Value::as_str)
            .unwrap_or("element"),
        el.get("idShort").and_then(Value::as_str).unwrap_or("")
    )
}

/// The Part 2 "ValueOnly" serialisation of an element.
pub fn value_only(el: &Value) -> Value {
    let model_type = el.get("modelType").and_then(Value::as_str).unwrap_or("");
    match model_type {
        "Property" => {
            let lexical = el.get("value").and_then(Value::as_str);
            let xs = el
                .get("valueType")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<XsType>().ok());
            match (lexical, xs) {
                (Some(s), Some(t)) => t
                    .parse_lexical(s)
                    .map(|v| t.json(&v))
                    .unwrap_or_else(|_| Value::String(s.into())),
                (Some(s), None) => Value::String(s.into()),
                (None, _) => Value::Null,
            }
        }
        "MultiLanguageProperty" => {
            let langs = el.get("value").and_then(Value::as_array);
            Value::Array(
                langs
                    .into_iter()
                    .flatten()
                    .filter_map(|ls| {
                        let lang = ls.get("language")?.as_str()?;
                        let mut m = serde_json::Map::new();
                        m.insert(lang.into(), ls.get("text")?.clone());
                        Some(Value::Object(m))
                    })
                    .collect(),
            )
        }
        "SubmodelElementCollection" => {
            let mut m = serde_json::Map::new();
            for child in el
                .get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = child.get("idShort").and_then(Value::as_str) {
                    m.insert(name.into(), value_only(child));
                }
            }
            Value::Object(m)
        }
        "SubmodelElementList" => Value::Array(
            el.get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(value_only)
                .collect(),
        ),
        "Range" => serde_json::json!({"min": el.get("min"), "max": el.get("max")}),
        "ReferenceElement" | "File" | "Blob" => el.get("value").cloned().unwrap_or(Value::Null),
        _ => el.get("value").cloned().unwrap_or(Value::Null),
    }
}

/// ValueOnly of a whole submodel: `{idShort: value, ...}` over its top-level elements.
pub fn submodel_value_only(sm: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for child in sm
        .get("submodelElements")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(name) = child.get("idShort").and_then(Value::as_str) {
            m.insert(name.into(), value_only(child));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> Environment {
        let mut env = Environment::default();
        env.merge(json!({
            "assetAdministrationShells": [{"id": "urn:aas:1", "idShort": "M1", "modelType": "AssetAdministrationShell",
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
        let v = submodel_value_only(env.submodel("urn:sm:1").unwrap());
        assert_eq!(v, json!({"Speed": 0.0, "Axes": {"X": null}, "Pos": [0.0]}));
    }
}
