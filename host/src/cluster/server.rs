//! The member's listeners, built on axum and tower-http, each bounded the same way. The
//! handlers live by role: Raft RPCs in `rpc_server`, membership in `admin_server`, `/status`
//! and `/metrics` in `status_server`; this file accepts connections and routes them.
//!
//! - the **peer listener** (`[cluster] peers`, this member's address): `/raft/append`,
//!   `/raft/vote`, `/raft/snapshot`, `/raft/ping` for members, `/admin/members` for an admin.
//!   With TLS a connection needs a certificate from the cluster's CA, and a Raft RPC is taken
//!   only from the member its vote names; plain (`insecure`) requests need the secret;
//! - the **status listener** (`[cluster] status-address`, loopback by default): `/status` and
//!   `/metrics`, optionally behind a bearer token. Neither reveals a secret.
//!
//! Every listener: a TLS handshake deadline, a header-read deadline (which also closes idle
//! keep-alive connections), a cap on open connections (a connection over it is closed at
//! once, so the accept queue never backs up behind a flood and peers keep their pooled
//! connections), accept errors backed off, a body limit per route (413) and a deadline per
//! request (408).

use super::http::{deadline, error};
use super::tls::Identity;
use super::{admin_server, handover_server, plugin_server, rpc_server};
use axum::extract::{DefaultBodyLimit, Extension};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_http::limit::RequestBodyLimitLayer;

pub use super::http::Limits;
pub use super::peer::Peer;
pub use super::status_server::{health_router, metrics_text, status_router, Readiness, Status};

/// Serves `router` (whose routes carry their deadlines) on `listener` (TLS when `acceptor` is set) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.connections));
    let mut pause = Duration::from_millis(5);
    let mut refused = 0u64;
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    pause = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    tracing::warn!(pause_ms = pause.as_millis() as u64, "accept: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    limit = limits.connections,
                    refused,
                    "connection limit reached: closing new connections"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, acceptor) = (router.clone(), acceptor.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // A stopped member's open connections close with it: served on, a peer's pooled
            // keep-alive connection kept reaching this member's stopped Raft ("raft stopped")
            // after a new member started on the same address in the same process.
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {}
                _ = accepted(stream, acceptor, router, limits) => {}
            }
        });
    }
}

/// Serves one accepted connection: the TLS handshake (when `acceptor` is set), then HTTP/1.1.
async fn accepted(
    stream: tokio::net::TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: Limits,
) {
    match acceptor {
        None => connection(stream, Identity::Unverified, router, limits).await,
        Some(acceptor) => {
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("tls handshake refused: {e}");
                    return;
                }
                Err(_) => return,
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(Identity::of);
            let Some(identity) = identity else {
                tracing::warn!(
                    "a certificate of the cluster's CA names neither a member nor an admin: closed"
                );
                return;
            };
            connection(tls, identity, router, limits).await
        }
    }
}

async fn connection<S>(stream: S, identity: Identity, router: Router, limits: Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router.layer(Extension(identity)));
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The peer listener's routes.
pub fn peer_router(state: Peer, limits: Limits) -> Router {
    // tower-http's limit answers 413 from `content-length` before reading a byte (and stops a
    // chunked body at the limit); axum's own extractor limit is turned off in its favour.
    let limit = |bytes: usize| {
        tower::ServiceBuilder::new()
            .layer(DefaultBodyLimit::disable())
            .layer(RequestBodyLimitLayer::new(bytes))
    };
    let (small, large) = (limit(limits.small_body), limit(limits.raft_body));
    Router::new()
        .route(
            "/raft/append",
            post(rpc_server::append).layer(large.clone()),
        )
        .route("/raft/snapshot", post(rpc_server::snapshot).layer(large))
        .route("/raft/vote", post(rpc_server::vote).layer(small.clone()))
        .route("/raft/ping", post(rpc_server::ping).layer(small.clone()))
        .route(
            "/raft/campaign",
            post(handover_server::campaign).layer(small.clone()),
        )
        .route(
            "/raft/handback",
            post(handover_server::handback).layer(small.clone()),
        )
        .route(
            "/admin/step-down",
            post(handover_server::step_down).layer(small.clone()),
        )
        .route(
            "/admin/members",
            post(admin_server::join).layer(small.clone()),
        )
        .route(
            "/admin/members/{id}",
            delete(admin_server::leave).layer(small.clone()),
        )
        .layer(deadline(limits.request))
        .merge(
            // compiling a plugin build takes longer than any other request
            Router::new()
                .route(
                    "/raft/plugin/stage",
                    post(plugin_server::stage).layer(small.clone()),
                )
                .route(
                    "/admin/plugin/reload",
                    post(plugin_server::reload).layer(small.clone()),
                )
                .layer(deadline(limits.compile)),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}
