//! Loading TOML into a typed section, collecting **every** problem (unknown keys, wrong types,
//! missing keys, bad overrides) instead of stopping at the first, each with `file:line` (or the
//! environment variable) and its path.
//!
//! How several type errors are found in one run: serde stops at the first error, so the loader
//! deserializes, notes the failing path, puts a placeholder there (it deserializes as the zero
//! of its type) and tries again, at most [`MAX_PASSES`] times. Semantic errors that a
//! `validate()` later finds at a placeholder's path are consequences of the first and are
//! dropped (see [`LoadReport::placeholders`]).

use std::path::Path as FsPath;

use serde::de::DeserializeOwned;

use super::de::{did_you_mean, Found, NodeDe};
use super::tree::{self, Node, Origin, Path, Seg};
use super::ConfigErrors;

/// Most deserialization passes, so most type errors reported in one run; a config with more
/// gets the first ones and a note (fix those first).
pub const MAX_PASSES: usize = 100;

/// A problem found while loading, before the semantic checks.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Where it was set.
    pub origin: Origin,
    /// `path: message`, as in every config error.
    pub text: String,
}

/// What loading found wrong, kept with the loaded config so that the semantic checks report
/// it together with theirs (the gateway's `Config::finish_check`).
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Unknown keys, wrong types, missing keys, bad overrides.
    pub problems: Vec<Problem>,
    /// Values replaced by placeholders after their problem was reported.
    pub placeholders: Vec<Path>,
}

/// Deserializes `T` from `tree`, reporting every problem (see the module docs). `None` when
/// it had to give up (then `problems` says why).
pub fn deserialize<T: DeserializeOwned>(tree: &mut Node) -> (Option<T>, LoadReport) {
    let mut report = LoadReport::default();
    // Every pass finds the same unknown keys again; report each once (a set: a generated
    // config may repeat one typo in 100k mapping rules).
    let mut unknown_seen: std::collections::HashSet<Path> = Default::default();
    let mut suggestions: std::collections::HashMap<(String, usize), Option<&str>> =
        Default::default();
    for _ in 0..MAX_PASSES {
        let found = Found::default();
        let result = T::deserialize(NodeDe::root(tree, &found));
        let unknown = found.unknown.into_inner();
        for u in &unknown {
            if !unknown_seen.insert(u.path.clone()) {
                continue;
            }
            let key = match u.path.0.last() {
                Some(Seg::Key(k)) => k.as_str(),
                _ => "",
            };
            // The same typo in many entries: compute its suggestion once.
            let suggestion = *suggestions
                .entry((key.to_string(), u.known.as_ptr() as usize))
                .or_insert_with(|| did_you_mean(key, u.known));
            let text = match suggestion {
                Some(s) => format!("{}: unknown key; did you mean `{s}`?", u.path),
                None => format!(
                    "{}: unknown key (known here: {})",
                    u.path,
                    u.known.join(", ")
                ),
            };
            report.problems.push(Problem {
                origin: u.origin.clone(),
                text,
            });
        }
        let e = match result {
            Ok(value) => return (Some(value), report),
            Err(e) => e,
        };
        let mut path = e.path.clone().unwrap_or_default();
        if let Some(field) = e.missing {
            path = path.child(Seg::Key(field.to_string()));
        }
        let consequence = report.placeholders.iter().any(|p| path.starts_with(p));
        // `endpont = ...` with a "did you mean `endpoint`" already says that `endpoint` is
        // missing.
        let explained = e.missing.is_some_and(|field| {
            unknown.iter().any(|u| {
                u.path.0.len() == path.0.len()
                    && u.path.0[..path.0.len() - 1] == path.0[..path.0.len() - 1]
                    && matches!(u.path.0.last(), Some(Seg::Key(k)) if did_you_mean(k, u.known) == Some(field))
            })
        });
        if !consequence && !explained {
            report.problems.push(Problem {
                origin: tree.origin_of(&path),
                text: format!("{path}: {}", e.message),
            });
        }
        // The placeholder goes where the error is or, when that place is not in the tree
        // (inside a list given as one variable), on the closest parent that is.
        let mut place = path.clone();
        while !report.placeholders.contains(&place) && !tree.set_placeholder(&place) {
            place.0.pop();
        }
        if place.0.is_empty() || report.placeholders.contains(&place) {
            // The same place failed again, or only the root is left: stop here.
            if consequence {
                report.problems.push(Problem {
                    origin: tree.origin_of(&path),
                    text: format!("{path}: {}", e.message),
                });
            }
            return (None, report);
        }
        report.placeholders.push(place);
    }
    report.problems.push(Problem {
        origin: Origin::Unknown,
        text: format!("more than {MAX_PASSES} wrong values: fix these first, then check again"),
    });
    (None, report)
}

/// Reads `path`, parses it and applies the process's `AAS_GATEWAY__…` variables. Errors
/// (unreadable file, syntax errors) are ready to print.
pub fn read_tree(path: &FsPath) -> anyhow::Result<(Node, Vec<u8>)> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    let tree = tree::parse_toml(&text).map_err(|errors| {
        let mut list = ConfigErrors::default();
        for e in errors {
            let at = match e.line {
                Some(line) => format!("{}:{line}", path.display()),
                None => path.display().to_string(),
            };
            list.0.push(format!(
                "{at}: TOML syntax: {}",
                e.message.replace('\n', "; ")
            ));
        }
        anyhow::anyhow!("{}: {list}", path.display())
    })?;
    Ok((tree, bytes))
}

/// The tree with the process environment applied, and the problems of the overrides.
pub fn with_env(mut tree: Node) -> (Node, Vec<Problem>) {
    let problems = tree::apply_env(&mut tree, std::env::vars_os())
        .into_iter()
        .map(|(var, message)| Problem {
            origin: Origin::Env(var),
            text: message,
        })
        .collect();
    (tree, problems)
}

/// Sorts problems by where they were set (file lines first, then variables) and prefixes each
/// with `file:line: ` or `VARIABLE: `.
pub fn located(file: &str, mut problems: Vec<Problem>) -> Vec<String> {
    problems.sort_by(|a, b| {
        let key = |p: &Problem| match &p.origin {
            Origin::Line(n) => (0, *n, String::new()),
            Origin::Env(v) => (1, 0, v.clone()),
            Origin::Unknown => (2, 0, String::new()),
        };
        key(a).cmp(&key(b))
    });
    problems
        .into_iter()
        .map(|p| match p.origin {
            Origin::Line(n) => format!("{file}:{n}: {}", p.text),
            Origin::Env(var) => format!("{var} (environment): {}", p.text),
            Origin::Unknown => format!("{file}: {}", p.text),
        })
        .collect()
}

/// Deserializes `T` from TOML text (no environment overrides), reporting every problem with
/// its line: for small TOML files besides the config (e.g. the API tokens file).
pub fn from_toml_str<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, Vec<String>> {
    let mut tree = tree::parse_toml(text).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| match e.line {
                Some(line) => format!("{file}:{line}: TOML syntax: {}", e.message),
                None => format!("{file}: TOML syntax: {}", e.message),
            })
            .collect::<Vec<_>>()
    })?;
    let (value, report) = deserialize::<T>(&mut tree);
    match value {
        Some(v) if report.problems.is_empty() => Ok(v),
        _ => Err(located(file, report.problems)),
    }
}
