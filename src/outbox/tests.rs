use super::*;
use crate::aas::XsType;
use crate::model::TypedValue;

fn target(path: &str) -> &'static ElementTarget {
    ElementTarget::new(
        crate::model::SubmodelNames::shared("urn:sm", "Op", "M1"),
        path,
        XsType::Double,
        None,
        None,
    )
    .leak()
}

fn batch(t: &'static ElementTarget, from: i64, n: i64) -> Vec<SubmodelUpdate> {
    (from..from + n)
        .map(|i| SubmodelUpdate {
            target: t,
            value: TypedValue::Float(i as f64),
            status: 0,
            source_ts_nanos: chrono::Utc::now().timestamp_nanos_opt().unwrap() + i,
            server_ts_nanos: 0,
        })
        .collect()
}

fn values(d: &Delivery) -> Vec<f64> {
    d.values
        .iter()
        .map(|u| match u.value {
            TypedValue::Float(f) => f,
            _ => panic!(),
        })
        .collect()
}

fn spec(name: &str, buffer: SinkBuffer) -> SinkSpec {
    SinkSpec {
        name: name.into(),
        destination: format!("{name}://here"),
        buffer,
    }
}

fn specs(names: &[&str]) -> Vec<SinkSpec> {
    names
        .iter()
        .map(|n| spec(n, SinkBuffer::default()))
        .collect()
}

/// Everything `r` can read now, following every record (the outbox is closed first).
/// An outbox in `dir` with the default settings and sinks of these names.
fn open_with(dir: &std::path::Path, sinks: &[&str]) -> Arc<Outbox> {
    Outbox::open(dir, OutboxConfig::default(), &specs(sinks), None).unwrap()
}

