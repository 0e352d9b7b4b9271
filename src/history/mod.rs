//! History as AAS: IDTA 02008 Time Series Data submodels for every asset with history
//! variables (mapping rules with `history = true`).
//!
//! For each shell whose mapped elements have `history = true`, [`History::install`] adds a
//! Time Series Data submodel (IDTA 02008-1-1) to the environment and to the shell's submodel
//! references:
//!
//! - id `<shell id>:time-series`, idShort `TimeSeries`; if the shell already references a
//!   submodel with the Time Series semanticId (e.g. from `aas-templates/templates/`), that one
//!   is taken over instead: its id, idShort, description and administration stay, its elements
//!   are generated (a template cannot know the live record layout).
//! - `Metadata`: Name, Description, `Record` = `Time` (UtcTime) + one Property per history
//!   variable with the variable's valueType and semanticId.
//! - `Segments.InternalSegment`: the recent window from the local store ([`store`]), with
//!   RecordCount/StartTime/EndTime/Duration/SamplingInterval/SamplingRate/State/LastUpdate and
//!   `Records` (one Record SMC per source timestamp: Time + the variables that have a value then).
//! - `Segments.LinkedSegment`: `Endpoint` (QuestDB `/exec`) and `Query` ([`query`]) for the
//!   full history the ILP sink wrote, from the first value recorded since start to the newest.
//!
//! The environment holds only the skeleton (no values in the segments); [`History::live_submodel`]
//! fills in the segments when the API reads the submodel, so the dispatcher's hot path only
//! pushes a sample into a ring ([`History::record`]) and never builds JSON.
//!
//! Memory: the rings are bounded by `window_s` and `max_records_per_variable`; API responses
//! carry at most `max_values_per_response` values (the newest records, or a page of a time
//! range with the `from`/`to` extension, see [`History::records_page`]).

#![warn(missing_docs)]

pub mod config;
pub mod query;
pub mod store;
pub mod submodel;

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::Value;

use crate::aas::{ElementKind, Environment, XsType};
use crate::core::conf::ConfigErrors;
use crate::mapping::{MappingRule, Router};
use crate::model::SubmodelUpdate;
pub use config::HistoryConfig;
use store::{Sample, Store};

/// semanticId of the Time Series Data submodel (IDTA 02008-1-1).
pub const TIME_SERIES_SEMANTIC_ID: &str = "https://admin-shell.io/idta/TimeSeries/1/1";

/// One history variable: a mapped element whose values are kept.
#[derive(Debug, Clone)]
pub struct Variable {
    /// idShort of its Property in `Metadata.Record` and in every Record.
    pub id_short: String,
    /// The element's `xs:*` type.
    pub value_type: XsType,
    /// The element's semanticId, if any (copied to the Record Property).
    pub semantic_id: Option<String>,
    /// ILP table its values go to (`<table_prefix><submodel idShort>`).
    pub table: String,
    /// The element's idShortPath (the ILP `element` symbol).
    pub element: String,
}

/// One asset (shell) with a Time Series submodel.
#[derive(Debug, Clone)]
pub struct Asset {
    /// The shell's id.
    pub shell_id: String,
    /// The shell's idShort (the ILP `asset` symbol).
    pub shell_id_short: String,
    /// Id of its Time Series submodel.
    pub submodel_id: String,
    /// Its variables (indices into [`History::variables`]), in mapping-rule order.
    pub variables: Vec<usize>,
}

/// The history of every asset: layout, settings and the local store.
#[derive(Debug)]
pub struct History {
    cfg: HistoryConfig,
    variables: Vec<Variable>,
    assets: Vec<Asset>,
    by_submodel: HashMap<String, usize>,
    /// Address of a route's target → variable (the dispatcher knows routes, not rules).
    by_target: HashMap<usize, usize>,
    store: RwLock<Store>,
    /// Wall-clock start of the gateway (ns), the LinkedSegment's start before any value came.
    started_nanos: i64,
}

/// Characters an idShort may not contain become `_`.
fn id_short_of(path: &str) -> String {
    let s: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_end_matches(['_', '-']).to_string();
    if s.starts_with(|c: char| c.is_ascii_alphabetic()) {
        s
    } else {
        format!("V_{s}")
    }
}

fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

