//! The `keepwarm` command line. `main.rs` parses and calls [`run`]; tests call the same code.

use crate::factory::{CallError, ContainerFactory, Pairs};
use crate::plugin::{Limits, PluginRuntime, PluginSpec, RouteTls, WasmFactory};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod cluster;

#[derive(Debug, Parser)]
#[command(
    name = "keepwarm",
    version,
    about = "Highly available OpenWhisk invoker host"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an invoker host until SIGTERM or Ctrl-C (in-flight activations finish first).
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Show a cluster member's view: role, leader, epoch, replicated pool, last takeover.
    Status {
        /// The member's status address (`[cluster] status-address`; by default loopback at
        /// its Raft port + 1), e.g. 127.0.0.1:7002.
        #[arg(long)]
        address: String,
        /// The member's `[cluster] status-token`, when it has one.
        #[arg(long, env = "KEEPWARM_STATUS_TOKEN")]
        token: Option<String>,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make certificates, change membership.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Develop and check factory plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Action documents in CouchDB (the config's `[couchdb]`), as the controller stores them.
    #[command(subcommand)]
    Actions(ActionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// Store action documents (`wsk action get`'s shape) from a file or a directory; code
    /// over 16 KiB goes into an attachment.
    Put {
        #[arg(long)]
        config: PathBuf,
        path: PathBuf,
    },
    /// Print a stored action document and whether the invoker can resolve it.
    Get {
        #[arg(long)]
        config: PathBuf,
        /// `namespace[/package]/name`.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Print a plugin's describe() and the component's imports.
    Inspect {
        file: PathBuf,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Swap the running plugin's build for the file as it is now, on every member of a
    /// cluster (the file must be the same on each): staged everywhere, then switched once it
    /// attached every pooled container. Prints the swap; exits 1, the old build still
    /// running, when it is refused (and says why). A single host swaps on its own when the
    /// file changes.
    Reload {
        /// The plugin's name (`[plugin] name`).
        name: String,
        /// Peer address of the current leader (the active host).
        #[arg(long)]
        leader: String,
        #[command(flatten)]
        admin: cluster::AdminArgs,
    },
    /// Run init, then one operation, and print its result as JSON.
    ///
    /// Exit status: 0 success, 1 the plugin returned a factory-error, 2 trap, timeout, memory
    /// cap or bad file.
    Call {
        file: PathBuf,
        /// describe, create, attach, list-containers, pause, resume, destroy or logs.
        operation: String,
        /// The operation's argument as JSON: a container-spec for create, a container for
        /// attach, a label object for list-containers, an id for pause/resume/destroy, and
        /// {"id", "since_ms", "max_bytes"} for logs.
        arg: Option<String>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Route an authority, e.g. --route docker=unix:///var/run/docker.sock
    #[arg(long = "route", value_parser = parse_pair)]
    pub routes: Vec<(String, String)>,
    /// TLS for a route to a remote engine, from a directory in Docker's layout (ca.pem,
    /// cert.pem, key.pem), e.g. --tls docker=/etc/keepwarm/engines/engine-1
    #[arg(long = "tls", value_parser = parse_pair)]
    pub tls: Vec<(String, String)>,
    /// A key=value passed to the plugin's init.
    #[arg(long = "config", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,
    #[arg(long, default_value_t = Limits::DEFAULT_CALL_TIMEOUT_MS)]
    pub timeout_ms: u64,
    #[arg(long, default_value_t = Limits::DEFAULT_MEMORY_MB)]
    pub memory_mb: u64,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got `{s}`"))
}

/// Runs a parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Run { config } => serve(config).await,
        Command::Status {
            address,
            token,
            json,
        } => cluster::status(&address, token.as_deref(), json).await,
        Command::Cluster(command) => cluster::run(command).await,
        Command::Actions(command) => actions(command).await,
        Command::Plugin(PluginCommand::Inspect { file, sandbox }) => inspect(file, sandbox).await,
        Command::Plugin(PluginCommand::Reload {
            name,
            leader,
            admin,
        }) => cluster::reload_plugin(&admin, &leader, &name).await,
        Command::Plugin(PluginCommand::Call {
            file,
            operation,
            arg,
            sandbox,
        }) => call(file, &operation, arg.as_deref(), sandbox).await,
    }
}

fn spec(file: PathBuf, sandbox: SandboxArgs) -> PluginSpec {
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    PluginSpec {
        name,
        file,
        routes: sandbox.routes,
        tls: sandbox
            .tls
            .into_iter()
            .map(|(route, dir)| (route, RouteTls::in_dir(Path::new(&dir))))
            .collect(),
        config: sandbox.config,
        limits: Limits {
            call_timeout: Duration::from_millis(sandbox.timeout_ms),
            memory_mb: sandbox.memory_mb,
            max_instances: 1,
            state: Default::default(),
        },
        allowed_addresses: None,
        sha256: None,
    }
}

fn runtime() -> Result<PluginRuntime, i32> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("keepwarm").join("plugins"));
    PluginRuntime::new(cache).map_err(|e| {
        eprintln!("error: cannot start the wasm engine: {e:#}");
        2
    })
}

/// Prints the error and returns its exit code: 1 for a factory-error, 2 for anything else.
fn report(err: CallError) -> i32 {
    eprintln!("error: {err}");
    match err {
        CallError::Factory { error, .. } => {
            println!("{}", serde_json::json!({ "error": error }));
            1
        }
        CallError::Fault(_) | CallError::Fenced { .. } => 2,
    }
}

async fn inspect(file: PathBuf, sandbox: SandboxArgs) -> i32 {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (component, sha256) = match runtime.load_component(&file, None) {
        Ok(c) => c,
        Err(e) => return report(e.into()),
    };
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(runtime.engine())
        .map(|(n, _)| n.to_owned())
        .collect();
    let exports: Vec<String> = ty
        .exports(runtime.engine())
        .map(|(n, _)| n.to_owned())
        .collect();
    let factory = match WasmFactory::load(&runtime, spec(file, sandbox)).await {
        Ok(f) => f,
        Err(e) => return report(e),
    };
    let out = serde_json::json!({
        "describe": factory.info(),
        "sha256": sha256,
        "imports": imports,
        "exports": exports,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    0
}

async fn call(file: PathBuf, operation: &str, arg: Option<&str>, sandbox: SandboxArgs) -> i32 {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let factory = match WasmFactory::load(&runtime, spec(file, sandbox)).await {
        Ok(f) => f,
        Err(e) => return report(e),
    };
    match dispatch(&factory, operation, arg).await {
        Ok(Ok(value)) => {
            println!("{}", serde_json::to_string_pretty(&value).expect("json"));
            0
        }
        Ok(Err(e)) => report(e),
        Err(usage) => {
            eprintln!("error: {usage}");
            2
        }
    }
}

type Dispatched = Result<Result<serde_json::Value, CallError>, String>;

async fn dispatch(f: &WasmFactory, operation: &str, arg: Option<&str>) -> Dispatched {
    fn json<T: serde::de::DeserializeOwned>(op: &str, arg: Option<&str>) -> Result<T, String> {
        let arg = arg.ok_or_else(|| format!("`{op}` needs a JSON argument"))?;
        serde_json::from_str(arg).map_err(|e| format!("bad JSON argument for `{op}`: {e}"))
    }
    fn id(op: &str, arg: Option<&str>) -> Result<String, String> {
        let arg = arg.ok_or_else(|| format!("`{op}` needs a container id"))?;
        Ok(serde_json::from_str::<String>(arg).unwrap_or_else(|_| arg.to_owned()))
    }
    fn to_json<T: serde::Serialize>(
        r: Result<T, CallError>,
    ) -> Result<serde_json::Value, CallError> {
        r.map(|v| serde_json::to_value(v).expect("json"))
    }
    Ok(match operation {
        "describe" => Ok(serde_json::to_value(f.info()).expect("json")),
        "create" => to_json(f.create(json(operation, arg)?).await),
        "attach" => to_json(f.attach(json(operation, arg)?).await),
        "list-containers" => {
            let labels: std::collections::BTreeMap<String, String> = arg
                .map(|_| json(operation, arg))
                .transpose()?
                .unwrap_or_default();
            to_json(
                f.list_containers(labels.into_iter().collect::<Pairs>())
                    .await,
            )
        }
        "pause" => to_json(f.pause(&id(operation, arg)?).await),
        "resume" => to_json(f.resume(&id(operation, arg)?).await),
        "destroy" => to_json(f.destroy(&id(operation, arg)?).await),
        "logs" => {
            #[derive(serde::Deserialize)]
            struct LogsArg {
                id: String,
                #[serde(default)]
                since_ms: u64,
                #[serde(default = "default_max")]
                max_bytes: u32,
            }
            fn default_max() -> u32 {
                64 * 1024
            }
            let a: LogsArg = match arg.map(serde_json::from_str::<LogsArg>) {
                Some(Ok(a)) => a,
                _ => LogsArg {
                    id: id(operation, arg)?,
                    since_ms: 0,
                    max_bytes: default_max(),
                },
            };
            to_json(f.logs(&a.id, a.since_ms, a.max_bytes).await)
        }
        other => {
            return Err(format!(
                "unknown operation `{other}`; use describe, create, attach, list-containers, \
                 pause, resume, destroy or logs"
            ))
        }
    })
}

async fn serve(path: PathBuf) -> i32 {
    let config = match crate::config::Config::load(&path, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("signal received: draining (a second SIGTERM exits at once)");
        let _ = stop.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    match crate::invoker::run(config, stopped).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

/// One HTTP/1.1 request to a member's Raft address; the answer's status and body.
async fn actions(command: ActionsCommand) -> i32 {
    let config = match &command {
        ActionsCommand::Put { config, .. } | ActionsCommand::Get { config, .. } => config,
    };
    let db = match crate::config::couchdb_section(config, std::env::vars())
        .map_err(|e| e.to_string())
        .and_then(|c| crate::couchdb::CouchDb::open(&c, "whisks"))
    {
        Ok(db) => db,
        Err(e) => {
            eprintln!("keepwarm: {e}");
            return 2;
        }
    };
    match command {
        ActionsCommand::Put { path, .. } => {
            let sources = match crate::action::put::read_sources(&path) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("keepwarm: {e}");
                    return 2;
                }
            };
            if let Err(e) = db.ensure().await {
                eprintln!("keepwarm: database {}: {e}", db.name());
                return 1;
            }
            let mut failed = 0;
            for (file, source) in &sources {
                match crate::action::put::put(&db, source).await {
                    Ok(s) => println!(
                        "{} rev {}{}",
                        s.id,
                        s.rev,
                        s.attachment
                            .map(|a| format!(" (code in attachment {a})"))
                            .unwrap_or_default()
                    ),
                    Err(e) => {
                        eprintln!("keepwarm: {file}: {e}");
                        failed += 1;
                    }
                }
            }
            eprintln!(
                "stored {} of {} action documents in {}",
                sources.len() - failed,
                sources.len(),
                db.name()
            );
            i32::from(failed > 0)
        }
        ActionsCommand::Get { id, .. } => match crate::action::put::get(db, &id).await {
            Ok(doc) => {
                println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
                i32::from(doc["keepwarm"]["resolves"] != true)
            }
            Err(e) => {
                eprintln!("keepwarm: {e}");
                1
            }
        },
    }
}
