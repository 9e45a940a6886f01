//! Membership changes an admin asks the leader for (`POST /admin/members`,
//! `DELETE /admin/members/{id}`), from an [`Admin`].

use super::caller::Admin;
use super::http::{answer, error, Answer, Refusal};
use super::peer::Peer;
use super::types::NodeId;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use openraft::BasicNode;

impl Peer {
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
pub(super) async fn join(State(peer): State<Peer>, _: Admin, body: Bytes) -> Answer {
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
    answer(serde_json::json!({ "members": voters }))
}

/// `DELETE /admin/members/{id}` removes one.
pub(super) async fn leave(State(peer): State<Peer>, _: Admin, Path(id): Path<String>) -> Answer {
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
    answer(serde_json::json!({ "members": voters }))
}
