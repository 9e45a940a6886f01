//! Cluster mode's foundation: Raft (openraft 0.9, storage-v2) over HTTP with durable storage.
//!
//! - [`state`]: what is replicated (claim/epoch, idle pool, offsets, completed ids, plugin
//!   state) and the commands that change it, with epoch fencing;
//! - [`store`]: the log, vote and snapshots in one redb file, fsynced before acknowledgement;
//! - [`transport`] and [`tls`]: how members reach each other (mutual TLS, or plain HTTP with
//!   the secret only when `insecure`);
//! - [`network`]: the Raft peer client (openraft's `RaftNetwork` over that transport);
//! - `server`: the member's listeners, with their handlers by role: `rpc_server` (Raft RPCs),
//!   `admin_server` (membership), `status_server` (`/status`, `/metrics`);
//! - [`campaign`]: a member campaigns only when it reaches a quorum and no live leader is
//!   heard (a pre-vote);
//! - [`completed`]: the completed activation ids kept for de-duplication, with a set for the
//!   feed's per-message lookup;
//! - [`Node`]: one member: starts Raft, serves peers, claims leadership, proposes commands.

mod admin_server;
mod caller;
pub mod campaign;
pub mod completed;
pub mod contact;
pub mod handover;
mod handover_server;
mod http;
pub mod inbox;
pub mod network;
mod peer;
mod plugin_server;
pub mod plugin_state;
mod rpc_server;
pub mod server;
pub mod state;
pub mod status;
mod status_server;
pub mod store;
pub mod tls;
pub mod transport;
pub mod types;

use network::Peers;
use server::Status;
use state::{Command, Replicated, Reply};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use store::{LogStore, StateMachine};
use tokio::net::TcpListener;
use tokio::sync::watch;
pub use transport::Transport;
use types::{NodeId, Raft};

/// Settings of one member.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub id: NodeId,
    /// Every member, this one included: id → `host:port` of its Raft endpoint.
    pub peers: BTreeMap<NodeId, String>,
    /// Mutual TLS, or plain HTTP with a shared secret.
    pub transport: Transport,
    /// Where `/status` and `/metrics` are served (`None`: not served).
    pub status_address: Option<String>,
    /// Required as a bearer token on the status listener when set.
    pub status_token: Option<String>,
    pub data_dir: PathBuf,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Required by the membership admin endpoints; `None` disables them.
    pub admin_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("raft storage {path}: {reason}")]
    Storage { path: PathBuf, reason: String },
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("this host is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("rejected: epoch {epoch} is older than the current claim {current}")]
    Stale { epoch: u64, current: u64 },
}

/// One cluster member.
#[derive(Clone)]
pub struct Node {
    pub id: NodeId,
    pub raft: Raft,
    state: Arc<RwLock<Replicated>>,
    stop: Arc<watch::Sender<bool>>,
    /// What the host adds to `/status` (role, consuming, last takeover, pool).
    report: Arc<RwLock<status::HostReport>>,
    /// The storage, not kept alive by this handle: [`Node::shutdown`] waits until every
    /// task that held it is gone, so the file is unlocked when it returns.
    db: std::sync::Weak<redb::Database>,
    db_path: PathBuf,
    servers: Arc<tokio::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    peers: Peers,
    /// Step-down and handback requests for the roles.
    pub requests: Arc<inbox::Requests>,
    /// The same requests' senders: a member can ask its own roles too.
    pub inbox: inbox::Inbox,
    /// Held (written) by a step-down while its chosen member campaigns: a proposal waits
    /// meanwhile, so the candidate's log stays as new as every voter's.
    proposals: Arc<tokio::sync::RwLock<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

impl Node {
    /// Opens storage, starts Raft and serves peers on this member's address.
    pub async fn start(config: ClusterConfig) -> Result<Node, ClusterError> {
        let address = config.peers.get(&config.id).cloned().ok_or_else(|| {
            ClusterError::Raft(format!("peers do not list this host's id {}", config.id))
        })?;
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| ClusterError::Listen { address, source })?;
        Self::start_on(config, listener).await
    }

