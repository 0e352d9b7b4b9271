//! The OPC UA side of the mapping's type check: which `xs:*` element types can hold every
//! value of a node's DataType. Checked once per node at connect, from the DataType attribute;
//! what cannot be judged here (custom DataTypes) is still checked value by value on arrival.

use opcua::types::{DataTypeId, Identifier, NodeId};

use crate::core::XsType;
use crate::sources::RuleTarget;

/// What kind of values an OPC UA built-in DataType carries, as far as the mapping cares.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NodeValues {
    Boolean,
    /// Signed integers within this range.
    Signed(i128, i128),
    /// Unsigned integers up to this bound.
    Unsigned(i128),
    Float,
    Text,
    DateTime,
    Bytes,
}

fn node_values(dt: DataTypeId) -> Option<NodeValues> {
    use DataTypeId as D;
    use NodeValues::*;
    Some(match dt {
        D::Boolean => Boolean,
        D::SByte => Signed(i8::MIN as i128, i8::MAX as i128),
        D::Int16 => Signed(i16::MIN as i128, i16::MAX as i128),
        // Enumerations travel as Int32.
        D::Int32 | D::Enumeration => Signed(i32::MIN as i128, i32::MAX as i128),
        D::Int64 | D::Integer => Signed(i64::MIN as i128, i64::MAX as i128),
        D::Byte => Unsigned(u8::MAX as i128),
        D::UInt16 => Unsigned(u16::MAX as i128),
        D::UInt32 | D::StatusCode => Unsigned(u32::MAX as i128),
        D::UInt64 | D::UInteger => Unsigned(u64::MAX as i128),
        D::Float | D::Double | D::Number | D::Duration => Float,
        D::String
        | D::LocalizedText
        | D::QualifiedName
        | D::NodeId
        | D::ExpandedNodeId
        | D::Guid
        | D::XmlElement => Text,
        D::DateTime | D::UtcTime => DateTime,
        D::ByteString => Bytes,
        _ => return None,
    })
}

/// Checks that every value a node of OPC UA DataType `data_type` can send fits the element
/// `target` describes, e.g. `Double node mapped to xs:boolean` is an error, `UInt16` into
/// `xs:int` is fine, `Int64` into `xs:int` is not (values beyond ±2³¹ would be rejected at run
/// time). The source calls it once it has read the node's DataType attribute, and reports an
/// error as a mapping error of that rule.
///
/// DataTypes outside namespace 0 (structures, custom enumerations) and abstract ones the
/// gateway does not know pass: their values are still checked on arrival, value by value.
pub fn check_data_type(target: &RuleTarget, data_type: &NodeId) -> Result<(), String> {
    let known = match (&data_type.identifier, data_type.namespace) {
        (Identifier::Numeric(n), 0) => DataTypeId::try_from(*n).ok(),
        _ => None,
    };
    let Some(dt) = known else { return Ok(()) };
    let Some(values) = node_values(dt) else {
        return Ok(());
    };
    let xs = target.value_type;
    let fail = |why: &str| {
        Err(format!(
            "{dt:?} node {} mapped to {xs} ({}){why}",
            target.node, target.element
        ))
    };
    if target.linear
        && !matches!(
            values,
            NodeValues::Float | NodeValues::Signed(..) | NodeValues::Unsigned(_)
        )
    {
        return fail(": scale/offset need a numeric node");
    }
    if target.linear {
        return Ok(()); // numeric into xs:float/double/decimal, checked by Router::build
    }
    use NodeValues as V;
    let ok = match (values, xs) {
        // xs:string takes the text form of anything.
        (_, XsType::String) => true,
        (V::Boolean, XsType::Boolean) => true,
        (V::Boolean, t) => t.int_range().is_some(),
        (V::Signed(lo, hi), t) if t.int_range().is_some() => {
            let (tlo, thi) = t.int_range().expect("checked");
            tlo <= lo && hi <= thi
        }
        (V::Unsigned(hi), t) if t.int_range().is_some() => {
            let (_, thi) = t.int_range().expect("checked");
            hi <= thi
        }
        (V::Signed(..) | V::Unsigned(_), XsType::Float | XsType::Double | XsType::Decimal) => true,
        (V::Float, XsType::Float | XsType::Double | XsType::Decimal) => true,
        (V::Text, XsType::AnyUri) => dt == DataTypeId::String,
        (V::DateTime, XsType::DateTime) => true,
        (V::Bytes, XsType::Base64Binary) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else if let (V::Signed(..) | V::Unsigned(_), Some(_)) = (values, xs.int_range()) {
        fail(": the element's range is smaller than the node's")
    } else {
        fail("")
    }
}
