//! The gateway-added latency from the gateway's own `/metrics`: the histogram
//! `aas_gateway_sink_added_latency_seconds{sink=…}` (per value, arrival at the gateway of the OPC UA
//! publish response that carried it → the sink's confirmation: PUBACK / HTTP 2xx).
//!
//! The bench scrapes it at the start and at the end of a window and takes the difference, so the
//! warm-up (initial values, catching up) does not count. Quantiles are interpolated linearly
//! inside the bucket that holds the rank, as Prometheus' `histogram_quantile` does: the figure is
//! only as fine as the buckets around it (the gateway uses fine buckets below 100 ms for this).
//!
//! Parsing accepts the Prometheus text format 0.0.4 and OpenMetrics (labels in any order,
//! `le="1"` or `le="1.0"`, escaped label values); lines of other families are skipped.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

/// The family the gateway exposes the added latency under.
pub const ADDED_LATENCY: &str = "aas_gateway_sink_added_latency_seconds";

/// One histogram series: cumulative counts per upper bound (seconds; the last is `+Inf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// (upper bound `le`, cumulative count), sorted by bound.
    pub buckets: Vec<(f64, f64)>,
    /// `_count`: every observation (equals the `+Inf` bucket).
    pub count: f64,
    /// `_sum`: the observations added up, seconds.
    pub sum: f64,
}

/// A quantile read from a histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quantile {
    /// Interpolated inside a bucket with a finite upper bound, seconds.
    Within(f64),
    /// The rank fell into the `+Inf` bucket: the value is above this (the largest finite bound).
    Above(f64),
}

impl Quantile {
    /// As the report writes it, in milliseconds.
    pub fn ms_cell(self) -> String {
        match self {
            Quantile::Within(s) if s * 1000.0 < 10.0 => format!("{:.1}", s * 1000.0),
            Quantile::Within(s) => format!("{:.0}", s * 1000.0),
            Quantile::Above(s) => format!("> {:.0}", s * 1000.0),
        }
    }
}

impl Histogram {
    /// What was observed between an earlier scrape `before` and this one (counters only grow;
    /// a gateway restarted in between would give negative counts, reported as an error).
    pub fn since(&self, before: &Histogram) -> Result<Histogram> {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for &(le, c) in &self.buckets {
            let c0 = before
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, c)| *c);
            if c < c0 {
                bail!("bucket le={le} went down from {c0} to {c}: the gateway restarted?");
            }
            buckets.push((le, c - c0));
        }
        Ok(Histogram {
            buckets,
            count: self.count - before.count,
            sum: self.sum - before.sum,
        })
    }

    /// The `q` quantile (0..=1), linearly interpolated inside its bucket (lower bound of the
    /// first bucket: 0). `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let total = self.buckets.last().map_or(0.0, |b| b.1);
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = (0.0, 0.0); // (bound, cumulative count) of the bucket below
        for &(le, c) in &self.buckets {
            if c >= rank && c > lower.1 {
                if le.is_infinite() {
                    return Some(Quantile::Above(lower.0));
                }
                let frac = (rank - lower.1) / (c - lower.1);
                return Some(Quantile::Within(lower.0 + (le - lower.0) * frac));
            }
            lower = (le, c);
        }
        // Cumulative counts never reached the total (malformed): the highest bound seen.
        Some(Quantile::Above(lower.0))
    }
}

/// The histograms of `family` in an exposition text, keyed by the value of `label` (e.g. the
/// `sink` label; series without it are keyed by "").
pub fn parse_histograms(
    text: &str,
    family: &str,
    label: &str,
) -> Result<BTreeMap<String, Histogram>> {
    let mut out: BTreeMap<String, Histogram> = BTreeMap::new();
    for (lineno, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let (kind, rest) = if let Some(r) = rest.strip_prefix("_bucket") {
            ("bucket", r)
        } else if let Some(r) = rest.strip_prefix("_count") {
            ("count", r)
        } else if let Some(r) = rest.strip_prefix("_sum") {
            ("sum", r)
        } else {
            continue; // another family with this prefix, or `_created`
        };
        let at = || format!("line {}: {line:?}", lineno + 1);
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let (labels, after) = parse_labels(r).with_context(at)?;
            (labels, after)
        } else if rest.starts_with(' ') {
            (Vec::new(), rest)
        } else {
            continue; // e.g. `…_bucketsomething`
        };
        // The value, then an optional timestamp (text format) or exemplar (OpenMetrics).
        let value: f64 = value
            .split_whitespace()
            .next()
            .context("no value")
            .and_then(|v| parse_float(v).context("value is not a number"))
            .with_context(at)?;
        let key = labels
            .iter()
            .find(|(k, _)| k == label)
            .map_or(String::new(), |(_, v)| v.clone());
        let h = out.entry(key).or_default();
        match kind {
            "bucket" => {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .context("bucket without le")
                    .and_then(|(_, v)| parse_float(v).context("le is not a number"))
                    .with_context(at)?;
                h.buckets.push((le, value));
            }
            "count" => h.count = value,
            _ => h.sum = value,
        }
    }
    for h in out.values_mut() {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(out)
}

