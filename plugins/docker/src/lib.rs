//! keepwarm container factory for the Docker Engine API, reached through the `docker` route.
//!
//! Config (`init` pairs):
//! - `api-version`: the API path prefix, default `v1.41`;
//! - `address`: `published` (default: the proxy port is published on `publish-ip` and the
//!   address is `publish-ip:host-port`) or `container-ip` (the container's IP on its network);
//! - `publish-ip`: default `127.0.0.1`; an address of the engine's machine that every cluster
//!   member routes to makes the plugin `cluster-wide` (failover re-attaches its containers
//!   from any member), loopback does not;
//! - `network`: the network for containers whose spec names none (default: the engine's);
//! - `engines`: several engines, `docker-a@10.0.0.5, docker-b@10.0.0.6` (each a route the
//!   host maps, and the address its ports are published on). Containers are placed round
//!   robin; an engine that does not answer is skipped for a few seconds and its containers
//!   are left out of `list-containers` (so the host forgets them and places activations on
//!   the others). Ids are then `route/id`. Without it the one engine is the `docker` route.
//!
//! The engine may be on another machine (`tcp://engine-1:2376` with `[plugin.tls.docker]` in
//! the host's config: Docker's `--tlsverify`); the plugin speaks plain HTTP to `docker` and
//! the host adds TLS.

mod config;

use bollard_stubs::models::{
    ContainerCreateBody, ContainerCreateResponse, ContainerInspectResponse,
    ContainerStateStatusEnum, ContainerSummary, ContainerSummaryStateEnum, HostConfig, PortBinding,
};
use config::{AddressMode, Config, Engine};
use keepwarm_plugin_sdk::engine::{
    adopt, container_delete, container_logs, container_post, gone, label_filter, proxy_port,
    since_param, sorted_labels, PORT_LABEL,
};
use keepwarm_plugin_sdk::{
    export, http, Container, ContainerSpec, ContainerState, Factory, FactoryError, Pairs,
    PluginInfo,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

struct Docker;

fn url(engine: &Engine, path: &str) -> String {
    let c = Config::get();
    format!("http://{}/{}{path}", engine.route, c.engine.api_version)
}

/// The engine a container id names, and the id that engine knows it by. With several
/// engines ids are `route/id`; a bare id is the first engine's (as one engine names them).
fn locate(id: &str) -> Result<(&'static Engine, &str), FactoryError> {
    let engines = &Config::get().engines;
    match id.split_once('/') {
        Some((route, raw)) => engines
            .iter()
            .find(|e| e.route == route)
            .map(|e| (e, raw))
            .ok_or_else(|| gone(id)),
        None => Ok((&engines[0], id)),
    }
}

/// The id the host knows a container of `engine` by.
fn qualify(engine: &Engine, raw: &str) -> String {
    if Config::get().engines.len() > 1 {
        format!("{}/{raw}", engine.route)
    } else {
        raw.to_owned()
    }
}

/// How long an engine that did not answer is tried last when placing containers.
const DOWN_FOR_MS: u64 = 5_000;

/// Engines that did not answer lately, with when (monotonic ms) they did not.
static DOWN: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
/// Where the next container goes first (round robin; each instance starts at a random
/// engine, so instances running side by side spread their containers too).
static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);

fn seen_down(engine: &Engine, down: bool) {
    let mut list = DOWN.lock().unwrap_or_else(|e| e.into_inner());
    list.retain(|(route, _)| *route != engine.route);
    if down {
        list.push((engine.route.clone(), http::monotonic_ms()));
    }
}

fn lately_down(engine: &Engine) -> bool {
    let now = http::monotonic_ms();
    DOWN.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|(route, at)| *route == engine.route && now.saturating_sub(*at) < DOWN_FOR_MS)
}

fn random_start() -> usize {
    use std::hash::{BuildHasher, Hasher};
    // std seeds RandomState from the host's `wasi:random`
    (std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        % 1024) as usize
}

