//! Real `keepwarm run` processes for the end-to-end tests.

use crate::components::{component, keepwarm_bin};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `keepwarm` process with its own data directory and config.
#[derive(Debug)]
pub struct Host {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub cluster: String,
    pub instance: u32,
    prefix: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    repo()
}

/// Settings a test varies.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub instance: u32,
    pub user_memory_mb: u64,
    /// Prewarm containers of kind `shell:1` at 128 MB.
    pub prewarm: u32,
    /// The `shell:1` stem cell as the runtimes manifest writes it (e.g. with `reactive`);
    /// default: `prewarm` containers at 128 MB.
    pub stem_cell: Option<serde_json::Value>,
    /// Activations the host runs at once.
    pub max_in_flight: usize,
    /// `collect` or `log-driver`.
    pub log_store: &'static str,
    /// `[invoker] delivery`: `at-most-once` (the default) or `at-least-once`.
    pub delivery: &'static str,
    /// Appended to the config (a `[cluster]` section).
    pub extra: String,
    /// Label shared by the hosts of one cluster (default: unique to this host).
    pub cluster: Option<String>,
    /// The factory plugin (default: Docker).
    pub plugin: PluginChoice,
    /// `[invoker] plugins-dir`: more plugins, dropped in as `NAME.toml` beside `NAME.wasm`.
    pub plugins_dir: Option<PathBuf>,
    /// `[kafka] brokers` (default: the shared test broker).
    pub brokers: String,
    /// The body of `[actions]` (default: the catalog `tests/fixtures/actions`).
    pub actions: String,
    /// In a cluster, `local-engine = true` (default: every test host is on this machine and
    /// shares its Docker daemon, published on 127.0.0.1).
    pub local_engine: bool,
    /// What the process runs under (e.g. `nsenter --net=… --`: a machine of a test bed).
    pub prefix: Vec<String>,
}

/// Which plugin a host loads and how it reaches its engine.
#[derive(Debug, Clone)]
pub struct PluginChoice {
    pub name: String,
    /// The component's file stem, e.g. `keepwarm_docker`.
    pub stem: String,
    /// The body of the TOML inline table `routes = { ... }`.
    pub routes: String,
    /// The body of the TOML inline table `config = { ... }`.
    pub config: String,
    /// The component file (default: the built `stem`), e.g. a copy a test replaces.
    pub file: Option<PathBuf>,
}

impl PluginChoice {
    pub fn docker() -> PluginChoice {
        PluginChoice {
            name: "docker".into(),
            stem: "keepwarm_docker".into(),
            routes: "docker = \"unix:///var/run/docker.sock\"".into(),
            config: String::new(),
            file: None,
        }
    }
}

impl HostOptions {
    pub fn new(instance: u32, prewarm: u32, user_memory_mb: u64) -> HostOptions {
        HostOptions {
            instance,
            user_memory_mb,
            prewarm,
            stem_cell: None,
            max_in_flight: 64,
            log_store: "collect",
            delivery: "at-most-once",
            extra: String::new(),
            cluster: None,
            plugin: PluginChoice::docker(),
            plugins_dir: None,
            brokers: crate::kafka::brokers(),
            actions: format!(
                "catalog = \"{}\"",
                repo().join("tests/fixtures/actions").display()
            ),
            local_engine: true,
            prefix: Vec::new(),
        }
    }
}

