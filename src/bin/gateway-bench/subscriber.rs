//! The counting MQTT subscriber: a persistent session (QoS 1) that counts every value once by
//! (element, source timestamp) and measures latency from the source timestamp in the payload to
//! its arrival here.
//!
//! The scale simulator stamps all N variables of one tick with the same source timestamp, so
//! counting unique arrivals per timestamp tells exactly how many values of each tick arrived.
//! Delivery per element is in order (outbox + QoS 1), so a timestamp not newer than the last one
//! seen for that element is a duplicate (at-least-once re-send), counted apart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Latency histogram resolution: 1 ms buckets up to this many ms, then one overflow bucket.
const HIST_MS: usize = 120_000;

/// What arrived, shared with the controller.
pub struct Counts {
    /// Last source timestamp (ns) seen per element index.
    last_ts: Vec<i64>,
    /// Unique values per source timestamp (= per simulator tick).
    pub per_tick: HashMap<i64, u64>,
    pub duplicates: u64,
    pub messages: u64,
    /// Messages whose topic or payload could not be read (must stay 0).
    pub unreadable: u64,
    /// Values with a source timestamp in `[window.0, window.1)` get their latency recorded.
    pub window: (i64, i64),
    latency_ms: Vec<u64>,
    /// Up to [`SAMPLES`] (element, value) pairs per timestamp: enough to find the simulator's
    /// tick number, from which the expected changes follow.
    pub samples: HashMap<i64, Vec<(usize, f64)>>,
}

const SAMPLES: usize = 4;

impl Counts {
    fn new() -> Counts {
        Counts {
            last_ts: Vec::new(),
            per_tick: HashMap::new(),
            duplicates: 0,
            messages: 0,
            unreadable: 0,
            window: (i64::MAX, i64::MAX),
            latency_ms: vec![0; HIST_MS + 1],
            samples: HashMap::new(),
        }
    }

    fn record(&mut self, element: usize, ts: i64, value: Option<f64>, arrival: i64) {
        self.messages += 1;
        if self.last_ts.len() <= element {
            self.last_ts.resize(element + 1, i64::MIN);
        }
        if ts <= self.last_ts[element] {
            self.duplicates += 1;
            return;
        }
        self.last_ts[element] = ts;
        *self.per_tick.entry(ts).or_default() += 1;
        if let Some(v) = value {
            let s = self.samples.entry(ts).or_default();
            if s.len() < SAMPLES {
                s.push((element, v));
            }
        }
        if ts >= self.window.0 && ts < self.window.1 {
            let ms = ((arrival - ts).max(0) / 1_000_000) as usize;
            self.latency_ms[ms.min(HIST_MS)] += 1;
        }
    }

    /// Latency percentile (0..=1) of the values in the window, ms.
    pub fn latency_percentile(&self, p: f64) -> Option<f64> {
        let total: u64 = self.latency_ms.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, n) in self.latency_ms.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(ms as f64);
            }
        }
        Some(HIST_MS as f64)
    }

    /// The simulator's ticks in `[from, to)`: source timestamps carried by at least half of the
    /// `n` values (all N values of a tick share one timestamp; see [`Counts::values_of_ticks`]).
    pub fn ticks(&self, from: i64, to: i64, n: usize) -> Vec<i64> {
        let mut ticks: Vec<i64> = self
            .per_tick
            .iter()
            .filter(|(t, c)| **t >= from && **t < to && **c as usize * 2 >= n)
            .map(|(t, _)| *t)
            .collect();
        ticks.sort_unstable();
        ticks
    }

    /// Unique values of the ticks from `from` up to the tick at `to` (excluded): timestamps in
    /// `[from, to)`.
    ///
    /// Not just the values stamped with a tick's timestamp: the async-opcua server, when its
    /// sampling timer fires just before the next tick, reports a change it missed with a fresh
    /// source timestamp (seen here: 1 of 10,000 values stamped 1 ms before the next tick). Such a
    /// value belongs to the tick before its timestamp, so it counts for that tick.
    pub fn values_of_ticks(&self, from: i64, to: i64) -> u64 {
        self.per_tick
            .iter()
            .filter(|(t, _)| **t >= from && **t < to)
            .map(|(_, c)| *c)
            .sum()
    }

    /// Unique values whose source timestamp lies in `[from, to)`, and the timestamps seen.
    pub fn in_range(&self, from: i64, to: i64) -> (u64, Vec<i64>) {
        let mut ticks: Vec<i64> = self
            .per_tick
            .keys()
            .copied()
            .filter(|t| *t >= from && *t < to)
            .collect();
        ticks.sort_unstable();
        (ticks.iter().map(|t| self.per_tick[t]).sum(), ticks)
    }
}