/// The engines in the order to try for the next container: round robin, those that did
/// not answer lately last.
fn placement_order() -> Vec<&'static Engine> {
    let engines = &Config::get().engines;
    let _ = NEXT.compare_exchange(
        usize::MAX,
        random_start(),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let first = NEXT.fetch_add(1, Ordering::Relaxed) % engines.len();
    let mut order: Vec<&Engine> = (0..engines.len())
        .map(|i| &engines[(first + i) % engines.len()])
        .collect();
    order.sort_by_key(|e| lately_down(e));
    order
}

fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// Reads the address of the action proxy from an inspected container.
fn address(
    engine: &Engine,
    inspect: &ContainerInspectResponse,
    port: u16,
) -> Result<String, FactoryError> {
    let c = &Config::get().engine;
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
            Ok(format!("{}:{host_port}", engine.publish_ip))
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

fn inspect(engine: &Engine, id: &str) -> Result<ContainerInspectResponse, FactoryError> {
    let r = http::request(
        "GET",
        &url(engine, &format!("/containers/{id}/json")),
        &[],
        None,
    )?;
    if r.status == 404 {
        return Err(gone(id));
    }
    r.ok(&format!("inspect {id}"))?.json()
}

fn describe_container(
    engine: &Engine,
    inspect: &ContainerInspectResponse,
) -> Result<Container, FactoryError> {
    let labels = sorted_labels(inspect.config.as_ref().and_then(|c| c.labels.as_ref()));
    let state = state_of(inspect);
    let address = match state {
        ContainerState::Running | ContainerState::Paused => {
            address(engine, inspect, proxy_port(&labels))?
        }
        _ => String::new(),
    };
    Ok(Container {
        id: qualify(engine, &inspect.id.clone().unwrap_or_default()),
        name: plain_name(inspect.name.as_deref()),
        address,
        state,
        labels,
        handle: String::new(),
    })
}

fn create_body(engine: &Engine, spec: &ContainerSpec) -> ContainerCreateBody {
    let c = &Config::get().engine;
    let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
    labels.insert(PORT_LABEL.into(), spec.port.to_string());
    let port_bindings = match c.address {
        AddressMode::Published => Some(HashMap::from([(
            port_key(spec.port),
            Some(vec![PortBinding {
                host_ip: Some(engine.publish_ip.clone()),
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

/// Creates and starts a container on `engine`.
fn create_on(engine: &Engine, spec: &ContainerSpec) -> Result<Container, FactoryError> {
    let name = keepwarm_plugin_sdk::engine::encode_query(&spec.name);
    let r = http::post_json(
        &url(engine, &format!("/containers/create?name={name}")),
        &create_body(engine, spec),
    )?;
    let created: ContainerCreateResponse = match r.status {
        201 | 200 => r.json()?,
        404 => return Err(FactoryError::ImageMissing(spec.image.clone())),
        _ => return Err(r.error(&format!("create {}", spec.name))),
    };
    if let Err(e) = container_post(
        &url(engine, &format!("/containers/{}/start", created.id)),
        &created.id,
        "start",
    ) {
        let _ = container_delete(
            &url(engine, &format!("/containers/{}?force=1&v=1", created.id)),
            &created.id,
        );
        return Err(e);
    }
    describe_container(engine, &inspect(engine, &created.id)?)
}

/// The containers with `labels` on `engine`.
fn list_on(engine: &Engine, labels: &Pairs) -> Result<Vec<Container>, FactoryError> {
    let list: Vec<ContainerSummary> = http::get_json(
        &url(
            engine,
            &format!("/containers/json?all=1&filters={}", label_filter(labels)),
        ),
        "list containers",
    )?;
    let c = &Config::get().engine;
    Ok(list
        .into_iter()
        .map(|s| {
            let labels = sorted_labels(s.labels.as_ref());
            let port = proxy_port(&labels);
            let state = match s.state {
                Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
                Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
                Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Creating,
                Some(ContainerSummaryStateEnum::EXITED) | Some(ContainerSummaryStateEnum::DEAD) => {
                    ContainerState::Stopped
                }
                _ => ContainerState::Unknown,
            };
            let address = match c.address {
                AddressMode::Published => s
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.private_port == port && p.public_port.is_some())
                    .map(|p| format!("{}:{}", engine.publish_ip, p.public_port.unwrap_or(0)))
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
                id: qualify(engine, &s.id.unwrap_or_default()),
                name: plain_name(s.names.as_ref().and_then(|n| n.first()).map(String::as_str)),
                address,
                state,
                labels,
                handle: String::new(),
            }
        })
        .collect())
}

/// Runs `call` on each engine, every one every time (one that did not answer lately may
/// answer now: leaving it out of a list would have the host forget its containers); an
/// engine that fails it is noted (placed on last) and left out. Fails only when none
/// answers (with the first error).
fn on_every_engine<T>(
    mut call: impl FnMut(&Engine) -> Result<T, FactoryError>,
) -> Result<Vec<T>, FactoryError> {
    let mut answers = Vec::new();
    let mut first_error = None;
    for engine in &Config::get().engines {
        match call(engine) {
            Ok(v) => {
                seen_down(engine, false);
                answers.push(v);
            }
            // an engine that fails this call in any way (refused, timed out, cut off mid
            // answer) is left out; the others still answer for theirs
            Err(e) => {
                seen_down(engine, true);
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if answers.is_empty() => Err(e),
        _ => Ok(answers),
    }
}

impl Factory for Docker {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "docker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            engine: "Docker Engine API v1.41+".into(),
            capabilities: config::Settings::capabilities(Config::settings()),
        }
    }

    fn init(config: Pairs) -> Result<(), FactoryError> {
        Config::init(&config)?;
        on_every_engine(|engine| {
            http::request("GET", &format!("http://{}/_ping", engine.route), &[], None)?
                .ok("ping the Docker daemon")
        })
        .map(|_| ())
    }

    fn create(spec: ContainerSpec) -> Result<Container, FactoryError> {
        if spec.image.is_empty() {
            return Err(FactoryError::InvalidSpec("image is empty".into()));
        }
        let mut unavailable = None;
        for engine in placement_order() {
            match create_on(engine, &spec) {
                Err(e @ FactoryError::Unavailable(_)) => {
                    seen_down(engine, true);
                    unavailable.get_or_insert(e);
                }
                done => {
                    seen_down(engine, false);
                    return done;
                }
            }
        }
        Err(unavailable.expect("at least one engine"))
    }

    fn attach(known: Container) -> Result<Container, FactoryError> {
        let id = known.id.clone();
        let (engine, raw) = locate(&id)?;
        let unpause = url(engine, &format!("/containers/{raw}/unpause"));
        adopt(
            known,
            || describe_container(engine, &inspect(engine, raw)?),
            &unpause,
        )
    }

    fn list_containers(labels: Pairs) -> Result<Vec<Container>, FactoryError> {
        Ok(on_every_engine(|engine| list_on(engine, &labels))?
            .into_iter()
            .flatten()
            .collect())
    }

    fn pause(id: String) -> Result<(), FactoryError> {
        let (engine, raw) = locate(&id)?;
        container_post(
            &url(engine, &format!("/containers/{raw}/pause")),
            &id,
            "pause",
        )
    }

    fn resume(id: String) -> Result<(), FactoryError> {
        let (engine, raw) = locate(&id)?;
        container_post(
            &url(engine, &format!("/containers/{raw}/unpause")),
            &id,
            "unpause",
        )
    }

    fn destroy(id: String) -> Result<(), FactoryError> {
        let (engine, raw) = locate(&id)?;
        container_delete(&url(engine, &format!("/containers/{raw}?force=1&v=1")), &id)
    }

    fn logs(id: String, since_ms: u64, max_bytes: u32) -> Result<String, FactoryError> {
        let (engine, raw) = locate(&id)?;
        let since = since_param(since_ms);
        let path = format!("/containers/{raw}/logs?stdout=1&stderr=1&timestamps=1&since={since}");
        container_logs(&url(engine, &path), &id, max_bytes)
    }
}

export!(Docker);
