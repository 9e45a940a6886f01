//! Requests that reach a member's listeners and are answered by its roles: a step-down and a
//! handback (`handover`), a plugin reload and a plugin stage (`plugin_server`).

use super::handover::{Handback, StepDownRequest};
use super::http::{error, Refusal};
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

/// What the active host's term is asked: one channel, one holder at a time (the term in
/// office; a request sent between terms waits for the next one).
#[derive(Debug)]
pub enum ToTerm {
    StepDown(StepDownRequest),
    Handback(Handback),
    Reload(ReloadRequest),
}

/// Requests waiting for a role, per channel; one more is refused (503) rather than queued.
const WAITING: usize = 32;

/// The requests' way from the listeners to the roles: the term's, and the stage requests
/// every member answers whatever its role.
#[derive(Debug, Clone)]
pub struct Inbox {
    term: mpsc::Sender<ToTerm>,
    stage: mpsc::Sender<StageRequest>,
}

/// The roles' end of the [`Inbox`].
#[derive(Debug)]
pub struct Requests {
    pub term: Mutex<mpsc::Receiver<ToTerm>>,
    pub stage: Mutex<mpsc::Receiver<StageRequest>>,
}

pub fn inbox() -> (Inbox, Arc<Requests>) {
    let (term, term_rx) = mpsc::channel(WAITING);
    let (stage, stage_rx) = mpsc::channel(WAITING);
    (
        Inbox { term, stage },
        Arc::new(Requests {
            term: Mutex::new(term_rx),
            stage: Mutex::new(stage_rx),
        }),
    )
}

impl Inbox {
    /// Hands `request` to the active host's term.
    pub fn to_term(&self, request: ToTerm) -> Result<(), Refusal> {
        queued(self.term.try_send(request))
    }

    /// Hands `request` to this member's stager.
    pub fn to_stage(&self, request: StageRequest) -> Result<(), Refusal> {
        queued(self.stage.try_send(request))
    }
}

fn queued<T>(sent: Result<(), mpsc::error::TrySendError<T>>) -> Result<(), Refusal> {
    sent.map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{WAITING} requests are already waiting here: ask again later"),
        ),
        mpsc::error::TrySendError::Closed(_) => {
            error(StatusCode::SERVICE_UNAVAILABLE, "this member is stopping")
        }
    })
}

/// Hands a request to the roles (`send` wraps the reply channel into it and queues it, or
/// says why not) and waits up to `wait` for their answer: a refusal names why (409), that the
/// roles dropped it (`dropped`, 409: e.g. no longer the active host), or that `wait` passed
/// (504, `late`).
pub(super) async fn ask_roles<T>(
    send: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Result<(), Refusal>,
    wait: Duration,
    dropped: &str,
    late: &str,
) -> Result<T, Refusal> {
    let (tx, rx) = oneshot::channel();
    send(tx)?;
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

#[cfg(test)]
mod tests {
    use super::{inbox, ToTerm, WAITING};
    use crate::cluster::handover::Handback;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    fn handback() -> ToTerm {
        ToTerm::Handback(Handback {
            from: 2,
            completed: vec![],
            unfinished: vec![],
            containers: vec![],
        })
    }

    #[tokio::test]
    async fn a_full_inbox_refuses_the_next_request_and_a_closed_one_says_stopping() {
        let (inbox, requests) = inbox();
        for _ in 0..WAITING {
            inbox.to_term(handback()).expect("room for it");
        }
        let full = inbox.to_term(handback()).unwrap_err().into_response();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);

        let first = requests.term.lock().await.recv().await;
        assert!(matches!(first, Some(ToTerm::Handback(h)) if h.from == 2));
        inbox
            .to_term(handback())
            .expect("room again after one was taken");

        drop(requests);
        let stopping = inbox.to_term(handback()).unwrap_err().into_response();
        assert_eq!(stopping.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
