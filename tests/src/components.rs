//! Builds the plugins workspace once per test process and finds its components.

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

fn plugins_target() -> PathBuf {
    std::env::var_os("KW_PLUGINS_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/keepwarm/plugins-target"))
}

/// Path of a built component, e.g. `component("keepwarm_docker")`. The first call builds the
/// whole plugins workspace (a no-op when it is up to date).
pub fn component(crate_file_stem: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new("cargo")
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
        config: Vec::new(),
        limits: Limits::default(),
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

/// The `keepwarm` binary built next to this test executable.
pub fn keepwarm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("keepwarm");
    assert!(
        bin.exists(),
        "{} missing: run cargo build first",
        bin.display()
    );
    bin
}
