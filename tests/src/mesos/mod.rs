//! A Mesos master **simulator** for testing the Mesos plugin (Mesos itself cannot be installed
//! here). It speaks the v1 scheduler HTTP API in JSON as `docs/scheduler-http-api.md` and
//! `include/mesos/v1/scheduler/scheduler.proto` describe it, and its agents run every task as
//! a real Docker container (ports published on 127.0.0.1), so addresses and proxies are real.
//!
//! Covered: `POST /api/v1/scheduler` (405 other methods, 415 non-JSON, 400 unparseable);
//! `SUBSCRIBE` with a RecordIO event stream, `Mesos-Stream-Id`, `SUBSCRIBED` with
//! `heartbeat_interval_seconds`, framework ids kept across re-subscription (the old stream is
//! closed; `force` decides between two live ones), `ERROR` "Framework has been removed" for a
//! framework whose `failover_timeout` ran out (its tasks killed then); calls without a stream
//! id or with another → 400, from an unsubscribed framework → 403; `HEARTBEAT`s; `OFFERS` of each
//! agent's unused cpus/mem/ports every allocation interval, filters (`refuse_seconds`, default
//! 5 s), `REVIVE` (allocating at once, as Mesos' allocator does), `SUPPRESS`; `ACCEPT` with `LAUNCH` (offers usable once and from one agent,
//! resources and port mappings checked: `TASK_ERROR`, invalid offers: `TASK_LOST`), `DECLINE`,
//! `KILL`, `ACKNOWLEDGE` (status updates with a `uuid` re-sent until acknowledged, one at a
//! time per task, as the agent's status update manager does), `RECONCILE` explicit (unknown
//! tasks → `TASK_LOST`) and implicit, `TEARDOWN`; agent removal (`TASK_LOST`
//! REASON_AGENT_REMOVED, `RESCIND`, `FAILURE`); a standby master answering 307 with the
//! leader's `Location`.
//!
//! Not covered: protobuf encoding, authentication, roles/quota/reservations/volumes, custom
//! executors and `MESSAGE`/`SHUTDOWN`, task groups, health checks, inverse offers, partition
//! awareness (`TASK_UNREACHABLE`), master failover and agent re-registration, `--offer_timeout`,
//! the operator API, and the agents' sandbox (`/files`).

mod agent;
pub mod client;
mod master;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use master::Shared;
use serde_json::Value;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The simulated cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub agents: usize,
    /// Resources of each agent.
    pub cpus: f64,
    pub mem: f64,
    pub ports_per_agent: u16,
    /// Mesos' default is 15 s.
    pub heartbeat: Duration,
    /// Mesos' default is 1 s.
    pub allocation_interval: Duration,
    /// How soon an unacknowledged update is re-sent (Mesos starts at 10 s).
    pub update_retry: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            agents: 1,
            cpus: 8.0,
            mem: 16_384.0,
            ports_per_agent: 100,
            heartbeat: Duration::from_secs(1),
            allocation_interval: Duration::from_millis(50),
            update_retry: Duration::from_secs(1),
        }
    }
}

/// Hands out disjoint host-port ranges to the agents of every simulator in this process
/// (and, by the process id, mostly apart from other test processes), below the ephemeral range.
fn port_block(size: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 20) as u16 * 600;
    let offset = NEXT.fetch_add(size, Ordering::Relaxed) % 600;
    base + offset
}

/// A running simulated master, on a unix socket and on 127.0.0.1.
pub struct MesosMaster {
    shared: Arc<Shared>,
    pub socket: PathBuf,
    pub addr: std::net::SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for MesosMaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MesosMaster")
            .field("id", &self.shared.master_id)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Drop for MesosMaster {
    /// Stops serving and removes every container its agents started, even when a test
    /// panicked halfway.
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter label=mesos-sim.master={} | xargs -r docker rm -f >/dev/null 2>&1",
                self.shared.master_id
            ))
            .status();
    }
}

/// One task as the master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub framework_id: String,
    pub task_id: String,
    pub agent_id: String,
    pub state: String,
    pub container: Option<String>,
    /// Status updates sent and not yet acknowledged (or waiting behind one that is not).
    pub unacknowledged: usize,
}

impl MesosMaster {
    pub async fn start(options: Options) -> MesosMaster {
        Self::start_on(options, "127.0.0.1:0").await
    }

