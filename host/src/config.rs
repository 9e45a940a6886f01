//! The TOML config, validated up front. Unknown keys are errors; every key can be overridden
//! by an environment variable `KEEPWARM_<SECTION>_<KEY>` (dashes become underscores), as
//! container deployments expect.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub invoker: InvokerSection,
    pub kafka: KafkaSection,
    pub plugin: PluginSection,
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

fn default_heartbeat() -> u64 {
    50
}
fn default_election_min() -> u64 {
    150
}
fn default_election_max() -> u64 {
    300
}
fn default_lease() -> u64 {
    100
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
        config.validate().map_err(invalid)?;
        Ok(config)
    }

    /// Relative paths in the file are relative to the file.
    fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.invoker.data_dir,
            &mut self.plugin.file,
            &mut self.runtimes.manifest,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        let tls = self.cluster.as_mut().and_then(|c| c.tls.as_mut());
        let mut tls_paths: Vec<&mut PathBuf> = tls
            .map(|t| vec![&mut t.ca, &mut t.cert, &mut t.key])
            .unwrap_or_default();
        for t in self.plugin.tls.values_mut() {
            tls_paths.extend(
                [&mut t.cert_dir, &mut t.ca, &mut t.cert, &mut t.key]
                    .into_iter()
                    .flatten(),
            );
        }
        for p in [
            self.invoker.activation_log.as_mut(),
            self.actions.catalog.as_mut(),
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
        for (route, tls) in &self.plugin.tls {
            tls.files(route)?;
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
            ("[plugin] call-timeout-ms", self.plugin.call_timeout_ms == 0),
            ("[plugin] memory-mb", self.plugin.memory_mb == 0),
            ("[plugin] max-instances", self.plugin.max_instances == 0),
            ("[plugin] state-max-keys", self.plugin.state_max_keys == 0),
            ("[plugin] state-max-kb", self.plugin.state_max_kb == 0),
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
        if !self.plugin.file.exists() {
            return Err(format!(
                "[plugin] file {} does not exist (build the plugins: make plugins)",
                self.plugin.file.display()
            ));
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
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        std::fs::write(dir.join("plugin.wasm"), b"").unwrap();
        let p = dir.join("kw.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    const OK: &str = r#"
[invoker]
user-memory-mb = 1024
data-dir = "data"
[kafka]
brokers = "127.0.0.1:9092"
[plugin]
name = "docker"
file = "plugin.wasm"
routes = { docker = "unix:///var/run/docker.sock" }
[runtimes]
manifest = "runtimes.json"
[actions]
catalog = "actions"
"#;

    #[test]
    fn loads_with_defaults_and_env_overrides() {
        let dir = std::env::temp_dir().join(format!("kw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = write(&dir, OK);
        let env = vec![
            (
                "KEEPWARM_KAFKA_BROKERS".to_string(),
                "127.0.0.2:9093".to_string(),
            ),
            (
                "KEEPWARM_INVOKER_USER_MEMORY_MB".to_string(),
                "4096".to_string(),
            ),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let c = Config::load(&p, env).unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.2:9093");
        assert_eq!(c.invoker.user_memory_mb, 4096);
        assert_eq!(c.kafka.fetch_wait_max_ms, 2);
        assert_eq!(c.invoker.data_dir, dir.join("data"));

        let bad = write(&dir, &OK.replace("brokers =", "brokerz ="));
        let e = Config::load(&bad, Vec::new()).unwrap_err().to_string();
        assert!(e.contains("brokerz"), "{e}");
        assert!(e.contains("kw.toml"), "{e}");
        let e = Config::load(&p, vec![("KEEPWARM_NOPE_X".into(), "1".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("KEEPWARM_NOPE_X"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn environment_strings_stay_strings_unless_the_setting_takes_a_number() {
        let dir = std::env::temp_dir().join(format!("kw-config-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = format!(
            "{OK}[cluster]\nid = 1\ninsecure = true\npeers = {{ 1 = \"127.0.0.1:7000\" }}\n"
        );
        let p = write(&dir, &cluster);
        let var = |k: &str, v: &str| (k.to_string(), v.to_string());
        let c = Config::load(
            &p,
            vec![
                var("KEEPWARM_CLUSTER_SECRET", "12345678"),
                var("KEEPWARM_CLUSTER_HEARTBEAT_MS", "40"),
                var("KEEPWARM_INVOKER_DESTROY_ON_EXIT", "false"),
                var("KEEPWARM_INVOKER_CLUSTER", "true"),
                var("KEEPWARM_ADMIN_TOKEN", "not-an-override"),
                var("KEEPWARM_STATUS_TOKEN", "not-an-override"),
            ],
        )
        .unwrap();
        let section = c.cluster.unwrap();
        assert_eq!(section.secret.as_deref(), Some("12345678"));
        assert_eq!(section.heartbeat_ms, 40);
        assert!(!c.invoker.destroy_on_exit);
        assert_eq!(c.invoker.cluster, "true");
        let e = Config::load(&p, vec![var("KEEPWARM_CLUSTER_HEARTBEAT_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.heartbeat-ms"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_cluster_talks_tls_unless_insecure_is_said_with_a_secret() {
        let dir = std::env::temp_dir().join(format!("kw-config-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = |extra: &str| {
            format!("{OK}[cluster]\nid = 1\npeers = {{ 1 = \"127.0.0.1:7000\" }}\n{extra}")
        };
        let error = |text: &str| {
            Config::load(&write(&dir, text), Vec::new())
                .unwrap_err()
                .to_string()
        };
        let e = error(&cluster(""));
        assert!(
            e.contains("mutual TLS") && e.contains("keepwarm cluster certs"),
            "{e}"
        );
        let e = error(&cluster("insecure = true\n"));
        assert!(e.contains("at least 8 characters"), "{e}");
        let e = error(&cluster("insecure = true\nsecret = \"short\"\n"));
        assert!(e.contains("at least 8 characters"), "{e}");
        let both = cluster(
            "insecure = true\nsecret = \"long-enough\"\ntls = { ca = \"a\", cert = \"b\", key = \"c\" }\n",
        );
        assert!(error(&both).contains("choose one"));
        let e = error(&cluster(
            "tls = { ca = \"missing.pem\", cert = \"missing.pem\", key = \"missing.pem\" }\n",
        ));
        assert!(
            e.contains("[cluster.tls]") && e.contains("missing.pem"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn engine_tls_is_a_cert_dir_or_named_files_relative_to_the_config() {
        let dir = std::env::temp_dir().join(format!("kw-config-route-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |tls: &str| {
            Config::load(
                &write(&dir, &format!("{OK}[plugin.tls.docker]\n{tls}")),
                Vec::new(),
            )
        };
        let c = load("cert-dir = \"engines/e1\"\n").unwrap();
        let files = c.plugin.tls["docker"].files("docker").unwrap();
        assert_eq!(files.ca, dir.join("engines/e1/ca.pem"));
        assert_eq!(files.key, Some(dir.join("engines/e1/key.pem")));
        let c = load("ca = \"/pki/ca.pem\"\nserver-name = \"engine-1\"\n").unwrap();
        let files = c.plugin.tls["docker"].files("docker").unwrap();
        assert_eq!(
            (files.cert, files.server_name.as_deref()),
            (None, Some("engine-1"))
        );
        for (tls, says) in [
            ("cert-dir = \"e\"\nca = \"ca.pem\"\n", "not both"),
            ("server-name = \"e\"\n", "set cert-dir"),
            ("ca = \"ca.pem\"\ncert = \"c.pem\"\n", "both cert and key"),
        ] {
            let e = load(tls).unwrap_err().to_string();
            assert!(e.contains("[plugin.tls.docker]") && e.contains(says), "{e}");
        }
    }

    #[test]
    fn zero_limits_are_refused() {
        let dir = std::env::temp_dir().join(format!("kw-config-zero-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = write(&dir, OK);
        for (var, name) in [
            ("KEEPWARM_INVOKER_MAX_IN_FLIGHT", "max-in-flight"),
            ("KEEPWARM_PLUGIN_CALL_TIMEOUT_MS", "call-timeout-ms"),
            ("KEEPWARM_PLUGIN_MAX_INSTANCES", "max-instances"),
            ("KEEPWARM_INVOKER_USER_MEMORY_MB", "user-memory-mb"),
            ("KEEPWARM_PLUGIN_STATE_MAX_KEYS", "state-max-keys"),
            ("KEEPWARM_PLUGIN_STATE_MAX_KB", "state-max-kb"),
        ] {
            let e = Config::load(&p, vec![(var.to_string(), "0".to_string())])
                .unwrap_err()
                .to_string();
            assert!(e.contains(name) && e.contains("more than 0"), "{e}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn couchdb_stores_need_a_couchdb_section_and_keys_must_be_valid() {
        let dir = std::env::temp_dir().join(format!("kw-config-couch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let couch = OK.replace("catalog = \"actions\"", "store = \"couchdb\"");
        let e = Config::load(&write(&dir, &couch), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("[couchdb]"), "{e}");
        let with = format!("{couch}[couchdb]\nurl = \"http://127.0.0.1:5984\"\n");
        let c = Config::load(&write(&dir, &with), Vec::new()).unwrap();
        assert_eq!(c.actions.store, StoreKind::Couchdb);
        assert_eq!(c.couchdb.as_ref().unwrap().db_prefix, "whisk_local_");
        let bad_key = with.replace(
            "store = \"couchdb\"",
            "store = \"couchdb\"\naes-256-key = \"c2hvcnQ=\"",
        );
        let e = Config::load(&write(&dir, &bad_key), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("aes-256"), "{e}");
        let limits = format!("{OK}[limits]\nmemory-max-mb = 2048\n");
        let c = Config::load(&write(&dir, &limits), Vec::new()).unwrap();
        assert_eq!(c.limits.system().memory.max, 2048);
        assert_eq!(c.limits.system().memory.min, 128);
        let inverted = format!("{OK}[limits]\nmemory-max-mb = 64\n");
        let e = Config::load(&write(&dir, &inverted), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("[limits] memory"), "{e}");
        let no_catalog = OK.replace("catalog = \"actions\"", "");
        let e = Config::load(&write(&dir, &no_catalog), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("catalog"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
