//! The element list of the status page: every value-carrying element of every submodel (one
//! row each: Property, MultiLanguageProperty, SubmodelElementList of Properties; mapped ones
//! first, then the template's static values), indexed once at start, searched and paged on the
//! server so that the browser never holds 100k rows.
//!
//! A row carries its precomputed location in the store, so a page of 100 rows costs 100 lookups
//! by position (no search by name), one read lock of the environment and one lock of the live
//! values' status. A mapped element's row is only its rule number (plus two flags): its path,
//! location, unit and target are those of the rule's route, read from the router rather than
//! copied (a copy of each was ~16 MB at 100k elements).

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::aas::live::LiveEnvironment;
use crate::aas::{view, ElementKind, ElementLocation, Environment, Node, TopLevelIndex};
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

/// A mapped element: the rule that writes it (the first, when several do), whose route holds
/// its path, location, unit and target.
#[derive(Debug)]
struct MappedRow {
    rule: u32,
    writable: bool,
    history: bool,
}

/// An element no rule writes: it shows the template's value.
#[derive(Debug)]
struct StaticRow {
    path: Box<str>,
    location: ElementLocation,
}

/// One row as the page reads it.
#[derive(Clone, Copy)]
enum RowRef<'a> {
    Mapped(&'a MappedRow, &'a crate::mapping::Route),
    Static(&'a StaticRow),
}

impl<'a> RowRef<'a> {
    fn path(self) -> &'a str {
        match self {
            RowRef::Mapped(_, route) => &route.target.id_short_path,
            RowRef::Static(row) => &row.path,
        }
    }

    fn location(self) -> &'a ElementLocation {
        match self {
            RowRef::Mapped(_, route) => &route.location,
            RowRef::Static(row) => &row.location,
        }
    }

    fn rule(self) -> Option<u32> {
        match self {
            RowRef::Mapped(row, _) => Some(row.rule),
            RowRef::Static(_) => None,
        }
    }

    fn unit(self) -> Option<&'a str> {
        match self {
            RowRef::Mapped(_, route) => route.target.unit(),
            RowRef::Static(_) => None,
        }
    }

    /// (writable, history)
    fn flags(self) -> (bool, bool) {
        match self {
            RowRef::Mapped(row, _) => (row.writable, row.history),
            RowRef::Static(_) => (false, false),
        }
    }
}

/// Every value-carrying element: the mapped ones, then the static ones, each in submodel and
/// document order.
#[derive(Debug)]
pub struct ElementIndex {
    /// By position in [`Environment::submodels`]; `None` for a submodel the page leaves out.
    submodels: Vec<Option<SubmodelInfo>>,
    router: Arc<MappingRouter>,
    mapped: Vec<MappedRow>,
    fixed: Vec<StaticRow>,
}

