//! The wasmtime engine shared by every plugin: configuration, the epoch ticker that enforces
//! call deadlines, the linker with the host's imports, and the on-disk cache of precompiled
//! components.

use super::bindings::{keepwarm::factory::state, v0_1, ContainerFactoryPre};
use super::host::HostState;
use super::PluginError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

/// How often the engine's epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The engine, its linker and the component cache. One per host process.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl PluginRuntime {
    /// Builds the engine. `cache_dir` holds precompiled components; `None` disables the cache.
    pub fn new(cache_dir: Option<PathBuf>) -> anyhow::Result<PluginRuntime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        state::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        v0_1::keepwarm::factory::state::add_to_linker::<HostState, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;

        Ok(PluginRuntime {
            _ticker: EpochTicker::start(engine.clone()),
            engine,
            linker,
            cache_dir,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads, validates and compiles (or loads from cache) a plugin component, refusing it
    /// when `pin` (a sha256, hex) is given and the file's digest differs. Returns the
    /// component and the file's sha256. The compile runs off the async workers; at
    /// [`Priority::Background`] on one thread at the lowest CPU priority, so a new build
    /// staged beside a running cluster cannot starve its heartbeats (issue 32, item 12: a
    /// compile on every core of every member at once set off an election storm).
    pub async fn load_component(
        &self,
        file: &Path,
        pin: Option<&str>,
        priority: Priority,
    ) -> Result<(Component, String), PluginError> {
        let compiler = Compiler {
            engine: self.engine.clone(),
            cache_dir: self.cache_dir.clone(),
        };
        let (file, pin) = (file.to_owned(), pin.map(str::to_owned));
        let failed = file.clone();
        let compile = move || compiler.load_component(&file, pin.as_deref());
        tokio::task::spawn_blocking(move || match priority {
            Priority::Now => compile(),
            Priority::Background => in_the_background(compile),
        })
        .await
        .map_err(|e| PluginError::Load {
            file: failed,
            reason: format!("the compile did not finish: {e}"),
        })?
    }

    /// Links a component against the host's imports and checks it exports the factory, in
    /// the contract version it was built against (see [`CONTRACT_VERSIONS`]).
    pub fn prepare(&self, file: &Path, component: &Component) -> Result<Prepared, PluginError> {
        let fail = |reason: String| PluginError::Load {
            file: file.to_owned(),
            reason,
        };
        let version = contract_version(&self.engine, component)
            .unwrap_or_else(|| CONTRACT_VERSION.to_owned());
        if !CONTRACT_VERSIONS.contains(&version.as_str()) {
            return Err(fail(format!(
                "was built against keepwarm:factory@{version}; this host speaks \
                 keepwarm:factory@{} (and loads {}): rebuild it with this release's SDK \
                 (plugins/sdk)",
                CONTRACT_VERSION,
                CONTRACT_VERSIONS[1..].join(", ")
            )));
        }
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            fail(format!(
                "imports something the host does not provide (plugins may import only \
                 wasi:http/outgoing-handler, keepwarm:factory/state and the WASI basics): {e:#}"
            ))
        })?;
        let not_a_factory = |e: wasmtime::Error| {
            fail(format!(
                "does not implement world \
                 keepwarm:factory/container-factory@{version} (it must export \
                 keepwarm:factory/factory@{version}): {e:#}"
            ))
        };
        if version == "0.1.0" {
            tracing::warn!(
                file = %file.display(),
                "plugin speaks keepwarm:factory@0.1.0: loaded, but its state writes past the \
                 limits trap instead of returning an error; rebuild it with this release's SDK"
            );
            return v0_1::ContainerFactoryPre::new(pre)
                .map(Prepared::V0_1)
                .map_err(not_a_factory);
        }
        ContainerFactoryPre::new(pre)
            .map(Prepared::V0_2)
            .map_err(not_a_factory)
    }
}

/// What compiling a component needs, apart from the runtime (sent to a blocking thread).
struct Compiler {
    engine: Engine,
    cache_dir: Option<PathBuf>,
}

