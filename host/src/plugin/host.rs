//! What one plugin instance's store holds: a capability-less WASI context, the routed HTTP
//! client, the memory cap and the plugin's `state` map.

use super::bindings::keepwarm::factory::state;
use super::bindings::v0_1::keepwarm::factory::state as v0_1_state;
use super::route::Outbound;
use super::state::{PluginState, StateLimits};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Caps linear memory and tables of one instance, and remembers when the cap was hit so a
/// failed call can be reported as "memory cap" rather than a bare trap.
#[derive(Debug)]
pub struct MemoryCap {
    pub max_bytes: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The `T` of `Store<T>` for plugin instances.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: Outbound,
    pub(super) cap: MemoryCap,
    state: Arc<dyn PluginState>,
    state_limits: StateLimits,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("outbound", &self.outbound)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl HostState {
    /// A store's host side: its outbound routes, its `state` with the limits it is held to,
    /// and its linear memory cap.
    pub fn new(
        outbound: Outbound,
        (state, state_limits): (Arc<dyn PluginState>, StateLimits),
        max_bytes: usize,
    ) -> HostState {
        // No preopened directories, no environment, no arguments, no sockets: a plugin reaches
        // the world only through routed wasi:http. Its stderr goes to the host's for panics.
        let wasi = WasiCtx::builder()
            .inherit_stderr()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound,
            cap: MemoryCap {
                max_bytes,
                hit: false,
            },
            state,
            state_limits,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl state::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key)
    }

    fn keys(&mut self, prefix: String) -> Vec<String> {
        self.state.keys(&prefix)
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.admit_put(key, value)
    }

    fn delete(&mut self, key: String) {
        self.state.delete(&key)
    }
}

impl HostState {
    /// Stores a plugin's write unless it would break the plugin's `state` limits.
    fn admit_put(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let replaced = self.state.get(&key).map(|v| v.len());
        let admitted = self
            .state_limits
            .admit(&key, &value, self.state.usage(), replaced);
        match admitted {
            Ok(()) => {
                self.state.put(&key, value);
                Ok(())
            }
            Err(why) => {
                tracing::warn!(plugin = %self.outbound.plugin(), "state write refused: {why}");
                Err(why)
            }
        }
    }
}

/// `keepwarm:factory@0.1.0`'s `state`: the same map. Its `put` cannot report a refusal, so a
/// write past the limits traps the call (the plugin sees its operation fail; nothing it
/// believes stored is missing) rather than being dropped in silence.
impl v0_1_state::Host for HostState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.state.get(&key)
    }

    fn put(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<()> {
        self.admit_put(key, value).map_err(|why| {
            wasmtime::Error::msg(format!(
                "state write refused: {why} (a keepwarm:factory@0.1.0 plugin cannot be told; \
                 rebuild it with this release's SDK to get the error)"
            ))
        })
    }

    fn delete(&mut self, key: String) {
        self.state.delete(&key)
    }
}