/// Numbers as the exposition formats write them (`+Inf`, `-Inf`, `NaN`, `1e-3`, `1.0`).
fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// `name="value",…}` (after the opening brace) → the pairs and the text after `}`.
fn parse_labels(s: &str) -> Result<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, r) = rest.split_once('=').context("label without '='")?;
        let mut chars = r
            .strip_prefix('"')
            .context("label value not quoted")?
            .chars();
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => bail!("label value ends inside an escape"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => bail!("unterminated label value"),
            }
        }
        labels.push((name.trim().to_string(), value));
        rest = chars.as_str();
    }
}

/// GETs `/metrics` from the gateway's API listener (`api_url` is the line the gateway prints at
/// start, e.g. `http://127.0.0.1:PORT/api/v3.0`).
pub fn scrape(api_url: &str) -> Result<String> {
    let hostport = api_url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .with_context(|| format!("not an http:// URL: {api_url:?}"))?;
    let (host, port) = hostport
        .rsplit_once(':')
        .with_context(|| format!("no port in {api_url:?}"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("port of {api_url:?}"))?;
    crate::peers::http_get_host(host, port, "/metrics")
}

/// The histograms of `family` per sink from one scrape (normally [`ADDED_LATENCY`]); empty when
/// this gateway build does not expose the family (older builds) or the scrape failed (said on
/// stderr).
pub fn scrape_histograms(api_url: &str, family: &str) -> BTreeMap<String, Histogram> {
    match scrape(api_url).and_then(|t| parse_histograms(&t, family, "sink")) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("   scraping {api_url} /metrics failed: {e:#}");
            BTreeMap::new()
        }
    }
}

