//! The serialisations the Part 2 API offers of a submodel or element, computed from the stored
//! JSON: `level` (deep/core), `extent` (with/without Blob values), and the content modifiers
//! `$metadata`, `$value` (ValueOnly), `$reference` and `$path`.
//!
//! All functions work on the official JSON form; none changes the store. Navigation
//! ([`children`], [`element_reference`]) works on the stored [`super::Node`] tree as well, so an
//! element can be found without materialising its submodel; the serialisations take the
//! `Value` of what is served.

use serde_json::{json, Map, Value};

use super::{JsonRead, XsType};

/// `level`: how deep children are serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// Everything (the default).
    #[default]
    Deep,
    /// The object and its direct children only; grandchildren are left out.
    Core,
}

/// `extent`: whether Blob bytes are included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Extent {
    /// Include Blob values.
    WithBlobValue,
    /// Leave Blob values out (the Part 2 default).
    #[default]
    WithoutBlobValue,
}

fn model_type<T: JsonRead>(el: &T) -> &str {
    el.get("modelType").and_then(T::as_str).unwrap_or("")
}

/// The key under which a submodel or element keeps its child elements, if it can have any
/// (`submodelElements`, `value` of collections and lists, `statements` of entities, ...).
pub fn children_key<T: JsonRead>(el: &T) -> Option<&'static str> {
    match model_type(el) {
        "SubmodelElementCollection" | "SubmodelElementList" => Some("value"),
        "Entity" => Some("statements"),
        "AnnotatedRelationshipElement" => Some("annotations"),
        "Submodel" => Some("submodelElements"),
        _ => None,
    }
}

/// Child elements of a submodel or element (empty for leaves).
pub fn children<T: JsonRead>(el: &T) -> &[T] {
    children_key(el)
        .and_then(|k| el.get(k))
        .and_then(T::as_array)
        .unwrap_or(&[])
}

/// A copy of `el` (submodel or element) as `level` and `extent` ask for.
pub fn shaped(el: &Value, level: Level, extent: Extent) -> Value {
    shape(el.clone(), level, extent)
}

/// `el` (submodel or element) as `level` and `extent` ask for: [`shaped`] for a value that is
/// already a copy.
pub fn shape(mut out: Value, level: Level, extent: Extent) -> Value {
    // Core: the object's direct children stay, their own children go.
    let keep_depth = match level {
        Level::Deep => usize::MAX,
        Level::Core => 1,
    };
    shape_in_place(&mut out, keep_depth, extent);
    out
}

fn shape_in_place(el: &mut Value, keep_depth: usize, extent: Extent) {
    if extent == Extent::WithoutBlobValue && model_type(el) == "Blob" {
        if let Some(m) = el.as_object_mut() {
            m.remove("value");
        }
    }
    let Some(key) = children_key(el) else { return };
    if keep_depth == 0 {
        // An empty array would violate the metamodel (lists are non-empty when present).
        if let Some(m) = el.as_object_mut() {
            m.remove(key);
        }
        return;
    }
    if let Some(items) = el.get_mut(key).and_then(Value::as_array_mut) {
        for child in items {
            shape_in_place(child, keep_depth - 1, extent);
        }
    }
}

/// Element kinds that have no value (and hence no `$metadata`/`$value` form in Part 2).
fn has_no_value(el: &Value) -> bool {
    matches!(model_type(el), "Capability" | "Operation")
}

/// `$metadata` of a submodel: everything but its elements.
pub fn submodel_metadata(sm: &Value) -> Value {
    let mut out = sm.clone();
    if let Some(m) = out.as_object_mut() {
        m.remove("submodelElements");
    }
    out
}

/// `$metadata` of an element: everything but its value (children included).
pub fn element_metadata(el: &Value) -> Result<Value, String> {
    if has_no_value(el) {
        return Err(format!(
            "a {} has no value, so there is no $metadata form of it",
            model_type(el)
        ));
    }
    let value_keys: &[&str] = match model_type(el) {
        "Property" | "MultiLanguageProperty" => &["value", "valueId"],
        "Range" => &["min", "max"],
        "Entity" => &["statements", "globalAssetId", "specificAssetIds"],
        "RelationshipElement" => &["first", "second"],
        "AnnotatedRelationshipElement" => &["first", "second", "annotations"],
        "BasicEventElement" => &["observed"],
        _ => &["value"],
    };
    let mut out = el.clone();
    if let Some(m) = out.as_object_mut() {
        for k in value_keys {
            m.remove(*k);
        }
    }
    Ok(out)
}

/// `$reference` of a shell or submodel: a ModelReference with one key.
pub fn identifiable_reference(key_type: &str, id: &str) -> Value {
    json!({"type": "ModelReference", "keys": [{"type": key_type, "value": id}]})
}

