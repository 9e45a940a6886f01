//! Raft peers talk HTTP/1.1 with JSON bodies, authenticated by the cluster secret.
//!
//! - [`Peers`] is openraft's network factory: one pooled client for every peer;
//! - [`serve`] answers `/raft/append`, `/raft/vote` and `/raft/snapshot` (and `/status`).
//!
//! A request without the secret is refused with 401 before it reaches Raft, so a host that
//! does not know the secret cannot vote, append or join.

use super::campaign::{LeaderContact, Pong};
use super::types::{NodeId, Raft, TypeConfig};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const SECRET_HEADER: &str = "x-keepwarm-secret";

/// Creates clients for peers.
#[derive(Debug, Clone)]
pub struct Peers {
    client: Client<HttpConnector, Full<Bytes>>,
    secret: Arc<str>,
    /// How this member reaches each peer (its `[cluster] peers`). The membership in the log
    /// holds the addresses of whichever member initialized it; this member's own view wins,
    /// so each member may reach the others by its own route (NAT, proxies, other names).
    routes: Arc<std::collections::BTreeMap<NodeId, String>>,
    /// The pause between attempts to reach a peer that was unreachable.
    retry: std::time::Duration,
}

impl Peers {
    pub fn new(secret: &str) -> Peers {
        Self::with_routes(
            secret,
            Default::default(),
            std::time::Duration::from_millis(50),
        )
    }

    /// `retry`: the pause between attempts to reach an unreachable peer. openraft's default is
    /// 500 ms, longer than an election timeout: a member back from a crash or a partition
    /// heard nothing from the leader for that long and campaigned. One heartbeat interval
    /// keeps the leader's first append within the member's timer.
    pub fn with_routes(
        secret: &str,
        routes: std::collections::BTreeMap<NodeId, String>,
        retry: std::time::Duration,
    ) -> Peers {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_millis(200)));
        Peers {
            client: Client::builder(TokioExecutor::new()).build(connector),
            secret: secret.into(),
            routes: Arc::new(routes),
            retry,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            address: self
                .routes
                .get(&target)
                .cloned()
                .unwrap_or_else(|| node.addr.clone()),
            peers: self.clone(),
        }
    }
}

/// The connection to one peer.
#[derive(Debug)]
pub struct PeerClient {
    target: NodeId,
    address: String,
    peers: Peers,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        body: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            serde_json::to_vec(body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let request = Request::post(format!("http://{}{path}", self.address))
            .header("content-type", "application/json")
            .header(SECRET_HEADER, &*self.peers.secret)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let send = async {
            let response = self
                .peers
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, bytes))
        };
        let (status, bytes) = match tokio::time::timeout(option.hard_ttl(), send).await {
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "raft rpc timed out");
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Err(e)) => {
                let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e);
                return Err(RPCError::Unreachable(Unreachable::new(&e)));
            }
            Ok(Ok(r)) => r,
        };
        if status != StatusCode::OK {
            let e = std::io::Error::other(format!(
                "peer {} answered {status}: {}",
                self.target,
                String::from_utf8_lossy(&bytes)
            ));
            return Err(RPCError::Network(NetworkError::new(&e)));
        }
        let answer: Result<Resp, E> =
            serde_json::from_slice(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(self.peers.retry))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        self.call("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.call("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.call("/raft/vote", &rpc, &option).await
    }
}

/// Extra read-only endpoints the node serves next to Raft (status, metrics).
pub type Status = Arc<dyn Fn() -> super::status::MemberStatus + Send + Sync>;

