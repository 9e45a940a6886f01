//! Stand-in endpoints for routing tests: an HTTP server on a unix socket that records what it
//! receives, and a relay in front of a real engine socket that can be taken away and brought
//! back (the engine "goes away" for the plugin without stopping a daemon other tests share).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// One request as the fake engine saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub host: String,
    pub body: String,
}

/// An HTTP/1.1 server on a unix socket answering every request with `200 {reply}` after
/// `delay`, recording requests, connections and the most requests in flight at once.
#[derive(Debug)]
pub struct FakeEngine {
    pub socket: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeEngine {
    pub fn route(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub async fn start(reply: &'static str, delay: Duration) -> FakeEngine {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&socket).expect("bind unix socket");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (s, c, m) = (seen.clone(), connections.clone(), max_in_flight.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (s, m, inf) = (s.clone(), m.clone(), in_flight.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let (s, m, inf) = (s.clone(), m.clone(), inf.clone());
                        async move {
                            let now = inf.fetch_add(1, Ordering::SeqCst) + 1;
                            m.fetch_max(now, Ordering::SeqCst);
                            let method = req.method().to_string();
                            let path = req.uri().to_string();
                            let host = req
                                .headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let body = req.into_body().collect().await?.to_bytes();
                            // sleep(ZERO) still waits for the timer's next 1 ms tick.
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            s.lock().unwrap().push(Seen {
                                method,
                                path,
                                host,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            });
                            inf.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(
                                reply,
                            ))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeEngine {
            socket,
            seen,
            connections,
            max_in_flight,
            task,
            _dir: dir,
        }
    }
}

/// A byte relay from a socket of ours to a real engine socket. `stop` removes our socket (the
/// plugin's engine is gone: connections are refused); `start` brings it back.
#[derive(Debug)]
pub struct Relay {
    pub socket: PathBuf,
    target: PathBuf,
    task: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    pub fn new(target: &Path) -> Relay {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Relay {
            socket: dir.path().join("relay.sock"),
            target: target.to_owned(),
            task: None,
            _dir: dir,
        };
        r.start();
        r
    }

    pub fn route(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn start(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket).expect("bind relay");
        let target = self.target.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every relayed connection.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut outbound) = UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Takes the engine away: open relayed connections are cut and new ones refused.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}
