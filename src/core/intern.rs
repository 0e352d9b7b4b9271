//! String interning: one shared `Arc<str>` per distinct text.
//!
//! At 100k mapping rules the same few strings (a submodel's id and idShort, its shell's
//! idShort, a node's namespace URI) would otherwise be copied into every rule: megabytes of
//! identical text. An [`Interner`] lives only while the rules are compiled; the `Arc`s it
//! handed out keep the text alive afterwards.

use std::collections::HashSet;
use std::sync::Arc;

/// Hands out one `Arc<str>` per distinct string it has seen.
#[derive(Debug, Default)]
pub struct Interner {
    seen: HashSet<Arc<str>>,
}

impl Interner {
    /// The shared copy of `s` (made on first sight).
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.seen.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.seen.insert(a.clone());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation() {
        let mut i = Interner::default();
        let a = i.intern("urn:sm:1");
        let b = i.intern(&String::from("urn:sm:1"));
        let c = i.intern("urn:sm:2");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(&*c, "urn:sm:2");
    }
}
