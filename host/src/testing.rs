//! A native fake engine for tests: the host's unit tests and the tests crate share it. Its
//! containers are only records (nothing runs); the real engines are exercised by the
//! end-to-end tests. It counts every call, and can play an engine that is down for a while.

use crate::factory::{
    CallError, CallResult, Container, ContainerFactory, ContainerSpec, ContainerState,
    FactoryError, Pairs, PluginInfo,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct FakeEngine {
    /// Every call that reached the engine.
    pub calls: AtomicUsize,
    pub created: AtomicUsize,
    pub destroyed: AtomicUsize,
    /// Creates answered `unavailable` before the engine answers again.
    pub down_for: AtomicUsize,
    /// Where every container's action proxy answers (a test's own server); by default an
    /// address per container where nothing listens.
    pub proxy: Mutex<Option<String>>,
    /// How long a create takes.
    pub create_delay: Mutex<Duration>,
    /// What `logs` answers for every container.
    pub output: Mutex<String>,
    /// What `list-containers` answers (nothing by default: as an engine machine that failed).
    pub listed: Mutex<Vec<Container>>,
    /// The ids `destroy` was called for, in order.
    pub destroyed_ids: Mutex<Vec<String>>,
    info: OnceLock<PluginInfo>,
}

impl FakeEngine {
    fn call(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl ContainerFactory for FakeEngine {
    fn info(&self) -> PluginInfo {
        self.info
            .get_or_init(|| PluginInfo {
                name: "fake".into(),
                version: "0".into(),
                engine: "fake".into(),
                capabilities: Default::default(),
            })
            .clone()
    }

    async fn create(&self, spec: ContainerSpec) -> CallResult<Container> {
        self.call();
        let down = self.down_for.load(Ordering::SeqCst);
        if down > 0 {
            self.down_for.store(down - 1, Ordering::SeqCst);
            return Err(CallError::Factory {
                plugin: "fake".into(),
                operation: "create",
                error: FactoryError::Unavailable("connection refused".into()),
            });
        }
        let delay = *self.create_delay.lock().expect("fake engine");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let n = self.created.fetch_add(1, Ordering::SeqCst);
        let proxy = self.proxy.lock().expect("fake engine").clone();
        Ok(Container {
            id: format!("c{n}"),
            name: spec.name,
            address: proxy.unwrap_or_else(|| format!("127.0.0.1:{}", 10_000 + n)),
            state: ContainerState::Running,
            labels: spec.labels,
            handle: String::new(),
        })
    }

    async fn attach(&self, known: Container) -> CallResult<Container> {
        self.call();
        Ok(known)
    }

    async fn list_containers(&self, _labels: Pairs) -> CallResult<Vec<Container>> {
        self.call();
        Ok(self.listed.lock().expect("fake engine").clone())
    }

    async fn pause(&self, _id: &str) -> CallResult<()> {
        self.call();
        Ok(())
    }

    async fn resume(&self, _id: &str) -> CallResult<()> {
        self.call();
        Ok(())
    }

    async fn destroy(&self, id: &str) -> CallResult<()> {
        self.call();
        self.destroyed.fetch_add(1, Ordering::SeqCst);
        self.destroyed_ids
            .lock()
            .expect("fake engine")
            .push(id.to_owned());
        Ok(())
    }

    async fn logs(&self, _id: &str, _since_ms: u64, _max_bytes: u32) -> CallResult<String> {
        self.call();
        Ok(self.output.lock().expect("fake engine").clone())
    }
}
