//! Host-side bindings for `wit/factory.wit`, generated once for the whole host, and for the
//! older contract versions the host still loads (`wit/compat/`).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "container-factory",
    exports: { default: async },
    require_store_data_send: true,
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub use exports::keepwarm::factory::factory::Guest as FactoryGuest;
pub use keepwarm::factory::types as wit;

/// `keepwarm:factory@0.1.0` (`wit/compat/0.1.0/`): the first contract. It differs from 0.2.0
/// only in `state`: `put` returns nothing and there is no `keys`. Its types are structurally
/// the same, so they are mapped onto 0.2.0's and every conversion is shared.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/compat/0.1.0",
        world: "container-factory",
        imports: { "keepwarm:factory/state.put": trappable },
        exports: { default: async },
        require_store_data_send: true,
        with: {
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "keepwarm:factory/types": super::keepwarm::factory::types,
        },
    });
}
