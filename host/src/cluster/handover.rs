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
//! The roles (`role/`) do the work; this module holds what the requests and answers say, and
//! `handover_server` carries them from the listener to the roles.
//!
//! [`Handover`]: super::state::Handover

use super::types::NodeId;
use serde::{Deserialize, Serialize};
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