    /// As [`MesosMaster::start`], listening on `listen` (a loopback `host:port`).
    pub async fn start_on(options: Options, listen: &str) -> MesosMaster {
        let first_port = port_block(options.ports_per_agent * options.agents as u16);
        let shared = Arc::new(Shared::new(options, agent::Engine::connect(), first_port));
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("mesos.sock");
        let unix = UnixListener::bind(&socket).expect("bind the master's socket");
        let tcp = TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("bind {listen}: {e}"));
        let addr = tcp.local_addr().expect("address");
        let mut tasks = Vec::new();
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok((stream, _)) = unix.accept().await {
                serve(TokioIo::new(stream), s.clone(), None);
            }
        }));
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                serve(TokioIo::new(stream), s.clone(), None);
            }
        }));
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                every.tick().await;
                s.tick();
            }
        }));
        MesosMaster {
            shared,
            socket,
            addr,
            tasks,
            _dir: dir,
        }
    }

    /// A non-leading master: answers every call with 307 and the leader's `Location`.
    pub async fn standby_for(leader: &MesosMaster) -> (std::net::SocketAddr, JoinHandle<()>) {
        let tcp = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = tcp.local_addr().expect("address");
        let location = format!("//{}/api/v1/scheduler", leader.addr);
        let shared = leader.shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = tcp.accept().await {
                serve(TokioIo::new(stream), shared.clone(), Some(location.clone()));
            }
        });
        (addr, task)
    }

    pub fn route(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Containers started for tasks so far.
    pub fn launched(&self) -> usize {
        self.shared.state.lock().expect("state").launched
    }

    pub fn tasks(&self) -> Vec<TaskView> {
        let st = self.shared.state.lock().expect("state");
        let mut v: Vec<TaskView> = st
            .tasks
            .iter()
            .map(|((fid, tid), t)| TaskView {
                framework_id: fid.clone(),
                task_id: tid.clone(),
                agent_id: t.agent_id.clone(),
                state: t.state.to_string(),
                container: t.container.clone(),
                unacknowledged: t.updates.len(),
            })
            .collect();
        v.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        v
    }

    /// (framework id, name, connected) of every framework the master knows.
    pub fn frameworks(&self) -> Vec<(String, String, bool)> {
        let st = self.shared.state.lock().expect("state");
        st.frameworks
            .iter()
            .map(|(id, f)| (id.clone(), f.name.clone(), f.connection.is_some()))
            .collect()
    }

    pub fn removed_frameworks(&self) -> Vec<String> {
        let st = self.shared.state.lock().expect("state");
        st.removed.iter().cloned().collect()
    }

    pub fn agents(&self) -> Vec<String> {
        let st = self.shared.state.lock().expect("state");
        st.agents
            .iter()
            .filter(|a| !a.removed)
            .map(|a| a.id.clone())
            .collect()
    }

    /// Subscriptions accepted so far (first ones and re-subscriptions).
    pub fn subscriptions(&self) -> usize {
        self.shared.state.lock().expect("state").subscriptions
    }

    /// From now on nothing reaches the framework's current stream, which stays open: a
    /// network partition, noticed only through the missing heartbeats.
    pub fn partition(&self, framework_id: &str) {
        let mut st = self.shared.state.lock().expect("state");
        if let Some(f) = st.frameworks.get_mut(framework_id) {
            f.partitioned = true;
        }
    }

    /// Removes an agent from the cluster, as a failed health check does.
    pub async fn remove_agent(&self, agent_id: &str) {
        self.shared.remove_agent(agent_id).await;
    }

    /// Tears down every framework (and so every task); for the end of a test.
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self.frameworks().into_iter().map(|f| f.0).collect();
        for id in ids {
            self.shared.remove_framework(&id);
        }
        // remove_framework removes containers in the background
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()).boxed())
        .expect("a response")
}

fn serve<I>(io: I, shared: Arc<Shared>, redirect: Option<String>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            let redirect = redirect.clone();
            async move { Ok::<_, Infallible>(handle(req, shared, redirect).await) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    });
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    redirect: Option<String>,
) -> Response<Body> {
    if req.uri().path() != "/api/v1/scheduler" {
        return reply(404, "");
    }
    if let Some(location) = redirect {
        return Response::builder()
            .status(307)
            .header("location", location)
            .body(Full::new(Bytes::new()).boxed())
            .expect("a response");
    }
    if req.method() != hyper::Method::POST {
        return reply(405, "Expecting 'POST'");
    }
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return reply(
            415,
            "Expecting 'Content-Type' of application/json (the simulator speaks JSON only)",
        );
    }
    let stream_id = req
        .headers()
        .get("mesos-stream-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(400, format!("Failed to read the body: {e}")),
    };
    let call: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reply(400, format!("Failed to parse body into Call protobuf: {e}")),
    };
    if call["type"].as_str() == Some("SUBSCRIBE") {
        let (tx, rx) = mpsc::unbounded_channel();
        return match shared.subscribe(&call, tx) {
            Ok((framework_id, stream_id)) => Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("mesos-stream-id", &stream_id)
                .body(
                    EventBody {
                        rx,
                        _guard: Disconnect {
                            shared,
                            framework_id,
                            stream_id,
                        },
                    }
                    .boxed(),
                )
                .expect("a response"),
            Err((status, message)) => reply(status, message),
        };
    }
    let (status, message) = shared.call(stream_id.as_deref(), &call);
    reply(status, message)
}

/// The body of a subscription: events as they are queued, ending when the master drops the
/// sender (a newer subscription, an error) or the client goes away.
struct EventBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    _guard: Disconnect,
}

impl hyper::body::Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Tells the master a subscription ended when its body is dropped.
struct Disconnect {
    shared: Arc<Shared>,
    framework_id: String,
    stream_id: String,
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        self.shared
            .disconnected(&self.framework_id, &self.stream_id);
    }
}
