//! The status page (`GET /`) in a real browser: Debian's headless chromium driven through
//! chromedriver (W3C WebDriver, `fantoccini`), against the bundled simulator, a real mosquitto
//! and the gateway, as an operator would use it.
//!
//! - the page without a token shows only the login; a reader sees sources, sinks and CNC1's
//!   values changing, and no write form; a writer writes a setpoint through the form, the
//!   simulator gets it and the page shows it back; an admin sees the audit log's verdict;
//! - stopping the simulator turns the source to "reconnecting" within seconds, stopping the
//!   broker turns the MQTT sink to "disconnected" with its lag growing; both recover;
//! - with 100k elements the page renders its first page and a search result (times printed).
//!
//! chromium and chromedriver come from `.ci/peers.sh install` (Debian `chromium`,
//! `chromium-driver`); a missing one fails the test with that hint, never skips it.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aas_gateway::config::Config;
use aas_gateway::pipeline::Gateway;
use aas_gateway::security::tokens::hash_token;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const SETPOINT: &str = "nsu=urn:opcua-sim:cnc;s=CNC1.SpindleSpeedSetpoint";
const TECHNICAL_DATA: &str = "urn:aas-gateway:sim:sm:cnc1:technical-data";
const READER: &str = "reader-token-for-the-status-page";
const WRITER: &str = "writer-token-for-the-status-page";
const ADMIN: &str = "admin-token-for-the-status-page";

/// A headless chromium behind its own chromedriver, with a fresh profile.
struct Browser {
    client: Client,
    _driver: KillOnDrop,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (.ci/peers.sh install)"
            );
        }
        let port = free_port();
        let driver = KillOnDrop(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver"),
        );
        let profile = tempfile::tempdir().unwrap();
        // The flags this machine needs: no sandbox as root, and no background connections
        // (the closed network refuses them, many at a time).
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }))
        .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver within 60 s: {e}"),
            }
        };
        Browser {
            client,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Runs `script` (a function body that returns a value) in the page.
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until `ok` holds for its value; returns the value and how long it took.
    async fn wait(
        &self,
        what: &str,
        within: Duration,
        script: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let start = Instant::now();
        loop {
            let v = self.js(script).await;
            if ok(&v) {
                return (v, start.elapsed());
            }
            if start.elapsed() > within {
                let text = self.js("return document.body.innerText").await;
                // The gateway's own view, with the counters the page does not show.
                let summary = self
                    .js(
                        "const x = new XMLHttpRequest(); x.open('GET', '/status/summary', false);
                         const t = sessionStorage.getItem('aas-gateway-token');
                         if (t) x.setRequestHeader('Authorization', 'Bearer ' + t);
                         x.send(); return x.responseText;",
                    )
                    .await;
                panic!("{what}: not within {within:?}; last value {v}\npage:\n{text}\nsummary: {summary}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element `css` selects, again if the page replaced it between finding and
    /// clicking (the element list is re-rendered when its rows change).
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let result = match self.client.find(Locator::Css(css)).await {
                Ok(el) => el.click().await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot click {css}: {e}"),
            }
        }
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// What the page shows of source `name`: its state badge.
fn source_state(name: &str) -> String {
    format!("const b = document.querySelector('#sources tr[data-source=\"{name}\"] .state'); return b ? b.textContent : null;")
}

/// The value cell of element `path` on the current page of the element list.
fn element_value(path: &str) -> String {
    format!(
        "const r = [...document.querySelectorAll('#elements tbody tr')].find(t => t.dataset.path === '{path}');
         return r ? r.querySelector('.value').textContent : null;"
    )
}

const SINK_MQTT: &str = "const r = document.querySelector('#sinks tr[data-sink=\"mqtt\"]');
    return r ? {state: r.querySelector('.state').textContent, lag: Number(r.querySelector('.lag').textContent)} : null;";

const VISIBLE: &str = "return {login: !document.getElementById('login').hidden,
    main: !document.getElementById('main').hidden, text: document.body.innerText,
    writeButtons: document.querySelectorAll('button.write').length,
    audit: !document.getElementById('audit').hidden};";

fn config(endpoint: &str, mqtt_port: u16, dir: &Path, extra_env: Option<&Path>) -> String {
    let extra = extra_env
        .map(|p| format!(", \"{}\"", p.display()))
        .unwrap_or_default();
    let mut s = format!(
        r#"
[gateway]
name = "page-gateway"
[api]
listen = "127.0.0.1:0"
rate_limit_per_s = 0
[[api.auth.tokens]]
name = "operator"
role = "reader"
sha256 = "{reader}"
[[api.auth.tokens]]
name = "commissioning"
role = "writer"
sha256 = "{writer}"
[[api.auth.tokens]]
name = "it-admin"
role = "admin"
sha256 = "{admin}"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"{extra}]
[[opcua]]
name = "sim"
endpoint = "{endpoint}"
publishing_interval_ms = 100
sampling_interval_ms = 0
queue_size = 20
pki_dir = "{pki}"
[mqtt]
port = {mqtt_port}
topic_prefix = "page"
[outbox]
dir = "{dir}/outbox"
[audit]
dir = "{dir}/audit"
[[mapping]]
node_id = "{SETPOINT}"
submodel = "{sm}"
path = "SpindleSpeedSetpoint"
writable = true
"#,
        reader = hash_token(READER),
        writer = hash_token(WRITER),
        admin = hash_token(ADMIN),
        root = repo_root().display(),
        pki = gateway_pki().display(),
        dir = dir.display(),
        sm = cnc::SUBMODEL,
    );
    // Values of Uncertain and Bad quality, onto two static elements of CNC1's technical data.
    for (node, path) in [
        ("UncertainDouble", "TechnicalProperties.TravelX"),
        ("BadDouble", "TechnicalProperties.TravelY"),
        // A String node on an xs:double element: not acquired, listed under the source's
        // rejected nodes with the reason.
        ("String", "TechnicalProperties.TravelZ"),
    ] {
        s += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:types;s=Types.{node}\"\nsubmodel = \"{TECHNICAL_DATA}\"\npath = \"{path}\"\n"
        );
    }
    for node in cnc::NODES {
        // SpindleSpeed is a history variable: the page draws its trend.
        let history = *node == "SpindleSpeed";
        s += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.{node}\"\nsubmodel = \"{}\"\npath = \"{node}\"\nhistory = {history}\n",
            cnc::SUBMODEL
        );
    }
    s
}

async fn start_sim_on(port: u16, dir: &Path) -> opcua_sim::Simulator {
    opcua_sim::Simulator::start(opcua_sim::SimOptions {
        port,
        tick_ms: 200,
        pki_dir: dir.join("sim-pki"),
        ..Default::default()
    })
    .await
    .expect("start the bundled simulator")
}

async fn start_gateway(cfg: String, dir: &Path) -> (Gateway, CancellationToken, String) {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, cfg).unwrap();
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(Config::load(&path).unwrap(), shutdown.clone())
        .await
        .unwrap();
    let url = format!("http://{}/", gateway.api_addr.unwrap());
    (gateway, shutdown, url)
}

