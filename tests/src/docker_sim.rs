//! A simulated Docker engine for takeover at scale: the subset of the Docker Engine API the
//! Docker plugin uses (`/_ping`; containers create, start, inspect, list by label, pause,
//! unpause, delete, logs), on a unix socket, with a configurable latency per call, holding
//! thousands of containers no real machine here could run.
//!
//! A "running" container runs no process: its published port is an in-process listener that
//! answers the action proxy's `/init` and `/run` with `{"ok":true}` (enough for the host's
//! readiness probe, a prewarm's init and a trivial activation), and counts the `/run`s each
//! activation id reached (the delivery contract's "runs in the container"). Its output is what
//! an OpenWhisk runtime writes: after each `/run` has answered, the end-of-activation sentinel
//! on stdout and on stderr, served by `logs` as Docker serves it (multiplexed frames,
//! `timestamps`, `since`). What it leaves out: images (every image exists), networks (ports
//! are published on the binding's `HostIp`, default 127.0.0.1), resource limits, events,
//! exec, stats and any output besides the sentinels.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;

/// How the simulated engine behaves.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Added to every API call (a real daemon answers inspect in about 1–5 ms).
    pub latency: Duration,
    /// Added to a container's start (what a real engine spends making one, ~0.3–0.6 s here).
    pub start_latency: Duration,
    /// How long the proxy takes to answer `/run` (an action doing some work).
    pub run_time: Duration,
    /// Added to a `logs` call (a log driver slow to flush): it widens the moment between a
    /// blocking activation's result and its completion, which the host sends once the
    /// activation's logs are read.
    pub logs_latency: Duration,
}

#[derive(Debug)]
struct SimContainer {
    id: String,
    name: String,
    image: String,
    labels: BTreeMap<String, String>,
    /// `created`, `running`, `paused` or `exited`.
    status: &'static str,
    private_port: u16,
    host_ip: String,
    host_port: Option<u16>,
    proxy: Option<JoinHandle<()>>,
    output: Output,
}

/// A container's output lines: (epoch millis, Docker stream number: 1 stdout, 2 stderr, text).
type Output = Arc<Mutex<Vec<(i64, u8, String)>>>;

const SENTINEL: &str = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

impl Drop for SimContainer {
    fn drop(&mut self) {
        if let Some(p) = self.proxy.take() {
            p.abort();
        }
    }
}

#[derive(Debug, Default)]
struct Engine {
    containers: Mutex<HashMap<String, SimContainer>>,
    calls: AtomicU64,
    next: AtomicU64,
    latency: Duration,
    start_latency: Duration,
    run_time: Duration,
    logs_latency: Duration,
    /// `/run`s received, by the body's `activation_id`.
    runs: Runs,
}

type Runs = Arc<Mutex<HashMap<String, usize>>>;

/// A running simulated engine; dropped, it stops and its containers' listeners close.
#[derive(Debug)]
pub struct SimEngine {
    pub socket: PathBuf,
    engine: Arc<Engine>,
    server: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for SimEngine {
    fn drop(&mut self) {
        self.server.abort();
        self.engine.containers.lock().expect("containers").clear();
    }
}

impl SimEngine {
    pub async fn start(options: SimOptions) -> SimEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).expect("bind the engine's socket");
        let engine = Arc::new(Engine {
            latency: options.latency,
            start_latency: options.start_latency,
            run_time: options.run_time,
            logs_latency: options.logs_latency,
            ..Engine::default()
        });
        let api = Router::new()
            .route("/containers/create", post(create))
            .route("/containers/json", get(list))
            .route("/containers/{id}/json", get(inspect))
            .route("/containers/{id}/start", post(start))
            .route("/containers/{id}/pause", post(pause))
            .route("/containers/{id}/unpause", post(unpause))
            .route("/containers/{id}/logs", get(logs))
            .route("/containers/{id}", delete(remove));
        let app = Router::new()
            .route("/_ping", get(|| async { "OK" }))
            .nest("/{version}", api)
            .layer(axum::middleware::from_fn_with_state(engine.clone(), count))
            .with_state(engine.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SimEngine {
            socket,
            engine,
            server,
            _dir: dir,
        }
    }

