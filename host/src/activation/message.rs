//! `ActivationMessage`: one activation request from the controller.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// OpenWhisk's transaction id: a JSON array `[id, start-millis]` or `[id, start, extraLogging]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionId {
    pub id: String,
    pub start_ms: i64,
    pub extra_logging: bool,
}

impl Serialize for TransactionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.extra_logging {
            (&self.id, self.start_ms, true).serialize(s)
        } else {
            (&self.id, self.start_ms).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for TransactionId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let a = v
            .as_array()
            .ok_or_else(|| D::Error::custom("transid must be an array [id, start]"))?;
        let id = a
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| D::Error::custom("transid[0] must be a string"))?;
        let start_ms = a.get(1).and_then(Value::as_i64).unwrap_or(0);
        let extra_logging = a.get(2).and_then(Value::as_bool).unwrap_or(false);
        Ok(TransactionId {
            id: id.to_owned(),
            start_ms,
            extra_logging,
        })
    }
}

/// `{path, name, version?, binding?}`; also accepted as a `"ns/pkg/name"` string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FullyQualifiedEntityName {
    pub path: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
}

impl FullyQualifiedEntityName {
    /// The namespace: the first segment of the path.
    pub fn namespace(&self) -> &str {
        self.path.split('/').find(|s| !s.is_empty()).unwrap_or("")
    }

    /// `path/name`, as OpenWhisk keys an action document.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.path.trim_matches('/'), self.name)
    }
}

impl<'de> Deserialize<'de> for FullyQualifiedEntityName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            path: String,
            name: String,
            #[serde(default)]
            version: Option<String>,
            #[serde(default)]
            binding: Option<String>,
        }
        match Value::deserialize(d)? {
            Value::String(s) => {
                let s = s.trim_matches('/');
                let (path, name) = s
                    .rsplit_once('/')
                    .ok_or_else(|| D::Error::custom("qualified name needs a namespace"))?;
                Ok(FullyQualifiedEntityName {
                    path: path.into(),
                    name: name.into(),
                    version: None,
                    binding: None,
                })
            }
            v @ Value::Object(_) => {
                let f: Fields = serde_json::from_value(v).map_err(D::Error::custom)?;
                Ok(FullyQualifiedEntityName {
                    path: f.path,
                    name: f.name,
                    version: f.version,
                    binding: f.binding,
                })
            }
            _ => Err(D::Error::custom("fully qualified name malformed")),
        }
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
    pub activation_id: String,
    pub root_controller_index: ControllerInstanceId,
    pub blocking: bool,
    #[serde(default)]
    pub content: Option<Map<String, Value>>,
    #[serde(default)]
    pub init_args: Vec<String>,
    #[serde(default)]
    pub locked_args: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<BTreeMap<String, String>>,
}

impl ActivationMessage {
    /// Parses a message from the `invoker{N}` topic.
    pub fn parse(bytes: &[u8]) -> Result<ActivationMessage, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The controller's completion topic: `completed{controller}`.
    pub fn completion_topic(&self) -> String {
        format!("completed{}", self.root_controller_index.as_string)
    }
}
