//! The types every stage of the pipeline shares.
//!
//! A [`Reading`] is what a source observed (a value change, already a protocol-free
//! [`TypedValue`]; both live in [`crate::core`]); the mapping turns it into a
//! [`SubmodelUpdate`], which the AAS store, the sinks and the API all consume. Updates travel in
//! batches (`Arc<[SubmodelUpdate]>`) so that fanning one batch out to several sinks costs one
//! reference count per sink, not one copy per value.

use std::sync::Arc;

use crate::core::LeakedSet;

// The protocol-free types live in the leaf module `core`; re-exported so that every stage
// keeps naming them `model::…`.
pub use crate::core::{format_timestamp, Quality, Reading, ReadingBatch, TypedValue};

/// The names of a submodel that every element target of it shares: stored once per
/// submodel (see [`SubmodelNames::shared`]), not three strings per element.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SubmodelNames {
    /// Submodel identifier (IRI/URN).
    pub id: Box<str>,
    /// Submodel idShort (used for the time-series table name).
    pub id_short: Box<str>,
    /// idShort of the shell that references the submodel (the asset, in MQTT topics and ILP).
    pub shell_id_short: Box<str>,
}

impl SubmodelNames {
    /// The process-wide record of these names (made on first sight; a bounded set: the
    /// configured submodels and those an outbox file still refers to).
    pub fn shared(id: &str, id_short: &str, shell_id_short: &str) -> &'static SubmodelNames {
        static ALL: LeakedSet<SubmodelNames> = LeakedSet::new();
        let names = SubmodelNames {
            id: id.into(),
            id_short: id_short.into(),
            shell_id_short: shell_id_short.into(),
        };
        ALL.get_or_leak(&names, || Box::new(names.clone_boxed()))
    }

    fn clone_boxed(&self) -> SubmodelNames {
        SubmodelNames {
            id: self.id.clone(),
            id_short: self.id_short.clone(),
            shell_id_short: self.shell_id_short.clone(),
        }
    }
}

/// What sinks that label values read of an element: its unit and semantic id. Stored once
/// per distinct pair (a plant has a few units and a few hundred semantic ids for its 100k
/// elements).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ElementLabels {
    /// Unit of the value (mapping rule `unit`, else the IEC 61360 unit of the element's
    /// ConceptDescription).
    pub unit: Option<Box<str>>,
    /// Semantic id of the element (mapping rule `semantic_id`, else the first key of the
    /// element's semanticId).
    pub semantic_id: Option<Box<str>>,
}

impl ElementLabels {
    /// The process-wide record of this pair; `None` when both are absent.
    pub fn shared(unit: Option<&str>, semantic_id: Option<&str>) -> Option<&'static ElementLabels> {
        static ALL: LeakedSet<ElementLabels> = LeakedSet::new();
        if unit.is_none() && semantic_id.is_none() {
            return None;
        }
        let labels = ElementLabels {
            unit: unit.map(Into::into),
            semantic_id: semantic_id.map(Into::into),
        };
        Some(ALL.get_or_leak(&labels, || {
            Box::new(ElementLabels {
                unit: labels.unit.clone(),
                semantic_id: labels.semantic_id.clone(),
            })
        }))
    }
}

/// Where an update goes: resolved once, at start, from a mapping rule.
///
/// Serialised once into the outbox (entries refer to it by id), so a restart with a changed
/// config still delivers what an earlier config queued. The stored form has a field per name
/// ([`StoredTarget`]), as in earlier versions, so their outbox files read back.
///
/// Targets live as long as the process (see [`ElementTarget::leak`]): every update refers to
/// its target by a plain `&'static` reference. A shared `Arc` cost a reference count increment
/// and decrement per value, each a cache miss on a different target: about a tenth of the
/// gateway's CPU at 100k values/s.
#[derive(Debug, Clone)]
pub struct ElementTarget {
    /// The submodel the element lives in, and its shell (shared by the submodel's elements).
    pub submodel: &'static SubmodelNames,
    /// Dotted idShortPath of the element inside the submodel, e.g. `Axis.Speed` or `Positions[2]`.
    /// A `Box<str>`, not a `String`: a gateway holds one per mapped element (8 bytes each).
    pub id_short_path: Box<str>,
    /// The element's `valueType` (`xs:double`, ...); for lists, the list's `valueTypeListElement`.
    pub value_type: crate::core::XsType,
    /// Id of this target in the outbox's target table, assigned on first use.
    pub outbox_id: std::sync::OnceLock<u32>,
    /// Unit and semantic id, for sinks that label values (shared; `None` when neither is known).
    pub labels: Option<&'static ElementLabels>,
}

// 48 bytes, down from 112 (three names and two labels of their own): one per mapped element,
// 100k and more, and a target now fits one cache line of the CPU.
const _: () = assert!(std::mem::size_of::<ElementTarget>() <= 48);

