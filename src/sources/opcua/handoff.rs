//! The hand-off from the subscription callback to the pipeline, without ever blocking the
//! session.
//!
//! async-opcua calls the notification handler inside the session's event loop: while it runs,
//! that session sends no publish request and handles no keep-alive. So the handler only puts
//! the batch into this hand-off and returns; a forwarder task of the source moves batches on
//! into the dispatcher's bounded channel, waiting there as long as the pipeline needs.
//!
//! **Back-pressure without loss: publishing is paused, not values dropped.** When more than
//! `pause_publishing_above` values wait here (the pipeline is saturated: a sink configured to
//! block, a slow disk), the source calls SetPublishingMode(false) on its subscription. The
//! server then keeps sampling into its monitored-item queues and sends only keep-alives, so
//! the session stays healthy and nothing is lost as long as those queues (`queue_size`) hold
//! the changes of the pause; values a full queue discards are flagged by the server with the
//! overflow bit and counted (`SourceStats::overflows`). When everything waiting here has
//! entered the pipeline, publishing is enabled again and the server sends what it queued.
//! The alternative, a bounded hand-off that drops when full, would lose values at every
//! burst even when the server could have kept them; pausing moves the buffering to where the
//! OPC UA model puts it.
//!
//! **No hop when nothing waits.** While the hand-off is empty (the pipeline keeps up, the usual
//! case) the callback puts a batch straight into the dispatcher's channel when it has room:
//! the forwarder is not woken in between, one task hop less before a burst is mapped (each
//! hop is a wake-up that waits for a worker on a busy box). Nothing can overtake: the
//! hand-off counts a batch until the forwarder has passed it on, so "empty" means no batch is
//! on its way.
//!
//! Memory stays bounded: after the pause request only the publish responses already on their
//! way arrive (a few, each at most `max_notifications_per_publish` values). Should a server
//! ignore the pause, values beyond [`HandOff::max_values`] are dropped and counted
//! (`SourceStats::handoff_dropped`, logged once per episode): never silently.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opcua::client::Session;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::SourceStats;
use crate::core::ReadingBatch;

/// How long a stopping source still tries to pass waiting values on.
const FLUSH_ON_STOP: Duration = Duration::from_secs(5);

/// Batches waiting between the subscription callback and the pipeline.
pub struct HandOff {
    queue: Mutex<VecDeque<ReadingBatch>>,
    /// Values (not batches) in `queue`.
    queued: AtomicUsize,
    wake: Notify,
    /// Above this many waiting values, publishing is paused.
    pause_above: usize,
    /// Hard bound: a batch that would take the queue beyond it is dropped and counted.
    max_values: usize,
    /// Whether publishing should be paused now (read by the [`PublishingControl`]).
    want_pause: watch::Sender<bool>,
    /// A drop episode is under way (so it is logged once, not per batch).
    dropping: AtomicBool,
    stats: Arc<SourceStats>,
    source: String,
    /// The pipeline's channel while the forwarder runs (for the direct path of [`Self::push`]);
    /// `None` before and after, so that a stopped forwarder leaves the channel free to close.
    direct: Mutex<Option<mpsc::Sender<ReadingBatch>>>,
}

impl HandOff {
    /// A hand-off that pauses publishing above `pause_above` waiting values and drops beyond
    /// `max_values` (at least `pause_above`).
    pub fn new(
        source: String,
        pause_above: usize,
        max_values: usize,
        stats: Arc<SourceStats>,
    ) -> Arc<HandOff> {
        Arc::new(HandOff {
            queue: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            wake: Notify::new(),
            pause_above: pause_above.max(1),
            max_values: max_values.max(pause_above.max(1)),
            want_pause: watch::Sender::new(false),
            dropping: AtomicBool::new(false),
            stats,
            source,
            direct: Mutex::new(None),
        })
    }

    /// The hard bound in values.
    pub fn max_values(&self) -> usize {
        self.max_values
    }

    /// Values waiting now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Takes a batch from the callback. Never blocks (one short mutex section).
    pub fn push(&self, batch: ReadingBatch) {
        let n = batch.len();
        if n == 0 {
            return;
        }
        let waiting = self.queued.load(Ordering::Relaxed);
        if waiting + n > self.max_values {
            self.stats
                .handoff_dropped
                .fetch_add(n as u64, Ordering::Relaxed);
            if !self.dropping.swap(true, Ordering::Relaxed) {
                warn!(source = %self.source, waiting, max = self.max_values,
                    "the server keeps publishing although publishing is paused; values beyond the hand-off's bound are dropped (counted in aas_gateway_source_handoff_dropped_total)");
            }
            return;
        }
        self.dropping.store(false, Ordering::Relaxed);
        // Nothing waits here and nothing is on its way: straight into the pipeline's channel.
        let batch = match self.send_direct(batch, waiting) {
            Ok(()) => return,
            Err(batch) => batch,
        };
        // Counted before it is queued: the forwarder subtracts once it has passed it on.
        let now = self.queued.fetch_add(n, Ordering::Relaxed) + n;
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(batch);
        self.stats
            .handoff_waiting
            .store(now as u64, Ordering::Relaxed);
        self.wake.notify_one();
        if now > self.pause_above {
            self.want_pause
                .send_if_modified(|p| !std::mem::replace(p, true));
        }
    }