    /// As [`Node::start`], with Raft (its core, its peers' server, the campaign guard) on a
    /// runtime of its own in a thread of its own, so heartbeats and votes are never queued
    /// behind activation work on the host's runtime. The host calls the node from its own
    /// runtime as usual (channels and watches cross runtimes).
    pub async fn start_dedicated(config: ClusterConfig) -> Result<Node, ClusterError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("keepwarm-raft".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(ClusterError::Raft(format!("raft runtime: {e}"))));
                        return;
                    }
                };
                rt.block_on(async move {
                    let _ = tx.send(Node::start(config).await);
                    // the node's tasks live on this runtime for the rest of the process
                    std::future::pending::<()>().await;
                });
            })
            .map_err(|e| ClusterError::Raft(format!("raft thread: {e}")))?;
        rx.await
            .map_err(|_| ClusterError::Raft("the raft thread ended while starting".into()))?
    }

    /// As [`Node::start`], on a listener the caller bound.
    pub async fn start_on(
        config: ClusterConfig,
        listener: TcpListener,
    ) -> Result<Node, ClusterError> {
        let Storage {
            log,
            sm,
            blank,
            db,
            path,
        } = Storage::open(&config.data_dir)?;
        let state = sm.state.clone();
        let raft_config = raft_config(&config)?;
        let peers = Peers::new(
            config.transport.clone(),
            config
                .peers
                .iter()
                .filter(|(id, _)| **id != config.id)
                .map(|(id, a)| (*id, a.clone()))
                .collect(),
            config.heartbeat,
        );
        let raft = Raft::new(config.id, Arc::new(raft_config), peers.clone(), log, sm)
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))?;

        let (stop, stopped) = watch::channel(false);
        let vote_floor = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let contact = Arc::new(contact::LeaderContact::default());
        // Before the first election timer can fire: a member with peers starts with elections
        // off, and the campaign guard turns them on (see `campaign`).
        raft.runtime_config().elect(config.peers.len() <= 1);
        let report: Arc<RwLock<status::HostReport>> = Arc::default();
        let status: Status = {
            let (raft, state, report, vote_floor) = (
                raft.clone(),
                state.clone(),
                report.clone(),
                vote_floor.clone(),
            );
            let stalls = status::Stalls::default();
            Arc::new(move || {
                let voting = vote_floor.load(std::sync::atomic::Ordering::SeqCst) == 0;
                let host = report.read().expect("report lock").clone();
                let mut s = status::MemberStatus::of(
                    &raft,
                    &state.read().expect("state lock"),
                    host,
                    voting,
                );
                stalls.observe(&mut s);
                s
            })
        };
        let (inbox, requests) = inbox::inbox();
        let peer = server::Peer {
            inbox: inbox.clone(),
            raft: raft.clone(),
            transport: Arc::new(config.transport.clone()),
            admin_token: config.admin_token.clone().map(Into::into),
            vote_floor: vote_floor.clone(),
            contact: contact.clone(),
        };
        let servers = serve_listeners(&config, listener, peer, status, stopped).await?;

        let members: BTreeMap<NodeId, openraft::BasicNode> = config
            .peers
            .iter()
            .map(|(id, addr)| (*id, openraft::BasicNode { addr: addr.clone() }))
            .collect();
        tokio::spawn(campaign::guard(
            raft.clone(),
            contact,
            peers.clone(),
            config.heartbeat,
            config.election_timeout.1,
            config.election_timeout.1 * 2,
            stop.subscribe(),
        ));
        join_or_initialize(&raft, &peers, members, blank, &vote_floor).await;
        Ok(Node {
            id: config.id,
            raft,
            state,
            stop: Arc::new(stop),
            report,
            db,
            db_path: path,
            servers: Arc::new(tokio::sync::Mutex::new(servers)),
            peers,
            requests,
            inbox,
            proposals: Arc::default(),
        })
    }

    /// The replicated state as this member has applied it.
    pub fn state(&self) -> std::sync::RwLockReadGuard<'_, Replicated> {
        self.state.read().expect("state lock")
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The Raft term this member is in.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.id)
    }

    /// Proposes a command through Raft and waits until it is committed and applied.
    pub async fn propose(&self, command: Command) -> Result<Reply, ClusterError> {
        let epoch = match &command {
            Command::Pool { epoch, .. }
            | Command::Offsets { epoch, .. }
            | Command::Completed { epoch, .. }
            | Command::PluginState { epoch, .. }
            | Command::Handover { epoch, .. }
            | Command::HandedBack { epoch, .. }
            | Command::PluginBuild { epoch, .. } => Some(*epoch),
            Command::Claim { .. } => None,
        };
        let _proposing = self.proposals.read().await;
        match self.raft.client_write(command).await {
            Ok(r) => match r.data {
                Reply::StaleEpoch { current } => Err(ClusterError::Stale {
                    epoch: epoch.unwrap_or(0),
                    current,
                }),
                reply => Ok(reply),
            },
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(ClusterError::NotLeader {
                    leader: f.leader_id,
                }),
                None => Err(ClusterError::Raft(e.to_string())),
            },
        }
    }

    /// Holds every proposal back (they wait) until the guard is dropped; `None` when the
    /// proposals already under way did not commit within `wait`.
    pub async fn hold_proposals(
        &self,
        wait: Duration,
    ) -> Option<tokio::sync::OwnedRwLockWriteGuard<()>> {
        tokio::time::timeout(wait, self.proposals.clone().write_owned())
            .await
            .ok()
    }

    /// Commits a claim for this member; its log index is the new epoch.
    pub async fn claim(&self) -> Result<u64, ClusterError> {
        match self.propose(Command::Claim { node: self.id }).await? {
            Reply::Claimed { epoch } => Ok(epoch),
            other => Err(ClusterError::Raft(format!("claim answered {other:?}"))),
        }
    }

    /// Changes what this member's `/status` says about the host.
    pub fn report(&self, change: impl FnOnce(&mut status::HostReport)) {
        change(&mut self.report.write().expect("report lock"));
    }

    /// A handle to read the replicated state from other tasks.
    pub fn shared_state(&self) -> Arc<RwLock<Replicated>> {
        self.state.clone()
    }

    /// Confirms with a quorum that this member still leads (one heartbeat round).
    pub async fn confirm_leadership(&self) -> bool {
        self.raft.ensure_linearizable().await.is_ok()
    }

    /// Posts `body` to member `to`'s peer endpoint `path`; its answer when it is a success.
    pub async fn call_member(
        &self,
        to: NodeId,
        path: &str,
        body: Vec<u8>,
        limit: Duration,
    ) -> Result<bytes::Bytes, String> {
        let address = self
            .peers
            .routes()
            .get(&to)
            .ok_or_else(|| format!("member {to} is not a peer of this member"))?;
        let (status, answer) = self.peers.call(to, address, path, body, limit).await?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(format!(
                "member {to} answered {status}: {}",
                String::from_utf8_lossy(&answer)
            ))
        }
    }

    /// The voters other than this member whose log matches the leader's up to `index`,
    /// best first (openraft's replication metrics; empty on a follower).
    pub fn caught_up(&self, index: u64) -> Vec<NodeId> {
        let metrics = self.raft.metrics().borrow().clone();
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
        let Some(replication) = metrics.replication else {
            return Vec::new();
        };
        let mut ready: Vec<(u64, NodeId)> = replication
            .iter()
            .filter(|(id, _)| **id != self.id && voters.contains(id))
            .filter_map(|(id, matched)| Some((matched.as_ref()?.index, *id)))
            .filter(|(matched, _)| *matched >= index)
            .collect();
        ready.sort_by(|a, b| b.cmp(a));
        ready.into_iter().map(|(_, id)| id).collect()
    }

    /// The voters other than this member.
    pub fn other_voters(&self) -> Vec<NodeId> {
        let metrics = self.raft.metrics().borrow().clone();
        let voters = metrics.membership_config.membership().voter_ids();
        voters.filter(|id| *id != self.id).collect()
    }

    /// The index of the last entry in this member's log.
    pub fn last_log_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or_default()
    }

    /// Stops serving peers, shuts Raft down and returns once the storage file is closed
    /// (openraft's state-machine worker and replication tasks end after its core does, each
    /// holding the database until then), so the same data-dir can be opened again at once.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let _ = self.raft.shutdown().await;
        for server in std::mem::take(&mut *self.servers.lock().await) {
            let _ = server.await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.db.strong_count() > 0 {
            if tokio::time::Instant::now() > deadline {
                tracing::error!(
                    path = %self.db_path.display(),
                    holders = self.db.strong_count(),
                    "raft storage still open 10 s after shutdown"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Serves the peer listener, and the status listener when one is configured, until `stopped`.
async fn serve_listeners(
    config: &ClusterConfig,
    listener: TcpListener,
    peer: server::Peer,
    status: Status,
    stopped: watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ClusterError> {
    let limits = server::Limits::default();
    let mut servers = vec![tokio::spawn(server::serve(
        listener,
        server::peer_router(peer, limits),
        config.transport.acceptor(),
        limits,
        stopped.clone(),
    ))];
    if let Some(address) = &config.status_address {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ClusterError::Listen {
                address: address.clone(),
                source,
            })?;
        servers.push(tokio::spawn(server::serve(
            listener,
            server::status_router(status, config.status_token.clone().map(Into::into), None),
            None,
            limits,
            stopped,
        )));
    }
    Ok(servers)
}

/// Lifts a rejoining member's vote floor once it has applied `applied`.
async fn vote_once_caught_up(
    raft: Raft,
    vote_floor: Arc<std::sync::atomic::AtomicU64>,
    applied: u64,
) {
    let mut metrics = raft.metrics();
    loop {
        let caught_up = metrics
            .borrow_and_update()
            .last_applied
            .is_some_and(|l| l.index >= applied);
        if caught_up {
            vote_floor.store(0, std::sync::atomic::Ordering::SeqCst);
            tracing::info!("caught up with the cluster: voting again");
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// A member's Raft storage, opened: its log, its state machine, whether the log was blank
/// (a new member, or one whose storage was lost), and where it is.
struct Storage {
    log: LogStore,
    sm: StateMachine,
    blank: bool,
    db: std::sync::Weak<redb::Database>,
    path: std::path::PathBuf,
}

impl Storage {
    fn open(data_dir: &std::path::Path) -> Result<Storage, ClusterError> {
        std::fs::create_dir_all(data_dir).map_err(|e| ClusterError::Storage {
            path: data_dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let path = data_dir.join("raft.redb");
        let storage = |reason: String| ClusterError::Storage {
            path: path.clone(),
            reason,
        };
        let log = LogStore::open(&path).map_err(|e| match e {
            redb::Error::DatabaseAlreadyOpen => storage(
                "already open: another keepwarm process (or another member in this process) \
                 uses this data-dir"
                    .into(),
            ),
            e => storage(e.to_string()),
        })?;
        let db = Arc::downgrade(&log.database());
        let blank = log.is_blank().map_err(|e| storage(e.to_string()))?;
        let sm = StateMachine::open(&log, &data_dir.join("snapshot"))
            .map_err(|e| storage(e.to_string()))?;
        Ok(Storage {
            log,
            sm,
            blank,
            db,
            path,
        })
    }
}

/// A fresh cluster: every member initializes with the same membership. A member whose
/// storage was lost rejoins instead: it waits for the leader's log rather than starting
/// elections that would unseat a healthy leader, and votes only for candidates holding what
/// the others applied, until it holds it too.
async fn join_or_initialize(
    raft: &Raft,
    peers: &Peers,
    members: BTreeMap<NodeId, openraft::BasicNode>,
    blank: bool,
    vote_floor: &Arc<std::sync::atomic::AtomicU64>,
) {
    if let Some(applied) = network::running_cluster(peers).await {
        tracing::info!("peers already form a cluster: rejoining, not initializing");
        if blank && applied > 0 {
            vote_floor.store(applied, std::sync::atomic::Ordering::SeqCst);
            tracing::warn!(
                until_index = applied,
                "this member's Raft storage is blank: not voting for a candidate behind the cluster until it has caught up"
            );
            tokio::spawn(vote_once_caught_up(
                raft.clone(),
                vote_floor.clone(),
                applied,
            ));
        }
    } else if let Err(e) = raft.initialize(members).await {
        tracing::debug!("raft already initialized: {e}");
    }
}

/// openraft's settings for this member's timings.
fn raft_config(config: &ClusterConfig) -> Result<openraft::Config, ClusterError> {
    openraft::Config {
        cluster_name: "keepwarm".into(),
        heartbeat_interval: config.heartbeat.as_millis() as u64,
        election_timeout_min: config.election_timeout.0.as_millis() as u64,
        election_timeout_max: config.election_timeout.1.as_millis() as u64,
        install_snapshot_timeout: 2_000,
        // openraft 0.9 times every append out after one heartbeat interval (50 ms). A
        // member far behind (a deposed leader, a restarted host) was sent batches of 300
        // entries that a busy machine could not carry, parse and store within that: each
        // timed out, was sent again after a pause, and the member's election timer fired
        // before it caught up. Smaller batches arrive in time and still batch well.
        max_payload_entries: 64,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ClusterError::Raft(e.to_string()))
}