    /// The Docker plugin's route to this engine.
    pub fn route(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Containers that exist (any state).
    pub fn containers(&self) -> usize {
        self.engine.containers.lock().expect("containers").len()
    }

    /// Containers created so far (including those since removed).
    pub fn created(&self) -> usize {
        self.engine.next.load(Ordering::Relaxed) as usize
    }

    /// How many `/run`s each activation id reached, across every container.
    pub fn runs(&self) -> HashMap<String, usize> {
        self.engine.runs.lock().expect("runs").clone()
    }

    /// API calls answered so far.
    pub fn calls(&self) -> u64 {
        self.engine.calls.load(Ordering::Relaxed)
    }
}

/// Counts every call and adds the configured latency.
async fn count(
    State(engine): State<Arc<Engine>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    engine.calls.fetch_add(1, Ordering::Relaxed);
    if !engine.latency.is_zero() {
        tokio::time::sleep(engine.latency).await;
    }
    next.run(request).await
}

/// Docker's error body.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

fn no_such(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("No such container: {id}"))
}

async fn create(
    State(engine): State<Arc<Engine>>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Response {
    let n = engine.next.fetch_add(1, Ordering::Relaxed);
    let id = format!("{n:016x}{:048x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let name = query
        .get("name")
        .cloned()
        .unwrap_or_else(|| format!("sim_{n}"));
    let labels: BTreeMap<String, String> =
        serde_json::from_value(body["Labels"].clone()).unwrap_or_default();
    let bindings = body["HostConfig"]["PortBindings"].as_object();
    let (private_port, host_ip) = bindings
        .and_then(|b| b.iter().next())
        .map(|(port, binding)| {
            let port = port.trim_end_matches("/tcp").parse().unwrap_or(8080);
            let ip = binding[0]["HostIp"].as_str().unwrap_or_default();
            let ip = if ip.is_empty() { "127.0.0.1" } else { ip };
            (port, ip.to_owned())
        })
        .unwrap_or((8080, "127.0.0.1".to_owned()));
    let mut containers = engine.containers.lock().expect("containers");
    if containers.values().any(|c| c.name == name) {
        return error(
            StatusCode::CONFLICT,
            format!("Conflict. The container name \"/{name}\" is already in use"),
        );
    }
    containers.insert(
        id.clone(),
        SimContainer {
            id: id.clone(),
            name,
            image: body["Image"].as_str().unwrap_or_default().to_owned(),
            labels,
            status: "created",
            private_port,
            host_ip,
            host_port: None,
            proxy: None,
            output: Output::default(),
        },
    );
    (
        StatusCode::CREATED,
        Json(json!({ "Id": id, "Warnings": [] })),
    )
        .into_response()
}

/// An action proxy that runs nothing: `/init` and `/run` answer `{"ok":true}`, `/run` after
/// `run_time`, counted in `runs` when it arrives, its sentinels written to `output` once it
/// has answered (a runtime flushes them after the answer).
async fn proxy(ip: &str, run_time: Duration, runs: Runs, output: Output) -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind a proxy port");
    let port = listener.local_addr().expect("local address").port();
    let app = Router::new()
        .route("/init", post(|| async { Json(json!({ "ok": true })) }))
        .route(
            "/run",
            post(move |Json(body): Json<Value>| async move {
                let id = body["activation_id"].as_str().unwrap_or("").to_owned();
                *runs.lock().expect("runs").entry(id).or_default() += 1;
                // the action runs on when the caller goes away (a host killed mid-run), as
                // a runtime's process does: not in the request's future, which hyper drops
                let output = output.clone();
                let action = tokio::spawn(async move {
                    if !run_time.is_zero() {
                        tokio::time::sleep(run_time).await;
                    }
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        let mut lines = output.lock().expect("output");
                        lines.push((now_ms(), 1, SENTINEL.to_owned()));
                        lines.push((now_ms(), 2, SENTINEL.to_owned()));
                    });
                });
                let _ = action.await;
                Json(json!({ "ok": true }))
            }),
        );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

async fn start(
    State(engine): State<Arc<Engine>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    let ip = match engine.containers.lock().expect("containers").get(&id) {
        Some(c) if c.status == "created" || c.status == "exited" => c.host_ip.clone(),
        Some(_) => return StatusCode::NOT_MODIFIED.into_response(),
        None => return no_such(&id),
    };
    if !engine.start_latency.is_zero() {
        tokio::time::sleep(engine.start_latency).await;
    }
    let output = match engine.containers.lock().expect("containers").get(&id) {
        Some(c) => c.output.clone(),
        None => return no_such(&id),
    };
    let (port, task) = proxy(&ip, engine.run_time, engine.runs.clone(), output).await;
    match engine.containers.lock().expect("containers").get_mut(&id) {
        Some(c) => {
            c.status = "running";
            c.host_port = Some(port);
            c.proxy = Some(task);
            StatusCode::NO_CONTENT.into_response()
        }
        None => {
            task.abort();
            no_such(&id)
        }
    }
}

