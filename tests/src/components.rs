//! Builds what the tests run from the current source, once per test process: the plugins
//! workspace (its components) and the `keepwarm` binary. Nothing is taken from an earlier
//! run's build output without cargo checking it is up to date.

use keepwarm::plugin::{Limits, PluginRuntime, PluginSpec, WasmFactory};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned()
}

/// Where the plugins workspace builds: `KW_PLUGINS_TARGET`, else `plugins` under
/// `CARGO_TARGET_DIR`, else the workspace's own `plugins/target` (as `make plugins` and the
/// example configs expect). `scripts/lib.sh` picks the same.
pub fn plugins_target() -> PathBuf {
    if let Some(dir) = std::env::var_os("KW_PLUGINS_TARGET") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("plugins"),
        None => repo_root().join("plugins/target"),
    }
}

/// Path of a built component, e.g. `component("keepwarm_docker")`. The first call builds the
/// whole plugins workspace (a no-op when it is up to date).
pub fn component(crate_file_stem: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet"])
            .current_dir(repo_root().join("plugins"))
            .env("CARGO_TARGET_DIR", plugins_target())
            .status()
            .expect("run cargo to build the plugins");
        assert!(status.success(), "building the plugins workspace failed");
    });
    let path = plugins_target()
        .join("wasm32-wasip2/release")
        .join(format!("{crate_file_stem}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// The version of componentize-py the Python plugins are built with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The directory holding `componentize-py` when `scripts/setup.sh` installed it into its
/// own virtualenv (it was not on `PATH`).
pub fn python_tools() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let bin = PathBuf::from(home)
        .join(".cache/keepwarm")
        .join(format!("componentize-py-{COMPONENTIZE_PY}"))
        .join("bin");
    bin.join("componentize-py").exists().then_some(bin)
}

/// The component of the Python plugin in `plugins/python/<dir>/` (its `app.py` and modules),
/// built with componentize-py once per test process into `<plugins target>/python/`.
pub fn python_component(dir: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>> =
        OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(file) = built.get(dir) {
        return file.clone();
    }
    let out = plugins_target().join("python");
    std::fs::create_dir_all(&out).expect("plugins target");
    let file = out.join(format!("{dir}.wasm"));
    let tool = python_tools()
        .map(|d| d.join("componentize-py"))
        .unwrap_or_else(|| PathBuf::from("componentize-py"));
    let status = Command::new(&tool)
        .args([
            "-d",
            "../../../wit",
            "-w",
            "container-factory",
            "componentize",
            "app",
            "-o",
        ])
        .arg(&file)
        .current_dir(repo_root().join("plugins/python").join(dir))
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("run {} (scripts/setup.sh installs it): {e}", tool.display()));
    assert!(status.success(), "building the Python plugin {dir} failed");
    built.insert(dir.to_owned(), file.clone());
    file
}

/// One runtime per test process (as in the host), with a compiled-component cache.
pub fn runtime() -> &'static PluginRuntime {
    static RT: OnceLock<PluginRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        let cache = std::env::temp_dir().join("keepwarm-test-cache");
        PluginRuntime::new(Some(cache)).expect("wasm engine")
    })
}

/// A plugin spec with default limits.
pub fn spec(name: &str, file: PathBuf, routes: &[(&str, &str)]) -> PluginSpec {
    PluginSpec {
        name: name.to_owned(),
        file,
        routes: routes
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        tls: Vec::new(),
        config: Vec::new(),
        limits: Limits::default(),
        allowed_addresses: None,
        sha256: None,
    }
}

/// Loads a built plugin with the given routes.
pub async fn load(stem: &str, routes: &[(&str, &str)]) -> Arc<WasmFactory> {
    load_with(spec(stem, component(stem), routes)).await
}

pub async fn load_with(spec: PluginSpec) -> Arc<WasmFactory> {
    Arc::new(
        WasmFactory::load(runtime(), spec)
            .await
            .unwrap_or_else(|e| panic!("load plugin: {e}")),
    )
}

/// The `keepwarm` binary, built from the current source by the first call in this process
/// (`cargo build -p keepwarm --bin keepwarm`, a no-op when up to date) into the target
/// directory and profile this executable was built in. `cargo test` builds only the
/// packages' own binaries, never another package's, so nothing else guarantees it.
pub fn keepwarm_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("current exe");
            // <target>/<profile>/{deps,examples}/<exe>
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the executable lies in <target>/<profile>/<dir>");
            let target = profile_dir.parent().expect("target dir");
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let mut cargo = Command::new(env!("CARGO"));
            cargo
                .args(["build", "--quiet", "-p", "keepwarm", "--bin", "keepwarm"])
                .current_dir(repo_root())
                .env("CARGO_TARGET_DIR", target);
            if release {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("run cargo to build keepwarm");
            assert!(status.success(), "building the keepwarm binary failed");
            let bin = profile_dir.join("keepwarm");
            assert!(bin.exists(), "{} was not built", bin.display());
            bin
        })
        .clone()
}
