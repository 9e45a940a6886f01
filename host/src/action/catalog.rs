//! Action documents from a directory, as OpenWhisk's REST API returns them.

use super::couchdb::{code_text, decode_mem};
use super::document::Code;
use super::FullyQualifiedEntityName;
use super::{Action, ActionError, ActionStore};
use std::collections::HashMap;
use std::path::Path;

/// Every `*.json` file under a directory, one action document each.
#[derive(Debug, Default)]
pub struct CatalogDir {
    actions: HashMap<String, Action>,
}

/// A catalog document's code must be in it: inline, or a `mem:` attachment name.
fn inline_code(action: &mut Action) -> Result<(), String> {
    if let Some(Code::Attached { name, .. }) = &action.exec.code {
        let inline = name.strip_prefix("mem:").ok_or_else(|| {
            format!("code attachment `{name}` is not in the catalog directory (only `mem:` attachments are)")
        })?;
        let code = code_text(decode_mem(inline)?, action.exec.binary)?;
        action.exec.code = Some(Code::Inline(code));
    }
    Ok(())
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
                    let mut action: Action = serde_json::from_slice(&text)
                        .map_err(|e| read_err(&path, format!("not an action document: {e}")))?;
                    action.normalize();
                    inline_code(&mut action).map_err(|e| read_err(&path, e))?;
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

#[async_trait::async_trait]
impl ActionStore for CatalogDir {
    async fn resolve(
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
