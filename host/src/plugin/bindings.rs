//! Host-side bindings for `wit/factory.wit`, generated once for the whole host.

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
