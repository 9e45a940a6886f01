//! The simulated master's state and rules: frameworks and their subscriptions, agents, offers,
//! tasks and their reliably delivered status updates. Everything here runs under one lock and
//! never waits; Docker work is spawned and reports back through [`Shared`].

use super::agent::{Engine, Launch};
use super::Options;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Mesos' smallest allocatable resources (cpus, MB).
const MIN_CPUS: f64 = 0.01;
const MIN_MEM: f64 = 32.0;
/// `refuse_seconds` when a framework sends no filters (Mesos' default).
const DEFAULT_REFUSE: f64 = 5.0;

pub(super) struct Connection {
    pub stream_id: String,
    pub tx: UnboundedSender<Bytes>,
}

pub(super) struct Framework {
    pub name: String,
    pub failover_timeout: Duration,
    pub connection: Option<Connection>,
    pub disconnected_at: Option<Instant>,
    /// Events to the current stream are dropped with its connection left open (a network
    /// partition the scheduler can only notice by the missing heartbeats).
    pub partitioned: bool,
    filters: HashMap<String, Instant>,
    suppressed: bool,
}

#[derive(Clone)]
pub(super) struct Agent {
    pub id: String,
    pub hostname: String,
    cpus: f64,
    mem: f64,
    ports: (u16, u16),
    pub removed: bool,
}

struct Offer {
    framework_id: String,
    agent_id: String,
    cpus: f64,
    mem: f64,
    ports: Vec<u16>,
}

pub(super) struct Task {
    pub agent_id: String,
    pub state: &'static str,
    cpus: f64,
    mem: f64,
    ports: Vec<u16>,
    pub container: Option<String>,
    kill_requested: bool,
    /// Status updates not yet acknowledged; the front one is (re)sent until it is.
    pub updates: VecDeque<Value>,
    front_sent: Option<Instant>,
}

impl Task {
    fn is_terminal(&self) -> bool {
        is_terminal(self.state)
    }
}

fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_ERROR"
            | "TASK_LOST"
            | "TASK_DROPPED"
    )
}

#[derive(Default)]
pub(super) struct State {
    next: u64,
    pub frameworks: HashMap<String, Framework>,
    pub removed: HashSet<String>,
    pub agents: Vec<Agent>,
    offers: HashMap<String, Offer>,
    /// By (framework id, task id).
    pub tasks: HashMap<(String, String), Task>,
    pub launched: usize,
    pub subscriptions: usize,
    last_allocation: Option<Instant>,
    last_heartbeat: Option<Instant>,
}

/// What the HTTP layer needs back from a call.
pub(super) type Reply = (u16, String);

pub(super) struct Shared {
    pub master_id: String,
    pub options: Options,
    pub state: Mutex<State>,
    pub engine: Engine,
}

pub(super) fn encode(event: &Value) -> Bytes {
    let data = serde_json::to_vec(event).expect("events serialize");
    let mut out = format!("{}\n", data.len()).into_bytes();
    out.extend_from_slice(&data);
    Bytes::from(out)
}

fn id(value: &str) -> Value {
    json!({ "value": value })
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_str().map(str::to_owned)
}

fn status(
    fid_task: &(String, String),
    agent_id: &str,
    state: &str,
    source: &str,
    reason: Option<&str>,
    message: Option<&str>,
    reliable: bool,
) -> Value {
    let mut s = json!({
        "task_id": id(&fid_task.1),
        "agent_id": id(agent_id),
        "state": state,
        "source": source,
        "timestamp": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64(),
    });
    if let Some(r) = reason {
        s["reason"] = json!(r);
    }
    if let Some(m) = message {
        s["message"] = json!(m);
    }
    if reliable {
        s["uuid"] = json!(
            base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
        );
    }
    json!({ "type": "UPDATE", "update": { "status": s } })
}

impl State {
    fn next_id(&mut self, master_id: &str, kind: &str) -> String {
        self.next += 1;
        format!("{master_id}-{kind}{}", self.next)
    }

