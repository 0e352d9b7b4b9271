//! The Part 2 read routes, parsed from the path segments after `/api/v3.0/`.
//!
//! Parsing is separate from serving so the whole route table is visible (and tested) in one
//! place; axum only hands over the segments. The superpath
//! `/shells/{aasId}/submodels/{smId}/...` reaches the same submodel operations as
//! `/submodels/{smId}/...`, restricted to submodels the shell references.

use super::error::ApiError;
use super::params::decode_id;

/// A content modifier (`$metadata`, `$value`, `$reference`, `$path`) or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    /// The normal serialisation.
    Normal,
    /// `$metadata`: without values.
    Metadata,
    /// `$value`: ValueOnly.
    Value,
    /// `$reference`: a ModelReference to the object.
    Reference,
    /// `$path`: idShortPaths.
    Path,
}

impl Modifier {
    fn parse(segment: &str) -> Option<Modifier> {
        Some(match segment {
            "$metadata" => Modifier::Metadata,
            "$value" => Modifier::Value,
            "$reference" => Modifier::Reference,
            "$path" => Modifier::Path,
            _ => return None,
        })
    }
}

/// What a request asks for within one submodel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmodelOp {
    /// `/submodels/{id}[/$modifier]`.
    Submodel(Modifier),
    /// `/submodels/{id}/submodel-elements[/$modifier]`.
    Elements(Modifier),
    /// `/submodels/{id}/submodel-elements/{idShortPath}[/$modifier]`.
    Element(String, Modifier),
    /// `/submodels/{id}/submodel-elements/{idShortPath}/attachment`.
    Attachment(String),
}

/// A parsed read route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/description`.
    Description,
    /// `/serialization`.
    Serialization,
    /// `/shells[/$reference]`.
    Shells(Modifier),
    /// `/shells/{id}[/$reference]`.
    Shell(String, Modifier),
    /// `/shells/{id}/asset-information`.
    AssetInformation(String),
    /// `/shells/{id}/asset-information/thumbnail`.
    Thumbnail(String),
    /// `/shells/{id}/submodel-refs`.
    SubmodelRefs(String),
    /// `/shells/{aasId}/submodels/{smId}/...`: a submodel operation through its shell.
    ShellSubmodel(String, String, SubmodelOp),
    /// `/submodels[/$modifier]`.
    Submodels(Modifier),
    /// `/submodels/{id}/...`.
    Submodel(String, SubmodelOp),
}

fn unknown(path: &str) -> ApiError {
    ApiError::not_found(format!("no such API route: /{path}"))
}

/// Parses the path after the API prefix (already percent-decoded, no leading `/`).
pub fn parse(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let m = |s: &str| Modifier::parse(s).ok_or_else(|| unknown(path));
    Ok(match segs.as_slice() {
        ["description"] => Route::Description,
        ["serialization"] => Route::Serialization,
        ["shells"] => Route::Shells(Modifier::Normal),
        ["shells", "$reference"] => Route::Shells(Modifier::Reference),
        ["shells", id] => Route::Shell(decode_id(id)?, Modifier::Normal),
        ["shells", id, "$reference"] => Route::Shell(decode_id(id)?, Modifier::Reference),
        ["shells", id, "asset-information"] => Route::AssetInformation(decode_id(id)?),
        ["shells", id, "asset-information", "thumbnail"] => Route::Thumbnail(decode_id(id)?),
        ["shells", id, "submodel-refs"] => Route::SubmodelRefs(decode_id(id)?),
        ["shells", id, "submodels", sm, rest @ ..] => {
            let aas = decode_id(id)?;
            Route::ShellSubmodel(aas, decode_id(sm)?, submodel_op(rest, path)?)
        }
        ["submodels"] => Route::Submodels(Modifier::Normal),
        ["submodels", one] if one.starts_with('$') => Route::Submodels(m(one)?),
        ["submodels", id, rest @ ..] => Route::Submodel(decode_id(id)?, submodel_op(rest, path)?),
        _ => return Err(unknown(path)),
    })
}

fn submodel_op(rest: &[&str], path: &str) -> Result<SubmodelOp, ApiError> {
    let m = |s: &str| Modifier::parse(s).ok_or_else(|| unknown(path));
    Ok(match rest {
        [] => SubmodelOp::Submodel(Modifier::Normal),
        [one] if one.starts_with('$') => SubmodelOp::Submodel(m(one)?),
        ["submodel-elements"] => SubmodelOp::Elements(Modifier::Normal),
        ["submodel-elements", one] if one.starts_with('$') => SubmodelOp::Elements(m(one)?),
        ["submodel-elements", p] => SubmodelOp::Element(p.to_string(), Modifier::Normal),
        ["submodel-elements", p, "attachment"] => SubmodelOp::Attachment(p.to_string()),
        ["submodel-elements", p, one] if one.starts_with('$') => {
            SubmodelOp::Element(p.to_string(), m(one)?)
        }
        ["submodel-elements", _, ..] => {
            return Err(ApiError::bad_request(format!(
                "/{path}: idShortPaths are dotted (A.B[2].C), not separated by '/'"
            )))
        }
        _ => return Err(unknown(path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::params::encode_id;

    #[test]
    fn routes_parse() {
        let sm = encode_id("urn:sm");
        let aas = encode_id("urn:aas");
        assert_eq!(
            parse("submodels/$value").unwrap(),
            Route::Submodels(Modifier::Value)
        );
        assert_eq!(
            parse(&format!("submodels/{sm}/submodel-elements/A.B[1]/$value")).unwrap(),
            Route::Submodel(
                "urn:sm".into(),
                SubmodelOp::Element("A.B[1]".into(), Modifier::Value)
            )
        );
        assert_eq!(
            parse(&format!("shells/{aas}/submodels/{sm}/$metadata")).unwrap(),
            Route::ShellSubmodel(
                "urn:aas".into(),
                "urn:sm".into(),
                SubmodelOp::Submodel(Modifier::Metadata)
            )
        );
        assert_eq!(
            parse(&format!("submodels/{sm}/submodel-elements/$path")).unwrap(),
            Route::Submodel("urn:sm".into(), SubmodelOp::Elements(Modifier::Path))
        );
        assert_eq!(
            parse("shells/$reference").unwrap(),
            Route::Shells(Modifier::Reference)
        );
    }

    #[test]
    fn malformed_paths_are_400_unknown_routes_404() {
        assert_eq!(
            parse("submodels/invalid-base64url=====")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(parse("submodels/$nope").unwrap_err().status, 404);
        assert_eq!(parse("nothing").unwrap_err().status, 404);
        let sm = encode_id("urn:sm");
        assert_eq!(
            parse(&format!("submodels/{sm}/submodel-elements/A/B"))
                .unwrap_err()
                .status,
            400
        );
    }
}