/// p50 and p99 per sink of what was observed between two scrapes.
pub fn added_quantiles(
    before: &BTreeMap<String, Histogram>,
    after: &BTreeMap<String, Histogram>,
) -> BTreeMap<String, (Option<Quantile>, Option<Quantile>, f64)> {
    let empty = Histogram::default();
    after
        .iter()
        .filter_map(|(sink, h)| {
            let d = match h.since(before.get(sink).unwrap_or(&empty)) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("   added latency of {sink}: {e:#}");
                    return None;
                }
            };
            Some((sink.clone(), (d.quantile(0.5), d.quantile(0.99), d.count)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A capture in the Prometheus text format 0.0.4 as prometheus-client writes it, with a
    /// neighbouring family and a family whose name starts like this one.
    const SAMPLE: &str = r#"# HELP aas_gateway_sink_added_latency_seconds Time a value spent in the gateway.
# TYPE aas_gateway_sink_added_latency_seconds histogram
# UNIT aas_gateway_sink_added_latency_seconds seconds
aas_gateway_sink_added_latency_seconds_sum{sink="mqtt"} 0.5
aas_gateway_sink_added_latency_seconds_count{sink="mqtt"} 100
aas_gateway_sink_added_latency_seconds_bucket{sink="mqtt",le="0.001"} 0
aas_gateway_sink_added_latency_seconds_bucket{sink="mqtt",le="0.0025"} 10
aas_gateway_sink_added_latency_seconds_bucket{sink="mqtt",le="0.005"} 60
aas_gateway_sink_added_latency_seconds_bucket{sink="mqtt",le="0.0075"} 90
aas_gateway_sink_added_latency_seconds_bucket{sink="mqtt",le="0.01"} 100
aas_gateway_sink_added_latency_seconds_bucket{sink="mqtt",le="+Inf"} 100
aas_gateway_sink_added_latency_seconds_sum{sink="questdb"} 30
aas_gateway_sink_added_latency_seconds_count{sink="questdb"} 10
aas_gateway_sink_added_latency_seconds_bucket{sink="questdb",le="1"} 2
aas_gateway_sink_added_latency_seconds_bucket{sink="questdb",le="30"} 8
aas_gateway_sink_added_latency_seconds_bucket{sink="questdb",le="+Inf"} 10
aas_gateway_end_to_end_latency_seconds_bucket{sink="mqtt",le="0.005"} 7
aas_gateway_sink_added_latency_seconds_created{sink="mqtt"} 1.7e9
"#;

    fn assert_within(q: Option<Quantile>, want: f64) {
        match q {
            Some(Quantile::Within(s)) => assert!((s - want).abs() < 1e-12, "{s} != {want}"),
            other => panic!("{other:?} != Within({want})"),
        }
    }

    #[test]
    fn parses_the_family_per_sink_and_skips_others() {
        let h = parse_histograms(SAMPLE, ADDED_LATENCY, "sink").unwrap();
        assert_eq!(h.keys().collect::<Vec<_>>(), ["mqtt", "questdb"]);
        let m = &h["mqtt"];
        assert_eq!(m.count, 100.0);
        assert_eq!(m.sum, 0.5);
        assert_eq!(m.buckets.len(), 6);
        assert_eq!(m.buckets[2], (0.005, 60.0));
        assert_eq!(m.buckets[5], (f64::INFINITY, 100.0));
    }

    #[test]
    fn openmetrics_label_order_float_bounds_and_escapes() {
        let text = "aas_gateway_sink_added_latency_seconds_bucket{le=\"1.0\",sink=\"a\\\"b\"} 3\n\
                    aas_gateway_sink_added_latency_seconds_bucket{le=\"+Inf\",sink=\"a\\\"b\"} 4 # {} 0.5\n\
                    # EOF\n";
        let h = parse_histograms(text, ADDED_LATENCY, "sink").unwrap();
        assert_eq!(h["a\"b"].buckets, vec![(1.0, 3.0), (f64::INFINITY, 4.0)]);
    }

    #[test]
    fn bad_input_names_the_line() {
        let text = "x 1\naas_gateway_sink_added_latency_seconds_bucket{sink=\"mqtt\"} 3\n";
        let e = format!(
            "{:#}",
            parse_histograms(text, ADDED_LATENCY, "sink").unwrap_err()
        );
        assert!(e.contains("line 2") && e.contains("without le"), "{e}");
        let text = "aas_gateway_sink_added_latency_seconds_count{sink=\"mqtt} 3\n";
        assert!(parse_histograms(text, ADDED_LATENCY, "sink").is_err());
    }

    #[test]
    fn quantiles_interpolate_linearly_inside_the_bucket() {
        let h = parse_histograms(SAMPLE, ADDED_LATENCY, "sink").unwrap();
        let m = &h["mqtt"];
        // Rank 50 of 100 lies in (0.0025, 0.005] holding 10..60: 40/50 of the way.
        assert_within(m.quantile(0.5), 0.0025 + 0.0025 * 0.8);
        // Rank 99 in (0.0075, 0.01] holding 90..100: 9/10 of the way.
        assert_within(m.quantile(0.99), 0.00975);
        // Rank 5 in the first populated bucket (0.001, 0.0025] holding 0..10: half way.
        assert_within(m.quantile(0.05), 0.00175);
        // The first bucket's lower bound is 0.
        let first = Histogram {
            buckets: vec![(0.01, 4.0), (f64::INFINITY, 4.0)],
            count: 4.0,
            sum: 0.0,
        };
        assert_within(first.quantile(0.5), 0.005);
        // questdb: rank 9.9 of 10 falls into +Inf: above the largest finite bound.
        assert_eq!(h["questdb"].quantile(0.99), Some(Quantile::Above(30.0)));
        assert_eq!(Quantile::Above(30.0).ms_cell(), "> 30000");
        assert_eq!(Quantile::Within(0.00175).ms_cell(), "1.8");
        assert_eq!(Quantile::Within(0.0812).ms_cell(), "81");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn the_window_is_the_difference_of_two_scrapes() {
        let after = parse_histograms(SAMPLE, ADDED_LATENCY, "sink").unwrap();
        // Before the window: 10 fast values of the warm-up, and no questdb series yet.
        let before_text =
            "aas_gateway_sink_added_latency_seconds_bucket{sink=\"mqtt\",le=\"0.001\"} 0\n\
            aas_gateway_sink_added_latency_seconds_bucket{sink=\"mqtt\",le=\"0.0025\"} 10\n\
            aas_gateway_sink_added_latency_seconds_bucket{sink=\"mqtt\",le=\"0.005\"} 10\n\
            aas_gateway_sink_added_latency_seconds_bucket{sink=\"mqtt\",le=\"0.0075\"} 10\n\
            aas_gateway_sink_added_latency_seconds_bucket{sink=\"mqtt\",le=\"0.01\"} 10\n\
            aas_gateway_sink_added_latency_seconds_bucket{sink=\"mqtt\",le=\"+Inf\"} 10\n\
            aas_gateway_sink_added_latency_seconds_count{sink=\"mqtt\"} 10\n\
            aas_gateway_sink_added_latency_seconds_sum{sink=\"mqtt\"} 0.02\n";
        let before = parse_histograms(before_text, ADDED_LATENCY, "sink").unwrap();
        let d = after["mqtt"].since(&before["mqtt"]).unwrap();
        assert_eq!(d.count, 90.0);
        assert_eq!(d.buckets[1], (0.0025, 0.0));
        // Rank 45 of 90 in (0.0025, 0.005] holding 0..50: 45/50 of the way.
        assert_within(d.quantile(0.5), 0.0025 + 0.0025 * 0.9);
        let q = added_quantiles(&before, &after);
        assert_eq!(q["questdb"].2, 10.0);
        assert_eq!(q["mqtt"].2, 90.0);
        // A restarted gateway (counters went down) is an error, not a negative count.
        assert!(before["mqtt"].since(&after["mqtt"]).is_err());
    }
}
