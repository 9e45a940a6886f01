//! The scheduler calls other than `SUBSCRIBE`: ACCEPT (LAUNCH), DECLINE, KILL, ACKNOWLEDGE,
//! RECONCILE, REVIVE, SUPPRESS, TEARDOWN.

use super::{text, Reply, Shared, State, Task, DEFAULT_REFUSE};
use crate::mesos::agent::Launch;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Shared {
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
                // As Mesos' allocator does on a revive: allocate now, not at the next interval.
                st.allocate_now();
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
                    st.tell(
                        fid,
                        &key,
                        &agent,
                        "TASK_LOST",
                        Some("REASON_INVALID_OFFERS"),
                        Some(&format!("Task launched with invalid offers: {reason}")),
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
                    st.tell(
                        fid,
                        &key,
                        &agent,
                        "TASK_ERROR",
                        Some("REASON_TASK_INVALID"),
                        Some(&message),
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
                        st.tell(fid, &key, &agent_id, "TASK_ERROR", Some("REASON_TASK_INVALID"), Some(&format!("Port mapping host_port {host} is not among the task's port resources")));
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
            st.tell(
                fid,
                &key,
                &agent,
                "TASK_LOST",
                Some("REASON_RECONCILIATION"),
                Some("Attempted to kill an unknown task"),
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
            st.tell(
                fid,
                key,
                &t.agent_id,
                t.state,
                Some("REASON_RECONCILIATION"),
                None,
            )
        };
        if asked.is_empty() {
            for (key, t) in st.tasks.iter().filter(|(k, _)| k.0 == fid) {
                reply(key, t);
            }
        } else {
            for (task_id, agent_id) in asked {
                let key = (fid.to_owned(), task_id);
                match st.tasks.get(&key) {
                    Some(t) => reply(&key, t),
                    None => st.tell(
                        fid,
                        &key,
                        &agent_id,
                        "TASK_LOST",
                        Some("REASON_RECONCILIATION"),
                        Some("Reconciliation: Task is unknown"),
                    ),
                }
            }
        }
        (202, String::new())
    }
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
