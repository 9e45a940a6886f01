//! The lease, enforced where containers are touched. In cluster mode the active role hands its
//! pool a [`FencedFactory`] and its runner a fenced proxy client: once the lease lapses every
//! call that changes a container (create, attach, pause, resume, destroy) and every `/init` or
//! `/run` is refused, whichever code path asks. Containers a host was using when it lost its
//! lease are the next active host's to reconcile, never this host's to destroy.

use crate::factory::PluginInfo;
use crate::factory::{CallError, CallResult, Container, ContainerFactory, ContainerSpec, Pairs};
use std::sync::Arc;

/// A yes/no check shared between tasks (here: "this host still holds its lease").
#[derive(Clone)]
pub struct Gate(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl Gate {
    pub fn open(&self) -> bool {
        (self.0)()
    }

    /// A gate that is always open (single mode, tests).
    pub fn always() -> Gate {
        Gate(Arc::new(|| true))
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gate(open: {})", self.open())
    }
}

/// A factory that refuses every container-changing call while its gate is closed.
#[derive(Debug)]
pub struct FencedFactory {
    inner: Arc<dyn ContainerFactory>,
    gate: Gate,
}

impl FencedFactory {
    pub fn new(inner: Arc<dyn ContainerFactory>, gate: Gate) -> FencedFactory {
        FencedFactory { inner, gate }
    }

    fn check(&self, operation: &'static str) -> CallResult<()> {
        if self.gate.open() {
            Ok(())
        } else {
            Err(CallError::Fenced { operation })
        }
    }
}

#[async_trait::async_trait]
impl ContainerFactory for FencedFactory {
    fn info(&self) -> PluginInfo {
        self.inner.info()
    }
    async fn create(&self, spec: ContainerSpec) -> CallResult<Container> {
        self.check("create")?;
        self.inner.create(spec).await
    }
    async fn attach(&self, known: Container) -> CallResult<Container> {
        self.check("attach")?;
        self.inner.attach(known).await
    }
    async fn list_containers(&self, labels: Pairs) -> CallResult<Vec<Container>> {
        self.inner.list_containers(labels).await
    }
    async fn pause(&self, id: &str) -> CallResult<()> {
        self.check("pause")?;
        self.inner.pause(id).await
    }
    async fn resume(&self, id: &str) -> CallResult<()> {
        self.check("resume")?;
        self.inner.resume(id).await
    }
    async fn destroy(&self, id: &str) -> CallResult<()> {
        self.check("destroy")?;
        self.inner.destroy(id).await
    }
    async fn logs(&self, id: &str, since_ms: u64, max_bytes: u32) -> CallResult<String> {
        self.inner.logs(id, since_ms, max_bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeEngine;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn a_closed_gate_refuses_every_call_that_changes_a_container() {
        let engine = Arc::new(FakeEngine::default());
        let open = Arc::new(AtomicBool::new(true));
        let gate = {
            let open = open.clone();
            Gate(Arc::new(move || open.load(Ordering::SeqCst)))
        };
        let fenced = FencedFactory::new(engine.clone(), gate);
        let spec = ContainerSpec {
            name: "c".into(),
            image: "i".into(),
            memory_mb: 128,
            cpu_shares: None,
            env: Vec::new(),
            labels: Vec::new(),
            network: None,
            port: 8080,
        };
        fenced.create(spec.clone()).await.unwrap();
        assert_eq!(engine.calls.load(Ordering::SeqCst), 1);

        open.store(false, Ordering::SeqCst);
        let refused = [
            fenced.create(spec).await.map(|_| ()),
            fenced.attach(Container::default()).await.map(|_| ()),
            fenced.pause("c").await,
            fenced.resume("c").await,
            fenced.destroy("c").await,
        ];
        for r in refused {
            assert!(matches!(r, Err(CallError::Fenced { .. })), "{r:?}");
        }
        assert_eq!(
            engine.calls.load(Ordering::SeqCst),
            1,
            "nothing reached the engine"
        );
        // reading is harmless and still allowed
        fenced.list_containers(Vec::new()).await.unwrap();
        fenced.logs("c", 0, 10).await.unwrap();
    }
}
