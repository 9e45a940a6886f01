//! The Docker plugin's settings, parsed once in `init`.

use keepwarm_plugin_sdk::engine::EngineSettings;
use keepwarm_plugin_sdk::{FactoryError, Pairs};
use std::sync::OnceLock;

pub use keepwarm_plugin_sdk::engine::AddressMode;

static SETTINGS: OnceLock<EngineSettings> = OnceLock::new();

pub struct Config;

impl Config {
    pub fn init(pairs: &Pairs) -> Result<(), FactoryError> {
        let _ = SETTINGS.set(EngineSettings::parse("docker", pairs, "v1.41")?);
        Ok(())
    }

    /// The settings, once `init` has run.
    pub fn settings() -> Option<&'static EngineSettings> {
        SETTINGS.get()
    }

    pub fn get() -> &'static EngineSettings {
        SETTINGS.get().expect("init runs before any other call")
    }
}
