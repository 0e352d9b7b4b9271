//! History as AAS (IDTA 02008): the InternalSegment holds exactly what the simulator produced,
//! its metadata (RecordCount/StartTime/EndTime/Duration/LastUpdate) matches its records, the
//! served submodel passes the independent AAS checkers, and the LinkedSegment's query, run on
//! the rows the real ILP sink code writes, returns the same records (PostgreSQL as SQL engine:
//! QuestDB cannot be installed here; the query uses only functions both offer).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use aas_gateway::config::Config;
use aas_gateway::pipeline::{self, Gateway};
use common::cnc::{self, now_nanos};
use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const RECORDS: &str = "Segments.InternalSegment.Records";

/// Every CNC rule with `history = true`, except AxisPositions (an array: no Property).
fn history_config(endpoint: &str, dir: &std::path::Path, extra: &str) -> Config {
    let toml = cnc::config_toml(endpoint, 1, "http::addr=127.0.0.1:1;", &dir.join("pki"))
        .replace("[mqtt]\n", "[mqtt]\nenabled = false\n")
        .replace("[questdb]\nenabled = true", "[questdb]\nenabled = false")
        .replace(
            "path = \"SpindleSpeed\"\n",
            "path = \"SpindleSpeed\"\nhistory = true\n",
        );
    let mut toml = cnc::NODES
        .iter()
        .filter(|n| **n != "AxisPositions" && **n != "SpindleSpeed")
        .fold(toml, |t, n| {
            t.replace(
                &format!("path = \"{n}\"\n"),
                &format!("path = \"{n}\"\nhistory = true\n"),
            )
        });
    toml += extra;
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(&path).unwrap()
}

fn element<'v>(parent: &'v Value, path: &str) -> &'v Value {
    path.split('.').fold(parent, |el, name| {
        let children = el
            .get("submodelElements")
            .or_else(|| el.get("value"))
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("no children looking for {name} in {el}"));
        children
            .iter()
            .find(|c| c["idShort"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    })
}

fn text(el: &Value) -> &str {
    el["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no value: {el}"))
}

/// Record properties as JSON values typed like the simulator's (see `cnc::expected_json`).
fn typed(p: &Value) -> Value {
    let v = text(p);
    match p["valueType"].as_str().unwrap() {
        "xs:double" => json!(v.parse::<f64>().unwrap()),
        "xs:boolean" => json!(v == "true"),
        "xs:int" => json!(v.parse::<i64>().unwrap()),
        "xs:unsignedInt" => json!(v.parse::<u64>().unwrap()),
        _ => json!(v),
    }
}

