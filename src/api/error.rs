//! Part 2 error responses: an HTTP status plus a `Result` body with one message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A Part 2 error: status plus a `Result` body
/// (`{"messages": [{"messageType": "Error", "text", "code", "timestamp"}]}`).
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status (400 malformed request, 404 unknown object, 405 a write the API does not offer).
    pub status: StatusCode,
    /// What went wrong, naming the offending parameter or object.
    pub text: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, text: impl Into<String>) -> Self {
        ApiError {
            status,
            text: text.into(),
        }
    }
    /// 404: the shell, submodel or element does not exist.
    pub fn not_found(text: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, text)
    }
    /// 400: the request itself is malformed (bad base64url, bad path, bad parameter).
    pub fn bad_request(text: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, text)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "messages": [{
                "messageType": "Error",
                "text": self.text,
                "code": self.status.as_u16().to_string(),
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            }]
        });
        (self.status, Json(body)).into_response()
    }
}
