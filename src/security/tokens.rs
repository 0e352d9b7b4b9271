//! Bearer tokens and roles.
//!
//! A token is `aasg_` + 43 base64url characters (32 random bytes from the OS). The config holds
//! only `sha256 = "<hex>"` lines, produced by `aas-gateway token new --role writer`, so a leaked
//! config file does not leak a usable token.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use serde::Deserialize;

/// What a caller may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read shells, submodels, values and `/metrics`.
    Reader,
    /// Also write values back to OPC UA (`PATCH .../$value`).
    Writer,
    /// Everything; reserved for administrative endpoints.
    Admin,
}

impl Role {
    /// The role's name as used in config and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "reader" => Ok(Role::Reader),
            "writer" => Ok(Role::Writer),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("{s:?} is not a role: use reader, writer or admin")),
        }
    }
}

/// One accepted token, as stored in the config (`[[api.auth.tokens]]`) or the tokens file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Who holds the token (a person or system); recorded in the audit log.
    pub name: String,
    /// What the token may do.
    pub role: Role,
    /// SHA-256 of the token, lower-case hex (64 characters). Never the token itself.
    pub sha256: String,
}

/// `[api.auth]`: who may use the API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Allow reads without a token. Default: `true` when no token is configured (the demo),
    /// `false` as soon as any token is configured. Writes always need a writer token.
    pub anonymous_read: Option<bool>,
    /// Accepted tokens (hashes only).
    pub tokens: Vec<TokenEntry>,
    /// A TOML file with more `[[tokens]]` entries (same fields), relative to the config file;
    /// lets the token list live in a file readable only by the gateway.
    pub tokens_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

/// The caller of a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `name`, or `anonymous`.
    pub name: String,
    /// What it may do; `None` for an anonymous caller when anonymous reads are off.
    pub role: Option<Role>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials but some are needed.
    Missing,
    /// A token was sent but is not known (or the header is malformed).
    Invalid,
}

/// Checks bearer tokens against the configured hashes.
#[derive(Debug, Clone)]
pub struct Authenticator {
    by_hash: HashMap<String, (String, Role)>,
    anonymous_read: bool,
}

impl Authenticator {
    /// Builds the authenticator, loading `tokens_file` relative to `base_dir`. Errors name the
    /// offending entry (`api.auth.tokens[2].sha256: ...`).
    pub fn from_config(cfg: &AuthConfig, base_dir: &Path) -> Result<Authenticator, String> {
        let mut entries: Vec<(String, TokenEntry)> = cfg
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("api.auth.tokens[{i}]"), t.clone()))
            .collect();
        if let Some(file) = &cfg.tokens_file {
            let path = if file.is_absolute() {
                file.clone()
            } else {
                base_dir.join(file)
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!("api.auth.tokens_file: cannot read {}: {e}", path.display())
            })?;
            let parsed: TokensFile =
                crate::core::conf::from_toml_str(&text, &path.display().to_string())
                    .map_err(|e| format!("api.auth.tokens_file: {}", e.join("; ")))?;
            entries.extend(
                parsed
                    .tokens
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| (format!("{}: tokens[{i}]", path.display()), t)),
            );
        }
        let mut by_hash = HashMap::new();
        for (at, t) in entries {
            let hash = t.sha256.trim().to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{at}.sha256: {:?} is not a SHA-256 hex digest (64 hex characters); create one with `aas-gateway token new --role {}`",
                    t.sha256, t.role
                ));
            }
            if t.name.is_empty() {
                return Err(format!("{at}.name: must not be empty"));
            }
            if by_hash.insert(hash, (t.name.clone(), t.role)).is_some() {
                return Err(format!("{at}.sha256: the same token is configured twice"));
            }
        }
        let anonymous_read = cfg.anonymous_read.unwrap_or(by_hash.is_empty());
        Ok(Authenticator {
            by_hash,
            anonymous_read,
        })
    }

    /// True when at least one token is configured.
    pub fn has_tokens(&self) -> bool {
        !self.by_hash.is_empty()
    }

    /// True when reads need no token.
    pub fn anonymous_read(&self) -> bool {
        self.anonymous_read
    }

    /// Identifies the caller from an `Authorization` header value (if any).
    ///
    /// The token is hashed and looked up by hash: the lookup's timing depends only on the hash,
    /// which an attacker cannot steer towards a valid one.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let Some(header) = authorization else {
            return Ok(Principal {
                name: "anonymous".into(),
                role: self.anonymous_read.then_some(Role::Reader),
            });
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or(AuthError::Invalid)?;
        match self.by_hash.get(&hash_token(token)) {
            Some((name, role)) => Ok(Principal {
                name: name.clone(),
                role: Some(*role),
            }),
            None => Err(AuthError::Invalid),
        }
    }
}

/// SHA-256 hex of a token, as stored in the config.
pub fn hash_token(token: &str) -> String {
    crate::security::sha256_hex(token.as_bytes())
}

/// A fresh random token (256 bits from the operating system).
pub fn generate_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(format!(
        "aasg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tokens: &[(&str, Role, &str)], anonymous_read: Option<bool>) -> Authenticator {
        let cfg = AuthConfig {
            anonymous_read,
            tokens: tokens
                .iter()
                .map(|(n, r, t)| TokenEntry {
                    name: n.to_string(),
                    role: *r,
                    sha256: hash_token(t),
                })
                .collect(),
            tokens_file: None,
        };
        Authenticator::from_config(&cfg, Path::new(".")).unwrap()
    }

    #[test]
    fn tokens_are_random_and_hashes_recognise_them() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 43);
        let auth = auth(&[("ops", Role::Writer, &a)], None);
        let p = auth.authenticate(Some(&format!("Bearer {a}"))).unwrap();
        assert_eq!(p.role, Some(Role::Writer));
        assert_eq!(p.name, "ops");
        assert_eq!(
            auth.authenticate(Some(&format!("Bearer {b}"))),
            Err(AuthError::Invalid)
        );
        assert_eq!(auth.authenticate(Some(&a)), Err(AuthError::Invalid));
    }

    #[test]
    fn anonymous_read_defaults_follow_whether_tokens_exist() {
        let open = auth(&[], None);
        assert_eq!(open.authenticate(None).unwrap().role, Some(Role::Reader));
        let closed = auth(&[("x", Role::Reader, "t")], None);
        assert_eq!(closed.authenticate(None).unwrap().role, None);
        let explicit = auth(&[("x", Role::Reader, "t")], Some(true));
        assert_eq!(
            explicit.authenticate(None).unwrap().role,
            Some(Role::Reader)
        );
    }

    #[test]
    fn malformed_hashes_are_rejected_with_their_place() {
        let cfg = AuthConfig {
            tokens: vec![TokenEntry {
                name: "a".into(),
                role: Role::Admin,
                sha256: "abc".into(),
            }],
            ..Default::default()
        };
        let e = Authenticator::from_config(&cfg, Path::new(".")).unwrap_err();
        assert!(e.starts_with("api.auth.tokens[0].sha256"), "{e}");
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Writer && Role::Writer > Role::Reader);
    }
}
