//! What the framework remembers about each task it launched, kept in the plugin's `state`
//! (replicated across a keepwarm cluster), so a standby host taking over knows every task, its
//! labels and its address without asking Mesos for more than their status.

use keepwarm_plugin_sdk::state;
use serde::{Deserialize, Serialize};

const INDEX: &str = "tasks";
const FRAMEWORK_ID: &str = "framework-id";

/// One launched task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub name: String,
    pub agent_id: String,
    pub hostname: String,
    pub host_port: u16,
    pub labels: Vec<(String, String)>,
}

/// The part of a record the host keeps as the container's `handle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handle {
    pub agent_id: String,
    pub hostname: String,
    pub host_port: u16,
}

impl TaskRecord {
    pub fn address(&self) -> String {
        format!("{}:{}", self.hostname, self.host_port)
    }

    pub fn handle(&self) -> String {
        serde_json::to_string(&Handle {
            agent_id: self.agent_id.clone(),
            hostname: self.hostname.clone(),
            host_port: self.host_port,
        })
        .expect("a handle serializes")
    }
}

fn key(task_id: &str) -> String {
    format!("task/{task_id}")
}

fn index() -> Vec<String> {
    state::get(INDEX)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn write_index(ids: &[String]) {
    state::put(INDEX, &serde_json::to_vec(ids).expect("ids serialize"));
}

pub fn get(task_id: &str) -> Option<TaskRecord> {
    state::get(&key(task_id)).and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

pub fn all() -> Vec<TaskRecord> {
    index().iter().filter_map(|id| get(id)).collect()
}

/// Remembers a task before it is launched, so no launched task is ever unknown.
pub fn put(record: &TaskRecord) {
    state::put(
        &key(&record.task_id),
        &serde_json::to_vec(record).expect("a record serializes"),
    );
    let mut ids = index();
    if !ids.contains(&record.task_id) {
        ids.push(record.task_id.clone());
        write_index(&ids);
    }
}

pub fn forget(task_id: &str) {
    let mut ids = index();
    let before = ids.len();
    ids.retain(|id| id != task_id);
    if ids.len() != before {
        write_index(&ids);
    }
    state::delete(&key(task_id));
}

pub fn forget_all() {
    for id in index() {
        state::delete(&key(&id));
    }
    state::delete(INDEX);
}

pub fn framework_id() -> Option<String> {
    state::get(FRAMEWORK_ID).and_then(|bytes| String::from_utf8(bytes).ok())
}

pub fn set_framework_id(id: Option<&str>) {
    match id {
        Some(id) => state::put(FRAMEWORK_ID, id.as_bytes()),
        None => state::delete(FRAMEWORK_ID),
    }
}
