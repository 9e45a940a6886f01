//! Action documents from CouchDB's `{db_prefix}whisks`, as the OpenWhisk controller stores
//! them. Follows upstream's `WhiskAction.get`: the document id is `namespace[/package]/name`;
//! code in an attachment is fetched (`mem:` names carry it base64url-encoded, `couch:` names
//! a CouchDB attachment) and its digest checked; binary code is handed on base64-encoded. A
//! cache keyed by document id and revision serves a message that names the revision; one
//! without a revision always reads the latest document (upstream bypasses its cache then).

use super::document::Code;
use super::FullyQualifiedEntityName;
use super::{Action, ActionError, ActionStore};
use crate::couchdb::{CouchDb, CouchError};
use base64::Engine;
use lru::LruCache;
use serde_json::Value;
use sha2::Digest;
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// How many (id, revision) documents the cache keeps.
const CACHED: usize = 4096;

#[derive(Debug)]
pub struct CouchActions {
    db: CouchDb,
    cache: Mutex<LruCache<(String, String), Action>>,
}

impl CouchActions {
    pub fn new(db: CouchDb) -> CouchActions {
        CouchActions {
            db,
            cache: Mutex::new(LruCache::new(NonZeroUsize::new(CACHED).expect("non-zero"))),
        }
    }

    /// Reads and checks the latest document `id`, fetching its code attachment.
    async fn fetch(&self, id: &str) -> Result<Action, ActionError> {
        let fetch_err = |reason: String| ActionError::Fetch {
            name: id.to_owned(),
            reason,
        };
        let doc = match self.db.get(id).await {
            Ok(doc) => doc,
            Err(CouchError::NotFound) => return Err(ActionError::NotFound(id.to_owned())),
            Err(e) => return Err(fetch_err(e.to_string())),
        };
        let mut action = read_document(id, &doc)?;
        let rev = action.rev.clone().unwrap_or_default();
        if let Some(Code::Attached {
            name,
            digest,
            length,
            ..
        }) = action.exec.code.clone()
        {
            let bytes = match name.strip_prefix("mem:") {
                Some(inline) => decode_mem(inline).map_err(fetch_err)?,
                None => {
                    let stored = name.strip_prefix("couch:").unwrap_or(&name);
                    let bytes = match self.db.attachment(id, &rev, stored).await {
                        Ok(b) => b,
                        Err(CouchError::NotFound) => {
                            return Err(ActionError::NotFound(format!("{id} (attachment {name})")))
                        }
                        Err(e) => return Err(fetch_err(format!("attachment {name}: {e}"))),
                    };
                    check_couch_digest(&doc, stored, &bytes).map_err(fetch_err)?;
                    bytes
                }
            };
            check_digest(digest.as_deref(), length, &bytes).map_err(fetch_err)?;
            let code = code_text(bytes, action.exec.binary).map_err(fetch_err)?;
            action.exec.code = Some(Code::Inline(code));
        }
        Ok(action)
    }
}

/// An action from a `whisks` document: upstream's type check (`entityType`) and reader.
pub fn read_document(id: &str, doc: &Value) -> Result<Action, ActionError> {
    let incompatible = |reason: String| ActionError::Incompatible {
        name: id.to_owned(),
        reason,
    };
    match doc.get("entityType").and_then(Value::as_str) {
        Some("action") | None => {}
        Some(other) => return Err(incompatible(format!("the document is a {other}"))),
    }
    let mut action: Action = serde_json::from_value(doc.clone())
        .map_err(|e| incompatible(format!("not an action document: {e}")))?;
    action.normalize();
    Ok(action)
}

/// The bytes of a `mem:` attachment name (upstream: `Base64.getUrlEncoder`).
pub fn decode_mem(inline: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE
        .decode(inline)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(inline))
        .map_err(|e| format!("inline attachment is not base64url: {e}"))
}

/// The code `/init` gets: binary code base64-encoded (as upstream's `getWithAttachment`
/// wraps it), text as it is.
pub fn code_text(bytes: Vec<u8>, binary: bool) -> Result<String, String> {
    if binary {
        Ok(base64::engine::general_purpose::STANDARD.encode(&bytes))
    } else {
        String::from_utf8(bytes).map_err(|_| "the code attachment is not UTF-8 text".to_string())
    }
}

