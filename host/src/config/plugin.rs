//! The plugins a host runs: `[plugin]`, more in `[[plugins]]`, and a drop-in directory
//! (`[invoker] plugins-dir`) of `NAME.toml` files beside `NAME.wasm`. Each names its engine's
//! routes, its config and limits, and which actions it serves (see [`crate::engines`]).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginSection {
    pub name: String,
    pub file: PathBuf,
    #[serde(default)]
    pub routes: BTreeMap<String, String>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default = "default_call_timeout")]
    pub call_timeout_ms: u64,
    #[serde(default = "default_plugin_memory")]
    pub memory_mb: u64,
    #[serde(default = "default_instances")]
    pub max_instances: usize,
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// How many keys the plugin may keep in its `state`.
    #[serde(default = "default_state_max_keys")]
    pub state_max_keys: usize,
    /// How much the plugin may keep in its `state` (keys and values), in KiB.
    #[serde(default = "default_state_max_kb")]
    pub state_max_kb: usize,
    /// Where the plugin's containers may be: IPs or CIDRs with optional ports
    /// (`10.0.0.0/8:30000-32767`). Default: its `publish-ip` (else 127.0.0.1) and the hosts of
    /// its TCP routes. The host sends action code and the caller's API key only there.
    #[serde(default)]
    pub allowed_addresses: Option<Vec<String>>,
    /// The plugin file's sha256 (hex; `keepwarm plugin inspect` prints it): any other file
    /// is refused at start.
    #[serde(default)]
    pub sha256: Option<String>,
    /// TLS to engines on other machines, by route name (`[plugin.tls.docker]`).
    #[serde(default)]
    pub tls: BTreeMap<String, RouteTlsSection>,
    /// The kinds of the actions this plugin serves (`shell:1`, `nodejs:*`, `blackbox`).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// The images of the blackbox actions it serves (`keepwarm/*`); checked before `kinds`.
    #[serde(default)]
    pub images: Vec<String>,
    /// It serves the actions no plugin's `kinds` or `images` name (default: the first
    /// plugin declared).
    #[serde(default)]
    pub default: bool,
    /// Where it was declared (`[plugin]`, `[[plugins]] podman`, `plugins.d/podman.toml`), for
    /// messages.
    #[serde(skip)]
    pub origin: String,
}

/// TLS to one route's engine: `cert-dir` (Docker's layout: `ca.pem`, `cert.pem`, `key.pem`),
/// or `ca` with an optional client `cert` and `key`; `server-name` when the engine's
/// certificate names something other than the route's host. Relative paths are relative to
/// the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouteTlsSection {
    #[serde(default)]
    pub cert_dir: Option<PathBuf>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub server_name: Option<String>,
}

impl RouteTlsSection {
    /// The files this section names, or what is wrong with it.
    pub fn files(&self, route: &str) -> Result<crate::plugin::RouteTls, String> {
        let section = format!("[plugin.tls.{route}]");
        let mut files = match (&self.cert_dir, &self.ca) {
            (Some(dir), None) if self.cert.is_none() && self.key.is_none() => {
                crate::plugin::RouteTls::in_dir(dir)
            }
            (Some(_), _) => {
                return Err(format!(
                    "{section}: cert-dir names ca.pem, cert.pem and key.pem; set it or ca/cert/key, not both"
                ))
            }
            (None, Some(ca)) => crate::plugin::RouteTls {
                ca: ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                server_name: None,
            },
            (None, None) => {
                return Err(format!(
                    "{section}: set cert-dir (ca.pem, cert.pem, key.pem) or ca (and cert + key)"
                ))
            }
        };
        if files.cert.is_some() != files.key.is_some() {
            return Err(format!(
                "{section}: set both cert and key (a client certificate), or neither"
            ));
        }
        files.server_name = self.server_name.clone();
        Ok(files)
    }
}

