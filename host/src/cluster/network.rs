//! How a member calls its peers: openraft's network factory ([`Peers`]) and the campaign
//! guard's ping. Requests go over the member's [`Transport`] (mutual TLS, or plain HTTP with
//! the secret when the operator chose `insecure`); the other side is `server.rs`.

use super::contact::Pong;
use super::transport::{PeerHttp, Transport};
use super::types::{NodeId, TypeConfig};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
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
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Creates clients for peers.
#[derive(Debug, Clone)]
pub struct Peers {
    transport: Arc<Transport>,
    /// One pooled client per peer (each expects that peer's certificate).
    clients: Arc<Mutex<BTreeMap<NodeId, PeerHttp>>>,
    /// How this member reaches each peer (its `[cluster] peers`). The membership in the log
    /// holds the addresses of whichever member initialized it; this member's own view wins,
    /// so each member may reach the others by its own route (NAT, proxies, other names).
    routes: Arc<BTreeMap<NodeId, String>>,
    /// The pause between attempts to reach a peer that was unreachable.
    retry: Duration,
}

impl Peers {
    /// `retry`: the pause between attempts to reach an unreachable peer. openraft's default is
    /// 500 ms, longer than an election timeout: a member back from a crash or a partition
    /// heard nothing from the leader for that long and campaigned. One heartbeat interval
    /// keeps the leader's first append within the member's timer.
    pub fn new(transport: Transport, routes: BTreeMap<NodeId, String>, retry: Duration) -> Peers {
        Peers {
            transport: Arc::new(transport),
            clients: Arc::default(),
            routes: Arc::new(routes),
            retry,
        }
    }

    /// The client for member `id`.
    pub fn client(&self, id: NodeId) -> PeerHttp {
        let mut clients = self.clients.lock().expect("clients lock");
        clients
            .entry(id)
            .or_insert_with(|| self.transport.client_for(id))
            .clone()
    }

    /// This member's route to each peer.
    pub fn routes(&self) -> &BTreeMap<NodeId, String> {
        &self.routes
    }

    /// A POST to `path` on `address`, ready to send.
    fn post(
        &self,
        address: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, String> {
        let builder = Request::post(format!("{}://{address}{path}", self.transport.scheme()))
            .header("content-type", "application/json");
        self.transport
            .authorize(builder)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())
    }

    /// POSTs `body` to member `id` at `address`; its status and body, within `limit`.
    pub async fn call(
        &self,
        id: NodeId,
        address: &str,
        path: &str,
        body: Vec<u8>,
        limit: Duration,
    ) -> Result<(StatusCode, Bytes), String> {
        let request = self.post(address, path, body)?;
        super::transport::exchange(&self.client(id), request, limit).await
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
    async fn rpc<Req, Resp, E>(
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
        let (status, bytes) = self
            .peers
            .call(self.target, &self.address, path, body, option.hard_ttl())
            .await
            .map_err(|e| {
                let e = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e);
                RPCError::Unreachable(Unreachable::new(&e))
            })?;
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
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}

/// The answers of those peers that answer an authenticated ping within `limit`.
pub async fn ping(peers: &Peers, limit: Duration) -> Vec<(NodeId, Pong)> {
    let probes = peers.routes().iter().map(|(id, address)| async move {
        let (status, body) = peers
            .call(*id, address, "/raft/ping", Vec::new(), limit)
            .await
            .ok()?;
        if !status.is_success() {
            return None;
        }
        serde_json::from_slice::<Pong>(&body).ok().map(|p| (*id, p))
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The highest log index any peer has applied, when any of them already runs a cluster (has
/// a term); `None` when none does. Asked before initializing, over the authenticated ping:
/// an unauthenticated answer could keep a fresh cluster from ever initializing.
pub async fn running_cluster(peers: &Peers) -> Option<u64> {
    ping(peers, Duration::from_millis(300))
        .await
        .into_iter()
        .map(|(_, pong)| pong)
        .filter(|pong| pong.term > 0)
        .map(|pong| pong.last_applied.unwrap_or(0))
        .max()
}
