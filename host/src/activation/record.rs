//! The `WhiskActivation` record and its response.

use super::message::{ActivationMessage, Unreadable};
use crate::action::{ActionError, INCOMPATIBLE, NOT_FETCHED, NOT_FOUND};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// OpenWhisk's response status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum StatusCode {
    Success = 0,
    ApplicationError = 1,
    DeveloperError = 2,
    WhiskError = 3,
}

impl StatusCode {
    /// Upstream's `ActivationResponse.statusForCode`: the `status` label of its metrics.
    pub fn name(self) -> &'static str {
        match self {
            StatusCode::Success => "success",
            StatusCode::ApplicationError => "application_error",
            StatusCode::DeveloperError => "action_developer_error",
            StatusCode::WhiskError => "whisk_internal_error",
        }
    }
}

impl From<StatusCode> for u8 {
    fn from(c: StatusCode) -> u8 {
        c as u8
    }
}

impl TryFrom<u8> for StatusCode {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Ok(match v {
            0 => StatusCode::Success,
            1 => StatusCode::ApplicationError,
            2 => StatusCode::DeveloperError,
            3 => StatusCode::WhiskError,
            other => return Err(format!("unknown activation status code {other}")),
        })
    }
}

/// `{"statusCode": N, "result": {...}, "size": N}` (upstream's `ActivationResponse`,
/// `ActivationResult.scala`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationResponse {
    pub status_code: StatusCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The length of the container's answer as upstream counts it (`entity.length` of a Java
    /// string: UTF-16 units); absent where no answer was read (timeouts, system errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
}

/// An action that could not be resolved, answered exactly as upstream's invoker answers it
/// (`InvokerReactive.handleActivationMessage`).
impl From<&ActionError> for ActivationResponse {
    fn from(error: &ActionError) -> Self {
        match error {
            ActionError::NotFound(_) => ActivationResponse::application_error(NOT_FOUND.into()),
            ActionError::Limits { message, .. } => {
                ActivationResponse::application_error(message.as_str().into())
            }
            ActionError::Incompatible { .. } => ActivationResponse::whisk_error(INCOMPATIBLE),
            _ => ActivationResponse::whisk_error(NOT_FETCHED),
        }
    }
}

impl ActivationResponse {
    pub fn success(result: Value) -> Self {
        ActivationResponse {
            status_code: StatusCode::Success,
            result: Some(result),
            size: None,
        }
    }

    fn error(status_code: StatusCode, error: Value) -> Self {
        ActivationResponse {
            status_code,
            result: Some(json!({ "error": error })),
            size: None,
        }
    }

    fn sized(self, size: usize) -> Self {
        ActivationResponse {
            size: Some(size),
            ..self
        }
    }

    pub fn application_error(error: Value) -> Self {
        Self::error(StatusCode::ApplicationError, error)
    }

    pub fn developer_error(message: impl Into<String>) -> Self {
        Self::error(StatusCode::DeveloperError, Value::String(message.into()))
    }

    pub fn whisk_error(message: impl Into<String>) -> Self {
        Self::error(StatusCode::WhiskError, Value::String(message.into()))
    }

    pub fn is_whisk_error(&self) -> bool {
        self.status_code == StatusCode::WhiskError
    }

    /// Interprets a `/run` answer as upstream's `processRunResponseContent`: a 200 JSON
    /// object is a success unless it has an `error` field (application error), a 200 JSON
    /// array a success; anything else is a developer error. Every one carries the answer's size.
    pub fn from_run(status: u16, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let size = java_length(&text);
        let ok = status == 200;
        let response = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(fields)) => match (ok, fields.get("error").cloned()) {
                (true, None) => Self::success(Value::Object(fields)),
                (true, Some(e)) => Self::application_error(e),
                (false, Some(e)) => Self::error(StatusCode::DeveloperError, e),
                (false, None) => Self::developer_error(invalid_run(&text)),
            },
            Ok(array @ Value::Array(_)) if ok => Self::success(array),
            _ => Self::developer_error(invalid_run(&text)),
        };
        response.sized(size)
    }

    /// Interprets a failed `/init` answer as upstream's `processInitResponseContent`.
    pub fn from_failed_init(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let size = java_length(&text);
        let response = match serde_json::from_str::<Map<String, Value>>(&text) {
            Ok(fields) if fields.contains_key("error") => {
                Self::error(StatusCode::DeveloperError, fields["error"].clone())
            }
            _ => Self::developer_error(with_answer(
                "The action failed during initialization",
                &text,
            )),
        };
        response.sized(size)
    }
}

/// Upstream's `Messages.invalidRunResponse`.
fn invalid_run(text: &str) -> String {
    with_answer(
        "The action did not produce a valid JSON or JSON Array response",
        text,
    )
}

