//! The simulated machines: plain state machines with deterministic physics.
//!
//! Every machine exposes a fixed list of variables ([`VarDef`]); after each `step` the runner asks
//! for the current values and only writes the ones that changed.

use opcua::types::{
    ByteString, DataTypeId, DateTime, Guid, LocalizedText, StatusCode, UAString, Variant,
};

use crate::prng::Rng;

/// Definition of one variable of a machine object.
#[derive(Clone, Debug)]
pub struct VarDef {
    /// Browse name; the node id is `<Object>.<name>`.
    pub name: &'static str,
    pub data_type: DataTypeId,
    /// Array length (value rank 1) or `None` for a scalar.
    pub array_len: Option<u32>,
    /// Writable by clients, with the accepted numeric range.
    pub writable: Option<(f64, f64)>,
}

const fn scalar(name: &'static str, data_type: DataTypeId) -> VarDef {
    VarDef {
        name,
        data_type,
        array_len: None,
        writable: None,
    }
}

const fn array(name: &'static str, data_type: DataTypeId, len: u32) -> VarDef {
    VarDef {
        name,
        data_type,
        array_len: Some(len),
        writable: None,
    }
}

const fn setpoint(name: &'static str, lo: f64, hi: f64) -> VarDef {
    VarDef {
        name,
        data_type: DataTypeId::Double,
        array_len: None,
        writable: Some((lo, hi)),
    }
}

/// DI-style nameplate (static), published under `<Object>.Identification`.
#[derive(Clone, Debug)]
pub struct Nameplate {
    pub manufacturer: &'static str,
    pub model: &'static str,
    pub serial_number: String,
    pub year_of_construction: u16,
    pub software_revision: &'static str,
    pub hardware_revision: &'static str,
}

impl Nameplate {
    /// (browse name, value) of the nameplate variables.
    pub fn variables(&self) -> Vec<(&'static str, Variant)> {
        vec![
            (
                "Manufacturer",
                Variant::from(LocalizedText::new("en", self.manufacturer)),
            ),
            ("Model", Variant::from(LocalizedText::new("en", self.model))),
            (
                "SerialNumber",
                Variant::from(UAString::from(self.serial_number.as_str())),
            ),
            (
                "YearOfConstruction",
                Variant::UInt16(self.year_of_construction),
            ),
            (
                "SoftwareRevision",
                Variant::from(UAString::from(self.software_revision)),
            ),
            (
                "HardwareRevision",
                Variant::from(UAString::from(self.hardware_revision)),
            ),
        ]
    }
}

/// Per-tick context shared by the machines of one tick.
pub struct StepCtx {
    /// Wall-clock time of this tick (whole milliseconds).
    pub now: DateTime,
    /// Tick period in seconds.
    pub dt_s: f64,
    /// Electrical load of the machines stepped so far in this tick (kW), read by the meter.
    pub plant_kw: f64,
}

pub type Sample = (Variant, StatusCode);

pub trait Machine: Send {
    fn namespace_uri(&self) -> &'static str;
    /// Object browse name, also the prefix of the string node ids.
    fn object(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn variables(&self) -> Vec<VarDef>;
    fn nameplate(&self) -> Option<Nameplate>;
    /// Advance the simulation by one tick.
    fn step(&mut self, ctx: &mut StepCtx);
    /// Current values, in the order of [`Machine::variables`].
    fn values(&self, out: &mut Vec<Sample>);
    /// A client wrote variable `idx` (already range-checked).
    fn write(&mut self, _idx: usize, _value: f64) {}
}

fn good<V: Into<Variant>>(v: V) -> Sample {
    (v.into(), StatusCode::Good)
}

/// Round to a fixed number of decimals so values look like real instrument readings.
fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

// ---------------------------------------------------------------------------------------------
// CNC machining centre
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CncState {
    Idle,
    Running,
    Alarm,
}

impl CncState {
    fn as_str(self) -> &'static str {
        match self {
            CncState::Idle => "IDLE",
            CncState::Running => "RUNNING",
            CncState::Alarm => "ALARM",
        }
    }
}

