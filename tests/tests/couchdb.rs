//! keepwarm against a CouchDB-protocol server (pouchdb-server with authentication on): action
//! documents in every shape the controller stores, upstream's error semantics, activation
//! records in `activations`, and a CouchDB outage under load. Real `keepwarm run` processes,
//! tansu, Docker and the server.

use base64::Engine;
use keepwarm::action::ParameterEncryption;
use keepwarm_tests::cluster::Cluster;
use keepwarm_tests::couchdb::{all_docs, CouchServer};
use keepwarm_tests::host::{Host, HostOptions};
use keepwarm_tests::kafka::Controller;
use serde_json::{json, Value};
use sha2::Digest;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);
const AES256: &str = "j5rLzhtxwzPyUVUy8/p8XJmBoKeDoSzNJP1SITJEY9E=";

fn opts(instance: u32, server: &CouchServer, actions_from_couch: bool) -> HostOptions {
    let run = std::process::id() % 10_000;
    let mut o = HostOptions::new(instance * 10_000 + run, 0, 1024);
    if actions_from_couch {
        o.actions = format!("store = \"couchdb\"\naes-256-key = \"{AES256}\"");
    }
    o.extra = format!("[activations]\nstore = \"couchdb\"\n{}", server.toml("kw_"));
    o
}

/// A shell action that prints its arguments (and one environment variable) as JSON.
fn script(extra: &str) -> String {
    format!("#!/bin/sh\n{extra}echo \"{{\\\"args\\\": $1, \\\"key\\\": \\\"$__OW_API_KEY\\\"}}\"\n")
}

fn source(name: &str, exec: Value) -> Value {
    json!({ "namespace": "guest", "name": name, "exec": exec,
            "limits": { "timeout": 10000, "memory": 128, "logs": 10, "concurrency": 1 } })
}

fn result(c: &mut Controller, id: &str) -> (Value, usize) {
    let acks = c.wait_for(id, WAIT);
    let record = Controller::record(&acks);
    (record["response"].clone(), acks.len())
}

