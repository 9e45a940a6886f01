//! Native Docker calls (bollard) the benchmarks compare the plugin against: `docker run -d -p
//! 127.0.0.1::8080` of an image as the Engine API calls it makes, and a forced removal.

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use bollard::Docker;
use std::collections::HashMap;

/// Creates and starts `name` from `image` (128 MB, port 8080 published on 127.0.0.1) with
/// `labels`; its id and the proxy's address.
pub async fn docker_run(
    docker: &Docker,
    image: &str,
    name: &str,
    labels: &[(&str, &str)],
) -> (String, String) {
    let labels: HashMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = ContainerCreateBody {
        image: Some(image.into()),
        labels: (!labels.is_empty()).then_some(labels),
        exposed_ports: Some(vec!["8080/tcp".into()]),
        host_config: Some(HostConfig {
            memory: Some(128 << 20),
            memory_swap: Some(128 << 20),
            port_bindings: Some(HashMap::from([(
                "8080/tcp".into(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.into()),
        ..Default::default()
    };
    let created = docker.create_container(Some(options), body).await.unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    let inspect = docker.inspect_container(&created.id, None).await.unwrap();
    let port = inspect.network_settings.unwrap().ports.unwrap()["8080/tcp"]
        .clone()
        .unwrap()[0]
        .host_port
        .clone()
        .unwrap();
    (created.id, format!("127.0.0.1:{port}"))
}

/// Removes a container, running or not (errors ignored: it may be gone already).
pub async fn remove(docker: &Docker, id: &str) {
    let force = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    let _ = docker.remove_container(id, Some(force)).await;
}