/// `$reference` of the element reached by `chain` (the elements walked from the submodel,
/// outermost first) in submodel `sm_id`. Keys of list items carry the index.
pub fn element_reference<T: JsonRead>(sm_id: &str, chain: &[(usize, &T)]) -> Value {
    let mut keys = vec![json!({"type": "Submodel", "value": sm_id})];
    for (index, el) in chain {
        let value = el
            .get("idShort")
            .and_then(T::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| index.to_string());
        keys.push(json!({"type": model_type(*el), "value": value}));
    }
    json!({"type": "ModelReference", "keys": keys})
}

fn child_path(prefix: &str, parent: &Value, index: usize, child: &Value) -> String {
    if model_type(parent) == "SubmodelElementList" {
        format!("{prefix}[{index}]")
    } else {
        let id_short = child.get("idShort").and_then(Value::as_str).unwrap_or("");
        if prefix.is_empty() {
            id_short.to_string()
        } else {
            format!("{prefix}.{id_short}")
        }
    }
}

fn collect_paths(prefix: &str, el: &Value, depth_left: usize, out: &mut Vec<String>) {
    if depth_left == 0 {
        return;
    }
    for (i, child) in children(el).iter().enumerate() {
        let p = child_path(prefix, el, i, child);
        out.push(p.clone());
        collect_paths(&p, child, depth_left - 1, out);
    }
}

/// `$path` of a submodel: the idShortPaths of its elements (all, or the top level for `core`).
pub fn submodel_paths(sm: &Value, level: Level) -> Vec<String> {
    let mut out = Vec::new();
    let depth = if level == Level::Core { 1 } else { usize::MAX };
    collect_paths("", sm, depth, &mut out);
    out
}

/// `$path` of an element at `path`: the path itself and those of its children. Only elements
/// that can have children (collections, lists, entities) have this form.
pub fn element_paths(path: &str, el: &Value, level: Level) -> Result<Vec<String>, String> {
    if !matches!(
        model_type(el),
        "SubmodelElementCollection" | "SubmodelElementList" | "Entity"
    ) {
        return Err(format!(
            "a {} has no child elements, so there is no $path form of it",
            model_type(el)
        ));
    }
    let mut out = vec![path.to_string()];
    let depth = if level == Level::Core { 1 } else { usize::MAX };
    collect_paths(path, el, depth, &mut out);
    Ok(out)
}

/// The ValueOnly form of an element's value (without its idShort): a JSON number/boolean/string
/// for a Property, `[{"en": "text"}]` for a MultiLanguageProperty, an object of named values for
/// a collection, an array for a list, `{"min", "max"}` for a Range, ...
pub fn value_only(el: &Value, extent: Extent) -> Result<Value, String> {
    if has_no_value(el) {
        return Err(format!("a {} has no value", model_type(el)));
    }
    Ok(match model_type(el) {
        "Property" => typed_lexical(el, "value"),
        "Range" => {
            let mut m = Map::new();
            for k in ["min", "max"] {
                if el.get(k).is_some() {
                    m.insert(k.into(), typed_lexical(el, k));
                }
            }
            Value::Object(m)
        }
        "MultiLanguageProperty" => Value::Array(
            el.get("value")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|ls| {
                    let mut m = Map::new();
                    m.insert(
                        ls.get("language")?.as_str()?.into(),
                        ls.get("text")?.clone(),
                    );
                    Some(Value::Object(m))
                })
                .collect(),
        ),
        "SubmodelElementCollection" => named_values(children(el), extent),
        "SubmodelElementList" => Value::Array(
            children(el)
                .iter()
                .filter_map(|c| value_only(c, extent).ok())
                .collect(),
        ),
        "File" | "Blob" => {
            let mut m = Map::new();
            if let Some(ct) = el.get("contentType") {
                m.insert("contentType".into(), ct.clone());
            }
            let skip = model_type(el) == "Blob" && extent == Extent::WithoutBlobValue;
            if let (Some(v), false) = (el.get("value"), skip) {
                m.insert("value".into(), v.clone());
            }
            Value::Object(m)
        }
        "Entity" => {
            let mut m = Map::new();
            m.insert("statements".into(), named_values(children(el), extent));
            for k in ["entityType", "globalAssetId", "specificAssetIds"] {
                if let Some(v) = el.get(k) {
                    m.insert(k.into(), v.clone());
                }
            }
            Value::Object(m)
        }
        "RelationshipElement" | "AnnotatedRelationshipElement" => {
            let mut m = Map::new();
            for k in ["first", "second"] {
                if let Some(v) = el.get(k) {
                    m.insert(k.into(), v.clone());
                }
            }
            if model_type(el) == "AnnotatedRelationshipElement" {
                m.insert("annotations".into(), named_values(children(el), extent));
            }
            Value::Object(m)
        }
        _ => el.get("value").cloned().unwrap_or(Value::Null),
    })
}

