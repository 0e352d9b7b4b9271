//! The Time Series Data submodel's JSON: the skeleton installed at start, and the segment
//! values and Records filled in when the API reads it.
//!
//! semanticIds and valueTypes follow the IDTA template (admin-shell-io/submodel-templates,
//! `published/Time Series Data/1/1/`, checked against the 1.1.2 and 1.1.3 bug-fix JSON): the
//! segment times (StartTime, EndTime, LastUpdate) and Duration are `xs:string` there (ISO 8601
//! text), RecordCount/SamplingInterval/SamplingRate `xs:long`, Endpoint/Query `xs:string`.
//! `Time` uses UtcTime (`xs:dateTime`), the absolute time of IDTA 02008-1-1 Table 4; the
//! template's example shows RelativePointInTime instead, which needs a segment start to mean
//! anything.

use serde_json::{json, Value};

use super::query::{records_query, QueryColumn};
use super::store::{Sample, Store};
use super::{History, Variable, TIME_SERIES_SEMANTIC_ID};
use crate::aas::{id_of, Environment, Node};
use crate::model::{format_timestamp, Quality};

const SEM: &str = "https://admin-shell.io/idta/TimeSeries/";

fn sem(suffix: &str) -> Value {
    json!({"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": format!("{SEM}{suffix}/1/1")}]})
}

fn global(id: &str) -> Value {
    json!({"type": "ExternalReference", "keys": [{"type": "GlobalReference", "value": id}]})
}

fn mlp(id_short: &str, semantic: &str, text: &str) -> Value {
    json!({"idShort": id_short, "semanticId": sem(semantic), "modelType": "MultiLanguageProperty",
           "value": [{"language": "en", "text": text}]})
}

fn prop(id_short: &str, semantic: &str, value_type: &str) -> Value {
    json!({"idShort": id_short, "semanticId": sem(semantic), "modelType": "Property", "valueType": value_type})
}

fn smc(id_short: &str, semantic: &str, value: Vec<Value>) -> Value {
    let mut v = json!({"idShort": id_short, "semanticId": sem(semantic), "modelType": "SubmodelElementCollection"});
    // The metamodel forbids empty lists: an empty collection has no `value` at all.
    if !value.is_empty() {
        v["value"] = Value::Array(value);
    }
    v
}

/// The segment properties both segment kinds carry (values filled in at read time).
fn segment_properties(with_count: bool) -> Vec<Value> {
    let mut v = Vec::new();
    if with_count {
        v.push(prop("RecordCount", "Segment/RecordCount", "xs:long"));
    }
    v.push(prop("StartTime", "Segment/StartTime", "xs:string"));
    v.push(prop("EndTime", "Segment/EndTime", "xs:string"));
    v.push(prop("Duration", "Segment/Duration", "xs:string"));
    if with_count {
        v.push(prop(
            "SamplingInterval",
            "Segment/SamplingInterval",
            "xs:long",
        ));
        v.push(prop("SamplingRate", "Segment/SamplingRate", "xs:long"));
    }
    let mut state = prop("State", "Segment/State", "xs:string");
    state["value"] = json!("in progress");
    v.push(state);
    v.push(prop("LastUpdate", "Segment/LastUpdate", "xs:string"));
    v
}

fn time_property() -> Value {
    json!({"idShort": "Time", "semanticId": sem("UtcTime"), "modelType": "Property", "valueType": "xs:dateTime"})
}

fn variable_property(v: &Variable) -> Value {
    let mut p =
        json!({"idShort": v.id_short, "modelType": "Property", "valueType": v.value_type.as_str()});
    if let Some(id) = &v.semantic_id {
        p["semanticId"] = global(id);
    }
    p
}