    /// Puts `batch` into the pipeline's channel when nothing waits here (`waiting` = 0) and
    /// the channel has room; gives it back otherwise.
    fn send_direct(&self, batch: ReadingBatch, waiting: usize) -> Result<(), ReadingBatch> {
        if waiting != 0 {
            return Err(batch);
        }
        let direct = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        match direct.as_ref() {
            Some(tx) => tx.try_send(batch).map_err(|e| e.into_inner()),
            None => Err(batch),
        }
    }

    fn pop(&self) -> Option<ReadingBatch> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Called after a batch entered the pipeline.
    fn passed(&self, n: usize) {
        let now = self.queued.fetch_sub(n, Ordering::Relaxed) - n;
        self.stats
            .handoff_waiting
            .store(now as u64, Ordering::Relaxed);
        if now == 0 {
            // Everything waiting has entered the pipeline: the server may send what it queued.
            self.want_pause
                .send_if_modified(|p| std::mem::replace(p, false));
        }
    }

    /// Whether publishing should be paused now.
    pub fn pause_wanted(&self) -> watch::Receiver<bool> {
        self.want_pause.subscribe()
    }

    /// Moves batches into the pipeline until `stop`, waiting for room as long as needed (this
    /// task may wait; the session never does). On stop, what is still waiting gets a few
    /// seconds to enter the pipeline; what cannot is counted as dropped and logged.
    pub async fn forward(self: Arc<Self>, tx: mpsc::Sender<ReadingBatch>, stop: CancellationToken) {
        *self.direct.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx.clone());
        self.clone().forward_until_stopped(tx, stop).await;
        // Batches from now on wait here (and are counted when they cannot be passed on).
        *self.direct.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    async fn forward_until_stopped(
        self: Arc<Self>,
        tx: mpsc::Sender<ReadingBatch>,
        stop: CancellationToken,
    ) {
        loop {
            let batch = loop {
                if let Some(b) = self.pop() {
                    break b;
                }
                tokio::select! {
                    _ = stop.cancelled() => return self.flush(&tx).await,
                    _ = self.wake.notified() => {}
                }
            };
            let n = batch.len();
            tokio::select! {
                // Delivering wins over stopping when both are possible.
                biased;
                permit = tx.reserve() => match permit {
                    Ok(permit) => {
                        permit.send(batch);
                        self.passed(n);
                    }
                    Err(_) => {
                        // The dispatcher is gone (only during shutdown): the flush counts
                        // what can no longer be passed on.
                        self.requeue(batch);
                        return self.flush(&tx).await;
                    }
                },
                _ = stop.cancelled() => {
                    // Back in front: the flush gives it the same chance as the others.
                    self.requeue(batch);
                    return self.flush(&tx).await;
                }
            }
        }
    }

    fn requeue(&self, batch: ReadingBatch) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_front(batch);
    }

    async fn flush(&self, tx: &mpsc::Sender<ReadingBatch>) {
        let deadline = tokio::time::Instant::now() + FLUSH_ON_STOP;
        let mut lost = 0u64;
        while let Some(batch) = self.pop() {
            let n = batch.len();
            let sent = tokio::time::timeout_at(deadline, tx.send(batch)).await;
            if !matches!(sent, Ok(Ok(()))) {
                lost += n as u64;
            }
            self.passed(n);
        }
        if lost > 0 {
            self.stats
                .handoff_dropped
                .fetch_add(lost, Ordering::Relaxed);
            warn!(source = %self.source, values = lost, "stopping: values still waiting for the pipeline were not passed on (counted in aas_gateway_source_handoff_dropped_total)");
        }
    }
}

/// Applies the hand-off's wish to the subscription of one session: SetPublishingMode(false)
/// when it is too full, SetPublishingMode(true) once it is empty.
pub struct PublishingControl {
    /// The session whose subscription is paused and resumed.
    pub session: Arc<Session>,
    /// Source name, for logs.
    pub source: String,
    /// Counters (pauses, the paused gauge).
    pub stats: Arc<SourceStats>,
    /// Notified after every reconnect of the session: a pause is applied again, in case the
    /// subscription was recreated (async-opcua keeps the mode when it recreates one; this does
    /// not rely on it).
    pub reconnected: Arc<Notify>,
}

