//! The simulator's agents run each task as a real Docker container, so the address a
//! framework gets back reaches a real action proxy.

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use bollard::Docker;
use std::collections::HashMap;

/// What an agent is asked to run: the parts of a `TaskInfo` a Docker containerizer uses.
#[derive(Debug, Clone)]
pub struct Launch {
    pub container_name: String,
    pub image: String,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub mem_mb: f64,
    /// (host port on 127.0.0.1, container port) for a BRIDGE task.
    pub port_mapping: Option<(u16, u16)>,
    pub host_network: bool,
}

#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    pub fn connect() -> Engine {
        Engine {
            docker: Docker::connect_with_unix(
                "/var/run/docker.sock",
                60,
                bollard::API_DEFAULT_VERSION,
            )
            .expect("docker socket"),
        }
    }

    /// Creates and starts the container; the error text is what Mesos' Docker containerizer
    /// would put in the `TASK_FAILED` message.
    pub async fn launch(&self, l: &Launch) -> Result<String, String> {
        let mut bindings = HashMap::new();
        let mut exposed = Vec::new();
        if let Some((host, container)) = l.port_mapping {
            let key = format!("{container}/tcp");
            bindings.insert(
                key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(host.to_string()),
                }]),
            );
            exposed.push(key);
        }
        let body = ContainerCreateBody {
            image: Some(l.image.clone()),
            env: Some(l.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(l.labels.iter().cloned().collect()),
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                port_bindings: Some(bindings),
                memory: Some((l.mem_mb * 1024.0 * 1024.0) as i64),
                network_mode: l.host_network.then(|| "host".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(l.container_name.clone()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("Failed to launch container: {}", docker_message(&e)))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            self.remove(&created.id).await;
            return Err(format!(
                "Failed to launch container: {}",
                docker_message(&e)
            ));
        }
        Ok(created.id)
    }

    /// Stops and removes a container (what the executor's kill amounts to here).
    pub async fn remove(&self, id: &str) {
        let _ = self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
}

fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}
