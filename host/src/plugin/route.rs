//! Outbound HTTP for plugins, routed by request authority.
//!
//! A plugin asks for `http://docker/v1.41/containers/json`; the operator's config maps the
//! authority `docker` to `unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`, or an engine
//! on another machine over TLS (`tcp://engine-1:2376` with `[plugin.tls.docker]`: the CA that
//! signed the engine's certificate and this host's client certificate, as Docker's
//! `--tlsverify` expects). The plugin never sees TLS: it speaks plain HTTP to a name, and the
//! host wraps the connection. Anything not mapped is refused. Connections are pooled per
//! plugin, so calls reuse them.

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
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// How long a TCP connection to an engine may take: an engine on another machine that
/// died answers nothing, and a call should fail fast enough for the plugin to try another.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An engine machine that dies answers nothing: a pooled connection to it would wait for a
/// response until the plugin's call deadline. Keepalive probes find an idle or waiting
/// connection dead within ~5 s, and unacknowledged data fails the socket after 5 s, so the
/// call fails as `unavailable` and the plugin can go on without that engine.
fn notice_a_dead_peer(stream: &TcpStream) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(2))
            .with_interval(Duration::from_secs(1))
            .with_retries(3),
    )?;
    socket.set_tcp_user_timeout(Some(Duration::from_secs(5)))
}

/// Where one authority leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl Endpoint {
    /// Parses `unix:///path`, `http://host:port`, `tcp://host:port` or `https://host:port`
    /// (TLS: the route needs TLS files).
    pub fn parse(target: &str) -> Result<Endpoint, String> {
        if let Some(path) = target.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err("a unix socket path must be absolute (unix:///var/run/x.sock)".into());
            }
            return Ok(Endpoint::Unix(path.into()));
        }
        let (rest, default_port) = if let Some(rest) = target.strip_prefix("https://") {
            (rest, 443)
        } else {
            let rest = target
                .strip_prefix("http://")
                .or_else(|| target.strip_prefix("tcp://"))
                .ok_or(
                    "use unix:///path.sock, tcp://host:port, http://host:port or https://host:port",
                )?;
            (rest, 80)
        };
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
            format!("{hostport}:{default_port}")
        };
        Ok(Endpoint::Tcp(hostport))
    }
}

/// The files for TLS to one route's engine. `cert` and `key` (both or neither) are this
/// host's client certificate; `server_name` is what the engine's certificate must name
/// (default: the route's host, a DNS name or an IP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub server_name: Option<String>,
}

impl RouteTls {
    /// Docker's layout (`DOCKER_CERT_PATH`): `ca.pem`, `cert.pem`, `key.pem` in `dir`.
    pub fn in_dir(dir: &std::path::Path) -> RouteTls {
        RouteTls {
            ca: dir.join("ca.pem"),
            cert: Some(dir.join("cert.pem")),
            key: Some(dir.join("key.pem")),
            server_name: None,
        }
    }

    /// A connector for `hostport`: the files read and checked now, so a bad file fails the
    /// start, not the first call.
    fn connector(&self, hostport: &str) -> Result<Tls, String> {
        use crate::pem::{certs, key, provider, roots};
        let builder = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots(&self.ca).map_err(|e| e.to_string())?);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(k)) => builder
                .with_client_auth_cert(
                    certs(cert).map_err(|e| e.to_string())?,
                    key(k).map_err(|e| e.to_string())?,
                )
                .map_err(|e| format!("{} does not match {}: {e}", k.display(), cert.display()))?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("set both cert and key (a client certificate), or neither".into()),
        };
        let host = match &self.server_name {
            Some(name) => name.as_str(),
            None => hostport
                .rsplit_once(':')
                .map_or(hostport, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']'),
        };
        let server_name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("`{host}` is not a server name: {e}"))?;
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// A checked TLS client for one engine.
#[derive(Clone)]
struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS to {:?}", self.server_name)
    }
}

/// One authority's endpoint, with TLS when the operator gave it files.
#[derive(Debug, Clone)]
pub struct Route {
    pub endpoint: Endpoint,
    tls: Option<Tls>,
}

impl Route {
    /// Whether connections to this route are TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// The authorities one plugin may reach.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    map: HashMap<String, Route>,
}

impl Routes {
    /// Builds the table from config pairs and the TLS files of those routes that have them,
    /// naming the plugin and route in any error.
    pub fn parse(
        plugin: &str,
        pairs: &[(String, String)],
        tls: &[(String, RouteTls)],
    ) -> Result<Routes, PluginError> {
        let refuse = |name: &str, target: &str, reason: String| PluginError::Route {
            plugin: plugin.to_owned(),
            name: name.to_owned(),
            target: target.to_owned(),
            reason,
        };
        if let Some((name, _)) = tls.iter().find(|(n, _)| !pairs.iter().any(|(p, _)| p == n)) {
            return Err(refuse(
                name,
                "",
                format!(
                    "[plugin.tls.{name}] names no route; routes are {:?}",
                    names(pairs)
                ),
            ));
        }
        let mut map = HashMap::new();
        for (name, target) in pairs {
            let endpoint =
                Endpoint::parse(target).map_err(|reason| refuse(name, target, reason))?;
            let files = tls.iter().find(|(n, _)| n == name).map(|(_, f)| f);
            let tls = match (&endpoint, files) {
                (Endpoint::Tcp(hostport), Some(files)) => Some(
                    files
                        .connector(hostport)
                        .map_err(|reason| refuse(name, target, format!("TLS: {reason}")))?,
                ),
                (Endpoint::Unix(_), Some(_)) => {
                    return Err(refuse(
                        name,
                        target,
                        "TLS is for TCP routes; a unix socket is reached without it".into(),
                    ))
                }
                (_, None) if target.starts_with("https://") => {
                    return Err(refuse(
                        name,
                        target,
                        format!(
                            "an https route needs [plugin.tls.{name}] (ca, and cert + key for a \
                             client certificate, or cert-dir)"
                        ),
                    ))
                }
                (_, None) => None,
            };
            map.insert(name.to_ascii_lowercase(), Route { endpoint, tls });
        }
        Ok(Routes { map })
    }

