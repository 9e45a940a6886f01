//! The TOML config, validated up front. Unknown keys are errors; every key can be overridden
//! by an environment variable `KEEPWARM_<SECTION>_<KEY>` (dashes become underscores), as
//! container deployments expect.

mod plugin;

pub use crate::telemetry::{LogFormat, LogSection, TraceSection};
pub use plugin::{PluginSection, RouteTlsSection};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub invoker: InvokerSection,
    pub kafka: KafkaSection,
    /// The first plugin; [`Config::load`] moves it to the front of `plugins`.
    #[serde(default)]
    plugin: Option<PluginSection>,
    /// Every plugin this host runs: `[plugin]`, then `[[plugins]]`, then the drop-in
    /// directory's (`[invoker] plugins-dir`). Never empty once loaded.
    #[serde(default)]
    pub plugins: Vec<PluginSection>,
    pub runtimes: RuntimesSection,
    pub actions: ActionsSection,
    /// Where activation records go (default: the JSON-lines `[invoker] activation-log`).
    #[serde(default)]
    pub activations: ActivationsSection,
    /// The system's action limit ranges (upstream's `whisk.*-limit` settings).
    #[serde(default)]
    pub limits: LimitsSection,
    /// CouchDB, for `[actions] store = "couchdb"` or `[activations] store = "couchdb"`.
    #[serde(default)]
    pub couchdb: Option<crate::couchdb::CouchConfig>,
    /// Present in cluster mode.
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// How the host logs.
    #[serde(default)]
    pub log: LogSection,
    /// Where activation traces go (OTLP); off when absent.
    #[serde(default)]
    pub trace: Option<TraceSection>,
}

/// Cluster membership and timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSection {
    /// This host's id; a key of `peers`.
    pub id: u64,
    /// Every member: `"1" = "127.0.0.1:7001"`, this host included.
    pub peers: BTreeMap<String, String>,
    /// Members talk mutual TLS with these files (`keepwarm cluster certs` makes them).
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Plain HTTP between members, authenticated only by `secret`: for a trusted network
    /// only; every start logs a warning.
    #[serde(default)]
    pub insecure: bool,
    /// Shared by the members of an `insecure` cluster; sent in clear text.
    #[serde(default)]
    pub secret: Option<String>,
    /// Where `/status` and `/metrics` are served (default: loopback, this member's Raft port
    /// + 1).
    #[serde(default)]
    pub status_address: Option<String>,
    /// When set, `/status` and `/metrics` require it as a bearer token.
    #[serde(default)]
    pub status_token: Option<String>,
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_election_min")]
    pub election_timeout_min_ms: u64,
    #[serde(default = "default_election_max")]
    pub election_timeout_max_ms: u64,
    /// The active host stops consuming when a quorum has not acknowledged it for this long.
    /// Must be shorter than the election timeout.
    #[serde(default = "default_lease")]
    pub lease_ms: u64,
    /// Bearer token for `keepwarm cluster join/leave`; membership changes are off without it.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Run with a plugin whose containers only this machine reaches (one that does not
    /// declare `cluster-wide`, e.g. Docker publishing on 127.0.0.1). A failover then re-attaches
    /// containers only if the standby is on the same machine: a machine failure loses this
    /// host's containers. Without it such a plugin is refused in cluster mode.
    #[serde(default)]
    pub local_engine: bool,
}

/// A member's PEM files: the cluster's CA, its certificate (naming `member-<id>.keepwarm`)
/// and its key. Relative paths are relative to the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSection {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClusterSection {
    /// How this member talks to the others (TLS files loaded and checked).
    pub fn transport(&self) -> Result<crate::cluster::Transport, crate::cluster::tls::TlsError> {
        use crate::cluster::tls::{MemberTls, TlsFiles};
        Ok(match &self.tls {
            Some(t) => crate::cluster::Transport::Tls(MemberTls::load(
                &TlsFiles {
                    ca: t.ca.clone(),
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                },
                self.id,
            )?),
            None => crate::cluster::Transport::insecure(self.secret.as_deref().unwrap_or_default()),
        })
    }

    /// Where `/status` is served: `status-address`, else loopback at the Raft port + 1.
    pub fn status_address(&self) -> Option<String> {
        if let Some(a) = &self.status_address {
            return Some(a.clone());
        }
        let own = self.peers.get(&self.id.to_string())?;
        let port: u16 = own.rsplit_once(':')?.1.parse().ok()?;
        Some(format!("127.0.0.1:{}", port.checked_add(1)?))
    }
}