impl Compiler {
    /// Reads, validates and compiles (or loads from cache) a plugin component, refusing it
    /// when `pin` (a sha256, hex) is given and the file's digest differs. Returns the
    /// component and the file's sha256.
    fn load_component(
        &self,
        file: &Path,
        pin: Option<&str>,
    ) -> Result<(Component, String), PluginError> {
        let fail = |reason: String| PluginError::Load {
            file: file.to_owned(),
            reason,
        };
        let bytes = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        if let Some(pin) = pin {
            if !pin.trim().eq_ignore_ascii_case(&sha256) {
                return Err(fail(format!(
                    "its sha256 is {sha256}, but the config pins {pin}: refusing a plugin \
                     file that is not the one the operator approved"
                )));
            }
        }
        check_header(&bytes).map_err(fail)?;

        let cached = self.cache_path(&bytes);
        if let Some(path) = &cached {
            if path.exists() {
                // SAFETY: the file was written by `Component::serialize` of this same engine
                // configuration (the name carries the engine's compatibility hash and the
                // wasm's sha256) into the host's private cache directory.
                #[allow(unsafe_code)]
                match unsafe { Component::deserialize_file(&self.engine, path) } {
                    Ok(component) => return Ok((component, sha256)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), "recompiling: stale cache entry: {e}")
                    }
                }
            }
        }
        let component = Component::from_binary(&self.engine, &bytes)
            .map_err(|e| fail(format!("not a valid component: {e:#}")))?;
        if let Some(path) = cached {
            if let Err(e) = write_cache(&component, &path) {
                tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {e}");
            }
        }
        Ok((component, sha256))
    }

    fn cache_path(&self, wasm: &[u8]) -> Option<PathBuf> {
        let dir = self.cache_dir.as_ref()?;
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let hex = hex(&Sha256::digest(wasm));
        Some(dir.join(format!("{hex}-{:016x}.cwasm", engine_hash.finish())))
    }
}

/// How soon a component must be compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A host starting, a check, a command: with every core.
    Now,
    /// A build staged beside a running host: one thread at the lowest CPU priority.
    Background,
}

/// Runs `work` (a compile) on one thread at nice 19: wasmtime's parallel compilation uses
/// the rayon pool it runs in.
fn in_the_background<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "keepwarm-compile".into())
        .start_handler(|_| lowest_priority())
        .build();
    match pool {
        Ok(pool) => pool.install(work),
        Err(e) => {
            tracing::warn!("no background compile thread ({e}): compiling here");
            work()
        }
    }
}

/// Lowers the calling thread (on Linux, a thread's nice value is its own) to nice 19.
fn lowest_priority() {
    // SAFETY: gettid and setpriority take no pointers; a failure only leaves the priority
    #[allow(unsafe_code)]
    let lowered = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19)
    };
    if lowered != 0 {
        tracing::debug!(
            "the compile thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The version of the `keepwarm:factory` package (`wit/factory.wit`) this host links.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Every contract version this host loads, newest first (older ones from `wit/compat/`).
pub const CONTRACT_VERSIONS: &[&str] = &[CONTRACT_VERSION, "0.1.0"];

/// A component linked and checked against the contract version it was built for.
pub enum Prepared {
    V0_2(ContainerFactoryPre<HostState>),
    V0_1(v0_1::ContainerFactoryPre<HostState>),
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared(keepwarm:factory@{})", self.contract())
    }
}

impl Prepared {
    /// The `keepwarm:factory` version the component speaks.
    pub fn contract(&self) -> &'static str {
        match self {
            Prepared::V0_2(_) => CONTRACT_VERSION,
            Prepared::V0_1(_) => "0.1.0",
        }
    }
}

/// The `keepwarm:factory` version a component imports or exports, if it names one.
fn contract_version(engine: &wasmtime::Engine, component: &Component) -> Option<String> {
    let ty = component.component_type();
    let names: Vec<String> = ty
        .imports(engine)
        .chain(ty.exports(engine))
        .map(|(name, _)| name.to_owned())
        .collect();
    names.iter().find_map(|name| {
        let (_, version) = name.strip_prefix("keepwarm:factory/")?.split_once('@')?;
        Some(version.to_owned())
    })
}

/// A file's sha256 as `[plugin] sha256` and `/status` write it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_cache(component: &Component, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written whole and fsynced before the rename: a crash leaves the old entry or the new
    // one, never a torn file that a later start would try to load.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&component.serialize()?)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, path)?;
    crate::json_file::sync_dir(path)?;
    Ok(())
}

/// Tells apart "not wasm at all", "a core module" and "a component" before compiling, so the
/// error says what the file is and how to fix it.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("not a WebAssembly file (no \\0asm header)".into());
    }
    match (bytes[6], bytes[7]) {
        (1, 0) => Ok(()),
        (0, 0) => Err(
            "is a core WebAssembly module, not a component: build the plugin for \
                       the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
                .into(),
        ),
        (a, b) => Err(format!("unknown WebAssembly layer {a}.{b}")),
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("keepwarm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch ticker");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::check_header;

    #[test]
    fn tells_components_from_modules_and_junk() {
        assert!(check_header(b"\0asm\x0d\x00\x01\x00").is_ok());
        assert!(check_header(b"\0asm\x01\x00\x00\x00")
            .unwrap_err()
            .contains("core WebAssembly module"));
        assert!(check_header(b"#!/bin/sh\n")
            .unwrap_err()
            .contains("not a WebAssembly file"));
        assert!(check_header(b"\0asm").is_err());
    }
}
