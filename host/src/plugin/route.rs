//! Outbound HTTP for plugins, routed by request authority.
//!
//! A plugin asks for `http://docker/v1.41/containers/json`; the operator's config maps the
//! authority `docker` to `unix:///var/run/docker.sock` (or `http://127.0.0.1:2375`). Anything not
//! mapped is refused. Connections are pooled per plugin, so calls reuse them.

use super::PluginError;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Where one authority leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///path`, `http://host:port` or `tcp://host:port`.
    pub fn parse(target: &str) -> Result<Endpoint, String> {
        if let Some(path) = target.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err("a unix socket path must be absolute (unix:///var/run/x.sock)".into());
            }
            return Ok(Endpoint::Unix(path.into()));
        }
        let rest = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("tcp://"))
            .ok_or("use unix:///path.sock, http://host:port or tcp://host:port")?;
        let hostport = rest.trim_end_matches('/');
        if hostport.is_empty() || hostport.contains('/') {
            return Err("expected host:port with no path".into());
        }
        let hostport = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            hostport.to_owned()
        } else {
            format!("{hostport}:80")
        };
        Ok(Endpoint::Tcp(hostport))
    }
}

/// The authorities one plugin may reach.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    map: HashMap<String, Endpoint>,
}

impl Routes {
    /// Builds the table from config pairs, naming the plugin and route in any error.
    pub fn parse(plugin: &str, pairs: &[(String, String)]) -> Result<Routes, PluginError> {
        let mut map = HashMap::new();
        for (name, target) in pairs {
            let endpoint = Endpoint::parse(target).map_err(|reason| PluginError::Route {
                plugin: plugin.to_owned(),
                name: name.clone(),
                target: target.clone(),
                reason,
            })?;
            map.insert(name.to_ascii_lowercase(), endpoint);
        }
        Ok(Routes { map })
    }

    /// The endpoint for a request authority: a route name (`docker`, `mesos`), or the
    /// `host:port` of a TCP endpoint already in the table — so a plugin can follow a redirect
    /// (Mesos' 307 to the leading master) to an endpoint the operator allowed, and nowhere else.
    pub fn get(&self, authority: &str) -> Option<&Endpoint> {
        let authority = authority.to_ascii_lowercase();
        let name = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok())
            .map_or(authority.as_str(), |(host, _)| host);
        self.map.get(name).or_else(|| {
            self.map
                .values()
                .find(|e| matches!(e, Endpoint::Tcp(addr) if *addr == authority))
        })
    }
}

/// The pooled HTTP client for one plugin, shared by all its instances.
#[derive(Clone)]
pub struct Outbound {
    plugin: Arc<str>,
    routes: Arc<Routes>,
    client: Client<Connector, WasiBody>,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("plugin", &self.plugin)
            .field("routes", &self.routes)
            .finish()
    }
}

impl Outbound {
    pub fn new(plugin: &str, routes: Routes) -> Outbound {
        let routes = Arc::new(routes);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(Connector {
                routes: routes.clone(),
            });
        Outbound {
            plugin: plugin.into(),
            routes,
            client,
        }
    }

    /// The name of the plugin whose requests these are.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        if self.routes.get(&authority).is_none() {
            tracing::warn!(
                plugin = %self.plugin,
                %authority,
                "refused outbound request: authority `{authority}` is not routed; map it in \
                 [plugins.{}.routes], e.g. {authority} = \"unix:///var/run/{authority}.sock\"",
                self.plugin
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let client = self.client.clone();
        Box::new(async move {
            let response = client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    HttpError::ConnectionRefused
                } else {
                    HttpError::InternalError(Some(e.to_string()))
                }
            })?;
            let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// Connects an authority to its configured endpoint.
#[derive(Debug, Clone)]
pub struct Connector {
    routes: Arc<Routes>,
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let endpoint = uri
            .authority()
            .and_then(|a| self.routes.get(a.as_str()))
            .cloned();
        Box::pin(async move {
            let stream = match endpoint {
                Some(Endpoint::Unix(path)) => Stream::Unix(UnixStream::connect(path).await?),
                Some(Endpoint::Tcp(addr)) => {
                    let s = TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    Stream::Tcp(s)
                }
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!("authority of {uri} is not routed"),
                    ))
                }
            };
            Ok(TokioIo::new(stream))
        })
    }
}

/// A connection to an engine over a unix socket or TCP.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock"),
            Ok(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:5050"),
            Ok(Endpoint::Tcp("127.0.0.1:5050".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://localhost:2375/"),
            Ok(Endpoint::Tcp("localhost:2375".into()))
        );
        assert_eq!(
            Endpoint::parse("http://mesos-master"),
            Ok(Endpoint::Tcp("mesos-master:80".into()))
        );
        assert!(Endpoint::parse("unix://relative.sock").is_err());
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("http://x:1/path").is_err());
    }

    #[test]
    fn authorities_match_without_case() {
        let routes = Routes::parse("p", &[("Docker".into(), "unix:///d.sock".into())]).unwrap();
        assert!(routes.get("docker").is_some());
        assert!(routes.get("podman").is_none());
    }

    #[test]
    fn a_redirect_reaches_only_configured_endpoints() {
        let routes = Routes::parse(
            "mesos",
            &[
                ("mesos".into(), "http://127.0.0.1:5050".into()),
                ("mesos-2".into(), "http://127.0.0.1:5051".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            routes.get("127.0.0.1:5051"),
            Some(&Endpoint::Tcp("127.0.0.1:5051".into()))
        );
        assert_eq!(
            routes.get("mesos:8080"),
            Some(&Endpoint::Tcp("127.0.0.1:5050".into()))
        );
        assert!(routes.get("127.0.0.1:5052").is_none());
        assert!(routes.get("127.0.0.1").is_none());
    }
}
