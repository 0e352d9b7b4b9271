//! Memory of the history store: 1,000 history variables changing every second for one hour of
//! source time (fed with synthetic timestamps, so the hour takes seconds), through the real
//! router and `History::record` path the dispatcher uses.
//!
//! `cargo bench --bench history` prints a table: values fed, values held, store bytes against
//! their bound, process RSS, and the cost per value; the baseline in the same run is the
//! dispatcher's routing alone (what a value costs without history). Then the cost and size of
//! one API read of the Time Series submodel.

use std::time::Instant;

use aas_gateway::config::Config;
use aas_gateway::model::Reading;
use aas_gateway::pipeline;

const VARIABLES: usize = 1_000;
const HOUR_S: i64 = 3_600;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn setup(dir: &std::path::Path, history: bool) -> Config {
    let props: Vec<_> = (0..VARIABLES)
        .map(|i| serde_json::json!({"modelType": "Property", "idShort": format!("V{i}"), "valueType": "xs:double"}))
        .collect();
    let env = serde_json::json!({
        "assetAdministrationShells": [{"modelType": "AssetAdministrationShell", "id": "urn:bench:aas", "idShort": "Bench",
            "assetInformation": {"assetKind": "Instance", "globalAssetId": "urn:bench:asset"},
            "submodels": [{"type": "ModelReference", "keys": [{"type": "Submodel", "value": "urn:bench:sm"}]}]}],
        "submodels": [{"modelType": "Submodel", "id": "urn:bench:sm", "idShort": "Scale", "submodelElements": props}]
    });
    std::fs::write(dir.join("env.json"), env.to_string()).unwrap();
    let mut toml = String::from(
        "[aas]\nenvironments = [\"env.json\"]\n[mqtt]\nenabled = false\n[[opcua]]\nname = \"s\"\nendpoint = \"opc.tcp://127.0.0.1:1/\"\n",
    );
    for i in 0..VARIABLES {
        toml += &format!(
            "[[mapping]]\nnode_id = \"ns=2;s=V{i}\"\nsubmodel = \"urn:bench:sm\"\npath = \"V{i}\"\nhistory = {history}\n"
        );
    }
    std::fs::write(dir.join("gateway.toml"), toml).unwrap();
    Config::load(&dir.join("gateway.toml")).unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_780_000_000_000_000_000i64;
    let reading = |rule: usize, s: i64| Reading {
        rule: rule as u32,
        value: aas_gateway::core::TypedValue::Float(s as f64 * 0.5 + rule as f64),
        status: 0,
        source_ts_nanos: base + s * 1_000_000_000,
        server_ts_nanos: base + s * 1_000_000_000,
    };

    // Baseline: routing only (the dispatcher's work per value without history).
    let cfg = setup(dir.path(), false);
    let (_, router) = pipeline::check(&cfg).unwrap();
    let t = Instant::now();
    let mut n = 0u64;
    for s in 0..600 {
        let batch: Vec<_> = (0..VARIABLES)
            .map(|r| router.route(reading(r, s)).unwrap())
            .collect();
        n += batch.len() as u64;
    }
    let route_ns = t.elapsed().as_nanos() as f64 / n as f64;

    let cfg = setup(dir.path(), true);
    let h = &cfg.history;
    println!(
        "history: {VARIABLES} variables @ 1 s for {HOUR_S} s of source time; window_s = {}, max_records_per_variable = {}",
        h.window_s, h.max_records_per_variable
    );
    let (env, router, history) = pipeline::check_with_history(&cfg).unwrap();
    let history = history.unwrap();
    let rss_start = rss_kib();
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>12}",
        "source_s", "values_fed", "values_held", "store_KiB", "bound_KiB", "RSS_KiB", "ns/value"
    );
    let mut fed = 0u64;
    let t = Instant::now();
    let mut record_ns = 0f64;
    for s in 0..HOUR_S {
        let batch: Vec<_> = (0..VARIABLES)
            .map(|r| router.route(reading(r, s)).unwrap())
            .collect();
        let t_rec = Instant::now();
        history.record(batch.iter().map(|(_, u)| u));
        record_ns += t_rec.elapsed().as_nanos() as f64;
        fed += batch.len() as u64;
        if [59, 299, 599, 1799, HOUR_S - 1].contains(&s) {
            let (bytes, bound) = history.memory();
            println!(
                "{:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>12.0}",
                s + 1,
                fed,
                history.stored_values(),
                bytes / 1024,
                bound / 1024,
                rss_kib(),
                record_ns / fed as f64
            );
            assert!(
                bytes <= bound,
                "store {bytes} B exceeds its bound {bound} B"
            );
        }
    }
    let total = t.elapsed();
    let (bytes, bound) = history.memory();
    println!(
        "fed {fed} values in {:.2} s; routing alone {route_ns:.0} ns/value (baseline), history.record {:.0} ns/value on top",
        total.as_secs_f64(),
        record_ns / fed as f64
    );
    println!(
        "held {} values = {} per variable (window {} s at 1 s + the newest); store {} KiB <= bound {} KiB; RSS grew {} KiB since the store was created",
        history.stored_values(),
        history.stored_values() / VARIABLES,
        cfg.history.window_s,
        bytes / 1024,
        bound / 1024,
        rss_kib().saturating_sub(rss_start)
    );

    // One API read of the whole submodel: bounded by max_values_per_response.
    let sm = env.submodel("urn:bench:aas:time-series").unwrap();
    let t = Instant::now();
    let live = history.live_submodel(sm).unwrap();
    let build = t.elapsed();
    let json = serde_json::to_vec(&live).unwrap();
    println!(
        "API read of the Time Series submodel: {:.1} ms, {} KiB JSON ({} values max per response)",
        build.as_secs_f64() * 1e3,
        json.len() / 1024,
        cfg.history.max_values_per_response
    );
}
