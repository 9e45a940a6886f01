//! The JSON `keepwarm plugin call` reads and prints: the WIT's names (kebab-case) and pairs
//! (labels, env) as objects everywhere. A bad argument's error names the field and shows an
//! example of the whole argument.

use crate::factory::{Container, ContainerSpec, ContainerState, Pairs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An example argument per operation, shown with every error about one.
pub fn example(operation: &str) -> &'static str {
    match operation {
        "create" => {
            r#"{"name":"c1","image":"keepwarm/action-runtime:latest","memory-mb":256,"labels":{"keepwarm.cluster":"dev"},"env":{"__OW_API_HOST":"http://127.0.0.1"},"port":8080}"#
        }
        "attach" => {
            r#"{"id":"3f2a…","name":"c1","address":"127.0.0.1:32768","state":"running","labels":{"keepwarm.cluster":"dev"},"handle":""}"#
        }
        "list-containers" => r#"{"keepwarm.cluster":"dev"}"#,
        "logs" => r#"{"id":"3f2a…","since-ms":0,"max-bytes":65536}  (or just the id)"#,
        _ => r#""3f2a…"  (a container id)"#,
    }
}

/// Reads `arg` as a `T`, or says which field is wrong, how, and what the argument looks like.
pub fn parse<T: serde::de::DeserializeOwned>(operation: &str, arg: &str) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_str(arg);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(" field `{path}`:")
        };
        format!(
            "`{operation}` argument:{at} {}\n  e.g. {}",
            e.into_inner(),
            example(operation)
        )
    })
}

fn object(pairs: Pairs) -> BTreeMap<String, String> {
    pairs.into_iter().collect()
}

/// A container-spec as the command line writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Spec {
    name: String,
    image: String,
    memory_mb: u32,
    #[serde(default)]
    cpu_shares: Option<u32>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    network: Option<String>,
    #[serde(default = "proxy_port")]
    port: u16,
}

fn proxy_port() -> u16 {
    8080
}

impl From<Spec> for ContainerSpec {
    fn from(s: Spec) -> ContainerSpec {
        ContainerSpec {
            name: s.name,
            image: s.image,
            memory_mb: s.memory_mb,
            cpu_shares: s.cpu_shares,
            env: s.env.into_iter().collect(),
            labels: s.labels.into_iter().collect(),
            network: s.network,
            port: s.port,
        }
    }
}

/// A container as the command line reads and prints it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Shown {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    state: ContainerState,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    handle: String,
}

impl From<Container> for Shown {
    fn from(c: Container) -> Shown {
        Shown {
            id: c.id,
            name: c.name,
            address: c.address,
            state: c.state,
            labels: object(c.labels),
            handle: c.handle,
        }
    }
}

impl From<Shown> for Container {
    fn from(c: Shown) -> Container {
        Container {
            id: c.id,
            name: c.name,
            address: c.address,
            state: c.state,
            labels: c.labels.into_iter().collect(),
            handle: c.handle,
        }
    }
}

/// `logs`' argument.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LogsArg {
    pub id: String,
    #[serde(default)]
    pub since_ms: u64,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u32,
}

fn default_max_bytes() -> u32 {
    64 * 1024
}

impl LogsArg {
    pub fn of(id: String) -> LogsArg {
        LogsArg {
            id,
            since_ms: 0,
            max_bytes: default_max_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_and_show_an_example() {
        let e =
            parse::<Spec>("create", r#"{"name":"a","image":"x","memory-mb":"lots"}"#).unwrap_err();
        assert!(
            e.contains("field `memory-mb`") && e.contains("e.g. {\"name\""),
            "{e}"
        );
        let e = parse::<Spec>("create", r#"{"name":"a","image":"x","memory_mb":1}"#).unwrap_err();
        assert!(e.contains("memory_mb") && e.contains("memory-mb"), "{e}");
        let e = parse::<Spec>(
            "create",
            r#"{"name":"a","image":"x","memory-mb":1,"labels":[["k","v"]]}"#,
        )
        .unwrap_err();
        assert!(e.contains("field `labels`"), "{e}");
    }

    #[test]
    fn pairs_are_objects_both_ways() {
        let spec: ContainerSpec = parse::<Spec>(
            "create",
            r#"{"name":"a","image":"x","memory-mb":1,"labels":{"k":"v"},"env":{"A":"1"}}"#,
        )
        .unwrap()
        .into();
        assert_eq!(spec.labels, vec![("k".to_string(), "v".to_string())]);
        assert_eq!(spec.port, 8080);
        let shown = serde_json::to_value(Shown::from(Container {
            id: "c".into(),
            labels: spec.labels,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(shown["labels"], serde_json::json!({"k": "v"}));
    }
}
