//! The plugin runtime against real sockets and built test plugins: routing, sandbox limits,
//! fault isolation, concurrency and load errors.

use keepwarm::factory::{CallError, ContainerFactory, ContainerSpec, FactoryError};
use keepwarm::plugin::{Limits, PluginError, WasmFactory};
use keepwarm_tests::engine::FakeEngine;
use keepwarm_tests::{component, keepwarm_bin, load, load_with, runtime, spec};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn probe_spec(name: &str, image: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: image.into(),
        memory_mb: 128,
        cpu_shares: None,
        env: vec![("k".into(), "v".into())],
        labels: Vec::new(),
        network: None,
        port: 8080,
    }
}

fn plugin_fault(r: Result<impl std::fmt::Debug, CallError>) -> PluginError {
    match r {
        Err(CallError::Fault(e)) => e.downcast::<PluginError>().expect("a plugin's fault"),
        other => panic!("expected a plugin fault, got {other:?}"),
    }
}

#[tokio::test]
async fn routes_by_authority_to_a_unix_socket_with_method_path_and_host() {
    let engine = FakeEngine::start("pong", Duration::ZERO).await;
    let probe = load("probe", &[("engine", &engine.route())]).await;

    let c = probe
        .create(probe_spec("http", "http://engine/v1.41/_ping?x=1"))
        .await
        .unwrap();
    assert_eq!(c.handle, "pong");
    assert_eq!(c.labels, vec![("status".to_string(), "200".to_string())]);
    probe
        .create(probe_spec("post", "http://engine/containers/create"))
        .await
        .unwrap();

    let seen = engine.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1.41/_ping?x=1");
    assert_eq!(seen[0].host, "engine");
    assert_eq!(seen[1].method, "POST");
    assert_eq!(seen[1].path, "/containers/create");
    assert_eq!(seen[1].body, r#"[["k","v"]]"#);
}

#[tokio::test]
async fn reuses_connections_to_an_engine() {
    let engine = FakeEngine::start("ok", Duration::ZERO).await;
    let probe = load("probe", &[("engine", &engine.route())]).await;
    for _ in 0..10 {
        probe
            .create(probe_spec("http", "http://engine/_ping"))
            .await
            .unwrap();
    }
    assert_eq!(engine.seen.lock().unwrap().len(), 10);
    assert_eq!(engine.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn routes_to_tcp_on_loopback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        let body = if head.starts_with("GET /master/state ") {
            "tcp-ok"
        } else {
            "bad"
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).await.unwrap();
    });
    let route = format!("http://{addr}");
    let probe = load("probe", &[("mesos", &route)]).await;
    let c = probe
        .create(probe_spec("http", "http://mesos/master/state"))
        .await
        .unwrap();
    assert_eq!(c.handle, "tcp-ok");
}