// Chosen with `cargo bench --bench election` (see docs/architecture.md, "Failover timings"):
// the fastest setting with no spurious election idle, under load and with both cores busy.
fn default_heartbeat() -> u64 {
    30
}
fn default_election_min() -> u64 {
    100
}
fn default_election_max() -> u64 {
    200
}
fn default_lease() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InvokerSection {
    /// N of `invoker{N}`.
    #[serde(default)]
    pub instance: u32,
    pub user_memory_mb: u64,
    /// Offsets and other state.
    pub data_dir: PathBuf,
    /// JSON-lines file of finished activation records (none when absent).
    #[serde(default)]
    pub activation_log: Option<PathBuf>,
    /// The activation log rotates when it would grow past this many MiB ...
    #[serde(default = "default_activation_log_max_mb")]
    pub activation_log_max_mb: u64,
    /// ... keeping this many rotated files (`log.1` the newest).
    #[serde(default = "default_activation_log_keep")]
    pub activation_log_keep: u32,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_s: u64,
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Largest action response accepted, bytes.
    #[serde(default = "default_max_response")]
    pub max_response_bytes: usize,
    /// `collect`: read each activation's logs through the plugin into its record (OpenWhisk's
    /// DockerToActivationLogStore). `log-driver`: leave logs to the engine's log driver
    /// (OpenWhisk's LogDriverLogStore); records carry no logs and activations finish sooner.
    #[serde(default)]
    pub log_store: LogStore,
    /// What happens after a failover to an activation that may have reached a container on
    /// the host that failed (see README, "The delivery contract").
    #[serde(default)]
    pub delivery: crate::activation::Delivery,
    /// Destroy the pool's containers on shutdown (OpenWhisk's behaviour).
    #[serde(default = "yes")]
    pub destroy_on_exit: bool,
    /// On SIGTERM, how long running activations and their acknowledgements may take before
    /// the host exits anyway (what is left unacknowledged is re-read from its offset on the
    /// next start). A second SIGTERM exits at once.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout_s: u64,
    /// How often the engine's list of containers is checked against the pool: idle containers
    /// it no longer lists (an engine machine failed) are forgotten, so no activation is sent
    /// to them. The failover of an engine machine is noticed within this time.
    #[serde(default = "default_reconcile_interval")]
    pub reconcile_interval_s: u64,
    /// A drop-in directory of plugins: each `NAME.toml` (a plugin section) beside its
    /// `NAME.wasm`.
    #[serde(default)]
    pub plugins_dir: Option<PathBuf>,
    /// A single host's probe listener: `/healthz` and `/readyz` (a cluster member serves them
    /// on its `[cluster] status-address`). Off when unset.
    #[serde(default)]
    pub status_address: Option<String>,
    /// When set, the single host's `/status` and `/metrics` require it as a bearer token
    /// (as a cluster member's `[cluster] status-token`).
    #[serde(default)]
    pub status_token: Option<String>,
}

/// Where activation logs go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogStore {
    #[default]
    Collect,
    LogDriver,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KafkaSection {
    pub brokers: String,
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait_max_ms: u32,
    #[serde(default)]
    pub linger_ms: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RuntimesSection {
    /// OpenWhisk `runtimes.json`.
    pub manifest: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ActionsSection {
    /// `catalog` (a directory of action documents, the default) or `couchdb` (the
    /// controller's `whisks` database, see `[couchdb]`).
    #[serde(default)]
    pub store: StoreKind,
    /// Directory of action documents (`store = "catalog"`).
    #[serde(default)]
    pub catalog: Option<PathBuf>,
    /// Base64 keys for encrypted parameters, as upstream's `whisk.parameter-storage.aes128`
    /// and `aes256` (16 and 32 bytes).
    #[serde(default)]
    pub aes_128_key: Option<String>,
    #[serde(default)]
    pub aes_256_key: Option<String>,
}

/// Where actions or activation records are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// Actions: a catalog directory. Records: the JSON-lines activation log.
    #[default]
    Catalog,
    Couchdb,
}

/// The range each action limit must fall in (a namespace's own limits in the activation
/// message narrow it). Defaults: upstream's, except concurrency (see `action::limits`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LimitsSection {
    pub timeout_min_ms: u64,
    pub timeout_max_ms: u64,
    pub memory_min_mb: u64,
    pub memory_max_mb: u64,
    pub logs_min_mb: u64,
    pub logs_max_mb: u64,
    pub concurrency_min: u64,
    pub concurrency_max: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = crate::action::SystemLimits::default();
        LimitsSection {
            timeout_min_ms: d.timeout.min,
            timeout_max_ms: d.timeout.max,
            memory_min_mb: d.memory.min,
            memory_max_mb: d.memory.max,
            logs_min_mb: d.logs.min,
            logs_max_mb: d.logs.max,
            concurrency_min: d.concurrency.min,
            concurrency_max: d.concurrency.max,
        }
    }
}