/// The elements of a Time Series submodel for `vars` (segments without values).
fn elements(shell_id_short: &str, vars: &[&Variable]) -> Vec<Value> {
    let mut record = vec![time_property()];
    record.extend(vars.iter().map(|v| variable_property(v)));
    let mut internal = vec![
        mlp("Name", "Segment/Name", "Recent values"),
        mlp(
            "Description",
            "Segment/Description",
            "The recent window the gateway keeps in memory; Records shows the newest records (read more with the from/to extension of the gateway's API).",
        ),
    ];
    internal.extend(segment_properties(true));
    internal.push(smc("Records", "Records", vec![]));
    let mut linked = vec![
        mlp("Name", "Segment/Name", "History in QuestDB"),
        mlp(
            "Description",
            "Segment/Description",
            "Every value the gateway wrote to QuestDB since it started: HTTP GET of Endpoint with the URL-encoded Query as query= parameter.",
        ),
    ];
    linked.extend(segment_properties(false));
    linked.push(prop("Endpoint", "Endpoint", "xs:string"));
    linked.push(prop("Query", "Query", "xs:string"));
    vec![
        smc(
            "Metadata",
            "Metadata",
            vec![
                json!({"idShort": "Name", "semanticId": sem("Metadata/Name"), "modelType": "MultiLanguageProperty",
                       "value": [{"language": "en", "text": format!("{shell_id_short} history")}]}),
                json!({"idShort": "Description", "semanticId": sem("Metadata/Description"), "modelType": "MultiLanguageProperty",
                       "value": [{"language": "en", "text": format!("Values of {shell_id_short} collected over OPC UA, as recorded by the gateway")}]}),
                smc("Record", "Record", record),
            ],
        ),
        smc(
            "Segments",
            "Segments",
            vec![
                smc("InternalSegment", "Segments/InternalSegment", internal),
                smc("LinkedSegment", "Segments/LinkedSegment", linked),
            ],
        ),
    ]
}

fn is_time_series(sm: &Node) -> bool {
    sm.pointer("/semanticId/keys/0/value")
        .and_then(Node::as_str)
        == Some(TIME_SERIES_SEMANTIC_ID)
}

/// Adds the Time Series submodel of shell `shell_id` (or takes over the one it references) and
/// returns its id. The result passes the same typed checks as every loaded template.
pub fn install(
    env: &mut Environment,
    shell_id: &str,
    vars: &[&Variable],
) -> Result<String, String> {
    let shell_pos = env
        .shells
        .iter()
        .position(|s| id_of(s) == Some(shell_id))
        .ok_or_else(|| format!("no shell {shell_id:?}"))?;
    let shell_id_short = env.shells[shell_pos]["idShort"]
        .as_str()
        .unwrap_or("asset")
        .to_string();
    let referenced: Vec<String> = env.shells[shell_pos]
        .get("submodels")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            r.pointer("/keys/0/value")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    let existing = referenced
        .iter()
        .find(|id| env.submodel(id).is_some_and(is_time_series))
        .cloned();
    let check = |sm: &Value| -> Result<(), String> {
        let typed = crate::aas::model::parse_environment(&json!({"submodels": [sm]}))?;
        let problems = crate::aas::model::validate(&typed);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    };
    if let Some(id) = existing {
        // Take over the template's submodel: its identity stays, its elements are generated.
        let pos = env
            .submodels
            .iter()
            .position(|s| id_of(s) == Some(id.as_str()))
            .expect("found above");
        // Edited as JSON (a few elements), stored back as a tree.
        let mut sm = env.submodels[pos].to_value();
        sm["submodelElements"] = Value::Array(elements(&shell_id_short, vars));
        sm["kind"] = json!("Instance");
        check(&sm).map_err(|e| format!("Time Series submodel {id:?}: {e}"))?;
        env.submodels[pos] = Node::from(sm);
        tracing::info!(submodel = %id, "history: serving the Time Series submodel of the template with live segments");
        return Ok(id);
    }
    let id = format!("{shell_id}:time-series");
    let sm = json!({
        "modelType": "Submodel", "id": id, "idShort": "TimeSeries", "kind": "Instance",
        "semanticId": global(TIME_SERIES_SEMANTIC_ID),
        "administration": {"version": "1", "revision": "1"},
        "description": [{"language": "en", "text": "Time Series Data (IDTA 02008-1-1): recent values in the InternalSegment, the full history in QuestDB via the LinkedSegment."}],
        "submodelElements": elements(&shell_id_short, vars),
    });
    check(&sm).map_err(|e| format!("Time Series submodel {id:?}: {e}"))?;
    env.merge(json!({"submodels": [sm]}))?;
    let shell = &mut env.shells[shell_pos];
    let reference = json!({"type": "ModelReference", "keys": [{"type": "Submodel", "value": id}]});
    match shell.get_mut("submodels").and_then(Value::as_array_mut) {
        Some(refs) => refs.push(reference),
        None => shell["submodels"] = json!([reference]),
    }
    Ok(id)
}

/// One record: a source timestamp and the values at it (a range of [`Segments::samples`]).
#[derive(Debug, Clone)]
pub struct Rec {
    /// Source timestamp, ns.
    pub ts: i64,
    start: usize,
    end: usize,
}