#[tokio::test]
async fn refuses_an_unmapped_authority_and_says_how_to_map_it() {
    let probe = load("probe", &[]).await;
    let err = probe
        .create(probe_spec("http", "http://elsewhere/x"))
        .await
        .unwrap_err();
    match err.factory_error() {
        Some(FactoryError::Unavailable(m)) => {
            assert!(m.contains("`elsewhere`"), "{m}");
            assert!(m.contains("not routed"), "{m}");
            assert!(m.contains("routes"), "{m}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn stops_a_looping_plugin_at_its_deadline_and_carries_on() {
    let mut s = spec("probe", component("probe"), &[]);
    s.limits = Limits {
        call_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let probe = load_with(s).await;
    let start = Instant::now();
    let fault = plugin_fault(probe.create(probe_spec("loop", "")).await);
    assert!(
        matches!(
            fault,
            PluginError::Timeout {
                operation: "create",
                limit_ms: 300,
                ..
            }
        ),
        "{fault}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert!(fault.to_string().contains("`probe`"));
    // A fresh instance serves the next call.
    assert_eq!(probe.create(probe_spec("ok", "")).await.unwrap().id, "ok");
}

#[tokio::test]
async fn caps_memory_of_a_plugin_that_allocates_without_end() {
    let mut s = spec("probe", component("probe"), &[]);
    s.limits.memory_mb = 32;
    let probe = load_with(s).await;
    let fault = plugin_fault(probe.create(probe_spec("alloc", "")).await);
    assert!(
        matches!(fault, PluginError::MemoryCap { limit_mb: 32, .. }),
        "{fault}"
    );
    assert_eq!(probe.create(probe_spec("ok", "")).await.unwrap().id, "ok");
}

#[tokio::test]
async fn a_panic_fails_only_that_call() {
    let probe = load("probe", &[]).await;
    let fault = plugin_fault(probe.create(probe_spec("panic", "")).await);
    match &fault {
        PluginError::Trap {
            plugin, operation, ..
        } => {
            assert_eq!(plugin, "probe");
            assert_eq!(*operation, "create");
        }
        other => panic!("expected a trap, got {other}"),
    }
    assert_eq!(
        probe.create(probe_spec("after", "")).await.unwrap().id,
        "after"
    );
}

#[tokio::test]
async fn concurrent_calls_on_a_concurrent_plugin_overlap() {
    let engine = FakeEngine::start("slow", Duration::from_millis(300)).await;
    let probe = load("probe", &[("engine", &engine.route())]).await;
    assert!(probe.info().capabilities.concurrent);
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let p = probe.clone();
            tokio::spawn(async move { p.create(probe_spec("http", "http://engine/slow")).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert!(
        engine.max_in_flight.load(Ordering::SeqCst) >= 2,
        "calls ran one at a time"
    );
}

#[tokio::test]
async fn state_is_shared_by_a_plugins_instances() {
    let probe = load("probe", &[]).await;
    assert_eq!(
        probe.create(probe_spec("state", "")).await.unwrap().handle,
        "1"
    );
    assert_eq!(
        probe.create(probe_spec("state", "")).await.unwrap().handle,
        "2"
    );
}

#[tokio::test]
async fn factory_errors_come_back_typed() {
    let probe = load("probe", &[]).await;
    let err = probe
        .create(probe_spec("missing", "nope:1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.factory_error(),
        Some(&FactoryError::ImageMissing("nope:1".into()))
    );
    let err = probe.destroy("gone").await.unwrap_err();
    assert!(matches!(
        err.factory_error(),
        Some(FactoryError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_failing_init_is_reported_at_load() {
    let mut s = spec("probe", component("probe"), &[]);
    s.config = vec![("fail-init".into(), "bad setting".into())];
    let err = WasmFactory::load(runtime(), s).await.unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Factory {
                operation: "init",
                error: FactoryError::InvalidSpec(_),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn bad_files_fail_with_a_message_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "corrupt.wasm",
            b"\0asm\x0d\x00\x01\x00garbage",
            "not a valid component",
        ),
        ("text.wasm", b"hello world", "not a WebAssembly file"),
        (
            "core.wasm",
            b"\0asm\x01\x00\x00\x00",
            "core WebAssembly module",
        ),
        (
            "empty-world.wasm",
            b"\0asm\x0d\x00\x01\x00",
            "does not implement world",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = WasmFactory::load(runtime(), spec("bad", path.clone(), &[]))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
        assert!(err.contains(expected), "{name}: {err}");
    }
    let missing = dir.path().join("missing.wasm");
    let err = WasmFactory::load(runtime(), spec("bad", missing, &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("missing.wasm"), "{err}");
}

#[tokio::test]
async fn bad_routes_are_rejected_at_load() {
    let s = spec("probe", component("probe"), &[("docker", "ftp://x")]);
    let err = WasmFactory::load(runtime(), s)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("docker = ftp://x"), "{err}");
}

#[test]
fn cli_call_runs_the_example_plugin_and_reports_exit_codes() {
    let example = component("plugin_static");
    let ok = std::process::Command::new(keepwarm_bin())
        .args(["plugin", "call"])
        .arg(&example)
        .args(["create", r#"{"name":"a","image":"x","memory-mb":128}"#])
        .args(["--config", "proxies=127.0.0.1:9001"])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(out["address"], "127.0.0.1:9001");

    let factory_error = std::process::Command::new(keepwarm_bin())
        .args(["plugin", "call"])
        .arg(&example)
        .args([
            "destroy",
            "127.0.0.1:9999",
            "--config",
            "proxies=127.0.0.1:9001",
        ])
        .output()
        .unwrap();
    assert_eq!(factory_error.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&factory_error.stdout).contains("not-found"));

    let trap = std::process::Command::new(keepwarm_bin())
        .args(["plugin", "call"])
        .arg(component("probe"))
        .args([
            "create",
            r#"{"name":"loop","image":"","memory-mb":1}"#,
            "--timeout-ms",
            "200",
        ])
        .output()
        .unwrap();
    assert_eq!(trap.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&trap.stderr).contains("deadline"));

    let inspect = std::process::Command::new(keepwarm_bin())
        .args(["plugin", "inspect"])
        .arg(&example)
        .args(["--config", "proxies=127.0.0.1:9001"])
        .output()
        .unwrap();
    assert_eq!(inspect.status.code(), Some(0));
    let out: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(out["describe"]["name"], "static");
    assert!(out["imports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i.as_str().unwrap().starts_with("keepwarm:factory/state")));
}

#[tokio::test]
async fn a_container_outside_the_allowed_addresses_is_refused_destroyed_and_never_contacted() {
    // a listener the test owns, on a loopback address outside the default (127.0.0.1)
    let foreign = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let address = foreign.local_addr().unwrap().to_string();
    let state = std::sync::Arc::new(keepwarm::plugin::MemoryState::default());
    let probe = WasmFactory::load_with_state(
        runtime(),
        spec("probe", component("probe"), &[]),
        state.clone(),
    )
    .await
    .unwrap();
    let refused = plugin_fault(probe.create(probe_spec("foreign", &address)).await);
    let text = refused.to_string();
    assert!(matches!(refused, PluginError::Address { .. }), "{text}");
    assert!(
        text.contains(&address) && text.contains("127.0.0.1/32"),
        "{text}"
    );
    use keepwarm::plugin::PluginState;
    assert_eq!(state.get("destroyed").as_deref(), Some(&b"foreign"[..]));
    // attach answers the same way; an operator's list admits what it names
    let mut allowed = spec("probe", component("probe"), &[]);
    allowed.allowed_addresses = Some(vec![format!(
        "127.0.0.2:{}",
        foreign.local_addr().unwrap().port()
    )]);
    let probe = load_with(allowed).await;
    let c = probe.create(probe_spec("foreign", &address)).await.unwrap();
    assert_eq!(c.address, address);
    let elsewhere = plugin_fault(probe.create(probe_spec("foreign", "127.0.0.1:8080")).await);
    assert!(
        matches!(elsewhere, PluginError::Address { .. }),
        "{elsewhere}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(200), foreign.accept()).await;
    assert!(
        accepted.is_err(),
        "the host connected to the foreign address"
    );
}

#[tokio::test]
async fn a_pinned_plugin_loads_only_with_its_sha256() {
    let file = component("probe");
    let sum = std::process::Command::new("sha256sum")
        .arg(&file)
        .output()
        .unwrap();
    let digest = String::from_utf8(sum.stdout).unwrap()[..64].to_owned();
    let mut pinned = spec("probe", file.clone(), &[]);
    pinned.sha256 = Some(digest.to_uppercase());
    let probe = load_with(pinned).await;
    assert_eq!(probe.sha256(), digest);
    let mut wrong = spec("probe", file, &[]);
    wrong.sha256 = Some("0".repeat(64));
    let err = WasmFactory::load(runtime(), wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&digest) && err.contains(&"0".repeat(64)),
        "{err}"
    );
}

#[tokio::test]
async fn a_plugin_that_floods_its_state_is_refused_at_the_limit_and_keeps_what_it_stored() {
    use keepwarm::plugin::{MemoryState, PluginState, StateLimits};
    let flood = |limits: StateLimits| async move {
        let state = std::sync::Arc::new(MemoryState::default());
        let mut s = spec("probe", component("probe"), &[]);
        s.limits.state = limits;
        let probe = WasmFactory::load_with_state(runtime(), s, state.clone())
            .await
            .unwrap();
        // the probe puts 1 KiB values under 14-byte keys until a put is refused
        let first = probe.create(probe_spec("flood", "")).await.unwrap();
        let again = probe.create(probe_spec("flood", "")).await.unwrap();
        let ordinary = probe.create(probe_spec("plain", "")).await;
        assert!(ordinary.is_ok(), "the plugin carries on: {ordinary:?}");
        (first.handle, again.handle, state.usage())
    };

    let bytes = StateLimits {
        max_keys: 10_000,
        max_bytes: 64 << 10,
    };
    let (first, again, usage) = flood(bytes).await;
    eprintln!("flood against state-max-kb: {first}");
    let (stored, why) = first.split_once(' ').unwrap();
    assert_eq!(stored, ((64 << 10) / (14 + 1024)).to_string(), "{first}");
    assert!(
        why.contains("state-max-kb") && why.contains("65536"),
        "{why}"
    );
    assert!(again.starts_with("0 "), "a full state stays full: {again}");
    assert_eq!(usage.keys, 63);
    assert!(usage.bytes <= 64 << 10, "{usage:?}");

    let keys = StateLimits {
        max_keys: 20,
        max_bytes: 1 << 20,
    };
    let (first, _, usage) = flood(keys).await;
    assert!(
        first.starts_with("20 ") && first.contains("state-max-keys"),
        "{first}"
    );
    assert_eq!(usage.keys, 20);
}

/// A plugin built against the first contract (`keepwarm:factory@0.1.0`, whose `put` returns
/// nothing) still loads and runs; a write past the state limits, which it cannot be told
/// about, fails that call naming the limit, keeps what was stored, and the plugin carries on.
#[tokio::test]
async fn a_plugin_of_the_first_contract_loads_and_a_refused_write_fails_only_its_call() {
    use keepwarm::plugin::{MemoryState, PluginState, StateLimits};
    let state = std::sync::Arc::new(MemoryState::default());
    let mut s = spec("static-v0.1", component("contract_v0_1"), &[]);
    s.config = vec![(
        "proxies".into(),
        "127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003".into(),
    )];
    // the proxy list and one claim
    s.limits.state = StateLimits {
        max_keys: 2,
        max_bytes: 1 << 20,
    };
    let old = WasmFactory::load_with_state(runtime(), s, state.clone())
        .await
        .unwrap();
    assert_eq!(old.contract(), "0.1.0");
    assert_eq!(old.info().name, "static-v0.1");

    let first = old.create(probe_spec("first", "")).await.unwrap();
    assert_eq!(first.address, "127.0.0.1:9001");
    let refused = plugin_fault(old.create(probe_spec("second", "")).await);
    let why = refused.to_string();
    assert!(
        why.contains("state write refused") && why.contains("state-max-keys"),
        "{why}"
    );
    assert_eq!(state.usage().keys, 2, "nothing more was stored");

    // a fresh instance carries on with what was stored: the one claim, paused and resumed
    let listed = old.list_containers(Vec::new()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    old.pause(&first.id).await.unwrap();
    old.resume(&first.id).await.unwrap();
    old.destroy(&first.id).await.unwrap();
    let again = old.create(probe_spec("third", "")).await.unwrap();
    assert_eq!(again.address, "127.0.0.1:9001");
}

/// A component naming a contract version no host release had is refused at load, naming it
/// and the versions this host loads.
#[tokio::test]
async fn a_plugin_of_an_unknown_contract_version_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(component("contract_v0_1")).unwrap();
    // same length, so the component stays well-formed: 0.1.0 → 9.1.0 in every name
    let renamed = replace_all(&wasm, b"keepwarm:factory/", b"@0.1.0", b"@9.1.0");
    let file = dir.path().join("future.wasm");
    std::fs::write(&file, renamed).unwrap();
    let mut s = spec("future", file, &[]);
    s.config = vec![("proxies".into(), "127.0.0.1:9001".into())];
    let err = WasmFactory::load(runtime(), s)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("keepwarm:factory@9.1.0") && err.contains("0.2.0") && err.contains("0.1.0"),
        "{err}"
    );
}

/// `bytes` with `from` replaced by `to` wherever it follows `prefix` closely (within 40 bytes).
fn replace_all(bytes: &[u8], prefix: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut i = 0;
    while let Some(at) = find(&out[i..], prefix) {
        let start = i + at + prefix.len();
        let window = (start + 40).min(out.len());
        if let Some(v) = find(&out[start..window], from) {
            out[start + v..start + v + from.len()].copy_from_slice(to);
        }
        i = start;
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Issue 32, item 12: a rollout whose record fails (a leader change) must not leave this host
/// on a build no other member follows: the host goes back to the build it switched from, once.
#[tokio::test]
async fn a_switched_build_rolls_back_to_the_one_it_replaced() {
    use keepwarm::plugin::{HotPlugin, MemoryState, PluginRuntime};
    use keepwarm_tests::upgrade::{deploy, rebuilt};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe.wasm");
    let first = std::fs::read(component("probe")).unwrap();
    deploy(&file, &first);
    let runtime = std::sync::Arc::new(PluginRuntime::new(None).unwrap());
    let plugin = HotPlugin::load(
        runtime,
        spec("probe", file.clone(), &[]),
        std::sync::Arc::new(MemoryState::default()),
        0,
    )
    .await
    .unwrap();
    let old = plugin.sha256();
    assert!(
        !plugin.roll_back("nothing switched yet").await,
        "no build to go back to"
    );
    deploy(&file, &rebuilt(&first, "second"));
    let swap = plugin.switch(&mut [], None).await.unwrap();
    assert!(swap.swapped && swap.to != old);
    assert_eq!(plugin.sha256(), swap.to);
    assert_eq!(plugin.previous_sha256().as_deref(), Some(old.as_str()));
    assert!(plugin.roll_back("recording the build failed").await);
    assert_eq!(plugin.sha256(), old, "the build it replaced runs again");
    let last = plugin.versions().last_swap.unwrap();
    assert!(
        last.error
            .as_deref()
            .unwrap_or_default()
            .contains("rolled back"),
        "{last:?}"
    );
    assert!(!plugin.roll_back("again").await, "only once");
}