async fn log_in(b: &Browser, token: &str) {
    let logout = b.client.find(Locator::Id("logout")).await.unwrap();
    if logout.is_displayed().await.unwrap() {
        logout.click().await.unwrap();
    }
    b.wait("the login form", Duration::from_secs(10), VISIBLE, |v| {
        v["login"] == true
    })
    .await;
    let input = b.client.find(Locator::Id("token")).await.unwrap();
    input.send_keys(token).await.unwrap();
    b.client
        .find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait(
        "the page after log-in",
        Duration::from_secs(10),
        VISIBLE,
        |v| v["main"] == true && v["login"] == false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_live_state_writes_and_follows_outages() {
    let dir = tempfile::tempdir().unwrap();
    let sim_port = free_port();
    let sim = start_sim_on(sim_port, dir.path()).await;
    let mut broker = Mosquitto::start();
    let (gateway, shutdown, url) = start_gateway(
        config(&sim.endpoint_url(), broker.port, dir.path(), None),
        dir.path(),
    )
    .await;
    let b = Browser::start().await;

    // Without a token: only the login, nothing of the gateway's data.
    b.client.goto(&url).await.unwrap();
    let (v, _) = b
        .wait("the login", Duration::from_secs(20), VISIBLE, |v| {
            v["login"] == true
        })
        .await;
    assert_eq!(v["main"], false, "{v}");
    let text = v["text"].as_str().unwrap();
    assert!(
        !text.contains("opc.tcp") && !text.contains("SpindleSpeed") && !text.contains("mqtt"),
        "the login page shows gateway data:\n{text}"
    );

    // A wrong token is refused with a message.
    b.client
        .find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys("not-a-token")
        .await
        .unwrap();
    b.client
        .find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait(
        "the refusal of a wrong token",
        Duration::from_secs(10),
        "return document.getElementById('login-error').textContent",
        |v| v.as_str().is_some_and(|t| t.contains("not accepted")),
    )
    .await;

    // A reader: sources, sinks, values that change, no write form, no audit log.
    log_in(&b, READER).await;
    b.wait(
        "source sim connected",
        Duration::from_secs(30),
        &source_state("sim"),
        |v| v == "connected",
    )
    .await;
    let (first, _) = b
        .wait(
            "a SpindleSpeed value",
            Duration::from_secs(30),
            &element_value("SpindleSpeed"),
            |v| v.as_str().is_some_and(|s| !s.is_empty()),
        )
        .await;
    b.wait(
        "SpindleSpeed changing on the page",
        Duration::from_secs(20),
        &element_value("SpindleSpeed"),
        |v| v.as_str().is_some_and(|s| !s.is_empty()) && *v != first,
    )
    .await;
    // The node whose type does not fit is named, with the reason.
    b.wait(
        "the rejected node",
        Duration::from_secs(10),
        "return document.querySelector('#sources tr[data-source=\"sim\"] td:last-child').textContent",
        |v| v.as_str().is_some_and(|t| t.starts_with('1') && t.contains("Types.String")),
    )
    .await;

    // Bad and Uncertain values are marked: the row's colour and the quality with its code.
    let quality = "return Object.fromEntries([...document.querySelectorAll('#elements tbody tr')]
        .filter(t => t.dataset.path.startsWith('TechnicalProperties.Travel'))
        .map(t => [t.dataset.path, t.className + ' ' + t.querySelector('.quality').parentNode.textContent]));";
    b.wait(
        "Uncertain and Bad rows marked",
        Duration::from_secs(20),
        quality,
        |v| {
            let x = v["TechnicalProperties.TravelX"].as_str().unwrap_or("");
            let y = v["TechnicalProperties.TravelY"].as_str().unwrap_or("");
            x.contains("row-uncertain")
                && x.contains("uncertain 0x40")
                && y.contains("row-bad")
                && y.contains("bad 0x8")
        },
    )
    .await;
    let (v, _) = b
        .wait("the reader's view", Duration::from_secs(5), VISIBLE, |_| {
            true
        })
        .await;
    assert_eq!(v["writeButtons"], 0, "a reader gets no write form: {v}");
    assert_eq!(v["audit"], false, "a reader sees no audit log: {v}");
    let mode = b
        .js("return document.getElementById('mode').textContent")
        .await;
    assert_eq!(mode, "live", "updates come as server-sent events");

    // Without the event stream (a buffering proxy, say) the page polls, and values still move.
    b.js("window.__fetch = window.fetch;
          window.fetch = (u, o) => String(u).startsWith('/status/events')
            ? Promise.reject(new Error('blocked by the test')) : window.__fetch(u, o);
          stopUpdates(); streamEvents(); return true;")
        .await;
    b.wait(
        "the polling fallback",
        Duration::from_secs(10),
        "return document.getElementById('mode').textContent",
        |v| v == "polling",
    )
    .await;
    let (before, _) = b
        .wait(
            "a value",
            Duration::from_secs(5),
            &element_value("SpindleSpeed"),
            |v| v.is_string(),
        )
        .await;
    b.wait(
        "SpindleSpeed changing while polling",
        Duration::from_secs(20),
        &element_value("SpindleSpeed"),
        |v| v.is_string() && *v != before,
    )
    .await;
    b.js("window.fetch = window.__fetch; stopUpdates(); streamEvents(); return true;")
        .await;
    b.wait(
        "the event stream again",
        Duration::from_secs(10),
        "return document.getElementById('mode').textContent",
        |v| v == "live",
    )
    .await;

    // SpindleSpeed's trend line, from the history store, grows while the panel is open.
    b.click("#elements tr[data-path=\"SpindleSpeed\"] button.trend")
        .await;
    let points = "const l = document.querySelector('#trend-chart polyline');
        return l ? l.getAttribute('points').split(' ').length : 0;";
    let (n, _) = b
        .wait("a trend line", Duration::from_secs(20), points, |v| {
            v.as_u64() >= Some(2)
        })
        .await;
    b.wait(
        "the trend line growing",
        Duration::from_secs(30),
        points,
        |v| v.as_u64() > n.as_u64(),
    )
    .await;

    // A writer: the form writes the setpoint; the simulator gets it, the page shows it back.
    log_in(&b, WRITER).await;
    b.client
        .find(Locator::Id("search"))
        .await
        .unwrap()
        .send_keys("SpindleSpeedSetpoint")
        .await
        .unwrap();
    b.wait(
        "a write button on SpindleSpeedSetpoint",
        Duration::from_secs(20),
        "const r = [...document.querySelectorAll('#elements tbody tr')].find(t => t.dataset.path === 'SpindleSpeedSetpoint');
         return !!(r && r.querySelector('button.write'));",
        |v| v == true,
    )
    .await;
    b.click("#elements tr[data-path=\"SpindleSpeedSetpoint\"] button.write")
        .await;
    let input = b.client.find(Locator::Id("write-value")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys("4321").await.unwrap();
    b.client
        .find(Locator::Id("write-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait(
        "the write's result",
        Duration::from_secs(20),
        "return document.getElementById('write-result').textContent",
        |v| v.as_str().is_some_and(|t| t.starts_with("Written")),
    )
    .await;
    let written = sim
        .snapshot()
        .into_iter()
        .find(|c| c.node_id == SETPOINT)
        .map(|c| format!("{:?}", c.value));
    assert!(
        written.as_deref().is_some_and(|v| v.contains("4321")),
        "the simulator's setpoint: {written:?}"
    );
    b.wait(
        "the written setpoint back on the page",
        Duration::from_secs(20),
        &element_value("SpindleSpeedSetpoint"),
        |v| v.as_str().is_some_and(|s| s.parse::<f64>() == Ok(4321.0)),
    )
    .await;

    // A value the server refuses: the form shows the OPC UA result.
    let input = b.client.find(Locator::Id("write-value")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys("99999").await.unwrap();
    b.click("#write-submit").await;
    let (refusal, _) = b
        .wait(
            "the server's refusal",
            Duration::from_secs(20),
            "return document.getElementById('write-result').textContent",
            |v| v.as_str().is_some_and(|t| t.starts_with("Not written")),
        )
        .await;
    assert!(
        refusal.as_str().unwrap().contains("BadOutOfRange"),
        "the OPC UA status is shown: {refusal}"
    );

    // An admin sees the audit log, with the write in it and the chain intact.
    log_in(&b, ADMIN).await;
    b.wait(
        "the audit verdict",
        Duration::from_secs(20),
        "return document.getElementById('audit').hidden ? null : document.getElementById('audit').innerText",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("chain is intact") && t.contains("write"))
        },
    )
    .await;

    // Outages: the simulator stops → reconnecting, within seconds; it comes back → connected.
    let stopped = Instant::now();
    sim.stop().await;
    let (_, _) = b
        .wait(
            "source sim reconnecting after the simulator stopped",
            Duration::from_secs(15),
            &source_state("sim"),
            |v| v == "reconnecting",
        )
        .await;
    println!(
        "source shown as reconnecting {:.1} s after the simulator stopped",
        stopped.elapsed().as_secs_f64()
    );
    let reason = b
        .js("return document.querySelector('#sources tr[data-source=\"sim\"] .reason')?.textContent ?? ''")
        .await;
    assert!(
        reason.as_str().is_some_and(|r| !r.is_empty()),
        "a reconnecting source says why: {reason}"
    );
    let sim = start_sim_on(sim_port, dir.path()).await;
    let (_, took) = b
        .wait(
            "source sim connected again",
            Duration::from_secs(60),
            &source_state("sim"),
            |v| v == "connected",
        )
        .await;
    println!(
        "source shown as connected {:.1} s after the simulator restarted",
        took.as_secs_f64()
    );

    // The broker stops → the MQTT sink disconnected, its lag growing; it comes back → lag 0.
    b.wait("mqtt connected", Duration::from_secs(30), SINK_MQTT, |v| {
        v["state"] != "disconnected"
    })
    .await;
    broker.stop();
    let (v, _) = b
        .wait(
            "the MQTT sink disconnected with lag",
            Duration::from_secs(30),
            SINK_MQTT,
            |v| v["state"] == "disconnected" && v["lag"].as_u64() > Some(0),
        )
        .await;
    let lag = v["lag"].as_u64().unwrap();
    b.wait(
        "the MQTT lag growing",
        Duration::from_secs(20),
        SINK_MQTT,
        |v| v["lag"].as_u64() > Some(lag),
    )
    .await;
    broker.restart();
    let (_, took) = b
        .wait(
            "the MQTT sink caught up",
            Duration::from_secs(60),
            SINK_MQTT,
            |v| v["state"] != "disconnected" && v["lag"].as_u64() < Some(50),
        )
        .await;
    println!(
        "MQTT sink caught up {:.1} s after the broker restarted",
        took.as_secs_f64()
    );

    // The gateway stops while the page still streams: the event stream ends with it (the
    // server's graceful shutdown waits for open connections).
    let stopping = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), gateway.wait())
        .await
        .expect("the gateway stopped within 30 s with the status page open")
        .unwrap();
    println!(
        "gateway stopped {:.1} s after the stop signal, with the page open",
        stopping.elapsed().as_secs_f64()
    );
    b.close().await;
    sim.stop().await;
}

/// A generated environment of `n` Properties in one submodel (static values).
fn write_big_environment(dir: &Path, n: usize) -> std::path::PathBuf {
    let elements: Vec<_> = (0..n)
        .map(|i| json!({"idShort": format!("V{i}"), "valueType": "xs:double", "value": format!("{i}.5"), "modelType": "Property"}))
        .collect();
    let sm = "urn:aas-gateway:test:sm:big";
    let env = json!({
        "assetAdministrationShells": [{
            "idShort": "Big", "id": "urn:aas-gateway:test:aas:big",
            "assetInformation": {"assetKind": "Instance", "globalAssetId": "urn:aas-gateway:test:asset:big"},
            "submodels": [{"type": "ModelReference", "keys": [{"type": "Submodel", "value": sm}]}],
            "modelType": "AssetAdministrationShell"
        }],
        "submodels": [{"idShort": "Scale", "id": sm, "kind": "Instance",
            "submodelElements": elements, "modelType": "Submodel"}]
    });
    let path = dir.join("big.aas.json");
    std::fs::write(&path, serde_json::to_vec(&env).unwrap()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_elements_render_and_search() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim_on(0, dir.path()).await;
    let broker = Mosquitto::start();
    let big = write_big_environment(dir.path(), N);
    let (gateway, shutdown, url) = start_gateway(
        config(&sim.endpoint_url(), broker.port, dir.path(), Some(&big)),
        dir.path(),
    )
    .await;
    let b = Browser::start().await;
    b.client.goto(&url).await.unwrap();
    b.wait("the login", Duration::from_secs(20), VISIBLE, |v| {
        v["login"] == true
    })
    .await;

    let input = b.client.find(Locator::Id("token")).await.unwrap();
    input.send_keys(READER).await.unwrap();
    let clicked = Instant::now();
    b.client
        .find(Locator::Id("login-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let total = N + 35; // and CNC1's elements
    let (range, _) = b
        .wait(
            "the first page of elements",
            Duration::from_secs(60),
            "return document.getElementById('range').textContent",
            |v| {
                v.as_str()
                    .is_some_and(|t| t.starts_with("1–100 of ") && t.contains(&total.to_string()))
            },
        )
        .await;
    let first_render = clicked.elapsed();
    let rows = b
        .js("return document.querySelectorAll('#elements tbody tr').length")
        .await;
    assert_eq!(rows, 100, "one page of rows, not {N}: {range}");

    let search = b.client.find(Locator::Id("search")).await.unwrap();
    let typed = Instant::now();
    search.send_keys("V99999").await.unwrap();
    b.wait(
        "the search result",
        Duration::from_secs(60),
        &element_value("V99999"),
        |v| v == "99999.5",
    )
    .await;
    let search_time = typed.elapsed();
    // The page stays responsive: a script runs at once while the list refreshes every second.
    let probe = Instant::now();
    b.js("return 1").await;
    let probe = probe.elapsed();
    println!(
        "{N} elements: first page rendered {:.0} ms after log-in, search result {:.0} ms after typing (200 ms of it is the search box's debounce), a script round trip {:.0} ms",
        first_render.as_secs_f64() * 1e3,
        search_time.as_secs_f64() * 1e3,
        probe.as_secs_f64() * 1e3
    );
    b.close().await;
    shutdown.cancel();
    gateway.wait().await.unwrap();
    sim.stop().await;
}
