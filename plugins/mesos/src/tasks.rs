//! What the framework remembers about each task it launched, kept in the plugin's `state`
//! (replicated across a keepwarm cluster), so a standby host taking over knows every task, its
//! labels and its address without asking Mesos for more than their status.

use keepwarm_plugin_sdk::{state, FactoryError};
use serde::{Deserialize, Serialize};

const OLD_INDEX: &str = "tasks";
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

const TASK: &str = "task/";

fn key(task_id: &str) -> String {
    format!("{TASK}{task_id}")
}

/// A write the host refused (the plugin's state is full): the task is not launched.
fn refused(why: String) -> FactoryError {
    FactoryError::Capacity(format!("cannot record the task: {why}"))
}

pub fn get(task_id: &str) -> Option<TaskRecord> {
    state::get(&key(task_id)).and_then(|bytes| serde_json::from_slice(&bytes).ok())
}

pub fn all() -> Vec<TaskRecord> {
    state::keys(TASK)
        .iter()
        .filter_map(|k| get(&k[TASK.len()..]))
        .collect()
}

/// Remembers a task before it is launched, so no launched task is ever unknown.
pub fn put(record: &TaskRecord) -> Result<(), FactoryError> {
    state::put(
        &key(&record.task_id),
        &serde_json::to_vec(record).expect("a record serializes"),
    )
    .map_err(refused)
}

pub fn forget(task_id: &str) {
    state::delete(&key(task_id));
}

pub fn forget_all() {
    for k in state::keys(TASK) {
        state::delete(&k);
    }
    // Written by keepwarm before 0.2: the list of task ids, now read from the keys.
    state::delete(OLD_INDEX);
}

pub fn framework_id() -> Option<String> {
    state::get(FRAMEWORK_ID).and_then(|bytes| String::from_utf8(bytes).ok())
}

pub fn set_framework_id(id: &str) -> Result<(), FactoryError> {
    state::put(FRAMEWORK_ID, id.as_bytes())
        .map_err(|why| FactoryError::Capacity(format!("cannot record the framework id: {why}")))
}

pub fn forget_framework_id() {
    state::delete(FRAMEWORK_ID);
}
