//! Malformed input never panics and is always answered with a Part 2 error body: thousands of
//! generated requests (deterministic seed, so a failure reproduces) with broken ids, idShortPaths,
//! query strings, tokens and bodies, sent through the complete secured router in process.

use std::collections::BTreeMap;
use std::sync::Arc;

use aas_gateway::config::Config;
use aas_gateway::pipeline::PipelineStats;
use aas_gateway::security::tokens::{generate_token, hash_token};
use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::Value;
use tower::ServiceExt;

const SUBMODEL: &str = "urn:aas-gateway:sim:sm:cnc1:operational-data";

/// xorshift64*: tiny, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn up_to(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max);
        self.bytes(n)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn percent(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn id(rng: &mut Rng) -> String {
    let valid = aas_gateway::api::encode_id(SUBMODEL);
    match rng.below(9) {
        0 => valid,
        1 => format!("{valid}=="),
        2 => valid[..rng.below(valid.len())].to_string(),
        3 => percent(&rng.up_to(40)),
        4 => aas_gateway::api::encode_id(&String::from_utf8_lossy(&rng.bytes(20))),
        // Valid base64url of bytes that are not UTF-8.
        5 => {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x80])
        }
        6 => "A".repeat(rng.below(5000)),
        7 => rng
            .pick(&["", "%00", "..", "%2F%2F", "$value", "-_-_", "%C3%28"])
            .to_string(),
        _ => (0..rng.below(30))
            .map(|_| {
                rng.pick(&[
                    "a", "Z", "0", "-", "_", "~", "!", "$", "'", "(", "*", "+", ",", ";", "=",
                ])
            })
            .collect(),
    }
}

fn id_short_path(rng: &mut Rng) -> String {
    let parts: Vec<String> = (0..1 + rng.below(5))
        .map(|_| match rng.below(8) {
            0 => rng
                .pick(&[
                    "SpindleSpeed",
                    "AxisPositions",
                    "SpindleSpeedSetpoint",
                    "Running",
                ])
                .to_string(),
            1 => format!(
                "AxisPositions[{}]",
                rng.pick(&["0", "2", "3", "-1", "99999999999999999999", "", "x", "]["])
            ),
            2 => percent(&rng.up_to(12)),
            3 => rng
                .pick(&["", ".", "..", "[", "]", "[[0]]", "a.b.c", "%5B1%5D", "%2E"])
                .to_string(),
            4 => "x".repeat(rng.below(3000)),
            5 => rng
                .pick(&["$value", "$metadata", "$reference", "$path", "%24value"])
                .to_string(),
            _ => rng
                .pick(&["Nameplate", "Ü", "%E2%82%AC", "a b", "🙂"])
                .to_string(),
        })
        .collect();
    let sep = rng.pick(&[".", "/", ".", "%2E"]);
    let mut p = parts.join(sep);
    if rng.below(3) == 0 {
        p += rng.pick(&["/$value", "/$metadata", "/$value/", "/$VALUE"]);
    }
    p
}

fn path(rng: &mut Rng) -> String {
    let mut p = match rng.below(10) {
        0 => format!("/api/v3.0/shells/{}", id(rng)),
        1 => format!("/api/v3.0/shells/{}/submodel-refs", id(rng)),
        2 => format!("/api/v3.0/submodels/{}", id(rng)),
        3 => format!("/api/v3.0/submodels/{}/$value", id(rng)),
        4 => format!("/api/v3.0/submodels/{}/submodel-elements", id(rng)),
        5..=7 => format!(
            "/api/v3.0/submodels/{}/submodel-elements/{}",
            id(rng),
            id_short_path(rng)
        ),
        8 => rng
            .pick(&[
                "/",
                "/api",
                "/api/v3.0",
                "/metrics",
                "/ready",
                "/health",
                "/api/v3.0/submodels//x",
                "/%00",
            ])
            .to_string(),
        _ => format!("/{}", percent(&rng.up_to(30))),
    };
    if rng.below(3) == 0 {
        let q: Vec<String> = (0..1 + rng.below(3))
            .map(|_| {
                let k = rng.pick(&["limit", "cursor", "idShort", "level", "extent", "x"]);
                let v = match rng.below(4) {
                    0 => rng
                        .pick(&["0", "-1", "1", "18446744073709551616", "abc", ""])
                        .to_string(),
                    1 => id(rng),
                    2 => percent(&rng.bytes(8)),
                    _ => "deep".into(),
                };
                format!("{k}={v}")
            })
            .collect();
        p = format!("{p}?{}", q.join("&"));
    }
    p
}

