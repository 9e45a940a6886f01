//! The member's listeners, built on axum and tower-http, each bounded the same way.
//!
//! - the **peer listener** (`[cluster] peers`, this member's address): `/raft/append`,
//!   `/raft/vote`, `/raft/snapshot`, `/raft/ping` for members, `/admin/members` for an admin.
//!   With TLS a connection needs a certificate from the cluster's CA, and a Raft RPC is taken
//!   only from the member its vote names; plain (`insecure`) requests need the secret;
//! - the **status listener** (`[cluster] status-address`, loopback by default): `/status` and
//!   `/metrics`, optionally behind a bearer token. Neither reveals a secret.
//!
//! Every listener: a TLS handshake deadline, a header-read deadline (which also closes idle
//! keep-alive connections), a cap on open connections (a connection over it is closed at
//! once, so the accept queue never backs up behind a flood and peers keep their pooled
//! connections), accept errors backed off, a body limit per route (413) and a deadline per
//! request (408).

use super::campaign::{LeaderContact, Pong};
use super::tls::Identity;
use super::transport::{same, Transport};
use super::types::{NodeId, Raft};
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use openraft::raft::{AppendEntriesResponse, VoteRequest};
use openraft::BasicNode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower_http::limit::RequestBodyLimitLayer;

/// How much any one client may take of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To finish a TLS handshake.
    pub handshake: Duration,
    /// To send a request's headers; also how long a keep-alive connection may sit idle.
    pub header_read: Duration,
    /// Open connections; one more is closed at once.
    pub connections: usize,
    /// An append-entries or snapshot chunk body (openraft sends at most 3 MiB chunks).
    pub raft_body: usize,
    /// Any other body (vote, ping, admin).
    pub small_body: usize,
    /// To answer a request.
    pub request: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Duration::from_secs(2),
            header_read: Duration::from_secs(10),
            connections: 512,
            raft_body: 16 << 20,
            small_body: 64 << 10,
            request: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` (TLS when `acceptor` is set) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request,
    ));
    let open = Arc::new(Semaphore::new(limits.connections));
    let mut pause = Duration::from_millis(5);
    let mut refused = 0u64;
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    pause = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    tracing::warn!(pause_ms = pause.as_millis() as u64, "accept: {e}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    limit = limits.connections,
                    refused,
                    "connection limit reached: closing new connections"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, acceptor) = (router.clone(), acceptor.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // A stopped member's open connections close with it: served on, a peer's pooled
            // keep-alive connection kept reaching this member's stopped Raft ("raft stopped")
            // after a new member started on the same address in the same process.
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {}
                _ = accepted(stream, acceptor, router, limits) => {}
            }
        });
    }
}

/// Serves one accepted connection: the TLS handshake (when `acceptor` is set), then HTTP/1.1.
async fn accepted(
    stream: tokio::net::TcpStream,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: Limits,
) {
    match acceptor {
        None => connection(stream, Identity::Unverified, router, limits).await,
        Some(acceptor) => {
            let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!("tls handshake refused: {e}");
                    return;
                }
                Err(_) => return,
            };
            let identity = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(Identity::of);
            let Some(identity) = identity else {
                tracing::warn!(
                    "a certificate of the cluster's CA names neither a member nor an admin: closed"
                );
                return;
            };
            connection(tls, identity, router, limits).await
        }
    }
}

async fn connection<S>(stream: S, identity: Identity, router: Router, limits: Limits)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router.layer(Extension(identity)));
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

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
}

/// A refused request: its status and what the client is told.
#[derive(Debug)]
pub struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.1 });
        (self.0, axum::Json(body)).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

fn answer<T: serde::Serialize>(value: T) -> Response {
    axum::Json(value).into_response()
}

type AppendEntries = openraft::raft::AppendEntriesRequest<super::types::TypeConfig>;
type InstallSnapshot = openraft::raft::InstallSnapshotRequest<super::types::TypeConfig>;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("admin_token", &self.admin_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// The member a request may speak for, or the refusal.
    fn member(&self, connection: Identity, headers: &HeaderMap) -> Result<Identity, Refusal> {
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
    fn speaks_for(&self, peer: Identity, id: NodeId) -> Result<(), Refusal> {
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

/// The peer listener's routes.
pub fn peer_router(state: Peer, limits: Limits) -> Router {
    // tower-http's limit answers 413 from `content-length` before reading a byte (and stops a
    // chunked body at the limit); axum's own extractor limit is turned off in its favour.
    let limit = |bytes: usize| {
        tower::ServiceBuilder::new()
            .layer(DefaultBodyLimit::disable())
            .layer(RequestBodyLimitLayer::new(bytes))
    };
    let (small, large) = (limit(limits.small_body), limit(limits.raft_body));
    Router::new()
        .route("/raft/append", post(append).layer(large.clone()))
        .route("/raft/snapshot", post(snapshot).layer(large))
        .route("/raft/vote", post(vote).layer(small.clone()))
        .route("/raft/ping", post(ping).layer(small.clone()))
        .route("/admin/members", post(join).layer(small.clone()))
        .route("/admin/members/{id}", delete(leave).layer(small.clone()))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

async fn append(
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

async fn snapshot(
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

async fn vote(
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
async fn ping(
    State(peer): State<Peer>,
    Extension(connection): Extension<Identity>,
    headers: HeaderMap,
) -> Response {
    match peer.member(connection, &headers) {
        Ok(_) => answer(Pong::of(&peer.raft, &peer.contact)),
        Err(refusal) => refusal.into_response(),
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

    /// An admin certificate, or the admin token (compared in constant time).
    fn admin(&self, connection: Identity, headers: &HeaderMap) -> Result<(), Refusal> {
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
    fn voters(&self) -> Result<std::collections::BTreeSet<NodeId>, Refusal> {
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
async fn join(
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
async fn leave(
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

/// What the status listener serves.
pub type Status = Arc<dyn Fn() -> super::status::MemberStatus + Send + Sync>;

#[derive(Clone)]
struct StatusState {
    status: Status,
    token: Option<Arc<str>>,
}

impl StatusState {
    fn allowed(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(p) if same(p.as_bytes(), token.as_bytes()) => Ok(()),
            _ => Err(error(
                StatusCode::UNAUTHORIZED,
                "the status token is required (authorization: Bearer …)",
            )),
        }
    }
}

/// The status listener's routes; `token`, when set, is required as a bearer token.
pub fn status_router(status: Status, token: Option<Arc<str>>) -> Router {
    Router::new()
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(1024))
        .with_state(StatusState { status, token })
}

async fn status_json(State(s): State<StatusState>, headers: HeaderMap) -> Response {
    match s.allowed(&headers) {
        Ok(()) => answer((s.status)()),
        Err(refusal) => refusal.into_response(),
    }
}

async fn metrics(State(s): State<StatusState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = s.allowed(&headers) {
        return refusal.into_response();
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        (s.status)().prometheus(),
    )
        .into_response()
}
