//! Environment overrides (`AAS_GATEWAY__…`) and config error reporting, through the real
//! binary: every documented variable reaches its setting (passwords stay text), indexed
//! overrides of arrays work, and one run reports every mistake with `file:line` or the variable.
//! Variables are set on the child process only (never in this process: tests run in parallel).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SUBMODEL: &str = "urn:aas-gateway:sim:sm:cnc1:operational-data";

fn validate(config: &std::path::Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["validate", "-c"])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// 1-based line of the first line of `text` that starts with `start`.
fn line_of(text: &str, start: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starts with {start:?}"))
        + 1
}

#[test]
fn documented_variables_reach_their_settings() {
    // README, Dockerfile and docker-compose.yml set these; `validate` prints what arrived.
    let out = validate(
        &repo_root().join("config/demo.toml"),
        &[
            ("AAS_GATEWAY__MQTT__HOST", "broker.example"),
            ("AAS_GATEWAY__MQTT__PORT", "2883"),
            ("AAS_GATEWAY__API__LISTEN", "0.0.0.0:8443"),
            ("AAS_GATEWAY__QUESTDB__ENABLED", "true"),
            (
                "AAS_GATEWAY__QUESTDB__CONF",
                "http::addr=questdb:9000;username=admin;password=qdb-secret;",
            ),
            ("AAS_GATEWAY__OUTBOX__DIR", "/data/outbox"),
            ("AAS_GATEWAY__AUDIT__DIR", "/data/audit"),
        ],
    );
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for expected in [
        "MQTT broker.example:2883",
        "API 0.0.0.0:8443",
        // Enabled, with the address from the variable and the password hidden.
        "QuestDB http::addr=questdb:9000;username=admin;password=<redacted>;",
        "state: outbox /data/outbox, audit /data/audit",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert!(!all.contains("qdb-secret"), "{all}");
}

#[test]
fn secrets_from_the_environment_complete_the_secure_example_and_stay_text() {
    // config/secure.toml names a user and expects the passwords from the environment. Numbers
    // and booleans as passwords must stay text (a password field cannot hold a number).
    let secure = repo_root().join("config/secure.toml");
    let without = text(&validate(&secure, &[]));
    assert!(
        without.contains("opcua[0].password: username and password go together"),
        "{without}"
    );
    let out = validate(
        &secure,
        &[
            ("AAS_GATEWAY__OPCUA__0__PASSWORD", "12345"),
            ("AAS_GATEWAY__OPCUA__0__USERNAME", "true"),
            ("AAS_GATEWAY__MQTT__PASSWORD", "007"),
        ],
    );
    let all = text(&out);
    // What remains are the files that exist only on the target.
    let errors: Vec<&str> = all.lines().filter(|l| l.starts_with("  - ")).collect();
    assert!(!errors.is_empty(), "{all}");
    for e in errors {
        assert!(
            ["api.tls.cert", "api.auth.tokens_file", "aas.environments"]
                .iter()
                .any(|setting| e.contains(&format!(": {setting}"))),
            "unexpected: {e}\n{all}"
        );
    }
}

#[test]
fn every_mistake_is_reported_in_one_run_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("broken.toml");
    let toml = format!(
        r#"[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]

[[opcua]]
name = "sim"
endpoint = "http://127.0.0.1:4840/"
publishing_intervall_ms = 500

[mqtt]
qos = 7

[[mapping]]
node_id = "ns=2;x=1"
submodel = "{SUBMODEL}"
path = "SpindleSpeed"
"#,
        root = repo_root().display()
    );
    std::fs::write(&cfg, &toml).unwrap();
    let f = cfg.display();
    let expected = [
        format!(
            "{f}:{}: opcua[0].endpoint: \"http://127.0.0.1:4840/\" is not an opc.tcp:// URL",
            line_of(&toml, "endpoint")
        ),
        format!(
            "{f}:{}: opcua[0].publishing_intervall_ms: unknown key; did you mean `publishing_interval_ms`?",
            line_of(&toml, "publishing_intervall_ms")
        ),
        format!(
            "{f}:{}: mqtt.qos: 7 is not supported",
            line_of(&toml, "qos")
        ),
        format!(
            "{f}:{}: mapping[0].node_id: \"ns=2;x=1\" is not a NodeId",
            line_of(&toml, "node_id")
        ),
    ];
    let out = validate(&cfg, &[]);
    let all = text(&out);
    assert!(!out.status.success());
    assert!(all.contains("4 error(s)"), "{all}");
    for e in &expected {
        assert!(all.contains(e.as_str()), "missing {e:?} in:\n{all}");
    }
    // `run` stops at start with the same list (without trying to connect).
    let run = Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("AAS_GATEWAY__API__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let all = text(&run);
    assert!(!run.status.success(), "{all}");
    for e in &expected {
        assert!(all.contains(e.as_str()), "run: missing {e:?} in:\n{all}");
    }
    // Without the unknown key the file loads, and the gateway's own start-up check reports
    // the rest, still with lines.
    std::fs::write(
        &cfg,
        toml.replace("publishing_intervall_ms = 500\n", "# (fixed)\n"),
    )
    .unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("AAS_GATEWAY__API__LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let all = text(&run);
    assert!(!run.status.success(), "{all}");
    assert!(all.contains("3 error(s)"), "{all}");
    for e in [&expected[0], &expected[2], &expected[3]] {
        assert!(all.contains(e.as_str()), "run: missing {e:?} in:\n{all}");
    }
}

#[test]
fn every_syntax_error_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("syntax.toml");
    std::fs::write(
        &cfg,
        "[mqtt]\nhost = \"broker\nport = 1883\n[api\nlisten = \"x\"\n",
    )
    .unwrap();
    let out = validate(&cfg, &[]);
    let all = text(&out);
    assert!(!out.status.success());
    let f = cfg.display();
    for expected in [format!("{f}:2: TOML syntax"), format!("{f}:4: TOML syntax")] {
        assert!(all.contains(&expected), "missing {expected:?} in:\n{all}");
    }
}

#[test]
fn several_wrong_types_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("types.toml");
    let toml = format!(
        r#"[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "opc.tcp://127.0.0.1:4840/"
queue_size = "ten"
mode = "reed"
[mqtt]
port = 70000
retain = "yes"
"#,
        root = repo_root().display()
    );
    std::fs::write(&cfg, &toml).unwrap();
    let out = validate(&cfg, &[]);
    let all = text(&out);
    assert!(!out.status.success());
    let f = cfg.display();
    for expected in [
        format!("{f}:6: opcua[0].queue_size: invalid type: string \"ten\", expected u32"),
        format!(
            "{f}:7: opcua[0].mode: \"reed\" is not one of subscribe, read; did you mean `read`?"
        ),
        format!("{f}:9: mqtt.port: invalid value: integer `70000`, expected u16"),
        format!("{f}:10: mqtt.retain: invalid type: string \"yes\", expected a boolean"),
    ] {
        assert!(all.contains(&expected), "missing {expected:?} in:\n{all}");
    }
    assert!(all.contains("4 error(s)"), "{all}");
}

