//! Write-back against an independent OPC UA stack (Python asyncua server from `.venv`): the value
//! is converted to the node's own DataType (an Int32 node behind an `xs:double` element gets an
//! Int32), lossy conversions are refused before anything is sent, a node the server does not let
//! us write gives 409 with the server's status, and written values come back through the
//! subscription into the AAS.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use aas_gateway::security::tokens::{generate_token, hash_token};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const SERVER: &str = r#"
import asyncio, sys
from asyncua import Server, ua

async def main():
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{sys.argv[1]}/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:interop:test")
    machine = await server.nodes.objects.add_object(ua.NodeId("Machine", idx), "Machine")
    speed = await machine.add_variable(ua.NodeId("Speed", idx), "Speed", ua.Variant(5, ua.VariantType.Int32))
    await speed.set_writable()
    enabled = await machine.add_variable(ua.NodeId("Enabled", idx), "Enabled", False)
    await enabled.set_writable()
    await machine.add_variable(ua.NodeId("Locked", idx), "Locked", 1.5)  # read-only
    async with server:
        print("ready", flush=True)
        while True:
            await asyncio.sleep(1)

asyncio.run(main())
"#;

struct PyServer(Child);

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(port: u16) -> PyServer {
    let python = common::repo_root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `.ci/peers.sh install`",
        python.display()
    );
    let mut child = Command::new(python)
        .args(["-c", SERVER, &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "asyncua server did not start");
    PyServer(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_back_to_an_independent_server_uses_the_node_data_type() {
    let port = common::free_port();
    let _server = tokio::task::spawn_blocking(move || start_server(port))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let writer = generate_token().unwrap();
    let sm = "urn:aas-gateway:sim:sm:cnc1:operational-data";
    let mut toml = format!(
        r#"
[api]
listen = "127.0.0.1:0"
[[api.auth.tokens]]
name = "w"
role = "writer"
sha256 = "{}"
[aas]
environments = ["{}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "py"
endpoint = "opc.tcp://127.0.0.1:{port}/"
publishing_interval_ms = 100
pki_dir = "pki"
[mqtt]
enabled = false
"#,
        hash_token(&writer),
        common::repo_root().display()
    );
    for (node, path) in [
        ("Speed", "SpindleSpeedSetpoint"),
        ("Enabled", "Running"),
        ("Locked", "SpindleLoad"),
    ] {
        toml += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:interop:test;s={node}\"\nsubmodel = \"{sm}\"\npath = \"{path}\"\nwritable = true\n"
        );
    }
    let cfg_path = dir.path().join("g.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let shutdown = CancellationToken::new();
    let gw = Gateway::start(Config::load(&cfg_path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let base = format!("http://{}", gw.api_addr.unwrap());
    let el = |p: &str| {
        format!(
            "{base}/api/v3.0/submodels/{}/submodel-elements/{p}/$value",
            aas_gateway::api::encode_id(sm)
        )
    };
    let http = reqwest::Client::new();
    let t0 = tokio::time::Instant::now();
    while http
        .get(format!("{base}/ready"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "not connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let patch = |p: &str, v: Value| http.patch(el(p)).bearer_auth(&writer).json(&v).send();
    let read = |p: &str| {
        let url = el(p);
        let (http, token) = (http.clone(), writer.clone());
        async move {
            http.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
        let t0 = tokio::time::Instant::now();
        while !f().await {
            assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Int32 node behind xs:double: 42 is written as Int32 (asyncua would refuse a Double).
    let r = patch("SpindleSpeedSetpoint", json!(42)).await.unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    eventually("42 back in the AAS", async || {
        // $value is the Part 2 named ValueOnly form: {"SpindleSpeedSetpoint": 42.0}.
        read("SpindleSpeedSetpoint").await["SpindleSpeedSetpoint"].as_f64() == Some(42.0)
    })
    .await;
    // 42.5 does not fit an Int32: refused before sending, the node keeps 42.
    let r = patch("SpindleSpeedSetpoint", json!(42.5)).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["messages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Int32"),
        "{body}"
    );
    // Boolean node.
    let r = patch("Running", json!(true)).await.unwrap();
    assert_eq!(r.status(), 204);
    eventually("true back in the AAS", async || {
        read("Running").await["Running"] == json!(true)
    })
    .await;
    // The server refuses to write a read-only node: 409 with its status name.
    let r = patch("SpindleLoad", json!(2.5)).await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    let text = body["messages"][0]["text"].as_str().unwrap();
    assert!(text.contains("Bad"), "{text}");
    println!("read-only node: {text}");

    shutdown.cancel();
    gw.wait().await.unwrap();
}