impl LimitsSection {
    pub fn system(&self) -> crate::action::SystemLimits {
        use crate::action::limits::Range;
        crate::action::SystemLimits {
            timeout: Range {
                min: self.timeout_min_ms,
                max: self.timeout_max_ms,
            },
            memory: Range {
                min: self.memory_min_mb,
                max: self.memory_max_mb,
            },
            logs: Range {
                min: self.logs_min_mb,
                max: self.logs_max_mb,
            },
            concurrency: Range {
                min: self.concurrency_min,
                max: self.concurrency_max,
            },
        }
    }
}

/// Where activation records go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ActivationsSection {
    /// `catalog` (the default; records go to `[invoker] activation-log` when set) or
    /// `couchdb` (the `activations` database, see `[couchdb]`).
    #[serde(default)]
    pub store: StoreKind,
    /// Records waiting for CouchDB are kept on disk up to this many MB; past it the oldest
    /// are dropped with a log line and a metric.
    #[serde(default = "default_backlog_mb")]
    pub backlog_mb: u64,
}

fn default_backlog_mb() -> u64 {
    256
}

fn default_activation_log_max_mb() -> u64 {
    256
}
fn default_activation_log_keep() -> u32 {
    5
}
fn default_idle_timeout() -> u64 {
    600
}
fn default_max_in_flight() -> usize {
    64
}
fn default_cluster() -> String {
    "keepwarm".into()
}
fn default_drain_timeout() -> u64 {
    60
}
fn default_reconcile_interval() -> u64 {
    2
}
fn default_max_response() -> usize {
    1 << 20
}
fn yes() -> bool {
    true
}
fn default_fetch_wait() -> u32 {
    2
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Variables the command line reads (`keepwarm cluster`, `keepwarm status`), not overrides.
const CLI_VARIABLES: &[&str] = &[
    "KEEPWARM_ADMIN_TOKEN",
    "KEEPWARM_STATUS_TOKEN",
    "KEEPWARM_TLS_DIR",
];

const SECTIONS: &[&str] = &[
    "invoker",
    "kafka",
    "plugin",
    "runtimes",
    "actions",
    "activations",
    "limits",
    "couchdb",
    "cluster",
];

/// The config file as a TOML table.
fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// An environment override's value read as a number or a boolean, for a setting that takes
/// one (`None`: it reads as neither).
fn env_scalar(value: &str) -> Option<toml::Value> {
    value
        .parse::<i64>()
        .map(toml::Value::Integer)
        .or_else(|_| value.parse::<bool>().map(toml::Value::Boolean))
        .or_else(|_| value.parse::<f64>().map(toml::Value::Float))
        .ok()
}

/// Deserializes `table`, where the settings named in `from_env` (`section.key`) arrived as
/// strings from the environment: each stays a string unless the setting takes a number or a
/// boolean (a secret of digits, `KEEPWARM_CLUSTER_SECRET=12345678`, stays a string).
fn deserialize_with_env<T: serde::de::DeserializeOwned>(
    mut table: toml::Table,
    from_env: &[(String, String)],
) -> Result<T, String> {
    loop {
        let error = match serde_path_to_error::deserialize(toml::Value::Table(table.clone())) {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let path = error.path().to_string();
        let retyped = from_env
            .iter()
            .find(|(section, key)| format!("{section}.{key}") == path)
            .and_then(|(section, key)| {
                let slot = table.get_mut(section)?.as_table_mut()?.get_mut(key)?;
                let scalar = env_scalar(slot.as_str()?)?;
                *slot = scalar;
                Some(())
            });
        if retyped.is_none() {
            return Err(format!("{path}: {}", error.into_inner()));
        }
    }
}

/// Only the `[couchdb]` section of a config (for `keepwarm actions`), with
/// `KEEPWARM_COUCHDB_*` overrides.
pub fn couchdb_section(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<crate::couchdb::CouchConfig, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let table = read_table(path)?;
    let mut section = table
        .get("couchdb")
        .and_then(toml::Value::as_table)
        .cloned()
        .ok_or_else(|| invalid("no [couchdb] section".into()))?;
    let mut from_env = Vec::new();
    for (name, value) in env {
        if let Some(key) = name.strip_prefix("KEEPWARM_COUCHDB_") {
            let key = key.to_ascii_lowercase().replace('_', "-");
            section.insert(key.clone(), toml::Value::String(value));
            from_env.push(("couchdb".to_string(), key));
        }
    }
    let table = toml::Table::from_iter([("couchdb".to_string(), toml::Value::Table(section))]);
    #[derive(Deserialize)]
    struct Only {
        couchdb: crate::couchdb::CouchConfig,
    }
    deserialize_with_env::<Only>(table, &from_env)
        .map(|o| o.couchdb)
        .map_err(|e| invalid(format!("[couchdb] {e}")))
}

impl Config {
    /// Reads `path`, applies `KEEPWARM_*` overrides from `env`, validates, and makes relative
    /// paths relative to the config file's directory.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut table = read_table(path)?;
        let from_env = overlay_env(&mut table, env).map_err(invalid)?;
        let mut config: Config = deserialize_with_env(table, &from_env).map_err(invalid)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.gather_plugins().map_err(invalid)?;
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// The default plugin's section (the one marked `default`, else the first).
    pub fn default_plugin(&self) -> &PluginSection {
        self.plugins
            .iter()
            .find(|p| p.default)
            .unwrap_or(&self.plugins[0])
    }

    /// `[plugin]`, `[[plugins]]` and the drop-in directory's, in that order, in `plugins`.
    fn gather_plugins(&mut self) -> Result<(), String> {
        for p in &mut self.plugins {
            p.origin = format!("[[plugins]] {}", p.name);
        }
        if let Some(mut first) = self.plugin.take() {
            first.origin = "[plugin]".into();
            self.plugins.insert(0, first);
        }
        if let Some(dir) = &self.invoker.plugins_dir {
            self.plugins.extend(plugin::drop_ins(dir)?);
        }
        if self.plugins.is_empty() {
            return Err(
                "no plugin: declare one in [plugin] (name, file), in [[plugins]], or \
                        in a drop-in directory ([invoker] plugins-dir)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Relative paths in the file are relative to the file.
    fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.invoker.data_dir, &mut self.runtimes.manifest] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in self.plugin.iter_mut().chain(&mut self.plugins) {
            p.resolve_paths(base);
        }
        let tls = self.cluster.as_mut().and_then(|c| c.tls.as_mut());
        let tls_paths: Vec<&mut PathBuf> = tls
            .map(|t| vec![&mut t.ca, &mut t.cert, &mut t.key])
            .unwrap_or_default();
        for p in [
            self.invoker.activation_log.as_mut(),
            self.actions.catalog.as_mut(),
            self.invoker.plugins_dir.as_mut(),
        ]
        .into_iter()
        .flatten()
        .chain(tls_paths)
        .filter(|p| p.is_relative())
        {
            *p = base.join(&*p);
        }
    }

    /// Every rule a setting's type cannot say: the error names the setting and what to fix.
    fn validate(&self) -> Result<(), String> {
        if let Some(trace) = &self.trace {
            trace.traces_url()?;
        }
        if let Some(filter) = &self.log.filter {
            tracing_subscriber::EnvFilter::try_new(filter)
                .map_err(|e| format!("[log] filter `{filter}`: {e}"))?;
        }
        for (i, p) in self.plugins.iter().enumerate() {
            p.validate()?;
            if let Some(other) = self.plugins[..i].iter().find(|o| o.name == p.name) {
                return Err(format!(
                    "{} and {} are both named `{}`: plugin names must differ",
                    other.origin, p.origin, p.name
                ));
            }
        }
        let defaults: Vec<&str> = self
            .plugins
            .iter()
            .filter(|p| p.default)
            .map(|p| p.origin.as_str())
            .collect();
        if defaults.len() > 1 {
            return Err(format!(
                "{} all say default = true: at most one plugin may",
                defaults.join(", ")
            ));
        }
        if self.actions.store == StoreKind::Catalog && self.actions.catalog.is_none() {
            return Err(
                "[actions] catalog (a directory of action documents) is required unless store = \"couchdb\"".into(),
            );
        }
        let l = &self.limits;
        for (name, min, max) in [
            ("timeout", l.timeout_min_ms, l.timeout_max_ms),
            ("memory", l.memory_min_mb, l.memory_max_mb),
            ("logs", l.logs_min_mb, l.logs_max_mb),
            ("concurrency", l.concurrency_min, l.concurrency_max),
        ] {
            if min > max {
                return Err(format!(
                    "[limits] {name}: the minimum ({min}) is above the maximum ({max})"
                ));
            }
        }
        let wants_couch = self.actions.store == StoreKind::Couchdb
            || self.activations.store == StoreKind::Couchdb;
        if wants_couch && self.couchdb.is_none() {
            return Err("store = \"couchdb\" needs a [couchdb] section with its url".into());
        }
        if let Err(e) = crate::action::ParameterEncryption::new(
            self.actions.aes_128_key.as_deref(),
            self.actions.aes_256_key.as_deref(),
        ) {
            return Err(format!("[actions] {e}"));
        }
        if let Some(c) = &self.couchdb {
            if let Err(e) = crate::couchdb::CouchDb::open(c, "whisks") {
                return Err(format!("[couchdb] {e}"));
            }
        }
        let zero = [
            ("[invoker] user-memory-mb", self.invoker.user_memory_mb == 0),
            ("[invoker] max-in-flight", self.invoker.max_in_flight == 0),
            (
                "[invoker] max-response-bytes",
                self.invoker.max_response_bytes == 0,
            ),
            ("[invoker] idle-timeout-s", self.invoker.idle_timeout_s == 0),
            (
                "[invoker] reconcile-interval-s",
                self.invoker.reconcile_interval_s == 0,
            ),
            (
                "[invoker] activation-log-max-mb",
                self.invoker.activation_log_max_mb == 0,
            ),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(format!("{name} must be more than 0"));
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
            let zero = [("heartbeat-ms", c.heartbeat_ms), ("lease-ms", c.lease_ms)];
            if let Some((name, _)) = zero.iter().find(|(_, v)| *v == 0) {
                return Err(format!("[cluster] {name} must be more than 0"));
            }
        }
        Ok(())
    }
}

/// Puts every `KEEPWARM_<SECTION>_<KEY>` variable into `table` as a string (the CLI's own
/// variables aside) and returns the (section, key) pairs it set.
fn overlay_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, String> {
    let mut from_env = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("KEEPWARM_") else {
            continue;
        };
        if CLI_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            return Err(format!(
                "environment variable {name} names no section; use KEEPWARM_<{}>_<KEY>",
                SECTIONS.join("|").to_uppercase()
            ));
        };
        let key = rest[section.len() + 1..].replace('_', "-");
        table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("[{section}] is not a table"))?
            .insert(key.clone(), toml::Value::String(value));
        from_env.push((section.to_string(), key));
    }
    Ok(from_env)
}