impl Host {
    /// Writes a config (catalog = `tests/fixtures/actions`) and starts `keepwarm run`.
    pub fn start(opts: &HostOptions) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        // KW_KEEP_HOST_DIRS=1 keeps each host's config, data and log for a post-mortem.
        let tmp = if std::env::var_os("KW_KEEP_HOST_DIRS").is_some() {
            eprintln!("keeping host directory {}", tmp.keep().display());
            None
        } else {
            Some(tmp)
        };
        let cluster = opts
            .cluster
            .clone()
            .unwrap_or_else(|| format!("kwtest-{}-{}", std::process::id(), opts.instance));
        let runtimes = dir.join("runtimes.json");
        std::fs::write(
            &runtimes,
            serde_json::json!({
                "runtimes": { "shell": [ {
                    "kind": "shell:1",
                    "image": { "prefix": "keepwarm", "name": "action-runtime", "tag": "latest" },
                    "stemCells": if let Some(cell) = &opts.stem_cell {
                        serde_json::json!([cell])
                    } else if opts.prewarm > 0 {
                        serde_json::json!([{ "initialCount": opts.prewarm, "memory": "128 MB" }])
                    } else { serde_json::json!([]) }
                } ] },
                "blackboxes": [ { "prefix": "keepwarm", "name": "action-runtime", "tag": "latest" } ]
            })
            .to_string(),
        )
        .unwrap();
        let config = dir.join("keepwarm.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[invoker]
instance = {instance}
user-memory-mb = {mem}
data-dir = "{dir}/data"
activation-log = "{dir}/activations.jsonl"
cluster = "{cluster}"
max-in-flight = {max_in_flight}
log-store = "{log_store}"
delivery = "{delivery}"
{plugins_dir}

[kafka]
brokers = "{brokers}"

[plugin]
name = "{plugin_name}"
file = "{plugin}"
routes = {{ {routes} }}
config = {{ {plugin_config} }}
cache-dir = "{cache}"

[runtimes]
manifest = "{runtimes}"

[actions]
{actions}
{extra}
"#,
                extra = opts.extra,
                instance = opts.instance,
                mem = opts.user_memory_mb,
                max_in_flight = opts.max_in_flight,
                log_store = opts.log_store,
                delivery = opts.delivery,
                plugins_dir = opts.plugins_dir.as_ref().map_or(String::new(), |d| format!(
                    "plugins-dir = \"{}\"",
                    d.display()
                )),
                dir = dir.display(),
                brokers = opts.brokers,
                plugin = opts
                    .plugin
                    .file
                    .clone()
                    .unwrap_or_else(|| component(&opts.plugin.stem))
                    .display(),
                plugin_name = opts.plugin.name,
                routes = opts.plugin.routes,
                plugin_config = opts.plugin.config,
                cache = std::env::temp_dir().join("keepwarm-test-cache").display(),
                runtimes = runtimes.display(),
                actions = opts.actions,
            ),
        )
        .unwrap();
        let mut host = Host {
            child: None,
            dir,
            config,
            cluster,
            instance: opts.instance,
            prefix: opts.prefix.clone(),
            _tmp: tmp,
        };
        host.spawn();
        host
    }

    /// (Re)starts the process with the same config and data.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("host.log"))
            .unwrap();
        let child = crate::netbed::prefixed(&self.prefix, keepwarm_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("KW_HOST_RUST_LOG").unwrap_or_else(|_| "keepwarm=debug,info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keepwarm");
        self.child = Some(child);
    }

    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &c.id().to_string()])
                .status();
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit (after a signal sent with [`Host::signal`]).
    pub fn wait(&mut self) -> Option<i32> {
        self.child
            .take()
            .and_then(|mut c| c.wait().ok())
            .and_then(|s| s.code())
    }

    /// SIGTERM and wait for the drain to finish.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal("-TERM");
        self.child
            .take()
            .and_then(|mut c| c.wait().ok())
            .and_then(|s| s.code())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("host.log")).unwrap_or_default()
    }

    /// Activation records written by the sink.
    pub fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("activations.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        // Containers a killed host left behind.
        let cluster = self.cluster.clone();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "docker ps -aq --filter label=keepwarm.cluster={cluster} | xargs -r docker rm -f >/dev/null 2>&1"
            ))
            .status();
    }
}

/// Containers of a host's cluster that the engine has.
pub fn containers_of(cluster: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=keepwarm.cluster={cluster}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
