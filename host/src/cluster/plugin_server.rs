//! A new plugin build across the cluster: the operator asks the leader to reload the plugin
//! (`POST /admin/plugin/reload`, admin credentials); the leader asks every other member to
//! stage its copy of the file (`POST /raft/plugin/stage`, taken only from the member this one
//! follows) and switches only once each has staged the same build.

use super::inbox::ReloadRequest;
use super::rpc_server::Peer;
use super::server::{answer, error, parse};
use super::tls::Identity;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(serde::Deserialize)]
struct Reload {
    plugin: String,
}

/// Compiling a large component on a busy machine takes a while.
const STAGE_WAIT: Duration = Duration::from_secs(300);

/// `POST /admin/plugin/reload`: stage the plugin's file on every member, then switch.
pub(super) async fn reload(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        peer.admin(connection, &headers)?;
        peer.voters()?;
        let asked: Reload = parse(&body)?;
        let (tx, rx) = oneshot::channel();
        peer.inbox
            .reload
            .send(ReloadRequest {
                plugin: Some(asked.plugin),
                reply: tx,
            })
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "this member is stopping"))?;
        match tokio::time::timeout(STAGE_WAIT, rx).await {
            Ok(Ok(Ok(swap))) => Ok(answer(swap)),
            Ok(Ok(Err(why))) => Err(error(StatusCode::CONFLICT, why)),
            Ok(Err(_)) => Err(error(
                StatusCode::CONFLICT,
                "this member is not the active host (taking over, or stopping): ask again",
            )),
            Err(_) => Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                "the new build was not ready within 300 s",
            )),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /raft/plugin/stage`: load this member's copy of the plugin's file; answers its sha256.
pub(super) async fn stage(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let who = peer.member(connection, &headers)?;
        let leader = peer.raft.metrics().borrow().current_leader;
        if !leader.is_some_and(|l| who.speaks_for(l)) {
            return Err(error(
                StatusCode::FORBIDDEN,
                "only the leader this member follows may ask it to stage a plugin build",
            ));
        }
        let (tx, rx) = oneshot::channel();
        peer.inbox
            .stage
            .send(tx)
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "this member is stopping"))?;
        match tokio::time::timeout(STAGE_WAIT, rx).await {
            Ok(Ok(Ok(sha256))) => Ok(answer(serde_json::json!({ "sha256": sha256 }))),
            Ok(Ok(Err(why))) => Err(error(StatusCode::CONFLICT, why)),
            Ok(Err(_)) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this member is stopping",
            )),
            Err(_) => Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                "not staged within 300 s",
            )),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
