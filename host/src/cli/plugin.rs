//! `keepwarm plugin inspect | call | check`: a plugin component on its own, outside a host.

use super::{json, SandboxArgs};
use crate::factory::{CallError, ContainerFactory, Pairs};
use crate::plugin::{Limits, PluginRuntime, PluginSpec, RouteTls, WasmFactory};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

pub(super) async fn inspect(file: PathBuf, sandbox: SandboxArgs) -> i32 {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let (component, sha256) = match runtime
        .load_component(&file, None, crate::plugin::Priority::Now)
        .await
    {
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
        "contract": factory.contract(),
        "imports": imports,
        "exports": exports,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    0
}

pub(super) async fn call(
    file: PathBuf,
    operation: &str,
    arg: Option<&str>,
    state: Option<PathBuf>,
    sandbox: SandboxArgs,
) -> i32 {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let state: Arc<dyn crate::plugin::PluginState> = match state {
        Some(path) => match crate::plugin::FileState::open(&path) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("error: --state {}: {e}", path.display());
                return 2;
            }
        },
        None => Arc::new(crate::plugin::MemoryState::default()),
    };
    let factory = match WasmFactory::load_with_state(&runtime, spec(file, sandbox), state).await {
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

/// Runs `operation` with its JSON argument; the result in the command line's JSON (see
/// [`json`]).
async fn dispatch(f: &WasmFactory, operation: &str, arg: Option<&str>) -> Dispatched {
    let needs = |what: &str| {
        format!(
            "`{operation}` needs {what}, e.g. {}",
            json::example(operation)
        )
    };
    let arg_of = |what: &str| arg.ok_or_else(|| needs(what));
    // an id may be given bare or as a JSON string
    let id = |what: &str| {
        arg_of(what).map(|a| serde_json::from_str::<String>(a).unwrap_or_else(|_| a.to_owned()))
    };
    fn shown<T: serde::Serialize>(r: Result<T, CallError>) -> Result<serde_json::Value, CallError> {
        r.map(|v| serde_json::to_value(v).expect("json"))
    }
    Ok(match operation {
        "describe" => Ok(serde_json::to_value(f.info()).expect("json")),
        "create" => {
            let spec: json::Spec = json::parse(operation, arg_of("a container-spec")?)?;
            shown(f.create(spec.into()).await.map(json::Shown::from))
        }
        "attach" => {
            let known: json::Shown = json::parse(operation, arg_of("a container")?)?;
            shown(f.attach(known.into()).await.map(json::Shown::from))
        }
        "list-containers" => {
            let labels: std::collections::BTreeMap<String, String> = match arg {
                Some(a) => json::parse(operation, a)?,
                None => Default::default(),
            };
            let listed = f
                .list_containers(labels.into_iter().collect::<Pairs>())
                .await;
            shown(listed.map(|l| l.into_iter().map(json::Shown::from).collect::<Vec<_>>()))
        }
        "pause" => shown(f.pause(&id("a container id")?).await),
        "resume" => shown(f.resume(&id("a container id")?).await),
        "destroy" => shown(f.destroy(&id("a container id")?).await),
        "logs" => {
            let a = arg_of("a container id")?;
            let a = if a.trim_start().starts_with('{') {
                json::parse::<json::LogsArg>(operation, a)?
            } else {
                json::LogsArg::of(id("a container id")?)
            };
            shown(f.logs(&a.id, a.since_ms, a.max_bytes).await)
        }
        other => {
            return Err(format!(
                "unknown operation `{other}`; use describe, create, attach, list-containers, \
                 pause, resume, destroy or logs"
            ))
        }
    })
}

pub(super) async fn check(
    file: PathBuf,
    options: &crate::check::CheckOptions,
    json: bool,
    sandbox: SandboxArgs,
) -> i32 {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let spec = spec(file, sandbox);
    eprintln!(
        "checking {} (the first compile of a component takes a while)",
        spec.file.display()
    );
    let report = match crate::check::run(&runtime, spec, options).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the plugin does not load: {e}");
            return 2;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print!("{}", report.text());
    }
    i32::from(!report.passed())
}
