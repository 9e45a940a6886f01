//! The simulated master's state and rules: frameworks and their subscriptions, agents, offers,
//! tasks and their reliably delivered status updates. Everything here runs under one lock and
//! never waits; Docker work is spawned and reports back through [`Shared`]. The calls a
//! framework makes are in `calls`, what time does (heartbeats, offers, retries, timeouts) and
//! removals in `clock`.

mod calls;
mod clock;

use super::agent::Engine;
use super::Options;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
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

    /// An update the master itself generates (unknown task, invalid launch, lost agent):
    /// sent once, without a `uuid`, so never acknowledged or re-sent.
    fn tell(
        &self,
        framework_id: &str,
        key: &(String, String),
        agent_id: &str,
        state: &str,
        reason: Option<&str>,
        message: Option<&str>,
    ) {
        let update = status(
            key,
            agent_id,
            state,
            "SOURCE_MASTER",
            reason,
            message,
            false,
        );
        self.send(framework_id, &update);
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

    /// The next tick allocates, whatever the interval.
    fn allocate_now(&mut self) {
        self.last_allocation = None;
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
        st.allocate_now();
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
}
