//! What every listener of a member and every handler shares: the limits on a client, a refusal (its status, and the message
//! the client reads as `{"error": …}`), a JSON answer, a JSON body's parse and a route's
//! deadline. A handler returns [`Answer`]: `?` on any step that can refuse.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::time::Duration;

/// A handler's outcome: the answer, or why the request was refused.
pub type Answer = Result<Response, Refusal>;

/// A refused request: its status and what the client is told.
#[derive(Debug)]
pub struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 });
        (self.0, axum::Json(body)).into_response()
    }
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

/// `value` as the JSON body of a 200.
pub fn answer<T: serde::Serialize>(value: T) -> Answer {
    Ok(axum::Json(value).into_response())
}

pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Answers 408 to a request not answered within `limit`.
pub fn deadline(limit: Duration) -> tower_http::timeout::TimeoutLayer {
    tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limit)
}

/// How much any one client may take of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To finish a TLS handshake.
    pub handshake: Duration,
    /// To send a request's headers; also how long a keep-alive connection may sit idle.
    pub header_read: Duration,
    /// Open connections; one more is closed at once.
    pub connections: usize,
    /// An append-entries or snapshot chunk body (openraft sends at most 3 MiB chunks).
    pub raft_body: usize,
    /// Any other body (vote, ping, admin).
    pub small_body: usize,
    /// To answer a request.
    pub request: Duration,
    /// To answer a request that compiles a plugin build (`/admin/plugin/reload`,
    /// `/raft/plugin/stage`).
    pub compile: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Duration::from_secs(2),
            header_read: Duration::from_secs(10),
            connections: 512,
            raft_body: 16 << 20,
            small_body: 64 << 10,
            request: Duration::from_secs(10),
            compile: Duration::from_secs(310),
        }
    }
}
