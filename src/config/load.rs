//! Loading a config: file → [tree](super::tree) → environment overrides → typed
//! [`Config`], collecting **every** problem (unknown keys, wrong types, missing keys, bad
//! overrides) instead of stopping at the first, each with `file:line` (or the environment
//! variable) and its path.
//!
//! How several type errors are found in one run: serde stops at the first error, so the loader
//! deserializes, notes the failing path, puts a placeholder there (it deserializes as the zero
//! of its type) and tries again, at most [`MAX_PASSES`] times. Semantic errors that
//! [`Config::validate`] later finds at a placeholder's path are consequences of the first and
//! are dropped.

use std::path::Path as FsPath;

use serde::de::DeserializeOwned;

use super::de::{did_you_mean, Found, NodeDe};
use super::tree::{self, Node, Origin, Path, Seg};
use super::{Config, ConfigErrors};

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

/// What loading found wrong, kept with the [`Config`] so that later checks
/// ([`Config::finish_check`]) report it together with theirs.
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
fn read_tree(path: &FsPath) -> anyhow::Result<(Node, Vec<u8>)> {
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
fn with_env(mut tree: Node) -> (Node, Vec<Problem>) {
    let problems = tree::apply_env(&mut tree, std::env::vars_os())
        .into_iter()
        .map(|(var, message)| Problem {
            origin: Origin::Env(var),
            text: message,
        })
        .collect();
    (tree, problems)
}

/// [`Config::load_lenient`].
pub fn load_lenient(path: &FsPath) -> anyhow::Result<Config> {
    let (tree, bytes) = read_tree(path)?;
    let (mut tree, env_problems) = with_env(tree);
    let (cfg, mut report) = deserialize::<Config>(&mut tree);
    report.problems.splice(0..0, env_problems);
    let Some(mut cfg) = cfg else {
        let errors = ConfigErrors(
            located(&path.display().to_string(), report.problems)
                .into_iter()
                .collect(),
        );
        anyhow::bail!("{}: {errors}", path.display());
    };
    // The hash of exactly what was read goes into the audit log ("which config ran?").
    cfg.file_sha256 = Some(crate::security::sha256_hex(&bytes));
    cfg.file_path = Some(path.to_path_buf());
    cfg.base_dir = path
        .parent()
        .map(FsPath::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    cfg.load_report = report;
    Ok(cfg)
}

/// Sorts problems by where they were set (file lines first, then variables) and prefixes each
/// with `file:line: ` or `VARIABLE: `.
fn located(file: &str, mut problems: Vec<Problem>) -> Vec<String> {
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

impl Config {
    /// Reports the load problems together with `checked`'s errors (semantic ones), each with
    /// `file:line` or the environment variable it came from. Errors at a value that was
    /// already reported as wrong are dropped (they judge its placeholder).
    pub fn finish_check<T>(&self, checked: Result<T, ConfigErrors>) -> Result<T, ConfigErrors> {
        let semantic = match checked {
            Ok(v) if self.load_report.problems.is_empty() => return Ok(v),
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        };
        let tree = self.reread_tree();
        let mut problems = self.load_report.problems.clone();
        for text in semantic {
            let path = text.split_once(": ").and_then(|(p, _)| Path::parse(p));
            if let Some(p) = &path {
                if self
                    .load_report
                    .placeholders
                    .iter()
                    .any(|ph| p.starts_with(ph))
                {
                    continue;
                }
            }
            let origin = match (&tree, &path) {
                (Some(tree), Some(p)) => tree.origin_of(p),
                _ => Origin::Unknown,
            };
            problems.push(Problem { origin, text });
        }
        let file = self
            .file_path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "config".into());
        Err(ConfigErrors(located(&file, problems)))
    }

    /// The tree this config was loaded from, to find lines for error messages; `None` when the
    /// file changed since (its lines would point at the wrong place).
    fn reread_tree(&self) -> Option<Node> {
        let path = self.file_path.as_deref()?;
        let (tree, bytes) = read_tree(path).ok()?;
        if self.file_sha256.as_deref() != Some(&crate::security::sha256_hex(&bytes)) {
            return None;
        }
        Some(with_env(tree).0)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml: &str) -> Vec<String> {
        let mut tree = tree::parse_toml(toml).unwrap();
        let (_, report) = deserialize::<Config>(&mut tree);
        located("c.toml", report.problems)
    }

    #[test]
    fn unknown_keys_and_type_errors_are_all_reported() {
        let p = problems(
            "[[opcua]]\nname = \"a\"\nendpoint = 5\npublishing_intervall_ms = 5\nqueue_size = \"x\"\n\
             [mqtt]\nhots = \"h\"\nqos = 300\n[[mapping]]\nsubmodel = \"s\"\npath = \"p\"\nmode = \"reed\"\n",
        );
        let all = p.join("\n");
        for expected in [
            "c.toml:3: opcua[0].endpoint: invalid type: integer `5`, expected a string",
            "c.toml:4: opcua[0].publishing_intervall_ms: unknown key; did you mean `publishing_interval_ms`?",
            "c.toml:5: opcua[0].queue_size: invalid type: string \"x\", expected u32",
            "c.toml:7: mqtt.hots: unknown key; did you mean `host`?",
            "c.toml:8: mqtt.qos: invalid value: integer `300`, expected u8",
            "c.toml:9: mapping[0].node_id: missing: this key is required",
            "c.toml:12: mapping[0].mode: \"reed\" is not one of subscribe, read; did you mean `read`?",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert_eq!(p.len(), 7, "{all}");
    }

    #[test]
    fn a_typo_of_a_required_key_is_reported_once() {
        let p = problems("[[opcua]]\nname = \"a\"\nendpont = \"opc.tcp://x\"\n");
        assert_eq!(
            p,
            ["c.toml:3: opcua[0].endpont: unknown key; did you mean `endpoint`?"]
        );
    }

    #[test]
    fn environment_text_takes_the_field_type() {
        let mut tree = tree::parse_toml(
            "[[opcua]]\nname = \"a\"\nendpoint = \"opc.tcp://x\"\nusername = \"u\"\n",
        )
        .unwrap();
        let vars = [
            ("AAS_GATEWAY__OPCUA__0__PASSWORD", "007"),
            ("AAS_GATEWAY__OPCUA__0__QUEUE_SIZE", "3"),
            ("AAS_GATEWAY__MQTT__PASSWORD", "true"),
            ("AAS_GATEWAY__MQTT__RETAIN", "true"),
            ("AAS_GATEWAY__AAS__ENVIRONMENTS", "[\"a.json\", \"b.json\"]"),
            ("AAS_GATEWAY__OPCUA__0__MODE", "read"),
        ];
        let errors = tree::apply_env(
            &mut tree,
            vars.iter().map(|(k, v)| ((*k).into(), (*v).into())),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let (cfg, report) = deserialize::<Config>(&mut tree);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let cfg = cfg.unwrap();
        assert_eq!(cfg.opcua[0].password.as_deref(), Some("007"));
        assert_eq!(cfg.opcua[0].queue_size, 3);
        assert_eq!(cfg.mqtt.password.as_deref(), Some("true"));
        assert!(cfg.mqtt.retain);
        assert_eq!(cfg.aas.environments.len(), 2);
        assert_eq!(cfg.opcua[0].mode, super::super::AcquisitionMode::Read);
    }

    #[test]
    fn a_wrong_entry_in_a_list_from_one_variable_does_not_stop_the_check() {
        let mut tree =
            tree::parse_toml("[[opcua]]\nname = \"a\"\nendpoint = \"x\"\nqueue_size = \"y\"\n")
                .unwrap();
        let vars = [("AAS_GATEWAY__AAS__ENVIRONMENTS", "[1]")];
        tree::apply_env(
            &mut tree,
            vars.iter().map(|(k, v)| ((*k).into(), (*v).into())),
        );
        let (cfg, report) = deserialize::<Config>(&mut tree);
        assert!(cfg.is_some());
        let all = located("c.toml", report.problems).join("\n");
        assert!(all.contains("c.toml:4: opcua[0].queue_size"), "{all}");
        assert!(
            all.contains("AAS_GATEWAY__AAS__ENVIRONMENTS (environment): aas.environments[0]: invalid type: integer `1`"),
            "{all}"
        );
    }

    #[test]
    fn wrong_environment_values_name_the_variable() {
        let mut tree = tree::parse_toml("[[opcua]]\nname = \"a\"\nendpoint = \"x\"\n").unwrap();
        let vars = [
            ("AAS_GATEWAY__MQTT__PORT", "http"),
            ("AAS_GATEWAY__OPCUA__0__PASWORD", "x"),
        ];
        tree::apply_env(
            &mut tree,
            vars.iter().map(|(k, v)| ((*k).into(), (*v).into())),
        );
        let (_, report) = deserialize::<Config>(&mut tree);
        let all = located("c.toml", report.problems).join("\n");
        assert!(
            all.contains("AAS_GATEWAY__MQTT__PORT (environment): mqtt.port: invalid type: string \"http\", expected u16"),
            "{all}"
        );
        assert!(
            all.contains("AAS_GATEWAY__OPCUA__0__PASWORD (environment): opcua[0].pasword: unknown key; did you mean `password`?"),
            "{all}"
        );
    }
}
