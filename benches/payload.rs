//! Cost of turning values into what the sinks send: MQTT JSON bodies (one per value, and one
//! per submodel window) and ILP rows.
//!
//! `cargo bench --bench payload` prints, per encoder, ns per value, values/s and bytes per
//! value, beside a baseline measured in the same run: the encoding the gateway used before
//! (a `serde_json::Value` per value and two chrono-formatted timestamp `String`s, serialised
//! through a derived struct), kept here only as that baseline. Each figure is the fastest of
//! five rounds over 200,000 values (mixed xs:double, xs:int, xs:boolean, xs:string; half with
//! a server timestamp), so a busy machine shows as spread, not as a slower encoder.
//!
//! The last two rows price questdb-rs's row API for issue #19: the xs:double values written
//! by the sink's own row writer, against a reference writer that appends each element's row
//! prefix (table, asset, element, `quality=`) escaped once, as a raw-row or pre-escaped-tag
//! API would allow (questdb-rs has none: every name and symbol is escaped again on every row).
//! The reference's bytes are checked equal to questdb-rs's before either is timed.

use std::time::Instant;

use aas_gateway::core::XsType;
use aas_gateway::model::{ElementTarget, SubmodelNames, SubmodelUpdate, TypedValue};
use aas_gateway::sinks::mqtt::{payload, submodel_messages};
use aas_gateway::sinks::questdb::{append_row, RowWriter};

const VALUES: usize = 200_000;
const ROUNDS: usize = 5;

/// The previous payload: serde-derived, a `serde_json::Value` and two `String`s per value.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Baseline<'a> {
    value: serde_json::Value,
    value_type: &'static str,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_timestamp: Option<String>,
    quality: &'static str,
    status_code: u32,
    submodel_id: &'a str,
    id_short_path: &'a str,
}

fn chrono_text(nanos: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn baseline_payload(u: &SubmodelUpdate) -> Vec<u8> {
    serde_json::to_vec(&Baseline {
        value: u.target.value_type.json(&u.value),
        value_type: u.target.value_type.as_str(),
        timestamp: chrono_text(u.source_ts_nanos),
        server_timestamp: (u.server_ts_nanos != 0).then(|| chrono_text(u.server_ts_nanos)),
        quality: u.quality().as_str(),
        status_code: u.status,
        submodel_id: &u.target.submodel.id,
        id_short_path: &u.target.id_short_path,
    })
    .unwrap()
}

fn updates() -> Vec<SubmodelUpdate> {
    let kinds = [XsType::Double, XsType::Int, XsType::Boolean, XsType::String];
    let targets: Vec<&'static ElementTarget> = (0..1000)
        .map(|i| {
            ElementTarget::new(
                SubmodelNames::shared(
                    "urn:aas-gateway:bench:sm:operational-data",
                    "OperationalData",
                    "CNC1",
                ),
                &format!("Axes.Axis{}.Position", i),
                kinds[i % kinds.len()],
                Some("mm"),
                None,
            )
            .leak()
        })
        .collect();
    (0..VALUES)
        .map(|i| {
            let target = targets[i % targets.len()];
            let value = match target.value_type {
                XsType::Double => TypedValue::Float(i as f64 * 0.173 - 1234.5),
                XsType::Int => TypedValue::Int(i as i64 - 100_000),
                XsType::Boolean => TypedValue::Bool(i % 3 == 0),
                _ => TypedValue::Text(format!("state {}", i % 17)),
            };
            SubmodelUpdate {
                target,
                value,
                status: 0,
                source_ts_nanos: 1_780_000_000_000_000_000 + i as i64 * 1_000_000,
                server_ts_nanos: if i % 2 == 0 {
                    1_780_000_000_000_500_000 + i as i64 * 1_000_000
                } else {
                    0
                },
            }
        })
        .collect()
}

/// Fastest of [`ROUNDS`] runs of `f` over all values: (ns per value, bytes per value).
fn measure(values: &[SubmodelUpdate], mut f: impl FnMut(&[SubmodelUpdate]) -> usize) -> (f64, f64) {
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        bytes = std::hint::black_box(f(values));
        best = best.min(t.elapsed().as_nanos() as f64 / values.len() as f64);
    }
    (best, bytes as f64 / values.len() as f64)
}

fn row(name: &str, (ns, bytes): (f64, f64), baseline: Option<f64>) {
    let vs = match baseline {
        Some(b) => format!("{:>6.2}x", b / ns),
        None => "   base".into(),
    };
    println!(
        "| {name:<44} | {ns:>8.1} | {:>12.0} | {bytes:>7.1} | {vs} |",
        1e9 / ns
    );
}