const CNC_PROGRAMS: [&str; 3] = ["O1001_HOUSING", "O1002_FLANGE", "O2040_BRACKET"];
const CNC_ALARMS: [i32; 4] = [1010, 2003, 3050, 4101]; // spindle overload, tool wear, coolant low, axis following error

pub struct Cnc {
    rng: Rng,
    state: CncState,
    /// Ticks left in the current state.
    remaining: u64,
    /// Length and progress of the current cycle (ticks).
    cycle_len: u64,
    cycle_pos: u64,
    program: usize,
    parts_in_program: u32,
    part_count: u32,
    alarm_code: i32,
    last_cycle_end: DateTime,
    setpoint: f64,
    speed: f64,
    load: f64,
    feed: f64,
    axes: [f64; 3],
    tool_wear: f64,
    serial: String,
}

impl Cnc {
    pub fn new(seed: u64, start: DateTime) -> Self {
        let mut rng = Rng::new(seed, 1);
        let serial = format!("CNC-{:06}", rng.int(100_000, 999_999));
        Cnc {
            rng,
            state: CncState::Idle,
            remaining: 3,
            cycle_len: 30,
            cycle_pos: 0,
            program: 0,
            parts_in_program: 0,
            part_count: 0,
            alarm_code: 0,
            last_cycle_end: start,
            setpoint: 10_000.0,
            speed: 0.0,
            load: 0.0,
            feed: 0.0,
            axes: [0.0; 3],
            tool_wear: 0.0,
            serial,
        }
    }

    fn start_cycle(&mut self) {
        self.state = CncState::Running;
        self.cycle_len = self.rng.int(20, 40);
        self.cycle_pos = 0;
    }
}

