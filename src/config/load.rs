//! Loading the gateway's config: file → [tree](crate::core::conf::tree) → environment
//! overrides → typed [`Config`], collecting every problem with `file:line` (see
//! [`crate::core::conf::load`] for how), then reporting them together with the semantic checks.

use std::path::Path as FsPath;

use crate::core::conf::load::{deserialize, located, read_tree, with_env, Problem};
use crate::core::conf::tree::{Node, Origin, Path};
use crate::core::conf::ConfigErrors;

use super::Config;

pub use crate::core::conf::load::{from_toml_str, LoadReport, MAX_PASSES};

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
    // Sources and rules from the AAS's AID + AIMC join the TOML's (see from_aas.rs).
    cfg.add_from_aas();
    Ok(cfg)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conf::tree;

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
