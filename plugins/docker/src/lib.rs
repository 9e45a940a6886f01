//! keepwarm container factory for the Docker Engine API, reached through the `docker` route.
//!
//! Config (`init` pairs):
//! - `api-version`: the API path prefix, default `v1.41`;
//! - `address`: `published` (default: the proxy port is published on `publish-ip` and the
//!   address is `publish-ip:host-port`) or `container-ip` (the container's IP on its network);
//! - `publish-ip`: default `127.0.0.1`; an address of the engine's machine that every cluster
//!   member routes to makes the plugin `cluster-wide` (failover re-attaches its containers
//!   from any member), loopback does not;
//! - `network`: the network for containers whose spec names none (default: the engine's).
//!
//! The engine may be on another machine (`tcp://engine-1:2376` with `[plugin.tls.docker]` in
//! the host's config: Docker's `--tlsverify`); the plugin speaks plain HTTP to `docker` and
//! the host adds TLS.

mod config;

use bollard_stubs::models::{
    ContainerCreateBody, ContainerCreateResponse, ContainerInspectResponse,
    ContainerStateStatusEnum, ContainerSummary, ContainerSummaryStateEnum, HostConfig, PortBinding,
};
use config::{AddressMode, Config};
use keepwarm_plugin_sdk::engine::{
    adopt, container_delete, container_logs, container_post, gone, label_filter, proxy_port,
    since_param, sorted_labels, EngineSettings, PORT_LABEL,
};
use keepwarm_plugin_sdk::{
    export, http, Container, ContainerSpec, ContainerState, Factory, FactoryError, Pairs,
    PluginInfo,
};
use std::collections::HashMap;

struct Docker;

fn url(path: &str) -> String {
    let c = Config::get();
    format!("http://docker/{}{path}", c.api_version)
}

fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// Reads the address of the action proxy from an inspected container.
fn address(inspect: &ContainerInspectResponse, port: u16) -> Result<String, FactoryError> {
    let c = Config::get();
    let net = inspect.network_settings.as_ref();
    match c.address {
        AddressMode::Published => {
            let binding = net
                .and_then(|n| n.ports.as_ref())
                .and_then(|p| p.get(&port_key(port)).cloned().flatten())
                .and_then(|b| b.into_iter().find(|b| b.host_port.is_some()));
            let host_port = binding.and_then(|b| b.host_port).ok_or_else(|| {
                FactoryError::Engine(format!("port {port} is not published on the container"))
            })?;
            Ok(format!("{}:{host_port}", c.publish_ip))
        }
        AddressMode::ContainerIp => {
            let ip = net
                .and_then(|n| n.networks.as_ref())
                .and_then(|nets| nets.values().find_map(|e| e.ip_address.clone()))
                .filter(|ip| !ip.is_empty())
                .ok_or_else(|| FactoryError::Engine("container has no IP address".into()))?;
            Ok(format!("{ip}:{port}"))
        }
    }
}

/// A container name without the `/` Docker puts in front of it.
fn plain_name(name: Option<&str>) -> String {
    name.unwrap_or_default().trim_start_matches('/').to_owned()
}

fn state_of(inspect: &ContainerInspectResponse) -> ContainerState {
    match inspect.state.as_ref().and_then(|s| s.status) {
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Creating,
        Some(ContainerStateStatusEnum::EXITED) | Some(ContainerStateStatusEnum::DEAD) => {
            ContainerState::Stopped
        }
        _ => ContainerState::Unknown,
    }
}

fn inspect(id: &str) -> Result<ContainerInspectResponse, FactoryError> {
    let r = http::request("GET", &url(&format!("/containers/{id}/json")), &[], None)?;
    if r.status == 404 {
        return Err(gone(id));
    }
    r.ok(&format!("inspect {id}"))?.json()
}

fn describe_container(inspect: &ContainerInspectResponse) -> Result<Container, FactoryError> {
    let labels = sorted_labels(inspect.config.as_ref().and_then(|c| c.labels.as_ref()));
    let state = state_of(inspect);
    let address = match state {
        ContainerState::Running | ContainerState::Paused => address(inspect, proxy_port(&labels))?,
        _ => String::new(),
    };
    Ok(Container {
        id: inspect.id.clone().unwrap_or_default(),
        name: plain_name(inspect.name.as_deref()),
        address,
        state,
        labels,
        handle: String::new(),
    })
}

fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let c = Config::get();
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    labels.insert(PORT_LABEL.into(), spec.port.to_string());
    let port_bindings = match c.address {
        AddressMode::Published => Some(HashMap::from([(
            port_key(spec.port),
            Some(vec![PortBinding {
                host_ip: Some(c.publish_ip.clone()),
                host_port: Some(String::new()),
            }]),
        )])),
        AddressMode::ContainerIp => None,
    };
    let memory = i64::from(spec.memory_mb) * 1024 * 1024;
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels),
        exposed_ports: Some(vec![port_key(spec.port)]),
        host_config: Some(HostConfig {
            memory: Some(memory),
            memory_swap: Some(memory),
            cpu_shares: spec.cpu_shares.map(i64::from),
            network_mode: spec.network.clone().or_else(|| c.network.clone()),
            port_bindings,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Factory for Docker {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "docker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            engine: "Docker Engine API v1.41+".into(),
            capabilities: EngineSettings::capabilities(config::Config::settings()),
        }
    }

    fn init(config: Pairs) -> Result<(), FactoryError> {
        Config::init(&config)?;
        let r = http::request("GET", "http://docker/_ping", &[], None)?;
        r.ok("ping the Docker daemon").map(|_| ())
    }

    fn create(spec: ContainerSpec) -> Result<Container, FactoryError> {
        if spec.image.is_empty() {
            return Err(FactoryError::InvalidSpec("image is empty".into()));
        }
        let name = keepwarm_plugin_sdk::engine::encode_query(&spec.name);
        let r = http::post_json(
            &url(&format!("/containers/create?name={name}")),
            &create_body(&spec),
        )?;
        let created: ContainerCreateResponse = match r.status {
            201 | 200 => r.json()?,
            404 => return Err(FactoryError::ImageMissing(spec.image)),
            409 => return Err(r.error(&format!("create {}", spec.name))),
            _ => return Err(r.error(&format!("create {}", spec.name))),
        };
        if let Err(e) = container_post(
            &url(&format!("/containers/{}/start", created.id)),
            &created.id,
            "start",
        ) {
            let _ = Docker::destroy(created.id.clone());
            return Err(e);
        }
        describe_container(&inspect(&created.id)?)
    }

    fn attach(known: Container) -> Result<Container, FactoryError> {
        let id = known.id.clone();
        let unpause = url(&format!("/containers/{id}/unpause"));
        adopt(known, || describe_container(&inspect(&id)?), &unpause)
    }

    fn list_containers(labels: Pairs) -> Result<Vec<Container>, FactoryError> {
        let list: Vec<ContainerSummary> = http::get_json(
            &url(&format!(
                "/containers/json?all=1&filters={}",
                label_filter(&labels)
            )),
            "list containers",
        )?;
        let c = Config::get();
        Ok(list
            .into_iter()
            .map(|s| {
                let labels = sorted_labels(s.labels.as_ref());
                let port = proxy_port(&labels);
                let state = match s.state {
                    Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
                    Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
                    Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Creating,
                    Some(ContainerSummaryStateEnum::EXITED)
                    | Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Stopped,
                    _ => ContainerState::Unknown,
                };
                let address = match c.address {
                    AddressMode::Published => s
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.private_port == port && p.public_port.is_some())
                        .map(|p| format!("{}:{}", c.publish_ip, p.public_port.unwrap_or(0)))
                        .unwrap_or_default(),
                    AddressMode::ContainerIp => s
                        .network_settings
                        .as_ref()
                        .and_then(|n| n.networks.as_ref())
                        .and_then(|n| n.values().find_map(|e| e.ip_address.clone()))
                        .map(|ip| format!("{ip}:{port}"))
                        .unwrap_or_default(),
                };
                Container {
                    id: s.id.unwrap_or_default(),
                    name: plain_name(s.names.as_ref().and_then(|n| n.first()).map(String::as_str)),
                    address,
                    state,
                    labels,
                    handle: String::new(),
                }
            })
            .collect())
    }

    fn pause(id: String) -> Result<(), FactoryError> {
        container_post(&url(&format!("/containers/{id}/pause")), &id, "pause")
    }

    fn resume(id: String) -> Result<(), FactoryError> {
        container_post(&url(&format!("/containers/{id}/unpause")), &id, "unpause")
    }

    fn destroy(id: String) -> Result<(), FactoryError> {
        container_delete(&url(&format!("/containers/{id}?force=1&v=1")), &id)
    }

    fn logs(id: String, since_ms: u64, max_bytes: u32) -> Result<String, FactoryError> {
        let since = since_param(since_ms);
        let path = format!("/containers/{id}/logs?stdout=1&stderr=1&since={since}");
        container_logs(&url(&path), &id, max_bytes)
    }
}

export!(Docker);