/// Whether `path` contains `word` (lower case), ignoring case like `to_lowercase`.
fn path_contains(path: &str, word: &str) -> bool {
    if !path.is_ascii() {
        // idShorts are ASCII by the AAS spec: a rare case, not worth a lower-case copy each.
        return path.to_lowercase().contains(word);
    }
    let (hay, needle) = (path.as_bytes(), word.as_bytes());
    needle.is_empty()
        || hay
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

impl ElementIndex {
    /// Indexes `env` (as loaded, before live values); `rules` are those `router` was built
    /// from (for `writable` and `history`); `skip` tells submodels to leave out (the Time
    /// Series submodels, whose records are not live values).
    pub fn build(
        env: &Environment,
        rules: &[MappingRule],
        router: &Arc<MappingRouter>,
        skip: &dyn Fn(&str) -> bool,
    ) -> ElementIndex {
        let routes = &router.routes;
        // Rule numbers sorted by (submodel id, path), the lowest number first among equal
        // ones: an element's rows find their rule by binary search (a `HashMap` of 100k keys
        // was megabytes at start, kept by glibc in the resident set afterwards).
        let key = |rule: u32| {
            let t = routes[rule as usize].target;
            (&*t.submodel.id, &*t.id_short_path)
        };
        let mut by_element: Vec<u32> = (0..routes.len() as u32).collect();
        by_element.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)).then(a.cmp(&b)));
        let rule_of = |id: &str, path: &str| {
            let i = by_element.partition_point(|&r| key(r) < (id, path));
            by_element.get(i).copied().filter(|&r| key(r) == (id, path))
        };
        // Built on the first static row only (most rows are mapped).
        let mut top_level: Option<TopLevelIndex> = None;
        let mut out = ElementIndex {
            submodels: Vec::with_capacity(env.submodels.len()),
            router: router.clone(),
            mapped: Vec::with_capacity(routes.len()),
            fixed: Vec::new(),
        };
        let mut path = String::new();
        for sm in &env.submodels {
            let id = crate::aas::id_of(sm).filter(|id| !skip(id));
            out.submodels.push(id.map(|id| {
                let id_short = sm
                    .get("idShort")
                    .and_then(Node::as_str)
                    .unwrap_or("")
                    .to_string();
                let shell = env.shell_of_submodel(id).unwrap_or("").to_string();
                SubmodelInfo {
                    id: id.to_string(),
                    lower: format!("{shell} {id_short}").to_lowercase(),
                    id_short,
                    shell,
                }
            }));
            let Some(id) = id else {
                continue;
            };
            for_each_path(view::children(sm), &mut path, &mut |path| {
                if let Some(rule) = rule_of(id, path) {
                    // The route was located from this same submodel id and path.
                    let flags = rules.get(rule as usize);
                    out.mapped.push(MappedRow {
                        rule,
                        writable: flags.is_some_and(|f| f.writable),
                        history: flags.is_some_and(|f| f.history),
                    });
                    return;
                }
                let index = top_level.get_or_insert_with(|| env.top_level_index());
                if let Ok(location) = env.locate_indexed(Some(index), id, path) {
                    out.fixed.push(StaticRow {
                        path: path.into(),
                        location,
                    });
                }
            });
        }
        out.mapped.shrink_to_fit();
        out.fixed.shrink_to_fit();
        out
    }

    /// Every row, in page order.
    fn rows(&self) -> impl Iterator<Item = RowRef<'_>> {
        let routes = &self.router.routes;
        let mapped = self
            .mapped
            .iter()
            .map(|row| RowRef::Mapped(row, &routes[row.rule as usize]));
        mapped.chain(self.fixed.iter().map(RowRef::Static))
    }

    /// The submodel of a row.
    fn submodel_of(&self, row: RowRef<'_>) -> &SubmodelInfo {
        self.submodels[row.location().submodel()]
            .as_ref()
            .expect("rows exist only for listed submodels")
    }

    /// The history target and unit of element `path` of submodel `submodel_id`, if it is a
    /// history variable.
    pub fn history_target(
        &self,
        submodel_id: &str,
        path: &str,
    ) -> Option<(&'static ElementTarget, Option<&str>)> {
        self.mapped.iter().find_map(|row| {
            let target = self.router.routes[row.rule as usize].target;
            (row.history && &*target.id_short_path == path && &*target.submodel.id == submodel_id)
                .then_some((target, target.unit()))
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.mapped.len() + self.fixed.len()
    }

    /// True when no element carries a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `offset..offset + limit` of those matching `query` (case-insensitive words, each of
    /// which must occur in the shell's or submodel's idShort or the element's path), with
    /// their live values, and how many match in all.
    pub fn page(&self, env: &LiveEnvironment, query: &str, offset: usize, limit: usize) -> Value {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let matches = |r: &RowRef<'_>| {
            let sm = &self.submodel_of(*r).lower;
            words
                .iter()
                .all(|w| path_contains(r.path(), w) || sm.contains(w.as_str()))
        };
        let mut total = 0usize;
        let mut picked: Vec<RowRef<'_>> = Vec::with_capacity(limit);
        for row in self.rows().filter(matches) {
            if total >= offset && picked.len() < limit {
                picked.push(row);
            }
            total += 1;
        }
        let status = env.status_of_rules(picked.iter().map(|r| r.rule().unwrap_or(u32::MAX)));
        let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let tree = env.read();
        let rows: Vec<Value> = picked
            .iter()
            .zip(status)
            .map(|(&r, st)| {
                let sm = self.submodel_of(r);
                let location = r.location();
                let element = tree.element(location);
                // A mapped element that got no value yet shows its template value as such.
                let (quality, code, age) = match (r.rule(), st) {
                    (Some(_), Some((code, ts))) if ts != 0 => (
                        Quality::from_status(code).as_str(),
                        Some(format!("0x{code:08X}")),
                        Some(now.saturating_sub(ts).max(0) as f64 / 1e9),
                    ),
                    (Some(_), _) => ("waiting", None, None),
                    (None, _) => ("static", None, None),
                };
                let (writable, history) = r.flags();
                json!({
                    "shell": sm.shell,
                    "submodel": sm.id_short,
                    "submodelId": sm.id,
                    "submodelIdEncoded": crate::aas::encode_id(&sm.id),
                    "path": r.path(),
                    "valueType": location.value_type.as_str(),
                    "value": display_value(element, location.kind),
                    "unit": r.unit(),
                    "quality": quality,
                    "statusCode": code,
                    "ageS": age,
                    "mapped": r.rule().is_some(),
                    "writable": writable,
                    "history": history,
                })
            })
            .collect();
        json!({"total": total, "offset": offset, "limit": limit, "elements": self.len(), "rows": rows})
    }
}