impl Machine for Cnc {
    fn namespace_uri(&self) -> &'static str {
        "urn:opcua-sim:cnc"
    }
    fn object(&self) -> &'static str {
        "CNC1"
    }
    fn description(&self) -> &'static str {
        "5-axis CNC machining centre"
    }
    fn variables(&self) -> Vec<VarDef> {
        vec![
            scalar("SpindleSpeed", DataTypeId::Double),
            scalar("SpindleLoad", DataTypeId::Double),
            scalar("FeedRate", DataTypeId::Double),
            array("AxisPositions", DataTypeId::Double, 3),
            scalar("ProgramName", DataTypeId::String),
            scalar("PartCount", DataTypeId::UInt32),
            scalar("ExecutionState", DataTypeId::String),
            scalar("AlarmCode", DataTypeId::Int32),
            scalar("Running", DataTypeId::Boolean),
            scalar("LastCycleEnd", DataTypeId::DateTime),
            setpoint("SpindleSpeedSetpoint", 0.0, 15_000.0),
        ]
    }
    fn nameplate(&self) -> Option<Nameplate> {
        Some(Nameplate {
            manufacturer: "Simulated Machine Tools GmbH",
            model: "SMC-500 5-Axis",
            serial_number: self.serial.clone(),
            year_of_construction: 2021,
            software_revision: "4.2.1",
            hardware_revision: "B",
        })
    }

    fn step(&mut self, ctx: &mut StepCtx) {
        let rng = &mut self.rng;
        match self.state {
            CncState::Idle => {
                self.remaining = self.remaining.saturating_sub(1);
                if self.remaining == 0 {
                    self.start_cycle();
                }
            }
            CncState::Running => {
                self.cycle_pos += 1;
                if rng.chance(0.004 + self.tool_wear * 0.01) {
                    self.state = CncState::Alarm;
                    self.alarm_code = CNC_ALARMS[rng.int(0, CNC_ALARMS.len() as u64 - 1) as usize];
                    self.remaining = rng.int(10, 25);
                } else if self.cycle_pos >= self.cycle_len {
                    self.part_count = self.part_count.wrapping_add(1);
                    self.last_cycle_end = ctx.now;
                    self.tool_wear += 0.02;
                    self.parts_in_program += 1;
                    if self.parts_in_program == 25 {
                        self.parts_in_program = 0;
                        self.program = (self.program + 1) % CNC_PROGRAMS.len();
                        self.tool_wear = 0.0; // tool change with the program change
                    }
                    self.state = CncState::Idle;
                    self.remaining = rng.int(2, 5); // part change
                }
            }
            CncState::Alarm => {
                self.remaining = self.remaining.saturating_sub(1);
                if self.remaining == 0 {
                    self.alarm_code = 0;
                    self.state = CncState::Idle;
                    self.remaining = 5;
                }
            }
        }

        let rng = &mut self.rng;
        match self.state {
            CncState::Running => {
                let p = self.cycle_pos as f64 / self.cycle_len as f64;
                let target = self.setpoint;
                self.speed += (target - self.speed) * 0.6;
                self.speed = round((self.speed + rng.normal() * target * 0.003).max(0.0), 1);
                let cut = (p * std::f64::consts::PI).sin();
                self.load = round(
                    (25.0 + 45.0 * cut + self.tool_wear * 100.0 + rng.normal() * 1.5)
                        .clamp(0.0, 150.0),
                    2,
                );
                self.feed = round((1200.0 + 1300.0 * cut + rng.normal() * 15.0).max(0.0), 1);
                let t = self.cycle_pos as f64;
                self.axes = [
                    round(250.0 + 200.0 * (t * 0.21).sin() + rng.normal() * 0.005, 3),
                    round(150.0 + 120.0 * (t * 0.13).cos() + rng.normal() * 0.005, 3),
                    round(-40.0 - 30.0 * cut + rng.normal() * 0.005, 3),
                ];
            }
            CncState::Idle | CncState::Alarm => {
                // Spindle coasts down, axes return home (alarm: axes frozen).
                self.speed = if self.speed < 50.0 {
                    0.0
                } else {
                    round(self.speed * 0.3, 1)
                };
                self.load = if self.load < 1.0 {
                    0.0
                } else {
                    round(self.load * 0.3, 2)
                };
                self.feed = 0.0;
                if self.state == CncState::Idle {
                    for a in &mut self.axes {
                        *a = if a.abs() < 1.0 {
                            0.0
                        } else {
                            round(*a * 0.5, 3)
                        };
                    }
                }
            }
        }
        ctx.plant_kw += 3.0 + self.load * 0.25 + self.speed / 1000.0;
    }

    fn values(&self, out: &mut Vec<Sample>) {
        out.clear();
        out.push(good(self.speed));
        out.push(good(self.load));
        out.push(good(self.feed));
        out.push(good(self.axes.to_vec()));
        out.push(good(UAString::from(CNC_PROGRAMS[self.program])));
        out.push(good(self.part_count));
        out.push(good(UAString::from(self.state.as_str())));
        out.push(good(self.alarm_code));
        out.push(good(self.state == CncState::Running));
        out.push(good(self.last_cycle_end));
        out.push(good(self.setpoint));
    }

    fn write(&mut self, idx: usize, value: f64) {
        if idx == 10 {
            self.setpoint = value;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Injection moulding machine
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImmState {
    Heating,
    Running,
    Alarm,
}

pub struct Imm {
    rng: Rng,
    state: ImmState,
    remaining: u64,
    cycle_pos: u64,
    cycle_len: u64,
    zones: [f64; 4],
    zone_sp: [f64; 4],
    mould: f64,
    cycle_time: f64,
    shots: u32,
    pressure: f64,
    cushion: f64,
    serial: String,
}

impl Imm {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed, 2);
        let serial = format!("IMM-{:06}", rng.int(100_000, 999_999));
        Imm {
            rng,
            state: ImmState::Heating,
            remaining: 0,
            cycle_pos: 0,
            cycle_len: 12,
            zones: [150.0, 155.0, 160.0, 158.0],
            zone_sp: [220.0, 230.0, 240.0, 235.0],
            mould: 30.0,
            cycle_time: 0.0,
            shots: 0,
            pressure: 0.0,
            cushion: 0.0,
            serial,
        }
    }
}