fn ports_of(c: &SimContainer) -> Value {
    let key = format!("{}/tcp", c.private_port);
    match c.host_port {
        Some(port) if c.status != "exited" => json!({
            key: [{ "HostIp": c.host_ip, "HostPort": port.to_string() }]
        }),
        _ => json!({ key: null }),
    }
}

async fn inspect(
    State(engine): State<Arc<Engine>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    let containers = engine.containers.lock().expect("containers");
    let Some(c) = containers.get(&id) else {
        return no_such(&id);
    };
    Json(json!({
        "Id": c.id,
        "Name": format!("/{}", c.name),
        "Image": c.image,
        "State": { "Status": c.status, "Running": c.status == "running", "Paused": c.status == "paused" },
        "Config": { "Image": c.image, "Labels": c.labels },
        "NetworkSettings": { "Ports": ports_of(c), "Networks": {} },
    }))
    .into_response()
}

/// `filters={"label":["k=v","k"]}`: containers carrying every one.
fn matches(c: &SimContainer, wanted: &[String]) -> bool {
    wanted.iter().all(|w| match w.split_once('=') {
        Some((k, v)) => c.labels.get(k).is_some_and(|have| have == v),
        None => c.labels.contains_key(w),
    })
}

async fn list(
    State(engine): State<Arc<Engine>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let all = query.get("all").is_some_and(|a| a == "1" || a == "true");
    let filters: Value = match query.get("filters") {
        Some(f) => match serde_json::from_str(f) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid filters: {e}")),
        },
        None => json!({}),
    };
    let wanted: Vec<String> = serde_json::from_value(filters["label"].clone()).unwrap_or_default();
    let containers = engine.containers.lock().expect("containers");
    let listed: Vec<Value> = containers
        .values()
        .filter(|c| all || c.status == "running")
        .filter(|c| matches(c, &wanted))
        .map(|c| {
            let ports: Vec<Value> = c
                .host_port
                .filter(|_| c.status != "exited")
                .map(|p| {
                    json!({ "IP": c.host_ip, "PrivatePort": c.private_port, "PublicPort": p, "Type": "tcp" })
                })
                .into_iter()
                .collect();
            json!({
                "Id": c.id,
                "Names": [format!("/{}", c.name)],
                "Image": c.image,
                "Labels": c.labels,
                "State": c.status,
                "Ports": ports,
                "NetworkSettings": { "Networks": {} },
            })
        })
        .collect();
    Json(listed).into_response()
}

fn set_status(engine: &Engine, id: &str, from: &str, to: &'static str) -> Response {
    let mut containers = engine.containers.lock().expect("containers");
    match containers.get_mut(id) {
        None => no_such(id),
        Some(c) if c.status == from => {
            c.status = to;
            StatusCode::NO_CONTENT.into_response()
        }
        Some(c) => error(
            StatusCode::CONFLICT,
            format!("Container {id} is {}, not {from}", c.status),
        ),
    }
}

async fn pause(
    State(engine): State<Arc<Engine>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    set_status(&engine, &id, "running", "paused")
}

async fn unpause(
    State(engine): State<Arc<Engine>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    set_status(&engine, &id, "paused", "running")
}

/// Docker's `logs` with `timestamps=1`: a frame per line (stream, 0, 0, 0, big-endian
/// length), each line `<RFC 3339 time> <text>`, those at or after `since` (seconds with a
/// fraction).
async fn logs(
    State(engine): State<Arc<Engine>>,
    Path((_, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !engine.logs_latency.is_zero() {
        tokio::time::sleep(engine.logs_latency).await;
    }
    let Some(output) = engine
        .containers
        .lock()
        .expect("containers")
        .get(&id)
        .map(|c| c.output.clone())
    else {
        return no_such(&id);
    };
    let since_ms = query
        .get("since")
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(0, |s| (s * 1000.0).round() as i64);
    let mut body = Vec::new();
    for (at, stream, text) in output.lock().expect("output").iter() {
        if *at < since_ms {
            continue;
        }
        let line = format!("{} {text}\n", keepwarm::activation::logs::instant(*at));
        body.extend_from_slice(&[*stream, 0, 0, 0]);
        body.extend_from_slice(&(line.len() as u32).to_be_bytes());
        body.extend_from_slice(line.as_bytes());
    }
    (
        [("content-type", "application/vnd.docker.multiplexed-stream")],
        body,
    )
        .into_response()
}

async fn remove(
    State(engine): State<Arc<Engine>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    match engine.containers.lock().expect("containers").remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => no_such(&id),
    }
}
