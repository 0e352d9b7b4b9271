//! API security: bearer tokens and roles ([`tokens`]), HTTPS with optional client certificates
//! ([`tls`]), and checks on how the config file itself is protected. The middleware that
//! applies them to every request is the API's gatekeeper (`crate::api::gatekeeper`).
//!
//! Tokens are random 256-bit strings; the gateway keeps only their SHA-256 (a slow password
//! hash buys nothing for high-entropy secrets and would cost CPU on every request).

#![warn(missing_docs)]

pub mod tls;
pub mod tokens;

pub use tokens::{AuthConfig, Authenticator, Principal, Role, TokenEntry};

use std::path::Path;

/// Warns when a config file that holds secrets can be read by other users.
///
/// Returns the warning text (also logged) so callers and tests can see it. Only Unix modes are
/// checked; elsewhere this is a no-op.
pub fn check_config_permissions(path: &Path, has_secrets: bool) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if !has_secrets {
            return None;
        }
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            let text = format!(
                "{} contains passwords or secrets but is readable by group/others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
            tracing::warn!("{text}");
            return Some(text);
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = (path, has_secrets);
        None
    }
}

/// SHA-256 as lower-case hex; it lives in the audit log (its hash chain), the lowest module
/// that needs it, so that `audit` does not depend on `security`.
pub use crate::audit::sha256_hex;

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn world_readable_config_with_secrets_is_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_config_permissions(&p, true).is_some());
        assert!(check_config_permissions(&p, false).is_none());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_config_permissions(&p, true).is_none());
    }
}