/// What the HTTP endpoint needs besides Raft.
#[derive(Clone)]
pub struct Endpoint {
    pub raft: Raft,
    /// Peers must present it on every Raft RPC.
    pub secret: Arc<str>,
    /// Required (as `authorization: Bearer …`) by endpoints that change the cluster.
    pub admin_token: Option<Arc<str>>,
    pub status: Status,
    /// While a member whose storage was wiped catches up: the log index its peers had
    /// applied when it rejoined. It votes only for candidates whose log reaches that index,
    /// so it cannot elect one that lacks entries it had acknowledged before the wipe (and a
    /// cluster of blank members can still elect). 0: votes as usual.
    pub vote_floor: Arc<std::sync::atomic::AtomicU64>,
    /// Touched on every append-entries this member accepts from a leader.
    pub contact: Arc<LeaderContact>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("admin", &self.admin_token.is_some())
            .finish_non_exhaustive()
    }
}

/// Serves Raft RPCs, `GET /status`, `GET /metrics` and the membership admin endpoints on
/// `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, endpoint: Endpoint, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("raft listener: {e}");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, endpoint.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    endpoint: Endpoint,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let Endpoint {
        raft,
        secret,
        admin_token,
        status,
        vote_floor,
        contact,
    } = endpoint;
    let path = req.uri().path().to_owned();
    if path == "/status" {
        let body = serde_json::to_vec(&status()).unwrap_or_default();
        return Ok(json(StatusCode::OK, body));
    }
    if path == "/metrics" {
        return Ok(Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(status().prometheus())))
            .expect("valid response"));
    }
    if path.starts_with("/admin/") {
        return admin(req, &raft, admin_token.as_deref()).await;
    }
    let authorized = req
        .headers()
        .get(SECRET_HEADER)
        .is_some_and(|v| v.as_bytes() == secret.as_bytes());
    if !authorized {
        return Ok(json(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"cluster secret required"}"#.to_vec(),
        ));
    }
    let body = req.into_body().collect().await?.to_bytes();
    fn answer<T: Serialize>(r: T) -> Response<Full<Bytes>> {
        json(StatusCode::OK, serde_json::to_vec(&r).expect("json"))
    }
    fn bad(e: serde_json::Error) -> Response<Full<Bytes>> {
        json(
            StatusCode::BAD_REQUEST,
            format!("{{\"error\":{:?}}}", e.to_string()).into_bytes(),
        )
    }
    Ok(match path.as_str() {
        "/raft/append" => match serde_json::from_slice(&body) {
            Ok(rpc) => {
                let reply = raft.append_entries(rpc).await;
                if matches!(&reply, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    contact.heard();
                }
                answer(reply)
            }
            Err(e) => bad(e),
        },
        "/raft/vote" => match serde_json::from_slice::<VoteRequest<NodeId>>(&body) {
            Ok(rpc) => {
                let floor = vote_floor.load(std::sync::atomic::Ordering::SeqCst);
                let reaches = rpc.last_log_id.map_or(0, |l| l.index) >= floor;
                if floor > 0 && !reaches {
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        br#"{"error":"catching up after lost storage: not voting for a candidate whose log is behind what the cluster had applied"}"#.to_vec(),
                    )
                } else {
                    answer(raft.vote(rpc).await)
                }
            }
            Err(e) => bad(e),
        },
        // A member checking, before it may campaign, that it reaches a quorum and whether
        // they hear a live leader.
        "/raft/ping" => answer(Pong::of(&raft, &contact)),
        "/raft/snapshot" => match serde_json::from_slice(&body) {
            Ok(rpc) => answer(raft.install_snapshot(rpc).await),
            Err(e) => bad(e),
        },
        _ => json(
            StatusCode::NOT_FOUND,
            br#"{"error":"no such endpoint"}"#.to_vec(),
        ),
    })
}