/// `message`, then `: answer` unless the answer is empty (upstream's message helpers).
fn with_answer(message: &str, answer: &str) -> String {
    if answer.is_empty() {
        message.to_owned()
    } else {
        format!("{message}: {answer}")
    }
}

/// A string's `length()` in Java: UTF-16 code units.
fn java_length(text: &str) -> usize {
    text.encode_utf16().count()
}

/// An annotation `{key, value}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub key: String,
    pub value: Value,
}

/// The activation record OpenWhisk stores and returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhiskActivation {
    pub namespace: String,
    pub name: String,
    pub subject: String,
    pub activation_id: String,
    /// Epoch millis.
    pub start: i64,
    pub end: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub response: ActivationResponse,
    #[serde(default)]
    pub logs: Vec<String>,
    pub version: String,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
}

impl WhiskActivation {
    /// Upstream's `generateFallbackActivation`: the record of an activation that never
    /// reached a container — start = end = now, duration 0, annotations `path`, `kind`
    /// ("unknown") and, when a sequence caused it, `causedBy`.
    pub fn fallback(msg: &ActivationMessage, response: ActivationResponse, now: i64) -> Self {
        let mut annotations = vec![
            Annotation {
                key: "path".into(),
                value: json!(msg.action.qualified()),
            },
            Annotation {
                key: "kind".into(),
                value: json!("unknown"),
            },
        ];
        if msg.caused_by_sequence() {
            annotations.push(Annotation {
                key: "causedBy".into(),
                value: json!("sequence"),
            });
        }
        WhiskActivation {
            namespace: msg.user.namespace.name.clone(),
            name: msg.action.name.clone(),
            subject: msg.user.subject.clone(),
            activation_id: msg.activation_id.clone(),
            start: now,
            end: now,
            cause: msg.cause.clone(),
            response,
            logs: Vec::new(),
            version: msg.action.version.clone().unwrap_or_else(|| "0.0.1".into()),
            publish: false,
            annotations,
            duration: Some(0),
        }
    }

    /// The record answering a message that could not be read as an `ActivationMessage`.
    pub fn not_understood(message: &Unreadable, now: i64) -> Self {
        let name = message.action.rsplit('/').next().unwrap_or("").to_owned();
        WhiskActivation {
            namespace: message.namespace.clone(),
            name,
            subject: message.subject.clone(),
            activation_id: message.activation_id.clone(),
            start: now,
            end: now,
            cause: None,
            response: ActivationResponse::whisk_error(format!(
                "The invoker could not read this activation message: {}",
                message.error
            )),
            logs: Vec::new(),
            version: "0.0.1".into(),
            publish: false,
            annotations: vec![
                Annotation {
                    key: "path".into(),
                    value: json!(message.action.trim_matches('/')),
                },
                Annotation {
                    key: "kind".into(),
                    value: json!("unknown"),
                },
            ],
            duration: Some(0),
        }
    }

    pub fn annotation(&self, key: &str) -> Option<&Value> {
        self.annotations
            .iter()
            .find(|a| a.key == key)
            .map(|a| &a.value)
    }

    /// Upstream's `Activation.from(WhiskActivation)`: the user event of this record, invoked
    /// by `initiator`; `None` without the `path` and `kind` annotations (as upstream).
    pub fn event(&self, initiator: &str) -> Option<crate::metrics::ActivationEvent> {
        let path = self.annotation("path")?.as_str()?;
        let kind = self.annotation("kind")?.as_str()?;
        let (namespace, action) = path.split_once('/').unwrap_or((path, ""));
        let millis = |key: &str| self.annotation(key).and_then(Value::as_i64).unwrap_or(0);
        let result = self.response.result.as_ref();
        Some(crate::metrics::ActivationEvent {
            namespace: namespace.to_owned(),
            action: action.to_owned(),
            initiator: initiator.to_owned(),
            kind: kind.to_owned(),
            memory_mb: self
                .annotation("limits")
                .and_then(|l| l["memory"].as_i64())
                .unwrap_or(0),
            status: self.response.status_code.name(),
            wait_ms: millis("waitTime"),
            init_ms: millis("initTime"),
            duration_ms: self.duration.unwrap_or(0),
            size: result.map(|r| r.to_string().len()),
            user_status_code: result.and_then(user_status_code),
        })
    }

    /// The record without logs, as it travels in a result message.
    pub fn without_logs(&self) -> WhiskActivation {
        WhiskActivation {
            logs: Vec::new(),
            ..self.clone()
        }
    }
}

/// Upstream's `Activation.userDefinedStatusCode`: `error.statusCode` or `statusCode` of an
/// object result, as an integer (400 when it is not one).
fn user_status_code(result: &Value) -> Option<i64> {
    let code = result
        .get("error")
        .and_then(|e| e.get("statusCode"))
        .or_else(|| result.get("statusCode"))?;
    Some(code.as_i64().unwrap_or(400))
}
