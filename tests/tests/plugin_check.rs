//! `keepwarm plugin check`, the factory contract as a command, run on the repository's own
//! plugins against their real engines (Mesos: the master simulator, its agents running Docker
//! containers; Docker in Rust and in Python), and on the example plugin, which has no engine
//! and no images.

use keepwarm_tests::components::{component, keepwarm_bin, python_component};
use keepwarm_tests::mesos::{MesosMaster, Options};
use std::path::Path;
use std::process::Output;

fn check(stem: &str, args: &[&str]) -> Output {
    check_file(&component(stem), args)
}

fn check_file(file: &Path, args: &[&str]) -> Output {
    std::process::Command::new(keepwarm_bin())
        .args(["plugin", "check"])
        .arg(file)
        .args(args)
        .output()
        .expect("run keepwarm plugin check")
}

/// Every check passed: exit 0, a line per check, the closing count.
fn assert_passes(stem: &str, out: &Output, checks: usize) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stem}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{checks} passed, 0 failed")),
        "{stem}:\n{text}"
    );
    eprintln!("{text}");
}

#[test]
fn docker_passes() {
    let out = check(
        "keepwarm_docker",
        &["--route", "docker=unix:///var/run/docker.sock"],
    );
    assert_passes("docker", &out, 14);
}

#[test]
fn podman_passes() {
    let out = check(
        "keepwarm_podman",
        &["--route", "podman=unix:///run/podman/podman.sock"],
    );
    assert_passes("podman", &out, 14);
}

/// The Docker engine written in Python (componentize-py) passes what the Rust one does.
#[test]
fn the_python_docker_plugin_passes() {
    let file = python_component("docker");
    let out = check_file(&file, &["--route", "docker=unix:///var/run/docker.sock"]);
    assert_passes("python docker", &out, 14);
}

#[test]
fn mesos_passes_on_the_master_simulator() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let master = rt.block_on(MesosMaster::start(Options::default()));
    let route = format!("mesos=unix://{}", master.socket.display());
    let out = check("keepwarm_mesos", &["--route", &route]);
    // no pause, no logs, not concurrent: pause and logs are checked as refused
    assert_passes("mesos", &out, 13);
    drop(master);
}

#[test]
fn the_example_plugin_passes_what_applies_and_fails_what_it_breaks() {
    let proxies = "proxies=127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003";
    let out = check(
        "plugin_static",
        &["--no-proxy", "--config", proxies, "--skip", "image-missing"],
    );
    assert_passes("plugin-static", &out, 11);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("skip  proxy") && text.contains("skipped by --skip"),
        "{text}"
    );

    // it has no images, so without --skip the rule fails: exit 1, the rule and the fix named
    let out = check("plugin_static", &["--no-proxy", "--config", proxies]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  image-missing") && text.contains("--skip image-missing"),
        "{text}"
    );
    // the JSON report says the same
    let out = check(
        "plugin_static",
        &["--no-proxy", "--config", proxies, "--json"],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> = report["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["status"] == "failed")
        .filter_map(|o| o["check"].as_str())
        .collect();
    assert_eq!(failed, ["image-missing"], "{report}");

    // a plugin that does not load: exit 2
    let out = check("plugin_static", &["--no-proxy"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("proxies"),
        "{out:?}"
    );
}

/// `plugin call` once per step, the `state` kept in a file: create → list → attach → destroy.
#[test]
fn call_with_a_state_file_chains_a_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let call = |args: &[&str]| {
        let out = std::process::Command::new(keepwarm_bin())
            .args(["plugin", "call"])
            .arg(component("plugin_static"))
            .args(args)
            .args(["--config", "proxies=127.0.0.1:9001"])
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap();
        let json = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default();
        (
            out.status.code(),
            json,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let spec = r#"{"name":"c1","image":"x","memory-mb":128,"labels":{"app":"quickstart"}}"#;
    let (code, created, err) = call(&["create", spec]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(created["labels"], serde_json::json!({"app": "quickstart"}));
    let (code, listed, _) = call(&["list-containers", r#"{"app":"quickstart"}"#]);
    assert_eq!(
        (code, listed[0]["id"].clone()),
        (Some(0), created["id"].clone())
    );
    let (code, attached, err) = call(&["attach", &created.to_string()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(attached["address"], "127.0.0.1:9001");
    let id = created["id"].as_str().unwrap();
    assert_eq!(call(&["destroy", id]).0, Some(0));
    let (code, answer, _) = call(&["destroy", id]);
    assert_eq!(code, Some(1));
    assert_eq!(answer["error"]["kind"], "not-found");

    // a bad argument: the field named, an example shown, exit 2
    let (code, _, err) = call(&["create", r#"{"name":"c1","image":"x","memory-mb":"a lot"}"#]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("field `memory-mb`") && err.contains("e.g. {"),
        "{err}"
    );
    // describe: kebab-case like the WIT
    let (_, describe, _) = call(&["describe"]);
    assert_eq!(describe["capabilities"]["cluster-wide"], true, "{describe}");
}

/// A plugin built against the first contract (`keepwarm:factory@0.1.0`) passes what applies,
/// and the report says which contract it speaks.
#[test]
fn a_plugin_of_the_first_contract_passes_the_check() {
    let proxies = "proxies=127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003";
    let args = ["--no-proxy", "--config", proxies, "--skip", "image-missing"];
    let out = check("contract_v0_1", &args);
    assert_passes("contract-v0.1", &out, 11);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("keepwarm:factory@0.1.0"), "{text}");
    let mut json = args.to_vec();
    json.push("--json");
    let report: serde_json::Value =
        serde_json::from_slice(&check("contract_v0_1", &json).stdout).expect("a JSON report");
    assert_eq!(report["contract"], "0.1.0", "{report}");
}
