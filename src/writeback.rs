//! Write-back: `PATCH /api/v3.0/submodels/{id}/submodel-elements/{path}/$value` turns into an
//! OPC UA Write on the node the element is mapped from — only for rules marked
//! `writable = true`, only for callers with the `writer` role (checked by [`crate::api::auth`]).
//!
//! The value is converted to the node's own DataType (read from the server before writing, so
//! an Int32 node gets an Int32 even when the AAS says `xs:long`); for DataTypes that are not a
//! built-in scalar, the element's `xs:*` type decides. Every attempt lands in the audit log with
//! the caller, the element, the node, old and new value and the result.
//!
//! The OPC UA session comes from the running source through a [`SessionSlot`] in its
//! `SourceStats`, so the source module only has to announce its session; the write path does
//! not restructure it.

#![warn(missing_docs)]

use std::hash::BuildHasher;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use opcua::types::{
    AttributeId, DataValue, NodeId, NumericRange, ReadValueId, TimestampsToReturn, Variant,
    WriteValue,
};
use serde_json::{json, Value};

use crate::aas::XsType;
use crate::api::{decode_id, ApiError, SharedEnvironment};
use crate::audit::AuditLog;
use crate::mapping::{MappingRule, Route, Router as MappingRouter};
use crate::model::TypedValue;
use crate::security::Principal;
use crate::sources::SourceStats;

pub use crate::sources::opcua::slot::{SessionSlot, SessionState};

/// Shared state of the write-back endpoint (one for the API and the sinks' commands).
///
/// It keeps no per-rule copies: the node, source and element of a rule are read from the
/// mapping router the dispatcher uses too (at 100k rules, copies of submodel id, path and node
/// per rule cost ~26 MB, and there used to be two such copies).
pub struct WriteBack {
    router: Arc<MappingRouter>,
    /// Per rule (by index), whether it is marked `writable = true`.
    writable: Vec<bool>,
    /// `(hash of (submodel id, idShortPath), rule index)`, sorted: finds a rule without a scan
    /// of every rule per write, and without a second copy of the strings (a hit is checked
    /// against the route's own target, so a hash collision cannot pick a wrong rule).
    index: Vec<(u64, u32)>,
    hasher: std::hash::RandomState,
    sources: Vec<(String, Arc<SourceStats>)>,
    env: SharedEnvironment,
    audit: Option<Arc<AuditLog>>,
}

impl WriteBack {
    /// Indexes the rules of `router` (`rules` are those it was built from, for their
    /// `writable` flag) and keeps the sources' session slots.
    pub fn new(
        rules: &[MappingRule],
        router: Arc<MappingRouter>,
        sources: Vec<(String, Arc<SourceStats>)>,
        env: SharedEnvironment,
        audit: Option<Arc<AuditLog>>,
    ) -> Arc<WriteBack> {
        let hasher = std::hash::RandomState::new();
        let mut index: Vec<(u64, u32)> = router
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let key = (&*r.target.submodel.id, &*r.target.id_short_path);
                (hasher.hash_one(key), i as u32)
            })
            .collect();
        // Ties keep rule order, so the first rule for an element wins, as before.
        index.sort_unstable();
        let writable = rules
            .iter()
            .take(router.routes.len())
            .map(|r| r.writable)
            .collect();
        Arc::new(WriteBack {
            router,
            writable,
            index,
            hasher,
            sources,
            env,
            audit,
        })
    }

    /// The first rule mapping `path` of submodel `submodel`, with its index.
    fn rule(&self, submodel: &str, path: &str) -> Option<(usize, &Route)> {
        let hash = self.hasher.hash_one((submodel, path));
        let start = self.index.partition_point(|(h, _)| *h < hash);
        self.index[start..]
            .iter()
            .take_while(|(h, _)| *h == hash)
            .map(|(_, i)| (*i as usize, &self.router.routes[*i as usize]))
            .find(|(_, r)| &*r.target.submodel.id == submodel && &*r.target.id_short_path == path)
    }

    /// Adds the endpoint to the read API. It is a layer rather than a route of its own: a
    /// route for `.../submodel-elements/{*path}` would be more specific than the read API's
    /// catch-all and take every method of that path away from it (GET would answer 405).
    /// Applied inside the security layers, so the caller's [`Principal`] is known.
    pub fn layer_onto(self: Arc<Self>, read_api: Router) -> Router {
        read_api.layer(axum::middleware::from_fn_with_state(self, intercept_patch))
    }
}

/// Why a write was not attempted or failed: HTTP status and text.
struct Failure(StatusCode, String);

impl Failure {
    fn new(status: StatusCode, text: impl Into<String>) -> Failure {
        Failure(status, text.into())
    }
}

