//! Example plugin: a "static" engine that hands out action proxies someone else runs.
//!
//! `init` takes `proxies = "127.0.0.1:9001,127.0.0.1:9002"`. `create` claims the first free
//! proxy (claims live in the replicated `state`, so a standby host knows them), after checking
//! it answers through the `proxies` route when one is configured; `destroy` releases it. It
//! shows the SDK's pieces: config, state, routed HTTP and factory errors.

use keepwarm_plugin_sdk::{
    config_value, export, http, state, Capabilities, Container, ContainerSpec, ContainerState,
    Factory, FactoryError, Pairs, PluginInfo,
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
        remember(&claim_key(&free), spec.name.as_bytes())?;
        Ok(as_container(&free, spec.name, spec.labels))
    }

    fn attach(known: Container) -> Result<Container, FactoryError> {
        match state::get(&claim_key(&known.id)) {
            Some(_) => Ok(known),
            None => Err(FactoryError::NotFound(known.id)),
        }
    }

    fn list_containers(_labels: Pairs) -> Result<Vec<Container>, FactoryError> {
        Ok(proxies()
            .into_iter()
            .filter_map(|p| {
                let name = state::get(&claim_key(&p))?;
                Some(as_container(
                    &p,
                    String::from_utf8_lossy(&name).into_owned(),
                    Vec::new(),
                ))
            })
            .collect())
    }

    fn pause(id: String) -> Result<(), FactoryError> {
        Err(FactoryError::InvalidSpec(format!(
            "{id}: static proxies cannot pause"
        )))
    }

    fn resume(id: String) -> Result<(), FactoryError> {
        Err(FactoryError::InvalidSpec(format!(
            "{id}: static proxies cannot resume"
        )))
    }

    fn destroy(id: String) -> Result<(), FactoryError> {
        if state::get(&claim_key(&id)).is_none() {
            return Err(FactoryError::NotFound(id));
        }
        state::delete(&claim_key(&id));
        Ok(())
    }

    fn logs(id: String, _since_ms: u64, _max_bytes: u32) -> Result<String, FactoryError> {
        Err(FactoryError::NotFound(format!(
            "{id}: static proxies keep no logs"
        )))
    }
}

export!(StaticPool);
