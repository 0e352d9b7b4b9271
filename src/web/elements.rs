//! The element list of the status page: every value-carrying element of every submodel (one
//! row each: Property, MultiLanguageProperty, SubmodelElementList of Properties; mapped ones
//! first, then the template's static values), indexed once at start, searched and paged on the server so that the browser never holds 100k rows.
//!
//! A row carries its precomputed location in the store, so a page of 100 rows costs 100 lookups
//! by position (no search by name), one read lock of the environment and one lock of the live
//! values' status.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::aas::live::LiveEnvironment;
use crate::aas::{view, ElementKind, ElementLocation, Environment};
use crate::core::Quality;
use crate::mapping::{MappingRule, Router as MappingRouter};
use crate::model::ElementTarget;

/// Rows a page has unless the page asks for another number.
pub const DEFAULT_PAGE: usize = 100;
/// Most rows one page may have.
pub const MAX_PAGE: usize = 500;

/// A submodel as the list shows it.
#[derive(Debug)]
struct SubmodelInfo {
    id: String,
    id_short: String,
    shell: String,
    /// `shell submodel`, lower case, for the search.
    lower: String,
}

/// One value-carrying element.
#[derive(Debug)]
struct Row {
    submodel: u32,
    path: Box<str>,
    /// The path in lower case, for the search, only when it is not ASCII (idShorts are ASCII
    /// by the AAS spec; an ASCII path is searched without a lower-case copy per element).
    lower: Option<Box<str>>,
    location: ElementLocation,
    /// The mapping rule that writes it, if any.
    rule: Option<u32>,
    writable: bool,
    history: bool,
    unit: Option<Arc<str>>,
    /// The route's target of a history variable (the key of its recent values).
    target: Option<&'static ElementTarget>,
}

/// Every value-carrying element, in submodel and document order.
#[derive(Debug, Default)]
pub struct ElementIndex {
    submodels: Vec<SubmodelInfo>,
    rows: Vec<Row>,
}

/// Whether the row's path contains `word` (lower case), ignoring case like `to_lowercase`.
fn row_contains(r: &Row, word: &str) -> bool {
    match &r.lower {
        Some(lower) => lower.contains(word),
        None => {
            let (hay, needle) = (r.path.as_bytes(), word.as_bytes());
            needle.is_empty()
                || hay
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle))
        }
    }
}

impl ElementIndex {
    /// Indexes `env` (as loaded, before live values); `rules` are those `router` was built
    /// from (for `writable` and `history`); `skip` tells submodels to leave out (the Time
    /// Series submodels, whose records are not live values).
    pub fn build(
        env: &Environment,
        rules: &[MappingRule],
        router: &MappingRouter,
        skip: &dyn Fn(&str) -> bool,
    ) -> ElementIndex {
        let mut by_element: HashMap<(&str, &str), usize> = HashMap::new();
        for (i, route) in router.routes.iter().enumerate() {
            by_element
                .entry((
                    &route.target.submodel_id,
                    route.target.id_short_path.as_str(),
                ))
                .or_insert(i);
        }
        let index = env.top_level_index();
        let mut out = ElementIndex::default();
        for sm in &env.submodels {
            let Some(id) = crate::aas::id_of(sm) else {
                continue;
            };
            if skip(id) {
                continue;
            }
            let id_short = sm
                .get("idShort")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let shell = env.shell_of_submodel(id).unwrap_or("").to_string();
            let sm_index = out.submodels.len() as u32;
            out.submodels.push(SubmodelInfo {
                id: id.to_string(),
                lower: format!("{shell} {id_short}").to_lowercase(),
                id_short,
                shell,
            });
            let mut paths = Vec::new();
            collect_paths(view::children(sm), "", &mut paths);
            for path in paths {
                let Ok(location) = env.locate_indexed(Some(&index), id, &path) else {
                    continue;
                };
                let rule = by_element.get(&(id, path.as_str())).copied();
                let route = rule.map(|r| &router.routes[r]);
                let flags = rule.and_then(|r| rules.get(r));
                out.rows.push(Row {
                    submodel: sm_index,
                    lower: (!path.is_ascii()).then(|| path.to_lowercase().into()),
                    path: path.into(),
                    location,
                    rule: rule.map(|r| r as u32),
                    writable: flags.is_some_and(|f| f.writable),
                    history: flags.is_some_and(|f| f.history),
                    unit: route.and_then(|r| r.target.unit.as_deref()).map(Arc::from),
                    target: route
                        .filter(|_| flags.is_some_and(|f| f.history))
                        .map(|r| r.target),
                });
            }
        }
        // Live (mapped) values first, in document order; the static template values after.
        out.rows.sort_by_key(|r| r.rule.is_none());
        out
    }