fn body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 => Vec::new(),
        1 => rng.up_to(200),
        2 => rng
            .pick(&[
                "1", "true", "\"12\"", "null", "[]", "{}", "1e999", "-0", "\"NaN\"",
            ])
            .into(),
        3 => "[".repeat(rng.below(2000)).into_bytes(),
        4 => vec![b'7'; 70_000], // over api.max_body_bytes
        5 => format!("{{\"value\": {}}}", rng.next()).into_bytes(),
        6 => format!("\"{}\"", "9".repeat(rng.below(400))).into_bytes(),
        _ => serde_json::to_vec(&Value::String(
            String::from_utf8_lossy(&rng.bytes(30)).into(),
        ))
        .unwrap(),
    }
}

/// The complete secured router for the CNC submodel, with a reader and a writer token.
fn secured_app(rate: u32) -> (axum::Router, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = (generate_token().unwrap(), generate_token().unwrap());
    let root = env!("CARGO_MANIFEST_DIR");
    let mut toml = format!(
        r#"
[api]
listen = "127.0.0.1:0"
rate_limit_per_s = {rate}
[[api.auth.tokens]]
name = "r"
role = "reader"
sha256 = "{}"
[[api.auth.tokens]]
name = "w"
role = "writer"
sha256 = "{}"
[aas]
environments = ["{root}/aas-templates/cnc1.aas.json"]
[[opcua]]
name = "sim"
endpoint = "opc.tcp://127.0.0.1:1/"
"#,
        hash_token(&reader),
        hash_token(&writer)
    );
    for (node, writable) in [
        ("SpindleSpeed", false),
        ("AxisPositions", false),
        ("SpindleSpeedSetpoint", true),
    ] {
        toml += &format!(
            "[[mapping]]\nnode_id = \"nsu=urn:opcua-sim:cnc;s=CNC1.{node}\"\nsubmodel = \"{SUBMODEL}\"\npath = \"{node}\"\nwritable = {writable}\n"
        );
    }
    let cfg_path = dir.path().join("fuzz.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let cfg = Config::load(&cfg_path).unwrap();
    let (env, mapping) = aas_gateway::pipeline::check(&cfg).unwrap();
    let env = Arc::new(aas_gateway::aas::live::LiveEnvironment::from(env));
    let mut stats = PipelineStats::default();
    stats.sources.push(Default::default()); // a source that is never connected
    stats.sinks.push(("mqtt".into(), Default::default()));
    let mapping = Arc::new(mapping);
    let stats = Arc::new(stats);
    let writeback = aas_gateway::writeback::WriteBack::new(
        &cfg.mapping,
        mapping.clone(),
        vec![("sim".into(), stats.sources[0].clone())],
        env.clone(),
        None,
    );
    let app = aas_gateway::ops::secured_api(
        &cfg,
        &mapping,
        aas_gateway::api::router(env.clone()),
        env,
        stats,
        None,
        writeback,
    )
    .unwrap();
    (app, reader, writer, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_malformed_requests_get_part2_errors_and_no_panic() {
    let (app, reader, writer, _dir) = secured_app(0);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut sent = 0;
    while sent < 5000 {
        let method = [
            Method::GET,
            Method::GET,
            Method::GET,
            Method::PATCH,
            Method::PATCH,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::HEAD,
        ][rng.below(9)]
        .clone();
        let uri = path(&mut rng);
        let Ok(parsed) = uri.parse::<axum::http::Uri>() else {
            continue; // not a URI at all: hyper refuses it before our code sees it
        };
        let mut req = Request::builder().method(method.clone()).uri(parsed);
        match rng.below(10) {
            0 => {}
            1 => {
                req = req.header(
                    "authorization",
                    rng.pick(&["Bearer", "Bearer ", "Basic abc", "bearer x", "Bearer aasg_"]),
                )
            }
            2..=5 => req = req.header("authorization", format!("Bearer {reader}")),
            _ => req = req.header("authorization", format!("Bearer {writer}")),
        }
        let b = if method == Method::GET || method == Method::HEAD {
            Vec::new()
        } else {
            body(&mut rng)
        };
        if rng.below(4) == 0 {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Body::from(b)).unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        sent += 1;
        *statuses.entry(status.as_u16()).or_default() += 1;
        // /ready answers 503 with its state report: the source here never connects.
        if uri.starts_with("/ready") && (method == Method::GET || method == Method::HEAD) {
            assert_eq!(status.as_u16(), 503, "{method} {uri}");
            continue;
        }
        // The only other 5xx allowed: a write to the writable element while its source is down.
        if status.is_server_error() {
            assert_eq!(status.as_u16(), 503, "{method} {uri}");
            assert!(uri.contains("SpindleSpeedSetpoint"), "{method} {uri}");
        }
        if status.is_success() || method == Method::HEAD {
            continue;
        }
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{method} {uri} -> {status}: not JSON ({e}, {ct:?}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(
            v["messages"][0]["messageType"], "Error",
            "{method} {uri}: {v}"
        );
        assert_eq!(
            v["messages"][0]["code"],
            status.as_u16().to_string(),
            "{method} {uri}: {v}"
        );
        assert!(
            v["messages"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
            "{method} {uri}: {v}"
        );
    }
    println!("status counts: {statuses:?}");
    // The generator must really reach the interesting answers, or this test proves nothing.
    for code in [200, 400, 401, 403, 404, 405, 413] {
        assert!(
            statuses.get(&code).copied().unwrap_or(0) > 10,
            "too few {code}: {statuses:?}"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_answers_429_but_never_limits_probes() {
    let (app, reader, _, _dir) = secured_app(5);
    let get = |path: &str| {
        Request::builder()
            .uri(path)
            .header("authorization", format!("Bearer {reader}"))
            .body(Body::empty())
            .unwrap()
    };
    let mut codes = BTreeMap::new();
    for _ in 0..30 {
        let resp = app.clone().oneshot(get("/api/v3.0/shells")).await.unwrap();
        *codes.entry(resp.status().as_u16()).or_insert(0) += 1;
        if resp.status() == 429 {
            let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(v["messages"][0]["code"], "429");
        }
        let health = app.clone().oneshot(get("/health")).await.unwrap();
        assert_eq!(health.status(), 200);
    }
    // A burst of twice the rate, then refusals (a slow machine may refill a token or two).
    let ok = codes.get(&200).copied().unwrap_or(0);
    assert!((10..=13).contains(&ok), "{codes:?}");
    assert_eq!(codes.get(&429).copied().unwrap_or(0), 30 - ok, "{codes:?}");
}

/// The limit is per client and applied after authentication: an anonymous flood (here with
/// no token at all) is refused for itself, while token holders are still answered.
#[tokio::test]
async fn an_anonymous_flood_does_not_starve_token_holders() {
    let (app, reader, writer, _dir) = secured_app(5);
    let request = |token: Option<&str>| {
        let b = Request::builder().uri("/api/v3.0/shells");
        match token {
            Some(t) => b.header("authorization", format!("Bearer {t}")),
            None => b,
        }
        .body(Body::empty())
        .unwrap()
    };
    let mut anonymous = BTreeMap::new();
    for _ in 0..40 {
        let resp = app.clone().oneshot(request(None)).await.unwrap();
        *anonymous.entry(resp.status().as_u16()).or_insert(0) += 1;
    }
    assert!(
        anonymous.get(&429).copied().unwrap_or(0) >= 20,
        "the flood was not limited: {anonymous:?}"
    );
    for token in [&reader, &writer] {
        let resp = app.clone().oneshot(request(Some(token))).await.unwrap();
        assert_eq!(
            resp.status(),
            200,
            "a token holder was refused after the flood"
        );
    }
}
