//! `ActivationMessage`: one activation request from the controller.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use crate::action::FullyQualifiedEntityName;

/// OpenWhisk's transaction id. Upstream (`TransactionId.serdes`) writes `[id, start]`,
/// `[id, start, true]` with extra logging, and appends the parent's transaction id for
/// sequences and conductor actions — `[id, start, parent]` or `[id, start, true, parent]` —
/// nested to any depth. It is kept verbatim, so acknowledgements echo it exactly as received;
/// the typed fields are read from it. A value upstream cannot read becomes its
/// `sid_unknown` transaction, as upstream's reader does, and is still echoed as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionId {
    pub id: String,
    pub start_ms: i64,
    pub extra_logging: bool,
    raw: Value,
}

impl TransactionId {
    /// A transaction without a parent, written `[id, start]`.
    pub fn new(id: impl Into<String>, start_ms: i64) -> TransactionId {
        let id = id.into();
        TransactionId {
            raw: serde_json::json!([id, start_ms]),
            id,
            start_ms,
            extra_logging: false,
        }
    }

    /// Reads any JSON value as upstream's reader does.
    pub fn from_value(raw: Value) -> TransactionId {
        let (id, start_ms, extra_logging) = read_metadata(&raw)
            .unwrap_or_else(|| ("sid_unknown".into(), crate::clock::now_ms(), false));
        TransactionId {
            id,
            start_ms,
            extra_logging,
            raw,
        }
    }

    /// The transaction this one was started by (a sequence's or conductor's), if any.
    pub fn parent(&self) -> Option<TransactionId> {
        let a = self.raw.as_array()?;
        let parent = match a.len() {
            3 if !a[2].is_boolean() => &a[2],
            4 => &a[3],
            _ => return None,
        };
        read_metadata(parent).map(|_| TransactionId::from_value(parent.clone()))
    }
}

/// `(id, start, extraLogging)` of `[id, start]`, `[id, start, extraLogging]`,
/// `[id, start, parent]` or `[id, start, extraLogging, parent]` (upstream's `readMetadata`).
fn read_metadata(v: &Value) -> Option<(String, i64, bool)> {
    let a = v.as_array()?;
    let id = a.first()?.as_str()?;
    let start = a.get(1)?;
    let start_ms = start
        .as_i64()
        .or_else(|| start.as_f64().map(|f| f as i64))?;
    let extra_logging = match (a.len(), a.get(2)) {
        (2, _) => false,
        (3, Some(Value::Bool(b))) => *b,
        (3, Some(_)) => false,
        (4, Some(Value::Bool(b))) => *b,
        _ => return None,
    };
    Some((id.to_owned(), start_ms, extra_logging))
}

impl Serialize for TransactionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TransactionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(TransactionId::from_value(Value::deserialize(d)?))
    }
}

/// The namespace part of an Identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub uuid: String,
}

/// Who invoked the action. Only what the invoker uses is typed; the rest is kept verbatim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub subject: String,
    pub namespace: Namespace,
    /// `{"api_key": "uuid:key"}` for basic auth keys; passed to the action as `api_key`.
    #[serde(default)]
    pub authkey: Value,
    #[serde(default)]
    pub rights: Vec<String>,
    #[serde(default)]
    pub limits: Value,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Identity {
    /// The namespace's `storeActivations` limit (upstream stores records unless it is false).
    pub fn stores_activations(&self) -> bool {
        self.limits
            .get("storeActivations")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    pub fn api_key(&self) -> Option<&str> {
        self.authkey.get("api_key").and_then(Value::as_str)
    }
}

/// `{"asString": "controller0"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerInstanceId {
    #[serde(rename = "asString")]
    pub as_string: String,
    #[serde(
        rename = "instanceType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub instance_type: Option<String>,
}

/// One activation request from the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationMessage {
    pub transid: TransactionId,
    pub action: FullyQualifiedEntityName,
    /// The action document's revision (`null` when unknown).
    #[serde(default)]
    pub revision: Option<String>,
    pub user: Identity,
    #[serde(deserialize_with = "activation_id")]
    pub activation_id: String,
    pub root_controller_index: ControllerInstanceId,
    pub blocking: bool,
    /// The arguments: an object, or an array passed to the action as it is.
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub init_args: Vec<String>,
    #[serde(default)]
    pub locked_args: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "optional_activation_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<BTreeMap<String, String>>,
}

/// An activation id: upstream reads a string or a number.
fn activation_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(D::Error::custom("activation id malformed")),
    }
}

fn optional_activation_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        _ => Err(D::Error::custom("cause malformed")),
    }
}

/// Why a message is not an `ActivationMessage`, and where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason} (at `{field}`)")]
pub struct ParseError {
    /// The JSON path, e.g. `user.namespace.uuid` (`.` for the whole message).
    pub field: String,
    pub reason: String,
}

/// A message that is JSON but not an `ActivationMessage`, with what could still be read from
/// it: enough to answer the controller, which otherwise waits for an answer that never comes.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub transid: TransactionId,
    pub activation_id: String,
    pub root_controller_index: ControllerInstanceId,
    pub namespace: String,
    pub subject: String,
    pub action: String,
    /// What was wrong with it.
    pub error: String,
}

impl Unreadable {
    /// What can still be read from a message that failed to parse with `error`: `None` when
    /// not even its activation id and controller can be (then nobody can be answered).
    pub fn read(bytes: &[u8], error: &ParseError) -> Option<Unreadable> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let activation_id = activation_id(v.get("activationId")?.clone()).ok()?;
        let root_controller_index: ControllerInstanceId =
            serde_json::from_value(v.get("rootControllerIndex")?.clone()).ok()?;
        let text = |path: &[&str]| {
            path.iter()
                .try_fold(&v, |v, k| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let action = match v.get("action") {
            Some(Value::String(s)) => s.clone(),
            Some(a) => format!(
                "{}/{}",
                a.get("path").and_then(Value::as_str).unwrap_or(""),
                a.get("name").and_then(Value::as_str).unwrap_or("")
            ),
            None => String::new(),
        };
        Some(Unreadable {
            transid: TransactionId::from_value(v.get("transid").cloned().unwrap_or(Value::Null)),
            activation_id,
            root_controller_index,
            namespace: text(&["user", "namespace", "name"]),
            subject: text(&["user", "subject"]),
            action,
            error: error.to_string(),
        })
    }

    /// The controller's completion topic: `completed{controller}`.
    pub fn completion_topic(&self) -> String {
        format!("completed{}", self.root_controller_index.as_string)
    }
}

impl ActivationMessage {
    /// Parses a message from the `invoker{N}` topic; an error names the field that is wrong.
    pub fn parse(bytes: &[u8]) -> Result<ActivationMessage, ParseError> {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes)).map_err(
            |e| ParseError {
                field: e.path().to_string(),
                reason: e.into_inner().to_string(),
            },
        )
    }

    /// Whether a sequence started it (upstream: `cause` is set).
    pub fn caused_by_sequence(&self) -> bool {
        self.cause.is_some()
    }

    /// The controller's completion topic: `completed{controller}`.
    pub fn completion_topic(&self) -> String {
        format!("completed{}", self.root_controller_index.as_string)
    }
}
