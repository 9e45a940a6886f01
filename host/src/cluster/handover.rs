//! A planned step-down across members (openraft 0.9 has no leadership transfer):
//!
//! - the operator asks the leader to step down (`POST /admin/step-down`, admin credentials);
//! - the leader, once it has stopped pulling and replicated a [`Handover`], asks the member it
//!   chose to campaign at once (`POST /raft/campaign`, taken only from the member this one
//!   follows);
//! - when the activations still running on the old host have finished, it hands their
//!   containers back to the new leader (`POST /raft/handback`, taken only from the member the
//!   handover names).
//!
//! The roles (`role.rs`) do the work; this module carries the requests to them.
//!
//! [`Handover`]: super::state::Handover

use super::inbox::{ask_roles, NOT_ACTIVE};
use super::rpc_server::Peer;
use super::server::{answer, error, parse, Refusal};
use super::tls::Identity;
use super::types::NodeId;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::oneshot;

/// What a step-down came to, as the operator is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteppedDown {
    pub from: NodeId,
    pub to: NodeId,
    /// Epoch millis when this host stopped pulling (the successor's `consuming_since_ms`
    /// minus this is the pause in consumption).
    pub stopped_at_ms: i64,
    /// From the moment this host stopped pulling until another member led.
    pub handed_over_ms: u64,
    /// Activations still running here, finishing here.
    pub running: usize,
    /// Where `handed_over_ms` went.
    #[serde(default)]
    pub phases: StepDownPhases,
}

/// The parts of a step-down's pause on the host that stepped down, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDownPhases {
    /// Until the feed stopped pulling.
    pub stop_ms: u64,
    /// Until everything acknowledged so far was committed.
    pub flush_ms: u64,
    /// Until the handover was committed.
    pub handover_ms: u64,
    /// Until the chosen member held the whole log.
    pub catch_up_ms: u64,
    /// From asking it to campaign until it led.
    pub election_ms: u64,
}

/// The operator's request, with where the answer goes.
pub type StepDownRequest = oneshot::Sender<Result<SteppedDown, String>>;

/// Containers the member that handed over no longer uses, and the activations it finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handback {
    pub from: NodeId,
    /// Activations of the handover that finished and were acknowledged.
    pub completed: Vec<String>,
    /// Activations of the handover that were not acknowledged here (fenced, or the drain
    /// timed out): the new active host runs them.
    pub unfinished: Vec<String>,
    /// The containers idle here now (the new active host takes back those it lent).
    pub containers: Vec<String>,
}

/// How long the operator's request waits for the leader to hand over.
const STEP_DOWN_WAIT: Duration = Duration::from_secs(8);

/// `POST /admin/step-down`: the leader hands the active role to a caught-up member.
pub(super) async fn step_down(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        peer.admin(connection, &headers)?;
        peer.voters()?;
        let done = ask_roles(
            |reply| peer.inbox.step_down.send(reply).is_ok(),
            STEP_DOWN_WAIT,
            NOT_ACTIVE,
            "no member took over within 8 s (see the active host's log)",
        )
        .await?;
        Ok::<_, Refusal>(answer(done))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

impl Peer {
    /// The leader this member follows, when it is the one asking; else 403 saying what only
    /// it may ask (`what`).
    pub(super) fn leader_asking(
        &self,
        connection: Identity,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<NodeId, Refusal> {
        let who = self.member(connection, headers)?;
        let leader = self.raft.metrics().borrow().current_leader;
        leader.filter(|l| who.speaks_for(*l)).ok_or_else(|| {
            error(
                StatusCode::FORBIDDEN,
                format!("only the leader this member follows may {what}"),
            )
        })
    }
}

/// `POST /raft/campaign`: the leader asks this member to campaign now.
pub(super) async fn campaign(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        let leader = peer.leader_asking(connection, &headers, "ask it to campaign")?;
        tracing::info!(
            leader,
            "asked by the leader to campaign: it is stepping down"
        );
        peer.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        Ok::<_, Refusal>(answer(serde_json::json!({ "campaigning": true })))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /raft/handback`: containers the member that handed over is done with.
pub(super) async fn handback(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        let who = peer.member(connection, &headers)?;
        let handback: Handback = parse(&body)?;
        peer.speaks_for(who, handback.from)?;
        peer.voters()?;
        peer.inbox
            .handback
            .send(handback)
            .map_err(|_| error(StatusCode::SERVICE_UNAVAILABLE, "this member is stopping"))?;
        Ok::<_, Refusal>(answer(serde_json::json!({ "accepted": true })))
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}
