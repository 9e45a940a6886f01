//! keepwarm container factory for Podman's libpod REST API (v4), reached through the `podman`
//! route (normally `unix:///run/podman/podman.sock`).
//!
//! Settings as for Docker (`keepwarm_plugin_sdk::engine::EngineSettings`), with `api-version`
//! defaulting to `v4.0.0`. Responses are read with the `podman-api-stubs` models; the create
//! body is built as JSON because the stubs' `SpecGenerator` has ~150 fields and no `Default`.
//!
//! A Podman on another machine is reached with `podman system service tcp://ADDR:PORT`
//! (Podman 4 serves plain HTTP there: front it with a TLS terminator and give the host
//! `[plugin.tls.podman]`, or keep it on a network only the members reach).

use keepwarm_plugin_sdk::engine::{
    adopt, container_delete, container_logs, container_post, encode_query, gone, label_filter,
    proxy_port, since_param, sorted_labels, AddressMode, EngineSettings, PORT_LABEL,
};
use keepwarm_plugin_sdk::{
    export, http, Container, ContainerSpec, ContainerState, Factory, FactoryError, Pairs,
    PluginInfo,
};
use podman_api_stubs::models::{
    ContainerCreateResponse, InspectContainerData, ListContainer, PortMapping,
};
use serde_json::json;
use std::collections::HashMap;
use std::sync::OnceLock;

static SETTINGS: OnceLock<EngineSettings> = OnceLock::new();

fn settings() -> &'static EngineSettings {
    SETTINGS.get().expect("init runs before any other call")
}

fn url(path: &str) -> String {
    format!("http://podman/{}/libpod{path}", settings().api_version)
}

fn state_from(status: &str) -> ContainerState {
    match status {
        "running" => ContainerState::Running,
        "paused" => ContainerState::Paused,
        "created" | "configured" | "initialized" => ContainerState::Creating,
        "exited" | "stopped" | "dead" => ContainerState::Stopped,
        _ => ContainerState::Unknown,
    }
}