impl Machine for Imm {
    fn namespace_uri(&self) -> &'static str {
        "urn:opcua-sim:imm"
    }
    fn object(&self) -> &'static str {
        "IMM1"
    }
    fn description(&self) -> &'static str {
        "Injection moulding machine, 4 barrel heating zones"
    }
    fn variables(&self) -> Vec<VarDef> {
        vec![
            array("BarrelZoneTemperatures", DataTypeId::Double, 4),
            scalar("MouldTemperature", DataTypeId::Double),
            scalar("InjectionPressure", DataTypeId::Double),
            scalar("CushionPosition", DataTypeId::Double),
            scalar("CycleTime", DataTypeId::Double),
            scalar("ShotCount", DataTypeId::UInt32),
            scalar("MachineState", DataTypeId::String),
            scalar("Alarm", DataTypeId::Boolean),
        ]
    }
    fn nameplate(&self) -> Option<Nameplate> {
        Some(Nameplate {
            manufacturer: "Simulated Plastics Machinery AG",
            model: "SPM 1500-350",
            serial_number: self.serial.clone(),
            year_of_construction: 2019,
            software_revision: "2.14.0",
            hardware_revision: "C2",
        })
    }

    fn step(&mut self, ctx: &mut StepCtx) {
        let rng = &mut self.rng;
        // Barrel heaters: first-order approach to the setpoint with noise (alarm = heater fault on zone 3).
        for (i, z) in self.zones.iter_mut().enumerate() {
            let sp = if self.state == ImmState::Alarm && i == 2 {
                150.0
            } else {
                self.zone_sp[i]
            };
            *z = round(*z + (sp - *z) * 0.15 + rng.normal() * 0.3, 2);
        }
        let heated = self
            .zones
            .iter()
            .zip(self.zone_sp.iter())
            .all(|(z, sp)| (z - sp).abs() < 5.0);
        match self.state {
            ImmState::Heating => {
                if heated {
                    self.state = ImmState::Running;
                    self.cycle_pos = 0;
                    self.cycle_len = rng.int(10, 14);
                }
            }
            ImmState::Running => {
                self.cycle_pos += 1;
                if rng.chance(0.003) {
                    self.state = ImmState::Alarm;
                    self.remaining = rng.int(15, 30);
                } else if self.cycle_pos >= self.cycle_len {
                    self.shots = self.shots.wrapping_add(1);
                    self.cycle_time =
                        round(24.0 + self.cycle_len as f64 * 0.4 + rng.normal() * 0.15, 2);
                    self.cushion = round(5.0 + rng.normal() * 0.08, 3);
                    self.cycle_pos = 0;
                    self.cycle_len = rng.int(10, 14);
                }
            }
            ImmState::Alarm => {
                self.remaining = self.remaining.saturating_sub(1);
                if self.remaining == 0 {
                    self.state = ImmState::Heating;
                }
            }
        }
        let rng = &mut self.rng;
        let running = self.state == ImmState::Running;
        let mould_target = if running {
            45.0 + 3.0 * (self.cycle_pos as f64 * 0.5).sin()
        } else {
            30.0
        };
        self.mould = round(
            self.mould + (mould_target - self.mould) * 0.2 + rng.normal() * 0.1,
            2,
        );
        self.pressure = if running {
            // injection (first third of the cycle), holding, then cooling at ~0.
            let p = self.cycle_pos as f64 / self.cycle_len as f64;
            let base = if p < 0.34 {
                1200.0
            } else if p < 0.6 {
                600.0
            } else {
                5.0
            };
            round((base + rng.normal() * base * 0.02).max(0.0), 1)
        } else {
            0.0
        };
        ctx.plant_kw += 8.0
            + self
                .zones
                .iter()
                .zip(self.zone_sp.iter())
                .map(|(z, sp)| (sp - z).max(0.0) * 0.1 + 1.5)
                .sum::<f64>()
            + self.pressure * 0.01;
    }

    fn values(&self, out: &mut Vec<Sample>) {
        out.clear();
        out.push(good(self.zones.to_vec()));
        out.push(good(self.mould));
        out.push(good(self.pressure));
        out.push(good(self.cushion));
        out.push(good(self.cycle_time));
        out.push(good(self.shots));
        let s = match self.state {
            ImmState::Heating => "HEATING",
            ImmState::Running => "RUNNING",
            ImmState::Alarm => "ALARM",
        };
        out.push(good(UAString::from(s)));
        out.push(good(self.state == ImmState::Alarm));
    }
}

