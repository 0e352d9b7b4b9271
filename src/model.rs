//! The types every stage of the pipeline shares.
//!
//! A [`Reading`] is what a source observed (a value change, already a protocol-free
//! [`TypedValue`]; both live in [`crate::core`]); the mapping turns it into a
//! [`SubmodelUpdate`], which the AAS store, the sinks and the API all consume. Updates travel in
//! batches (`Arc<[SubmodelUpdate]>`) so that fanning one batch out to several sinks costs one
//! reference count per sink, not one copy per value.

use std::sync::Arc;

// The protocol-free types live in the leaf module `core`; re-exported so that every stage
// keeps naming them `model::…`.
pub use crate::core::{format_timestamp, Quality, Reading, ReadingBatch, TypedValue};

/// Where an update goes: resolved once, at start, from a mapping rule.
///
/// Serialised once into the outbox (entries refer to it by id), so a restart with a changed
/// config still delivers what an earlier config queued.
///
/// Targets live as long as the process (see [`ElementTarget::leak`]): every update refers to
/// its target by a plain `&'static` reference. A shared `Arc` cost a reference count increment
/// and decrement per value, each a cache miss on a different target: about a tenth of the
/// gateway's CPU at 100k values/s.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ElementTarget {
    /// Submodel identifier (IRI/URN) the element lives in. The three ids are the same for
    /// every element of a submodel: shared (interned), not copied per element. Serialised as
    /// plain strings, as before (serde's `rc` feature), so older outbox files read back.
    pub submodel_id: Arc<str>,
    /// Submodel idShort (used for the time-series table name).
    pub submodel_id_short: Arc<str>,
    /// idShort of the shell that references the submodel (the asset, in MQTT topics and ILP).
    pub shell_id_short: Arc<str>,
    /// Dotted idShortPath of the element inside the submodel, e.g. `Axis.Speed` or `Positions[2]`.
    /// A `Box<str>`, not a `String`: a gateway holds one per mapped element (8 bytes each).
    pub id_short_path: Box<str>,
    /// The element's `valueType` (`xs:double`, ...); for lists, the list's `valueTypeListElement`.
    pub value_type: crate::core::XsType,
    /// Id of this target in the outbox's target table, assigned on first use.
    #[serde(skip)]
    pub outbox_id: std::sync::OnceLock<u32>,
    /// Unit of the value (mapping rule `unit`, else the IEC 61360 unit of the element's
    /// ConceptDescription), for sinks that label values. Shared (interned) like the ids: a
    /// plant has a few units for thousands of elements.
    pub unit: Option<Arc<str>>,
    /// Semantic id of the element (mapping rule `semantic_id`, else the first key of the
    /// element's semanticId), for sinks that label values. Shared (interned) like the unit.
    pub semantic_id: Option<Arc<str>>,
}

// 112 bytes, down from 160 (topic and owned texts): one per mapped element, 100k and more.
const _: () = assert!(std::mem::size_of::<ElementTarget>() <= 112);

impl ElementTarget {
    /// Gives the target the lifetime of the process. Targets are made once, at start (one per
    /// mapping rule, all in one slice, see `Router::build`; and those of an outbox file that
    /// records still refer to); they are never freed, which is what lets an update carry a
    /// reference without a reference count.
    pub fn leak(self) -> &'static ElementTarget {
        Box::leak(Box::new(self))
    }

    /// A double-valued element `path` of submodel `urn:sm:<submodel>` (idShort `submodel`) of
    /// shell `shell`: the target unit tests of the sinks and the outbox deliver to.
    #[cfg(test)]
    pub fn for_test(shell: &str, submodel: &str, path: &str) -> ElementTarget {
        ElementTarget {
            submodel_id: format!("urn:sm:{submodel}").into(),
            submodel_id_short: submodel.into(),
            shell_id_short: shell.into(),
            id_short_path: path.into(),
            value_type: crate::core::XsType::Double,
            outbox_id: Default::default(),
            unit: None,
            semantic_id: None,
        }
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

/// Asks the CPU to load every cache line of `t` (a target spans about three: the fields the
/// outbox and the sinks read are in different ones).
#[inline(always)]
fn prefetch_target(t: &ElementTarget) {
    let p: *const u8 = std::ptr::from_ref(t).cast();
    for offset in (0..std::mem::size_of::<ElementTarget>()).step_by(64) {
        prefetch(p.wrapping_add(offset));
    }
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
    fn prefetching_yields_every_update_once_in_order() {
        let target = ElementTarget {
            submodel_id: "urn:sm".into(),
            submodel_id_short: "Op".into(),
            shell_id_short: "M1".into(),
            id_short_path: "X".into(),
            value_type: crate::core::XsType::Int,
            outbox_id: Default::default(),
            unit: None,
            semantic_id: None,
        }
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
