//! AIMC 2.x `Transformation`: a Lua function `aimc_main(sources)` that turns the values of
//! several AID properties into the values of several elements, e.g. two temperatures in °F into
//! their mean in °C. The table it gets holds `{SourceId = value}`; it returns `{SinkId = value}`
//! (a missing or `nil` entry writes nothing).
//!
//! Lua runs sandboxed: only the `table`, `string`, `math` and `utf8` libraries (no `io`, `os`,
//! `package`, `debug`, and no `load`/`dofile`/`loadfile`/`require`), at most
//! [`MEMORY_LIMIT`] bytes per transformation and [`CALL_LIMIT`] per call: a loop that does not
//! end is stopped by an instruction hook and reported like an error. An error stops only that
//! call of that transformation; the other mappings, and the next call, run on.
//!
//! The transformation runs when one of its sources changes, once every source has a value;
//! the outputs take the status and timestamps of the value that triggered the call.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Value as LuaValue, VmState};

use crate::core::{Reading, TypedValue};
use crate::mapping::MappingRule;

/// Longest a call may run before it is stopped.
pub const CALL_LIMIT: Duration = Duration::from_millis(100);
/// How long a transformation that ran into [`CALL_LIMIT`] is skipped, so that a loop cannot
/// take 100 ms of the dispatcher for every value of its sources.
pub const SUSPEND_AFTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Memory a transformation's Lua state may use.
pub const MEMORY_LIMIT: usize = 16 * 1024 * 1024;

/// A transformation as configured (from an AIMC 2.x MappingConfiguration).
#[derive(Debug, Clone)]
pub struct TransformSpec {
    /// JSON path of the MappingConfiguration, for messages.
    pub at: String,
    /// The Lua code.
    pub code: String,
    /// SourceId → the rule monitoring its node (`source`, `node_id`, acquisition settings;
    /// no element).
    pub inputs: Vec<(String, MappingRule)>,
    /// SinkId → index of the rule (in the config's `mapping`) whose element takes it.
    pub outputs: Vec<(String, usize)>,
}

impl TransformSpec {
    /// Compiles the code in a fresh sandbox.
    pub fn compile(&self) -> Result<Transform, String> {
        Transform::compile(
            &self.at,
            &self.code,
            self.inputs.iter().map(|(id, _)| id.clone()).collect(),
            self.outputs
                .iter()
                .map(|(id, rule)| (id.clone(), *rule as u32))
                .collect(),
        )
    }
}

/// The dispatcher's transformations: readings of input rules go in, readings of the output
/// rules come out.
#[derive(Debug, Default)]
pub struct Runtime {
    transforms: Vec<Transform>,
    /// Per input rule (`rule - first_input`): (transformation, SourceId).
    inputs: Vec<(usize, String)>,
    first_input: usize,
    /// Transformations whose failure was logged already (logged once, counted always).
    reported: std::collections::HashSet<usize>,
}

impl Runtime {
    /// Compiles every transformation of `router` (checked by `Router::add_transforms`).
    pub fn new(router: &super::Router) -> Runtime {
        let transforms = router
            .transforms
            .iter()
            .map(|s| s.compile().expect("compiled when the router was built"))
            .collect();
        Runtime {
            transforms,
            inputs: router
                .inputs
                .iter()
                .map(|i| (i.transform, i.source_id.clone()))
                .collect(),
            first_input: router.routes.len(),
            reported: Default::default(),
        }
    }

    /// Whether `rule` is a transformation input.
    pub fn is_input(&self, rule: u32) -> bool {
        (rule as usize) >= self.first_input
    }

    /// Feeds an input reading; returns the readings of the output rules, or `None` when the
    /// call failed: logged (once per transformation) for the caller to count; the
    /// transformation stays in place for the next value.
    pub fn feed(&mut self, reading: &Reading) -> Option<Vec<Reading>> {
        let (t, source_id) = self.inputs.get(reading.rule as usize - self.first_input)?;
        let transform = &mut self.transforms[*t];
        match transform.feed(source_id, reading) {
            Ok(readings) => Some(readings),
            Err(e) => {
                if self.reported.insert(*t) {
                    tracing::warn!(
                        transformation = %transform.at,
                        "AIMC transformation failed (logged once per transformation, counted always; the other mappings run on): {e}"
                    );
                }
                None
            }
        }
    }
}

