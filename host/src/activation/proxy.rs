//! Client for a container's action proxy: `POST /init` once, `POST /run` per activation.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

/// Why a call to an action proxy produced no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no answer from {address} within {limit:?}")]
    Timeout { address: String, limit: Duration },
    /// No connection was made: nothing was sent, the action has not run.
    #[error("cannot reach the action proxy at {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The connection failed after the request may have been sent.
    #[error("the connection to the action proxy at {address} broke: {reason}")]
    Broken { address: String, reason: String },
    #[error("the action's response is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The host's lease lapsed: nothing was sent.
    #[error("refused: this host no longer holds the lease")]
    Fenced,
}

/// An HTTP answer from the proxy.
#[derive(Debug, Clone)]
pub struct ProxyResponse {
    pub status: u16,
    pub body: Bytes,
}

/// Pooled keep-alive connections to action proxies.
#[derive(Debug, Clone)]
pub struct ProxyClient {
    client: Client<HttpConnector, Full<Bytes>>,
    max_response: usize,
    /// The lease in a cluster (always open on a single host): checked immediately before
    /// every request.
    gate: crate::fence::Gate,
}

impl ProxyClient {
    pub fn new(max_response_bytes: usize) -> ProxyClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        // a container whose machine died answers nothing: keepalive probes end the wait for
        // its response in ~5 s rather than at the action's timeout
        connector.set_keepalive(Some(Duration::from_secs(2)));
        connector.set_keepalive_interval(Some(Duration::from_secs(1)));
        connector.set_keepalive_retries(Some(3));
        ProxyClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(connector),
            max_response: max_response_bytes,
            gate: crate::fence::Gate::always(),
        }
    }

    /// The same client, refusing every request while `gate` is closed.
    pub fn fenced(mut self, gate: crate::fence::Gate) -> ProxyClient {
        self.gate = gate;
        self
    }

    /// POSTs `body` to `http://{address}{path}` and reads the answer within `limit`.
    pub async fn post(
        &self,
        address: &str,
        path: &str,
        body: &Value,
        limit: Duration,
    ) -> Result<ProxyResponse, ProxyError> {
        if !self.gate.open() {
            return Err(ProxyError::Fenced);
        }
        let request = hyper::Request::post(format!("http://{address}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| ProxyError::Connect {
                address: address.to_owned(),
                reason: e.to_string(),
            })?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| {
                let (address, reason) = (address.to_owned(), format!("{e:?}"));
                if e.is_connect() {
                    ProxyError::Connect { address, reason }
                } else {
                    ProxyError::Broken { address, reason }
                }
            })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), self.max_response)
                .collect()
                .await
                .map_err(|_| ProxyError::TooLarge {
                    limit: self.max_response,
                })?
                .to_bytes();
            Ok(ProxyResponse { status, body })
        };
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| ProxyError::Timeout {
                address: address.to_owned(),
                limit,
            })?
    }

    /// POSTs `/init`, retrying while a new container's proxy starts: a refused connection,
    /// or one reset before any answer (a userland port proxy such as `docker-proxy` accepts
    /// and then resets while nothing listens behind it). Upstream's container client retries
    /// `/init` on connection failures the same way, until the init timeout.
    pub async fn init(
        &self,
        address: &str,
        body: &Value,
        limit: Duration,
    ) -> Result<ProxyResponse, ProxyError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.post(address, "/init", body, left).await {
                Err(ProxyError::Connect { .. } | ProxyError::Broken { .. }) if !left.is_zero() => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => return other,
            }
        }
    }
}