/// `{idShort: value, ...}` over elements (those without a value are left out).
pub fn named_values(elements: &[Value], extent: Extent) -> Value {
    let mut m = Map::new();
    for child in elements {
        if let (Some(name), Ok(v)) = (
            child.get("idShort").and_then(Value::as_str),
            value_only(child, extent),
        ) {
            m.insert(name.into(), v);
        }
    }
    Value::Object(m)
}

/// The ValueOnly form of one element as Part 2 (v3.0) serialises it on its own:
/// `{"<idShort>": <value>}`; list items, which have no idShort, are just the value.
pub fn named_value_only(el: &Value, extent: Extent) -> Result<Value, String> {
    let v = value_only(el, extent)?;
    Ok(match el.get("idShort").and_then(Value::as_str) {
        Some(name) => {
            let mut m = Map::new();
            m.insert(name.into(), v);
            Value::Object(m)
        }
        None => v,
    })
}

/// A lexical value turned into JSON by its `valueType` (numbers and booleans as JSON).
fn typed_lexical(el: &Value, key: &str) -> Value {
    let lexical = el.get(key).and_then(Value::as_str);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sm() -> Value {
        json!({"modelType": "Submodel", "id": "urn:sm", "idShort": "S", "submodelElements": [
            {"modelType": "Property", "idShort": "P", "valueType": "xs:int", "value": "5"},
            {"modelType": "SubmodelElementCollection", "idShort": "C", "value": [
                {"modelType": "SubmodelElementCollection", "idShort": "D", "value": [
                    {"modelType": "Range", "idShort": "R", "valueType": "xs:double", "min": "1", "max": "2.5"}]},
                {"modelType": "Blob", "idShort": "B", "contentType": "a/b", "value": "AAE="}]},
            {"modelType": "SubmodelElementList", "idShort": "L", "typeValueListElement": "Property",
             "value": [{"modelType": "Property", "valueType": "xs:boolean", "value": "true"}]},
            {"modelType": "Capability", "idShort": "Cap"}
        ]})
    }

    #[test]
    fn core_keeps_direct_children_only() {
        let s = shaped(&sm(), Level::Core, Extent::WithBlobValue);
        assert!(s["submodelElements"][1].get("value").is_none());
        let c = shaped(
            &sm()["submodelElements"][1],
            Level::Core,
            Extent::WithBlobValue,
        );
        assert_eq!(c["value"][0]["idShort"], "D");
        assert!(c["value"][0].get("value").is_none());
        let deep = shaped(&sm(), Level::Deep, Extent::WithBlobValue);
        assert_eq!(deep["submodelElements"][1]["value"][1]["value"], "AAE=");
    }

    #[test]
    fn blob_values_follow_extent() {
        let s = shaped(&sm(), Level::Deep, Extent::WithoutBlobValue);
        assert!(s["submodelElements"][1]["value"][1].get("value").is_none());
        assert_eq!(s["submodelElements"][1]["value"][1]["contentType"], "a/b");
    }

    #[test]
    fn value_only_is_typed_and_named() {
        let s = sm();
        assert_eq!(
            named_values(children(&s), Extent::WithBlobValue),
            json!({"P": 5, "C": {"D": {"R": {"min": 1.0, "max": 2.5}}, "B": {"contentType": "a/b", "value": "AAE="}}, "L": [true]})
        );
        assert_eq!(
            named_value_only(&s["submodelElements"][0], Extent::WithoutBlobValue).unwrap(),
            json!({"P": 5})
        );
        assert_eq!(
            named_value_only(
                &s["submodelElements"][2]["value"][0],
                Extent::WithoutBlobValue
            )
            .unwrap(),
            json!(true)
        );
        assert!(value_only(&s["submodelElements"][3], Extent::WithoutBlobValue).is_err());
    }

    #[test]
    fn paths_and_references() {
        let s = sm();
        assert_eq!(
            submodel_paths(&s, Level::Deep),
            ["P", "C", "C.D", "C.D.R", "C.B", "L", "L[0]", "Cap"]
        );
        assert_eq!(submodel_paths(&s, Level::Core), ["P", "C", "L", "Cap"]);
        assert_eq!(
            element_paths("L", &s["submodelElements"][2], Level::Deep).unwrap(),
            ["L", "L[0]"]
        );
        assert!(element_paths("P", &s["submodelElements"][0], Level::Deep).is_err());
        let list = &s["submodelElements"][2];
        let r = element_reference("urn:sm", &[(2, list), (0, &list["value"][0])]);
        assert_eq!(r["keys"][2], json!({"type": "Property", "value": "0"}));
        assert_eq!(
            r["keys"][1],
            json!({"type": "SubmodelElementList", "value": "L"})
        );
    }

    #[test]
    fn metadata_drops_values() {
        let s = sm();
        assert!(element_metadata(&s["submodelElements"][0])
            .unwrap()
            .get("value")
            .is_none());
        assert!(element_metadata(&s["submodelElements"][3]).is_err());
        assert!(submodel_metadata(&s).get("submodelElements").is_none());
    }
}
