//! Requests that reach a member's listeners and are answered by its roles: a step-down and a
//! handback (`handover`), a plugin reload and a plugin stage (`plugin_server`).

use super::handover::{Handback, StepDownRequest};
use super::server::{error, Refusal};
use crate::plugin::Swap;
use axum::http::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};

/// A plugin reload: which plugin (`None`: the first this host runs), and where the answer
/// goes.
#[derive(Debug)]
pub struct ReloadRequest {
    pub plugin: Option<String>,
    pub reply: oneshot::Sender<Result<Swap, String>>,
}
/// The active host's request to stage a plugin's file (`None`: the first plugin); the answer
/// is the staged build's sha256.
#[derive(Debug)]
pub struct StageRequest {
    pub plugin: Option<String>,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// The requests' way from the listeners to the roles.
#[derive(Debug, Clone)]
pub struct Inbox {
    pub step_down: mpsc::UnboundedSender<StepDownRequest>,
    pub handback: mpsc::UnboundedSender<Handback>,
    pub reload: mpsc::UnboundedSender<ReloadRequest>,
    pub stage: mpsc::UnboundedSender<StageRequest>,
}

/// The roles' end of the [`Inbox`]: one role at a time holds it.
#[derive(Debug)]
pub struct Requests {
    pub step_down: Mutex<mpsc::UnboundedReceiver<StepDownRequest>>,
    pub handback: Mutex<mpsc::UnboundedReceiver<Handback>>,
    pub reload: Mutex<mpsc::UnboundedReceiver<ReloadRequest>>,
    pub stage: Mutex<mpsc::UnboundedReceiver<StageRequest>>,
}

pub fn inbox() -> (Inbox, Arc<Requests>) {
    let (step_down, step_down_rx) = mpsc::unbounded_channel();
    let (handback, handback_rx) = mpsc::unbounded_channel();
    let (reload, reload_rx) = mpsc::unbounded_channel();
    let (stage, stage_rx) = mpsc::unbounded_channel();
    (
        Inbox {
            step_down,
            handback,
            reload,
            stage,
        },
        Arc::new(Requests {
            step_down: Mutex::new(step_down_rx),
            handback: Mutex::new(handback_rx),
            reload: Mutex::new(reload_rx),
            stage: Mutex::new(stage_rx),
        }),
    )
}

/// Hands a request to the roles (`send` wraps the reply channel into it; false: the roles
/// are gone) and waits up to `wait` for their answer: a refusal names why (409), that the
/// roles dropped it (`dropped`, 409: e.g. no longer the active host), or that `wait` passed
/// (504, `late`).
pub(super) async fn ask_roles<T>(
    send: impl FnOnce(oneshot::Sender<Result<T, String>>) -> bool,
    wait: Duration,
    dropped: &str,
    late: &str,
) -> Result<T, Refusal> {
    let (tx, rx) = oneshot::channel();
    if !send(tx) {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this member is stopping",
        ));
    }
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(why))) => Err(error(StatusCode::CONFLICT, why)),
        Ok(Err(_)) => Err(error(StatusCode::CONFLICT, dropped)),
        Err(_) => Err(error(StatusCode::GATEWAY_TIMEOUT, late)),
    }
}

/// What a request the roles dropped tells the operator.
pub(super) const NOT_ACTIVE: &str =
    "this member is not the active host (taking over, or stopping): ask again";
