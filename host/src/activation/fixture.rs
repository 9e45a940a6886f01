//! A runner for unit tests (this module's and the feed's): a fake engine
//! (`testing::FakeEngine`) whose containers' action proxy is a small HTTP server of the test's
//! (axum on loopback), and a lease gate the test opens and closes.

use super::runner::{Delivery, Runner};
use super::*;
use crate::action::{
    Action, ActionError, ActionStore, FullyQualifiedEntityName, ParameterEncryption, Runtimes,
    SystemLimits,
};
use crate::fence::FencedFactory;
use crate::pool::{Pool, PoolConfig};
use crate::testing::FakeEngine;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct OneAction(pub Action);

#[async_trait::async_trait]
impl ActionStore for OneAction {
    async fn resolve(
        &self,
        _name: &FullyQualifiedEntityName,
        _revision: Option<&str>,
    ) -> Result<Action, ActionError> {
        Ok(self.0.clone())
    }
}

/// The action proxy: counts `/run`s, answers each after `run_takes` with `answer`.
pub struct Proxy {
    pub runs: AtomicUsize,
    pub run_takes: Duration,
    pub answer: String,
}

pub async fn serve(proxy: Arc<Proxy>) -> String {
    use axum::routing::post;
    let runs = proxy.clone();
    let app = axum::Router::new()
        .route("/init", post(|| async { "{\"OK\":true}" }))
        .route(
            "/run",
            post(move || {
                let p = runs.clone();
                async move {
                    p.runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(p.run_takes).await;
                    p.answer.clone()
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

pub struct Setup {
    pub runner: Runner,
    pub engine: Arc<FakeEngine>,
    pub proxy: Arc<Proxy>,
    /// The lease the runner's gate reads: the test opens and closes it.
    pub lease: Arc<AtomicBool>,
}

pub async fn setup(timeout_ms: u64, run_takes: Duration, answer: &str) -> Setup {
    setup_with(timeout_ms, run_takes, answer, json!([])).await
}

pub async fn setup_with(
    timeout_ms: u64,
    run_takes: Duration,
    answer: &str,
    annotations: Value,
) -> Setup {
    let proxy = Arc::new(Proxy {
        runs: AtomicUsize::new(0),
        run_takes,
        answer: answer.into(),
    });
    let engine = Arc::new(FakeEngine::default());
    *engine.proxy.lock().unwrap() = Some(serve(proxy.clone()).await);
    let lease = Arc::new(AtomicBool::new(true));
    let held = lease.clone();
    let gate = Gate(Arc::new(move || held.load(Ordering::SeqCst)));
    let fenced: Arc<dyn crate::factory::ContainerFactory> =
        Arc::new(FencedFactory::new(engine.clone(), gate.clone()));
    let pool = Arc::new(Pool::new(fenced.clone(), PoolConfig::sample(1)));
    let action: Action = serde_json::from_value(json!({
        "namespace": "guest", "name": "hello", "version": "0.0.3",
        "exec": { "kind": "shell:1", "code": "#!/bin/sh\necho '{}'" },
        "limits": { "timeout": timeout_ms, "memory": 128, "logs": 10, "concurrency": 1 },
        "annotations": annotations
    }))
    .unwrap();
    let runtimes = Runtimes::parse(
        json!({ "runtimes": { "shell": [ { "kind": "shell:1",
            "image": { "prefix": "keepwarm", "name": "action-runtime", "tag": "latest" } } ] } })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let runner = Runner {
        store: Arc::new(OneAction(action)),
        runtimes,
        limits: SystemLimits::default(),
        encryption: ParameterEncryption::new(None, None).unwrap(),
        pool,
        engine: fenced,
        proxy: proxy::ProxyClient::new(1024 * 1024).fenced(gate.clone()),
        instance: InvokerInstanceId::new(0, 1024, None),
        init_timeout: Duration::from_secs(60),
        collect_logs: true,
        may_run: gate,
        delivery: Delivery::AtMostOnce,
        journal: None,
    };
    Setup {
        runner,
        engine,
        proxy,
        lease,
    }
}

/// An activation as a controller sends it, its transaction started `waited_ms` ago.
pub fn message(waited_ms: i64, cause: Option<&str>) -> ActivationMessage {
    let mut m = json!({
        "transid": ["sid_run", crate::clock::now_ms() - waited_ms],
        "action": { "path": "guest", "name": "hello", "version": "0.0.3", "binding": "guest/bound" },
        "user": {
            "subject": "guest-subject",
            "namespace": { "name": "guest", "uuid": "u" },
            "authkey": { "api_key": "u:k" },
            "rights": [], "limits": {}
        },
        "activationId": "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5",
        "rootControllerIndex": { "asString": "0", "instanceType": "controller" },
        "blocking": true,
        "content": { "name": "Ada" },
        "initArgs": [],
        "lockedArgs": {}
    });
    if let Some(c) = cause {
        m["cause"] = json!(c);
    }
    ActivationMessage::parse(m.to_string().as_bytes()).unwrap()
}