impl History {
    /// Checks every `history = true` rule, adds (or takes over) a Time Series submodel per
    /// asset in `env`, and returns the history, or `None` when no rule asks for history.
    /// Reports all problems at once, with the rule's path. `rules` are those `router` was built
    /// from; `table_prefix` is the QuestDB sink's (the full history lives in its tables).
    pub fn install(
        cfg: &HistoryConfig,
        rules: &[MappingRule],
        table_prefix: &str,
        env: &mut Environment,
        router: &Router,
    ) -> Result<Option<History>, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut variables = Vec::new();
        let mut assets: Vec<Asset> = Vec::new();
        let mut targets = Vec::new();
        for (i, (rule, route)) in rules.iter().zip(&router.routes).enumerate() {
            if !rule.history {
                continue;
            }
            let at = format!("mapping[{i}].history");
            if route.location.kind != ElementKind::Property {
                errors.push(
                    &at,
                    format!(
                        "{} is a {:?}; a Time Series Record holds one value per variable, so history needs a Property",
                        rule.path, route.location.kind
                    ),
                );
                continue;
            }
            let Some(shell) = shell_referencing(env, &rule.submodel) else {
                errors.push(
                    &at,
                    format!(
                        "no shell references submodel {:?}; the Time Series submodel belongs to a shell",
                        rule.submodel
                    ),
                );
                continue;
            };
            let shell_id = crate::aas::id_of(shell).unwrap_or_default().to_string();
            let a = match assets.iter().position(|a| a.shell_id == shell_id) {
                Some(a) => a,
                None => {
                    assets.push(Asset {
                        shell_id: shell_id.clone(),
                        shell_id_short: route.target.submodel.shell_id_short.to_string(),
                        submodel_id: String::new(),
                        variables: Vec::new(),
                    });
                    assets.len() - 1
                }
            };
            let t = &route.target;
            let mut id_short = id_short_of(&t.id_short_path);
            let taken = |name: &str, vars: &[Variable], a: &Asset| {
                name == "Time" || a.variables.iter().any(|&v| vars[v].id_short == name)
            };
            if taken(&id_short, &variables, &assets[a]) {
                id_short = id_short_of(&format!("{}_{}", t.submodel.id_short, t.id_short_path));
            }
            if taken(&id_short, &variables, &assets[a]) {
                errors.push(
                    &at,
                    format!("{id_short:?} is already a variable of the Time Series of shell {shell_id:?}"),
                );
                continue;
            }
            assets[a].variables.push(variables.len());
            targets.push(std::ptr::from_ref(route.target) as usize);
            variables.push(Variable {
                id_short,
                value_type: route.location.value_type,
                semantic_id: t.semantic_id().map(str::to_string),
                table: format!("{table_prefix}{}", t.submodel.id_short),
                element: t.id_short_path.to_string(),
            });
        }
        errors.into_result()?;
        if variables.is_empty() {
            return Ok(None);
        }
        for asset in &mut assets {
            let vars: Vec<&Variable> = asset.variables.iter().map(|&v| &variables[v]).collect();
            asset.submodel_id = submodel::install(env, &asset.shell_id, &vars).map_err(|e| {
                let mut errors = ConfigErrors::default();
                errors.push("history", e);
                errors
            })?;
        }
        let mut group_of = vec![0; variables.len()];
        for (g, a) in assets.iter().enumerate() {
            for &v in &a.variables {
                group_of[v] = g;
            }
        }
        let h = cfg;
        Ok(Some(History {
            store: RwLock::new(Store::new(group_of, h.window_s, h.max_records_per_variable)),
            by_submodel: assets
                .iter()
                .enumerate()
                .map(|(i, a)| (a.submodel_id.clone(), i))
                .collect(),
            by_target: targets.into_iter().zip(0..).collect(),
            variables,
            assets,
            cfg: cfg.clone(),
            started_nanos: now_nanos(),
        }))
    }

    /// Keeps the values of history variables among `updates` (the dispatcher's batch): one map
    /// lookup and one ring push per value, under one lock per batch.
    pub fn record<'a>(&self, updates: impl IntoIterator<Item = &'a SubmodelUpdate>) {
        let now = now_nanos();
        let mut store = self.store.write().expect("history lock");
        for update in updates {
            if let Some(&var) = self
                .by_target
                .get(&(std::ptr::from_ref(update.target) as usize))
            {
                store.push(
                    var,
                    Sample {
                        ts: update.source_ts_nanos,
                        value: update.value.clone(),
                        status: update.status,
                    },
                    now,
                );
            }
        }
    }

    /// The newest values (at most `max`, oldest first) of the history variable fed by `target`
    /// (a route's target): `(source timestamp ns, value, status)`; `None` when that element is
    /// no history variable. For the status page's trend line.
    pub fn recent(
        &self,
        target: &crate::model::ElementTarget,
        max: usize,
    ) -> Option<Vec<(i64, crate::core::TypedValue, u32)>> {
        let &var = self.by_target.get(&(std::ptr::from_ref(target) as usize))?;
        let store = self.store.read().expect("history lock");
        let n = store.samples(var).count();
        Some(
            store
                .samples(var)
                .skip(n.saturating_sub(max))
                .map(|s| (s.ts, s.value.clone(), s.status))
                .collect(),
        )
    }

    /// The assets with a Time Series submodel.
    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }

    /// Every history variable.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The settings.
    pub fn config(&self) -> &HistoryConfig {
        &self.cfg
    }

    /// Bytes the local store occupies now, and its bound (see [`Store::bound_bytes`]).
    pub fn memory(&self) -> (usize, usize) {
        let store = self.store.read().expect("history lock");
        (store.bytes(), store.bound_bytes())
    }

    /// Values held in the local store, all variables together.
    pub fn stored_values(&self) -> usize {
        self.store.read().expect("history lock").len()
    }

    /// True when `sm` (a submodel of the environment) is a Time Series submodel of this history.
    pub fn serves(&self, sm_id: &str) -> bool {
        self.by_submodel.contains_key(sm_id)
    }

    /// The submodel `sm` with its segments filled in from the store (the newest records that
    /// fit `max_values_per_response`), or `None` when `sm` is not a history submodel.
    /// (`sm` is materialised only when it is one: other submodels can be large.)
    pub fn live_submodel(&self, sm: &crate::aas::Node) -> Option<Value> {
        let &a = self.by_submodel.get(crate::aas::id_of(sm)?)?;
        let store = self.store.read().expect("history lock");
        let view = submodel::Segments::compute(self, &store, a);
        let mut budget = self.cfg.max_values_per_response;
        let fit = view
            .records
            .iter()
            .rev()
            .enumerate()
            .take_while(|(i, r)| {
                let ok = *i == 0 || r.values() <= budget;
                budget = budget.saturating_sub(r.values());
                ok
            })
            .count();
        let skip = view.records.len() - fit;
        let records = submodel::records_json(self, a, &view.records[skip..], &view);
        let mut sm = sm.to_value();
        submodel::fill(self, a, &mut sm, &view, records);
        Some(sm)
    }

    /// Records of submodel `sm_id` with `from <= Time <= to` (ns since the epoch), page
    /// `cursor`.. of at most `limit` records and `max_values_per_response` values (at least
    /// one record), as Record SMCs, and whether more follow. `None` when `sm_id` is not a
    /// history submodel.
    pub fn records_page(
        &self,
        sm_id: &str,
        from: i64,
        to: i64,
        cursor: usize,
        limit: Option<usize>,
    ) -> Option<(Vec<Value>, bool)> {
        let &a = self.by_submodel.get(sm_id)?;
        let store = self.store.read().expect("history lock");
        let view = submodel::Segments::compute(self, &store, a);
        let limit = limit.unwrap_or(usize::MAX);
        let mut budget = self.cfg.max_values_per_response;
        let mut in_range = view
            .records
            .iter()
            .filter(|r| r.ts >= from && r.ts <= to)
            .skip(cursor);
        let mut page = Vec::new();
        for r in in_range.by_ref() {
            if page.len() == limit || (!page.is_empty() && r.values() > budget) {
                let records = submodel::records_json(self, a, &page, &view);
                return Some((records, true));
            }
            budget = budget.saturating_sub(r.values());
            page.push(r.clone());
        }
        Some((submodel::records_json(self, a, &page, &view), false))
    }
}

/// The first shell that references submodel `sm_id`.
fn shell_referencing<'e>(env: &'e Environment, sm_id: &str) -> Option<&'e Value> {
    env.shells.iter().find(|shell| {
        shell
            .get("submodels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|r| r.pointer("/keys/0/value").and_then(Value::as_str) == Some(sm_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_shorts_are_valid() {
        assert_eq!(id_short_of("SpindleSpeed"), "SpindleSpeed");
        assert_eq!(id_short_of("Axes.X"), "Axes_X");
        assert_eq!(id_short_of("Pos[2]"), "Pos_2");
        assert_eq!(id_short_of("1st"), "V_1st");
    }
}