impl ElementTarget {
    /// The target of element `id_short_path` of `submodel`.
    pub fn new(
        submodel: &'static SubmodelNames,
        id_short_path: &str,
        value_type: crate::core::XsType,
        unit: Option<&str>,
        semantic_id: Option<&str>,
    ) -> ElementTarget {
        ElementTarget {
            submodel,
            id_short_path: id_short_path.into(),
            value_type,
            outbox_id: Default::default(),
            labels: ElementLabels::shared(unit, semantic_id),
        }
    }

    /// Gives the target the lifetime of the process. Targets are made once, at start (one per
    /// mapping rule, all in one slice, see `Router::build`; and those of an outbox file that
    /// records still refer to); they are never freed, which is what lets an update carry a
    /// reference without a reference count.
    pub fn leak(self) -> &'static ElementTarget {
        Box::leak(Box::new(self))
    }

    /// Unit of the value, if known.
    pub fn unit(&self) -> Option<&'static str> {
        self.labels.and_then(|l| l.unit.as_deref())
    }

    /// Semantic id of the element, if known.
    pub fn semantic_id(&self) -> Option<&'static str> {
        self.labels.and_then(|l| l.semantic_id.as_deref())
    }

    /// A double-valued element `path` of submodel `urn:sm:<submodel>` (idShort `submodel`) of
    /// shell `shell`: the target unit tests of the sinks and the outbox deliver to.
    #[cfg(test)]
    pub fn for_test(shell: &str, submodel: &str, path: &str) -> ElementTarget {
        ElementTarget::new(
            SubmodelNames::shared(&format!("urn:sm:{submodel}"), submodel, shell),
            path,
            crate::core::XsType::Double,
            None,
            None,
        )
    }
}

/// The stored (serialised) form of an [`ElementTarget`]: the field names and order of earlier
/// versions, whose outbox files hold targets in this form (and the outbox finds a target
/// again by the text of this form).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredTarget<'a> {
    #[serde(borrow)]
    submodel_id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    submodel_id_short: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    shell_id_short: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    id_short_path: std::borrow::Cow<'a, str>,
    value_type: crate::core::XsType,
    #[serde(borrow)]
    unit: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    semantic_id: Option<std::borrow::Cow<'a, str>>,
}

impl serde::Serialize for ElementTarget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use std::borrow::Cow::Borrowed;
        StoredTarget {
            submodel_id: Borrowed(&self.submodel.id),
            submodel_id_short: Borrowed(&self.submodel.id_short),
            shell_id_short: Borrowed(&self.submodel.shell_id_short),
            id_short_path: Borrowed(&self.id_short_path),
            value_type: self.value_type,
            unit: self.unit().map(Borrowed),
            semantic_id: self.semantic_id().map(Borrowed),
        }
        .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for ElementTarget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let t = StoredTarget::deserialize(deserializer)?;
        Ok(ElementTarget::new(
            SubmodelNames::shared(&t.submodel_id, &t.submodel_id_short, &t.shell_id_short),
            &t.id_short_path,
            t.value_type,
            t.unit.as_deref(),
            t.semantic_id.as_deref(),
        ))
    }
}

/// One value for one submodel element, ready for the store and the sinks.
#[derive(Debug, Clone)]
pub struct SubmodelUpdate {
    /// Where the value goes (shared by every update of the element, see [`ElementTarget`]).
    pub target: &'static ElementTarget,
    pub value: TypedValue,
    /// OPC UA status code (0 = Good); Bad/Uncertain values are forwarded, never hidden.
    pub status: u32,
    pub source_ts_nanos: i64,
    pub server_ts_nanos: i64,
}

impl SubmodelUpdate {
    pub fn quality(&self) -> Quality {
        Quality::from_status(self.status)
    }
}

/// A batch of updates shared by every consumer.
pub type UpdateBatch = Arc<[SubmodelUpdate]>;

/// How many updates ahead [`prefetch_targets`] asks for an update's target; its idShortPath
/// text is asked for half as far ahead, once the target itself has arrived.
const PREFETCH_AHEAD: usize = 16;

/// Iterates `updates`, asking the CPU to load the element targets of the updates a few places
/// ahead.
///
/// Each update's target is one of 100k elements, in a table far larger than the caches: a
/// loop that reads them (outbox encoding, MQTT and ILP payloads) otherwise waits for memory
/// once or twice per value, a third of the gateway's CPU at 100k values/s. Asked for early,
/// the loads overlap with the work on the values before.
pub fn prefetch_targets<'a, I>(updates: I) -> impl Iterator<Item = &'a SubmodelUpdate>
where
    I: IntoIterator<Item = &'a SubmodelUpdate>,
    I::IntoIter: Clone,
{
    prefetching::<false, _>(updates.into_iter())
}

/// [`prefetch_targets`], and the idShortPath texts too, for loops that write them (payloads).
pub fn prefetch_targets_and_paths<'a, I>(updates: I) -> impl Iterator<Item = &'a SubmodelUpdate>
where
    I: IntoIterator<Item = &'a SubmodelUpdate>,
    I::IntoIter: Clone,
{
    prefetching::<true, _>(updates.into_iter())
}

