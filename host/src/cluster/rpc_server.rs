//! The Raft RPCs a member serves its peers (`/raft/append`, `/raft/snapshot`, `/raft/vote`,
//! `/raft/ping`): each taken only from a member, and only for the member its vote names.

use super::caller::FromMember;
use super::contact::Pong;
use super::http::{answer, error, parse, Answer, Refusal};
use super::peer::Peer;
use super::types::NodeId;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use openraft::raft::{AppendEntriesResponse, VoteRequest};
use std::sync::atomic::Ordering;

type AppendEntries = openraft::raft::AppendEntriesRequest<super::types::TypeConfig>;
type InstallSnapshot = openraft::raft::InstallSnapshotRequest<super::types::TypeConfig>;

impl Peer {
    /// A Raft RPC's body, once the connection is a member's and the member its vote names is
    /// that member (a certificate cannot speak for another member).
    fn rpc<T: serde::de::DeserializeOwned>(
        &self,
        from: FromMember,
        body: &[u8],
        vote: impl Fn(&T) -> openraft::Vote<NodeId>,
    ) -> Result<T, Refusal> {
        let rpc: T = parse(body)?;
        self.speaks_for(from, vote(&rpc).leader_id().voted_for().unwrap_or_default())?;
        Ok(rpc)
    }
}

pub(super) async fn append(State(peer): State<Peer>, from: FromMember, body: Bytes) -> Answer {
    let rpc = peer.rpc(from, &body, |r: &AppendEntries| r.vote)?;
    let reply = peer.raft.append_entries(rpc).await;
    if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
        peer.contact.heard();
    }
    answer(reply)
}

pub(super) async fn snapshot(State(peer): State<Peer>, from: FromMember, body: Bytes) -> Answer {
    let rpc = peer.rpc(from, &body, |r: &InstallSnapshot| r.vote)?;
    answer(peer.raft.install_snapshot(rpc).await)
}

pub(super) async fn vote(State(peer): State<Peer>, from: FromMember, body: Bytes) -> Answer {
    let rpc = peer.rpc(from, &body, |r: &VoteRequest<NodeId>| r.vote)?;
    let floor = peer.vote_floor.load(Ordering::SeqCst);
    if floor > 0 && rpc.last_log_id.map_or(0, |l| l.index) < floor {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "catching up after lost storage: not voting for a candidate whose log is behind what the cluster had applied",
        ));
    }
    answer(peer.raft.vote(rpc).await)
}

/// A member checking, before it may campaign or initialize, that it reaches a quorum and
/// whether they hear a live leader.
pub(super) async fn ping(State(peer): State<Peer>, _: FromMember) -> Answer {
    answer(Pong::of(&peer.raft, &peer.contact))
}