#[test]
fn actions_from_couchdb_run_in_every_stored_shape_with_upstream_error_semantics() {
    let rt = Runtime::new().unwrap();
    let server = CouchServer::start();
    let whisks = rt.block_on(server.db("kw_", "whisks"));
    let put = |doc: Value| {
        rt.block_on(keepwarm::action::put::put(&whisks, &doc))
            .unwrap()
    };

    put(source(
        "inline",
        json!({ "kind": "shell:1", "code": script("echo a log line\n") }),
    ));
    // over the 16 KiB threshold: a real CouchDB attachment
    let padding = "# padding\n".repeat(2000);
    let big = put(source(
        "big",
        json!({ "kind": "shell:1", "code": script(&padding) }),
    ));
    assert!(big.attachment.is_some());
    // binary: a base64 executable
    let b64 = base64::engine::general_purpose::STANDARD.encode(script(""));
    put(source("binary", json!({ "kind": "shell:1", "code": b64 })));
    // upstream's inlined attachment: the code base64url in the name, with its sha256
    let code = script("");
    let mem = |digest: String| {
        json!({ "kind": "shell:1", "binary": false, "code": {
            "attachmentName": format!("mem:{}", base64::engine::general_purpose::URL_SAFE.encode(&code)),
            "attachmentType": "text/plain; charset=UTF-8", "length": code.len(), "digest": digest } })
    };
    let digest = format!("sha256-{}", hex(&sha2::Sha256::digest(code.as_bytes())));
    put(source("mem", mem(digest)));
    put(source("corrupt", mem(format!("sha256-{}", "0".repeat(64)))));
    // an encrypted default parameter
    let enc = ParameterEncryption::new(None, Some(AES256)).unwrap();
    let mut secret = source("secret", json!({ "kind": "shell:1", "code": script("") }));
    secret["parameters"] = json!([{ "key": "password", "value": enc.encrypt("aes-256", &json!("hunter2")).unwrap(), "encryption": "aes-256" }]);
    put(secret);
    put(source(
        "blackbox",
        json!({ "kind": "blackbox", "image": "keepwarm/action-runtime:latest", "code": script("") }),
    ));
    let mut heavy = source("heavy", json!({ "kind": "shell:1", "code": script("") }));
    heavy["limits"]["memory"] = json!(1024);
    put(heavy);
    // a document of another entity type at an action's id
    rt.block_on(whisks.put(
        "guest/trigger",
        &json!({ "entityType": "trigger", "namespace": "guest", "name": "trigger" }),
    ))
    .unwrap();

    let o = opts(7501, &server, true);
    let mut c = rt.block_on(Controller::new(o.instance, &format!("t{}", o.instance)));
    let host = Host::start(&o);
    let mut ids = Vec::new();
    for name in ["inline", "big", "binary", "mem", "blackbox"] {
        let id = rt.block_on(c.invoke("guest", name, true, json!({"n": 1})));
        let (response, _) = result(&mut c, &id);
        assert_eq!(
            response["statusCode"],
            0,
            "{name}: {response}\n{}",
            host.log()
        );
        assert_eq!(response["result"]["args"], json!({"n": 1}), "{name}");
        assert_eq!(
            response["result"]["key"],
            json!("23bc46b1-71f6-4ed5-8c54-816aa4f8c502:secret")
        );
        ids.push(id);
    }
    // the encrypted parameter arrives decrypted; so does a locked argument
    let id = rt.block_on(c.invoke("guest", "secret", true, json!({})));
    assert_eq!(
        result(&mut c, &id).0["result"]["args"],
        json!({"password": "hunter2"})
    );
    ids.push(id);
    let (id, mut msg) = c.message(
        "guest",
        "inline",
        true,
        json!({"pin": enc.encrypt("aes-256", &json!(1234)).unwrap()}),
    );
    msg["lockedArgs"] = json!({"pin": "aes-256"});
    // and a stale revision: upstream asks again for the latest document
    msg["revision"] = json!("1-0000000000000000000000000000000");
    rt.block_on(c.send_raw(&msg.to_string()));
    assert_eq!(
        result(&mut c, &id).0["result"]["args"],
        json!({"pin": 1234})
    );
    ids.push(id);

    // upstream's error semantics: one combined acknowledgement each
    for (name, code, error) in [
        (
            "missing",
            1,
            "Action could not be found or may have been deleted.",
        ),
        (
            "heavy",
            1,
            "memory size 1024 MB exceeds allowed threshold of 512 MB",
        ),
        (
            "trigger",
            3,
            "Action version is not compatible and cannot be invoked.",
        ),
        ("corrupt", 3, "Action could not be fetched."),
    ] {
        for blocking in [false, true] {
            let id = rt.block_on(c.invoke("guest", name, blocking, json!({})));
            let (response, acks) = result(&mut c, &id);
            assert_eq!(
                response,
                json!({"statusCode": code, "result": {"error": error}}),
                "{name}"
            );
            assert_eq!(acks, 1, "{name}: one CombinedCompletionAndResultMessage");
            ids.push(id);
        }
    }

    // every record reaches `activations` in upstream's document shape
    let records = wait_for_records(&rt, &server, &ids, WAIT);
    let first = &records[&ids[0]];
    assert_eq!(first["_id"], json!(format!("guest/{}", ids[0])));
    assert_eq!(first["entityType"], "activation");
    assert_eq!(first["name"], "inline");
    assert_eq!(first["response"]["statusCode"], 0);
    assert!(
        first["logs"].as_array().is_some_and(|l| !l.is_empty()),
        "{first}"
    );
    let missing = &records[&ids[ids.len() - 8]];
    assert_eq!(missing["duration"], 0);
    assert!(missing["annotations"]
        .as_array()
        .unwrap()
        .contains(&json!({"key": "kind", "value": "unknown"})));
    drop(host);
}

#[test]
fn a_couchdb_outage_blocks_no_acknowledgement_and_loses_no_record_across_a_restart() {
    let rt = Runtime::new().unwrap();
    let mut server = CouchServer::start();
    let o = opts(7502, &server, false);
    let mut c = rt.block_on(Controller::new(o.instance, &format!("t{}", o.instance)));
    let mut host = Host::start(&o);
    let warm = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&warm, WAIT);
    let mut ids = vec![warm];

    server.stop();
    let outage = Instant::now();
    let mut n = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        let id = rt.block_on(c.invoke("guest", "echo", true, json!({ "n": n })));
        // acknowledged while CouchDB is down
        c.wait_for(&id, Duration::from_secs(20));
        ids.push(id);
        n += 1;
        if n == 20 {
            // a restart in the middle keeps what is on disk
            assert_eq!(host.terminate(), Some(0), "{}", host.log());
            host.spawn();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(n >= 40, "only {n} activations in 30 s");
    server.start_again();
    let records = wait_for_records(&rt, &server, &ids, WAIT);
    assert_eq!(records.len(), ids.len());
    assert!(
        host.log().contains("wait on disk until CouchDB takes them"),
        "{}",
        host.log()
    );
}

