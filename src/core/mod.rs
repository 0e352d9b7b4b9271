//! The core: types and helpers every component shares, depending on nothing else in the crate.
//!
//! Arrows point down only: sources, mapping, the AAS store, the outbox and the sinks depend on
//! `core`; `core` depends on no other module of the crate (a test below checks it), so it can
//! never be part of an import cycle.
//!
//! - [`TypedValue`], [`Quality`]: a value in the gateway's protocol-free form and its quality;
//! - [`Reading`], [`ReadingBatch`]: what a source emits;
//! - [`XsType`]: the `xs:*` types of AAS elements and the coercion of values to them;
//! - [`Backoff`]: retry delays with jitter;
//! - [`conf`]: the config loader's machinery and [`conf::ConfigErrors`], so each component's
//!   config section validates itself without depending on the aggregate config module;
//! - [`LeakedSet`], [`leaked_str`]: one process-wide copy per distinct value of the
//!   configuration (ids and names repeated by many rules);
//! - [`LatencyHistogram`]: the end-to-end latency each sink records (read by `/metrics`).

pub mod backoff;
pub mod conf;
pub mod intern;
pub mod latency;
pub mod reading;
pub mod value;
pub mod xs;

pub use backoff::Backoff;
pub use intern::{leaked_str, LeakedSet};
pub use latency::{LatencyHistogram, LatencySnapshot, ADDED_LATENCY_BUCKETS_S, LATENCY_BUCKETS_S};
pub use reading::{Reading, ReadingBatch};
pub use value::{format_timestamp, Quality, TypedValue};
pub use xs::XsType;

#[cfg(test)]
mod tests {
    /// `core` must stay a leaf: no path from the crate root in it may leave it.
    #[test]
    fn core_depends_on_no_other_module() {
        let mut files = vec![];
        let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        let mut checked = 0;
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            // Spelled in two parts so that this test's own source does not match.
            let root = concat!("crate", "::");
            for (no, line) in text.lines().enumerate() {
                let mut rest = line;
                while let Some(at) = rest.find(root) {
                    rest = &rest[at + root.len()..];
                    assert!(
                        rest.starts_with("core"),
                        "{}:{}: core must not depend on other modules: {line}",
                        path.display(),
                        no + 1
                    );
                }
            }
            checked += 1;
        }
        assert!(checked >= 4, "read the core's files");
    }
}