/// A running counting subscriber.
pub struct Subscriber {
    pub counts: Arc<Mutex<Counts>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    /// Subscribes to `filter` (QoS 1, persistent session) and returns once the broker confirmed.
    pub async fn start(port: u16, client_id: &str, filter: &str) -> Result<Subscriber> {
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20)
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false);
        let (client, mut events) = AsyncClient::new(opts, 100);
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        let counts = Arc::new(Mutex::new(Counts::new()));
        let sink = counts.clone();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let task = tokio::spawn(async move {
            let _client = client; // keeps the request channel open
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let arrival = now_nanos();
                        if p.topic.ends_with(SUBMODEL_TOPIC_END) {
                            // mqtt.message_per = "submodel": many values in one message.
                            let mut c = sink.lock().expect("counts");
                            match submodel_values(&p.payload) {
                                Some(values) => {
                                    for (element, ts, value) in values {
                                        c.record(element, ts, value, arrival);
                                    }
                                }
                                None => c.unreadable += 1,
                            }
                            continue;
                        }
                        // Other topics (the gateway's retained online state) are not values.
                        let Some(element) = element_of(&p.topic) else {
                            continue;
                        };
                        let ts = source_ts_of(&p.payload);
                        let value = value_of(&p.payload);
                        let mut c = sink.lock().expect("counts");
                        match ts {
                            Some(ts) => c.record(element, ts, value, arrival),
                            None => c.unreadable += 1,
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .context("MQTT subscriber not confirmed within 10 s")??;
        Ok(Subscriber { counts, task })
    }

    pub fn messages(&self) -> u64 {
        self.counts.lock().expect("counts").messages
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// End of the topic of submodel messages (`<prefix>/<shell>/<submodel>`).
const SUBMODEL_TOPIC_END: &str = "/Bench/Scale";

/// An item of a submodel message.
#[derive(serde::Deserialize)]
struct Item<'a> {
    #[serde(rename = "idShortPath", borrow)]
    id_short_path: &'a str,
    value: Option<f64>,
    #[serde(borrow)]
    timestamp: &'a str,
}

/// `(element, source timestamp ns, value)` of every item of a submodel message.
fn submodel_values(payload: &[u8]) -> Option<Vec<(usize, i64, Option<f64>)>> {
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        values: Vec<Item<'a>>,
    }
    let m: Message = serde_json::from_slice(payload).ok()?;
    m.values
        .iter()
        .map(|i| {
            let element = i.id_short_path.strip_prefix('V')?.parse().ok()?;
            let ts = chrono::DateTime::parse_from_rfc3339(i.timestamp)
                .ok()?
                .timestamp_nanos_opt()?;
            Some((element, ts, i.value))
        })
        .collect()
}

/// `.../V123` → 123.
fn element_of(topic: &str) -> Option<usize> {
    topic.rsplit_once("/V")?.1.parse().ok()
}

/// The leading `{"value":<number>` of a payload.
fn value_of(payload: &[u8]) -> Option<f64> {
    let rest = payload.strip_prefix(b"{\"value\":")?;
    let end = rest.iter().position(|&b| b == b',' || b == b'}')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// The `"timestamp":"<RFC 3339>"` of a payload, ns since the epoch. A substring search, not a
/// JSON parse: the subscriber must stay cheap next to the gateway on a 2-core box.
fn source_ts_of(payload: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"timestamp\":\"";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = payload[at..].iter().position(|&b| b == b'"')?;
    let text = std::str::from_utf8(&payload[at..at + len]).ok()?;
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_element_and_timestamp() {
        assert_eq!(element_of("bench/Bench/Scale/V42"), Some(42));
        let p = br#"{"value":1.5,"valueType":"xs:double","timestamp":"2023-11-14T22:13:20.123Z","quality":"good"}"#;
        assert_eq!(source_ts_of(p), Some(1_700_000_000_123_000_000));
        assert_eq!(value_of(p), Some(1.5));
    }

    #[test]
    fn reads_every_value_of_a_submodel_message() {
        let p = br#"{"submodelId":"urn:x","values":[{"idShortPath":"V1","value":1.5,"valueType":"xs:double","timestamp":"2023-11-14T22:13:20.123Z","quality":"good","statusCode":0},{"idShortPath":"V7","value":null,"valueType":"xs:double","timestamp":"2023-11-14T22:13:20Z","quality":"bad","statusCode":2150891520}]}"#;
        assert_eq!(
            submodel_values(p),
            Some(vec![
                (1, 1_700_000_000_123_000_000, Some(1.5)),
                (7, 1_700_000_000_000_000_000, None)
            ])
        );
        assert_eq!(submodel_values(b"{}"), None);
    }
}
