//! PUBACKs matched to the messages they confirm, by packet id.
//!
//! Counting PUBACKs drifts: after a reconnect rumqttc sends the unconfirmed messages again, and
//! a PUBACK that never comes shifts every count after it. Instead each QoS 1 message gets an
//! *ordinal* (the n-th message this session published): rumqttc takes requests in order and
//! reports `Outgoing::Publish(pkid)` when it assigns a packet id, so the n-th *new* packet id is
//! the n-th message. A packet id already in flight that is reported again is a re-send
//! (counted, not a new message); `Incoming::PubAck { pkid }` confirms exactly that message.
//! The watermark is the lowest ordinal not confirmed: every message below it was confirmed, so
//! the outbox can be acknowledged in order up to there.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::outbox::{OutboxAcker, Pos};
use crate::sinks::SinkStats;

/// What a `Outgoing::Publish(pkid)` meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// A new message got this packet id.
    New,
    /// A message in flight was sent again (after a reconnect or a PUBACK timeout).
    Again,
    /// QoS 0 (packet id 0): nothing to confirm.
    Unconfirmed,
}

/// Messages in flight of one MQTT session.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Packet id → (ordinal, last sent).
    in_flight: HashMap<u16, (u64, Instant)>,
    /// Ordinals not yet confirmed.
    outstanding: BTreeSet<u64>,
    /// Ordinal of the next new message.
    next: u64,
}

impl Tracker {
    /// Follows rumqttc's packet-id events: `Outgoing::Publish` (a re-send is counted in
    /// `retries`) and `Incoming::PubAck` (moves the watermark). `false` for any other event,
    /// which the sink's event loop handles itself.
    pub fn observe(
        &mut self,
        event: &rumqttc::Event,
        retries: &std::sync::atomic::AtomicU64,
        watermark: &watch::Sender<u64>,
    ) -> bool {
        use rumqttc::{Event, Outgoing, Packet};
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if self.sent(*pkid, Instant::now()) == Sent::Again {
                    retries.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if self.acked(ack.pkid) {
                    let _ = watermark.send(self.watermark());
                }
                true
            }
            _ => false,
        }
    }

    /// rumqttc wrote a PUBLISH with `pkid`.
    pub fn sent(&mut self, pkid: u16, now: Instant) -> Sent {
        if pkid == 0 {
            return Sent::Unconfirmed;
        }
        if let Some(entry) = self.in_flight.get_mut(&pkid) {
            entry.1 = now;
            return Sent::Again;
        }
        self.in_flight.insert(pkid, (self.next, now));
        self.outstanding.insert(self.next);
        self.next += 1;
        Sent::New
    }

    /// The broker confirmed `pkid`; true when it was a message in flight.
    pub fn acked(&mut self, pkid: u16) -> bool {
        match self.in_flight.remove(&pkid) {
            Some((ordinal, _)) => {
                self.outstanding.remove(&ordinal);
                true
            }
            None => false,
        }
    }

    /// Every message with an ordinal below this was confirmed.
    pub fn watermark(&self) -> u64 {
        self.outstanding.first().copied().unwrap_or(self.next)
    }

    /// True when a message has waited longer than `timeout` for its PUBACK.
    pub fn overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.in_flight
            .values()
            .any(|(_, sent)| now.duration_since(*sent) > timeout)
    }

    /// The broker started a new session: rumqttc dropped its in-flight messages, so their
    /// packet ids mean nothing any more. Returns true when unconfirmed messages were lost with
    /// them (they must be published again from the outbox).
    pub fn session_lost(&mut self) -> bool {
        self.in_flight.clear();
        !self.outstanding.is_empty()
    }
}

/// A published window waiting for its PUBACKs.
pub struct Window {
    /// QoS 1 messages published this session once this window was out: it is confirmed when
    /// the watermark reaches this.
    pub published_after: u64,
    /// Outbox position just past the window.
    pub end: Pos,
    /// Source timestamps, for the latency histogram.
    pub source_ts: Vec<i64>,
}

