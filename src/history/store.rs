//! The local store of recent values: one bounded ring per history variable, in memory.
//!
//! Why memory and not redb: the InternalSegment is a *recent window* (minutes), the complete
//! history is in QuestDB (the LinkedSegment), and values already survive restarts in the
//! outbox until QuestDB confirmed them. A ring costs one push per value on the dispatcher's
//! hot path and no disk I/O; after a restart the window simply refills.
//!
//! Memory is bounded twice: by time (`window_s` of source time behind the asset's newest value)
//! and by count (`max_records_per_variable`, a hard cap that holds whatever the change rate).
//! A ring never allocates beyond the cap, so [`Store::bound_bytes`] is a true upper bound for
//! the fixed-size part; text values add their length (see [`Store::bytes`]).

use std::collections::VecDeque;

use crate::model::TypedValue;

/// One stored value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Source timestamp, nanoseconds since the Unix epoch (the QuestDB designated timestamp).
    pub ts: i64,
    /// The value, already in the element's `xs:*` type.
    pub value: TypedValue,
    /// OPC UA status code (0 = Good).
    pub status: u32,
}

/// Per-asset bookkeeping (an asset = a shell with a Time Series submodel).
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    /// Newest source timestamp of any variable of the asset (the window ends here).
    pub newest: Option<i64>,
    /// Oldest source timestamp recorded since start (the LinkedSegment starts here: everything
    /// later was also sent to QuestDB).
    pub first: Option<i64>,
    /// Wall-clock time (ns since the epoch) the asset's segment last changed.
    pub last_update: Option<i64>,
}

/// The rings of every history variable.
#[derive(Debug)]
pub struct Store {
    rings: Vec<VecDeque<Sample>>,
    /// Asset group of each ring.
    group_of: Vec<usize>,
    groups: Vec<GroupState>,
    window_nanos: i64,
    max_records: usize,
}

impl Store {
    /// A store for variables whose asset groups are `group_of` (one entry per variable).
    pub fn new(group_of: Vec<usize>, window_s: u64, max_records: usize) -> Store {
        let groups = group_of.iter().copied().max().map_or(0, |g| g + 1);
        Store {
            rings: group_of.iter().map(|_| VecDeque::new()).collect(),
            group_of,
            groups: vec![GroupState::default(); groups],
            window_nanos: (window_s as i64).saturating_mul(1_000_000_000),
            max_records: max_records.max(1),
        }
    }

    /// Appends a value of variable `var`; drops what fell out of the window or over the cap.
    /// `now_nanos` is the wall-clock time (for LastUpdate).
    pub fn push(&mut self, var: usize, sample: Sample, now_nanos: i64) {
        let g = self.group_of[var];
        let state = &mut self.groups[g];
        let newest = state.newest.map_or(sample.ts, |n| n.max(sample.ts));
        state.newest = Some(newest);
        state.first = Some(state.first.map_or(sample.ts, |f| f.min(sample.ts)));
        state.last_update = Some(now_nanos);
        let ring = &mut self.rings[var];
        if ring.len() == self.max_records {
            ring.pop_front();
        } else if ring.len() == ring.capacity() {
            // Grow by doubling, but never past the cap: the cap is also the allocation bound.
            let want = (ring.capacity().max(8) * 2).min(self.max_records);
            ring.reserve_exact(want - ring.len());
        }
        ring.push_back(sample);
        let oldest_allowed = newest.saturating_sub(self.window_nanos);
        while ring.front().is_some_and(|s| s.ts < oldest_allowed) {
            ring.pop_front();
        }
    }

    /// The state of asset group `g`.
    pub fn group(&self, g: usize) -> &GroupState {
        &self.groups[g]
    }

    /// Values of `var` inside the window of its asset, oldest first.
    pub fn samples(&self, var: usize) -> impl Iterator<Item = &Sample> {
        let newest = self.groups[self.group_of[var]].newest.unwrap_or(i64::MIN);
        let oldest_allowed = newest.saturating_sub(self.window_nanos);
        self.rings[var]
            .iter()
            .filter(move |s| s.ts >= oldest_allowed)
    }

    /// Number of variables.
    pub fn variables(&self) -> usize {
        self.rings.len()
    }

    /// Values held, all variables together.
    pub fn len(&self) -> usize {
        self.rings.iter().map(VecDeque::len).sum()
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the store occupies now: ring allocations plus the heap parts of text and list
    /// values (their capacities).
    pub fn bytes(&self) -> usize {
        let fixed: usize = self
            .rings
            .iter()
            .map(|r| r.capacity() * std::mem::size_of::<Sample>())
            .sum();
        let heap: usize = self
            .rings
            .iter()
            .flatten()
            .map(|s| heap_bytes(&s.value))
            .sum();
        fixed + heap + self.rings.capacity() * std::mem::size_of::<VecDeque<Sample>>()
    }

    /// Upper bound of the fixed-size part of [`Store::bytes`]: every ring full to the cap
    /// (text and list values add their lengths on top).
    pub fn bound_bytes(&self) -> usize {
        self.rings.len()
            * (self.max_records * std::mem::size_of::<Sample>()
                + std::mem::size_of::<VecDeque<Sample>>())
    }
}

fn heap_bytes(v: &TypedValue) -> usize {
    match v {
        TypedValue::Text(s) => s.capacity(),
        TypedValue::List(items) => {
            items.capacity() * std::mem::size_of::<TypedValue>()
                + items.iter().map(heap_bytes).sum::<usize>()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn sample(ts_s: i64, v: f64) -> Sample {
        Sample {
            ts: ts_s * S,
            value: TypedValue::Float(v),
            status: 0,
        }
    }

    #[test]
    fn window_drops_old_values_by_source_time() {
        let mut store = Store::new(vec![0, 0], 10, 1000);
        for t in 0..30 {
            store.push(0, sample(t, t as f64), 0);
        }
        let kept: Vec<i64> = store.samples(0).map(|s| s.ts / S).collect();
        assert_eq!(kept, (19..30).collect::<Vec<_>>());
        // A value of another variable of the same asset moves the window for both.
        store.push(1, sample(35, 0.0), 0);
        assert_eq!(store.samples(0).next().unwrap().ts / S, 25);
        assert_eq!(store.group(0).first, Some(0));
    }

    #[test]
    fn cap_holds_and_bounds_the_allocation() {
        let mut store = Store::new(vec![0], 3600, 100);
        for t in 0..10_000 {
            store.push(0, sample(t, 1.0), 0);
        }
        assert_eq!(store.len(), 100);
        assert_eq!(store.samples(0).next().unwrap().ts / S, 9_900);
        assert!(
            store.bytes() <= store.bound_bytes(),
            "{} > {}",
            store.bytes(),
            store.bound_bytes()
        );
    }

    #[test]
    fn groups_have_their_own_windows() {
        let mut store = Store::new(vec![0, 1], 10, 1000);
        store.push(0, sample(0, 1.0), 5);
        store.push(1, sample(100, 1.0), 7);
        assert_eq!(
            store.samples(0).count(),
            1,
            "asset 0's window is not moved by asset 1"
        );
        assert_eq!(store.group(1).last_update, Some(7));
    }
}
