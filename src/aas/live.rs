//! The live AAS store shared by the dispatcher (writer) and the API (readers).
//!
//! Live values are not written into the AAS JSON tree as they arrive. The dispatcher parks the
//! latest value of each mapped element in a flat slot (a vector index and a clone of the
//! value), and the tree is brought up to date only when somebody reads it, with the latest value
//! of each element that changed since the last read. At 100k values/s the tree is then rewritten
//! only as often as the API is asked, never per value, and the dispatcher never waits for an API
//! request that holds the tree (a big `$value` or history answer).
//!
//! Memory is bounded: one slot per mapped element, one dirty mark per slot. A slot is small
//! (about 30 bytes with its status and timestamp) because there are 100k of them; where its
//! element lives is read from the rule's route ([`RuleLocations`]), not copied.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{ElementLocation, Environment};
use crate::core::TypedValue;

/// Where each mapping rule writes, by rule number. The router implements it with the
/// locations its routes hold, so the live store keeps no copy of its own.
pub trait RuleLocations: Send + Sync + std::fmt::Debug {
    /// Number of rules.
    fn rule_count(&self) -> usize;
    /// Where rule `rule` (below [`Self::rule_count`]) writes.
    fn location(&self, rule: usize) -> &ElementLocation;
}

impl RuleLocations for Vec<ElementLocation> {
    fn rule_count(&self) -> usize {
        self.len()
    }

    fn location(&self, rule: usize) -> &ElementLocation {
        &self[rule]
    }
}

/// The environment plus the values waiting to be written into it.
#[derive(Debug)]
pub struct LiveEnvironment {
    tree: RwLock<Environment>,
    /// Where each rule writes.
    rules: Arc<dyn RuleLocations>,
    /// Slot of each mapping rule (rules that map to the same element share one slot, so the
    /// value that arrived last wins, as if written at once) and the first rule of each slot
    /// (whose location is the slot's). Both empty when every rule has its own element (the
    /// usual case): rule `i` then writes slot `i`.
    slot_of_rule: Vec<u32>,
    rule_of_slot: Vec<u32>,
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
    /// Latest value per slot, or [`Latest::Clean`] when the slot holds none to apply.
    latest: Vec<Latest>,
    /// Slots holding a value to apply, in the order they were first marked (at most one entry
    /// per slot).
    dirty_slots: Vec<u32>,
    /// Status code of each slot's latest value, and (below) its source timestamp (ns; kept,
    /// not taken by a read): the AAS value has no place for them, the status page shows them.
    /// Two arrays rather than one of pairs: a `(u32, i64)` is padded to 16 bytes.
    codes: Vec<u32>,
    times: Vec<i64>,
}

/// A slot's value waiting to be written into the tree: numbers and booleans (nearly every
/// value) inline in 16 bytes, anything else boxed. A `TypedValue` is 32 bytes, plus a dirty
/// flag each, for every mapped element.
#[derive(Debug, Default)]
enum Latest {
    /// Nothing to apply.
    #[default]
    Clean,
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Text, lists, bytes, instants.
    Boxed(Box<TypedValue>),
}

impl Latest {
    /// Stores `value`, reusing the box (and a text's buffer) of a boxed value still waiting.
    fn set(&mut self, value: &TypedValue) {
        *self = match value {
            TypedValue::Null => Latest::Null,
            TypedValue::Bool(b) => Latest::Bool(*b),
            TypedValue::Int(i) => Latest::Int(*i),
            TypedValue::UInt(u) => Latest::UInt(*u),
            TypedValue::Float(f) => Latest::Float(*f),
            other => {
                if let Latest::Boxed(boxed) = self {
                    (**boxed).clone_from(other);
                    return;
                }
                Latest::Boxed(Box::new(other.clone()))
            }
        }
    }

    fn is_clean(&self) -> bool {
        matches!(self, Latest::Clean)
    }

    /// The value, leaving the slot clean.
    fn take(&mut self) -> TypedValue {
        match std::mem::take(self) {
            // Only dirty slots are taken; a clean one would show no value, as a `Null` does.
            Latest::Clean | Latest::Null => TypedValue::Null,
            Latest::Bool(b) => TypedValue::Bool(b),
            Latest::Int(i) => TypedValue::Int(i),
            Latest::UInt(u) => TypedValue::UInt(u),
            Latest::Float(f) => TypedValue::Float(f),
            Latest::Boxed(v) => *v,
        }
    }
}

/// How many values a read moves out of the pending slots at a time (see
/// [`LiveEnvironment::apply_pending`]).
const APPLY_CHUNK: usize = 1024;

