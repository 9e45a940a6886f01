//! A blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! URLs name a *route*, not a host: `http://docker/v1.41/containers/json` goes to whatever
//! the operator mapped `docker` to. Transport failures become [`FactoryError::Unavailable`];
//! [`Response::error`] maps an engine's status code to the matching [`FactoryError`].

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use crate::bindings::wasi::io::poll;
use crate::bindings::wasi::io::streams::{InputStream, StreamError};
use crate::FactoryError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Parses the body as JSON; a body that does not parse is an engine error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, FactoryError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            FactoryError::Engine(format!(
                "unexpected response ({e}): {}",
                truncate(&self.text())
            ))
        })
    }

    /// Maps a non-2xx status to the factory error of the same meaning, with the engine's
    /// message (a JSON `message` field when there is one).
    pub fn error(&self, what: &str) -> FactoryError {
        let message = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .or_else(|| v.get("cause"))
                    .and_then(|m| m.as_str().map(str::to_owned))
            })
            .unwrap_or_else(|| truncate(&self.text()));
        let m = format!("{what}: {message} (HTTP {})", self.status);
        match self.status {
            404 => FactoryError::NotFound(m),
            409 => FactoryError::Conflict(m),
            400 | 422 => FactoryError::InvalidSpec(m),
            503 => FactoryError::Unavailable(m),
            _ => FactoryError::Engine(m),
        }
    }

    /// Ok for 2xx, else [`Response::error`].
    pub fn ok(self, what: &str) -> Result<Response, FactoryError> {
        if self.is_success() {
            Ok(self)
        } else {
            Err(self.error(what))
        }
    }
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.len() <= 300 {
        return s.to_owned();
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// GET and parse JSON from a 2xx response.
pub fn get_json<T: DeserializeOwned>(url: &str, what: &str) -> Result<T, FactoryError> {
    request("GET", url, &[], None)?.ok(what)?.json()
}

/// POST a JSON body; returns the raw response for the caller to check.
pub fn post_json<B: Serialize>(url: &str, body: &B) -> Result<Response, FactoryError> {
    let body = serde_json::to_vec(body).map_err(|e| FactoryError::InvalidSpec(e.to_string()))?;
    request(
        "POST",
        url,
        &[("content-type", "application/json")],
        Some(&body),
    )
}

/// Milliseconds on the host's monotonic clock (for a plugin's own timers between calls).
pub fn monotonic_ms() -> u64 {
    monotonic_clock::now() / 1_000_000
}

/// Sends one request and reads the whole response.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, FactoryError> {
    request_with_timeout(method, url, headers, body, None)
}

/// As [`request`], with a first-byte timeout (for long polls such as event streams).
pub fn request_with_timeout(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    first_byte_timeout_ms: Option<u64>,
) -> Result<Response, FactoryError> {
    let (authority, _) = split_url(url)?;
    open(method, url, headers, body, first_byte_timeout_ms)?
        .into_response()
        .map_err(|e| match e {
            FactoryError::Unavailable(m) => FactoryError::Unavailable(format!("{authority}: {m}")),
            other => other,
        })
}

/// A response whose body is read as it arrives: a long-lived event stream such as Mesos'
/// `SUBSCRIBE`. It can be kept between factory calls; bytes that arrive meanwhile wait in the
/// connection until the next [`Streaming::read`].
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    // Drop order matters: the stream is a child of the body, the body of the response.
    input: InputStream,
    _body: IncomingBody,
    _response: IncomingResponse,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// What one [`Streaming::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    Data(Vec<u8>),
    /// Nothing arrived within the wait.
    Idle,
    /// The peer ended the stream.
    Closed,
}

impl Streaming {
    /// The value of a response header (first one, lossy UTF-8).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// Reads what has arrived, waiting at most `wait` for the first byte.
    pub fn read(&self, wait: Duration) -> Result<Chunk, FactoryError> {
        {
            let ready = self.input.subscribe();
            let timer = monotonic_clock::subscribe_duration(wait.as_nanos() as u64);
            poll::poll(&[&ready, &timer]);
        }
        match self.input.read(64 * 1024) {
            Ok(bytes) if bytes.is_empty() => Ok(Chunk::Idle),
            Ok(bytes) => Ok(Chunk::Data(bytes)),
            Err(StreamError::Closed) => Ok(Chunk::Closed),
            Err(StreamError::LastOperationFailed(e)) => Err(FactoryError::Unavailable(format!(
                "event stream broke: {}",
                e.to_debug_string()
            ))),
        }
    }