#[test]
fn indexed_overrides_set_array_entries_and_bad_ones_name_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "opc.tcp://127.0.0.1:4840/"
[[api.auth.tokens]]
name = "dashboard"
role = "reader"
sha256 = "{hash}"
[[mapping]]
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed"
submodel = "{SUBMODEL}"
path = "SpindleSpeed"
"#,
            root = repo_root().display(),
            hash = "a".repeat(64),
        ),
    )
    .unwrap();
    // Good overrides of entries of [[opcua]], [[mapping]] and [[api.auth.tokens]].
    let ok = validate(
        &cfg,
        &[
            ("AAS_GATEWAY__OPCUA__0__PUBLISHING_INTERVAL_MS", "250"),
            ("AAS_GATEWAY__MAPPING__0__PATH", "FeedRate"),
            (
                "AAS_GATEWAY__MAPPING__0__NODE_ID",
                "nsu=urn:opcua-sim:cnc;s=CNC1.FeedRate",
            ),
            ("AAS_GATEWAY__API__AUTH__TOKENS__0__ROLE", "writer"),
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok));

    // The values arrive: wrong ones are reported at their variable.
    let out = validate(
        &cfg,
        &[
            ("AAS_GATEWAY__MAPPING__0__PATH", "NoSuchElement"),
            ("AAS_GATEWAY__API__AUTH__TOKENS__0__ROLE", "king"),
            ("AAS_GATEWAY__OPCUA__0__QUEUE_SIZE", "0"),
            ("AAS_GATEWAY__OPCUA__1__PASSWORD", "x"),
            ("AAS_GATEWAY__MQTT__HOTS", "broker"),
            ("AAS_GATEWAY__MQTT__PORT", "mqtt"),
        ],
    );
    let all = text(&out);
    assert!(!out.status.success());
    for expected in [
        "AAS_GATEWAY__MAPPING__0__PATH (environment): mapping[0].path: \"NoSuchElement\"",
        "AAS_GATEWAY__API__AUTH__TOKENS__0__ROLE (environment): api.auth.tokens[0].role: \"king\" is not one of reader, writer, admin",
        "AAS_GATEWAY__OPCUA__0__QUEUE_SIZE (environment): opcua[0].queue_size: must be at least 1",
        "AAS_GATEWAY__OPCUA__1__PASSWORD (environment): opcua[1]: index past the end: the file has 1 entry",
        "AAS_GATEWAY__MQTT__HOTS (environment): mqtt.hots: unknown key; did you mean `host`?",
        "AAS_GATEWAY__MQTT__PORT (environment): mqtt.port: invalid type: string \"mqtt\", expected u16",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
}