fn main() {
    let values = updates();
    // The encoders must agree on what they say before their speed means anything.
    for u in values.iter().take(1000) {
        let ours: serde_json::Value = serde_json::from_slice(&payload(u)).unwrap();
        let theirs: serde_json::Value = serde_json::from_slice(&baseline_payload(u)).unwrap();
        assert_eq!(ours, theirs);
    }
    println!("{VALUES} values, fastest of {ROUNDS} rounds\n");
    println!("| encoder                                      |  ns/value |     values/s | B/value | vs base |");
    println!("|----------------------------------------------|----------:|-------------:|--------:|--------:|");
    let base = measure(&values, |vs| {
        vs.iter().map(|u| baseline_payload(u).len()).sum()
    });
    row("MQTT per value, before (serde_json::Value)", base, None);
    let ours = measure(&values, |vs| vs.iter().map(|u| payload(u).len()).sum());
    row(
        "MQTT per value (written from the typed value)",
        ours,
        Some(base.0),
    );
    let windows = measure(&values, |vs| {
        vs.chunks(1000)
            .map(|w| {
                submodel_messages("aas", w)
                    .iter()
                    .map(|(_, b)| b.len())
                    .sum::<usize>()
            })
            .sum()
    });
    row("MQTT per submodel, windows of 1,000", windows, Some(base.0));
    let ilp = measure(&values, |vs| {
        let mut total = 0;
        for w in vs.chunks(1000) {
            let mut buf = questdb::ingress::Buffer::new(questdb::ingress::ProtocolVersion::V1);
            for u in w {
                append_row(&mut buf, "", u).unwrap();
            }
            total += buf.len();
        }
        total
    });
    row(
        "ILP rows (questdb-rs buffer, 1,000 per flush)",
        ilp,
        Some(base.0),
    );
    ilp_row_api_cost(&values);
}

/// The sink's ILP rows of the xs:double values, beside rows whose per-element prefix was
/// escaped once (see the module doc): what an upstream raw-row API would save per row.
fn ilp_row_api_cost(values: &[SubmodelUpdate]) {
    let doubles: Vec<SubmodelUpdate> = values
        .iter()
        .filter(|u| matches!(u.value, TypedValue::Float(_)))
        .cloned()
        .collect();
    // Per element, once: `<table>,asset=<shell>,element=<path>,quality=` (no character of
    // these names needs escaping; the equality check below would catch one that did).
    let prefixes: std::collections::HashMap<*const ElementTarget, Vec<u8>> = doubles
        .iter()
        .map(|u| {
            let t = u.target;
            let prefix = format!(
                "{},asset={},element={},quality=",
                t.submodel.id_short, t.submodel.shell_id_short, t.id_short_path
            );
            (t as *const ElementTarget, prefix.into_bytes())
        })
        .collect();
    let row_prefix: Vec<&[u8]> = doubles
        .iter()
        .map(|u| prefixes[&(u.target as *const ElementTarget)].as_slice())
        .collect();
    // The sink's writer, kept across rows as the sink keeps it (its table name is checked
    // once, not per row as `append_row` does).
    let mut writer = RowWriter::new("");
    let mut questdb_rows = |vs: &[SubmodelUpdate], buf: &mut questdb::ingress::Buffer| {
        for u in vs {
            writer.append(buf, u).unwrap();
        }
    };
    let reference_rows = |vs: &[SubmodelUpdate], prefixes: &[&[u8]], out: &mut Vec<u8>| {
        let (mut f, mut n) = (ryu::Buffer::new(), itoa::Buffer::new());
        for (u, prefix) in vs.iter().zip(prefixes) {
            let TypedValue::Float(v) = u.value else {
                unreachable!("doubles only")
            };
            out.extend_from_slice(prefix);
            out.extend_from_slice(u.quality().as_str().as_bytes());
            out.extend_from_slice(b" value_double=");
            out.extend_from_slice(f.format_finite(v).as_bytes());
            out.extend_from_slice(b",status=");
            out.extend_from_slice(n.format(u.status).as_bytes());
            out.extend_from_slice(b"i ");
            out.extend_from_slice(n.format(u.source_ts_nanos).as_bytes());
            out.push(b'\n');
        }
    };
    let mut buf = questdb::ingress::Buffer::new(questdb::ingress::ProtocolVersion::V1);
    let mut out = Vec::new();
    questdb_rows(&doubles, &mut buf);
    reference_rows(&doubles, &row_prefix, &mut out);
    assert!(
        buf.as_bytes() == out.as_slice(),
        "the reference rows must be questdb-rs's rows byte for byte"
    );
    // Both reuse one buffer, cleared per flush of 1,000 rows, as the sink does.
    let flushes = |len: usize| (0..len).step_by(1000).map(move |a| a..(a + 1000).min(len));
    let questdb = measure(&doubles, |vs| {
        let mut total = 0;
        for w in flushes(vs.len()) {
            buf.clear();
            questdb_rows(&vs[w], &mut buf);
            total += buf.len();
        }
        total
    });
    row("ILP rows, xs:double (questdb-rs buffer)", questdb, None);
    let reference = measure(&doubles, |vs| {
        let mut total = 0;
        for w in flushes(vs.len()) {
            out.clear();
            reference_rows(&vs[w.clone()], &row_prefix[w], &mut out);
            total += out.len();
        }
        total
    });
    row(
        "ILP rows, xs:double (prefix escaped once)",
        reference,
        Some(questdb.0),
    );
    println!(
        "\nA raw-row API would save {:.0} ns per xs:double row: {:.2} % of one core at 100,000 rows/s.",
        questdb.0 - reference.0,
        (questdb.0 - reference.0) * 100_000.0 / 1e9 * 100.0
    );
}