/// Outcome of a write, for the response and the audit line.
struct Outcome {
    status: StatusCode,
    result: String,
    old: Value,
}

/// Hands `PATCH /api/v3.0/submodels/{id}/submodel-elements/{path}` to [`patch_value`]; every
/// other request goes on to the read API.
async fn intercept_patch(
    State(wb): State<Arc<WriteBack>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() != axum::http::Method::PATCH {
        return next.run(req).await;
    }
    let Some((sm_id, path)) = patch_target(req.uri().path()) else {
        return next.run(req).await;
    };
    let principal = req.extensions().get::<Principal>().cloned();
    // The Bytes extractor honours the DefaultBodyLimit layer in front of this one (413).
    let body = match <Bytes as axum::extract::FromRequest<()>>::from_request(req, &()).await {
        Ok(b) => b,
        Err(rejection) => return rejection.into_response(),
    };
    patch_value(wb, principal, sm_id, path, body).await
}

/// `(submodel id segment, idShortPath[/$value])` of a write-back URL path, percent-decoded.
fn patch_target(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v3.0/submodels/")?;
    let (sm_id, rest) = rest.split_once('/')?;
    let element = rest.strip_prefix("submodel-elements/")?;
    Some((percent_decode(sm_id)?, percent_decode(element)?))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn patch_value(
    wb: Arc<WriteBack>,
    principal: Option<Principal>,
    sm_id: String,
    path: String,
    body: Bytes,
) -> Response {
    let who = principal.unwrap_or(Principal {
        name: "anonymous".into(),
        role: None,
    });
    let Some(path) = path.strip_suffix("/$value") else {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "only the value can be written: PATCH .../submodel-elements/{idShortPath}/$value",
        )
        .into_response();
    };
    let submodel = match decode_id(&sm_id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let new_json: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not a JSON value: {e}"),
            )
            .into_response()
        }
    };
    // Accept the Part 2 named ValueOnly form too ({"<idShort>": value}), as $value serves it.
    let id_short = path.rsplit('.').next().unwrap_or(path);
    let new_json = match new_json {
        Value::Object(mut m) if m.len() == 1 && m.contains_key(id_short) => {
            m.remove(id_short).expect("checked")
        }
        other => other,
    };
    let audit_fields = json!({
        "user": who.name,
        "role": who.role.map(|r| r.as_str()),
        "submodel": submodel,
        "path": path,
        "new": new_json,
    });
    let (status, result) = wb
        .write_audited(&submodel, path, &new_json, audit_fields)
        .await;
    if status == StatusCode::NO_CONTENT {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::new(status, result).into_response()
    }
}

impl WriteBack {
    /// Writes and records the attempt in the audit log (`audit_fields` says who and what);
    /// returns the HTTP status and the result text.
    async fn write_audited(
        &self,
        submodel: &str,
        path: &str,
        new_json: &Value,
        mut audit_fields: Value,
    ) -> (StatusCode, String) {
        let outcome = self
            .write(submodel, path, new_json, &mut audit_fields)
            .await;
        let (status, result, old) = match outcome {
            Ok(o) => (o.status, o.result, o.old),
            Err(Failure(status, text)) => (status, text, Value::Null),
        };
        audit_fields["old"] = old;
        audit_fields["result"] = result.clone().into();
        audit_fields["http_status"] = status.as_u16().into();
        if let Some(audit) = &self.audit {
            audit.record("write", audit_fields);
        }
        (status, result)
    }