    /// The whole (short) body of a response that is not a stream, e.g. an error.
    pub fn into_response(self) -> Result<Response, FactoryError> {
        let mut body = Vec::new();
        loop {
            match self.input.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(FactoryError::Unavailable(format!(
                        "reading response: {}",
                        e.to_debug_string()
                    )))
                }
            }
        }
        Ok(Response {
            status: self.status,
            headers: self.headers.clone(),
            body,
        })
    }
}

/// Sends a request and returns as soon as the response head is in; read the body as it comes.
pub fn open(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    first_byte_timeout_ms: Option<u64>,
) -> Result<Streaming, FactoryError> {
    let (authority, path) = split_url(url)?;
    let fields = Fields::new();
    for (name, value) in headers {
        fields
            .append(name, value.as_bytes())
            .map_err(|e| FactoryError::InvalidSpec(format!("header {name}: {e:?}")))?;
    }
    // Always say how long the body is: without it an empty body goes out chunked, which
    // engines such as Docker reject on endpoints that take no body.
    let length = body.map_or(0, <[u8]>::len).to_string();
    let _ = fields.set("content-length", &[length.into_bytes()]);
    let req = OutgoingRequest::new(fields);
    req.set_method(&parse_method(method))
        .map_err(|()| FactoryError::InvalidSpec(format!("bad method {method}")))?;
    req.set_scheme(Some(&Scheme::Http))
        .map_err(|()| FactoryError::InvalidSpec("bad scheme".into()))?;
    req.set_authority(Some(authority))
        .map_err(|()| FactoryError::InvalidSpec(format!("bad authority {authority}")))?;
    req.set_path_with_query(Some(path))
        .map_err(|()| FactoryError::InvalidSpec(format!("bad path {path}")))?;

    let outgoing = req
        .body()
        .map_err(|()| FactoryError::Engine("request body taken twice".into()))?;
    let options = first_byte_timeout_ms.map(|ms| {
        let o = RequestOptions::new();
        let _ = o.set_first_byte_timeout(Some(ms * 1_000_000));
        o
    });
    let pending = outgoing_handler::handle(req, options).map_err(|e| transport(authority, &e))?;
    // A body that cannot be written means the request failed (refused, not routed: the
    // response error says why) or the server answered without reading it all (a redirect, an
    // early 4xx: the answer is what counts). Either way the response decides.
    let mut write_error = None;
    if let Some(bytes) = body {
        let stream = outgoing
            .write()
            .map_err(|()| FactoryError::Engine("request stream taken twice".into()))?;
        for chunk in bytes.chunks(4096) {
            if let Err(e) = stream.blocking_write_and_flush(chunk) {
                write_error = Some(FactoryError::Unavailable(format!(
                    "{authority}: write: {e:?}"
                )));
                break;
            }
        }
        drop(stream);
    }
    if let Err(e) = OutgoingBody::finish(outgoing, None) {
        write_error.get_or_insert(transport(authority, &e));
    }

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return Err(transport(authority, &e)),
        Some(Err(())) | None => {
            return Err(write_error
                .unwrap_or_else(|| FactoryError::Engine(format!("{authority}: response lost"))))
        }
    };
    let status = response.status();
    let headers = response.headers().entries();
    let body = response
        .consume()
        .map_err(|()| FactoryError::Engine("response body taken twice".into()))?;
    let input = body
        .stream()
        .map_err(|()| FactoryError::Engine("response stream taken twice".into()))?;
    Ok(Streaming {
        status,
        headers,
        input,
        _body: body,
        _response: response,
    })
}

fn split_url(url: &str) -> Result<(&str, &str), FactoryError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| FactoryError::InvalidSpec(format!("url must start with http://: {url}")))?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

fn parse_method(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "HEAD" => Method::Head,
        "PATCH" => Method::Patch,
        other => Method::Other(other.to_owned()),
    }
}

/// Turns a transport failure into `unavailable`, saying what to check.
fn transport(authority: &str, e: &ErrorCode) -> FactoryError {
    match e {
        ErrorCode::HttpRequestDenied => FactoryError::Unavailable(format!(
            "the host refused a request to `{authority}`: that authority is not routed for \
             this plugin; map it in the plugin's routes (e.g. {authority} = \
             \"unix:///var/run/{authority}.sock\" or \"http://127.0.0.1:PORT\")"
        )),
        ErrorCode::ConnectionRefused => FactoryError::Unavailable(format!(
            "cannot connect to `{authority}`: connection refused (is the engine running?)"
        )),
        other => FactoryError::Unavailable(format!("request to `{authority}` failed: {other:?}")),
    }
}