/// The answers of those of `peers` that answer an authenticated ping within `limit`.
pub async fn ping(
    client: &Client<HttpConnector, Full<Bytes>>,
    peers: &[String],
    secret: &str,
    limit: std::time::Duration,
) -> Vec<Pong> {
    let probes = peers.iter().map(|addr| {
        let client = client.clone();
        let req = Request::post(format!("http://{addr}/raft/ping"))
            .header(SECRET_HEADER, secret)
            .body(Full::new(Bytes::new()));
        async move {
            let req = req.ok()?;
            let call = async {
                let resp = client.request(req).await.ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                serde_json::from_slice::<Pong>(&body).ok()
            };
            tokio::time::timeout(limit, call).await.ok().flatten()
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The highest log index any of `peers` has applied, when any of them already runs a
/// cluster (has a term); `None` when none does. Asked before initializing.
pub async fn running_cluster(peers: &[String]) -> Option<u64> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let probes = peers.iter().map(|addr| {
        let client = client.clone();
        let uri = format!("http://{addr}/status");
        async move {
            let req = Request::get(uri).body(Full::new(Bytes::new())).ok()?;
            let call = async {
                let resp = client.request(req).await.ok()?;
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                serde_json::from_slice::<super::status::MemberStatus>(&body).ok()
            };
            tokio::time::timeout(std::time::Duration::from_millis(300), call)
                .await
                .ok()
                .flatten()
        }
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .filter(|status| status.term > 0)
        .map(|status| status.last_applied.unwrap_or(0))
        .max()
}

/// `POST /admin/members {"id", "address"}` adds a member; `DELETE /admin/members/{id}`
/// removes one. Both need the admin token and must reach the leader.
async fn admin(
    req: Request<hyper::body::Incoming>,
    raft: &Raft,
    token: Option<&str>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let err = |status: StatusCode, msg: String| {
        json(
            status,
            serde_json::json!({ "error": msg }).to_string().into_bytes(),
        )
    };
    let Some(token) = token else {
        return Ok(err(
            StatusCode::FORBIDDEN,
            "membership changes are disabled: set [cluster] admin-token".into(),
        ));
    };
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(token) {
        return Ok(err(
            StatusCode::UNAUTHORIZED,
            "admin token required (authorization: Bearer …)".into(),
        ));
    }
    let metrics = raft.metrics().borrow().clone();
    if metrics.current_leader != Some(metrics.id) {
        return Ok(err(
            StatusCode::MISDIRECTED_REQUEST,
            format!("not the leader; ask member {:?}", metrics.current_leader),
        ));
    }
    let mut voters: std::collections::BTreeSet<NodeId> =
        metrics.membership_config.membership().voter_ids().collect();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await?.to_bytes();
    let result = if method == hyper::Method::POST && path == "/admin/members" {
        #[derive(serde::Deserialize)]
        struct Join {
            id: NodeId,
            address: String,
        }
        let join: Join = match serde_json::from_slice(&body) {
            Ok(j) => j,
            Err(e) => {
                return Ok(err(
                    StatusCode::BAD_REQUEST,
                    format!("expected {{\"id\", \"address\"}}: {e}"),
                ))
            }
        };
        let node = BasicNode { addr: join.address };
        match raft.add_learner(join.id, node, true).await {
            Err(e) => Err(e.to_string()),
            Ok(_) => {
                voters.insert(join.id);
                raft.change_membership(voters.clone(), false)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    } else if method == hyper::Method::DELETE && path.starts_with("/admin/members/") {
        let Ok(id) = path.trim_start_matches("/admin/members/").parse::<NodeId>() else {
            return Ok(err(
                StatusCode::BAD_REQUEST,
                "expected /admin/members/{id}".into(),
            ));
        };
        if !voters.remove(&id) {
            return Ok(err(StatusCode::NOT_FOUND, format!("{id} is not a member")));
        }
        raft.change_membership(voters.clone(), false)
            .await
            .map_err(|e| e.to_string())
    } else {
        return Ok(err(StatusCode::NOT_FOUND, "no such admin endpoint".into()));
    };
    Ok(match result {
        Ok(_) => json(
            StatusCode::OK,
            serde_json::json!({ "members": voters })
                .to_string()
                .into_bytes(),
        ),
        Err(e) => err(StatusCode::CONFLICT, e),
    })
}