    async fn write(
        &self,
        submodel: &str,
        path: &str,
        new_json: &Value,
        audit: &mut Value,
    ) -> Result<Outcome, Failure> {
        {
            let env = self.env.read();
            if env.submodel(submodel).is_none() {
                return Err(Failure::new(
                    StatusCode::NOT_FOUND,
                    format!("no submodel with id {submodel:?}"),
                ));
            }
            env.locate(submodel, path)
                .map_err(|e| Failure::new(StatusCode::NOT_FOUND, e))?;
        }
        let (index, rule) = self.rule(submodel, path).ok_or_else(|| {
            Failure::new(
                StatusCode::FORBIDDEN,
                format!("{path} is not mapped from an OPC UA node, so it cannot be written"),
            )
        })?;
        audit["node"] = rule.node.to_string().into();
        if !self.writable.get(index).copied().unwrap_or(false) {
            return Err(Failure::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{path} is read-only: its mapping rule ({}) is not marked writable = true",
                    rule.node
                ),
            ));
        }
        let typed = json_to_typed(new_json, rule.target.value_type)
            .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("{path}: {e}")))?;
        let (source_name, stats) = self.sources.get(rule.source as usize).ok_or_else(|| {
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{path}: its OPC UA source is not running"),
            )
        })?;
        audit["source"] = source_name.clone().into();
        let session = stats.session.session().ok_or_else(|| {
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("OPC UA source {source_name} is not connected; nothing was written"),
            )
        })?;
        let unavailable = |what: &str, e: String| {
            Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("OPC UA source {source_name}: {what} failed: {e}"),
            )
        };
        let namespaces = session
            .read_namespace_array()
            .await
            .map_err(|e| unavailable("reading the NamespaceArray", e.to_string()))?;
        let node_id = rule
            .node
            .resolve(&namespaces)
            .map_err(|e| Failure::new(StatusCode::CONFLICT, e))?;
        // Old value and DataType in one round trip: the audit wants the old value, the
        // conversion wants the node's exact type.
        let read = session
            .read(
                &[
                    ReadValueId::from(&node_id),
                    ReadValueId {
                        attribute_id: AttributeId::DataType as u32,
                        ..ReadValueId::from(&node_id)
                    },
                ],
                TimestampsToReturn::Neither,
                0.0,
            )
            .await
            .map_err(|e| unavailable("Read", e.to_string()))?;
        let old = read
            .first()
            .and_then(|dv| dv.value.as_ref())
            .and_then(|v| crate::sources::opcua::convert::variant_to_typed(v).ok())
            .map(|t| rule.target.value_type.json(&t))
            .unwrap_or(Value::Null);
        let data_type = read
            .get(1)
            .and_then(|dv| dv.value.as_ref())
            .and_then(|v| match v {
                Variant::NodeId(id) => Some((**id).clone()),
                _ => None,
            });
        let variant = to_variant(&typed, data_type.as_ref(), rule.target.value_type)
            .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, format!("{path}: {e}")))?;
        let results = session
            .write(&[WriteValue {
                node_id,
                attribute_id: AttributeId::Value as u32,
                index_range: NumericRange::None,
                value: DataValue::value_only(variant),
            }])
            .await
            .map_err(|e| unavailable("Write", e.to_string()))?;
        let status = results
            .first()
            .copied()
            .unwrap_or(opcua::types::StatusCode::BadUnexpectedError);
        let result = format!("{status}");
        Ok(Outcome {
            status: if status.is_good() {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::CONFLICT
            },
            result: if status.is_good() {
                result
            } else {
                format!("the OPC UA server refused the write of {path}: {result}")
            },
            old,
        })
    }
}

/// Reads a ValueOnly JSON value (number, boolean or lexical string) as the element's type.
pub fn json_to_typed(v: &Value, xs: XsType) -> Result<TypedValue, String> {
    let typed = match v {
        Value::Bool(b) => TypedValue::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                TypedValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                TypedValue::UInt(u)
            } else {
                TypedValue::Float(n.as_f64().ok_or("number out of range")?)
            }
        }
        Value::String(s) => return xs.parse_lexical(s),
        other => {
            return Err(format!(
                "{other} is not a value of {}: send a JSON number, boolean or string",
                xs.as_str()
            ))
        }
    };
    xs.coerce(typed)
}

/// The OPC UA built-in scalar types a write can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Builtin {
    Boolean,
    SByte,
    Byte,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
    Float,
    Double,
    String,
}

fn builtin_of_data_type(id: &NodeId) -> Option<Builtin> {
    if id.namespace != 0 {
        return None;
    }
    Some(match id.as_u32()? {
        1 => Builtin::Boolean,
        2 => Builtin::SByte,
        3 => Builtin::Byte,
        4 => Builtin::Int16,
        5 => Builtin::UInt16,
        6 => Builtin::Int32,
        7 => Builtin::UInt32,
        8 => Builtin::Int64,
        9 => Builtin::UInt64,
        10 => Builtin::Float,
        11 => Builtin::Double,
        12 => Builtin::String,
        _ => return None,
    })
}

fn builtin_of_xs(xs: XsType) -> Option<Builtin> {
    Some(match xs {
        XsType::Boolean => Builtin::Boolean,
        XsType::Byte => Builtin::SByte,
        XsType::UnsignedByte => Builtin::Byte,
        XsType::Short => Builtin::Int16,
        XsType::UnsignedShort => Builtin::UInt16,
        XsType::Int => Builtin::Int32,
        XsType::UnsignedInt => Builtin::UInt32,
        XsType::Long | XsType::Integer => Builtin::Int64,
        XsType::UnsignedLong => Builtin::UInt64,
        XsType::Float => Builtin::Float,
        XsType::Double | XsType::Decimal => Builtin::Double,
        XsType::String | XsType::AnyUri => Builtin::String,
        XsType::DateTime | XsType::Base64Binary => return None,
    })
}