// ---------------------------------------------------------------------------------------------
// Conveyor
// ---------------------------------------------------------------------------------------------

pub struct Conveyor {
    rng: Rng,
    setpoint: f64,
    speed: f64,
    good: u32,
    reject: u32,
    /// Fractional items transported (items per metre).
    carry: f64,
    current: f64,
    jam_ticks: u64,
    serial: String,
}

impl Conveyor {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed, 3);
        let serial = format!("CV-{:06}", rng.int(100_000, 999_999));
        Conveyor {
            rng,
            setpoint: 12.0,
            speed: 0.0,
            good: 0,
            reject: 0,
            carry: 0.0,
            current: 0.0,
            jam_ticks: 0,
            serial,
        }
    }
}

impl Machine for Conveyor {
    fn namespace_uri(&self) -> &'static str {
        "urn:opcua-sim:conveyor"
    }
    fn object(&self) -> &'static str {
        "Conveyor1"
    }
    fn description(&self) -> &'static str {
        "Belt conveyor with vision-based reject station"
    }
    fn variables(&self) -> Vec<VarDef> {
        vec![
            scalar("Speed", DataTypeId::Double),
            setpoint("SpeedSetpoint", 0.0, 60.0),
            scalar("GoodCount", DataTypeId::UInt32),
            scalar("RejectCount", DataTypeId::UInt32),
            scalar("MotorCurrent", DataTypeId::Double),
            scalar("Running", DataTypeId::Boolean),
            scalar("Jammed", DataTypeId::Boolean),
        ]
    }
    fn nameplate(&self) -> Option<Nameplate> {
        Some(Nameplate {
            manufacturer: "Simulated Conveying Systems Ltd",
            model: "BeltLine 600",
            serial_number: self.serial.clone(),
            year_of_construction: 2022,
            software_revision: "1.7.3",
            hardware_revision: "A1",
        })
    }

    fn step(&mut self, ctx: &mut StepCtx) {
        let rng = &mut self.rng;
        if self.jam_ticks > 0 {
            self.jam_ticks -= 1;
        } else if self.speed > 1.0 && rng.chance(0.002) {
            self.jam_ticks = rng.int(5, 15);
        }
        let target = if self.jam_ticks > 0 {
            0.0
        } else {
            self.setpoint
        };
        self.speed += (target - self.speed) * 0.4;
        self.speed = if self.speed < 0.05 && target == 0.0 {
            0.0
        } else {
            round((self.speed + rng.normal() * 0.05).max(0.0), 3)
        };
        // speed in m/min, one item every 0.5 m, sped-up so tests see counters move quickly.
        self.carry += self.speed / 60.0 * ctx.dt_s * 2.0 * 10.0;
        while self.carry >= 1.0 {
            self.carry -= 1.0;
            if rng.chance(0.03) {
                self.reject = self.reject.wrapping_add(1);
            } else {
                self.good = self.good.wrapping_add(1);
            }
        }
        self.current = if self.speed == 0.0 {
            0.0
        } else {
            round(1.2 + self.speed * 0.08 + rng.normal() * 0.02, 3)
        };
        ctx.plant_kw += self.current * 0.4;
    }

    fn values(&self, out: &mut Vec<Sample>) {
        out.clear();
        out.push(good(self.speed));
        out.push(good(self.setpoint));
        out.push(good(self.good));
        out.push(good(self.reject));
        out.push(good(self.current));
        out.push(good(self.speed > 0.1));
        out.push(good(self.jam_ticks > 0));
    }

    fn write(&mut self, idx: usize, value: f64) {
        if idx == 1 {
            self.setpoint = value;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Energy meter (measures the plant: sum of the other machines plus base load)
// ---------------------------------------------------------------------------------------------

pub struct EnergyMeter {
    rng: Rng,
    power: f64,
    energy: f64,
    voltage: f32,
    current: f64,
    pf: f64,
    freq: f64,
    serial: String,
}

impl EnergyMeter {
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed, 4);
        let serial = format!("EM-{:06}", rng.int(100_000, 999_999));
        EnergyMeter {
            rng,
            power: 0.0,
            energy: 12_345.0,
            voltage: 400.0,
            current: 0.0,
            pf: 0.9,
            freq: 50.0,
            serial,
        }
    }
}

