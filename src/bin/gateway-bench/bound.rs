//! What bounded a maximum-rate step, said from the figures of the run: the CPU of every process
//! of it, the box's CPU over the same window and the loss in each sink. The rule is a pure
//! function ([`explain`]), unit-tested below.
//!
//! The rule, in order:
//! 1. the box busy (plus stolen by the hypervisor) at ≥ [`SATURATED`] of its capacity: the box
//!    is the bound, whatever sink showed it; the line lists who took the cores;
//!    (a simulator that fell short of the rate is named as what showed it);
//! 2. otherwise a simulator that produced less than [`SIM_PACE`] of the rate: it is the bound;
//! 3. otherwise the sink that fell behind (ILP rows or MQTT values not arrived, or MQTT values
//!    late) and its server's CPU; mosquitto is single-threaded, so a broker at one core is named
//!    as the bound even on a box with cores to spare;
//! 4. a step that was held says so (the bound lies above it, or the box had no CPU left).

use crate::procs::HostUsage;

/// Share of the box's capacity (busy + steal) from which it counts as saturated.
pub const SATURATED: f64 = 0.90;

/// Share of the nominal rate the simulator must produce for a step to count: its timer delays
/// ticks when it gets too little CPU (it never skips one), so on a busy box it may offer far
/// less than the step names. (A 30 s window at 1 s ticks holds one tick more or less: ±3 %.)
pub const SIM_PACE: f64 = 0.90;

/// CPU of one single-threaded process (% of one core) from which it counts as at its limit.
const ONE_CORE: f64 = 90.0;

/// CPU (% of one core) of each process of the run over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunCpu {
    pub gateway: f64,
    /// `None` when the simulator ran inside the bench process (its CPU is then the bench's).
    pub simulator: Option<f64>,
    /// VictoriaMetrics.
    pub ilp_server: f64,
    /// mosquitto.
    pub broker: f64,
    /// The bench process: the counting MQTT subscriber runs in it.
    pub bench: f64,
}

impl RunCpu {
    /// (name, CPU) of every process, highest first.
    fn ranked(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![
            ("gateway", self.gateway),
            ("ILP server", self.ilp_server),
            ("broker", self.broker),
            ("bench (subscriber)", self.bench),
        ];
        if let Some(sim) = self.simulator {
            v.push(("simulator", sim));
        }
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    fn sum(&self) -> f64 {
        self.ranked().iter().map(|p| p.1).sum()
    }
}

/// The figures of one maximum-rate step that the rule reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepFigures {
    /// Values per second the step names (items × 1000 / interval).
    pub rate: f64,
    /// Values per second the simulator actually produced in the window.
    pub produced_rate: f64,
    /// Zero loss in both sinks and the window's last values delivered within 10 s.
    pub held: bool,
    pub cpu: RunCpu,
    pub host: HostUsage,
    /// Values of the window that had not arrived over MQTT / as ILP rows.
    pub not_arrived_mqtt: i64,
    pub not_arrived_ilp: i64,
    /// Complete ticks of the window seen over MQTT (0: nothing of the window arrived in time).
    pub ticks: u64,
    /// Seconds after the window until its last values had arrived over MQTT.
    pub drain_s: f64,
    /// The drain was cut at `--drain-cap-s` (these many seconds) with values still on their way.
    pub behind: bool,
    pub drain_cap_s: u64,
}

/// One sentence saying what bounded the step (see the module's rule).
pub fn explain(s: &StepFigures) -> String {
    let box_cell = box_cell(s);
    let saturated =
        s.host.capacity_pct > 0.0 && s.host.used_pct() >= SATURATED * s.host.capacity_pct;
    let rate = s.rate.round();
    if s.held {
        return if saturated {
            format!(
                "The last step run ({rate} values/s) was held, on a saturated box ({box_cell}): a faster step has no CPU left here."
            )
        } else {
            format!(
                "The last step run ({rate} values/s) was held ({box_cell}): the bound lies above the steps run."
            )
        };
    }
    let symptom = symptom(s);
    let sim_short = s.produced_rate < SIM_PACE * s.rate;
    if sim_short && !saturated {
        return format!(
            "{rate} values/s was not held, on a box with CPU to spare ({box_cell}): the **simulator** fell behind its ticks ({symptom})."
        );
    }
    if saturated {
        return format!("{rate} values/s was not held: **box saturated** ({box_cell}); {symptom}.");
    }
    // The box had cores to spare: name the sink and its server.
    let mut culprits = Vec::new();
    if s.not_arrived_ilp > 0 {
        culprits.push(format!("ILP server {:.1} %", s.cpu.ilp_server));
    }
    if s.not_arrived_mqtt > 0 || s.not_arrived_ilp <= 0 {
        culprits.push(format!("broker {:.1} %", s.cpu.broker));
    }
    culprits.push(format!("gateway {:.1} %", s.cpu.gateway));
    let broker_limit =
        if (s.not_arrived_mqtt > 0 || s.not_arrived_ilp <= 0) && s.cpu.broker >= ONE_CORE {
            " mosquitto is single-threaded: at one core the **broker** is the bound."
        } else {
            ""
        };
    format!(
        "{rate} values/s was not held, on a box with CPU to spare ({box_cell}): {symptom} ({}).{broker_limit}",
        culprits.join(", ")
    )
}