/// Acknowledges windows to the outbox in order, each once the broker confirmed all of its
/// messages (QoS 1: watermark of matched PUBACKs; QoS 0: once written). Shared by the MQTT
/// and Sparkplug sinks; `sink` names the sink in log lines. Ends when the publisher
/// closed the channel and every window was confirmed, when out of time, or when the session
/// starts over.
#[allow(clippy::too_many_arguments)]
pub async fn confirm_windows(
    mut windows: mpsc::Receiver<Window>,
    mut watermark: watch::Receiver<u64>,
    qos: QoS,
    outbox: OutboxAcker,
    stats: Arc<SinkStats>,
    out_of_time: CancellationToken,
    start_over: CancellationToken,
    sink: &'static str,
) {
    // A window taken from the channel that was not confirmed yet when the one before it was.
    let mut next: Option<Window> = None;
    // The last position confirmed: written to the outbox before returning once every window
    // was confirmed (the confirmations before it are written in the background).
    let mut last: Option<Pos> = None;
    loop {
        let window = match next.take() {
            Some(w) => w,
            None => match windows.recv().await {
                Some(w) => w,
                None => {
                    if let Some(end) = last {
                        if let Err(e) = outbox.ack(end).await {
                            error!(error = %e, "{sink} sink cannot record its outbox position; values may be sent again");
                        }
                    }
                    return;
                }
            },
        };
        if qos == QoS::AtLeastOnce {
            tokio::select! {
                r = watermark.wait_for(|&n| n >= window.published_after) => if r.is_err() { return },
                _ = out_of_time.cancelled() => {
                    warn!("{sink}: the broker did not confirm every value before shutdown; they stay in the outbox for the next start");
                    return;
                }
                _ = start_over.cancelled() => return,
            }
        }
        // Every window already confirmed goes with this one: one outbox write for all of them
        // (with 16 windows in flight, PUBACKs often confirm several at once).
        let mut end = window.end;
        let mut confirmed = vec![window];
        while let Ok(more) = windows.try_recv() {
            let done = qos != QoS::AtLeastOnce || *watermark.borrow() >= more.published_after;
            if !done {
                next = Some(more);
                break;
            }
            end = more.end;
            confirmed.push(more);
        }
        let now = crate::core::LatencyHistogram::now_nanos();
        for w in &confirmed {
            stats
                .confirmed
                .fetch_add(w.source_ts.len() as u64, Ordering::Relaxed);
            stats
                .latency
                .observe_all_since(w.source_ts.iter().copied(), now);
        }
        // In memory now (the added latency is observed at this PUBACK), on disk in the
        // background: waiting here for the file would hold the next windows' confirmations
        // behind another write (the dispatcher's fsync takes milliseconds on a busy disk).
        outbox.confirm(end);
        last = Some(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubacks_confirm_their_own_message_and_resends_are_not_new() {
        let now = Instant::now();
        let mut t = Tracker::default();
        assert_eq!(t.sent(1, now), Sent::New);
        assert_eq!(t.sent(2, now), Sent::New);
        assert_eq!(t.sent(3, now), Sent::New);
        assert_eq!(t.sent(0, now), Sent::Unconfirmed);
        // PUBACK for 2 first: the watermark stays at message 0 (pkid 1).
        assert!(t.acked(2));
        assert_eq!(t.watermark(), 0);
        // pkid 1 sent again after a reconnect: a re-send, not a fourth message.
        assert_eq!(t.sent(1, now), Sent::Again);
        assert!(t.acked(1));
        assert_eq!(
            t.watermark(),
            2,
            "messages 0 and 1 confirmed, 2 (pkid 3) not"
        );
        assert!(!t.acked(7), "an unknown PUBACK confirms nothing");
        assert!(t.acked(3));
        assert_eq!(t.watermark(), 3);
        // Packet ids are reused once confirmed: a new message.
        assert_eq!(t.sent(1, now), Sent::New);
        assert_eq!(t.watermark(), 3);
    }

    /// Windows the watermark already passed are acknowledged (taken together, in order), and a
    /// window not yet confirmed is never acknowledged with them.
    #[tokio::test]
    async fn confirmed_windows_are_acknowledged_in_order_and_never_ahead_of_the_broker() {
        use crate::outbox::{Outbox, OutboxConfig, SinkBuffer, SinkSpec};
        let dir = tempfile::tempdir().unwrap();
        let spec = SinkSpec {
            name: "mqtt".into(),
            destination: "mqtt://here".into(),
            buffer: SinkBuffer::default(),
        };
        let outbox = Outbox::open(dir.path(), OutboxConfig::default(), &[spec], None).unwrap();
        let target = crate::model::ElementTarget::for_test("M1", "Op", "X").leak();
        let updates: Vec<_> = (0..3)
            .map(|i| crate::model::SubmodelUpdate {
                target,
                value: crate::model::TypedValue::Float(i as f64),
                status: 0,
                source_ts_nanos: 1,
                server_ts_nanos: 0,
            })
            .collect();
        outbox.append(&updates).await.unwrap();
        let mut reader = outbox.reader("mqtt");
        let (window_tx, window_rx) = mpsc::channel(16);
        // One window per value, the n-th confirmed once the watermark reaches n.
        for n in 1..=3 {
            let d = reader.next_batch(1).await.unwrap().unwrap();
            let window = Window {
                published_after: n,
                end: d.end,
                source_ts: vec![1],
            };
            window_tx.send(window).await.unwrap();
        }
        let (watermark_tx, watermark_rx) = watch::channel(0u64);
        let stats = Arc::new(SinkStats::default());
        let never = CancellationToken::new();
        let confirmer = tokio::spawn(confirm_windows(
            window_rx,
            watermark_rx,
            QoS::AtLeastOnce,
            reader.acker(),
            stats.clone(),
            never.clone(),
            never.clone(),
            "MQTT",
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        let wait_for = |want: u64| {
            let (outbox, stats) = (outbox.clone(), stats.clone());
            async move {
                while stats.confirmed.load(Ordering::Relaxed) < want
                    || outbox.lag("mqtt") != 3 - want
                {
                    assert!(Instant::now() < deadline, "confirmed {want} never reached");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        watermark_tx.send(2).unwrap();
        wait_for(2).await;
        // The third window is not confirmed: it stays unacknowledged.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(outbox.lag("mqtt"), 1);
        assert_eq!(stats.confirmed.load(Ordering::Relaxed), 2);
        watermark_tx.send(3).unwrap();
        wait_for(3).await;
        drop(window_tx);
        tokio::time::timeout(Duration::from_secs(30), confirmer)
            .await
            .expect("the confirmer ends once the channel is closed")
            .unwrap();
    }

    #[test]
    fn a_puback_that_never_comes_is_overdue_and_a_lost_session_is_told() {
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.sent(5, t0);
        assert!(!t.overdue(t0 + Duration::from_secs(1), Duration::from_secs(2)));
        assert!(t.overdue(t0 + Duration::from_secs(3), Duration::from_secs(2)));
        assert!(t.session_lost());
        assert_eq!(t.watermark(), 0, "still unconfirmed");
    }
}