/// The iterator of both: `PATHS` also asks for each idShortPath text, half as far ahead (it
/// reads the target for the text's address, which then has arrived).
fn prefetching<'a, const PATHS: bool, I>(updates: I) -> impl Iterator<Item = &'a SubmodelUpdate>
where
    I: Iterator<Item = &'a SubmodelUpdate> + Clone,
{
    let mut far = updates.clone();
    for u in far.by_ref().take(PREFETCH_AHEAD) {
        prefetch_target(u.target);
    }
    let mut near = updates.clone();
    for u in near
        .by_ref()
        .take(if PATHS { PREFETCH_AHEAD / 2 } else { 0 })
    {
        prefetch(u.target.id_short_path.as_ptr());
    }
    updates.inspect(move |_| {
        if let Some(u) = far.next() {
            prefetch_target(u.target);
        }
        if PATHS {
            if let Some(u) = near.next() {
                prefetch(u.target.id_short_path.as_ptr());
            }
        }
    })
}

/// Asks the CPU to load every cache line of `t`: its first and its last byte's (48 bytes in a
/// slice of them: every other target straddles two lines, and the outbox and the sinks read
/// fields at both ends).
#[inline(always)]
fn prefetch_target(t: &ElementTarget) {
    const SIZE: usize = std::mem::size_of::<ElementTarget>();
    const _: () = assert!(SIZE <= 64, "a target spans at most two cache lines");
    let p: *const u8 = std::ptr::from_ref(t).cast();
    prefetch(p);
    prefetch(p.wrapping_add(SIZE - 1));
}

/// Asks the CPU to load the cache line at `p` (a hint only; nothing on other architectures).
/// Any address will do, also one past the end of an allocation: nothing is read from it.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing into the program and never faults,
    // whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_stored_as_earlier_versions_stored_them_and_share_their_records() {
        let names = SubmodelNames::shared("urn:sm:Op", "Op", "M1");
        let t = ElementTarget::new(
            names,
            "Axis.X",
            crate::core::XsType::Double,
            Some("kW"),
            None,
        );
        // The text earlier versions wrote (derived, a field per name): the outbox finds a
        // stored target again by this text, so it must not change.
        let stored = r#"{"submodel_id":"urn:sm:Op","submodel_id_short":"Op","shell_id_short":"M1","id_short_path":"Axis.X","value_type":"xs:double","unit":"kW","semantic_id":null}"#;
        assert_eq!(serde_json::to_string(&t).unwrap(), stored);
        let back: ElementTarget = serde_json::from_str(stored).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), stored);
        // Read back, it shares the records of the targets made from the config.
        assert!(std::ptr::eq(back.submodel, names));
        assert!(std::ptr::eq(back.labels.unwrap(), t.labels.unwrap()));
        // Escaped text reads back too (serde cannot borrow it).
        let escaped = r#"{"submodel_id":"urn:sm:\"Op\"","submodel_id_short":"Op","shell_id_short":"M1","id_short_path":"A\\B","value_type":"xs:int","unit":null,"semantic_id":"0173-1#02-AAA\u00fc"}"#;
        let e: ElementTarget = serde_json::from_str(escaped).unwrap();
        assert_eq!(&*e.submodel.id, "urn:sm:\"Op\"");
        assert_eq!(&*e.id_short_path, "A\\B");
        assert_eq!(e.unit(), None);
        assert_eq!(e.semantic_id(), Some("0173-1#02-AAAü"));
        // Neither label: no record at all.
        let plain = ElementTarget::new(names, "Y", crate::core::XsType::Int, None, None);
        assert!(plain.labels.is_none());
    }

    #[test]
    fn prefetching_yields_every_update_once_in_order() {
        let target = ElementTarget::new(
            SubmodelNames::shared("urn:sm", "Op", "M1"),
            "X",
            crate::core::XsType::Int,
            None,
            None,
        )
        .leak();
        // Shorter than, as long as and longer than the distance prefetched ahead.
        for n in [
            0,
            1,
            PREFETCH_AHEAD / 2,
            PREFETCH_AHEAD,
            3 * PREFETCH_AHEAD + 1,
        ] {
            let updates: Vec<SubmodelUpdate> = (0..n as i64)
                .map(|i| SubmodelUpdate {
                    target,
                    value: TypedValue::Int(i),
                    status: 0,
                    source_ts_nanos: i,
                    server_ts_nanos: 0,
                })
                .collect();
            let want: Vec<i64> = (0..n as i64).collect();
            let seen: Vec<i64> = prefetch_targets(&updates)
                .map(|u| u.source_ts_nanos)
                .collect();
            assert_eq!(seen, want);
            let seen: Vec<i64> = prefetch_targets_and_paths(&updates)
                .map(|u| u.source_ts_nanos)
                .collect();
            assert_eq!(seen, want);
        }
    }
}
