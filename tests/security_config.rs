//! Security-relevant config handling: secrets stay out of `Debug` (and so out of logs), token
//! settings are validated with their place named, and `token new` prints a token whose hash is
//! the config line it prints.

use std::process::Command;

use aas_gateway::config::Config;

fn load(extra: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "plc"
endpoint = "opc.tcp://10.0.0.5:4840/"
username = "gateway"
password = "opc-secret-1"
[mqtt]
username = "gw"
password = "mqtt-secret-2"
[questdb]
enabled = true
conf = "https::addr=db:9000;username=admin;password=qdb-secret-3;"
{extra}
"#,
            root = env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let cfg = Config::load(&path).unwrap();
    (dir, cfg)
}

#[test]
fn debug_output_never_contains_secrets() {
    let (_dir, cfg) = load("");
    let text = format!("{cfg:?}");
    for secret in ["opc-secret-1", "mqtt-secret-2", "qdb-secret-3"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("<redacted>"));
    assert!(
        text.contains("username=admin"),
        "non-secret parts stay visible"
    );
    assert!(cfg.has_secrets());
}

#[test]
fn malformed_token_hashes_and_tls_files_are_reported_with_their_setting() {
    let (_dir, cfg) = load(
        "[api.auth]\n[[api.auth.tokens]]\nname = \"x\"\nrole = \"writer\"\nsha256 = \"not-a-hash\"\n[api.tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"\n",
    );
    let errors = cfg.validate().unwrap_err().to_string();
    assert!(errors.contains("api.auth.tokens[0].sha256"), "{errors}");
    assert!(errors.contains("api.tls.cert"), "{errors}");
}

#[test]
fn unknown_roles_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[[api.auth.tokens]]\nname = \"x\"\nrole = \"king\"\nsha256 = \"00\"\n",
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err().to_string();
    assert!(e.contains("king"), "{e}");
}

#[test]
fn token_new_prints_a_token_and_its_config_line() {
    let bin = env!("CARGO_BIN_EXE_aas-gateway");
    let out = Command::new(bin)
        .args(["token", "new", "--role", "writer", "--name", "mes"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("token: ")
        .unwrap();
    let hash = aas_gateway::security::sha256_hex(token.as_bytes());
    assert!(text.contains(&format!("sha256 = \"{hash}\"")), "{text}");
    assert!(text.contains("role = \"writer\"") && text.contains("name = \"mes\""));
    // The printed block is valid config that the gateway accepts.
    let block: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[["))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.toml"), block).unwrap();
    let cfg = Config::load(&dir.path().join("t.toml")).unwrap();
    let auth =
        aas_gateway::security::Authenticator::from_config(&cfg.api.auth, dir.path()).unwrap();
    let who = auth.authenticate(Some(&format!("Bearer {token}"))).unwrap();
    assert_eq!(who.role, Some(aas_gateway::security::Role::Writer));

    let bad = Command::new(bin)
        .args(["token", "new", "--role", "king"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn the_shipped_secure_example_parses_and_only_misses_target_files() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/secure.toml");
    let cfg = Config::load(&path).unwrap();
    assert!(cfg.api.tls.is_some());
    assert_eq!(cfg.log.format, aas_gateway::config::LogFormat::Json);
    assert!(cfg.mapping.iter().any(|m| m.writable));
    // On a development box the certificate and tokens file do not exist, and the OPC UA
    // password comes from the environment on the target; nothing else may be wrong.
    let errors = cfg.validate().unwrap_err();
    for e in &errors.0 {
        assert!(
            e.starts_with("api.tls.cert")
                || e.starts_with("api.auth.tokens_file")
                || e.starts_with("aas.environments")
                || e.starts_with("opcua[0].password"),
            "unexpected: {e}"
        );
    }
}
