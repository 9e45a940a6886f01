//! The Docker plugin's settings, parsed once in `init`.

use keepwarm_plugin_sdk::engine::{shared_address, EngineSettings};
use keepwarm_plugin_sdk::{config_value, Capabilities, FactoryError, Pairs};
use std::sync::OnceLock;

pub use keepwarm_plugin_sdk::engine::AddressMode;

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// One Docker engine containers are placed on: the route the host maps to it, and the
/// address its published ports are reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    pub route: String,
    pub publish_ip: String,
}

/// Everything `init` was told.
#[derive(Debug, Clone)]
pub struct Settings {
    pub engine: EngineSettings,
    /// One (`docker`, the default) or several engines.
    pub engines: Vec<Engine>,
}

impl Settings {
    /// `engines = "docker-a@10.0.0.5, docker-b@10.0.0.6"` (route@publish-ip; a route alone
    /// publishes on `publish-ip`) names several engines; without it the one engine is the
    /// `docker` route. Every other key is Docker-compatible engine settings.
    pub fn parse(pairs: &Pairs) -> Result<Settings, FactoryError> {
        let rest: Pairs = pairs
            .iter()
            .filter(|(k, _)| k != "engines")
            .cloned()
            .collect();
        let engine = EngineSettings::parse("docker", &rest, "v1.41")?;
        let engines = match config_value(pairs, "engines") {
            None => vec![Engine {
                route: "docker".into(),
                publish_ip: engine.publish_ip.clone(),
            }],
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| {
                    let (route, ip) = e.split_once('@').unwrap_or((e, &engine.publish_ip));
                    if route.is_empty() || route.contains('/') || ip.is_empty() {
                        return Err(FactoryError::InvalidSpec(format!(
                            "engines: `{e}` is not ROUTE@PUBLISH-IP (e.g. docker-a@10.0.0.5)"
                        )));
                    }
                    Ok(Engine {
                        route: route.to_owned(),
                        publish_ip: ip.to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if engines.is_empty() {
            return Err(FactoryError::InvalidSpec(
                "engines is empty: name at least one ROUTE@PUBLISH-IP".into(),
            ));
        }
        Ok(Settings { engine, engines })
    }

    /// Containers are reachable from every member when each engine publishes on a shared
    /// (neither loopback nor unspecified) address.
    pub fn capabilities(settings: Option<&Settings>) -> Capabilities {
        let base = Capabilities::PAUSE | Capabilities::LOGS | Capabilities::CONCURRENT;
        match settings {
            Some(s)
                if s.engine.address == AddressMode::Published
                    && s.engines.iter().all(|e| shared_address(&e.publish_ip)) =>
            {
                base | Capabilities::CLUSTER_WIDE
            }
            _ => base,
        }
    }
}

pub struct Config;

impl Config {
    pub fn init(pairs: &Pairs) -> Result<(), FactoryError> {
        let _ = SETTINGS.set(Settings::parse(pairs)?);
        Ok(())
    }

    /// The settings, once `init` has run.
    pub fn settings() -> Option<&'static Settings> {
        SETTINGS.get()
    }

    pub fn get() -> &'static Settings {
        SETTINGS.get().expect("init runs before any other call")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Pairs {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn one_engine_by_default_or_several_by_route() {
        let one = Settings::parse(&pairs(&[("publish-ip", "10.0.0.5")])).unwrap();
        assert_eq!(
            one.engines,
            [Engine {
                route: "docker".into(),
                publish_ip: "10.0.0.5".into()
            }]
        );
        let two = Settings::parse(&pairs(&[(
            "engines",
            "docker-a@10.0.0.5, docker-b@10.0.0.6",
        )]))
        .unwrap();
        assert_eq!(two.engines.len(), 2);
        assert_eq!(two.engines[1].route, "docker-b");
        assert_eq!(two.engines[1].publish_ip, "10.0.0.6");
        assert!(Settings::capabilities(Some(&two)).contains(Capabilities::CLUSTER_WIDE));
        let local = Settings::parse(&pairs(&[])).unwrap();
        assert!(!Settings::capabilities(Some(&local)).contains(Capabilities::CLUSTER_WIDE));
        assert!(Settings::parse(&pairs(&[("engines", "a/b@1.2.3.4")])).is_err());
        assert!(Settings::parse(&pairs(&[("engines", " , ")])).is_err());
    }
}