impl PublishingControl {
    /// Runs until `stop`. The subscription id is looked up at each change: async-opcua may
    /// have recreated the subscription under a new id after a reconnect (it keeps the
    /// publishing mode when it does).
    pub async fn run(self, mut wish: watch::Receiver<bool>, stop: CancellationToken) {
        // A new subscription publishes: if the hand-off is still full from the last
        // session, pause this one right away.
        let mut paused = false;
        let mut failing = false;
        // After a reconnect a pause is sent again (the subscription may be a new one).
        let mut reapply = false;
        self.stats.set_paused(false);
        loop {
            let want = *wish.borrow_and_update();
            if want != paused || (want && reapply) {
                let ids = self
                    .session
                    .subscription_state()
                    .lock()
                    .subscription_ids()
                    .unwrap_or_default();
                match self.session.set_publishing_mode(&ids, !want).await {
                    Ok(results) if results.iter().all(|s| s.is_good()) => {
                        let again = paused && want;
                        paused = want;
                        failing = false;
                        reapply = false;
                        self.stats.set_paused(want);
                        if again {
                            debug!(source = %self.source, "publishing paused again after the reconnect");
                        } else if want {
                            self.stats.publishing_pauses.fetch_add(1, Ordering::Relaxed);
                            info!(source = %self.source, "the pipeline is saturated: publishing paused (the server keeps the values in its queues and sends keep-alives)");
                        } else {
                            info!(source = %self.source, "the pipeline has room again: publishing resumed");
                        }
                    }
                    other => {
                        // Usually the session is reconnecting: say so once, not every second.
                        if !std::mem::replace(&mut failing, true) {
                            warn!(source = %self.source, pause = want, result = ?other, "SetPublishingMode failed; retrying every second");
                        }
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = wish.changed() => if changed.is_err() { return },
                _ = self.reconnected.notified() => reapply = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Reading, TypedValue};

    fn batch(n: usize) -> ReadingBatch {
        (0..n)
            .map(|i| Reading {
                rule: 0,
                value: TypedValue::UInt(i as u64),
                status: 0,
                source_ts_nanos: i as i64,
                server_ts_nanos: 0,
            })
            .collect()
    }

    #[tokio::test]
    async fn pauses_above_the_mark_resumes_when_empty_and_counts_what_exceeds_the_bound() {
        let stats = Arc::new(SourceStats::default());
        let h = HandOff::new("t".into(), 10, 30, stats.clone());
        let mut wish = h.pause_wanted();
        h.push(batch(8));
        assert!(!*wish.borrow_and_update(), "8 waiting: no pause yet");
        h.push(batch(8));
        assert!(*wish.borrow_and_update(), "16 waiting: pause");
        h.push(batch(8));
        assert_eq!(h.queued(), 24);
        // 24 + 8 > 30: dropped and counted, never queued.
        h.push(batch(8));
        assert_eq!(h.queued(), 24);
        assert_eq!(stats.handoff_dropped.load(Ordering::Relaxed), 8);

        // A consumer with room for everything: the queue empties, the wish clears.
        let (tx, mut rx) = mpsc::channel(10);
        let stop = CancellationToken::new();
        let fwd = tokio::spawn(h.clone().forward(tx, stop.clone()));
        let mut got = 0;
        while got < 24 {
            got += rx.recv().await.unwrap().len();
        }
        wish.wait_for(|p| !*p).await.unwrap();
        assert_eq!(h.queued(), 0);
        assert_eq!(stats.handoff_waiting.load(Ordering::Relaxed), 0);
        stop.cancel();
        fwd.await.unwrap();
        assert_eq!(stats.handoff_dropped.load(Ordering::Relaxed), 8);
    }

    /// An empty hand-off passes a batch straight into the channel, a full channel makes it
    /// wait here, and a batch that comes while one waits never overtakes it.
    #[tokio::test]
    async fn batches_keep_their_order_whether_they_go_straight_through_or_wait() {
        let stats = Arc::new(SourceStats::default());
        let h = HandOff::new("t".into(), 100, 1000, stats.clone());
        let (tx, mut rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        let fwd = tokio::spawn(h.clone().forward(tx, stop.clone()));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while h.direct.lock().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the forwarder never started"
            );
            tokio::task::yield_now().await;
        }
        h.push(batch(1));
        assert_eq!(h.queued(), 0, "straight into the channel");
        h.push(batch(2));
        assert_eq!(h.queued(), 2, "the channel is full: it waits here");
        assert_eq!(rx.recv().await.unwrap().len(), 1);
        // Room again, but the batch of 2 is still on its way: this one queues behind it.
        h.push(batch(3));
        assert_eq!(rx.recv().await.unwrap().len(), 2);
        assert_eq!(rx.recv().await.unwrap().len(), 3);
        stop.cancel();
        fwd.await.unwrap();
        assert!(h.direct.lock().unwrap().is_none(), "the channel is let go");
        assert_eq!(stats.handoff_dropped.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_stop_passes_waiting_values_on_or_counts_them() {
        let stats = Arc::new(SourceStats::default());
        let h = HandOff::new("t".into(), 100, 1000, stats.clone());
        h.push(batch(3));
        h.push(batch(4));
        // Room for one batch only, and nobody reads: one batch passes, the other is counted
        // (after the flush's grace period).
        let (tx, mut rx) = mpsc::channel(1);
        let stop = CancellationToken::new();
        stop.cancel();
        h.clone().forward(tx, stop).await;
        assert_eq!(rx.recv().await.unwrap().len(), 3);
        assert_eq!(stats.handoff_dropped.load(Ordering::Relaxed), 4);
        assert_eq!(h.queued(), 0);
    }
}