impl Machine for EnergyMeter {
    fn namespace_uri(&self) -> &'static str {
        "urn:opcua-sim:energy"
    }
    fn object(&self) -> &'static str {
        "Meter1"
    }
    fn description(&self) -> &'static str {
        "Three-phase energy meter at the line feeder"
    }
    fn variables(&self) -> Vec<VarDef> {
        vec![
            scalar("ActivePower", DataTypeId::Double),
            scalar("EnergyTotal", DataTypeId::Double),
            scalar("Voltage", DataTypeId::Float),
            scalar("Current", DataTypeId::Double),
            scalar("PowerFactor", DataTypeId::Double),
            scalar("Frequency", DataTypeId::Double),
        ]
    }
    fn nameplate(&self) -> Option<Nameplate> {
        Some(Nameplate {
            manufacturer: "Simulated Metering Inc.",
            model: "PM-3300",
            serial_number: self.serial.clone(),
            year_of_construction: 2020,
            software_revision: "3.0.8",
            hardware_revision: "R3",
        })
    }

    fn step(&mut self, ctx: &mut StepCtx) {
        let rng = &mut self.rng;
        self.power = round((5.0 + ctx.plant_kw + rng.normal() * 0.2).max(0.0), 3);
        self.energy = round(self.energy + self.power * ctx.dt_s / 3600.0, 6);
        self.voltage = ((400.0 + rng.normal() * 1.5) * 10.0).round() as f32 / 10.0;
        self.pf = round((0.92 + rng.normal() * 0.01).clamp(0.5, 1.0), 3);
        self.current = round(
            self.power * 1000.0 / (3f64.sqrt() * self.voltage as f64 * self.pf),
            2,
        );
        self.freq = round(50.0 + rng.normal() * 0.01, 3);
    }

    fn values(&self, out: &mut Vec<Sample>) {
        out.clear();
        out.push(good(self.power));
        out.push(good(self.energy));
        out.push(good(self.voltage));
        out.push(good(self.current));
        out.push(good(self.pf));
        out.push(good(self.freq));
    }
}

// ---------------------------------------------------------------------------------------------
// Type coverage object
// ---------------------------------------------------------------------------------------------

pub struct Types {
    rng: Rng,
    n: u64,
    now: DateTime,
    guid: [u8; 16],
    x: f64,
}

impl Types {
    pub fn new(seed: u64, start: DateTime) -> Self {
        let mut rng = Rng::new(seed, 5);
        let mut guid = [0u8; 16];
        for b in &mut guid {
            *b = rng.next_u64() as u8;
        }
        Types {
            rng,
            n: 0,
            now: start,
            guid,
            x: 0.0,
        }
    }
}

