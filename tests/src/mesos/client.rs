//! A bare scheduler client for testing the simulator itself: raw HTTP/1.1 calls and a RecordIO
//! reader, written from the docs rather than shared with the plugin, so the two sides check
//! each other.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// One HTTP exchange with the master.
#[derive(Debug)]
pub struct Exchange {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Incoming,
}

/// Sends one request on a new connection (the API wants calls off the subscription's one).
pub async fn send(
    addr: SocketAddr,
    method: &str,
    content_type: &str,
    stream_id: Option<&str>,
    body: impl Into<Bytes>,
) -> Exchange {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the master");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri("/api/v1/scheduler")
        .header("host", addr.to_string())
        .header("content-type", content_type)
        .header("accept", "application/json");
    if let Some(id) = stream_id {
        req = req.header("mesos-stream-id", id);
    }
    let response = sender
        .send_request(req.body(Full::new(body.into())).expect("request"))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    Exchange {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// A JSON call; returns the status and the (short) body.
pub async fn call(addr: SocketAddr, stream_id: Option<&str>, call: &Value) -> (u16, String) {
    let e = send(
        addr,
        "POST",
        "application/json",
        stream_id,
        call.to_string(),
    )
    .await;
    let body = e
        .body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (e.status, String::from_utf8_lossy(&body).into_owned())
}

/// The events of one subscription.
#[derive(Debug)]
pub struct Events {
    pub stream_id: Option<String>,
    body: Incoming,
    buf: Vec<u8>,
}

/// What reading the stream gave.
#[derive(Debug, PartialEq)]
pub enum Next {
    Event(Value),
    Closed,
    Silent,
}

impl Events {
    pub async fn subscribe(addr: SocketAddr, call: &Value) -> (u16, Events) {
        let e = send(addr, "POST", "application/json", None, call.to_string()).await;
        let stream_id = e
            .headers
            .get("mesos-stream-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (
            e.status,
            Events {
                stream_id,
                body: e.body,
                buf: Vec::new(),
            },
        )
    }

    fn record(&mut self) -> Option<Value> {
        let nl = self.buf.iter().position(|&b| b == b'\n')?;
        let len: usize = std::str::from_utf8(&self.buf[..nl])
            .ok()?
            .parse()
            .expect("RecordIO length");
        if self.buf.len() < nl + 1 + len {
            return None;
        }
        let record: Vec<u8> = self.buf.drain(..nl + 1 + len).skip(nl + 1).collect();
        Some(serde_json::from_slice(&record).expect("each record is one JSON event"))
    }

    /// The next event, whatever its type.
    pub async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(event) = self.record() {
                return Next::Event(event);
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return Next::Silent,
                Ok(None) | Ok(Some(Err(_))) => return Next::Closed,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event of `kind`, skipping others (heartbeats, offers, ...).
    pub async fn next_of(&mut self, kind: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Next::Event(e) if e["type"] == kind => return e,
                Next::Event(_) => continue,
                other => panic!("no {kind} event within {within:?}: {other:?}"),
            }
        }
    }

    /// The next UPDATE for `task_id`.
    pub async fn update_of(&mut self, task_id: &str, within: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next_of("UPDATE", left).await;
            if e["update"]["status"]["task_id"]["value"] == task_id {
                return e["update"]["status"].clone();
            }
        }
    }
}
