//! The live AAS store shared by the dispatcher (writer) and the API (readers).
//!
//! Live values are not written into the AAS JSON tree as they arrive. The dispatcher parks the
//! latest value of each mapped element in a flat slot (a vector index and a clone of the
//! value), and the tree is brought up to date only when somebody reads it, with the latest value
//! of each element that changed since the last read. At 100k values/s the tree is then rewritten
//! only as often as the API is asked, never per value, and the dispatcher never waits for an API
//! request that holds the tree (a big `$value` or history answer).
//!
//! Memory is bounded: one slot per mapped element, one dirty mark per slot.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{ElementLocation, Environment};
use crate::core::TypedValue;

/// The environment plus the values waiting to be written into it.
#[derive(Debug)]
pub struct LiveEnvironment {
    tree: RwLock<Environment>,
    /// Slot of each mapping rule (rules that map to the same element share one slot, so the
    /// value that arrived last wins, as if written at once).
    slot_of_rule: Vec<usize>,
    /// Where each slot's element lives in the tree.
    locations: Vec<ElementLocation>,
    pending: Mutex<Pending>,
}

/// An environment without live values (served as loaded).
impl From<Environment> for LiveEnvironment {
    fn from(env: Environment) -> Self {
        LiveEnvironment::new(env, [])
    }
}

#[derive(Debug)]
struct Pending {
    /// Latest value per slot; meaningful only while the slot is marked dirty.
    latest: Vec<TypedValue>,
    dirty: Vec<bool>,
    /// Slots marked dirty, in the order they were first marked (at most one entry per slot).
    dirty_slots: Vec<usize>,
    /// Status code and source timestamp (ns) of each slot's latest value (kept, not taken by
    /// a read): the AAS value has no place for them, the status page shows them.
    status: Vec<(u32, i64)>,
}