impl LiveEnvironment {
    /// Wraps `env`; `rule_locations[i]` is where mapping rule `i` writes (copied: the gateway
    /// uses [`Self::with_rules`], which shares the router's).
    pub fn new<'a>(
        env: Environment,
        rule_locations: impl IntoIterator<Item = &'a ElementLocation>,
    ) -> LiveEnvironment {
        let locations: Vec<ElementLocation> = rule_locations.into_iter().cloned().collect();
        LiveEnvironment::with_rules(env, Arc::new(locations))
    }

    /// Wraps `env`; `rules` says where each mapping rule writes.
    pub fn with_rules(env: Environment, rules: Arc<dyn RuleLocations>) -> LiveEnvironment {
        let (slot_of_rule, rule_of_slot) = slots(&*rules);
        let slots = if rule_of_slot.is_empty() {
            rules.rule_count()
        } else {
            rule_of_slot.len()
        };
        LiveEnvironment {
            tree: RwLock::new(env),
            rules,
            slot_of_rule,
            rule_of_slot,
            pending: Mutex::new(Pending {
                latest: std::iter::repeat_with(Latest::default)
                    .take(slots)
                    .collect(),
                dirty_slots: Vec::with_capacity(slots),
                codes: vec![0; slots],
                times: vec![0; slots],
            }),
        }
    }

    /// The slot mapping rule `rule` writes; `slots` is the number of slots (the length of the
    /// pending arrays, known to the caller under the lock: no call through `rules` per value).
    fn slot(&self, rule: u32, slots: usize) -> Option<usize> {
        if self.slot_of_rule.is_empty() {
            Some(rule as usize).filter(|&slot| slot < slots)
        } else {
            self.slot_of_rule
                .get(rule as usize)
                .map(|&slot| slot as usize)
        }
    }

    /// Where the element of slot `slot` lives.
    fn location(&self, slot: u32) -> &ElementLocation {
        let rule = match self.rule_of_slot.is_empty() {
            true => slot,
            false => self.rule_of_slot[slot as usize],
        };
        self.rules.location(rule as usize)
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
            dirty_slots,
            codes,
            times,
        } = &mut *p;
        let slots = latest.len();
        for (rule, value, code, ts) in values {
            let Some(slot) = self.slot(rule, slots) else {
                continue;
            };
            if latest[slot].is_clean() {
                dirty_slots.push(slot as u32);
            }
            latest[slot].set(value);
            codes[slot] = code;
            times[slot] = ts;
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
                let slot = self.slot(rule, p.latest.len())?;
                Some((*p.codes.get(slot)?, *p.times.get(slot)?))
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
    ///
    /// The values are moved out [`APPLY_CHUNK`] at a time, not all at once: with 100k
    /// elements changing every second a read would otherwise move ~4 MB into a temporary
    /// vector each time. Every slot marked before the read started is applied: while the tree
    /// is held no other read takes from the marks, and the dispatcher only appends to them
    /// (a slot already taken and marked again is applied by the next read).
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
        let mut chunk: Vec<(u32, TypedValue)> = Vec::with_capacity(APPLY_CHUNK);
        // Marks taken so far (from the front) and how many there were when this read began.
        let (mut taken, mut marked) = (0, None);
        loop {
            {
                let mut p = self.pending.lock().expect("live values lock");
                let Pending {
                    latest,
                    dirty_slots,
                    ..
                } = &mut *p;
                let marked = *marked.get_or_insert(dirty_slots.len());
                let end = marked.min(taken + APPLY_CHUNK);
                chunk.extend(
                    dirty_slots[taken..end]
                        .iter()
                        .map(|&slot| (slot, latest[slot as usize].take())),
                );
                taken = end;
                if taken == marked {
                    dirty_slots.drain(..taken);
                }
            }
            for (slot, value) in chunk.drain(..) {
                tree.apply(self.location(slot), &value);
            }
            if Some(taken) == marked {
                return;
            }
        }
    }
}

