//! A client for CouchDB's plain HTTP API — documents, attachments, `_bulk_docs` — with basic
//! authentication, as OpenWhisk's `CouchDbRestClient` uses it. Nothing PouchDB-specific: it
//! is written for Apache CouchDB 2.3 and 3.x (and tested against `pouchdb-server`, which
//! speaks the same API).

use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Where CouchDB is and who keepwarm is to it (the config's `[couchdb]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CouchConfig {
    /// `http://host:5984` or `https://...`.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// OpenWhisk's `db_prefix`: actions are in `{prefix}whisks`, records in
    /// `{prefix}activations`.
    #[serde(default = "default_prefix")]
    pub db_prefix: String,
    /// Upper bound on one request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_prefix() -> String {
    "whisk_local_".into()
}
fn default_timeout_ms() -> u64 {
    10_000
}

/// What went wrong talking to CouchDB.
#[derive(Debug, thiserror::Error)]
pub enum CouchError {
    #[error("not found")]
    NotFound,
    #[error("conflict: a newer revision exists")]
    Conflict,
    #[error("CouchDB answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("CouchDB unreachable: {0}")]
    Unreachable(String),
    #[error("CouchDB sent something that is not JSON: {0}")]
    Invalid(String),
}

/// One database.
#[derive(Debug, Clone)]
pub struct CouchDb {
    http: reqwest::Client,
    base: Url,
    db: String,
    auth: Option<(String, Option<String>)>,
}

/// One document's answer in `_bulk_docs`.
#[derive(Debug, Clone, Deserialize)]
pub struct BulkResult {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub rev: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl CouchDb {
    /// The database `{db_prefix}{name}` (e.g. `whisks`, `activations`).
    pub fn open(config: &CouchConfig, name: &str) -> Result<CouchDb, String> {
        let base =
            Url::parse(&config.url).map_err(|e| format!("couchdb url `{}`: {e}", config.url))?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(format!(
                "couchdb url `{}` is not an http(s) URL",
                config.url
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_millis(config.timeout_ms))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("couchdb client: {e}"))?;
        Ok(CouchDb {
            http,
            base,
            db: format!("{}{name}", config.db_prefix),
            auth: config
                .username
                .clone()
                .map(|u| (u, config.password.clone())),
        })
    }

    pub fn name(&self) -> &str {
        &self.db
    }

    /// `base/db/seg...`, each segment percent-encoded (a document id's `/` becomes `%2F`).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked in open");
            path.pop_if_empty().push(&self.db);
            for s in segments {
                path.push(s);
            }
        }
        url
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.auth {
            Some((user, password)) => r.basic_auth(user, password.as_ref()),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response, CouchError> {
        let response = r
            .send()
            .await
            .map_err(|e| CouchError::Unreachable(error_chain(&e)))?;
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::NOT_FOUND => Err(CouchError::NotFound),
            StatusCode::CONFLICT => Err(CouchError::Conflict),
            s => Err(CouchError::Status {
                status: s.as_u16(),
                body: response.text().await.unwrap_or_default(),
            }),
        }
    }

    async fn json(&self, r: reqwest::RequestBuilder) -> Result<Value, CouchError> {
        self.send(r)
            .await?
            .json()
            .await
            .map_err(|e| CouchError::Invalid(e.to_string()))
    }

    /// Creates the database unless it exists.
    pub async fn ensure(&self) -> Result<(), CouchError> {
        match self
            .send(self.request(reqwest::Method::PUT, self.url(&[])))
            .await
        {
            Ok(_) => Ok(()),
            Err(CouchError::Status { status: 412, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The latest revision of a document (with `_attachments` stubs).
    pub async fn get(&self, id: &str) -> Result<Value, CouchError> {
        self.json(self.request(reqwest::Method::GET, self.url(&[id])))
            .await
    }

    /// An attachment's bytes at `rev`.
    pub async fn attachment(&self, id: &str, rev: &str, name: &str) -> Result<Vec<u8>, CouchError> {
        let response = self
            .send(
                self.request(reqwest::Method::GET, self.url(&[id, name]))
                    .query(&[("rev", rev)]),
            )
            .await?;
        Ok(response
            .bytes()
            .await
            .map_err(|e| CouchError::Unreachable(error_chain(&e)))?
            .to_vec())
    }

    /// Writes a document (its `_rev`, when set, must be the latest); returns the new revision.
    pub async fn put(&self, id: &str, doc: &Value) -> Result<String, CouchError> {
        let answer = self
            .json(
                self.request(reqwest::Method::PUT, self.url(&[id]))
                    .json(doc),
            )
            .await?;
        revision(&answer)
    }

    /// Adds an attachment to revision `rev`; returns the new revision.
    pub async fn put_attachment(
        &self,
        id: &str,
        rev: &str,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, CouchError> {
        let answer = self
            .json(
                self.request(reqwest::Method::PUT, self.url(&[id, name]))
                    .query(&[("rev", rev)])
                    .header(reqwest::header::CONTENT_TYPE, content_type)
                    .body(bytes),
            )
            .await?;
        revision(&answer)
    }

    /// Writes many documents in one request; each gets its own answer.
    pub async fn bulk(&self, docs: &[Value]) -> Result<Vec<BulkResult>, CouchError> {
        let answer = self
            .json(
                self.request(reqwest::Method::POST, self.url(&["_bulk_docs"]))
                    .json(&serde_json::json!({ "docs": docs })),
            )
            .await?;
        serde_json::from_value(answer).map_err(|e| CouchError::Invalid(e.to_string()))
    }
}

fn revision(answer: &Value) -> Result<String, CouchError> {
    answer["rev"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CouchError::Invalid(format!("no rev in {answer}")))
}

/// reqwest's error with its causes (connection refused, timeout, ...).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