async fn drain(r: &mut OutboxReader) -> Vec<f64> {
    let mut out = Vec::new();
    while let Some(d) = r.next_batch(1000).await.unwrap() {
        out.extend(values(&d));
        r.ack(d.end).await.unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sink_reads_in_order_and_records_go_once_all_acked() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open_with(dir.path(), &["a", "b"]);
    let t = target("X");
    ob.append(&batch(t, 0, 10)).await.unwrap();
    ob.append(&batch(t, 10, 5)).await.unwrap();
    assert_eq!(
        ob.stats.records.load(Ordering::Relaxed),
        2,
        "one record per append"
    );
    let mut a = ob.reader("a");
    let mut b = ob.reader("b");
    let got = a.next_batch(4).await.unwrap().unwrap();
    assert_eq!(values(&got), vec![0.0, 1.0, 2.0, 3.0]);
    a.ack(got.end).await.unwrap();
    let rest = a.next_batch(100).await.unwrap().unwrap();
    assert_eq!(values(&rest).len(), 6, "the rest of the first record");
    a.ack(rest.end).await.unwrap();
    assert_eq!(
        ob.stats.depth.load(Ordering::Relaxed),
        15,
        "b has acked nothing yet"
    );
    let got_b = b.next_batch(100).await.unwrap().unwrap();
    assert_eq!(got_b.values.len(), 10);
    b.ack(got_b.end).await.unwrap();
    assert_eq!(
        ob.stats.depth.load(Ordering::Relaxed),
        5,
        "the record both passed is gone"
    );
    assert_eq!(ob.lag("a"), 5);
    assert_eq!(ob.lag("b"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_values_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("X");
    {
        let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
        ob.append(&batch(t, 0, 5)).await.unwrap();
        let mut r = ob.reader("a");
        let got = r.next_batch(2).await.unwrap().unwrap();
        r.ack(got.end).await.unwrap();
        // Read but not confirmed: must come again.
        let _ = r.next_batch(2).await.unwrap().unwrap();
        ob.close();
    }
    let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
    ob.close();
    let mut r = ob.reader("a");
    let got = r.next_batch(100).await.unwrap().unwrap();
    assert_eq!(values(&got), vec![2.0, 3.0, 4.0]);
    assert_eq!(
        &*got.values[0].target.id_short_path, "X",
        "the element target is restored"
    );
    drop(r);
    drop(ob);
    // New values after the restart continue the log.
    let ob2 = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
    ob2.append(&batch(target("Y"), 100, 1)).await.unwrap();
    ob2.close();
    assert_eq!(
        drain(&mut ob2.reader("a")).await,
        vec![2.0, 3.0, 4.0, 100.0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_stored_by_an_earlier_version_keeps_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
        ob.close();
        ob.path().to_path_buf()
    };
    // Earlier versions stored each element's MQTT topic with its target.
    let old = target("Old");
    let mut json = serde_json::to_value(old).unwrap();
    json["topic"] = "aas/M1/Op/Old".into();
    {
        let db = Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TARGETS)
            .unwrap()
            .insert(7, json.to_string().as_str())
            .unwrap();
        txn.commit().unwrap();
    }
    let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
    ob.append(&batch(old, 0, 1)).await.unwrap();
    assert_eq!(old.outbox_id.get(), Some(&7), "the stored id is reused");
    let new = target("New");
    ob.append(&batch(new, 1, 1)).await.unwrap();
    assert_eq!(
        new.outbox_id.get(),
        Some(&8),
        "another target gets the next id"
    );
    ob.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_past_its_bound_loses_its_oldest_values_alone_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let small = SinkBuffer {
        max_bytes: 4096,
        ..Default::default()
    };
    let episodes = Arc::new(Mutex::new(Vec::new()));
    let seen = episodes.clone();
    let hook: EventHook = Arc::new(move |event, _| seen.lock().unwrap().push(event));
    let ob = Outbox::open(
        dir.path(),
        OutboxConfig::default(),
        &[spec("slow", small), spec("fast", SinkBuffer::default())],
        Some(hook),
    )
    .unwrap();
    let t = target("X");
    // 20 records of 50 values (~1.9 kB each): "slow" can hold about two.
    for i in 0..20 {
        ob.append(&batch(t, i * 50, 50)).await.unwrap();
    }
    let status = ob.sink_status("slow").unwrap();
    assert!(status.dropping);
    assert!(status.dropped >= 900, "{status:?}");
    assert_eq!(
        status.lag + status.dropped,
        1000,
        "every value is delivered or counted"
    );
    assert_eq!(ob.sink_status("fast").unwrap().dropped, 0);
    assert_eq!(
        *episodes.lock().unwrap(),
        vec!["sink_buffer_overflow"],
        "logged once per episode"
    );
    ob.close();
    let slow = drain(&mut ob.reader("slow")).await;
    assert_eq!(slow.len() as u64, 1000 - status.dropped);
    assert_eq!(*slow.last().unwrap(), 999.0, "the newest values are kept");
    assert_eq!(
        drain(&mut ob.reader("fast")).await.len(),
        1000,
        "the other sink keeps all"
    );
    assert_eq!(episodes.lock().unwrap().len(), 2, "the episode ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_in_flight_are_not_skipped_and_the_count_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let small = SinkBuffer {
        max_bytes: 4096,
        ..Default::default()
    };
    let ob = Outbox::open(
        dir.path(),
        OutboxConfig::default(),
        &[spec("a", small)],
        None,
    )
    .unwrap();
    let t = target("X");
    ob.append(&batch(t, 0, 50)).await.unwrap();
    let mut r = ob.reader("a");
    let in_flight = r.next_batch(10).await.unwrap().unwrap();
    for i in 1..10 {
        ob.append(&batch(t, i * 50, 50)).await.unwrap();
    }
    let dropped = ob.sink_status("a").unwrap().dropped;
    assert!(dropped > 0);
    // The values in flight are confirmed late: the cursor passes the skipped stretch too.
    r.ack(in_flight.end).await.unwrap();
    ob.close();
    let mut rest = Vec::new();
    while let Some(d) = r.next_batch(1000).await.unwrap() {
        rest.extend(values(&d));
        r.ack(d.end).await.unwrap();
    }
    assert_eq!(10 + rest.len() as u64 + dropped, 500);
    assert!(!rest.contains(&10.0), "skipped values are not read");
    assert_eq!(ob.lag("a"), 0);
    assert_eq!(
        ob.stats.depth.load(Ordering::Relaxed),
        0,
        "skipped records are deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_policy_waits_until_the_sink_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let blocking = SinkBuffer {
        max_bytes: 4096,
        when_full: FullPolicy::Block,
        ..Default::default()
    };
    let ob = Outbox::open(
        dir.path(),
        OutboxConfig::default(),
        &[spec("a", blocking)],
        None,
    )
    .unwrap();
    let t = target("X");
    ob.append(&batch(t, 0, 50)).await.unwrap();
    ob.append(&batch(t, 50, 50)).await.unwrap();
    let blocked = tokio::spawn({
        let ob = ob.clone();
        let b = batch(t, 100, 50);
        async move { ob.append(&b).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !blocked.is_finished(),
        "append must wait while the sink is full"
    );
    let mut r = ob.reader("a");
    let got = r.next_batch(100).await.unwrap().unwrap();
    r.ack(got.end).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), blocked)
        .await
        .expect("append resumes after the ack")
        .unwrap()
        .unwrap();
    assert_eq!(ob.sink_status("a").unwrap().dropped, 0);
    assert_eq!(ob.lag("a"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_older_than_max_age_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let aged = SinkBuffer {
        max_age_s: 60,
        ..Default::default()
    };
    let ob = Outbox::open(
        dir.path(),
        OutboxConfig::default(),
        &[spec("a", aged)],
        None,
    )
    .unwrap();
    let t = target("X");
    let mut old = batch(t, 0, 3);
    for u in &mut old {
        u.source_ts_nanos -= 3_600_000_000_000;
    }
    ob.append(&old).await.unwrap();
    ob.append(&batch(t, 3, 2)).await.unwrap();
    assert_eq!(ob.sink_status("a").unwrap().dropped, 3);
    ob.close();
    assert_eq!(drain(&mut ob.reader("a")).await, vec![3.0, 4.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_pointed_elsewhere_does_not_inherit_the_old_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("X");
    {
        let ob = Outbox::open(
            dir.path(),
            OutboxConfig::default(),
            &specs(&["a", "b"]),
            None,
        )
        .unwrap();
        ob.append(&batch(t, 0, 5)).await.unwrap();
        ob.close();
    }
    let mut moved = specs(&["a", "b"]);
    moved[0].destination = "a://elsewhere".into();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let hook: EventHook = Arc::new(move |event, d| seen.lock().unwrap().push((event, d)));
    let ob = Outbox::open(dir.path(), OutboxConfig::default(), &moved, Some(hook)).unwrap();
    ob.append(&batch(t, 5, 1)).await.unwrap();
    ob.close();
    assert_eq!(
        drain(&mut ob.reader("a")).await,
        vec![5.0],
        "only values written since"
    );
    assert_eq!(
        drain(&mut ob.reader("b")).await.len(),
        6,
        "b still gets its backlog"
    );
    let events = events.lock().unwrap();
    assert_eq!(events[0].0, "outbox_cursor_dropped");
    assert_eq!(events[0].1["values"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_file_is_told_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
    let err = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("another gateway uses") && msg.contains("[outbox] dir"),
        "{msg}"
    );
    assert!(msg.contains("outbox.redb"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_cap_bounds_the_file_for_every_sink() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        max_entries: 120,
        ..Default::default()
    };
    let ob = Outbox::open(dir.path(), cfg, &specs(&["a", "b"]), None).unwrap();
    let t = target("X");
    for i in 0..10 {
        ob.append(&batch(t, i * 50, 50)).await.unwrap();
    }
    assert!(ob.stats.depth.load(Ordering::Relaxed) <= 120);
    for sink in ["a", "b"] {
        let st = ob.sink_status(sink).unwrap();
        assert_eq!(st.lag + st.dropped, 500, "{sink}: {st:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_given_up_to_the_global_cap_leave_the_file_too() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        max_entries: 120,
        ..Default::default()
    };
    let t = target("X");
    {
        let ob = Outbox::open(dir.path(), cfg.clone(), &specs(&["a"]), None).unwrap();
        for i in 0..10 {
            ob.append(&batch(t, i * 50, 50)).await.unwrap();
        }
        ob.close();
    }
    let ob = Outbox::open(dir.path(), cfg, &specs(&["a"]), None).unwrap();
    let depth = ob.stats.depth.load(Ordering::Relaxed);
    assert!(depth <= 120, "{depth} values still in the file");
    ob.close();
    assert_eq!(drain(&mut ob.reader("a")).await.len() as u64, depth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_sink_never_loses_values_to_the_global_cap() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = OutboxConfig {
        max_entries: 120,
        ..Default::default()
    };
    let blocking = SinkBuffer {
        when_full: FullPolicy::Block,
        ..Default::default()
    };
    let ob = Outbox::open(dir.path(), cfg, &[spec("a", blocking)], None).unwrap();
    let t = target("X");
    ob.append(&batch(t, 0, 50)).await.unwrap();
    ob.append(&batch(t, 50, 50)).await.unwrap();
    let blocked = tokio::spawn({
        let ob = ob.clone();
        let b = batch(t, 100, 50);
        async move { ob.append(&b).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !blocked.is_finished(),
        "150 values would pass max_entries = 120"
    );
    let mut r = ob.reader("a");
    let got = r.next_batch(100).await.unwrap().unwrap();
    r.ack(got.end).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ob.sink_status("a").unwrap().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_records_are_read_as_appended_without_decoding_or_copying() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open_with(dir.path(), &["a", "b"]);
    let t = target("X");
    let appended = Arc::new(RecordValues::new(
        batch(t, 0, 10),
        std::time::Instant::now(),
    ));
    ob.append_values(&appended).await.unwrap();
    for sink in ["a", "b"] {
        let mut r = ob.reader(sink);
        let d = r.next_batch(4).await.unwrap().unwrap();
        // The very values the dispatcher made: same addresses, for both sinks.
        assert!(std::ptr::eq(&d.values[0], &appended.values()[0]));
        assert_eq!(values(&d), [0.0, 1.0, 2.0, 3.0]);
        let rest = r.next_batch(100).await.unwrap().unwrap();
        assert!(std::ptr::eq(&rest.values[0], &appended.values()[4]));
        assert_eq!(rest.values.len(), 6);
    }
    // Past the bound of recent values only the newest record stays in memory; older ones are
    // read back from the file, with the same values.
    for i in 1..=3 {
        ob.append(&batch(t, i * 10, RECENT_VALUES as i64))
            .await
            .unwrap();
    }
    assert_eq!(ob.recent.lock().unwrap().len(), 1);
    let mut r = ob.reader("a");
    let first = r.next_batch(3).await.unwrap().unwrap();
    assert!(!std::ptr::eq(&first.values[0], &appended.values()[0]));
    assert_eq!(values(&first), [0.0, 1.0, 2.0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_every_sink_has_read_leaves_memory_without_waiting_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open_with(dir.path(), &["a", "b"]);
    let appended = Arc::new(RecordValues::new(
        batch(target("X"), 0, 10),
        std::time::Instant::now(),
    ));
    ob.append_values(&appended).await.unwrap();
    let (mut a, mut b) = (ob.reader("a"), ob.reader("b"));
    // Read in two deliveries: the reader keeps the record between them.
    let first = a.next_batch(4).await.unwrap().unwrap();
    let rest = a.next_batch(100).await.unwrap().unwrap();
    assert_eq!(values(&first).len() + values(&rest).len(), 10);
    drop((first, rest));
    // Sink b has not read it: it stays for b.
    assert!(Arc::strong_count(&appended) > 1);
    assert_eq!(values(&b.next_batch(100).await.unwrap().unwrap()).len(), 10);
    // Both have it (and it is on disk): nothing of the outbox holds it any more.
    assert_eq!(Arc::strong_count(&appended), 1);
    assert!(ob.recent.lock().unwrap().is_empty());
    // Read again after a failure, it comes from the file.
    let mut again = ob.reader("a");
    assert_eq!(
        values(&again.next_batch(100).await.unwrap().unwrap()).len(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_latency_counts_each_confirmed_value_from_its_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let ob = open_with(dir.path(), &["a", "b"]);
    let t = target("X");
    let arrived = std::time::Instant::now() - std::time::Duration::from_millis(30);
    ob.append_values(&Arc::new(RecordValues::new(batch(t, 0, 10), arrived)))
        .await
        .unwrap();
    let mut r = ob.reader("a");
    let d = r.next_batch(6).await.unwrap().unwrap();
    r.ack(d.end).await.unwrap();
    // Acknowledging the same position again observes nothing more.
    r.ack(d.end).await.unwrap();
    let h = ob.added_latency("a").unwrap().snapshot();
    assert_eq!(h.count, 6);
    assert!(h.sum_seconds >= 6.0 * 0.03, "{h:?}");
    let below_30ms: u64 = h.buckets.iter().filter(|b| b.0 < 0.03).map(|b| b.1).sum();
    assert_eq!(below_30ms, 0, "{h:?}");
    let d = r.next_batch(100).await.unwrap().unwrap();
    r.ack(d.end).await.unwrap();
    assert_eq!(ob.added_latency("a").unwrap().snapshot().count, 10);
    // The other sink confirmed nothing yet; an unknown sink has no histogram.
    assert_eq!(ob.added_latency("b").unwrap().snapshot().count, 0);
    assert!(ob.added_latency("c").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_value_read_back_from_the_file_is_skipped_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("X");
    {
        let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
        ob.append(&batch(t, 0, 4)).await.unwrap();
        ob.close();
    }
    // Damage the value tag of the second entry of record 0.
    {
        let db = redb::Database::open(dir.path().join("outbox.redb")).unwrap();
        let mut bytes = {
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(RECORDS).unwrap();
            let record = table.get(0).unwrap().unwrap().value().to_vec();
            record
        };
        let first_len = u32::from_le_bytes(
            bytes[codec::RECORD_HEADER..codec::RECORD_HEADER + 4]
                .try_into()
                .unwrap(),
        ) as usize;
        let second = codec::RECORD_HEADER + 4 + first_len + 4;
        bytes[second + 24] = 99;
        let txn = db.begin_write().unwrap();
        txn.open_table(RECORDS)
            .unwrap()
            .insert(0, bytes.as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
    let mut r = ob.reader("a");
    let d = r.next_batch(2).await.unwrap().unwrap();
    assert_eq!(values(&d), [0.0, 2.0], "the damaged value is left out");
    r.ack(d.end).await.unwrap();
    let d = r.next_batch(10).await.unwrap().unwrap();
    assert_eq!(values(&d), [3.0]);
    r.ack(d.end).await.unwrap();
    assert_eq!(ob.lag("a"), 0);
}

/// The newest record reaches the sinks while its write is under way; a confirmation of it
/// takes effect only once it is on disk, so a crash before that re-sends instead of pointing
/// the cursor past the file's end. Its added latency is observed at the confirmation (once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_read_while_written_and_confirmed_only_once_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("X");
    // The second record as `append_values` makes it visible, before its fsync.
    let publish = |ob: &Arc<Outbox>, from: i64| {
        let made = Arc::new(RecordValues::new(
            batch(t, from, 3),
            std::time::Instant::now(),
        ));
        let (record, new_targets) = ob.encode(made.values());
        let id = ob.publish_record(&record, made.clone());
        PendingWrite {
            id,
            values: made,
            record,
            new_targets,
        }
    };
    {
        let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
        ob.append(&batch(t, 0, 2)).await.unwrap();
        let pending = publish(&ob, 2);
        let mut r = ob.reader("a");
        assert_eq!(
            values(&r.next_batch(100).await.unwrap().unwrap()),
            [0.0, 1.0]
        );
        let unwritten = r.next_batch(100).await.unwrap().unwrap();
        assert_eq!(
            values(&unwritten),
            [2.0, 3.0, 4.0],
            "delivered before its write"
        );
        r.ack(unwritten.end).await.unwrap();
        assert_eq!(
            ob.lag("a"),
            5,
            "the confirmation waits for the record's write"
        );
        assert_eq!(
            ob.added_latency("a").unwrap().count(),
            5,
            "the added latency ends at the confirmation, not at the fsync"
        );
        ob.write_records(&[pending]).unwrap();
        assert_eq!(ob.lag("a"), 0, "applied once the record is on disk");
        assert_eq!(
            ob.added_latency("a").unwrap().count(),
            5,
            "each value is observed once"
        );
        ob.close();
    }
    {
        let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
        ob.close();
        assert!(
            drain(&mut ob.reader("a")).await.is_empty(),
            "the cursor was kept"
        );
    }
    // A gateway that stops before the write: nothing of the unwritten record is confirmed.
    let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
    ob.append(&batch(t, 10, 1)).await.unwrap();
    let _never_written = publish(&ob, 11);
    let mut r = ob.reader("a");
    let _ = r.next_batch(100).await.unwrap().unwrap();
    let unwritten = r.next_batch(100).await.unwrap().unwrap();
    r.ack(unwritten.end).await.unwrap();
    drop(r);
    drop(ob);
    let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
    ob.append(&batch(t, 20, 1)).await.unwrap();
    ob.close();
    assert_eq!(
        drain(&mut ob.reader("a")).await,
        [10.0, 20.0],
        "the written record comes again; the log continues after it"
    );
}

/// The cursor `sink` has in the file now.
fn cursor_in_file(ob: &Outbox, sink: &str) -> Option<Pos> {
    let txn = ob.db.begin_read().unwrap();
    let table = txn.open_table(SINK_CURSORS).unwrap();
    let (record, offset) = table.get(sink).unwrap()?.value();
    Some(Pos { record, offset })
}

/// A confirmation loop's `confirm` does not wait for the file: the cursor moves in memory at
/// once and reaches the file in the background. One that reaches into a record still being
/// written is observed as latency at once but never moves the cursor, in memory or in the
/// file, before that record is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_writes_the_cursor_in_the_background_and_never_past_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("X");
    {
        let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
        ob.append(&batch(t, 0, 2)).await.unwrap();
        // The second record as the dispatcher publishes it, before its commit.
        let made = Arc::new(RecordValues::new(batch(t, 2, 3), std::time::Instant::now()));
        ob.publish(&made).await;
        let mut r = ob.reader("a");
        let acker = r.acker();
        let written = r.next_batch(100).await.unwrap().unwrap();
        let unwritten = r.next_batch(100).await.unwrap().unwrap();
        assert_eq!(values(&unwritten), [2.0, 3.0, 4.0]);

        acker.confirm(written.end);
        assert_eq!(ob.lag("a"), 3, "moved in memory at once");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while cursor_in_file(&ob, "a") != Some(written.end) {
            assert!(
                std::time::Instant::now() < deadline,
                "the cursor never reached the file"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }

        acker.confirm(unwritten.end);
        assert_eq!(
            ob.added_latency("a").unwrap().count(),
            5,
            "observed at once"
        );
        assert_eq!(
            ob.lag("a"),
            3,
            "the record is not on disk: the cursor waits"
        );
        // Whatever the background write does, the file's cursor stays within the file.
        acker.ack(unwritten.end).await.unwrap();
        assert_eq!(cursor_in_file(&ob, "a"), Some(written.end));

        // The commit makes it count, and writes the cursor.
        ob.commit().await.unwrap();
        assert_eq!(ob.lag("a"), 0);
        assert_eq!(cursor_in_file(&ob, "a"), Some(unwritten.end));
        assert_eq!(ob.added_latency("a").unwrap().count(), 5, "once per value");
        ob.close();
    }
    let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
    ob.append(&batch(t, 20, 1)).await.unwrap();
    ob.close();
    assert_eq!(
        drain(&mut ob.reader("a")).await,
        [20.0],
        "nothing is sent twice"
    );
}

/// The dispatcher publishes the next group while the previous one is being written: a
/// publish never waits for a write under way, and a sink's confirmation that reaches into the
/// newer record moves its cursor (in memory and in the file) only as far as the file holds,
/// record by record as each write ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_published_during_the_previous_write_and_confirmed_only_as_far_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let t = target("X");
    let ob = Outbox::open(dir.path(), OutboxConfig::default(), &specs(&["a"]), None).unwrap();
    let made = |from: i64, n: i64| {
        Arc::new(RecordValues::new(
            batch(t, from, n),
            std::time::Instant::now(),
        ))
    };
    // A write under way (as `commit` holds it): publishing does not wait for it.
    let writing = ob.committing.lock().await;
    ob.publish(&made(0, 2)).await;
    ob.publish(&made(2, 3)).await;
    let mut r = ob.reader("a");
    let first = r.next_batch(100).await.unwrap().unwrap();
    let second = r.next_batch(100).await.unwrap().unwrap();
    assert_eq!(values(&second), [2.0, 3.0, 4.0], "sent before any write");
    // A commit waits for the write under way (records reach the file in order).
    let commit = tokio::spawn({
        let ob = ob.clone();
        async move { ob.commit().await }
    });
    drop(writing);
    assert_eq!(commit.await.unwrap().unwrap(), 5, "both records, one write");
    assert_eq!(ob.lag("a"), 5);
    r.ack(second.end).await.unwrap();
    assert_eq!(ob.lag("a"), 0);

    // Two records written one after the other while the sink confirmed both.
    let (p3, p4) = (made(5, 2), made(7, 3));
    let pending = |v: &Arc<RecordValues>| {
        let (record, new_targets) = ob.encode(v.values());
        let id = ob.publish_record(&record, v.clone());
        PendingWrite {
            id,
            values: v.clone(),
            record,
            new_targets,
        }
    };
    let (w3, w4) = (pending(&p3), pending(&p4));
    let _ = r.next_batch(100).await.unwrap().unwrap();
    let newest = r.next_batch(100).await.unwrap().unwrap();
    assert_eq!(values(&newest), [7.0, 8.0, 9.0]);
    r.ack(newest.end).await.unwrap();
    assert_eq!(ob.lag("a"), 5, "nothing of the unwritten records counts");
    assert_eq!(cursor_in_file(&ob, "a"), Some(second.end));
    ob.write_records(&[w3]).unwrap();
    assert_eq!(ob.lag("a"), 3, "confirmed as far as the file holds");
    let end_of_w3 = Pos::start_of(newest.end.record - 1);
    assert_eq!(cursor_in_file(&ob, "a"), Some(end_of_w3));
    ob.write_records(&[w4]).unwrap();
    assert_eq!(ob.lag("a"), 0);
    assert_eq!(cursor_in_file(&ob, "a"), Some(newest.end));
    assert_eq!(ob.added_latency("a").unwrap().count(), 10, "once per value");
    assert_eq!(values(&first), [0.0, 1.0]);
    ob.close();
}
