//! A small HTTP client for action proxies (`/init`, `/run`), retrying while a new container's
//! proxy is still starting.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A pooled client (keep-alive), as the host uses for proxies.
#[derive(Debug, Clone)]
pub struct ProxyClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for ProxyClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        ProxyClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl ProxyClient {
    /// POSTs JSON once; returns status and JSON body.
    pub async fn post(
        &self,
        address: &str,
        path: &str,
        body: &Value,
    ) -> Result<(u16, Value), String> {
        let req = hyper::Request::post(format!("http://{address}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// Waits until the proxy accepts connections (up to `within`), then POSTs.
    pub async fn post_ready(
        &self,
        address: &str,
        path: &str,
        body: &Value,
        within: Duration,
    ) -> Result<(u16, Value), String> {
        let start = Instant::now();
        loop {
            match self.post(address, path, body).await {
                Ok(r) => return Ok(r),
                Err(e) if start.elapsed() > within => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// An `/init` body for a shell-script action.
pub fn init_script(script: &str) -> Value {
    serde_json::json!({
        "value": { "name": "test", "main": "main", "binary": false, "code": script, "env": {} }
    })
}

/// A `/run` body.
pub fn run_body(value: Value, activation_id: &str) -> Value {
    serde_json::json!({
        "value": value,
        "activation_id": activation_id,
        "deadline": "0",
        "namespace": "guest",
        "action_name": "/guest/test",
    })
}

/// The action the conformance suite and benches run: logs a line and echoes its input.
pub const ECHO_ACTION: &str =
    "#!/bin/sh\necho \"log line from the action\"\necho \"{\\\"echo\\\": $1}\"\n";
