//! The subset of `mesos.v1.scheduler` this framework speaks, in Mesos' JSON mapping of
//! `include/mesos/v1/scheduler/scheduler.proto` and `include/mesos/v1/mesos.proto`: field names
//! as in the proto, enums as their names, `bytes` (the status `uuid`) as base64 strings.
//! Fields this plugin does not use are left out; unknown fields in events are ignored.

use serde::{Deserialize, Serialize};

/// Every `*ID` message (`FrameworkID`, `OfferID`, `AgentID`, `TaskID`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Id {
    pub value: String,
}

impl Id {
    pub fn new(value: impl Into<String>) -> Id {
        Id {
            value: value.into(),
        }
    }
}

// ---- calls -------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct Call {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<Id>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept: Option<Accept>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline: Option<Decline>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledge: Option<Acknowledge>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
}

impl Call {
    /// A call of `kind` on behalf of `framework_id`, with no payload yet.
    pub fn new(kind: &'static str, framework_id: Option<&str>) -> Call {
        Call {
            framework_id: framework_id.map(Id::new),
            kind,
            subscribe: None,
            accept: None,
            decline: None,
            kill: None,
            acknowledge: None,
            reconcile: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Subscribe {
    pub framework_info: FrameworkInfo,
    pub force: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FrameworkInfo {
    pub user: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    /// Seconds the master keeps this framework's tasks after its scheduler disconnects.
    pub failover_timeout: f64,
    pub checkpoint: bool,
    pub role: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Filters {
    pub refuse_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Accept {
    pub offer_ids: Vec<Id>,
    pub operations: Vec<Operation>,
    pub filters: Filters,
}

#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub launch: Launch,
}

#[derive(Debug, Clone, Serialize)]
pub struct Launch {
    pub task_infos: Vec<TaskInfo>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Decline {
    pub offer_ids: Vec<Id>,
    pub filters: Filters,
}

#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    pub task_id: Id,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Acknowledge {
    pub agent_id: Id,
    pub task_id: Id,
    pub uuid: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reconcile {
    pub tasks: Vec<ReconcileTask>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileTask {
    pub task_id: Id,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
}

// ---- tasks and resources -----------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    pub name: String,
    pub task_id: Id,
    pub agent_id: Id,
    pub resources: Vec<Resource>,
    pub command: CommandInfo,
    pub container: ContainerInfo,
    pub labels: Labels,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommandInfo {
    /// `false` with no `value`: the Docker image's own entrypoint runs.
    pub shell: bool,
    pub environment: Environment,
}

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    pub variables: Vec<Variable>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Variable {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub docker: DockerInfo,
}

#[derive(Debug, Clone, Serialize)]
pub struct DockerInfo {
    pub image: String,
    pub network: String,
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    pub protocol: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Labels {
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Label {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Resource {
    pub fn scalar(name: &str, value: f64, role: &str) -> Resource {
        Resource {
            name: name.into(),
            kind: "SCALAR".into(),
            scalar: Some(Scalar { value }),
            ranges: None,
            role: Some(role.into()),
        }
    }

    pub fn port(port: u64, role: &str) -> Resource {
        Resource {
            name: "ports".into(),
            kind: "RANGES".into(),
            scalar: None,
            ranges: Some(Ranges {
                range: vec![Range {
                    begin: port,
                    end: port,
                }],
            }),
            role: Some(role.into()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scalar {
    pub value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ranges {
    #[serde(default)]
    pub range: Vec<Range>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Range {
    pub begin: u64,
    pub end: u64,
}

// ---- events ------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    pub subscribed: Option<Subscribed>,
    pub offers: Option<Offers>,
    pub rescind: Option<Rescind>,
    pub update: Option<Update>,
    pub error: Option<ErrorEvent>,
}

#[derive(Debug, Deserialize)]
pub struct Subscribed {
    pub framework_id: Id,
    pub heartbeat_interval_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Offers {
    #[serde(default)]
    pub offers: Vec<Offer>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Offer {
    pub id: Id,
    pub agent_id: Id,
    pub hostname: String,
    #[serde(default)]
    pub resources: Vec<Resource>,
}

#[derive(Debug, Deserialize)]
pub struct Rescind {
    pub offer_id: Id,
}

#[derive(Debug, Deserialize)]
pub struct Update {
    pub status: TaskStatus,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TaskStatus {
    pub task_id: Id,
    pub state: String,
    pub agent_id: Option<Id>,
    pub message: Option<String>,
    pub reason: Option<String>,
    pub uuid: Option<String>,
}

impl TaskStatus {
    /// A state after which the task never runs again.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.state.as_str(),
            "TASK_FINISHED"
                | "TASK_FAILED"
                | "TASK_KILLED"
                | "TASK_ERROR"
                | "TASK_LOST"
                | "TASK_DROPPED"
                | "TASK_GONE"
                | "TASK_GONE_BY_OPERATOR"
                | "TASK_UNKNOWN"
        )
    }

    pub fn describe(&self) -> String {
        let mut s = self.state.clone();
        if let Some(reason) = &self.reason {
            s.push_str(&format!(" ({reason})"));
        }
        if let Some(message) = self.message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(&format!(": {message}"));
        }
        s
    }
}

#[derive(Debug, Deserialize)]
pub struct ErrorEvent {
    pub message: String,
}