    fn send(&self, framework_id: &str, event: &Value) -> bool {
        match self
            .frameworks
            .get(framework_id)
            .filter(|f| !f.partitioned)
            .and_then(|f| f.connection.as_ref())
        {
            Some(c) => c.tx.send(encode(event)).is_ok(),
            None => false,
        }
    }

    /// Queues a reliable update and sends it if it is the task's only pending one.
    fn push_update(&mut self, key: &(String, String), update: Value) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        task.updates.push_back(update);
        if task.updates.len() == 1 {
            self.send_front(key);
        }
    }

    fn send_front(&mut self, key: &(String, String)) {
        let Some(front) = self.tasks.get(key).and_then(|t| t.updates.front().cloned()) else {
            return;
        };
        let sent = self.send(&key.0, &front);
        if let Some(t) = self.tasks.get_mut(key) {
            t.front_sent = sent.then(Instant::now);
        }
    }

    /// A task reached `state`: record it, free its resources if it ended, tell the framework.
    fn transition(
        &mut self,
        key: &(String, String),
        state: &'static str,
        source: &str,
        reason: Option<&str>,
        message: Option<&str>,
    ) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        task.state = state;
        let agent = task.agent_id.clone();
        let update = status(key, &agent, state, source, reason, message, true);
        self.push_update(key, update);
    }

    fn used(&self, agent_id: &str) -> (f64, f64, HashSet<u16>) {
        let mut cpus = 0.0;
        let mut mem = 0.0;
        let mut ports = HashSet::new();
        for t in self
            .tasks
            .values()
            .filter(|t| t.agent_id == agent_id && !t.is_terminal())
        {
            cpus += t.cpus;
            mem += t.mem;
            ports.extend(&t.ports);
        }
        for o in self.offers.values().filter(|o| o.agent_id == agent_id) {
            cpus += o.cpus;
            mem += o.mem;
            ports.extend(&o.ports);
        }
        (cpus, mem, ports)
    }

    fn rescind_offers(&mut self, pred: impl Fn(&Offer) -> bool) {
        let gone: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| pred(o))
            .map(|(id, _)| id.clone())
            .collect();
        for offer_id in gone {
            let o = self.offers.remove(&offer_id).expect("listed");
            self.send(
                &o.framework_id,
                &json!({"type": "RESCIND", "rescind": {"offer_id": id(&offer_id)}}),
            );
        }
    }
}

fn ranges(ports: &[u16]) -> Vec<Value> {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::new();
    for p in sorted {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == p => *end = p,
            _ => out.push((p, p)),
        }
    }
    out.into_iter()
        .map(|(b, e)| json!({"begin": b, "end": e}))
        .collect()
}

/// The cpus, mem and ports a `TaskInfo` asks for.
fn task_resources(task: &Value) -> (f64, f64, Vec<u16>) {
    let mut cpus = 0.0;
    let mut mem = 0.0;
    let mut ports = Vec::new();
    for r in task["resources"].as_array().into_iter().flatten() {
        match r["name"].as_str() {
            Some("cpus") => cpus += r["scalar"]["value"].as_f64().unwrap_or(0.0),
            Some("mem") => mem += r["scalar"]["value"].as_f64().unwrap_or(0.0),
            Some("ports") => {
                for range in r["ranges"]["range"].as_array().into_iter().flatten() {
                    let (b, e) = (range["begin"].as_u64(), range["end"].as_u64());
                    if let (Some(b), Some(e)) = (b, e) {
                        ports.extend((b..=e.min(b + 1000)).map(|p| p as u16));
                    }
                }
            }
            _ => {}
        }
    }
    (cpus, mem, ports)
}