/// Converts a value to the OPC UA variant of the node's DataType (or, for non-built-in
/// DataTypes, of the element's xs type). Out-of-range and lossy conversions are errors.
fn to_variant(v: &TypedValue, data_type: Option<&NodeId>, xs: XsType) -> Result<Variant, String> {
    let target = data_type
        .and_then(builtin_of_data_type)
        .or_else(|| builtin_of_xs(xs))
        .ok_or_else(|| format!("writing {} values is not supported", xs.as_str()))?;
    let int = || -> Result<i128, String> {
        match v {
            TypedValue::Int(i) => Ok(*i as i128),
            TypedValue::UInt(u) => Ok(*u as i128),
            TypedValue::Float(f) if f.fract() == 0.0 && f.is_finite() => Ok(*f as i128),
            other => Err(format!(
                "{} is not an integer, which the node's DataType {target:?} needs",
                xs.lexical(other)
            )),
        }
    };
    let float = || -> Result<f64, String> {
        match v {
            TypedValue::Float(f) => Ok(*f),
            TypedValue::Int(i) => Ok(*i as f64),
            TypedValue::UInt(u) => Ok(*u as f64),
            other => Err(format!(
                "{} is not a number, which the node's DataType {target:?} needs",
                xs.lexical(other)
            )),
        }
    };
    macro_rules! int_as {
        ($t:ty, $variant:ident) => {{
            let i = int()?;
            <$t>::try_from(i)
                .map(Variant::$variant)
                .map_err(|_| format!("{i} does not fit the node's {} type", stringify!($variant)))
        }};
    }
    match target {
        Builtin::Boolean => match v {
            TypedValue::Bool(b) => Ok(Variant::Boolean(*b)),
            other => Err(format!(
                "{} is not a boolean, which the node's DataType needs",
                xs.lexical(other)
            )),
        },
        Builtin::SByte => int_as!(i8, SByte),
        Builtin::Byte => int_as!(u8, Byte),
        Builtin::Int16 => int_as!(i16, Int16),
        Builtin::UInt16 => int_as!(u16, UInt16),
        Builtin::Int32 => int_as!(i32, Int32),
        Builtin::UInt32 => int_as!(u32, UInt32),
        Builtin::Int64 => int_as!(i64, Int64),
        Builtin::UInt64 => int_as!(u64, UInt64),
        Builtin::Float => {
            let f = float()?;
            if f.is_finite() && f.abs() > f32::MAX as f64 {
                return Err(format!("{f} does not fit the node's Float type"));
            }
            Ok(Variant::Float(f as f32))
        }
        Builtin::Double => Ok(Variant::Double(float()?)),
        Builtin::String => match v {
            TypedValue::Text(s) => Ok(Variant::String(s.as_str().into())),
            other => Err(format!(
                "{} is not text, which the node's DataType String needs",
                xs.lexical(other)
            )),
        },
    }
}

/// Writes for sinks that accept commands (Sparkplug DCMD): the same checks as the API's
/// write-back (the rule must be `writable = true`, the value must fit) and the same audit line,
/// with `user` naming the channel and `via` the command.
impl crate::sinks::ElementWriter for WriteBack {
    fn write<'a>(
        &'a self,
        who: &'a str,
        submodel_id: &'a str,
        path: &'a str,
        value: Value,
    ) -> crate::sinks::WriteFuture<'a> {
        Box::pin(async move {
            let fields = json!({
                "user": who,
                "role": null,
                "via": "sparkplug",
                "submodel": submodel_id,
                "path": path,
                "new": value,
            });
            let (status, result) = self.write_audited(submodel_id, path, &value, fields).await;
            if status == StatusCode::NO_CONTENT {
                Ok(())
            } else {
                Err(result)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_follow_the_node_data_type_and_refuse_lossy_conversions() {
        let double = NodeId::new(0, 11u32);
        let int32 = NodeId::new(0, 6u32);
        let v = json_to_typed(&json!(12000), XsType::Double).unwrap();
        assert_eq!(
            to_variant(&v, Some(&double), XsType::Double),
            Ok(Variant::Double(12000.0))
        );
        let v = json_to_typed(&json!("42"), XsType::Int).unwrap();
        assert_eq!(
            to_variant(&v, Some(&int32), XsType::Int),
            Ok(Variant::Int32(42))
        );
        let big = json_to_typed(&json!(5_000_000_000i64), XsType::Long).unwrap();
        assert!(to_variant(&big, Some(&int32), XsType::Long).is_err());
        assert!(json_to_typed(&json!("fast"), XsType::Double).is_err());
        assert!(json_to_typed(&json!({"a": 1}), XsType::Double).is_err());
        let b = json_to_typed(&json!(true), XsType::Boolean).unwrap();
        assert_eq!(
            to_variant(&b, None, XsType::Boolean),
            Ok(Variant::Boolean(true))
        );
        assert!(to_variant(&b, Some(&double), XsType::Boolean).is_err());
    }
}
