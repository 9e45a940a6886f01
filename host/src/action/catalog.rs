//! Action documents from a directory, as OpenWhisk's REST API returns them.

use super::ActionError;
use crate::activation::FullyQualifiedEntityName;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// `exec` of an action document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Exec {
    pub kind: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub binary: bool,
    #[serde(default)]
    pub main: Option<String>,
    /// The image of a blackbox action.
    #[serde(default)]
    pub image: Option<String>,
}

/// `limits` of an action document (OpenWhisk's defaults where absent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Limits {
    /// Milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// MiB.
    #[serde(default = "default_memory")]
    pub memory: u32,
    /// KiB of logs kept.
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

/// A `{key, value}` parameter or annotation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: Value,
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
    /// `namespace/name`.
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
}

/// Resolves an activation's action to its definition.
pub trait ActionStore: Send + Sync + std::fmt::Debug {
    fn resolve(
        &self,
        name: &FullyQualifiedEntityName,
        revision: Option<&str>,
    ) -> Result<Action, ActionError>;
}

/// Every `*.json` file under a directory, one action document each.
#[derive(Debug, Default)]
pub struct CatalogDir {
    actions: HashMap<String, Action>,
}

impl CatalogDir {
    pub fn load(dir: &Path) -> Result<CatalogDir, ActionError> {
        let read_err = |path: &Path, reason: String| ActionError::Read {
            path: path.display().to_string(),
            reason,
        };
        let mut actions = HashMap::new();
        let mut pending = vec![dir.to_owned()];
        while let Some(d) = pending.pop() {
            let entries = std::fs::read_dir(&d).map_err(|e| read_err(&d, e.to_string()))?;
            for entry in entries {
                let path = entry.map_err(|e| read_err(&d, e.to_string()))?.path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "json") {
                    let text = std::fs::read(&path).map_err(|e| read_err(&path, e.to_string()))?;
                    let action: Action = serde_json::from_slice(&text)
                        .map_err(|e| read_err(&path, format!("not an action document: {e}")))?;
                    actions.insert(action.qualified(), action);
                }
            }
        }
        Ok(CatalogDir { actions })
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

impl ActionStore for CatalogDir {
    fn resolve(
        &self,
        name: &FullyQualifiedEntityName,
        revision: Option<&str>,
    ) -> Result<Action, ActionError> {
        let key = name.qualified();
        let action = self
            .actions
            .get(&key)
            .ok_or_else(|| ActionError::NotFound(key.clone()))?;
        if let (Some(want), Some(have)) = (revision, action.rev.as_deref()) {
            if want != have {
                return Err(ActionError::Revision {
                    name: key,
                    have: have.into(),
                    want: want.into(),
                });
            }
        }
        Ok(action.clone())
    }
}