impl Shared {
    pub fn new(options: Options, engine: Engine, first_port: u16) -> Shared {
        let master_id = format!("sim{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut state = State::default();
        for i in 0..options.agents {
            let begin = first_port + (i as u16) * options.ports_per_agent;
            state.agents.push(Agent {
                id: format!("{master_id}-S{i}"),
                hostname: "127.0.0.1".into(),
                cpus: options.cpus,
                mem: options.mem,
                ports: (begin, begin + options.ports_per_agent - 1),
                removed: false,
            });
        }
        Shared {
            master_id,
            options,
            state: Mutex::new(state),
            engine,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("master state")
    }

    // ---- subscription ------------------------------------------------------------------

    /// `SUBSCRIBE`: the first events for the new stream, or an HTTP error. The stream is
    /// registered only when the framework may subscribe.
    pub fn subscribe(
        &self,
        call: &Value,
        tx: UnboundedSender<Bytes>,
    ) -> Result<(String, String), Reply> {
        let info = &call["subscribe"]["framework_info"];
        if !info.is_object() {
            return Err((
                400,
                "Expecting 'subscribe.framework_info' to be present".into(),
            ));
        }
        let (Some(_user), Some(name)) = (text(info, &["user"]), text(info, &["name"])) else {
            return Err((400, "'framework_info' needs 'user' and 'name'".into()));
        };
        let force = call["subscribe"]["force"].as_bool().unwrap_or(false);
        let failover_timeout =
            Duration::from_secs_f64(info["failover_timeout"].as_f64().unwrap_or(0.0).max(0.0));
        let mut st = self.lock();
        let stream_id = uuid::Uuid::new_v4().to_string();
        let framework_id = match text(info, &["id", "value"]) {
            Some(fid) if st.removed.contains(&fid) => {
                let _ = tx.send(encode(
                    &json!({"type": "ERROR", "error": {"message": "Framework has been removed"}}),
                ));
                return Ok((fid, stream_id));
            }
            Some(fid) => {
                if let Some(f) = st.frameworks.get(&fid) {
                    if f.connection.is_some() && !force {
                        let _ = tx.send(encode(&json!({"type": "ERROR", "error": {"message":
                            "Framework is already subscribed on another connection and \
                             'force' is not set"}})));
                        return Ok((fid, stream_id));
                    }
                }
                fid
            }
            None => st.next_id(&self.master_id, "F"),
        };
        let framework = st
            .frameworks
            .entry(framework_id.clone())
            .or_insert_with(|| Framework {
                name: name.clone(),
                failover_timeout,
                connection: None,
                disconnected_at: None,
                partitioned: false,
                filters: HashMap::new(),
                suppressed: false,
            });
        framework.name = name;
        framework.failover_timeout = failover_timeout;
        framework.disconnected_at = None;
        framework.partitioned = false;
        // Replacing the connection drops the old sender: the old stream ends.
        framework.connection = Some(Connection {
            stream_id: stream_id.clone(),
            tx,
        });
        st.send(
            &framework_id,
            &json!({"type": "SUBSCRIBED", "subscribed": {
                "framework_id": id(&framework_id),
                "heartbeat_interval_seconds": self.options.heartbeat.as_secs_f64(),
            }}),
        );
        // Offers made on the old stream are void; pending updates go out on the new one.
        st.rescind_offers(|o| o.framework_id == framework_id);
        let keys: Vec<_> = st
            .tasks
            .keys()
            .filter(|k| k.0 == framework_id)
            .cloned()
            .collect();
        for key in keys {
            st.send_front(&key);
        }
        st.last_allocation = None;
        st.subscriptions += 1;
        Ok((framework_id, stream_id))
    }

    /// The subscription stream `stream_id` of `framework_id` closed.
    pub fn disconnected(&self, framework_id: &str, stream_id: &str) {
        let mut st = self.lock();
        let Some(f) = st.frameworks.get_mut(framework_id) else {
            return;
        };
        if f.connection
            .as_ref()
            .is_some_and(|c| c.stream_id == stream_id)
        {
            f.connection = None;
            f.disconnected_at = Some(Instant::now());
            // A disconnected framework's offers go back to the pool.
            st.rescind_offers(|o| o.framework_id == framework_id);
        }
    }

    // ---- calls -------------------------------------------------------------------------

    /// Any call but `SUBSCRIBE`, after the stream id check.
    pub fn call(self: &Arc<Self>, stream_id: Option<&str>, call: &Value) -> Reply {
        let Some(fid) = text(call, &["framework_id", "value"]) else {
            return (400, "Expecting 'framework_id' to be present".into());
        };
        {
            let st = self.lock();
            let connection = st.frameworks.get(&fid).and_then(|f| f.connection.as_ref());
            let Some(connection) = connection else {
                return (403, "Framework is not subscribed".into());
            };
            match stream_id {
                None => {
                    return (
                        400,
                        "All non-subscribe calls should include the 'Mesos-Stream-Id' header"
                            .into(),
                    )
                }
                Some(s) if s != connection.stream_id => {
                    return (
                        400,
                        format!(
                            "The stream ID '{s}' included in this request didn't match the \
                             stream ID currently associated with framework ID {fid}"
                        ),
                    )
                }
                Some(_) => {}
            }
        }
        match call["type"].as_str().unwrap_or_default() {
            "ACCEPT" => self.accept(&fid, &call["accept"]),
            "DECLINE" => self.decline(&fid, &call["decline"]),
            "KILL" => self.kill(&fid, &call["kill"]),
            "ACKNOWLEDGE" => self.acknowledge(&fid, &call["acknowledge"]),
            "RECONCILE" => self.reconcile(&fid, &call["reconcile"]),
            "REVIVE" => {
                let mut st = self.lock();
                if let Some(f) = st.frameworks.get_mut(&fid) {
                    f.filters.clear();
                    f.suppressed = false;
                }
                (202, String::new())
            }
            "SUPPRESS" => {
                if let Some(f) = self.lock().frameworks.get_mut(&fid) {
                    f.suppressed = true;
                }
                (202, String::new())
            }
            "TEARDOWN" => {
                self.remove_framework(&fid);
                (202, String::new())
            }
            other => (
                400,
                format!("the Mesos master simulator does not implement {other:?} calls"),
            ),
        }
    }

    fn filter(st: &mut State, fid: &str, agent_id: &str, filters: &Value) {
        let refuse = filters["refuse_seconds"].as_f64().unwrap_or(DEFAULT_REFUSE);
        if let Some(f) = st.frameworks.get_mut(fid) {
            if refuse > 0.0 {
                f.filters.insert(
                    agent_id.to_owned(),
                    Instant::now() + Duration::from_secs_f64(refuse),
                );
            }
        }
    }

    fn decline(&self, fid: &str, decline: &Value) -> Reply {
        let mut st = self.lock();
        for offer_id in decline["offer_ids"].as_array().into_iter().flatten() {
            let Some(oid) = text(offer_id, &["value"]) else {
                continue;
            };
            if st.offers.get(&oid).is_some_and(|o| o.framework_id == fid) {
                let o = st.offers.remove(&oid).expect("present");
                Self::filter(&mut st, fid, &o.agent_id, &decline["filters"]);
            }
        }
        (202, String::new())
    }

    fn accept(self: &Arc<Self>, fid: &str, accept: &Value) -> Reply {
        let mut st = self.lock();
        let mut pool: Option<(String, f64, f64, HashSet<u16>)> = None;
        let mut invalid = None;
        let offer_ids: Vec<String> = accept["offer_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| text(o, &["value"]))
            .collect();
        if offer_ids.is_empty() {
            invalid = Some("No offers specified".to_string());
        }
        for oid in &offer_ids {
            match st.offers.remove(oid) {
                Some(o) if o.framework_id == fid => match &mut pool {
                    None => pool = Some((o.agent_id, o.cpus, o.mem, o.ports.into_iter().collect())),
                    Some(p) if p.0 == o.agent_id => {
                        p.1 += o.cpus;
                        p.2 += o.mem;
                        p.3.extend(o.ports);
                    }
                    Some(_) => {
                        invalid = Some(format!(
                            "Aggregated offers must belong to one agent ({oid})"
                        ))
                    }
                },
                Some(o) => {
                    st.offers.insert(oid.clone(), o);
                    invalid = Some(format!("Offer {oid} is not for this framework"));
                }
                None => invalid = Some(format!("Offer {oid} is no longer valid")),
            }
        }
        let operations: Vec<Value> = accept["operations"].as_array().cloned().unwrap_or_default();
        if let Some(reason) = invalid {
            for op in &operations {
                for task in op["launch"]["task_infos"].as_array().into_iter().flatten() {
                    let key = (
                        fid.to_owned(),
                        text(task, &["task_id", "value"]).unwrap_or_default(),
                    );
                    let agent = text(task, &["agent_id", "value"]).unwrap_or_default();
                    st.send(
                        fid,
                        &status(
                            &key,
                            &agent,
                            "TASK_LOST",
                            "SOURCE_MASTER",
                            Some("REASON_INVALID_OFFERS"),
                            Some(&format!("Task launched with invalid offers: {reason}")),
                            false,
                        ),
                    );
                }
            }
            return (202, String::new());
        }
        let (agent_id, mut cpus, mut mem, mut ports) = pool.expect("offers were valid");
        Self::filter(&mut st, fid, &agent_id, &accept["filters"]);
        for op in &operations {
            if op["type"].as_str() != Some("LAUNCH") {
                return (
                    400,
                    format!(
                        "the Mesos master simulator implements LAUNCH operations only, not {}",
                        op["type"]
                    ),
                );
            }
            for task in op["launch"]["task_infos"].as_array().into_iter().flatten() {
                let task_id = text(task, &["task_id", "value"]).unwrap_or_default();
                let key = (fid.to_owned(), task_id.clone());
                let (need_cpus, need_mem, need_ports) = task_resources(task);
                let image = text(task, &["container", "docker", "image"]);
                let problem = if task_id.is_empty() {
                    Some("Task has no ID".to_string())
                } else if st.tasks.contains_key(&key) {
                    Some(format!("Task has duplicate ID: {task_id}"))
                } else if text(task, &["agent_id", "value"]).as_deref() != Some(agent_id.as_str()) {
                    Some("Task uses an agent other than the offer's".to_string())
                } else if need_cpus > cpus + 1e-6
                    || need_mem > mem + 1e-6
                    || !need_ports.iter().all(|p| ports.contains(p))
                {
                    Some(format!(
                        "Task uses more resources (cpus {need_cpus}, mem {need_mem}, ports {need_ports:?}) than available (cpus {cpus}, mem {mem})"
                    ))
                } else if text(task, &["container", "type"]).as_deref() != Some("DOCKER")
                    || image.is_none()
                {
                    Some("the simulator's agents run DOCKER containers only (container.docker.image)".to_string())
                } else {
                    None
                };
                if let Some(message) = problem {
                    let agent = text(task, &["agent_id", "value"]).unwrap_or_default();
                    st.send(
                        fid,
                        &status(
                            &key,
                            &agent,
                            "TASK_ERROR",
                            "SOURCE_MASTER",
                            Some("REASON_TASK_INVALID"),
                            Some(&message),
                            false,
                        ),
                    );
                    continue;
                }
                let mapping = task["container"]["docker"]["port_mappings"]
                    .as_array()
                    .and_then(|m| m.first())
                    .and_then(|m| {
                        Some((
                            m["host_port"].as_u64()? as u16,
                            m["container_port"].as_u64()? as u16,
                        ))
                    });
                if let Some((host, _)) = mapping {
                    if !need_ports.contains(&host) {
                        st.send(fid, &status(&key, &agent_id, "TASK_ERROR", "SOURCE_MASTER",
                            Some("REASON_TASK_INVALID"),
                            Some(&format!("Port mapping host_port {host} is not among the task's port resources")), false));
                        continue;
                    }
                }
                cpus -= need_cpus;
                mem -= need_mem;
                for p in &need_ports {
                    ports.remove(p);
                }
                let labels = task["labels"]["labels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| {
                        Some((text(l, &["key"])?, text(l, &["value"]).unwrap_or_default()))
                    })
                    .chain([
                        ("mesos-sim.master".to_string(), self.master_id.clone()),
                        ("mesos-sim.framework".to_string(), fid.to_owned()),
                        ("mesos-sim.task".to_string(), task_id.clone()),
                    ])
                    .collect();
                let env = task["command"]["environment"]["variables"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| {
                        Some((text(v, &["name"])?, text(v, &["value"]).unwrap_or_default()))
                    })
                    .collect();
                let launch = Launch {
                    container_name: format!("mesos-{}-{}", self.master_id, sanitize(&task_id)),
                    image: image.expect("checked"),
                    env,
                    labels,
                    mem_mb: need_mem,
                    port_mapping: mapping,
                    host_network: text(task, &["container", "docker", "network"]).as_deref()
                        == Some("HOST"),
                };
                st.tasks.insert(
                    key.clone(),
                    Task {
                        agent_id: agent_id.clone(),
                        state: "TASK_STAGING",
                        cpus: need_cpus,
                        mem: need_mem,
                        ports: need_ports,
                        container: None,
                        kill_requested: false,
                        updates: VecDeque::new(),
                        front_sent: None,
                    },
                );
                let shared = self.clone();
                tokio::spawn(async move { shared.run_launch(key, launch).await });
            }
        }
        (202, String::new())
    }

    async fn run_launch(self: Arc<Self>, key: (String, String), launch: Launch) {
        let result = self.engine.launch(&launch).await;
        let remove = {
            let mut st = self.lock();
            let killed = st.tasks.get(&key).is_none_or(|t| t.kill_requested);
            match result {
                Ok(container) if killed => Some((container, true)),
                Ok(container) => {
                    st.launched += 1;
                    if let Some(t) = st.tasks.get_mut(&key) {
                        t.container = Some(container);
                    }
                    st.transition(&key, "TASK_STARTING", "SOURCE_EXECUTOR", None, None);
                    st.transition(&key, "TASK_RUNNING", "SOURCE_EXECUTOR", None, None);
                    None
                }
                Err(message) => {
                    st.transition(
                        &key,
                        "TASK_FAILED",
                        "SOURCE_AGENT",
                        Some("REASON_CONTAINER_LAUNCH_FAILED"),
                        Some(&message),
                    );
                    None
                }
            }
        };
        if let Some((container, _)) = remove {
            self.engine.remove(&container).await;
            let mut st = self.lock();
            st.transition(
                &key,
                "TASK_KILLED",
                "SOURCE_EXECUTOR",
                None,
                Some("Killed before it ran"),
            );
        }
    }

    fn kill(self: &Arc<Self>, fid: &str, kill: &Value) -> Reply {
        let task_id = text(kill, &["task_id", "value"]).unwrap_or_default();
        let key = (fid.to_owned(), task_id);
        let mut st = self.lock();
        let Some(task) = st.tasks.get_mut(&key) else {
            let agent = text(kill, &["agent_id", "value"]).unwrap_or_default();
            st.send(
                fid,
                &status(
                    &key,
                    &agent,
                    "TASK_LOST",
                    "SOURCE_MASTER",
                    Some("REASON_RECONCILIATION"),
                    Some("Attempted to kill an unknown task"),
                    false,
                ),
            );
            return (202, String::new());
        };
        if task.is_terminal() || task.kill_requested {
            return (202, String::new());
        }
        task.kill_requested = true;
        if let Some(container) = task.container.clone() {
            let shared = self.clone();
            tokio::spawn(async move {
                shared.engine.remove(&container).await;
                let mut st = shared.lock();
                st.transition(
                    &key,
                    "TASK_KILLED",
                    "SOURCE_EXECUTOR",
                    None,
                    Some("Container killed"),
                );
            });
        }
        // Still launching: run_launch removes the container and reports TASK_KILLED.
        (202, String::new())
    }

    fn acknowledge(&self, fid: &str, ack: &Value) -> Reply {
        let key = (
            fid.to_owned(),
            text(ack, &["task_id", "value"]).unwrap_or_default(),
        );
        let uuid = text(ack, &["uuid"]).unwrap_or_default();
        let mut st = self.lock();
        let Some(task) = st.tasks.get_mut(&key) else {
            return (202, String::new());
        };
        if task
            .updates
            .front()
            .and_then(|u| text(u, &["update", "status", "uuid"]))
            != Some(uuid)
        {
            // Mesos ignores an acknowledgement of an update it is not waiting for.
            return (202, String::new());
        }
        task.updates.pop_front();
        task.front_sent = None;
        if task.updates.is_empty() {
            if task.is_terminal() {
                st.tasks.remove(&key);
            }
        } else {
            st.send_front(&key);
        }
        (202, String::new())
    }

    fn reconcile(&self, fid: &str, reconcile: &Value) -> Reply {
        let st = self.lock();
        let asked: Vec<(String, String)> = reconcile["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    text(t, &["task_id", "value"]).unwrap_or_default(),
                    text(t, &["agent_id", "value"]).unwrap_or_default(),
                )
            })
            .collect();
        let reply = |key: &(String, String), t: &Task| {
            status(
                key,
                &t.agent_id,
                t.state,
                "SOURCE_MASTER",
                Some("REASON_RECONCILIATION"),
                None,
                false,
            )
        };
        if asked.is_empty() {
            for (key, t) in st.tasks.iter().filter(|(k, _)| k.0 == fid) {
                st.send(fid, &reply(key, t));
            }
        } else {
            for (task_id, agent_id) in asked {
                let key = (fid.to_owned(), task_id);
                match st.tasks.get(&key) {
                    Some(t) => st.send(fid, &reply(&key, t)),
                    None => st.send(
                        fid,
                        &status(
                            &key,
                            &agent_id,
                            "TASK_LOST",
                            "SOURCE_MASTER",
                            Some("REASON_RECONCILIATION"),
                            Some("Reconciliation: Task is unknown"),
                            false,
                        ),
                    ),
                };
            }
        }
        (202, String::new())
    }