impl ClusterSection {
    /// The `[cluster]` rules: this host among the peers, timings that keep the lease safe,
    /// TLS or an explicit `insecure` with a secret, a status address.
    fn validate(&self) -> Result<(), String> {
        if !self.peers.contains_key(&self.id.to_string()) {
            return Err(format!(
                "[cluster] peers has no entry for this host's id {}",
                self.id
            ));
        }
        if let Some(bad) = self.peers.keys().find(|k| k.parse::<u64>().is_err()) {
            return Err(format!(
                "[cluster] peers key `{bad}` is not a node id (a number)"
            ));
        }
        if self.lease_ms >= self.election_timeout_min_ms {
            return Err(format!(
                "[cluster] lease-ms ({}) must be shorter than election-timeout-min-ms ({})",
                self.lease_ms, self.election_timeout_min_ms
            ));
        }
        // A lease extended from a late-read metrics report reaches at most 2 × lease-ms
        // past the real acknowledgement (see lease.rs); followers refuse other candidates
        // for election-timeout-max-ms.
        if 2 * self.lease_ms >= self.election_timeout_max_ms {
            return Err(format!(
                "[cluster] twice lease-ms ({}) must be shorter than election-timeout-max-ms ({})",
                2 * self.lease_ms,
                self.election_timeout_max_ms
            ));
        }
        match (&self.tls, self.insecure) {
            (Some(_), true) => {
                return Err("[cluster] has both tls and insecure = true: choose one".into())
            }
            (None, false) => {
                return Err(
                    "[cluster] members talk mutual TLS: set [cluster.tls] ca, cert and key \
                     (`keepwarm cluster certs --members 1,2,3 --out DIR` makes them), or \
                     insecure = true with a secret on a trusted network"
                        .into(),
                )
            }
            (Some(_), false) => {
                if let Err(e) = self.transport() {
                    return Err(format!("[cluster.tls] {e}"));
                }
            }
            (None, true) => {
                if self.secret.as_ref().is_none_or(|s| s.len() < 8) {
                    return Err(
                        "[cluster] insecure = true needs a secret of at least 8 characters".into(),
                    );
                }
            }
        }
        if self.status_address().is_none() {
            return Err(
                "[cluster] status-address is needed: this host's peers entry has no port to derive it from".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