impl Rec {
    /// Number of variable values in the record (Time not counted).
    pub fn values(&self) -> usize {
        self.end - self.start
    }
}

/// The InternalSegment of one asset, computed from the store.
pub struct Segments<'s> {
    /// (timestamp, variable, value), sorted by time then variable order.
    samples: Vec<(i64, usize, &'s Sample)>,
    /// Records, oldest first.
    pub records: Vec<Rec>,
    first: Option<i64>,
    newest: Option<i64>,
    last_update: Option<i64>,
}

impl<'s> Segments<'s> {
    /// Merges the asset's rings into records (one per distinct source timestamp).
    pub fn compute(h: &History, store: &'s Store, asset: usize) -> Segments<'s> {
        let vars = &h.assets[asset].variables;
        let mut samples = Vec::new();
        for (pos, &v) in vars.iter().enumerate() {
            samples.extend(store.samples(v).map(|s| (s.ts, pos, s)));
        }
        samples.sort_by_key(|&(ts, pos, _)| (ts, pos));
        let mut records: Vec<Rec> = Vec::new();
        for (i, &(ts, _, _)) in samples.iter().enumerate() {
            match records.last_mut() {
                Some(r) if r.ts == ts => r.end = i + 1,
                _ => records.push(Rec {
                    ts,
                    start: i,
                    end: i + 1,
                }),
            }
        }
        let g = store.group(asset);
        Segments {
            samples,
            records,
            first: g.first,
            newest: g.newest,
            last_update: g.last_update,
        }
    }
}

/// Record SMCs for `records` (Time + one Property per variable with a value at that time;
/// a value that is not Good carries a `ValueQuality` qualifier, so it cannot pass for one).
pub fn records_json(h: &History, asset: usize, records: &[Rec], view: &Segments) -> Vec<Value> {
    let vars = &h.assets[asset].variables;
    records
        .iter()
        .map(|r| {
            let mut value = Vec::with_capacity(r.end - r.start + 1);
            let mut time = time_property();
            time["value"] = json!(format_timestamp(r.ts));
            value.push(time);
            for &(_, pos, s) in &view.samples[r.start..r.end] {
                let var = &h.variables[vars[pos]];
                let mut p = variable_property(var);
                p["value"] = json!(var.value_type.lexical(&s.value));
                let q = Quality::from_status(s.status);
                if q != Quality::Good {
                    p["qualifiers"] = json!([{"type": "ValueQuality", "valueType": "xs:string", "value": q.as_str()}]);
                }
                value.push(p);
            }
            json!({"idShort": format!("Record{}", r.ts), "semanticId": sem("Record"),
                   "modelType": "SubmodelElementCollection", "value": value})
        })
        .collect()
}

/// ISO 8601 duration of `nanos`, e.g. `PT600S`, `PT1.5S`.
fn iso_duration(nanos: i64) -> String {
    let secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    if frac == 0 {
        format!("PT{secs}S")
    } else {
        let f = format!("{frac:09}");
        format!("PT{secs}.{}S", f.trim_end_matches('0'))
    }
}

/// RFC 3339 with exactly six fractional digits (QuestDB timestamps are microseconds; a fixed
/// width also keeps text comparison in time order), rounded outwards so the range stays inclusive.
pub fn sql_timestamp(nanos: i64, round_up: bool) -> String {
    let micros = if round_up {
        nanos.div_euclid(1000) + i64::from(nanos.rem_euclid(1000) != 0)
    } else {
        nanos.div_euclid(1000)
    };
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn set(children: &mut [Value], id_short: &str, value: Option<String>) {
    if let Some(el) = children.iter_mut().find(|c| c["idShort"] == id_short) {
        match value {
            Some(v) => el["value"] = Value::String(v),
            None => {
                if let Some(o) = el.as_object_mut() {
                    o.remove("value");
                }
            }
        }
    }
}

fn children_mut<'v>(parent: &'v mut Value, id_short: &str) -> Option<&'v mut Vec<Value>> {
    parent
        .as_array_mut()?
        .iter_mut()
        .find(|c| c["idShort"] == id_short)?
        .get_mut("value")?
        .as_array_mut()
}

