//! An OpenWhisk action document, read from either source: `wsk action get`'s shape (the
//! catalog directory) or the document the controller keeps in CouchDB (`_id`, `_rev`,
//! `entityType`, code inline or as an attachment). Fields follow upstream's
//! `WhiskAction`/`Exec` serializers; unknown fields are ignored, as upstream's reader does.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Where an action's code is: in the document, or in an attachment (upstream's `Attached`).
#[derive(Debug, Clone, PartialEq)]
pub enum Code {
    Inline(String),
    /// `mem:<base64url>` names carry the bytes themselves (upstream inlines small code so);
    /// `couch:<name>` (or a bare legacy name like `jarfile`) names a CouchDB attachment.
    Attached {
        name: String,
        content_type: String,
        length: Option<u64>,
        /// `sha256-<hex>`, as upstream's `StoreUtils.encodeDigest` writes it.
        digest: Option<String>,
    },
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Attached {
            attachment_name: String,
            attachment_type: String,
            #[serde(default)]
            length: Option<u64>,
            #[serde(default)]
            digest: Option<String>,
        }
        match Value::deserialize(d)? {
            Value::String(code) => Ok(Code::Inline(code)),
            v @ Value::Object(_) => {
                let a: Attached = serde_json::from_value(v).map_err(D::Error::custom)?;
                Ok(Code::Attached {
                    name: a.attachment_name,
                    content_type: a.attachment_type,
                    length: a.length,
                    digest: a.digest,
                })
            }
            _ => Err(D::Error::custom(
                "'code' must be a string or attachment object",
            )),
        }
    }
}

/// `exec` of an action document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Exec {
    pub kind: String,
    /// Java actions once stored their code under `jar`.
    #[serde(default, alias = "jar")]
    pub code: Option<Code>,
    #[serde(default)]
    pub binary: bool,
    #[serde(default)]
    pub main: Option<String>,
    /// The image of a blackbox action.
    #[serde(default)]
    pub image: Option<String>,
    /// A sequence's components (never run by an invoker).
    #[serde(default)]
    pub components: Option<Vec<Value>>,
}

impl Exec {
    /// The code when it is in the document (after [`crate::action::couchdb`] has fetched an
    /// attachment, it always is).
    pub fn inline_code(&self) -> Option<&str> {
        match &self.code {
            Some(Code::Inline(c)) => Some(c),
            _ => None,
        }
    }
}

/// `limits` of an action document (OpenWhisk's defaults where absent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Limits {
    /// Milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// MB.
    #[serde(default = "default_memory")]
    pub memory: u32,
    /// MB of logs kept.
    #[serde(default = "default_logs")]
    pub logs: u32,
    /// Activations one container runs at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

fn default_timeout() -> u64 {
    60_000
}
fn default_memory() -> u32 {
    256
}
fn default_logs() -> u32 {
    10
}
fn default_concurrency() -> u32 {
    1
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: default_timeout(),
            memory: default_memory(),
            logs: default_logs(),
            concurrency: default_concurrency(),
        }
    }
}

/// A `{key, value}` parameter or annotation; parameters may be `init` (exported to `/init`'s
/// environment) or encrypted (`encryption` names the scheme, upstream `ParameterEncryption`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(default)]
    pub value: Value,
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub encryption: Option<String>,
}

/// An action document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Action {
    pub namespace: String,
    pub name: String,
    #[serde(default = "default_version")]
    pub version: String,
    pub exec: Exec,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub parameters: Vec<KeyValue>,
    #[serde(default)]
    pub annotations: Vec<KeyValue>,
    /// The document revision, when the document carries one (`_rev` in CouchDB).
    #[serde(default, alias = "_rev")]
    pub rev: Option<String>,
}

fn default_version() -> String {
    "0.0.1".into()
}

impl Action {
    /// `namespace/name`: the document id.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.namespace.trim_matches('/'), self.name)
    }

    /// Default parameters as a JSON object.
    pub fn parameters(&self) -> Map<String, Value> {
        self.parameters
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect()
    }

    pub fn is_blackbox(&self) -> bool {
        self.exec.kind == "blackbox"
    }

    pub fn is_sequence(&self) -> bool {
        self.exec.kind == "sequence"
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&Value> {
        self.annotations
            .iter()
            .find(|a| a.key == key)
            .map(|a| &a.value)
    }

    /// Upstream's `isTruthy`: whether an annotation is set to something other than false,
    /// null, 0 or "" (`absent` when it is not there).
    pub fn annotation_is_truthy(&self, key: &str, absent: bool) -> bool {
        match self.annotation(key) {
            None => absent,
            Some(Value::Bool(b)) => *b,
            Some(Value::Null) => false,
            Some(Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        }
    }
}

/// Upstream's `Exec.isBinaryCode`: inline code that is entirely base64 is binary (a zip).
pub fn is_binary_code(code: &str) -> bool {
    let t = code.trim();
    !t.is_empty()
        && t.len().is_multiple_of(4)
        && base64::Engine::decode(&base64::engine::general_purpose::STANDARD, t).is_ok()
}

impl Action {
    /// Upstream's reading rules: the kind is trimmed and lower-cased; inline code is binary
    /// exactly when it is base64, attached code when the document says so.
    pub fn normalize(&mut self) {
        self.exec.kind = self.exec.kind.trim().to_lowercase();
        if let Some(Code::Inline(code)) = &self.exec.code {
            self.exec.binary = is_binary_code(code);
        }
    }
}