impl PluginSection {
    /// What the plugin runtime loads.
    pub fn spec(&self) -> Result<crate::plugin::PluginSpec, String> {
        use crate::plugin::{Limits, PluginSpec, StateLimits};
        let tls = self
            .tls
            .iter()
            .map(|(route, t)| Ok((route.clone(), t.files(route)?)))
            .collect::<Result<_, String>>()?;
        Ok(PluginSpec {
            name: self.name.clone(),
            file: self.file.clone(),
            routes: self.routes.clone().into_iter().collect(),
            tls,
            config: self.config.clone().into_iter().collect(),
            limits: Limits {
                call_timeout: std::time::Duration::from_millis(self.call_timeout_ms),
                memory_mb: self.memory_mb,
                max_instances: self.max_instances,
                state: StateLimits {
                    max_keys: self.state_max_keys,
                    max_bytes: self.state_max_kb << 10,
                },
            },
            allowed_addresses: self.allowed_addresses.clone(),
            sha256: self.sha256.clone(),
        })
    }

    /// Which actions it serves.
    pub fn serves(&self) -> crate::engines::Serves {
        crate::engines::Serves {
            kinds: self.kinds.clone(),
            images: self.images.clone(),
            default: self.default,
        }
    }

    /// Relative paths are relative to `base` (the directory of the file declaring it).
    pub(super) fn resolve_paths(&mut self, base: &Path) {
        let tls = self
            .tls
            .values_mut()
            .flat_map(|t| [&mut t.cert_dir, &mut t.ca, &mut t.cert, &mut t.key])
            .flatten();
        for p in std::iter::once(&mut self.file)
            .chain(self.cache_dir.as_mut())
            .chain(tls)
            .filter(|p| p.is_relative())
        {
            *p = base.join(&*p);
        }
    }

    /// Every rule its types cannot say; the error names where it was declared.
    pub(super) fn validate(&self) -> Result<(), String> {
        let at = |e: String| {
            if self.origin == "[plugin]" {
                e
            } else {
                format!("{}: {e}", self.origin)
            }
        };
        for (route, tls) in &self.tls {
            tls.files(route).map_err(at)?;
        }
        let zero = [
            ("call-timeout-ms", self.call_timeout_ms == 0),
            ("memory-mb", self.memory_mb == 0),
            ("max-instances", self.max_instances == 0),
            ("state-max-keys", self.state_max_keys == 0),
            ("state-max-kb", self.state_max_kb == 0),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(format!("{} {name} must be more than 0", self.origin));
        }
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(format!(
                "{} name `{}`: use letters, digits, `-` and `_`",
                self.origin, self.name
            ));
        }
        if !self.file.exists() {
            return Err(format!(
                "{} file {} does not exist (build the plugins: make plugins)",
                self.origin,
                self.file.display()
            ));
        }
        Ok(())
    }
}

/// The plugins of a drop-in directory: each `NAME.toml` is a plugin section whose `name`
/// defaults to NAME and `file` to `NAME.wasm` beside it; read in file-name order.
pub(super) fn drop_ins(dir: &Path) -> Result<Vec<PluginSection>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("[invoker] plugins-dir {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files.iter().map(|path| drop_in(dir, path)).collect()
}

fn drop_in(dir: &Path, path: &Path) -> Result<PluginSection, String> {
    let origin = path.display().to_string();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{origin}: the file name is not UTF-8"))?
        .to_owned();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{origin}: {e}"))?;
    let mut table: toml::Table = text.parse().map_err(|e| format!("{origin}: {e}"))?;
    table
        .entry("name")
        .or_insert_with(|| toml::Value::String(stem.clone()));
    table
        .entry("file")
        .or_insert_with(|| toml::Value::String(format!("{stem}.wasm")));
    let mut section: PluginSection = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| format!("{origin}: {}: {}", e.path(), e.inner()))?;
    section.origin = origin;
    section.resolve_paths(dir);
    Ok(section)
}

fn default_call_timeout() -> u64 {
    crate::plugin::Limits::DEFAULT_CALL_TIMEOUT_MS
}
fn default_plugin_memory() -> u64 {
    crate::plugin::Limits::DEFAULT_MEMORY_MB
}
fn default_instances() -> usize {
    crate::plugin::Limits::DEFAULT_MAX_INSTANCES
}

fn default_state_max_keys() -> usize {
    crate::plugin::StateLimits::default().max_keys
}

fn default_state_max_kb() -> usize {
    crate::plugin::StateLimits::default().max_bytes >> 10
}
