//! Query parameters of the Part 2 read operations, parsed strictly: a malformed value is a 400
//! naming the parameter (Part 2 requires it, and a silently ignored typo hides mistakes).

use base64::Engine;
use serde_json::Value;

use super::error::ApiError;
use crate::aas::view::{Extent, Level};

/// Decodes a base64url identifier (padding tolerated, as some clients send it).
pub fn decode_id(encoded: &str) -> Result<String, ApiError> {
    let trimmed = encoded.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .map_err(|_| {
            ApiError::bad_request(format!("{encoded:?} is not a base64url-encoded identifier"))
        })?;
    String::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request(format!("{encoded:?} does not decode to UTF-8 text")))
}

pub use crate::aas::encode_id;

/// One `assetIds` filter entry: a SpecificAssetId, or `globalAssetId` when `name` says so.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetIdFilter {
    /// `globalAssetId` or the name of a specific asset id.
    pub name: String,
    /// The id to match.
    pub value: String,
}

/// All query parameters the read operations understand.
#[derive(Debug, Default)]
pub struct Params {
    /// Page size (`limit`), at least 1.
    pub limit: Option<usize>,
    /// Position to continue at (decoded `cursor`).
    pub cursor: usize,
    /// `level`.
    pub level: Level,
    /// `extent`.
    pub extent: Extent,
    /// `idShort` filter.
    pub id_short: Option<String>,
    /// `semanticId` filter (decoded).
    pub semantic_id: Option<String>,
    /// `assetIds` filter (decoded); a shell must match every entry.
    pub asset_ids: Vec<AssetIdFilter>,
    /// `aasIds` of /serialization (decoded).
    pub aas_ids: Vec<String>,
    /// `submodelIds` of /serialization (decoded).
    pub submodel_ids: Vec<String>,
    /// `includeConceptDescriptions` of /serialization (Part 2 default: true).
    pub include_concept_descriptions: Option<bool>,
}

impl Params {
    /// Parses the decoded `(name, value)` pairs of a query string. Unknown names are ignored
    /// (Part 2 clients may send parameters of operations this server does not offer).
    pub fn parse(pairs: &[(String, String)]) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for (name, value) in pairs {
            let bad = |what: &str| ApiError::bad_request(format!("{name}={value:?}: {what}"));
            let decoded = || decode_id(value).map_err(|_| bad("is not base64url-encoded UTF-8"));
            match name.as_str() {
                "limit" => {
                    let n: usize = value
                        .parse()
                        .map_err(|_| bad("must be a positive integer"))?;
                    if n == 0 {
                        return Err(bad("must be at least 1"));
                    }
                    p.limit = Some(n);
                }
                "cursor" => {
                    p.cursor = decode_id(value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("is not a cursor this server issued"))?;
                }
                "level" => {
                    p.level = match value.as_str() {
                        "deep" => Level::Deep,
                        "core" => Level::Core,
                        _ => return Err(bad("must be deep or core")),
                    }
                }
                "extent" => {
                    p.extent = match value.as_str() {
                        "withBlobValue" => Extent::WithBlobValue,
                        "withoutBlobValue" => Extent::WithoutBlobValue,
                        _ => return Err(bad("must be withBlobValue or withoutBlobValue")),
                    }
                }
                "idShort" => p.id_short = Some(value.clone()),
                "semanticId" => p.semantic_id = Some(decoded()?),
                "assetIds" => {
                    let json: Value = serde_json::from_str(&decoded()?).map_err(|_| {
                        bad("must be a base64url-encoded JSON SpecificAssetId {\"name\", \"value\"}")
                    })?;
                    let field = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_string);
                    match (field("name"), field("value")) {
                        (Some(name), Some(value)) => {
                            p.asset_ids.push(AssetIdFilter { name, value })
                        }
                        _ => return Err(bad("the SpecificAssetId needs \"name\" and \"value\"")),
                    }
                }
                "aasIds" => p.aas_ids.push(decoded()?),
                "submodelIds" => p.submodel_ids.push(decoded()?),
                "includeConceptDescriptions" => {
                    // Case-insensitive: Python clients (aas-test-engines among them) send
                    // `True`; anything else than a boolean is still rejected.
                    p.include_concept_descriptions = match value.to_ascii_lowercase().as_str() {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => return Err(bad("must be true or false")),
                    }
                }
                _ => {}
            }
        }
        Ok(p)
    }

    /// One page of `items` and the Part 2 paged result around it. The cursor is the
    /// base64url-encoded position of the next item; it is present only when more remain.
    pub fn page(&self, items: Vec<Value>) -> Value {
        let total = items.len();
        let limit = self.limit.unwrap_or(usize::MAX);
        let page: Vec<Value> = items.into_iter().skip(self.cursor).take(limit).collect();
        let next = self.cursor.saturating_add(page.len());
        let paging = if next < total {
            serde_json::json!({"cursor": encode_id(&next.to_string())})
        } else {
            serde_json::json!({})
        };
        serde_json::json!({"paging_metadata": paging, "result": page})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<Params, ApiError> {
        let owned: Vec<_> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Params::parse(&owned)
    }

    #[test]
    fn malformed_values_are_rejected_by_name() {
        for bad in [
            ("limit", "-1"),
            ("limit", "0"),
            ("level", "#####"),
            ("extent", "x"),
            ("cursor", "!!"),
            ("assetIds", "invalid-base64url====="),
            ("includeConceptDescriptions", "invalid-bool"),
        ] {
            let e = q(&[bad]).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.text.starts_with(bad.0), "{}", e.text);
        }
    }

    #[test]
    fn pages_carry_a_cursor_until_the_end() {
        let p = q(&[("limit", "2")]).unwrap();
        let page = p.page((0..3).map(Value::from).collect());
        assert_eq!(page["result"], serde_json::json!([0, 1]));
        let cursor = page["paging_metadata"]["cursor"]
            .as_str()
            .unwrap()
            .to_string();
        let p = q(&[("limit", "2"), ("cursor", &cursor)]).unwrap();
        let page = p.page((0..3).map(Value::from).collect());
        assert_eq!(page["result"], serde_json::json!([2]));
        assert!(page["paging_metadata"].get("cursor").is_none());
    }

    #[test]
    fn asset_ids_are_base64url_json() {
        let enc = encode_id(r#"{"name": "globalAssetId", "value": "urn:a"}"#);
        let p = q(&[("assetIds", &enc)]).unwrap();
        assert_eq!(
            p.asset_ids,
            vec![AssetIdFilter {
                name: "globalAssetId".into(),
                value: "urn:a".into()
            }]
        );
    }
}