    /// The endpoint for a request authority: a route name (`docker`, `mesos`), or the
    /// `host:port` of a TCP endpoint already in the table — so a plugin can follow a redirect
    /// (Mesos' 307 to the leading master) to an endpoint the operator allowed, and nowhere else.
    pub fn get(&self, authority: &str) -> Option<&Route> {
        let authority = authority.to_ascii_lowercase();
        let name = authority
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok())
            .map_or(authority.as_str(), |(host, _)| host);
        self.map.get(name).or_else(|| {
            self.map
                .values()
                .find(|r| matches!(&r.endpoint, Endpoint::Tcp(addr) if *addr == authority))
        })
    }
}

fn names(pairs: &[(String, String)]) -> Vec<&str> {
    pairs.iter().map(|(n, _)| n.as_str()).collect()
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
        let route = uri
            .authority()
            .and_then(|a| self.routes.get(a.as_str()))
            .cloned();
        Box::pin(async move {
            let stream = match route {
                Some(Route {
                    endpoint: Endpoint::Unix(path),
                    ..
                }) => Stream::Unix(UnixStream::connect(path).await?),
                Some(Route {
                    endpoint: Endpoint::Tcp(addr),
                    tls,
                }) => {
                    let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no connection to {addr} within {CONNECT_TIMEOUT:?}"),
                            )
                        })??;
                    s.set_nodelay(true)?;
                    notice_a_dead_peer(&s)?;
                    match tls {
                        None => Stream::Tcp(s),
                        Some(tls) => {
                            let s = tls
                                .connector
                                .connect(tls.server_name.clone(), s)
                                .await
                                .map_err(|e| {
                                    std::io::Error::new(
                                        e.kind(),
                                        format!("TLS handshake with {addr}: {e}"),
                                    )
                                })?;
                            Stream::Tls(Box::new(s))
                        }
                    }
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

/// A connection to an engine over a unix socket, TCP, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
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
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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
        assert_eq!(
            Endpoint::parse("https://engine-1"),
            Ok(Endpoint::Tcp("engine-1:443".into()))
        );
        assert!(Endpoint::parse("ftp://x:1").is_err());
        assert!(Endpoint::parse("http://x:1/path").is_err());
    }

    #[test]
    fn authorities_match_without_case() {
        let routes =
            Routes::parse("p", &[("Docker".into(), "unix:///d.sock".into())], &[]).unwrap();
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
            &[],
        )
        .unwrap();
        let endpoint = |a: &str| routes.get(a).map(|r| r.endpoint.clone());
        assert_eq!(
            endpoint("127.0.0.1:5051"),
            Some(Endpoint::Tcp("127.0.0.1:5051".into()))
        );
        assert_eq!(
            endpoint("mesos:8080"),
            Some(Endpoint::Tcp("127.0.0.1:5050".into()))
        );
        assert!(routes.get("127.0.0.1:5052").is_none());
        assert!(routes.get("127.0.0.1").is_none());
    }

    #[test]
    fn tls_files_are_checked_when_the_routes_are_built() {
        let dir = tempfile::tempdir().unwrap();
        let engine = rcgen::generate_simple_self_signed(vec!["10.0.0.5".into()]).unwrap();
        std::fs::write(dir.path().join("ca.pem"), engine.cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), engine.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            engine.signing_key.serialize_pem(),
        )
        .unwrap();
        let files = RouteTls::in_dir(dir.path());
        let tcp = [("docker".to_owned(), "tcp://10.0.0.5:2376".to_owned())];
        let tls = [("docker".to_owned(), files.clone())];
        let routes = Routes::parse("docker", &tcp, &tls).unwrap();
        assert!(routes.get("docker").unwrap().is_tls());

        let https = [("docker".to_owned(), "https://engine-1:2376".to_owned())];
        let no_tls = Routes::parse("docker", &https, &[])
            .unwrap_err()
            .to_string();
        assert!(no_tls.contains("needs [plugin.tls.docker]"), "{no_tls}");

        let unix = [("docker".to_owned(), "unix:///d.sock".to_owned())];
        let on_unix = Routes::parse("docker", &unix, &tls)
            .unwrap_err()
            .to_string();
        assert!(on_unix.contains("TLS is for TCP routes"), "{on_unix}");

        let other = [("podman".to_owned(), files.clone())];
        let orphan = Routes::parse("docker", &tcp, &other)
            .unwrap_err()
            .to_string();
        assert!(
            orphan.contains("[plugin.tls.podman] names no route"),
            "{orphan}"
        );

        let half = RouteTls {
            key: None,
            ..files.clone()
        };
        let half = Routes::parse("docker", &tcp, &[("docker".to_owned(), half)])
            .unwrap_err()
            .to_string();
        assert!(half.contains("both cert and key"), "{half}");

        let missing = RouteTls {
            ca: dir.path().join("nope.pem"),
            ..files
        };
        let missing = Routes::parse("docker", &tcp, &[("docker".to_owned(), missing)])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.pem"), "{missing}");
    }
}
