//! The same engine in Rust and in Python: the in-memory engines `keepwarm plugin new` makes
//! (`--lang rust`, `--lang python`), built from an empty directory as an author builds them,
//! then loaded by the host's runtime. Reports, Python against Rust in one run: build time,
//! component size, first compile (an empty compile cache), cached load (compile cache hit,
//! instantiate, `init`, `describe`: what every new instance costs), and the per-call overhead
//! of `list-containers` and a `create` + `destroy` pair.

use keepwarm::factory::{ContainerFactory, ContainerSpec};
use keepwarm::plugin::{MemoryState, PluginRuntime, WasmFactory};
use keepwarm_tests::components::{keepwarm_bin, python_tools};
use keepwarm_tests::spec;
use keepwarm_tests::stats::compare;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn sh(dir: &Path, script: &str) -> Duration {
    let path = format!(
        "{}:{}{}",
        keepwarm_bin().parent().unwrap().display(),
        python_tools()
            .map(|d| format!("{}:", d.display()))
            .unwrap_or_default(),
        std::env::var("PATH").unwrap_or_default()
    );
    let started = Instant::now();
    let out = Command::new("bash")
        .args(["-ec", script])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
    started.elapsed()
}

/// Builds both engines; their components.
fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let rust = sh(
        dir,
        "keepwarm plugin new rs-engine >/dev/null && cd rs-engine && cargo build -q --release",
    );
    let python = sh(
        dir,
        "keepwarm plugin new py-engine --lang python >/dev/null && cd py-engine && \
         componentize-py -d wit -w container-factory componentize app -o py_engine.wasm >/dev/null",
    );
    println!(
        "build from `plugin new`: rust {:.1} s, python {:.1} s (python / rust {:.2}x)",
        rust.as_secs_f64(),
        python.as_secs_f64(),
        python.as_secs_f64() / rust.as_secs_f64()
    );
    (
        dir.join("rs-engine/target/wasm32-wasip2/release/rs_engine.wasm"),
        dir.join("py-engine/py_engine.wasm"),
    )
}

fn spec_of(file: &Path) -> keepwarm::plugin::PluginSpec {
    spec("engine", file.to_owned(), &[])
}

async fn load(runtime: &PluginRuntime, file: &Path) -> (Duration, WasmFactory) {
    let started = Instant::now();
    let f = WasmFactory::load_with_state(runtime, spec_of(file), Arc::new(MemoryState::default()))
        .await
        .unwrap();
    (started.elapsed(), f)
}

fn container(n: usize) -> ContainerSpec {
    ContainerSpec {
        name: format!("c{n}"),
        image: "keepwarm/action-runtime:latest".into(),
        memory_mb: 128,
        cpu_shares: None,
        env: Vec::new(),
        labels: vec![("k".into(), "v".into())],
        network: None,
        port: 8080,
    }
}

/// Samples of `list-containers` and of `create` + `destroy`.
async fn calls(f: &WasmFactory) -> (Vec<Duration>, Vec<Duration>) {
    let (mut lists, mut pairs) = (Vec::new(), Vec::new());
    for n in 0..300 {
        let t = Instant::now();
        f.list_containers(vec![("k".into(), "v".into())])
            .await
            .unwrap();
        lists.push(t.elapsed());
        let t = Instant::now();
        let c = f.create(container(n)).await.unwrap();
        f.destroy(&c.id).await.unwrap();
        pairs.push(t.elapsed());
    }
    (lists, pairs)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (rust, python) = build(dir.path());
    let size = |f: &Path| std::fs::metadata(f).unwrap().len();
    println!(
        "component size: rust {} KB, python {} KB (python / rust {:.0}x)",
        size(&rust) >> 10,
        size(&python) >> 10,
        size(&python) as f64 / size(&rust) as f64
    );

    let mut first = Vec::new();
    let mut cached = Vec::new();
    let mut factories = Vec::new();
    for file in [&rust, &python] {
        // a fresh cache: the first load compiles
        let cache = tempfile::tempdir().unwrap();
        let cold = PluginRuntime::new(Some(cache.path().to_owned())).unwrap();
        first.push(load(&cold, file).await.0);
        drop(cold);
        // a new runtime on the same cache: loads from it
        let warm = PluginRuntime::new(Some(cache.path().to_owned())).unwrap();
        let mut loads = Vec::new();
        for _ in 0..5 {
            loads.push(load(&warm, file).await.0);
        }
        let (_, f) = load(&warm, file).await;
        cached.push(loads);
        factories.push((f, warm, cache));
    }
    println!(
        "first compile and load: rust {} ms, python {} ms (python / rust {:.1}x)",
        first[0].as_millis(),
        first[1].as_millis(),
        first[1].as_secs_f64() / first[0].as_secs_f64()
    );
    let python_cached = cached.pop().unwrap();
    compare(
        "cached load",
        ("python", python_cached),
        ("rust", cached.pop().unwrap()),
    );
    let (py_lists, py_pairs) = calls(&factories[1].0).await;
    let (rs_lists, rs_pairs) = calls(&factories[0].0).await;
    compare("list-containers", ("python", py_lists), ("rust", rs_lists));
    compare("create + destroy", ("python", py_pairs), ("rust", rs_pairs));
}
