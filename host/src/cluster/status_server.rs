//! The status listener (`[cluster] status-address`, loopback by default): the dashboard
//! (`/`, one embedded page), `/status` and `/metrics`, optionally behind a bearer token compared in constant time, and `/healthz` and
//! `/readyz` for probes, open (they say no more than whether the host can do its job). A
//! single host serves the two probes alone (`[invoker] status-address`).

use super::caller::bearer;
use super::http::{answer, deadline, error, Answer, Limits, Refusal};
use super::transport::same;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tower_http::limit::RequestBodyLimitLayer;

/// What the status listener serves.
pub type Status = Arc<dyn Fn() -> super::status::MemberStatus + Send + Sync>;

/// Whether the host can do its job now, and in a few words why (not).
pub type Readiness = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// `/healthz`: the process answers. `/readyz`: 200 and why when `ready` says so, else 503
/// and why not.
pub fn health_router(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(why) => (StatusCode::OK, format!("ready: {why}\n")),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(1024))
        .layer(deadline(Limits::default().request))
}

#[derive(Clone)]
struct StatusState {
    status: Status,
    token: Option<Arc<str>>,
}

impl StatusState {
    fn allowed(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        match bearer(headers) {
            Some(p) if same(p.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(error(
                StatusCode::UNAUTHORIZED,
                "the status token is required (authorization: Bearer …)",
            )),
        }
    }
}

/// The status listener's routes; `token`, when set, is required as a bearer token. `/readyz`
/// answers `ready` (default: the status's [`MemberStatus::readiness`]).
///
/// [`MemberStatus::readiness`]: super::status::MemberStatus::readiness
pub fn status_router(status: Status, token: Option<Arc<str>>, ready: Option<Readiness>) -> Router {
    let of = status.clone();
    let ready: Readiness = ready.unwrap_or_else(|| Arc::new(move || of().readiness()));
    Router::new()
        .route("/", get(dashboard))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(1024))
        .layer(deadline(Limits::default().request))
        .with_state(StatusState { status, token })
        .merge(health_router(ready))
}

/// The dashboard: one page, no build step, nothing fetched from elsewhere; it reads
/// `/status` (with the token from the page's `#token=`) and `/readyz` every second.
async fn dashboard() -> Response {
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            (
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}

async fn status_json(State(s): State<StatusState>, headers: HeaderMap) -> Answer {
    s.allowed(&headers)?;
    answer((s.status)())
}

async fn metrics(State(s): State<StatusState>, headers: HeaderMap) -> Answer {
    s.allowed(&headers)?;
    let status = (s.status)();
    // a single host (no members) has no Raft or role gauges
    let gauges = match status.members.is_empty() {
        true => String::new(),
        false => status.prometheus(),
    };
    Ok(metrics_text(gauges, status.host.pool.as_ref()))
}

/// `/metrics`: `gauges` (a cluster member's status), then the process's registry
/// ([`crate::metrics`]) with the pool's gauges from `pool`.
pub fn metrics_text(gauges: String, pool: Option<&crate::pool::PoolStats>) -> Response {
    let pool = pool.map(|p| crate::metrics::PoolCounts {
        prewarm: p.prewarm,
        warm: p.warm_idle,
        busy: p.busy,
        used_mb: p.used_mb,
    });
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        gauges + &crate::metrics::global().encode(pool),
    )
        .into_response()
}