/// "busy 196 % of 200 %: simulator 60.1 %, …, rest of the box 12.0 %".
fn box_cell(s: &StepFigures) -> String {
    let h = &s.host;
    let procs = s
        .cpu
        .ranked()
        .iter()
        .map(|(name, cpu)| format!("{name} {cpu:.1} %"))
        .collect::<Vec<_>>()
        .join(", ");
    let steal = if h.steal_pct >= 1.0 {
        format!(" + {:.0} % stolen by the hypervisor", h.steal_pct)
    } else {
        String::new()
    };
    // What the run's processes do not explain: the kernel's own work and everything else on
    // the (shared) box.
    let rest = (h.busy_pct - s.cpu.sum()).max(0.0);
    format!(
        "busy {:.0} %{steal} of {:.0} %: {procs}, rest of the box {rest:.1} %",
        h.busy_pct, h.capacity_pct
    )
}

/// What showed that the rate was not held: a simulator short of the rate, a sink behind.
fn symptom(s: &StepFigures) -> String {
    let sink = sink_symptom(s);
    if s.produced_rate < SIM_PACE * s.rate {
        let short = format!(
            "the simulator produced only {:.0} values/s",
            s.produced_rate
        );
        return match sink {
            Some(sink) => format!("{short}, and {sink}"),
            None => short,
        };
    }
    sink.unwrap_or_else(|| "no sink fell behind".into())
}