    // ---- time --------------------------------------------------------------------------

    /// Heartbeats, offers, update retries and failover timeouts; run every few ms.
    pub fn tick(self: &Arc<Self>) {
        let mut expired = Vec::new();
        {
            let mut st = self.lock();
            let now = Instant::now();
            if st
                .last_heartbeat
                .is_none_or(|t| now - t >= self.options.heartbeat)
            {
                st.last_heartbeat = Some(now);
                let heartbeat = encode(&json!({"type": "HEARTBEAT"}));
                for f in st.frameworks.values().filter(|f| !f.partitioned) {
                    if let Some(c) = &f.connection {
                        let _ = c.tx.send(heartbeat.clone());
                    }
                }
            }
            let retry: Vec<_> = st
                .tasks
                .iter()
                .filter(|(_, t)| {
                    !t.updates.is_empty()
                        && t.front_sent
                            .is_none_or(|s| now - s >= self.options.update_retry)
                })
                .map(|(k, _)| k.clone())
                .collect();
            for key in retry {
                st.send_front(&key);
            }
            for (fid, f) in &st.frameworks {
                if f.disconnected_at
                    .is_some_and(|d| now - d >= f.failover_timeout)
                {
                    expired.push(fid.clone());
                }
            }
            if st
                .last_allocation
                .is_none_or(|t| now - t >= self.options.allocation_interval)
            {
                st.last_allocation = Some(now);
                self.allocate(&mut st);
            }
        }
        for fid in expired {
            self.remove_framework(&fid);
        }
    }

