//! The `keepwarm` command line. `main.rs` parses and calls [`run`]; tests call the same code.

use crate::plugin::Limits;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

mod cluster;
mod json;
mod new;
mod plugin;

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

/// Where `keepwarm run` reads its config without `--config` (the package installs it).
pub const DEFAULT_CONFIG: &str = "/etc/keepwarm/keepwarm.toml";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an invoker host until SIGTERM or Ctrl-C (in-flight activations finish first).
    Run {
        /// The host's config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
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
        /// The operation's argument as JSON, named as in the WIT (kebab-case), labels and env
        /// as objects: a container-spec for create ({"name":"c1","image":"…","memory-mb":256,
        /// "labels":{"k":"v"}}), a container for attach (as create printed it), a label object
        /// for list-containers, an id for pause/resume/destroy, and {"id":"…","since-ms":0,
        /// "max-bytes":65536} (or an id) for logs.
        arg: Option<String>,
        /// Keep the plugin's `state` in this JSON file across calls (created when missing),
        /// so create → list-containers → attach → destroy can be chained; without it every
        /// call starts with an empty `state`.
        #[arg(long)]
        state: Option<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Make a plugin project that builds and passes `keepwarm plugin check` as made: an
    /// in-memory engine to replace with calls to yours, the SDK and the contract (`wit/`)
    /// copied in, a README with the build and check commands.
    New {
        /// The plugin's name (lowercase letters, digits, `-`, `_`): the directory, the crate
        /// and the component (`target/wasm32-wasip2/release/NAME.wasm`, `-` as `_`).
        name: String,
        /// The language of the project: `rust` (cargo) or `python` (componentize-py).
        #[arg(long, default_value = "rust", value_parser = ["rust", "python"])]
        lang: String,
        /// Where to make it.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Replace the SDK copied into a plugin project (`keepwarm-plugin-sdk/`) with this
    /// keepwarm's, e.g. to move the plugin to a newer contract.
    Sdk {
        /// The plugin project's directory.
        project: PathBuf,
    },
    /// Check a plugin against the factory contract on the engine its routes reach: create,
    /// the action proxy, list by label, a second instance attaching (shared `state`), pause
    /// and logs as declared, destroy and not-found rules, a missing image, concurrency,
    /// deadlines. Prints what passed, failed and was skipped, and destroys what it created.
    ///
    /// Exit status: 0 every check passed, 1 some failed, 2 the plugin did not load.
    Check {
        file: PathBuf,
        /// The image containers are created from (it runs an OpenWhisk action proxy).
        #[arg(long, default_value = "keepwarm/action-runtime:latest")]
        image: String,
        /// The engine's containers run no action proxy the check can reach: skip `/init` and
        /// `/run`.
        #[arg(long)]
        no_proxy: bool,
        /// A check that does not apply (e.g. --skip image-missing for an engine without
        /// images); repeatable.
        #[arg(long)]
        skip: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
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
impl Cli {
    /// `keepwarm run`: it sets up its logging from the config it reads.
    pub fn runs_a_host(&self) -> bool {
        matches!(self.command, Command::Run { .. })
    }
}

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
        Command::Plugin(PluginCommand::Inspect { file, sandbox }) => {
            plugin::inspect(file, sandbox).await
        }
        Command::Plugin(PluginCommand::Reload {
            name,
            leader,
            admin,
        }) => cluster::reload_plugin(&admin, &leader, &name).await,
        Command::Plugin(PluginCommand::Call {
            file,
            operation,
            arg,
            state,
            sandbox,
        }) => plugin::call(file, &operation, arg.as_deref(), state, sandbox).await,
        Command::Plugin(PluginCommand::New { name, lang, dir }) => new_plugin(&dir, &name, &lang),
        Command::Plugin(PluginCommand::Sdk { project }) => {
            if !project.join("Cargo.toml").exists() {
                eprintln!(
                    "error: {} has no Cargo.toml: name a plugin project",
                    project.display()
                );
                return 2;
            }
            match new::rust(&project, "", true) {
                Ok(_) => {
                    println!("replaced {}/keepwarm-plugin-sdk", project.display());
                    0
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    2
                }
            }
        }
        Command::Plugin(PluginCommand::Check {
            file,
            image,
            no_proxy,
            skip,
            json,
            sandbox,
        }) => {
            let options = crate::check::CheckOptions {
                image,
                proxy: !no_proxy,
                skip,
            };
            plugin::check(file, &options, json, sandbox).await
        }
    }
}

/// `keepwarm plugin new`: the project, and the commands that build and check it.
fn new_plugin(dir: &std::path::Path, name: &str, lang: &str) -> i32 {
    let made = match lang {
        "python" => new::python(dir, name),
        _ => new::rust(dir, name, false),
    };
    let made = match made {
        Ok(made) => made,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let lib = name.replace('-', "_");
    println!(
        "made {}: a plugin that builds and checks as it is",
        made.display()
    );
    println!("  cd {}", made.display());
    if lang == "python" {
        println!("  componentize-py -d wit -w container-factory componentize app -o {lib}.wasm");
        println!("  keepwarm plugin check {lib}.wasm --no-proxy");
    } else {
        println!("  cargo build --release");
        println!("  keepwarm plugin check target/wasm32-wasip2/release/{lib}.wasm --no-proxy");
    }
    0
}

async fn serve(path: PathBuf) -> i32 {
    let config = match crate::config::Config::load(&path, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            crate::telemetry::text();
            eprintln!("error: {e}");
            return 2;
        }
    };
    let telemetry = match crate::telemetry::init(&config.log, config.trace.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
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
        crate::service::stopping();
        let _ = stop.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    let watchdog = crate::service::watch();
    let result = crate::invoker::run(config, stopped).await;
    if let Some(w) = watchdog {
        w.abort();
    }
    drop(telemetry);
    match result {
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
