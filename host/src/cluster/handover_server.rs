//! The handover's requests as the peer listener takes them (see `handover` for the sequence):
//! `/admin/step-down` from an admin, `/raft/campaign` from the leader this member follows,
//! `/raft/handback` from the member that handed over.

use super::caller::{Admin, FromMember};
use super::handover::Handback;
use super::http::{answer, error, parse, Answer};
use super::inbox::{ask_roles, ToTerm, NOT_ACTIVE};
use super::peer::Peer;
use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use std::time::Duration;

/// How long the operator's request waits for the leader to hand over.
const STEP_DOWN_WAIT: Duration = Duration::from_secs(8);

/// `POST /admin/step-down`: the leader hands the active role to a caught-up member.
pub(super) async fn step_down(State(peer): State<Peer>, _: Admin) -> Answer {
    peer.voters()?;
    let done = ask_roles(
        |reply| peer.inbox.to_term(ToTerm::StepDown(reply)),
        STEP_DOWN_WAIT,
        NOT_ACTIVE,
        "no member took over within 8 s (see the active host's log)",
    )
    .await?;
    answer(done)
}

/// `POST /raft/campaign`: the leader asks this member to campaign now.
pub(super) async fn campaign(State(peer): State<Peer>, from: FromMember) -> Answer {
    let leader = peer.leader_asking(from, "ask it to campaign")?;
    tracing::info!(
        leader,
        "asked by the leader to campaign: it is stepping down"
    );
    peer.raft
        .trigger()
        .elect()
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    answer(serde_json::json!({ "campaigning": true }))
}

/// `POST /raft/handback`: containers the member that handed over is done with.
pub(super) async fn handback(State(peer): State<Peer>, from: FromMember, body: Bytes) -> Answer {
    let handback: Handback = parse(&body)?;
    peer.speaks_for(from, handback.from)?;
    peer.voters()?;
    peer.inbox.to_term(ToTerm::Handback(handback))?;
    answer(serde_json::json!({ "accepted": true }))
}