/// element → time → value, from Record SMCs.
fn values_of(records: &[Value], window: (i64, i64)) -> cnc::Values {
    let mut out = cnc::Values::new();
    for r in records {
        let props = r["value"].as_array().unwrap();
        assert_eq!(props[0]["idShort"], "Time");
        let ts = parse_ts(text(&props[0]));
        if ts < window.0 || ts > window.1 {
            continue;
        }
        for p in &props[1..] {
            assert!(p.get("qualifiers").is_none(), "all values are good: {p}");
            out.entry(p["idShort"].as_str().unwrap().to_string())
                .or_default()
                .insert(ts, typed(p));
        }
    }
    out
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_segment_holds_what_the_simulator_produced() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 200).await;
    let mut changes = sim.subscribe_changes();
    let cfg = history_config(&sim.endpoint_url(), dir.path(), "");
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(cfg, shutdown.clone()).await.unwrap();
    let api = format!("http://{}/api/v3.0", gateway.api_addr.unwrap());
    let http = reqwest::Client::new();

    // The shell references its generated Time Series submodel.
    let shell_id = "urn:aas-gateway:sim:aas:cnc1";
    let sm_id = format!("{shell_id}:time-series");
    let sm_url = format!("{api}/submodels/{}", aas_gateway::api::encode_id(&sm_id));
    let refs = get(
        &http,
        &format!(
            "{api}/shells/{}/submodel-refs",
            aas_gateway::api::encode_id(shell_id)
        ),
    )
    .await;
    assert!(
        refs["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["keys"][0]["value"] == sm_id.as_str()),
        "{refs}"
    );

    // Wait for values, then observe a window.
    let t0 = tokio::time::Instant::now();
    let started = now_nanos();
    loop {
        let sm = get(&http, &sm_url).await;
        if text(element(&sm, "Segments.InternalSegment.RecordCount")) != "0" {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no record within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = (now_nanos() + 500_000_000, 0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = (window.0, now_nanos() - 1_000_000_000);
    let sm = get(&http, &sm_url).await;
    let read_at = now_nanos();
    shutdown.cancel();
    gateway.wait().await.unwrap();
    sim.stop().await;

    // Records = what the simulator produced, same timestamps and values.
    let records = element(&sm, RECORDS)["value"].as_array().unwrap().clone();
    let mut produced = cnc::produced(&mut changes, &[window]);
    produced.remove("AxisPositions");
    let total: usize = produced.values().map(|v| v.len()).sum();
    assert!(total >= 40, "the simulator produced only {total} values");
    assert_eq!(values_of(&records, window), produced);

    // Segment metadata describes exactly these records.
    let seg = |p: &str| text(element(&sm, &format!("Segments.InternalSegment.{p}"))).to_string();
    let times: Vec<i64> = records
        .iter()
        .map(|r| parse_ts(text(&r["value"][0])))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "records in time order, one per time"
    );
    assert_eq!(seg("RecordCount"), records.len().to_string());
    assert_eq!(parse_ts(&seg("StartTime")), times[0]);
    assert_eq!(parse_ts(&seg("EndTime")), *times.last().unwrap());
    let secs = (times.last().unwrap() - times[0]) as f64 / 1e9;
    let duration: f64 = seg("Duration")
        .strip_prefix("PT")
        .and_then(|d| d.strip_suffix('S'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - secs).abs() < 1e-6,
        "Duration {duration} vs {secs}"
    );
    let last_update = parse_ts(&seg("LastUpdate"));
    assert!(
        last_update >= started && last_update <= read_at,
        "LastUpdate {} outside the run",
        seg("LastUpdate")
    );
    assert!(
        last_update >= *times.last().unwrap() - 2_000_000_000,
        "LastUpdate lags the newest record"
    );
    assert_eq!(seg("State"), "in progress");

    // The LinkedSegment points at QuestDB for the same asset from the first value on.
    let linked = element(&sm, "Segments.LinkedSegment");
    assert_eq!(
        text(element(linked, "Endpoint")),
        "http://127.0.0.1:9000/exec"
    );
    let query = text(element(linked, "Query"));
    assert!(
        query.contains("FROM \"OperationalData\" WHERE asset = 'CNC1'"),
        "{query}"
    );

    // The served submodel passes aas-core3.0, basyx and aas-test-engines.
    let file = dir.path().join("served.json");
    std::fs::write(
        &file,
        serde_json::to_vec(&json!({"submodels": [sm]})).unwrap(),
    )
    .unwrap();
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/validators/check_aas.py"))
        .arg("--test-engines")
        .arg(&file)
        .output()
        .expect(".venv missing: run `.ci/peers.sh install`");
    let report =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_range_pages_and_caps_records() {
    let dir = tempfile::tempdir().unwrap();
    let sim = common::start_sim(dir.path(), 100).await;
    let cfg = history_config(
        &sim.endpoint_url(),
        dir.path(),
        "[history]\nmax_values_per_response = 20\nmax_records_per_variable = 20\n",
    );
    let shutdown = CancellationToken::new();
    let gateway = Gateway::start(cfg, shutdown.clone()).await.unwrap();
    let api = format!("http://{}/api/v3.0", gateway.api_addr.unwrap());
    let http = reqwest::Client::new();
    let sm_url = format!(
        "{api}/submodels/{}",
        aas_gateway::api::encode_id("urn:aas-gateway:sim:aas:cnc1:time-series")
    );
    // Enough records that a response cannot hold them all (connecting may take a while).
    let t0 = tokio::time::Instant::now();
    let sm = loop {
        let sm = get(&http, &sm_url).await;
        if text(element(&sm, "Segments.InternalSegment.RecordCount"))
            .parse::<usize>()
            .unwrap()
            > 10
        {
            break sm;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "fewer than 10 records within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let history = gateway.history.clone().unwrap();
    shutdown.cancel();
    gateway.wait().await.unwrap();
    sim.stop().await;

    // The store holds at most 20 values per variable; a response at most 20 values.
    assert!(history.stored_values() <= 20 * history.variables().len());
    let (bytes, bound) = history.memory();
    assert!(bytes > 0 && bytes <= bound, "{bytes} > {bound}");
    let count: usize = text(element(&sm, "Segments.InternalSegment.RecordCount"))
        .parse()
        .unwrap();
    let newest = element(&sm, RECORDS)["value"].as_array().unwrap().clone();
    let values: usize = newest
        .iter()
        .map(|r| r["value"].as_array().unwrap().len() - 1)
        .sum();
    assert!(values <= 20, "{values} values in one response");
    assert!(
        count > newest.len() && !newest.is_empty(),
        "{count} records, {} served",
        newest.len()
    );
    let end = text(element(&sm, "Segments.InternalSegment.EndTime")).to_string();
    assert_eq!(text(&newest[newest.len() - 1]["value"][0]), end);

    // The time-range extension pages through all records with the gateway's own data (the
    // gateway is stopped: answer from the live history object through a fresh router).
    let start = text(element(&sm, "Segments.InternalSegment.StartTime")).to_string();
    let env = std::sync::Arc::new(aas_gateway::aas::live::LiveEnvironment::from(
        pipeline::check_with_history(&history_config("opc.tcp://127.0.0.1:1/", dir.path(), ""))
            .unwrap()
            .0,
    ));
    let app = aas_gateway::api::router(env).layer(axum_extension(history.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum_serve(listener, app).await });
    let base = format!(
        "http://{addr}/api/v3.0/submodels/{}/submodel-elements/{RECORDS}",
        aas_gateway::api::encode_id("urn:aas-gateway:sim:aas:cnc1:time-series")
    );
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}?from={start}&to={end}&limit=3");
        if let Some(c) = &cursor {
            url += &format!("&cursor={c}");
        }
        let page = get(&http, &url.replace('+', "%2B")).await;
        let items = page["result"].as_array().unwrap();
        assert!(items.len() <= 3);
        all.extend(items.iter().cloned());
        match page["paging_metadata"]["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(all.len(), count, "pages cover every record once");
    assert_eq!(all[all.len() - newest.len()..], newest[..]);
    let bad = http
        .get(format!("{base}?from=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

fn axum_extension(
    h: std::sync::Arc<aas_gateway::history::History>,
) -> axum::Extension<std::sync::Arc<aas_gateway::history::History>> {
    axum::Extension(h)
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    axum::serve(listener, app).await.unwrap();
}

#[test]
fn history_needs_a_property_and_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = history_config("opc.tcp://127.0.0.1:1/", dir.path(), "");
    let axis = cfg
        .mapping
        .iter()
        .position(|r| r.path == "AxisPositions")
        .unwrap();
    cfg.mapping[axis].history = true;
    let err = pipeline::check(&cfg).err().unwrap().to_string();
    assert!(
        err.contains(&format!(
            "mapping[{axis}].history: AxisPositions is a PropertyList"
        )),
        "{err}"
    );
    cfg.mapping[axis].history = false;
    cfg.history.window_s = 0;
    cfg.history.questdb_http = "questdb:9000".into();
    let err = pipeline::check(&cfg).err().unwrap().to_string();
    assert!(
        err.contains("history.window_s: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("history.questdb_http: \"questdb:9000\" is not an http://"),
        "{err}"
    );
}

/// A PostgreSQL server of the test's own (installed by `.ci/peers.sh install`), on a Unix
/// socket in a temporary directory. PostgreSQL refuses to run as root: then it runs as the
/// `postgres` user the package creates.
struct Postgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path().join("bin"))
                    .find(|b| b.join("initdb").is_file())
            })
            .expect("PostgreSQL is not installed: run `.ci/peers.sh install`");
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let pg = Postgres {
            bin,
            dir,
            port: free_port(),
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        let opts = format!(
            "-p {} -k {} -c listen_addresses='' -c timezone=UTC",
            pg.port,
            pg.dir.path().display()
        );
        // -l: the server must not inherit our output pipes, or reading them never ends.
        let log = pg.dir.path().join("server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let out = if unsafe_is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs SQL, returns the unaligned output; an SQL error fails the test with its message.
    fn sql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                self.dir.path().to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", "postgres", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let exe = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = if unsafe_is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Splits an ILP (protocol version 1) line the sink wrote into table, symbols, fields, timestamp.
/// Table, symbols, fields, timestamp (ns) of one ILP line.
type IlpRow = (String, Vec<(String, String)>, Vec<(String, String)>, i64);

fn parse_ilp(line: &str) -> IlpRow {
    // Split at spaces outside double quotes (string fields may hold spaces).
    let mut parts = Vec::new();
    let (mut cur, mut quoted, mut escaped) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            _ if escaped => {
                cur.push(c);
                escaped = false;
                continue;
            }
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    assert_eq!(parts.len(), 3, "{line}");
    let mut head = parts[0].split(',');
    let table = head.next().unwrap().to_string();
    let kv = |s: &str| {
        let (k, v) = s.split_once('=').unwrap();
        (k.to_string(), v.to_string())
    };
    let symbols = head.map(kv).collect();
    let fields = parts[1].split(',').map(kv).collect();
    (table, symbols, fields, parts[2].parse().unwrap())
}

fn sql_value(field: &str, ilp: &str) -> String {
    match field {
        "value_bool" => (ilp == "t" || ilp == "true").to_string(),
        "value_str" => {
            let s = ilp.strip_prefix('"').unwrap().strip_suffix('"').unwrap();
            format!(
                "'{}'",
                s.replace("\\\"", "\"")
                    .replace("\\\\", "\\")
                    .replace('\'', "''")
            )
        }
        _ => ilp.trim_end_matches('i').to_string(),
    }
}

/// PostgreSQL's JSON writes the double 1000.0 as 1000: compare numbers as numbers.
fn number_as_f64(v: Value) -> Value {
    match v.as_f64() {
        Some(f) if v.is_number() => json!(f),
        _ => v,
    }
}

#[test]
fn linked_segment_query_returns_the_internal_records_from_the_ilp_layout() {
    use aas_gateway::model::Reading;
    use opcua::types::{DateTime, Variant};

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = history_config("opc.tcp://127.0.0.1:1/", dir.path(), "");
    cfg.questdb.table_prefix = "plant_".into();
    let (env, router, history) = pipeline::check_with_history(&cfg).unwrap();
    let history = history.unwrap();

    // Values as the sources deliver them: most variables share a tick's timestamp, Running has
    // its own; one value is Bad. Every update goes to the history and through the real ILP code.
    let base = 1_780_000_000_000_000_000i64;
    let mut buf = questdb::ingress::Buffer::new(questdb::ingress::ProtocolVersion::V1);
    let mut updates = Vec::new();
    for tick in 0..12i64 {
        for (rule, r) in cfg.mapping.iter().enumerate().filter(|(_, r)| r.history) {
            let ts = base + tick * 250_000_000 + if r.path == "Running" { 7_000_000 } else { 0 };
            let value = match r.path.as_str() {
                "SpindleSpeed" => Variant::Double(1000.0 + tick as f64 * 12.5),
                "SpindleLoad" | "FeedRate" => Variant::Double(tick as f64 / 3.0),
                "ProgramName" => Variant::String(format!("O{} it's \"x\"", 1000 + tick).into()),
                "PartCount" => Variant::UInt32(tick as u32 * 2),
                "ExecutionState" => Variant::String("ACTIVE".into()),
                "AlarmCode" => Variant::Int32(-(tick as i32)),
                "Running" => Variant::Boolean(tick % 3 == 0),
                "LastCycleEnd" => Variant::DateTime(Box::new(DateTime::from(
                    chrono::DateTime::from_timestamp_nanos(base - 1_000_000_000),
                ))),
                other => panic!("unexpected {other}"),
            };
            let status = if tick == 5 && r.path == "FeedRate" {
                0x8000_0000
            } else {
                0
            };
            let reading = Reading {
                rule: rule as u32,
                // Converted as the OPC UA source converts what it receives.
                value: aas_gateway::sources::opcua::convert::variant_to_typed(&value).unwrap(),
                status,
                source_ts_nanos: ts,
                server_ts_nanos: ts,
            };
            let (route, update) = router.route(reading).unwrap();
            aas_gateway::sinks::questdb::append_row(&mut buf, &cfg.questdb.table_prefix, &update)
                .unwrap();
            updates.push((route, update));
        }
    }
    history.record(updates.iter().map(|(_, u)| u));

    let sm_id = "urn:aas-gateway:sim:aas:cnc1:time-series";
    let sm = history.live_submodel(env.submodel(sm_id).unwrap()).unwrap();
    let records = element(&sm, RECORDS)["value"].as_array().unwrap().clone();
    assert_eq!(records.len(), 24, "12 ticks, Running at its own times");
    let query = text(element(&sm, "Segments.LinkedSegment.Query")).to_string();

    // The tables exactly as the sink's rows define them, plus rows the query must not return:
    // another asset, and a value before the segment.
    let pg = Postgres::start();
    let text_ilp = String::from_utf8(buf.as_bytes().to_vec()).unwrap();
    let mut tables = std::collections::BTreeSet::new();
    let mut inserts = Vec::new();
    for line in text_ilp.lines() {
        let (table, symbols, fields, ts) = parse_ilp(line);
        tables.insert(table.clone());
        let mut cols = vec!["timestamp".to_string()];
        let mut vals = vec![format!("to_timestamp({ts}::numeric / 1e9)")];
        for (k, v) in &symbols {
            cols.push(k.clone());
            vals.push(format!("'{v}'"));
        }
        for (k, v) in &fields {
            cols.push(k.clone());
            vals.push(sql_value(k, v));
        }
        inserts.push(format!(
            "INSERT INTO \"{table}\" ({}) VALUES ({})",
            cols.join(", "),
            vals.join(", ")
        ));
    }
    assert_eq!(tables.iter().collect::<Vec<_>>(), ["plant_OperationalData"]);
    let mut sql = String::new();
    for t in &tables {
        sql += &format!(
            "CREATE TABLE \"{t}\" (timestamp timestamptz, asset text, element text, quality text, \
             value_double double precision, value_long bigint, value_bool boolean, value_str text, status bigint);\n"
        );
    }
    sql += &(inserts.join(";\n") + ";\n");
    sql += &format!(
        "INSERT INTO \"plant_OperationalData\" (timestamp, asset, element, quality, value_double, status) VALUES \
         (to_timestamp({} / 1e9), 'CNC2', 'SpindleSpeed', 'good', 1, 0), \
         (to_timestamp({} / 1e9), 'CNC1', 'SpindleSpeed', 'good', 2, 0);",
        base, base - 60_000_000_000
    );
    pg.sql(&sql);
    let rows: Value =
        serde_json::from_str(&pg.sql(&format!("SELECT json_agg(q) FROM ({query}) q"))).unwrap();

    // Same records: time and every value.
    let from_sql: Vec<(i64, BTreeMap<String, Value>)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let mut row = row.as_object().unwrap().clone();
            let ts = parse_ts(row.remove("Time").unwrap().as_str().unwrap());
            (
                ts,
                row.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, number_as_f64(v)))
                    .collect(),
            )
        })
        .collect();
    let from_aas: Vec<(i64, BTreeMap<String, Value>)> = records
        .iter()
        .map(|r| {
            let props = r["value"].as_array().unwrap();
            let ts = parse_ts(text(&props[0]));
            (
                ts,
                props[1..]
                    .iter()
                    .map(|p| {
                        (
                            p["idShort"].as_str().unwrap().to_string(),
                            number_as_f64(typed(p)),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(from_sql, from_aas);
}

#[test]
fn a_time_series_submodel_of_the_template_is_taken_over() {
    // meter1.aas.json ships a TimeSeries submodel (IDTA 02008 semanticId) referenced by Meter1.
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[aas]\nenvironments = [\"{root}/aas-templates/meter1.aas.json\"]\n[mqtt]\nenabled = false\n\
         [[opcua]]\nname = \"sim\"\nendpoint = \"opc.tcp://127.0.0.1:1/\"\n\
         [[mapping]]\nnode_id = \"nsu=urn:opcua-sim:meter;s=Meter1.ActivePower\"\n\
         submodel = \"urn:aas-gateway:sim:sm:meter1:operational-data\"\npath = \"ActivePower\"\nhistory = true\n",
        root = repo_root().display()
    );
    std::fs::write(dir.path().join("g.toml"), toml).unwrap();
    let cfg = Config::load(&dir.path().join("g.toml")).unwrap();
    let (env, _, history) = pipeline::check_with_history(&cfg).unwrap();
    let id = "urn:aas-gateway:sim:sm:meter1:time-series";
    assert_eq!(history.unwrap().assets()[0].submodel_id, id);
    let time_series: Vec<_> = env
        .submodels
        .iter()
        .map(|s| s.to_value())
        .filter(|s| {
            s["semanticId"]["keys"][0]["value"] == aas_gateway::history::TIME_SERIES_SEMANTIC_ID
        })
        .collect();
    assert_eq!(time_series.len(), 1, "no second Time Series submodel");
    let sm = &time_series[0];
    assert_eq!(sm["id"], id);
    let record = element(sm, "Metadata.Record")["value"].as_array().unwrap();
    let names: Vec<_> = record
        .iter()
        .map(|p| p["idShort"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Time", "ActivePower"]);
    assert!(element(sm, "Segments.InternalSegment.Records")
        .get("value")
        .is_none());
    let refs = env.shells[0]["submodels"].as_array().unwrap();
    assert_eq!(
        refs.iter().filter(|r| r["keys"][0]["value"] == id).count(),
        1
    );
}
