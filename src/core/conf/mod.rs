//! The config loader's machinery, shared by every component's config section: a TOML tree
//! that remembers where each value was set ([`tree`]), a deserializer over it that reports every
//! problem ([`de`], [`load`]), [`ConfigErrors`] for `validate()`, and redaction of secrets.
//!
//! It lives in the core so that a component's config section (`sources/opcua/config.rs`,
//! `sinks/mqtt/config.rs`, …) can validate itself without depending on the module that
//! aggregates all sections (the `config` module): arrows point down only.

pub mod de;
pub mod load;
pub mod tree;

use std::fmt;

pub use load::from_toml_str;

/// Shown instead of a secret in `Debug` output (and so in logs).
pub const REDACTED: &str = "<redacted>";

/// [`REDACTED`] when a secret is set.
pub fn redact(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| REDACTED)
}

/// Hides `password=` / `token=` values in a questdb-rs config string.
pub fn redact_conf(conf: &str) -> String {
    conf.split(';')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if ["password", "token", "token_x", "token_y"].contains(&k.trim()) => {
                format!("{k}={REDACTED}")
            }
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Every problem found in a config, each with the path of the offending setting.
#[derive(Debug, Default)]
pub struct ConfigErrors(pub Vec<String>);

impl ConfigErrors {
    /// Adds `path: message`.
    pub fn push(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// `Ok` when nothing was found.
    pub fn into_result(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

/// Most errors [`ConfigErrors`] prints: a generated config with one typo in 100k mapping rules
/// gets the count and the first ones, not 100k lines.
const MAX_SHOWN_ERRORS: usize = 200;

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} error(s) in the configuration:", self.0.len())?;
        for e in self.0.iter().take(MAX_SHOWN_ERRORS) {
            writeln!(f, "  - {e}")?;
        }
        if self.0.len() > MAX_SHOWN_ERRORS {
            writeln!(
                f,
                "  … and {} more (the first {MAX_SHOWN_ERRORS} are shown)",
                self.0.len() - MAX_SHOWN_ERRORS
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