    fn allocate(&self, st: &mut State) {
        let now = Instant::now();
        let mut candidates: Vec<String> = st
            .frameworks
            .iter()
            .filter(|(_, f)| f.connection.is_some() && !f.suppressed)
            .map(|(id, _)| id.clone())
            .collect();
        candidates.sort();
        let agents: Vec<Agent> = st.agents.iter().filter(|a| !a.removed).cloned().collect();
        for (i, agent) in agents.into_iter().enumerate() {
            let Agent {
                id: agent_id,
                hostname,
                cpus,
                mem,
                ports: (begin, end),
                ..
            } = agent;
            let (used_cpus, used_mem, used_ports) = st.used(&agent_id);
            let free_cpus = ((cpus - used_cpus) * 1000.0).round() / 1000.0;
            let free_mem = mem - used_mem;
            let free_ports: Vec<u16> = (begin..=end).filter(|p| !used_ports.contains(p)).collect();
            if free_cpus < MIN_CPUS || free_mem < MIN_MEM {
                continue;
            }
            // Agents go round the frameworks, skipping those that filter this agent.
            let Some(fid) = (0..candidates.len())
                .map(|k| &candidates[(i + k) % candidates.len()])
                .find(|fid| {
                    st.frameworks[*fid]
                        .filters
                        .get(&agent_id)
                        .is_none_or(|until| *until <= now)
                })
                .cloned()
            else {
                continue;
            };
            let offer_id = st.next_id(&self.master_id, "O");
            let offer = json!({
                "id": id(&offer_id),
                "framework_id": id(&fid),
                "agent_id": id(&agent_id),
                "hostname": hostname,
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": free_cpus}, "role": "*"},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": free_mem}, "role": "*"},
                    {"name": "ports", "type": "RANGES", "ranges": {"range": ranges(&free_ports)}, "role": "*"},
                ],
            });
            st.offers.insert(
                offer_id,
                Offer {
                    framework_id: fid.clone(),
                    agent_id,
                    cpus: free_cpus,
                    mem: free_mem,
                    ports: free_ports,
                },
            );
            st.send(
                &fid,
                &json!({"type": "OFFERS", "offers": {"offers": [offer]}}),
            );
        }
    }

    /// Failover timeout ran out, or TEARDOWN: every task is killed, the framework is gone.
    pub fn remove_framework(self: &Arc<Self>, fid: &str) {
        let containers: Vec<String> = {
            let mut st = self.lock();
            st.frameworks.remove(fid);
            st.removed.insert(fid.to_owned());
            st.rescind_offers(|o| o.framework_id == fid);
            let keys: Vec<_> = st.tasks.keys().filter(|k| k.0 == fid).cloned().collect();
            keys.into_iter()
                .filter_map(|k| st.tasks.remove(&k).and_then(|t| t.container))
                .collect()
        };
        let shared = self.clone();
        tokio::spawn(async move {
            for c in containers {
                shared.engine.remove(&c).await;
            }
        });
    }

    /// The agent is removed from the cluster: its tasks are lost, its offers rescinded.
    pub async fn remove_agent(self: &Arc<Self>, agent_id: &str) {
        let containers: Vec<String> = {
            let mut st = self.lock();
            let Some(agent) = st.agents.iter_mut().find(|a| a.id == agent_id) else {
                return;
            };
            agent.removed = true;
            st.rescind_offers(|o| o.agent_id == agent_id);
            let keys: Vec<_> = st
                .tasks
                .iter()
                .filter(|(_, t)| t.agent_id == agent_id)
                .map(|(k, _)| k.clone())
                .collect();
            let mut containers = Vec::new();
            let frameworks: HashSet<String> = keys.iter().map(|k| k.0.clone()).collect();
            for key in keys {
                let t = st.tasks.remove(&key).expect("listed");
                containers.extend(t.container);
                if !is_terminal(t.state) {
                    st.send(
                        &key.0,
                        &status(
                            &key,
                            agent_id,
                            "TASK_LOST",
                            "SOURCE_MASTER",
                            Some("REASON_AGENT_REMOVED"),
                            Some("Agent removed"),
                            false,
                        ),
                    );
                }
            }
            for fid in frameworks {
                st.send(
                    &fid,
                    &json!({"type": "FAILURE", "failure": {"agent_id": id(agent_id)}}),
                );
            }
            containers
        };
        for c in containers {
            self.engine.remove(&c).await;
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