/// Which sink showed that the rate was not held, if one did.
fn sink_symptom(s: &StepFigures) -> Option<String> {
    if s.ticks > 0
        && s.not_arrived_mqtt <= 0
        && s.not_arrived_ilp <= 0
        && s.drain_s <= 10.0
        && !s.behind
    {
        return None;
    }
    let after = if s.behind {
        format!("{} s after the window", s.drain_cap_s)
    } else {
        "when delivery stopped moving".to_string()
    };
    Some(match (s.not_arrived_mqtt > 0, s.not_arrived_ilp > 0) {
        (true, true) => format!(
            "both sinks fell behind ({} MQTT values and {} ILP rows not arrived {after})",
            s.not_arrived_mqtt, s.not_arrived_ilp
        ),
        (false, true) => format!(
            "the **ILP** sink fell behind ({} rows not arrived {after})",
            s.not_arrived_ilp
        ),
        (true, false) => format!(
            "the **MQTT** sink fell behind ({} values not arrived {after})",
            s.not_arrived_mqtt
        ),
        (false, false) if s.ticks == 0 => {
            "the **MQTT** sink fell behind (no complete tick of the window arrived)".to_string()
        }
        (false, false) => format!(
            "the **MQTT** sink fell behind (the window's last values arrived {:.1} s after it{})",
            s.drain_s,
            if s.behind { ", or not at all" } else { "" }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(busy: f64, steal: f64) -> HostUsage {
        HostUsage {
            capacity_pct: 200.0,
            busy_pct: busy,
            idle_pct: 200.0 - busy - steal,
            steal_pct: steal,
        }
    }

    fn step(busy: f64) -> StepFigures {
        StepFigures {
            rate: 300_300.0,
            produced_rate: 299_000.0,
            held: false,
            cpu: RunCpu {
                gateway: 44.2,
                simulator: Some(61.0),
                ilp_server: 70.5,
                broker: 9.0,
                bench: 6.3,
            },
            host: host(busy, 0.0),
            not_arrived_mqtt: 0,
            not_arrived_ilp: 2_137_944,
            ticks: 180,
            drain_s: 2.2,
            behind: true,
            drain_cap_s: 30,
        }
    }

    #[test]
    fn a_saturated_box_is_the_bound_and_the_line_lists_who_took_it() {
        let line = explain(&step(196.0));
        assert!(
            line.starts_with(
                "300300 values/s was not held: **box saturated** (busy 196 % of 200 %: "
            ),
            "{line}"
        );
        // Highest first; the rest is what the processes do not explain (196 − 191).
        assert!(
            line.contains("ILP server 70.5 %, simulator 61.0 %, gateway 44.2 %, broker 9.0 %, bench (subscriber) 6.3 %, rest of the box 5.0 %"),
            "{line}"
        );
        assert!(
            line.contains(
                "the **ILP** sink fell behind (2137944 rows not arrived 30 s after the window)"
            ),
            "{line}"
        );
        // Stolen time counts towards saturation: 170 busy + 15 stolen = 185 ≥ 180.
        let mut s = step(170.0);
        s.host = host(170.0, 15.0);
        let line = explain(&s);
        assert!(
            line.contains("**box saturated** (busy 170 % + 15 % stolen by the hypervisor of 200 %"),
            "{line}"
        );
        // Just under 90 %: not saturated.
        assert!(!explain(&step(179.0)).contains("saturated"));
    }

    #[test]
    fn an_ilp_server_behind_on_an_idle_box_is_named_with_its_cpu() {
        let mut s = step(120.0);
        s.cpu.simulator = None;
        s.cpu.ilp_server = 35.0;
        let line = explain(&s);
        assert!(
            line.starts_with(
                "300300 values/s was not held, on a box with CPU to spare (busy 120 % of 200 %: "
            ),
            "{line}"
        );
        assert!(line.contains("the **ILP** sink fell behind (2137944 rows not arrived 30 s after the window) (ILP server 35.0 %, gateway 44.2 %)."), "{line}");
        assert!(!line.contains("simulator"), "{line}");
    }

    #[test]
    fn an_mqtt_sink_behind_names_the_broker_and_a_broker_at_one_core() {
        let mut s = step(150.0);
        s.not_arrived_ilp = 0;
        s.not_arrived_mqtt = 4200;
        s.behind = false;
        s.cpu.broker = 97.0;
        let line = explain(&s);
        assert!(line.contains("the **MQTT** sink fell behind (4200 values not arrived when delivery stopped moving) (broker 97.0 %, gateway 44.2 %). mosquitto is single-threaded: at one core the **broker** is the bound."), "{line}");
        // Late, not lost: the drain.
        s.not_arrived_mqtt = 0;
        s.cpu.broker = 20.0;
        s.drain_s = 14.5;
        let line = explain(&s);
        assert!(line.contains("the window's last values arrived 14.5 s after it) (broker 20.0 %, gateway 44.2 %)."), "{line}");
        assert!(!line.contains("single-threaded"), "{line}");
        s.ticks = 0;
        assert!(explain(&s).contains("no complete tick of the window arrived"));
        // Both sinks.
        s.not_arrived_mqtt = 10;
        s.not_arrived_ilp = 20;
        let line = explain(&s);
        assert!(
            line.contains("both sinks fell behind (10 MQTT values and 20 ILP rows")
                && line.contains("(ILP server 70.5 %, broker 20.0 %, gateway 44.2 %)"),
            "{line}"
        );
    }

    #[test]
    fn a_simulator_short_of_the_rate_is_the_bound_on_an_idle_box_and_a_symptom_on_a_full_one() {
        let mut s = step(120.0);
        s.produced_rate = 113_000.0;
        s.not_arrived_ilp = 0;
        s.behind = false;
        let line = explain(&s);
        assert!(
            line.ends_with("the **simulator** fell behind its ticks (the simulator produced only 113000 values/s)."),
            "{line}"
        );
        s.host = host(200.0, 0.0);
        s.not_arrived_ilp = 5;
        let line = explain(&s);
        assert!(
            line.contains("**box saturated**") && line.ends_with("; the simulator produced only 113000 values/s, and the **ILP** sink fell behind (5 rows not arrived when delivery stopped moving)."),
            "{line}"
        );
    }

    #[test]
    fn a_held_last_step_says_the_bound_lies_above_or_the_box_is_full() {
        let mut s = step(110.0);
        s.held = true;
        s.rate = 250_000.0;
        s.not_arrived_ilp = 0;
        let line = explain(&s);
        assert!(
            line.starts_with("The last step run (250000 values/s) was held (busy 110 % of 200 %: "),
            "{line}"
        );
        assert!(
            line.ends_with("the bound lies above the steps run."),
            "{line}"
        );
        s.host = host(190.0, 0.0);
        assert!(explain(&s).contains("was held, on a saturated box (busy 190 % of 200 %"));
    }
}