/// Calls `f` with the path of each value-carrying element under `children` (whose parent's
/// path is in `path`), in document order. One path buffer for all: a `String` per element
/// was ~6 MB at 100k elements.
fn for_each_path(children: &[Node], path: &mut String, f: &mut dyn FnMut(&str)) {
    for (i, child) in children.iter().enumerate() {
        let parent = path.len();
        match child.get("idShort").and_then(Node::as_str) {
            Some(id) if parent == 0 => path.push_str(id),
            Some(id) => {
                path.push('.');
                path.push_str(id);
            }
            // List items have no idShort: addressed by position.
            None => {
                let _ = write!(path, "[{i}]");
            }
        }
        let model_type = child.get("modelType").and_then(Node::as_str);
        let is_property_list = model_type == Some("SubmodelElementList")
            && child.get("typeValueListElement").and_then(Node::as_str) == Some("Property");
        match model_type {
            Some("Property") | Some("MultiLanguageProperty") => f(path),
            _ if is_property_list => f(path),
            _ => {
                if view::children_key(child).is_some() {
                    for_each_path(view::children(child), path, f);
                }
            }
        }
        path.truncate(parent);
    }
}

/// The element's value as text (lists joined, at most 200 characters).
fn display_value(element: &Node, kind: ElementKind) -> Option<String> {
    let v = element.get("value")?;
    let text = match kind {
        ElementKind::Property => v.as_str()?.to_string(),
        ElementKind::MultiLanguageProperty => v
            .as_array()?
            .iter()
            .filter_map(|t| t.get("text").and_then(Node::as_str))
            .collect::<Vec<_>>()
            .join(" / "),
        ElementKind::PropertyList => {
            let items: Vec<&str> = v
                .as_array()?
                .iter()
                .map(|i| i.get("value").and_then(Node::as_str).unwrap_or(""))
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
        let router = Arc::new(MappingRouter {
            routes: Vec::new(),
            inputs: Vec::new(),
            transforms: Vec::new(),
        });
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

    #[test]
    fn mapped_rows_read_their_route_and_come_first() {
        let env = env();
        let source: crate::sources::opcua::config::OpcUaSourceConfig =
            serde_json::from_value(json!({"name": "s", "endpoint": "opc.tcp://127.0.0.1:1/"}))
                .unwrap();
        let rule = |node: &str, path: &str| MappingRule {
            node_id: format!("ns=2;s={node}"),
            submodel: "urn:sm:1".into(),
            path: path.into(),
            ..Default::default()
        };
        let rules = [
            MappingRule {
                writable: true,
                ..rule("A", "Axes.X")
            },
            MappingRule {
                history: true,
                unit: Some("rpm".into()),
                ..rule("B", "Speed")
            },
            // A second rule onto the same element: the row belongs to the first.
            rule("C", "Speed"),
        ];
        let router = Arc::new(MappingRouter::build(&rules, &[source], &env).unwrap());
        let index = ElementIndex::build(&env, &rules, &router, &|id| id == "urn:sm:skip");
        let live = LiveEnvironment::new(env, router.routes.iter().map(|r| &r.location));
        let page = index.page(&live, "", 0, 100);
        let rows = page["rows"].as_array().unwrap();
        let paths: Vec<&str> = rows.iter().map(|r| r["path"].as_str().unwrap()).collect();
        // Mapped first (in document order), then the static ones.
        assert_eq!(paths, ["Speed", "Axes.X", "Pos", "Name"]);
        assert_eq!(page["elements"], 4);
        let speed = &rows[0];
        assert_eq!(
            (&speed["mapped"], &speed["history"], &speed["writable"]),
            (&json!(true), &json!(true), &json!(false))
        );
        assert_eq!(speed["unit"], "rpm");
        assert_eq!(speed["valueType"], "xs:double");
        assert_eq!(speed["quality"], "waiting");
        assert_eq!(rows[1]["writable"], true);
        assert_eq!(rows[2]["mapped"], false);
        // Rule 1 is the row's rule; rule 2's value reaches the same element (one live slot).
        live.record_with_status([(2, &crate::core::TypedValue::Float(2.5), 0, 1)]);
        let page = index.page(&live, "speed", 0, 100);
        assert_eq!(page["total"], 1);
        assert_eq!(page["rows"][0]["value"], "2.5");
        assert_eq!(page["rows"][0]["quality"], "good");
        live.record_with_status([(1, &crate::core::TypedValue::Float(3.5), 0, 1)]);
        let page = index.page(&live, "speed", 0, 100);
        assert_eq!(page["rows"][0]["value"], "3.5");
        assert_eq!(page["rows"][0]["quality"], "good");
        let (target, unit) = index.history_target("urn:sm:1", "Speed").unwrap();
        assert_eq!((&*target.id_short_path, unit), ("Speed", Some("rpm")));
        assert!(index.history_target("urn:sm:1", "Axes.X").is_none());
        assert!(index.history_target("urn:sm:2", "Speed").is_none());
    }
}
