//! The Raft RPCs a member serves its peers (`/raft/append`, `/raft/snapshot`, `/raft/vote`,
//! `/raft/ping`): each taken only from a member, and only for the member its vote names.

use super::campaign::{LeaderContact, Pong};
use super::server::{answer, error, parse, Refusal};
use super::tls::Identity;
use super::transport::Transport;
use super::types::{NodeId, Raft};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use openraft::raft::{AppendEntriesResponse, VoteRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What the peer listener's handlers share.
#[derive(Clone)]
pub struct Peer {
    pub raft: Raft,
    pub transport: Arc<Transport>,
    /// Accepted (in constant time) for admin endpoints, next to an admin certificate.
    pub admin_token: Option<Arc<str>>,
    /// While a member whose storage was wiped catches up: the log index its peers had
    /// applied when it rejoined. It votes only for candidates whose log reaches that index,
    /// so it cannot elect one that lacks entries it had acknowledged before the wipe (and a
    /// cluster of blank members can still elect). 0: votes as usual.
    pub vote_floor: Arc<AtomicU64>,
    /// Touched on every append-entries this member accepts from a leader.
    pub contact: Arc<LeaderContact>,
    /// Step-down and handback requests, on their way to the roles.
    pub inbox: super::inbox::Inbox,
}

type AppendEntries = openraft::raft::AppendEntriesRequest<super::types::TypeConfig>;
type InstallSnapshot = openraft::raft::InstallSnapshotRequest<super::types::TypeConfig>;

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("admin_token", &self.admin_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// The member a request may speak for, or the refusal.
    pub(super) fn member(
        &self,
        connection: Identity,
        headers: &HeaderMap,
    ) -> Result<Identity, Refusal> {
        match self.transport.peer(connection, headers) {
            Some(Identity::Admin) => Err(error(
                StatusCode::FORBIDDEN,
                "an admin certificate cannot take part in Raft",
            )),
            Some(member) => Ok(member),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                "cluster credentials required",
            )),
        }
    }

    /// Refuses an RPC whose vote names another member than the certificate does.
    pub(super) fn speaks_for(&self, peer: Identity, id: NodeId) -> Result<(), Refusal> {
        if peer.speaks_for(id) {
            Ok(())
        } else {
            tracing::warn!(
                ?peer,
                claimed = id,
                "a peer's RPC names another member: refused"
            );
            Err(error(
                StatusCode::FORBIDDEN,
                format!("{peer:?} cannot speak for member {id}"),
            ))
        }
    }
}

impl Peer {
    /// A Raft RPC's body, once the connection is a member's and the member its vote names is
    /// that member (a certificate cannot speak for another member).
    fn rpc<T: serde::de::DeserializeOwned>(
        &self,
        connection: Identity,
        headers: &HeaderMap,
        body: &[u8],
        vote: impl Fn(&T) -> openraft::Vote<NodeId>,
    ) -> Result<T, Refusal> {
        let who = self.member(connection, headers)?;
        let rpc: T = parse(body)?;
        self.speaks_for(who, vote(&rpc).leader_id().voted_for().unwrap_or_default())?;
        Ok(rpc)
    }
}

pub(super) async fn append(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        let rpc = peer.rpc(connection, &headers, &body, |r: &AppendEntries| r.vote)?;
        let reply = peer.raft.append_entries(rpc).await;
        if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            peer.contact.heard();
        }
        Ok::<_, Refusal>(answer(reply))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn snapshot(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        let rpc = peer.rpc(connection, &headers, &body, |r: &InstallSnapshot| r.vote)?;
        Ok::<_, Refusal>(answer(peer.raft.install_snapshot(rpc).await))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

pub(super) async fn vote(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        let rpc = peer.rpc(connection, &headers, &body, |r: &VoteRequest<NodeId>| {
            r.vote
        })?;
        let floor = peer.vote_floor.load(Ordering::SeqCst);
        if floor > 0 && rpc.last_log_id.map_or(0, |l| l.index) < floor {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "catching up after lost storage: not voting for a candidate whose log is behind what the cluster had applied",
            ));
        }
        Ok(answer(peer.raft.vote(rpc).await))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// A member checking, before it may campaign or initialize, that it reaches a quorum and
/// whether they hear a live leader.
pub(super) async fn ping(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
) -> Response {
    match peer.member(connection, &headers) {
        Ok(_) => answer(Pong::of(&peer.raft, &peer.contact)),
        Err(refusal) => refusal.into_response(),
    }
}
