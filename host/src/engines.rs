//! Several container engines on one host. Each plugin serves the actions its section names —
//! by kind, by blackbox image, or by default — and every container stays with the plugin that
//! made it.
//!
//! [`Engines`] is the one [`ContainerFactory`] the pool, the runner and failover see. `create`
//! picks a plugin by the container's kind (its `keepwarm.kind` label) and image, and labels the
//! container `keepwarm.plugin = NAME`. The label travels with the container — on the engine and
//! in the replicated pool — so `attach` on a new active host and `list-containers` find its
//! plugin again. Calls by id go to the plugin that created, listed or attached the container.
//! A container without the label (made by an older keepwarm) is the default plugin's.

use crate::factory::{CallResult, Container, ContainerFactory, ContainerSpec, Pairs, PluginInfo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wildmatch::WildMatch;

/// The label naming the plugin that made a container.
pub const PLUGIN_LABEL: &str = "keepwarm.plugin";
/// The label naming a container's kind (`nodejs:20`, `blackbox`), set by the pool.
pub const KIND_LABEL: &str = "keepwarm.kind";
/// The kind of every blackbox action (upstream's `BlackBoxExec` kind).
pub const BLACKBOX: &str = "blackbox";

/// The plugin named by a container's label, if any.
pub fn plugin_of(container: &Container) -> Option<&str> {
    label(&container.labels, PLUGIN_LABEL)
}

fn label<'a>(labels: &'a Pairs, key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Which actions a plugin serves: `kinds` (`nodejs:*`, `shell:1`, `blackbox`), `images` (the
/// images of blackbox actions, `keepwarm/*`), and whether it serves what no other does.
/// Patterns take `*` (any run of characters) and `?` (one character).
#[derive(Debug, Clone, Default)]
pub struct Serves {
    pub kinds: Vec<String>,
    pub images: Vec<String>,
    pub default: bool,
}

impl Serves {
    fn kind(&self, kind: &str) -> bool {
        self.kinds.iter().any(|p| WildMatch::new(p).matches(kind))
    }

    fn image(&self, image: &str) -> bool {
        self.images.iter().any(|p| WildMatch::new(p).matches(image))
    }
}

/// One plugin of a host.
#[derive(Debug)]
pub struct Engine {
    pub name: String,
    pub serves: Serves,
    pub factory: Arc<dyn ContainerFactory>,
}

/// The plugins of one host, as one factory.
#[derive(Debug)]
pub struct Engines {
    engines: Vec<Engine>,
    default: usize,
    /// Which engine holds each container seen (created, listed or attached).
    owners: Mutex<HashMap<String, usize>>,
}

impl Engines {
    /// The plugins in the order their sections were read; the default is the one marked
    /// `default`, else the first.
    pub fn new(engines: Vec<Engine>) -> Result<Engines, String> {
        if engines.is_empty() {
            return Err("no plugin: declare one in [plugin]".into());
        }
        for (i, e) in engines.iter().enumerate() {
            if engines[..i].iter().any(|o| o.name == e.name) {
                return Err(format!("two plugins are named `{}`", e.name));
            }
        }
        let defaults: Vec<&str> = engines
            .iter()
            .filter(|e| e.serves.default)
            .map(|e| e.name.as_str())
            .collect();
        if defaults.len() > 1 {
            return Err(format!(
                "plugins {} all say default = true: at most one may",
                defaults.join(", ")
            ));
        }
        let default = engines.iter().position(|e| e.serves.default).unwrap_or(0);
        Ok(Engines {
            engines,
            default,
            owners: Mutex::default(),
        })
    }

    /// The plugins, in order.
    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    /// The plugin serving what no other does.
    pub fn default_engine(&self) -> &Engine {
        &self.engines[self.default]
    }

    /// The plugin that creates a container of `kind` from `image`: for a blackbox action the
    /// first whose `images` match its image, then the first whose `kinds` match the kind,
    /// else the default.
    pub fn route(&self, kind: &str, image: &str) -> &Engine {
        &self.engines[self.route_index(kind, image)]
    }

    fn route_index(&self, kind: &str, image: &str) -> usize {
        let by_image = || {
            (kind == BLACKBOX)
                .then(|| self.engines.iter().position(|e| e.serves.image(image)))
                .flatten()
        };
        by_image()
            .or_else(|| self.engines.iter().position(|e| e.serves.kind(kind)))
            .unwrap_or(self.default)
    }

    /// Whether `container` is plugin `name`'s.
    pub fn holds(&self, name: &str, container: &Container) -> bool {
        self.engines[self.owner(container)].name == name
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.engines.iter().position(|e| e.name == name)
    }

    /// The engine of a container: its label, else what was learned of its id, else the
    /// default.
    fn owner(&self, container: &Container) -> usize {
        plugin_of(container)
            .and_then(|name| self.index_of(name))
            .unwrap_or_else(|| self.owner_of_id(&container.id))
    }

    fn owner_of_id(&self, id: &str) -> usize {
        self.owners
            .lock()
            .expect("owners lock")
            .get(id)
            .copied()
            .unwrap_or(self.default)
    }

    fn learn(&self, id: &str, engine: usize) {
        self.owners
            .lock()
            .expect("owners lock")
            .insert(id.to_owned(), engine);
    }

    fn forget(&self, id: &str) {
        self.owners.lock().expect("owners lock").remove(id);
    }

    /// `container` as engine `i` made it: labelled with its plugin.
    fn labelled(&self, i: usize, mut container: Container) -> Container {
        if plugin_of(&container).is_none() {
            container
                .labels
                .push((PLUGIN_LABEL.into(), self.engines[i].name.clone()));
        }
        self.learn(&container.id, i);
        container
    }
}

#[async_trait::async_trait]
impl ContainerFactory for Engines {
    /// The default plugin's.
    fn info(&self) -> PluginInfo {
        self.default_engine().factory.info()
    }

    async fn create(&self, mut spec: ContainerSpec) -> CallResult<Container> {
        let kind = label(&spec.labels, KIND_LABEL)
            .unwrap_or_default()
            .to_owned();
        let i = self.route_index(&kind, &spec.image);
        spec.labels
            .push((PLUGIN_LABEL.into(), self.engines[i].name.clone()));
        let created = self.engines[i].factory.create(spec).await?;
        Ok(self.labelled(i, created))
    }

    async fn attach(&self, known: Container) -> CallResult<Container> {
        let i = self.owner(&known);
        let attached = self.engines[i].factory.attach(known).await?;
        Ok(self.labelled(i, attached))
    }

    /// Every plugin's containers with `labels`; one plugin's failing list fails the whole
    /// (a list that leaves an engine out would make its containers look gone). A container
    /// two plugins list (both drive one engine) is the one's its label names.
    async fn list_containers(&self, labels: Pairs) -> CallResult<Vec<Container>> {
        let lists = self
            .engines
            .iter()
            .map(|e| e.factory.list_containers(labels.clone()));
        let lists = futures::future::try_join_all(lists).await?;
        let mut all = Vec::new();
        for (i, list) in lists.into_iter().enumerate() {
            for c in list {
                let owner = plugin_of(&c).and_then(|n| self.index_of(n));
                let mine = owner.map_or(i == self.default, |o| o == i);
                if mine {
                    all.push(self.labelled(i, c));
                }
            }
        }
        Ok(all)
    }

    async fn pause(&self, id: &str) -> CallResult<()> {
        self.engines[self.owner_of_id(id)].factory.pause(id).await
    }

    async fn resume(&self, id: &str) -> CallResult<()> {
        self.engines[self.owner_of_id(id)].factory.resume(id).await
    }

    async fn destroy(&self, id: &str) -> CallResult<()> {
        let result = self.engines[self.owner_of_id(id)].factory.destroy(id).await;
        let gone = match &result {
            Ok(()) => true,
            Err(e) => matches!(
                e.factory_error(),
                Some(crate::factory::FactoryError::NotFound(_))
            ),
        };
        if gone {
            self.forget(id);
        }
        result
    }

    async fn logs(&self, id: &str, since_ms: u64, max_bytes: u32) -> CallResult<String> {
        self.engines[self.owner_of_id(id)]
            .factory
            .logs(id, since_ms, max_bytes)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeEngine;

    fn engine(name: &str, kinds: &[&str], images: &[&str], default: bool) -> Engine {
        on(Arc::default(), name, kinds, images, default)
    }

    fn on(
        fake: Arc<FakeEngine>,
        name: &str,
        kinds: &[&str],
        images: &[&str],
        default: bool,
    ) -> Engine {
        Engine {
            name: name.into(),
            serves: Serves {
                kinds: kinds.iter().map(|s| s.to_string()).collect(),
                images: images.iter().map(|s| s.to_string()).collect(),
                default,
            },
            factory: fake,
        }
    }

    fn spec(kind: &str, image: &str) -> ContainerSpec {
        ContainerSpec {
            name: format!("wsk0_{kind}"),
            image: image.into(),
            memory_mb: 256,
            cpu_shares: None,
            env: Vec::new(),
            labels: vec![(KIND_LABEL.into(), kind.into())],
            network: None,
            port: 8080,
        }
    }

    fn two() -> Engines {
        Engines::new(vec![
            engine("docker", &["shell:*", "nodejs:*"], &[], true),
            engine("podman", &[], &["keepwarm/*"], false),
        ])
        .unwrap()
    }

    #[test]
    fn actions_go_to_the_plugin_that_serves_them() {
        let e = two();
        assert_eq!(e.route("shell:1", "keepwarm/action-runtime").name, "docker");
        assert_eq!(e.route(BLACKBOX, "keepwarm/action-runtime").name, "podman");
        // a blackbox image no plugin names, a kind no plugin names: the default
        assert_eq!(e.route(BLACKBOX, "acme/thing").name, "docker");
        assert_eq!(
            e.route("python:3", "openwhisk/python3action").name,
            "docker"
        );
        // images route blackbox actions only
        assert_eq!(e.route("nodejs:20", "keepwarm/node").name, "docker");
    }

    #[test]
    fn the_default_is_the_one_marked_else_the_first() {
        let marked = Engines::new(vec![
            engine("a", &[], &[], false),
            engine("b", &[], &[], true),
        ])
        .unwrap();
        assert_eq!(marked.default_engine().name, "b");
        let first = Engines::new(vec![
            engine("a", &[], &[], false),
            engine("b", &[], &[], false),
        ])
        .unwrap();
        assert_eq!(first.default_engine().name, "a");
        let twice = Engines::new(vec![
            engine("a", &[], &[], true),
            engine("b", &[], &[], true),
        ]);
        assert!(twice.unwrap_err().contains("at most one"));
        let same = Engines::new(vec![
            engine("a", &[], &[], false),
            engine("a", &[], &[], false),
        ]);
        assert!(same.unwrap_err().contains("two plugins are named `a`"));
    }

    #[tokio::test]
    async fn a_container_stays_with_the_plugin_that_made_it() {
        let e = two();
        let shell = e
            .create(spec("shell:1", "keepwarm/action-runtime"))
            .await
            .unwrap();
        let boxed = e
            .create(spec(BLACKBOX, "keepwarm/action-runtime"))
            .await
            .unwrap();
        assert_eq!(plugin_of(&shell), Some("docker"));
        assert_eq!(plugin_of(&boxed), Some("podman"));
        assert!(e.holds("podman", &boxed) && !e.holds("docker", &boxed));
        // a new host knows nothing of the ids: the label routes the attach, and the attach
        // teaches it the id
        let (docker, podman) = (
            Arc::new(FakeEngine::default()),
            Arc::new(FakeEngine::default()),
        );
        let fresh = Engines::new(vec![
            on(docker.clone(), "docker", &["shell:*"], &[], true),
            on(podman.clone(), "podman", &[], &["keepwarm/*"], false),
        ])
        .unwrap();
        let attached = fresh.attach(boxed.clone()).await.unwrap();
        assert_eq!(plugin_of(&attached), Some("podman"));
        fresh.destroy(&boxed.id).await.unwrap();
        assert_eq!(docker.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(podman.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unlabelled_container_is_the_default_plugins() {
        let e = two();
        let mut old = e.create(spec("shell:1", "x")).await.unwrap();
        old.labels.retain(|(k, _)| k != PLUGIN_LABEL);
        assert!(e.holds("docker", &old));
        assert!(!e.holds("podman", &old));
    }
}