impl Machine for Types {
    fn namespace_uri(&self) -> &'static str {
        "urn:opcua-sim:types"
    }
    fn object(&self) -> &'static str {
        "Types"
    }
    fn description(&self) -> &'static str {
        "One variable per OPC UA built-in type, for data-type coverage tests"
    }
    fn variables(&self) -> Vec<VarDef> {
        vec![
            scalar("Boolean", DataTypeId::Boolean),
            scalar("SByte", DataTypeId::SByte),
            scalar("Byte", DataTypeId::Byte),
            scalar("Int16", DataTypeId::Int16),
            scalar("UInt16", DataTypeId::UInt16),
            scalar("Int32", DataTypeId::Int32),
            scalar("UInt32", DataTypeId::UInt32),
            scalar("Int64", DataTypeId::Int64),
            scalar("UInt64", DataTypeId::UInt64),
            scalar("Float", DataTypeId::Float),
            scalar("Double", DataTypeId::Double),
            scalar("String", DataTypeId::String),
            scalar("DateTime", DataTypeId::DateTime),
            scalar("Guid", DataTypeId::Guid),
            scalar("ByteString", DataTypeId::ByteString),
            scalar("LocalizedText", DataTypeId::LocalizedText),
            array("DoubleArray", DataTypeId::Double, 5),
            array("Int32Array", DataTypeId::Int32, 4),
            scalar("UncertainDouble", DataTypeId::Double),
            scalar("BadDouble", DataTypeId::Double),
        ]
    }
    fn nameplate(&self) -> Option<Nameplate> {
        None
    }

    fn step(&mut self, ctx: &mut StepCtx) {
        self.n += 1;
        self.now = ctx.now;
        for b in &mut self.guid {
            *b = self.rng.next_u64() as u8;
        }
        self.x = round(self.x + self.rng.normal(), 4);
    }

    fn values(&self, out: &mut Vec<Sample>) {
        let n = self.n;
        let s = (n as f64 * 0.1).sin();
        out.clear();
        out.push(good(n % 2 == 1));
        out.push(good(n as i8)); // wraps through negatives
        out.push(good(n as u8));
        out.push(good((n as i16).wrapping_mul(-7)));
        out.push(good(n as u16));
        out.push(good((n as i32).wrapping_mul(-1000)));
        out.push(good(n as u32));
        out.push(good(-(n as i64) * 1_000_000_007));
        out.push(good(u64::MAX / 2 + n));
        out.push(good((s * 100.0) as f32));
        out.push(good(round(s * 1000.0 + self.x, 6)));
        out.push(good(UAString::from(format!("value {n}"))));
        out.push(good(self.now));
        out.push(good(Guid::from_bytes(self.guid)));
        out.push(good(ByteString::from(n.to_be_bytes().to_vec())));
        out.push(good(LocalizedText::new("en", &format!("Text {n}"))));
        out.push(good(
            (0..5)
                .map(|i| round(s * (i + 1) as f64, 6))
                .collect::<Vec<f64>>(),
        ));
        out.push(good(
            (0..4).map(|i| n as i32 * (i + 1)).collect::<Vec<i32>>(),
        ));
        out.push((
            Variant::Double(round(20.0 + s, 6)),
            StatusCode::UncertainSensorNotAccurate,
        ));
        out.push((
            Variant::Double(round(-1.0 - s, 6)),
            StatusCode::BadSensorFailure,
        ));
    }
}

/// All machines of the factory in stepping order (the energy meter last: it measures the others).
pub fn factory(seed: u64, start: DateTime) -> Vec<Box<dyn Machine>> {
    vec![
        Box::new(Cnc::new(seed, start)),
        Box::new(Imm::new(seed)),
        Box::new(Conveyor::new(seed)),
        Box::new(EnergyMeter::new(seed)),
        Box::new(Types::new(seed, start)),
    ]
}
