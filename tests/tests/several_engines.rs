//! Several engines on one host, with real processes: a three-host cluster runs `shell:1` on
//! Docker (its `[plugin]`) and blackbox images on Podman (a plugin dropped into
//! `[invoker] plugins-dir`); each action's containers are on its engine, and a failover
//! re-attaches both engines' containers.

use keepwarm::clock::now_ms;
use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::components::component;
use keepwarm_tests::eventually;
use keepwarm_tests::host::{repo_root, HostOptions};
use keepwarm_tests::kafka::{annotation, Controller};
use serde_json::{json, Value};
use sha2::Digest;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

/// A container as its engine lists it: id, `keepwarm.kind`, `keepwarm.plugin`.
type Listed = (String, String, String);

/// The running containers of `cluster` on the engine `cli` (`docker` or `podman`).
fn listed(cli: &str, cluster: &str) -> BTreeSet<Listed> {
    let format = match cli {
        "docker" => r#"{{.ID}} {{.Label "keepwarm.kind"}} {{.Label "keepwarm.plugin"}}"#,
        _ => r#"{{.ID}} {{index .Labels "keepwarm.kind"}} {{index .Labels "keepwarm.plugin"}}"#,
    };
    let filter = format!("label=keepwarm.cluster={cluster}");
    let out = Command::new(cli)
        .args(["ps", "--no-trunc", "--filter", &filter, "--format", format])
        .output()
        .unwrap_or_else(|e| panic!("{cli} ps: {e}"));
    assert!(out.status.success(), "{cli} ps: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(str::to_owned);
            Some((
                f.next()?,
                f.next().unwrap_or_default(),
                f.next().unwrap_or_default(),
            ))
        })
        .collect()
}

/// Removes the cluster's Podman containers however the test ends (the hosts remove Docker's).
struct PodmanCleanup(String);

impl Drop for PodmanCleanup {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "podman ps -aq --filter label=keepwarm.cluster={} | xargs -r podman rm -f >/dev/null 2>&1",
                self.0
            ))
            .status();
    }
}

/// `echo` (shell:1) and `boxed` (a blackbox on the runtime image) in a catalog of their own.
fn catalog(dir: &Path) {
    let guest = dir.join("guest");
    std::fs::create_dir_all(&guest).unwrap();
    std::fs::copy(
        repo_root().join("tests/fixtures/actions/guest/echo.json"),
        guest.join("echo.json"),
    )
    .unwrap();
    let boxed = json!({
        "namespace": "guest", "name": "boxed", "version": "0.0.1",
        "exec": { "kind": "blackbox", "image": "keepwarm/action-runtime:latest",
                  "code": "#!/bin/sh\necho \"{\\\"boxed\\\": $1}\"\n", "binary": false },
        "limits": { "timeout": 10000, "memory": 128, "logs": 10, "concurrency": 1 }
    });
    std::fs::write(guest.join("boxed.json"), boxed.to_string()).unwrap();
}

/// Runs `action` and returns its record.
fn run(rt: &Runtime, c: &mut Controller, action: &str, params: Value) -> Value {
    let id = rt.block_on(c.invoke("guest", action, true, params));
    Controller::record(&c.wait_for(&id, WAIT))
}

