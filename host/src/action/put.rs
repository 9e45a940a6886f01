//! `keepwarm actions put` and `get`: action documents into and out of CouchDB's `whisks`, as
//! the OpenWhisk controller writes them (`WhiskAction.putAndAttach`), so an operator can try
//! the CouchDB store without a controller. Code longer than the threshold goes into a CouchDB
//! attachment named `couch:<uuid>` (binary code as its decoded bytes), shorter code stays in
//! `exec.code`; an existing document is updated at its latest revision.

use super::couchdb::{read_document, CouchActions};
use super::document::is_binary_code;
use super::ActionStore;
use super::FullyQualifiedEntityName;
use crate::couchdb::{CouchDb, CouchError};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Upstream's default `max-inline-size`.
pub const INLINE_BYTES: usize = 16 * 1024;

/// What one `put` did.
#[derive(Debug)]
pub struct Stored {
    pub id: String,
    pub rev: String,
    pub attachment: Option<String>,
}

/// Every `*.json` under `path` (or the file itself), in `wsk action get`'s shape.
pub fn read_sources(path: &Path) -> Result<Vec<(String, Value)>, String> {
    let mut files = Vec::new();
    let mut pending = vec![path.to_owned()];
    while let Some(p) = pending.pop() {
        if p.is_dir() {
            let entries = std::fs::read_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            for e in entries {
                pending.push(e.map_err(|e| format!("{}: {e}", p.display()))?.path());
            }
        } else if p == path || p.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let doc: Value = serde_json::from_slice(&text)
                .map_err(|e| format!("{}: not JSON: {e}", p.display()))?;
            files.push((p.display().to_string(), doc));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// Code bytes for a CouchDB attachment, and their content type.
type Attachment = (Vec<u8>, &'static str);

/// The controller's document for `source` (without `_rev` and attachment).
fn document(source: &Value) -> Result<(String, Value, Option<Attachment>), String> {
    let namespace = source["namespace"].as_str().ok_or("no `namespace`")?;
    let name = source["name"].as_str().ok_or("no `name`")?;
    let id = format!("{}/{name}", namespace.trim_matches('/'));
    read_document(&id, source).map_err(|e| e.to_string())?;
    let mut exec = source["exec"].as_object().cloned().ok_or("no `exec`")?;
    let mut attachment = None;
    if let Some(Value::String(code)) = exec.get("code").cloned() {
        let binary = is_binary_code(&code);
        exec.insert("binary".into(), json!(binary));
        if code.len() > INLINE_BYTES {
            let (bytes, content_type) = if binary {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(code.trim())
                    .map_err(|e| e.to_string())?;
                (bytes, "application/octet-stream")
            } else {
                (code.into_bytes(), "text/plain; charset=UTF-8")
            };
            let name = format!("couch:{}", uuid::Uuid::new_v4().simple());
            exec.insert(
                "code".into(),
                json!({ "attachmentName": name, "attachmentType": content_type }),
            );
            attachment = Some((bytes, content_type));
        }
    }
    let limits = source.get("limits").cloned().unwrap_or(json!({}));
    let limit = |k: &str, d: u64| limits.get(k).and_then(Value::as_u64).unwrap_or(d);
    let now = crate::clock::now_ms();
    let doc = json!({
        "_id": id,
        "entityType": "action",
        "namespace": namespace.trim_matches('/'),
        "name": name,
        "version": source.get("version").cloned().unwrap_or(json!("0.0.1")),
        "publish": source.get("publish").cloned().unwrap_or(json!(false)),
        "exec": Value::Object(exec),
        "limits": { "timeout": limit("timeout", 60_000), "memory": limit("memory", 256),
                    "logs": limit("logs", 10), "concurrency": limit("concurrency", 1) },
        "parameters": source.get("parameters").cloned().unwrap_or(json!([])),
        "annotations": source.get("annotations").cloned().unwrap_or(json!([])),
        "updated": now,
    });
    Ok((id, doc, attachment))
}

/// Stores one action document (and its code attachment).
pub async fn put(db: &CouchDb, source: &Value) -> Result<Stored, String> {
    let (id, mut doc, attachment) = document(source)?;
    match db.get(&id).await {
        Ok(old) => doc["_rev"] = old["_rev"].clone(),
        Err(CouchError::NotFound) => {}
        Err(e) => return Err(e.to_string()),
    }
    let rev = db.put(&id, &doc).await.map_err(|e| e.to_string())?;
    let Some((bytes, content_type)) = attachment else {
        return Ok(Stored {
            id,
            rev,
            attachment: None,
        });
    };
    let name = doc["exec"]["code"]["attachmentName"]
        .as_str()
        .expect("set above")
        .to_owned();
    let stored = name.strip_prefix("couch:").expect("couch: name");
    let rev = db
        .put_attachment(&id, &rev, stored, content_type, bytes)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Stored {
        id,
        rev,
        attachment: Some(name),
    })
}

/// The stored document `id`, after checking the invoker can resolve it (its code attachment
/// fetched, its digest checked).
pub async fn get(db: CouchDb, id: &str) -> Result<Value, String> {
    let doc = db.get(id).await.map_err(|e| format!("{id}: {e}"))?;
    let name: FullyQualifiedEntityName =
        serde_json::from_value(json!(id)).map_err(|e| format!("{id}: {e}"))?;
    let resolved = CouchActions::new(db).resolve(&name, None).await;
    let mut doc = doc;
    if let Value::Object(fields) = &mut doc {
        let check: Map<String, Value> = match resolved {
            Ok(a) => [
                ("resolves".to_string(), json!(true)),
                (
                    "codeBytes".to_string(),
                    json!(a.exec.inline_code().map_or(0, str::len)),
                ),
            ]
            .into_iter()
            .collect(),
            Err(e) => [
                ("resolves".to_string(), json!(false)),
                ("error".to_string(), json!(e.to_string())),
            ]
            .into_iter()
            .collect(),
        };
        fields.insert("keepwarm".into(), Value::Object(check));
    }
    Ok(doc)
}
