//! The Docker plugin's settings, parsed once in `init`.

use keepwarm_plugin_sdk::{config_value, FactoryError, Pairs};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressMode {
    Published,
    ContainerIp,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub api_version: String,
    pub address: AddressMode,
    pub publish_ip: String,
    pub network: Option<String>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

const KEYS: &[&str] = &["api-version", "address", "publish-ip", "network"];

impl Config {
    pub fn init(pairs: &Pairs) -> Result<(), FactoryError> {
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !KEYS.contains(&k.as_str())) {
            return Err(FactoryError::InvalidSpec(format!(
                "unknown docker plugin setting `{k}`; known: {}",
                KEYS.join(", ")
            )));
        }
        let address = match config_value(pairs, "address").unwrap_or("published") {
            "published" => AddressMode::Published,
            "container-ip" => AddressMode::ContainerIp,
            other => {
                return Err(FactoryError::InvalidSpec(format!(
                    "address = `{other}`: use `published` or `container-ip`"
                )))
            }
        };
        let config = Config {
            api_version: config_value(pairs, "api-version").unwrap_or("v1.41").to_owned(),
            address,
            publish_ip: config_value(pairs, "publish-ip")
                .unwrap_or("127.0.0.1")
                .to_owned(),
            network: config_value(pairs, "network").map(str::to_owned),
        };
        let _ = CONFIG.set(config);
        Ok(())
    }

    pub fn get() -> &'static Config {
        CONFIG.get().expect("init runs before any other call")
    }
}