/// Writes the segment values (and `records`, already capped) into a copy of the skeleton.
pub fn fill(h: &History, asset: usize, sm: &mut Value, view: &Segments, records: Vec<Value>) {
    let count = view.records.len();
    let start = view.records.first().map(|r| r.ts);
    let end = view.records.last().map(|r| r.ts);
    let interval_ms = equidistant_ms(&view.records);
    let elements = &mut sm["submodelElements"];
    let Some(segments) = children_mut(elements, "Segments") else {
        return;
    };
    let mut segments_value = Value::Array(std::mem::take(segments));
    if let Some(internal) = children_mut(&mut segments_value, "InternalSegment") {
        set(internal, "RecordCount", Some(count.to_string()));
        set(internal, "StartTime", start.map(format_timestamp));
        set(internal, "EndTime", end.map(format_timestamp));
        set(
            internal,
            "Duration",
            start.zip(end).map(|(s, e)| iso_duration(e - s)),
        );
        set(
            internal,
            "SamplingInterval",
            interval_ms.map(|ms| ms.to_string()),
        );
        set(
            internal,
            "SamplingRate",
            interval_ms
                .filter(|&ms| ms > 0 && 1000 % ms == 0)
                .map(|ms| (1000 / ms).to_string()),
        );
        set(
            internal,
            "LastUpdate",
            view.last_update.map(format_timestamp),
        );
        if let Some(r) = internal.iter_mut().find(|c| c["idShort"] == "Records") {
            if records.is_empty() {
                r.as_object_mut().map(|o| o.remove("value"));
            } else {
                r["value"] = Value::Array(records);
            }
        }
    }
    if let Some(linked) = children_mut(&mut segments_value, "LinkedSegment") {
        let now = super::now_nanos();
        let from = view.first.unwrap_or(h.started_nanos);
        let to = view.newest.unwrap_or(now);
        set(linked, "StartTime", Some(format_timestamp(from)));
        set(linked, "EndTime", view.newest.map(format_timestamp));
        set(
            linked,
            "Duration",
            view.newest.map(|n| iso_duration(n - from)),
        );
        set(linked, "LastUpdate", view.last_update.map(format_timestamp));
        set(linked, "Endpoint", Some(h.cfg.endpoint()));
        set(linked, "Query", Some(linked_query(h, asset, from, to)));
    }
    if let Some(segments) = children_mut(elements, "Segments") {
        *segments = match segments_value {
            Value::Array(v) => v,
            _ => unreachable!("built as an array above"),
        };
    }
}

/// The LinkedSegment query of `asset` for `[from, to]` (ns).
pub fn linked_query(h: &History, asset: usize, from: i64, to: i64) -> String {
    let a = &h.assets[asset];
    let columns: Vec<QueryColumn> = a
        .variables
        .iter()
        .map(|&v| {
            let var = &h.variables[v];
            QueryColumn {
                name: var.id_short.clone(),
                table: var.table.clone(),
                element: var.element.clone(),
                value_type: var.value_type,
            }
        })
        .collect();
    records_query(
        &a.shell_id_short,
        &columns,
        &sql_timestamp(from, false),
        &sql_timestamp(to, true),
    )
}

/// The common step between records in ms, if every step is the same (±1 ms jitter).
fn equidistant_ms(records: &[Rec]) -> Option<i64> {
    if records.len() < 2 {
        return None;
    }
    let steps = records.windows(2).map(|w| w[1].ts - w[0].ts);
    let (min, max) = steps.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
    (max - min <= 1_000_000).then(|| ((min + max) / 2 + 500_000) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sql_times() {
        assert_eq!(iso_duration(600_000_000_000), "PT600S");
        assert_eq!(iso_duration(1_500_000_000), "PT1.5S");
        assert_eq!(
            sql_timestamp(1_700_000_000_123_456_789, false),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            sql_timestamp(1_700_000_000_123_456_789, true),
            "2023-11-14T22:13:20.123457Z"
        );
        assert_eq!(
            sql_timestamp(1_700_000_000_000_000_000, true),
            "2023-11-14T22:13:20.000000Z"
        );
    }

    #[test]
    fn sampling_interval_only_when_equidistant() {
        let recs = |ts: &[i64]| -> Vec<Rec> {
            ts.iter()
                .map(|&t| Rec {
                    ts: t * 1_000_000,
                    start: 0,
                    end: 0,
                })
                .collect()
        };
        assert_eq!(equidistant_ms(&recs(&[0, 200, 400, 600])), Some(200));
        assert_eq!(equidistant_ms(&recs(&[0, 200, 500])), None);
        assert_eq!(equidistant_ms(&recs(&[0])), None);
    }
}
