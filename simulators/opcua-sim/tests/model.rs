//! The simulation is deterministic for a seed and physically plausible.

use opcua::types::{DateTime, Variant};
use opcua_sim::model::{factory, Sample, StepCtx};

fn run(seed: u64, ticks: usize) -> Vec<Vec<Vec<Sample>>> {
    let start = DateTime::ymd(2025, 1, 1);
    let mut machines = factory(seed, start);
    let mut out = Vec::new();
    for t in 0..ticks {
        let mut ctx = StepCtx {
            now: DateTime::from(start.ticks() + t as i64 * 10_000_000),
            dt_s: 1.0,
            plant_kw: 0.0,
        };
        let mut tick = Vec::new();
        for m in machines.iter_mut() {
            m.step(&mut ctx);
            let mut v = Vec::new();
            m.values(&mut v);
            assert_eq!(v.len(), m.variables().len());
            tick.push(v);
        }
        out.push(tick);
    }
    out
}

#[test]
fn same_seed_same_values() {
    assert_eq!(run(1, 300), run(1, 300));
    assert_ne!(run(1, 50), run(2, 50));
}

#[test]
fn cnc_state_machine_and_ranges() {
    let ticks = run(3, 3000);
    let mut states = std::collections::HashSet::new();
    let mut last_parts = 0;
    for t in &ticks {
        let cnc = &t[0];
        let Variant::String(state) = &cnc[6].0 else {
            panic!()
        };
        let state = state.as_ref().to_owned();
        let Variant::Double(speed) = cnc[0].0 else {
            panic!()
        };
        let Variant::UInt32(parts) = cnc[5].0 else {
            panic!()
        };
        let Variant::Boolean(running) = cnc[8].0 else {
            panic!()
        };
        let Variant::Int32(alarm) = cnc[7].0 else {
            panic!()
        };
        assert!(parts >= last_parts);
        last_parts = parts;
        assert_eq!(running, state == "RUNNING");
        assert_eq!(alarm != 0, state == "ALARM");
        if state == "RUNNING" {
            assert!(speed > 3000.0 && speed < 13_000.0, "{speed}");
        }
        states.insert(state);
    }
    assert!(last_parts > 30, "{last_parts}");
    for s in ["IDLE", "RUNNING", "ALARM"] {
        assert!(states.contains(s), "state {s} never reached");
    }
}
