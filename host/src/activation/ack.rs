//! Messages the invoker sends: acknowledgements on `completed{controller}` and pings on
//! `health`.

use super::message::TransactionId;
use super::record::WhiskActivation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The invoker's identity as the controller knows it, written as master's
/// `InvokerInstanceId.serdes` writes it (`InstanceId.scala`): `tags` and
/// `dedicatedNamespaces` always (master's reader requires both; 1.0.0's ignores them),
/// `busyMemory`, `uniqueName` and `displayedName` only when set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokerInstanceId {
    pub instance: u32,
    /// OpenWhisk's ByteSize form, e.g. `"2048 MB"`.
    pub user_memory: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_memory: Option<String>,
    #[serde(default = "invoker_type")]
    pub instance_type: String,
    /// Annotation tags of the actions this invoker may run (empty: any).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The only namespaces whose actions this invoker runs (empty: any).
    #[serde(default)]
    pub dedicated_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub displayed_name: Option<String>,
}

fn invoker_type() -> String {
    "invoker".into()
}

impl InvokerInstanceId {
    pub fn new(instance: u32, user_memory_mb: u64, unique_name: Option<String>) -> Self {
        InvokerInstanceId {
            instance,
            user_memory: format!("{user_memory_mb} MB"),
            busy_memory: None,
            instance_type: invoker_type(),
            tags: Vec::new(),
            dedicated_namespaces: Vec::new(),
            unique_name,
            displayed_name: None,
        }
    }
}

/// What the invoker tells the controller about one activation.
#[derive(Debug, Clone, PartialEq)]
pub enum Acknowledgement {
    /// Result and free slot at once (the common case).
    Combined {
        transid: TransactionId,
        activation: WhiskActivation,
        instance: InvokerInstanceId,
    },
    /// The slot is free (after a separate result message).
    Completion {
        transid: TransactionId,
        activation_id: String,
        is_system_error: bool,
        instance: InvokerInstanceId,
    },
    /// The result of a blocking activation, ahead of the completion.
    Result {
        transid: TransactionId,
        activation: WhiskActivation,
    },
}

impl Acknowledgement {
    /// Which of upstream's three messages it is.
    pub fn kind(&self) -> &'static str {
        match self {
            Acknowledgement::Combined { .. } => "combined",
            Acknowledgement::Completion { .. } => "completion",
            Acknowledgement::Result { .. } => "result",
        }
    }

    pub fn activation_id(&self) -> &str {
        match self {
            Acknowledgement::Combined { activation, .. }
            | Acknowledgement::Result { activation, .. } => &activation.activation_id,
            Acknowledgement::Completion { activation_id, .. } => activation_id,
        }
    }

    /// The message's JSON as `Message.scala` writes it.
    pub fn to_json(&self) -> Value {
        match self {
            Acknowledgement::Combined {
                transid,
                activation,
                instance,
            } => json!({
                "transid": transid,
                "response": activation,
                "isSystemError": activation.response.is_whisk_error(),
                "instance": instance,
            }),
            Acknowledgement::Completion {
                transid,
                activation_id,
                is_system_error,
                instance,
            } => json!({
                "transid": transid,
                "activationId": activation_id,
                "isSystemError": is_system_error,
                "instance": instance,
            }),
            Acknowledgement::Result {
                transid,
                activation,
            } => json!({ "transid": transid, "response": activation }),
        }
    }

    /// The message in its compact form, as upstream's `AcknowledegmentMessage.shrink`: the
    /// activation record replaced by its id (sent when the whole record is too large for
    /// the broker). A completion is already compact.
    pub fn shrunk_json(&self) -> Value {
        match self {
            Acknowledgement::Combined {
                transid,
                activation,
                instance,
            } => json!({
                "transid": transid,
                "response": activation.activation_id,
                "isSystemError": activation.response.is_whisk_error(),
                "instance": instance,
            }),
            Acknowledgement::Result {
                transid,
                activation,
            } => json!({ "transid": transid, "response": activation.activation_id }),
            Acknowledgement::Completion { .. } => self.to_json(),
        }
    }

    /// Reads any of the three, as the controller does: `instance` + `response` is combined,
    /// `instance` alone a completion, else a result.
    pub fn parse(bytes: &[u8]) -> Result<Acknowledgement, serde_json::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            transid: TransactionId,
            #[serde(default)]
            response: Option<WhiskActivation>,
            #[serde(default)]
            activation_id: Option<String>,
            #[serde(default)]
            is_system_error: Option<bool>,
            #[serde(default)]
            instance: Option<InvokerInstanceId>,
        }
        let w: Wire = serde_json::from_slice(bytes)?;
        use serde::de::Error;
        Ok(match (w.instance, w.response) {
            (Some(instance), Some(activation)) => Acknowledgement::Combined {
                transid: w.transid,
                activation,
                instance,
            },
            (Some(instance), None) => Acknowledgement::Completion {
                transid: w.transid,
                activation_id: w
                    .activation_id
                    .ok_or_else(|| serde_json::Error::custom("completion without activationId"))?,
                is_system_error: w.is_system_error.unwrap_or(false),
                instance,
            },
            (None, Some(activation)) => Acknowledgement::Result {
                transid: w.transid,
                activation,
            },
            (None, None) => return Err(serde_json::Error::custom("not an acknowledgement")),
        })
    }
}

/// `{"name": InvokerInstanceId}` on `health`, every second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingMessage {
    pub name: InvokerInstanceId,
}
