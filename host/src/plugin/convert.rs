//! Conversions between the generated WIT types and the host's [`crate::factory`] types.

use super::bindings::wit;
use crate::factory::{
    Capabilities, Container, ContainerSpec, ContainerState, FactoryError, PluginInfo,
};

impl From<ContainerSpec> for wit::ContainerSpec {
    fn from(s: ContainerSpec) -> Self {
        wit::ContainerSpec {
            name: s.name,
            image: s.image,
            memory_mb: s.memory_mb,
            cpu_shares: s.cpu_shares,
            env: s.env,
            labels: s.labels,
            network: s.network,
            port: s.port,
        }
    }
}

impl From<ContainerState> for wit::ContainerState {
    fn from(s: ContainerState) -> Self {
        match s {
            ContainerState::Creating => wit::ContainerState::Creating,
            ContainerState::Running => wit::ContainerState::Running,
            ContainerState::Paused => wit::ContainerState::Paused,
            ContainerState::Stopped => wit::ContainerState::Stopped,
            ContainerState::Unknown => wit::ContainerState::Unknown,
        }
    }
}

impl From<wit::ContainerState> for ContainerState {
    fn from(s: wit::ContainerState) -> Self {
        match s {
            wit::ContainerState::Creating => ContainerState::Creating,
            wit::ContainerState::Running => ContainerState::Running,
            wit::ContainerState::Paused => ContainerState::Paused,
            wit::ContainerState::Stopped => ContainerState::Stopped,
            wit::ContainerState::Unknown => ContainerState::Unknown,
        }
    }
}

impl From<Container> for wit::Container {
    fn from(c: Container) -> Self {
        wit::Container {
            id: c.id,
            name: c.name,
            address: c.address,
            state: c.state.into(),
            labels: c.labels,
            handle: c.handle,
        }
    }
}

impl From<wit::Container> for Container {
    fn from(c: wit::Container) -> Self {
        Container {
            id: c.id,
            name: c.name,
            address: c.address,
            state: c.state.into(),
            labels: c.labels,
            handle: c.handle,
        }
    }
}

impl From<wit::FactoryError> for FactoryError {
    fn from(e: wit::FactoryError) -> Self {
        match e {
            wit::FactoryError::NotFound(m) => FactoryError::NotFound(m),
            wit::FactoryError::Conflict(m) => FactoryError::Conflict(m),
            wit::FactoryError::InvalidSpec(m) => FactoryError::InvalidSpec(m),
            wit::FactoryError::ImageMissing(m) => FactoryError::ImageMissing(m),
            wit::FactoryError::Capacity(m) => FactoryError::Capacity(m),
            wit::FactoryError::Unavailable(m) => FactoryError::Unavailable(m),
            wit::FactoryError::Engine(m) => FactoryError::Engine(m),
        }
    }
}

impl From<wit::PluginInfo> for PluginInfo {
    fn from(i: wit::PluginInfo) -> Self {
        let c = i.capabilities;
        PluginInfo {
            name: i.name,
            version: i.version,
            engine: i.engine,
            capabilities: Capabilities {
                pause: c.contains(wit::Capabilities::PAUSE),
                logs: c.contains(wit::Capabilities::LOGS),
                cluster_wide: c.contains(wit::Capabilities::CLUSTER_WIDE),
                concurrent: c.contains(wit::Capabilities::CONCURRENT),
            },
        }
    }
}