impl LiveEnvironment {
    /// Wraps `env`; `rule_locations[i]` is where mapping rule `i` writes.
    pub fn new<'a>(
        env: Environment,
        rule_locations: impl IntoIterator<Item = &'a ElementLocation>,
    ) -> LiveEnvironment {
        let mut slot_by_element: HashMap<(usize, Vec<usize>), usize> = HashMap::new();
        let mut locations = Vec::new();
        let slot_of_rule = rule_locations
            .into_iter()
            .map(|loc| {
                *slot_by_element
                    .entry((loc.submodel, loc.steps.clone()))
                    .or_insert_with(|| {
                        locations.push(loc.clone());
                        locations.len() - 1
                    })
            })
            .collect();
        let slots = locations.len();
        LiveEnvironment {
            tree: RwLock::new(env),
            slot_of_rule,
            locations,
            pending: Mutex::new(Pending {
                latest: vec![TypedValue::Null; slots],
                dirty: vec![false; slots],
                dirty_slots: Vec::with_capacity(slots),
                status: vec![(0, 0); slots],
            }),
        }
    }

    /// Records the newest values of mapping rules (in arrival order). Cheap: no JSON is touched.
    pub fn record<'a>(&self, values: impl IntoIterator<Item = (u32, &'a TypedValue)>) {
        self.record_with_status(values.into_iter().map(|(rule, v)| (rule, v, 0, 0)));
    }

    /// [`Self::record`] with each value's OPC UA status code and source timestamp (ns).
    pub fn record_with_status<'a>(
        &self,
        values: impl IntoIterator<Item = (u32, &'a TypedValue, u32, i64)>,
    ) {
        let mut p = self.pending.lock().expect("live values lock");
        let Pending {
            latest,
            dirty,
            dirty_slots,
            status,
        } = &mut *p;
        for (rule, value, code, ts) in values {
            let Some(&slot) = self.slot_of_rule.get(rule as usize) else {
                continue;
            };
            latest[slot].clone_from(value);
            status[slot] = (code, ts);
            if !dirty[slot] {
                dirty[slot] = true;
                dirty_slots.push(slot);
            }
        }
    }

    /// The environment with every recorded value applied.
    pub fn read(&self) -> RwLockReadGuard<'_, Environment> {
        self.apply_pending();
        self.tree.read().expect("environment lock")
    }

    /// The environment for changes (start-up wiring and tests), with every recorded value
    /// applied first.
    pub fn write(&self) -> RwLockWriteGuard<'_, Environment> {
        self.apply_pending();
        self.tree.write().expect("environment lock")
    }

    /// Status code and source timestamp (ns; 0 = no value yet) of the latest value of each
    /// mapping rule in `rules` (`None` for an unknown rule), under one lock.
    pub fn status_of_rules(&self, rules: impl IntoIterator<Item = u32>) -> Vec<Option<(u32, i64)>> {
        let p = self.pending.lock().expect("live values lock");
        rules
            .into_iter()
            .map(|rule| {
                let slot = *self.slot_of_rule.get(rule as usize)?;
                p.status.get(slot).copied()
            })
            .collect()
    }

    /// Writes the recorded values into the tree.
    ///
    /// Lock order: tree, then pending. The pending values are moved out under the `pending`
    /// lock (no JSON is touched there) and written into the tree after it is released, so the
    /// dispatcher waits only for that move, never for JSON work or for an API request that
    /// holds the tree. The tree's write lock is taken first so that two readers applying at
    /// once cannot write an older batch over a newer one.
    fn apply_pending(&self) {
        if self
            .pending
            .lock()
            .expect("live values lock")
            .dirty_slots
            .is_empty()
        {
            return;
        }
        let mut tree = self.tree.write().expect("environment lock");
        let taken: Vec<(usize, TypedValue)> = {
            let mut p = self.pending.lock().expect("live values lock");
            let Pending {
                latest,
                dirty,
                dirty_slots,
                ..
            } = &mut *p;
            dirty_slots
                .drain(..)
                .map(|slot| {
                    dirty[slot] = false;
                    (slot, std::mem::replace(&mut latest[slot], TypedValue::Null))
                })
                .collect()
        };
        for (slot, value) in &taken {
            tree.apply(&self.locations[*slot], value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env() -> Environment {
        let doc = json!({
            "submodels": [{
                "modelType": "Submodel", "id": "urn:sm", "idShort": "SM",
                "submodelElements": [
                    {"modelType": "Property", "idShort": "A", "valueType": "xs:double", "value": "0"},
                    {"modelType": "Property", "idShort": "B", "valueType": "xs:int", "value": "0"}
                ]
            }]
        });
        let mut env = Environment::default();
        env.merge(doc).expect("valid environment");
        env
    }

    fn value_of(env: &Environment, path: &str) -> serde_json::Value {
        let loc = env.locate("urn:sm", path).unwrap();
        let mut v = &env.submodels[loc.submodel];
        for &step in &loc.steps {
            v = &v["submodelElements"][step];
        }
        v["value"].clone()
    }

    #[test]
    fn a_read_sees_the_latest_value_of_each_element() {
        let tree = env();
        let a = tree.locate("urn:sm", "A").unwrap();
        let b = tree.locate("urn:sm", "B").unwrap();
        // Rules 0 and 2 both write A: the value recorded last wins.
        let live = LiveEnvironment::new(tree, [&a, &b, &a]);
        live.record([(0, &TypedValue::Float(1.5)), (1, &TypedValue::Int(7))]);
        live.record([(2, &TypedValue::Float(2.5)), (0, &TypedValue::Float(3.5))]);
        assert_eq!(value_of(&live.read(), "A"), json!("3.5"));
        assert_eq!(value_of(&live.read(), "B"), json!("7"));
        // Nothing pending: a later read leaves the tree as it is.
        assert_eq!(value_of(&live.read(), "A"), json!("3.5"));
        live.record([(1, &TypedValue::Int(8))]);
        assert_eq!(value_of(&live.read(), "B"), json!("8"));
        assert_eq!(value_of(&live.read(), "A"), json!("3.5"));
    }

    #[test]
    fn values_of_unknown_rules_are_ignored() {
        let tree = env();
        let a = tree.locate("urn:sm", "A").unwrap();
        let live = LiveEnvironment::new(tree, [&a]);
        live.record([(5, &TypedValue::Float(9.0))]);
        assert_eq!(value_of(&live.read(), "A"), json!("0"));
    }
}