#[test]
fn a_failover_in_the_middle_of_a_record_backlog_loses_no_record() {
    let rt = Runtime::new().unwrap();
    let mut server = CouchServer::start();
    let n = 7503 * 10_000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(n, &format!("t{n}")));
    let couch = format!("[activations]\nstore = \"couchdb\"\n{}", server.toml("kw_"));
    let mut cluster = Cluster::start_each(3, &HostOptions::new(n, 0, 1024), |_, o| {
        o.extra.push_str(&couch)
    });
    let first = cluster
        .active(Duration::from_secs(30))
        .expect("an active host");
    server.stop();
    let mut ids = rt.block_on(c.invoke_many("guest", "echo", 20));
    for id in &ids {
        c.wait_for(id, WAIT);
    }
    // the active host dies with its records still on its disk
    cluster.hosts[first].kill();
    let second = cluster
        .active(Duration::from_secs(20))
        .expect("a standby took over");
    assert_ne!(second, first);
    let more = rt.block_on(c.invoke_many("guest", "echo", 20));
    for id in &more {
        c.wait_for(id, WAIT);
    }
    ids.extend(more);
    // it comes back (as a standby) and CouchDB returns: both backlogs drain
    cluster.hosts[first].spawn();
    server.start_again();
    let records = wait_for_records(&rt, &server, &ids, WAIT);
    assert_eq!(records.len(), 40);
    // `/status` says so within its one-second refresh
    let drained = |h: usize| {
        cluster
            .status(h)
            .is_some_and(|s| s["activation_records"]["waiting"] == 0)
    };
    let start = Instant::now();
    while !(drained(first) && drained(second)) && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(drained(first) && drained(second));
}

#[test]
fn keepwarm_actions_put_stores_a_catalog_and_get_resolves_it() {
    let server = CouchServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keepwarm.toml");
    std::fs::write(&config, server.toml("ops_")).unwrap();
    let big = dir.path().join("big.json");
    let code = format!("#!/bin/sh\n{}echo '{{}}'\n", "# pad\n".repeat(4000));
    std::fs::write(
        &big,
        json!({ "namespace": "guest", "name": "big", "exec": { "kind": "shell:1", "code": code } })
            .to_string(),
    )
    .unwrap();
    let keepwarm = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(keepwarm_tests::keepwarm_bin())
            .arg("actions")
            .args(args)
            .output()
            .unwrap()
    };
    let catalog = keepwarm_tests::host::repo_root().join("tests/fixtures/actions");
    for path in [catalog.as_os_str(), big.as_os_str()] {
        let out = keepwarm(&[
            "put".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            path,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = keepwarm(&[
        "get".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "guest/big".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["entityType"], "action");
    assert!(doc["exec"]["code"]["attachmentName"]
        .as_str()
        .unwrap()
        .starts_with("couch:"));
    assert_eq!(
        doc["keepwarm"],
        json!({ "resolves": true, "codeBytes": code.len() })
    );
    let out = keepwarm(&[
        "get".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "guest/nope".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

fn wait_for_records(
    rt: &Runtime,
    server: &CouchServer,
    ids: &[String],
    within: Duration,
) -> std::collections::HashMap<String, Value> {
    let start = Instant::now();
    loop {
        let docs = rt.block_on(all_docs(server, "kw_activations"));
        let found: std::collections::HashMap<String, Value> = docs
            .into_iter()
            .filter_map(|d| Some((d["activationId"].as_str()?.to_owned(), d)))
            .collect();
        let missing: Vec<&String> = ids.iter().filter(|i| !found.contains_key(*i)).collect();
        if missing.is_empty() {
            return found;
        }
        assert!(
            start.elapsed() < within,
            "{} of {} records never reached CouchDB, e.g. {}",
            missing.len(),
            ids.len(),
            missing[0]
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
