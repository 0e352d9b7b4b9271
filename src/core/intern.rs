//! Interning: one process-wide copy per distinct value.
//!
//! At 100k mapping rules the same few strings and records (a submodel's id and idShort, its
//! shell's idShort, a node's namespace URI, an element's unit and semantic id) would otherwise
//! be copied into every rule: megabytes of identical text. They come from the configuration,
//! a bounded set that lives as long as the gateway, so each is leaked once and shared as a
//! `&'static` reference (8 bytes, no reference count).

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};

/// A process-wide set of values that live as long as the process: one leaked copy per
/// distinct value, for records that many long-lived objects share (a submodel's names, the
/// keys of the stored AAS trees).
///
/// Only for a vocabulary bounded by the configuration (and what an outbox file recorded):
/// nothing is ever freed, so values seen at run time (requests, readings) must not go here.
pub struct LeakedSet<T: ?Sized + 'static> {
    values: OnceLock<Mutex<HashSet<&'static T>>>,
}

impl<T: ?Sized + Eq + Hash> Default for LeakedSet<T> {
    fn default() -> Self {
        LeakedSet::new()
    }
}

impl<T: ?Sized + Eq + Hash> LeakedSet<T> {
    /// An empty set (for a `static`).
    pub const fn new() -> Self {
        LeakedSet {
            values: OnceLock::new(),
        }
    }

    /// The shared copy of `value`, leaked from `make()` on first sight.
    pub fn get_or_leak(&self, value: &T, make: impl FnOnce() -> Box<T>) -> &'static T {
        let mut set = self
            .values
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(&shared) = set.get(value) {
            return shared;
        }
        let leaked: &'static T = Box::leak(make());
        set.insert(leaked);
        leaked
    }
}

/// The process-wide shared copy of `s` (see [`LeakedSet`] for what may go in).
pub fn leaked_str(s: &str) -> &'static str {
    static STRINGS: LeakedSet<str> = LeakedSet::new();
    STRINGS.get_or_leak(s, || s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaked_set_keeps_one_copy_per_value() {
        static SET: LeakedSet<(u32, String)> = LeakedSet::new();
        let a = SET.get_or_leak(&(1, "x".into()), || Box::new((1, "x".into())));
        let b = SET.get_or_leak(&(1, "x".into()), || unreachable!("already there"));
        let c = SET.get_or_leak(&(2, "x".into()), || Box::new((2, "x".into())));
        assert!(std::ptr::eq(a, b));
        assert!(!std::ptr::eq(a, c));
        assert!(std::ptr::eq(
            leaked_str("k"),
            leaked_str(&String::from("k"))
        ));
    }
}