    /// The history target and unit of element `path` of submodel `submodel_id`, if it is a
    /// history variable.
    pub fn history_target(
        &self,
        submodel_id: &str,
        path: &str,
    ) -> Option<(&'static ElementTarget, Option<&str>)> {
        self.rows.iter().find_map(|r| {
            let target = r.target?;
            (&*r.path == path && self.submodels[r.submodel as usize].id == submodel_id)
                .then_some((target, r.unit.as_deref()))
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no element carries a value.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Rows `offset..offset + limit` of those matching `query` (case-insensitive words, each of
    /// which must occur in the shell's or submodel's idShort or the element's path), with
    /// their live values, and how many match in all.
    pub fn page(&self, env: &LiveEnvironment, query: &str, offset: usize, limit: usize) -> Value {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let matches = |r: &Row| {
            let sm = &self.submodels[r.submodel as usize].lower;
            words
                .iter()
                .all(|w| row_contains(r, w) || sm.contains(w.as_str()))
        };
        let mut total = 0usize;
        let mut picked: Vec<&Row> = Vec::with_capacity(limit);
        for row in self.rows.iter().filter(|r| matches(r)) {
            if total >= offset && picked.len() < limit {
                picked.push(row);
            }
            total += 1;
        }
        let status = env.status_of_rules(picked.iter().map(|r| r.rule.unwrap_or(u32::MAX)));
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let tree = env.read();
        let rows: Vec<Value> = picked
            .iter()
            .zip(status)
            .map(|(r, st)| {
                let sm = &self.submodels[r.submodel as usize];
                let element = tree.element(&r.location);
                // A mapped element that got no value yet shows its template value as such.
                let (quality, code, age) = match (r.rule, st) {
                    (Some(_), Some((code, ts))) if ts != 0 => (
                        Quality::from_status(code).as_str(),
                        Some(format!("0x{code:08X}")),
                        Some(now.saturating_sub(ts).max(0) as f64 / 1e9),
                    ),
                    (Some(_), _) => ("waiting", None, None),
                    (None, _) => ("static", None, None),
                };
                json!({
                    "shell": sm.shell,
                    "submodel": sm.id_short,
                    "submodelId": sm.id,
                    "submodelIdEncoded": crate::aas::encode_id(&sm.id),
                    "path": r.path,
                    "valueType": r.location.value_type.as_str(),
                    "value": display_value(element, r.location.kind),
                    "unit": r.unit.as_deref(),
                    "quality": quality,
                    "statusCode": code,
                    "ageS": age,
                    "mapped": r.rule.is_some(),
                    "writable": r.writable,
                    "history": r.history,
                })
            })
            .collect();
        json!({"total": total, "offset": offset, "limit": limit, "elements": self.rows.len(), "rows": rows})
    }
}

/// Paths of the value-carrying elements under `children` (prefix `prefix`), in document order.
fn collect_paths(children: &[Value], prefix: &str, out: &mut Vec<String>) {
    for (i, child) in children.iter().enumerate() {
        let name = match child.get("idShort").and_then(Value::as_str) {
            Some(id) if prefix.is_empty() => id.to_string(),
            Some(id) => format!("{prefix}.{id}"),
            // List items have no idShort: addressed by position.
            None => format!("{prefix}[{i}]"),
        };
        let model_type = child.get("modelType").and_then(Value::as_str);
        let is_property_list = model_type == Some("SubmodelElementList")
            && child.get("typeValueListElement").and_then(Value::as_str) == Some("Property");
        match model_type {
            Some("Property") | Some("MultiLanguageProperty") => out.push(name),
            _ if is_property_list => out.push(name),
            _ => {
                if view::children_key(child).is_some() {
                    collect_paths(view::children(child), &name, out);
                }
            }
        }
    }
}

/// The element's value as text (lists joined, at most 200 characters).
fn display_value(element: &Value, kind: ElementKind) -> Option<String> {
    let v = element.get("value")?;
    let text = match kind {
        ElementKind::Property => v.as_str()?.to_string(),
        ElementKind::MultiLanguageProperty => v
            .as_array()?
            .iter()
            .filter_map(|t| t.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" / "),
        ElementKind::PropertyList => {
            let items: Vec<&str> = v
                .as_array()?
                .iter()
                .map(|i| i.get("value").and_then(Value::as_str).unwrap_or(""))
                .collect();
            format!("[{}]", items.join(", "))
        }
    };
    Some(if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}…")
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        let mut env = Environment::default();
        env.merge(json!({
            "assetAdministrationShells": [{"id": "urn:aas:1", "idShort": "M1", "modelType": "AssetAdministrationShell",
                "assetInformation": {"assetKind": "Instance", "globalAssetId": "urn:asset:1"},
                "submodels": [{"type": "ModelReference", "keys": [{"type": "Submodel", "value": "urn:sm:1"}]}]}],
            "submodels": [{"id": "urn:sm:1", "idShort": "Op", "modelType": "Submodel", "submodelElements": [
                {"modelType": "Property", "idShort": "Speed", "valueType": "xs:double", "value": "1.5"},
                {"modelType": "SubmodelElementCollection", "idShort": "Axes", "value": [
                    {"modelType": "Property", "idShort": "X", "valueType": "xs:int", "value": "7"},
                    {"modelType": "File", "idShort": "Manual", "contentType": "application/pdf"}]},
                {"modelType": "SubmodelElementList", "idShort": "Pos", "typeValueListElement": "Property",
                 "valueTypeListElement": "xs:double", "value": [
                    {"modelType": "Property", "valueType": "xs:double", "value": "0"},
                    {"modelType": "Property", "valueType": "xs:double", "value": "2"}]},
                {"modelType": "MultiLanguageProperty", "idShort": "Name", "value": [{"language": "en", "text": "Mill"}]}
            ]}, {"id": "urn:sm:skip", "idShort": "Skipped", "modelType": "Submodel", "submodelElements": [
                {"modelType": "Property", "idShort": "Hidden", "valueType": "xs:int", "value": "1"}]}]
        }))
        .unwrap();
        env
    }

    #[test]
    fn every_value_carrying_element_is_a_row_and_search_and_paging_work() {
        let env = env();
        let router = MappingRouter {
            routes: Vec::new(),
            inputs: Vec::new(),
            transforms: Vec::new(),
        };
        let index = ElementIndex::build(&env, &[], &router, &|id| id == "urn:sm:skip");
        let live = LiveEnvironment::from(env);
        let all = index.page(&live, "", 0, 100);
        let paths: Vec<&str> = all["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap())
            .collect();
        // The File is no row; the list is one row; the skipped submodel is not listed.
        assert_eq!(paths, ["Speed", "Axes.X", "Pos", "Name"]);
        assert_eq!(all["rows"][2]["value"], "[0, 2]");
        assert_eq!(all["rows"][3]["value"], "Mill");
        assert_eq!(all["rows"][0]["quality"], "static");
        // All words must match, in the path or the shell/submodel names, ignoring case.
        let found = index.page(&live, "m1 AXES", 0, 100);
        assert_eq!(found["total"], 1);
        assert_eq!(found["rows"][0]["path"], "Axes.X");
        assert_eq!(index.page(&live, "op nothing", 0, 100)["total"], 0);
        // Pages: the total counts every match, the rows only the page.
        let second = index.page(&live, "", 1, 2);
        assert_eq!(second["total"], 4);
        assert_eq!(second["rows"].as_array().unwrap().len(), 2);
        assert_eq!(second["rows"][0]["path"], "Axes.X");
    }
}