/// The proof that credentials from the environment arrive exactly: servers that accept only
/// them. The OPC UA server allows no anonymous user and only `operator`/`12345`; the broker
/// only `gw`/`007` (`7` if the text were read as a number). The file holds neither, and a
/// wrong broker host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_environment_reach_the_servers() {
    let dir = tempfile::tempdir().unwrap();
    let sim = opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port: 0,
        tick_ms: 200,
        pki_dir: dir.path().join("sim-pki"),
        users: vec![("operator".into(), "12345".into())],
        allow_anonymous: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let broker = Mosquitto::start_with_password("gw", "007");
    let collector = MqttCollector::start_as(broker.port, "aas/#", Some(("gw", "007"))).await;
    let cfg = dir.path().join("gw.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[outbox]
dir = "outbox"
[audit]
enabled = false
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
pki_dir = "pki"
trust_server_certs = true
[mqtt]
host = "no-such-host.invalid"
port = {port}
username = "gw"
[[mapping]]
node_id = "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeed"
submodel = "{SUBMODEL}"
path = "SpindleSpeed"
"#,
            root = repo_root().display(),
            endpoint = sim.endpoint_url(),
            port = broker.port,
        ),
    )
    .unwrap();
    let spawn = |opcua_password: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_aas-gateway"))
            .args(["run", "-c"])
            .arg(&cfg)
            .env("AAS_GATEWAY__API__LISTEN", "127.0.0.1:0")
            .env("AAS_GATEWAY__OPCUA__0__USERNAME", "operator")
            .env("AAS_GATEWAY__OPCUA__0__PASSWORD", opcua_password)
            .env("AAS_GATEWAY__MQTT__HOST", "127.0.0.1")
            .env("AAS_GATEWAY__MQTT__PASSWORD", "007")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };

    // Right credentials: values reach the broker.
    let mut child = spawn("12345");
    let t0 = Instant::now();
    while collector.len() == 0 {
        if let Ok(Some(status)) = child.try_wait() {
            let mut log = String::new();
            let mut stderr = child.stderr.take().unwrap();
            tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut log)
                .await
                .unwrap();
            panic!("the gateway ended ({status}):\n{log}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no MQTT message within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await.unwrap();

    // A wrong password from the environment is what the server sees (and rejects).
    let mut child = spawn("1234");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the gateway still runs 30 s after a rejected password")
        .unwrap();
    let mut log = String::new();
    let mut stderr = child.stderr.take().unwrap();
    tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut log)
        .await
        .unwrap();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("BadUserAccessDenied") || log.contains("BadIdentityTokenRejected"),
        "{log}"
    );
    sim.stop().await;
}