/// A compiled transformation.
pub struct Transform {
    lua: Lua,
    main: mlua::Function,
    /// JSON path of its MappingConfiguration, for messages.
    pub at: String,
    /// SourceId → latest value.
    values: HashMap<String, TypedValue>,
    /// Every SourceId it expects.
    source_ids: Vec<String>,
    /// SinkId → the rule (index) whose element takes that output.
    sinks: Vec<(String, u32)>,
    /// Skipped until then after running into the time limit.
    suspended_until: Option<Instant>,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform")
            .field("at", &self.at)
            .field("sources", &self.source_ids)
            .field("sinks", &self.sinks)
            .finish_non_exhaustive()
    }
}

impl Transform {
    /// Compiles `code` in a fresh sandbox; the error says what is wrong with the code.
    pub fn compile(
        at: &str,
        code: &str,
        source_ids: Vec<String>,
        sinks: Vec<(String, u32)>,
    ) -> Result<Transform, String> {
        let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8;
        let lua = Lua::new_with(libs, LuaOptions::default()).map_err(|e| e.to_string())?;
        lua.set_memory_limit(MEMORY_LIMIT)
            .map_err(|e| e.to_string())?;
        let globals = lua.globals();
        for name in [
            "load",
            "loadstring",
            "dofile",
            "loadfile",
            "require",
            "collectgarbage",
        ] {
            globals
                .set(name, LuaValue::Nil)
                .map_err(|e| e.to_string())?;
        }
        // The chunk defines aimc_main; running it is bounded like a call.
        with_limit(&lua, || lua.load(code).set_name("Transformation").exec())
            .map_err(|e| format!("the Lua code does not load: {e}"))?;
        let main: mlua::Function = globals
            .get("aimc_main")
            .map_err(|_| "the Lua code defines no function aimc_main(sources)".to_string())?;
        Ok(Transform {
            lua,
            main,
            at: at.to_string(),
            values: HashMap::new(),
            source_ids,
            sinks,
            suspended_until: None,
        })
    }

    /// Takes a new value of source `source_id` and, once every source has one, runs the
    /// transformation: the readings for its sinks, or the error of this call.
    pub fn feed(&mut self, source_id: &str, reading: &Reading) -> Result<Vec<Reading>, String> {
        self.values
            .insert(source_id.to_string(), reading.value.clone());
        if self.values.len() < self.source_ids.len() {
            return Ok(Vec::new());
        }
        if let Some(until) = self.suspended_until {
            if Instant::now() < until {
                return Err("suspended after running into the time limit".into());
            }
            self.suspended_until = None;
        }
        let table = self.lua.create_table().map_err(|e| e.to_string())?;
        for (id, v) in &self.values {
            table
                .set(
                    id.as_str(),
                    to_lua(&self.lua, v).map_err(|e| e.to_string())?,
                )
                .map_err(|e| e.to_string())?;
        }
        let result: LuaValue = with_limit(&self.lua, || self.main.call(table)).map_err(|e| {
            let e = e.to_string();
            if e.contains(TIME_LIMIT_TEXT) {
                self.suspended_until = Some(Instant::now() + SUSPEND_AFTER_TIMEOUT);
                format!("{e}; skipped for {} s", SUSPEND_AFTER_TIMEOUT.as_secs())
            } else {
                e
            }
        })?;
        let LuaValue::Table(out) = result else {
            return Err(format!(
                "aimc_main returned a {}, not a table {{SinkId = value}}",
                result.type_name()
            ));
        };
        let mut readings = Vec::new();
        for (sink_id, rule) in &self.sinks {
            let v: LuaValue = out.get(sink_id.as_str()).map_err(|e| e.to_string())?;
            if v.is_nil() {
                continue;
            }
            let value = from_lua(&v).map_err(|e| format!("sink {sink_id}: {e}"))?;
            readings.push(Reading {
                rule: *rule,
                value,
                status: reading.status,
                source_ts_nanos: reading.source_ts_nanos,
                server_ts_nanos: reading.server_ts_nanos,
            });
        }
        Ok(readings)
    }
}

const TIME_LIMIT_TEXT: &str = "time limit per call";

/// Runs `f` with the instruction hook that stops it after [`CALL_LIMIT`].
fn with_limit<T>(lua: &Lua, f: impl FnOnce() -> mlua::Result<T>) -> mlua::Result<T> {
    let started = Instant::now();
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(10_000),
        move |_, _| {
            if started.elapsed() > CALL_LIMIT {
                Err(mlua::Error::runtime(format!(
                    "stopped after {} ms ({TIME_LIMIT_TEXT})",
                    CALL_LIMIT.as_millis()
                )))
            } else {
                Ok(VmState::Continue)
            }
        },
    )?;
    let result = f();
    lua.remove_hook();
    result
}

