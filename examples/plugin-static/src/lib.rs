//! Example plugin: a "static" engine that hands out action proxies someone else runs.
//!
//! `init` takes `proxies = "127.0.0.1:9001,127.0.0.1:9002"`. `create` claims the first free
//! proxy (claims live in the replicated `state`, so a standby host knows them), after checking
//! it answers through the `proxies` route when one is configured; `destroy` releases it. It
//! shows the SDK's pieces: config, state, routed HTTP and factory errors.

use keepwarm_plugin_sdk::{
    config_value, export, http, serde_json, state, Capabilities, Container, ContainerSpec,
    ContainerState, Factory, FactoryError, Pairs, PluginInfo,
};

struct StaticPool;

fn proxies() -> Vec<String> {
    state::get("proxies")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Stores `value` under `key`; the host refuses a write past the plugin's state limits.
fn remember(key: &str, value: &[u8]) -> Result<(), FactoryError> {
    state::put(key, value).map_err(FactoryError::Capacity)
}

fn claim_key(address: &str) -> String {
    format!("claim/{address}")
}

/// Who claimed `address`: the spec's name and labels (a claim an older build wrote holds the
/// name alone).
fn claimed(address: &str) -> Option<(String, Pairs)> {
    let claim = state::get(&claim_key(address))?;
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&claim) else {
        return Some((String::from_utf8_lossy(&claim).into_owned(), Vec::new()));
    };
    let name = json["name"].as_str().unwrap_or_default().to_owned();
    let labels = serde_json::from_value(json["labels"].clone()).unwrap_or_default();
    Some((name, labels))
}

fn as_container(address: &str, name: String, labels: Pairs) -> Container {
    Container {
        id: address.to_owned(),
        name,
        address: address.to_owned(),
        state: ContainerState::Running,
        labels,
        handle: String::new(),
    }
}

impl Factory for StaticPool {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "static".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            engine: "static proxies".into(),
            capabilities: Capabilities::CLUSTER_WIDE,
        }
    }

    fn init(config: Pairs) -> Result<(), FactoryError> {
        let list = config_value(&config, "proxies").ok_or_else(|| {
            FactoryError::InvalidSpec("set proxies = \"host:port,host:port\"".into())
        })?;
        remember("proxies", list.as_bytes())?;
        if let Some(check) = config_value(&config, "check-url") {
            remember("check-url", check.as_bytes())?;
        }
        Ok(())
    }

    fn create(spec: ContainerSpec) -> Result<Container, FactoryError> {
        let free = proxies()
            .into_iter()
            .find(|p| state::get(&claim_key(p)).is_none())
            .ok_or_else(|| FactoryError::Capacity("every configured proxy is in use".into()))?;
        if let Some(url) = state::get("check-url") {
            let url = String::from_utf8_lossy(&url).into_owned();
            http::request("GET", &url, &[], None)?.ok("health check")?;
        }
        let claim = serde_json::json!({ "name": spec.name, "labels": spec.labels });
        remember(&claim_key(&free), claim.to_string().as_bytes())?;
        Ok(as_container(&free, spec.name, spec.labels))
    }

    fn attach(known: Container) -> Result<Container, FactoryError> {
        match claimed(&known.id) {
            Some((name, labels)) => Ok(as_container(&known.id, name, labels)),
            None => Err(FactoryError::NotFound(known.id)),
        }
    }

    fn list_containers(labels: Pairs) -> Result<Vec<Container>, FactoryError> {
        Ok(proxies()
            .into_iter()
            .filter_map(|p| {
                let (name, theirs) = claimed(&p)?;
                let all = labels.iter().all(|l| theirs.contains(l));
                all.then(|| as_container(&p, name, theirs))
            })
            .collect())
    }

    fn destroy(id: String) -> Result<(), FactoryError> {
        if state::get(&claim_key(&id)).is_none() {
            return Err(FactoryError::NotFound(id));
        }
        state::delete(&claim_key(&id));
        Ok(())
    }
    // pause, resume and logs: the SDK's defaults (an `engine` error), as static proxies
    // have none of them
}

export!(StaticPool);