fn address_of(data: &InspectContainerData, port: u16) -> Result<String, FactoryError> {
    let s = settings();
    let net = data.network_settings.as_ref();
    match s.address {
        AddressMode::Published => net
            .and_then(|n| n.ports.as_ref())
            .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .filter(|p| !p.is_empty())
            .map(|p| format!("{}:{p}", s.publish_ip))
            .ok_or_else(|| FactoryError::Engine(format!("port {port} is not published"))),
        AddressMode::ContainerIp => net
            .and_then(|n| n.networks.as_ref())
            .and_then(|nets| nets.values().find_map(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty())
            .map(|ip| format!("{ip}:{port}"))
            .ok_or_else(|| FactoryError::Engine("container has no IP address".into())),
    }
}

fn inspect(id: &str) -> Result<InspectContainerData, FactoryError> {
    let r = http::request("GET", &url(&format!("/containers/{id}/json")), &[], None)?;
    if r.status == 404 {
        return Err(gone(id));
    }
    r.ok(&format!("inspect {id}"))?.json()
}

fn to_container(data: &InspectContainerData) -> Result<Container, FactoryError> {
    let labels = sorted_labels(data.config.as_ref().and_then(|c| c.labels.as_ref()));
    let state = state_from(
        data.state
            .as_ref()
            .and_then(|s| s.status.as_deref())
            .unwrap_or(""),
    );
    let address = match state {
        ContainerState::Running | ContainerState::Paused => address_of(data, proxy_port(&labels))?,
        _ => String::new(),
    };
    Ok(Container {
        id: data.id.clone().unwrap_or_default(),
        name: data.name.clone().unwrap_or_default(),
        address,
        state,
        labels,
        handle: String::new(),
    })
}

fn create_body(spec: &ContainerSpec) -> serde_json::Value {
    let s = settings();
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    labels.insert(PORT_LABEL.into(), spec.port.to_string());
    let env: HashMap<String, String> = spec.env.iter().cloned().collect();
    let mut body = json!({
        "name": spec.name,
        "image": spec.image,
        "env": env,
        "labels": labels,
        "resource_limits": {
            "memory": { "limit": i64::from(spec.memory_mb) * 1024 * 1024 },
            "cpu": spec.cpu_shares.map(|shares| json!({ "shares": shares })),
        },
        "netns": { "nsmode": "bridge" },
    });
    if s.address == AddressMode::Published {
        body["portmappings"] = json!([PortMapping {
            container_port: Some(spec.port),
            host_ip: Some(s.publish_ip.clone()),
            host_port: None,
            protocol: Some("tcp".into()),
            range: None,
        }]);
    }
    if let Some(net) = spec.network.as_ref().or(s.network.as_ref()) {
        body["networks"] = json!({ net: {} });
    }
    body
}

struct Podman;

impl Factory for Podman {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "podman".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            engine: "Podman libpod API v4".into(),
            capabilities: EngineSettings::capabilities(SETTINGS.get()),
        }
    }

    fn init(config: Pairs) -> Result<(), FactoryError> {
        let _ = SETTINGS.set(EngineSettings::parse("podman", &config, "v4.0.0")?);
        http::request("GET", &url("/_ping"), &[], None)?
            .ok("ping the Podman service")
            .map(|_| ())
    }

    fn create(spec: ContainerSpec) -> Result<Container, FactoryError> {
        if spec.image.is_empty() {
            return Err(FactoryError::InvalidSpec("image is empty".into()));
        }
        let r = http::post_json(&url("/containers/create"), &create_body(&spec))?;
        let created: ContainerCreateResponse = match r.status {
            200 | 201 => r.json()?,
            404 => return Err(FactoryError::ImageMissing(spec.image)),
            500 if r.text().contains("image not known") || r.text().contains("no such image") => {
                return Err(FactoryError::ImageMissing(spec.image))
            }
            _ => return Err(r.error(&format!("create {}", spec.name))),
        };
        if let Err(e) = container_post(
            &url(&format!("/containers/{}/start", created.id)),
            &created.id,
            "start",
        ) {
            let _ = Podman::destroy(created.id.clone());
            return Err(e);
        }
        to_container(&inspect(&created.id)?)
    }

    fn attach(known: Container) -> Result<Container, FactoryError> {
        let id = known.id.clone();
        let unpause = url(&format!("/containers/{id}/unpause"));
        adopt(known, || to_container(&inspect(&id)?), &unpause)
    }

    fn list_containers(labels: Pairs) -> Result<Vec<Container>, FactoryError> {
        let list: Vec<ListContainer> = http::get_json(
            &url(&format!(
                "/containers/json?all=true&filters={}",
                label_filter(&labels)
            )),
            "list containers",
        )?;
        let s = settings();
        Ok(list
            .into_iter()
            .map(|c| {
                let labels = sorted_labels(c.labels.as_ref());
                let port = proxy_port(&labels);
                let state = state_from(c.state.as_deref().unwrap_or(""));
                let address = match s.address {
                    AddressMode::Published => c
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.container_port == Some(port))
                        .and_then(|p| p.host_port)
                        .map(|hp| format!("{}:{hp}", s.publish_ip))
                        .unwrap_or_default(),
                    // The list carries no IPs; attach inspects for the address.
                    AddressMode::ContainerIp => String::new(),
                };
                Container {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default(),
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
        // timeout=0: kill at once (the default waits 10 s for an action proxy that ignores
        // SIGTERM, as a shell PID 1 does)
        let path = format!("/containers/{}?force=true&timeout=0", encode_query(&id));
        container_delete(&url(&path), &id)
    }

    fn logs(id: String, since_ms: u64, max_bytes: u32) -> Result<String, FactoryError> {
        let since = since_param(since_ms);
        let path =
            format!("/containers/{id}/logs?stdout=true&stderr=true&timestamps=true&since={since}");
        container_logs(&url(&path), &id, max_bytes)
    }
}

export!(Podman);
