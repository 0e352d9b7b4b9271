//! The time-range extension of the API (documented in the README, not part of IDTA-01002):
//!
//! `GET /api/v3.0/submodels/{id}/submodel-elements/Segments.InternalSegment.Records?from=<RFC 3339>&to=<RFC 3339>`
//!
//! answers with a Part 2 paged result (`paging_metadata` + `result`) of the Record SMCs whose
//! Time lies in `[from, to]` (either bound may be left out), oldest first, at most
//! `limit` records and at most `history.max_values_per_response` values per page; `cursor`
//! continues.

use serde_json::{json, Value};

use super::params::Params;
use super::routes::{Modifier, Route, SubmodelOp};
use super::{encode_id, ApiError};
use crate::history::History;

/// The idShortPath the extension applies to.
pub const RECORDS_PATH: &str = "Segments.InternalSegment.Records";

/// Serves a `from`/`to` request; `Ok(None)` when the query has neither (the normal API answers).
pub fn time_range(
    history: Option<&History>,
    route: &Route,
    p: &Params,
    pairs: &[(String, String)],
) -> Result<Option<Value>, ApiError> {
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let (from, to) = (get("from"), get("to"));
    if from.is_none() && to.is_none() {
        return Ok(None);
    }
    let usage = || {
        ApiError::bad_request(format!(
            "from/to select records by time: GET /submodels/{{id}}/submodel-elements/{RECORDS_PATH}?from=<RFC 3339>&to=<RFC 3339> of a Time Series submodel"
        ))
    };
    let Route::Submodel(sm_id, SubmodelOp::Element(path, Modifier::Normal)) = route else {
        return Err(usage());
    };
    if path != RECORDS_PATH {
        return Err(usage());
    }
    let parse = |name: &str, v: Option<&str>, default: i64| -> Result<i64, ApiError> {
        v.map_or(Ok(default), |s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{name}={s:?}: not an RFC 3339 timestamp like 2026-01-01T12:00:00Z"
                    ))
                })
        })
    };
    let from = parse("from", from, i64::MIN)?;
    let to = parse("to", to, i64::MAX)?;
    let Some((records, more)) =
        history.and_then(|h| h.records_page(sm_id, from, to, p.cursor, p.limit))
    else {
        return Err(usage());
    };
    let next = p.cursor + records.len();
    let paging = if more {
        json!({"cursor": encode_id(&next.to_string())})
    } else {
        json!({})
    };
    Ok(Some(json!({"paging_metadata": paging, "result": records})))
}
