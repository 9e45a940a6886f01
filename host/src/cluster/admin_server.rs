//! Membership changes an admin asks the leader for (`POST /admin/members`,
//! `DELETE /admin/members/{id}`): an admin certificate, or the admin token in constant time.

use super::rpc_server::Peer;
use super::server::{answer, error, Refusal};
use super::tls::Identity;
use super::transport::{same, Transport};
use super::types::NodeId;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use openraft::BasicNode;

impl Peer {
    /// An admin certificate, or the admin token (compared in constant time).
    pub(super) fn admin(&self, connection: Identity, headers: &HeaderMap) -> Result<(), Refusal> {
        if connection == Identity::Admin {
            return Ok(());
        }
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match (&self.admin_token, presented) {
            (Some(token), Some(presented)) if same(presented.as_bytes(), token.as_bytes()) => {
                Ok(())
            }
            (None, _) if !matches!(*self.transport, Transport::Tls(_)) => Err(error(
                StatusCode::FORBIDDEN,
                "membership changes are disabled: set [cluster] admin-token",
            )),
            _ => Err(error(
                StatusCode::UNAUTHORIZED,
                "an admin certificate (admin.keepwarm) or the admin token (authorization: Bearer …) is required",
            )),
        }
    }

    /// The current voters, or a 421 naming the leader.
    pub(super) fn voters(&self) -> Result<std::collections::BTreeSet<NodeId>, Refusal> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            return Err(error(
                StatusCode::MISDIRECTED_REQUEST,
                format!("not the leader; ask member {:?}", metrics.current_leader),
            ));
        }
        Ok(metrics.membership_config.membership().voter_ids().collect())
    }
}

#[derive(serde::Deserialize)]
struct Join {
    id: NodeId,
    address: String,
}

/// `POST /admin/members {"id", "address"}` adds a member.
pub(super) async fn join(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        peer.admin(connection, &headers)?;
        let mut voters = peer.voters()?;
        let join: Join = serde_json::from_slice(&body).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"id\", \"address\"}}: {e}"),
            )
        })?;
        let node = BasicNode { addr: join.address };
        peer.raft
            .add_learner(join.id, node, true)
            .await
            .map_err(|e| error(StatusCode::CONFLICT, e.to_string()))?;
        voters.insert(join.id);
        peer.raft
            .change_membership(voters.clone(), false)
            .await
            .map_err(|e| error(StatusCode::CONFLICT, e.to_string()))?;
        Ok::<_, Refusal>(answer(serde_json::json!({ "members": voters })))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /admin/members/{id}` removes one.
pub(super) async fn leave(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        peer.admin(connection, &headers)?;
        let mut voters = peer.voters()?;
        let id: NodeId = id
            .parse()
            .map_err(|_| error(StatusCode::BAD_REQUEST, "expected /admin/members/{id}"))?;
        if !voters.remove(&id) {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("{id} is not a member"),
            ));
        }
        peer.raft
            .change_membership(voters.clone(), false)
            .await
            .map_err(|e| error(StatusCode::CONFLICT, e.to_string()))?;
        Ok(answer(serde_json::json!({ "members": voters })))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