fn sha256(file: &Path) -> String {
    hex(&sha2::Sha256::digest(std::fs::read(file).unwrap()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn two_engines_in_one_host_each_action_on_its_own_and_both_reattached_after_a_failover() {
    let rt = Runtime::new().unwrap();
    let n = 7801 * 10_000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(n, &format!("e{n}")));

    let dir = tempfile::tempdir().unwrap();
    let drop_ins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    std::fs::copy(component("keepwarm_podman"), drop_ins.join("podman.wasm")).unwrap();
    std::fs::write(
        drop_ins.join("podman.toml"),
        "routes = { podman = \"unix:///run/podman/podman.sock\" }\nimages = [\"keepwarm/*\"]\n",
    )
    .unwrap();
    let actions = dir.path().join("actions");
    catalog(&actions);

    let mut opts = HostOptions::new(n, 1, 2048);
    opts.plugins_dir = Some(drop_ins.clone());
    opts.actions = format!("catalog = \"{}\"", actions.display());
    let mut cluster = Cluster::start_from(3, &opts);
    let _podman = PodmanCleanup(cluster.label.clone());
    let first = cluster
        .active(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no host became active\n{}", cluster.hosts[0].log()));

    // every member shows both plugins, with the digests of their files
    let status = cluster.status(first).unwrap();
    let plugins = status["plugins"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = plugins.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["docker", "podman"], "{status}");
    assert_eq!(
        plugins[0]["sha256"],
        sha256(&component("keepwarm_docker")),
        "{status}"
    );
    assert_eq!(plugins[1]["sha256"], sha256(&drop_ins.join("podman.wasm")));
    assert_eq!(plugins[1]["images"], json!(["keepwarm/*"]));
    assert!(plugins
        .iter()
        .all(|p| !p["version"].as_str().unwrap_or("").is_empty()));
    let out = Command::new(keepwarm_tests::keepwarm_bin())
        .args(["status", "--address", &cluster.status_addresses[first]])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("plugin docker ")
            && text.contains("plugin podman ")
            && text.contains("serves images keepwarm/*"),
        "{text}"
    );

    // each action on its engine
    let echo = run(&rt, &mut c, "echo", json!({"n": 1}));
    assert_eq!(
        echo["response"]["result"],
        json!({"echo": {"n": 1}}),
        "{echo}"
    );
    let boxed = run(&rt, &mut c, "boxed", json!({"n": 2}));
    assert_eq!(
        boxed["response"]["result"],
        json!({"boxed": {"n": 2}}),
        "{boxed}"
    );
    let engines = || {
        (
            listed("docker", &cluster.label),
            listed("podman", &cluster.label),
        )
    };
    let (docker, podman) = eventually(
        Duration::from_secs(20),
        || format!("containers {:?}\n{}", engines(), cluster.hosts[first].log()),
        || {
            let (docker, podman) = engines();
            // echo's warm container and the replaced prewarm; boxed's
            (docker.len() == 2 && podman.len() == 1).then_some((docker, podman))
        },
    );
    assert!(
        docker
            .iter()
            .all(|(_, kind, plugin)| kind == "shell:1" && plugin == "docker"),
        "{docker:?}"
    );
    assert!(
        podman
            .iter()
            .all(|(_, kind, plugin)| kind == "blackbox" && plugin == "podman"),
        "{podman:?}"
    );

    // every container replicated, with its plugin
    let replicated = || {
        cluster
            .status(first)
            .and_then(|s| s["containers"].as_u64())
            .unwrap_or(0)
    };
    eventually(
        Duration::from_secs(20),
        || format!("replicated {}", replicated()),
        || (replicated() == 3).then_some(()),
    );

    // failover: both engines' containers re-attached, each through its own plugin
    let killed_at = now_ms();
    cluster.hosts[first].kill();
    let second = cluster
        .active(Duration::from_secs(5))
        .expect("no standby took over");
    let status = cluster.status(second).unwrap();
    let takeover = &status["last_takeover"];
    eprintln!(
        "failover with two engines: consuming after {} ms; takeover {takeover}",
        status["consuming_since_ms"].as_i64().unwrap() - killed_at
    );
    assert_eq!(takeover["reattached"], 3, "{status}");
    assert_eq!(takeover["lost"], 0, "{status}");
    for (action, params, expected) in [
        ("echo", json!({"n": 3}), json!({"echo": {"n": 3}})),
        ("boxed", json!({"n": 4}), json!({"boxed": {"n": 4}})),
    ] {
        let record = run(&rt, &mut c, action, params);
        assert_eq!(record["response"]["result"], expected, "{record}");
        assert_eq!(
            annotation(&record, "keepwarm").unwrap()["start"],
            "warm",
            "{action} after the failover: {record}\n{}",
            cluster.hosts[second].log()
        );
    }
    // the same containers on both engines: none created or destroyed by the failover
    assert_eq!(engines(), (docker, podman));
}