/// `sha256-<hex>` and the length, when the code record carries them.
fn check_digest(digest: Option<&str>, length: Option<u64>, bytes: &[u8]) -> Result<(), String> {
    if let Some(want) = length.filter(|&l| l != bytes.len() as u64) {
        return Err(format!(
            "attachment has {} bytes, the document says {want}",
            bytes.len()
        ));
    }
    match digest.and_then(|d| d.strip_prefix("sha256-")) {
        Some(want) => {
            let have = hex(&sha2::Sha256::digest(bytes));
            if have != want.to_ascii_lowercase() {
                return Err(format!(
                    "attachment digest sha256-{have}, the document says sha256-{want}"
                ));
            }
            Ok(())
        }
        None => Ok(()),
    }
}

/// CouchDB's own `md5-<base64>` digest from the document's `_attachments` stub.
fn check_couch_digest(doc: &Value, name: &str, bytes: &[u8]) -> Result<(), String> {
    let Some(want) = doc["_attachments"][name]["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("md5-"))
    else {
        return Ok(());
    };
    let have = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes));
    if have != want {
        return Err(format!(
            "attachment {name} has md5-{have}, CouchDB says md5-{want}"
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait::async_trait]
impl ActionStore for CouchActions {
    async fn resolve(
        &self,
        name: &FullyQualifiedEntityName,
        revision: Option<&str>,
    ) -> Result<Action, ActionError> {
        let id = name.qualified();
        if let Some(rev) = revision {
            let key = (id.clone(), rev.to_owned());
            if let Some(hit) = self.cache.lock().expect("cache lock").get(&key) {
                return Ok(hit.clone());
            }
        }
        let action = self.fetch(&id).await?;
        let have = action.rev.clone().unwrap_or_default();
        self.cache
            .lock()
            .expect("cache lock")
            .put((id.clone(), have.clone()), action.clone());
        match revision {
            Some(want) if want != have => Err(ActionError::Revision {
                name: id,
                have,
                want: want.to_owned(),
            }),
            _ => Ok(action),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_controller_document_and_refuses_other_entity_types() {
        let doc = json!({
            "_id": "guest/pkg/hello", "_rev": "2-abc", "entityType": "action",
            "namespace": "guest/pkg", "name": "hello", "version": "0.0.3", "publish": false,
            "exec": { "kind": "nodejs:20", "code": { "attachmentName": "couch:1b2c",
                "attachmentType": "text/plain; charset=UTF-8" }, "binary": false },
            "limits": { "timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1 },
            "parameters": [ { "key": "x", "value": 1 } ], "annotations": [], "updated": 1
        });
        let a = read_document("guest/pkg/hello", &doc).unwrap();
        assert_eq!(a.qualified(), "guest/pkg/hello");
        assert_eq!(a.rev.as_deref(), Some("2-abc"));
        assert!(
            matches!(a.exec.code, Some(Code::Attached { ref name, .. }) if name == "couch:1b2c")
        );
        let trigger = json!({ "entityType": "trigger", "namespace": "guest", "name": "t" });
        assert!(matches!(
            read_document("guest/t", &trigger),
            Err(ActionError::Incompatible { .. })
        ));
        let broken = json!({ "entityType": "action", "namespace": "guest", "name": "b" });
        assert!(matches!(
            read_document("guest/b", &broken),
            Err(ActionError::Incompatible { .. })
        ));
    }

    #[test]
    fn digests_are_checked() {
        let code = b"function main() {}";
        let good = format!("sha256-{}", hex(&sha2::Sha256::digest(code)));
        assert!(check_digest(Some(&good), Some(code.len() as u64), code).is_ok());
        assert!(check_digest(Some(&good), None, b"tampered").is_err());
        assert!(check_digest(None, Some(3), code).is_err());
        let doc = json!({ "_attachments": { "a": { "digest": format!("md5-{}",
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(code))) } } });
        assert!(check_couch_digest(&doc, "a", code).is_ok());
        assert!(check_couch_digest(&doc, "a", b"other").is_err());
    }
}
