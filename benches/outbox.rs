//! Throughput of the durable outbox alone: values persisted (one record and one fsync per batch)
//! and then read,
//! acknowledged and deleted by two sinks, on this machine's disk.
//!
//! `cargo bench --bench outbox` prints a table; the baseline in the same run is a plain
//! `Vec` push/drain of the same updates (what an in-memory queue would cost).

use std::time::Instant;

use aas_gateway::aas::XsType;
use aas_gateway::model::{ElementTarget, SubmodelNames, SubmodelUpdate, TypedValue, UpdateBatch};
use aas_gateway::outbox::{Outbox, OutboxConfig, SinkBuffer, SinkSpec};

fn targets(n: usize) -> Vec<&'static ElementTarget> {
    (0..n)
        .map(|i| {
            ElementTarget::new(
                SubmodelNames::shared("urn:bench:sm", "Scale", "Bench"),
                &format!("V{i}"),
                XsType::Double,
                None,
                None,
            )
            .leak()
        })
        .collect()
}

fn batch(targets: &[&'static ElementTarget], round: usize) -> UpdateBatch {
    targets
        .iter()
        .enumerate()
        .map(|(i, &t)| SubmodelUpdate {
            target: t,
            value: TypedValue::Float((round * 31 + i) as f64 * 0.5),
            status: 0,
            source_ts_nanos: 1_700_000_000_000_000_000 + (round as i64) * 1_000_000,
            server_ts_nanos: 0,
        })
        .collect()
}

async fn run(batch_size: usize, rounds: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let specs: Vec<SinkSpec> = ["a", "b"]
        .iter()
        .map(|n| SinkSpec {
            name: n.to_string(),
            destination: n.to_string(),
            buffer: SinkBuffer::default(),
        })
        .collect();
    let outbox = Outbox::open(dir.path(), OutboxConfig::default(), &specs, None).unwrap();
    let t = targets(batch_size);
    let total = batch_size * rounds;
    let readers = ["a", "b"].map(|sink| {
        let mut reader = outbox.reader(sink);
        tokio::spawn(async move {
            let mut n = 0;
            while let Some(d) = reader.next_batch(10_000).await.unwrap() {
                n += d.values.len();
                reader.ack(d.end).await.unwrap();
            }
            n
        })
    });
    let start = Instant::now();
    for round in 0..rounds {
        outbox.append(&batch(&t, round)).await.unwrap();
    }
    let appended = start.elapsed().as_secs_f64();
    outbox.close();
    for r in readers {
        assert_eq!(r.await.unwrap(), total, "every value read by every sink");
    }
    let all = start.elapsed().as_secs_f64();
    (total as f64 / appended, total as f64 / all)
}

fn baseline(batch_size: usize, rounds: usize) -> f64 {
    let t = targets(batch_size);
    let start = Instant::now();
    let mut queue = std::collections::VecDeque::new();
    let mut n = 0;
    for round in 0..rounds {
        queue.push_back(batch(&t, round));
        while let Some(b) = queue.pop_front() {
            n += b.len();
        }
    }
    assert_eq!(n, batch_size * rounds);
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("| batch (values/commit) | batches | persisted values/s | persisted+read+acked by 2 sinks values/s | in-memory queue baseline values/s |");
    println!("|---:|---:|---:|---:|---:|");
    for (batch_size, rounds) in [(100, 500), (1_000, 200), (10_000, 30)] {
        let (persisted, end_to_end) = rt.block_on(run(batch_size, rounds));
        let base = baseline(batch_size, rounds);
        println!("| {batch_size} | {rounds} | {persisted:.0} | {end_to_end:.0} | {base:.0} |");
    }
}