fn to_lua(lua: &Lua, v: &TypedValue) -> mlua::Result<LuaValue> {
    Ok(match v {
        TypedValue::Bool(b) => LuaValue::Boolean(*b),
        TypedValue::Int(i) => LuaValue::Integer(*i),
        TypedValue::UInt(u) => match i64::try_from(*u) {
            Ok(i) => LuaValue::Integer(i),
            Err(_) => LuaValue::Number(*u as f64),
        },
        TypedValue::Float(f) => LuaValue::Number(*f),
        TypedValue::Text(s) => LuaValue::String(lua.create_string(s)?),
        TypedValue::DateTime(t) => {
            LuaValue::String(lua.create_string(TypedValue::datetime_text(t))?)
        }
        TypedValue::Bytes(b) => LuaValue::String(lua.create_string(b)?),
        TypedValue::List(items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.set(i + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
        TypedValue::Null => LuaValue::Nil,
    })
}

fn from_lua(v: &LuaValue) -> Result<TypedValue, String> {
    Ok(match v {
        LuaValue::Boolean(b) => TypedValue::Bool(*b),
        LuaValue::Integer(i) => TypedValue::Int(*i),
        LuaValue::Number(f) => TypedValue::Float(*f),
        LuaValue::String(s) => TypedValue::Text(s.to_str().map_err(|e| e.to_string())?.to_string()),
        LuaValue::Table(t) => TypedValue::List(
            t.sequence_values::<LuaValue>()
                .map(|item| item.map_err(|e| e.to_string()).and_then(|i| from_lua(&i)))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(format!(
                "a {} cannot be an element value",
                other.type_name()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(v: TypedValue) -> Reading {
        Reading {
            rule: 0,
            value: v,
            status: 0,
            source_ts_nanos: 7,
            server_ts_nanos: 8,
        }
    }

    #[test]
    fn two_sources_into_one_sink_once_both_have_values() {
        let code = "function aimc_main(s) return { MeanC = ((s.A + s.B) / 2 - 32) * 5 / 9 } end";
        let mut t = Transform::compile(
            "here",
            code,
            vec!["A".into(), "B".into()],
            vec![("MeanC".into(), 3), ("Unused".into(), 4)],
        )
        .unwrap();
        assert!(t
            .feed("A", &reading(TypedValue::Float(212.0)))
            .unwrap()
            .is_empty());
        let out = t.feed("B", &reading(TypedValue::Int(32))).unwrap();
        assert_eq!(out.len(), 1, "nil outputs write nothing");
        assert_eq!(out[0].rule, 3);
        assert_eq!(out[0].value, TypedValue::Float(50.0));
        assert_eq!(out[0].source_ts_nanos, 7);
    }

    #[test]
    fn loops_errors_and_escapes_are_stopped_and_the_next_call_runs() {
        let code = "function aimc_main(s)\n\
            if s.X == 1 then while true do end end\n\
            if s.X == 2 then error('bad input') end\n\
            if s.X == 3 then return { Y = os.time() } end\n\
            if s.X == 4 then return { Y = io.open('/etc/passwd') } end\n\
            return { Y = s.X * 10 } end";
        let mut t =
            Transform::compile("here", code, vec!["X".into()], vec![("Y".into(), 0)]).unwrap();
        let started = Instant::now();
        let e = t.feed("X", &reading(TypedValue::Int(1))).unwrap_err();
        assert!(e.contains("time limit"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Skipped for a while, without running Lua again.
        let e = t.feed("X", &reading(TypedValue::Int(5))).unwrap_err();
        assert!(e.contains("suspended"), "{e}");
        t.suspended_until = None;
        let e = t.feed("X", &reading(TypedValue::Int(2))).unwrap_err();
        assert!(e.contains("bad input"), "{e}");
        for x in [3, 4] {
            let e = t.feed("X", &reading(TypedValue::Int(x))).unwrap_err();
            assert!(e.contains("nil value"), "{e}");
        }
        let out = t.feed("X", &reading(TypedValue::Int(5))).unwrap();
        assert_eq!(out[0].value, TypedValue::Int(50));
    }

    #[test]
    fn bad_code_is_reported_at_compile_time() {
        let e = Transform::compile("here", "function (", vec![], vec![]).unwrap_err();
        assert!(e.contains("does not load"), "{e}");
        let e = Transform::compile("here", "x = 1", vec![], vec![]).unwrap_err();
        assert!(e.contains("aimc_main"), "{e}");
        let e = Transform::compile("here", "load('x=1')()", vec![], vec![]).unwrap_err();
        assert!(e.contains("does not load"), "{e}");
    }
}
