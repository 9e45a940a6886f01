//! How members reach each other: mutual TLS (the default) or, only with an explicit
//! `insecure = true`, plain HTTP with the shared secret in a header. Both sides of a connection
//! take their settings from here: the client a member dials its peers with, and what its
//! listener accepts. [`member_http`] and [`exchange`] are the one HTTP client that reaches a
//! member, shared by the Raft peer client and the operator's `keepwarm cluster` / `status`.

use super::tls::{server_name, Identity, MemberTls};
use super::types::NodeId;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;

pub const SECRET_HEADER: &str = "x-keepwarm-secret";

/// The HTTP client used to call one peer.
pub type PeerHttp = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, Clone)]
pub enum Transport {
    Tls(MemberTls),
    /// Plain HTTP; every request carries the secret.
    Insecure {
        secret: Arc<str>,
    },
}

impl Transport {
    pub fn insecure(secret: &str) -> Transport {
        Transport::Insecure {
            secret: secret.into(),
        }
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Transport::Tls(_) => "https",
            Transport::Insecure { .. } => "http",
        }
    }

    /// A pooled client for calling member `id`, which must prove it is that member.
    pub fn client_for(&self, id: NodeId) -> PeerHttp {
        match self {
            Transport::Tls(tls) => member_http(Some((tls.client.clone(), server_name(id)))),
            Transport::Insecure { .. } => member_http(None),
        }
    }

    /// Adds what a plain request needs to be accepted (the secret).
    pub fn authorize(&self, request: http::request::Builder) -> http::request::Builder {
        match self {
            Transport::Tls(_) => request,
            Transport::Insecure { secret } => request.header(SECRET_HEADER, &**secret),
        }
    }

    /// The TLS acceptor for this member's listener (`None`: plain).
    pub fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        match self {
            Transport::Tls(tls) => Some(tokio_rustls::TlsAcceptor::from(tls.server.clone())),
            Transport::Insecure { .. } => None,
        }
    }

    /// Who sent a request: the connection's certificate, or on a plain connection whoever
    /// shows the secret; `None`: refuse.
    pub fn peer(&self, connection: Identity, headers: &http::HeaderMap) -> Option<Identity> {
        match self {
            Transport::Tls(_) => match connection {
                Identity::Unverified => None,
                verified => Some(verified),
            },
            Transport::Insecure { secret } => {
                let shown = headers.get(SECRET_HEADER)?.as_bytes();
                same(shown, secret.as_bytes()).then_some(Identity::Unverified)
            }
        }
    }
}

/// A pooled HTTP/1.1 client to members: over TLS with `tls` (the client configuration, and the
/// name every server's certificate must present), else plain HTTP.
pub fn member_http(tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>) -> PeerHttp {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_millis(200)));
    http.enforce_http(false);
    let connector = match tls {
        Some((config, name)) => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*config).clone())
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(name))
            .enable_http1()
            .wrap_connector(http),
        None => hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    };
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Sends `request` with `client`; the answer's status and body within `limit`, or why not.
pub async fn exchange(
    client: &PeerHttp,
    request: Request<Full<Bytes>>,
    limit: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let send = async {
        let response = client.request(request).await.map_err(|e| {
            // hyper's Display hides the cause (a refused handshake, a wrong certificate)
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(limit, send)
        .await
        .map_err(|_| format!("no answer within {limit:?}"))?
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