/// The slots of mapping rules `rules`: one slot per distinct element, in the order of their
/// first rule. Returns the slot of each rule and the first rule of each slot, both empty when
/// every rule has its own element (rule `i` writes slot `i`).
///
/// Sorts rule numbers by location instead of keying a `HashMap` by them: a map of 100k
/// cloned locations was ~20 MB at start, which glibc then kept in the resident set.
fn slots(rules: &dyn RuleLocations) -> (Vec<u32>, Vec<u32>) {
    let key = |rule: u32| {
        let loc = rules.location(rule as usize);
        (loc.submodel, loc.steps())
    };
    let mut by_location: Vec<u32> = (0..rules.rule_count() as u32).collect();
    by_location.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)).then(a.cmp(&b)));
    // The first (lowest) rule of each element stands for it; every rule points at it.
    let mut first_of = vec![0u32; by_location.len()];
    let mut distinct = 0;
    for (i, &rule) in by_location.iter().enumerate() {
        let first = match i.checked_sub(1).map(|prev| by_location[prev]) {
            Some(prev) if key(prev) == key(rule) => first_of[prev as usize],
            _ => {
                distinct += 1;
                rule
            }
        };
        first_of[rule as usize] = first;
    }
    drop(by_location);
    if distinct == first_of.len() {
        return (Vec::new(), Vec::new());
    }
    // Slots are numbered in the order of each element's first rule; a first rule comes before
    // the others of its element, so its slot is known when they are reached.
    let mut rule_of_slot = Vec::with_capacity(distinct);
    let mut slot_of_rule = first_of;
    for rule in 0..slot_of_rule.len() {
        let first = slot_of_rule[rule] as usize;
        slot_of_rule[rule] = if first == rule {
            rule_of_slot.push(rule as u32);
            (rule_of_slot.len() - 1) as u32
        } else {
            slot_of_rule[first]
        };
    }
    (slot_of_rule, rule_of_slot)
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
        env.element(&loc)
            .get("value")
            .map(crate::aas::Node::to_value)
            .unwrap_or_default()
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

    #[test]
    fn rules_onto_one_element_share_a_slot_numbered_by_first_rule() {
        let tree = env();
        let a = tree.locate("urn:sm", "A").unwrap();
        let b = tree.locate("urn:sm", "B").unwrap();
        let rules = vec![b.clone(), a.clone(), b.clone(), b.clone(), a.clone()];
        let (slot_of_rule, rule_of_slot) = slots(&rules);
        assert_eq!(slot_of_rule, [0, 1, 0, 0, 1]);
        assert_eq!(rule_of_slot, [0, 1]);
        // Distinct elements: no tables, rule i writes slot i.
        let (slot_of_rule, rule_of_slot) = slots(&vec![b, a]);
        assert!(slot_of_rule.is_empty() && rule_of_slot.is_empty());
        let live = LiveEnvironment::new(tree, []);
        assert_eq!(live.status_of_rules([0]), [None]);
    }

    #[test]
    fn text_and_missing_values_and_status_reach_the_element() {
        let tree = env();
        let a = tree.locate("urn:sm", "A").unwrap();
        let b = tree.locate("urn:sm", "B").unwrap();
        let live = LiveEnvironment::new(tree, [&a, &b]);
        assert_eq!(
            live.status_of_rules([0, 1, 2]),
            [Some((0, 0)), Some((0, 0)), None]
        );
        let text = TypedValue::Text("first".into());
        live.record_with_status([(0, &text, 0x4000_0000, 7)]);
        live.record_with_status([(0, &TypedValue::Text("second".into()), 0, 9)]);
        live.record_with_status([(1, &TypedValue::Null, 0x8000_0000, 8)]);
        assert_eq!(
            live.status_of_rules([0, 1]),
            [Some((0, 9)), Some((0x8000_0000, 8))]
        );
        let tree = live.read();
        assert_eq!(value_of(&tree, "A"), json!("second"));
        // No value (a Bad status without one): the element shows none.
        assert_eq!(value_of(&tree, "B"), serde_json::Value::Null);
        drop(tree);
        // The status stays after the values were applied.
        assert_eq!(live.status_of_rules([0]), [Some((0, 9))]);
    }

    #[test]
    fn a_read_applies_every_value_recorded_before_it_in_chunks() {
        let n = 3 * APPLY_CHUNK + 5;
        let elements: Vec<serde_json::Value> = (0..n)
            .map(|i| json!({"modelType": "Property", "idShort": format!("P{i}"), "valueType": "xs:int", "value": "0"}))
            .collect();
        let mut tree = Environment::default();
        tree.merge(
            json!({"submodels": [{"modelType": "Submodel", "id": "urn:sm", "idShort": "SM",
            "submodelElements": elements}]}),
        )
        .unwrap();
        let locations: Vec<ElementLocation> = (0..n)
            .map(|i| tree.locate("urn:sm", &format!("P{i}")).unwrap())
            .collect();
        let live = LiveEnvironment::new(tree, &locations);
        for round in 1..=2i64 {
            let values: Vec<TypedValue> =
                (0..n as i64).map(|i| TypedValue::Int(i * round)).collect();
            live.record(values.iter().enumerate().map(|(i, v)| (i as u32, v)));
            let tree = live.read();
            for i in [
                0,
                1,
                APPLY_CHUNK - 1,
                APPLY_CHUNK,
                2 * APPLY_CHUNK + 1,
                n - 1,
            ] {
                assert_eq!(
                    value_of(&tree, &format!("P{i}")),
                    json!((i as i64 * round).to_string()),
                    "P{i} round {round}"
                );
            }
        }
        assert!(live.pending.lock().unwrap().dirty_slots.is_empty());
    }
}
