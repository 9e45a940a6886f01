//! A single keepwarm host as an OpenWhisk invoker, end to end: a real `keepwarm run`
//! process, the tansu broker, the Docker plugin and real action containers. The test plays
//! the controller.

use keepwarm_tests::host::{containers_of, Host, HostOptions, PluginChoice};
use keepwarm_tests::kafka::{annotation, Controller};
use serde_json::json;
use std::time::Duration;
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

fn start(rt: &Runtime, opts: HostOptions) -> (Host, Controller) {
    let controller = rt.block_on(Controller::new(
        opts.instance,
        &format!("t{}", opts.instance),
    ));
    (Host::start(&opts), controller)
}

/// Topics outlive a test run in the broker: each run uses instance numbers (and so topics)
/// of its own, so messages a failed earlier run left behind never reach this one.
fn opts(instance: u32, prewarm: u32, user_memory_mb: u64) -> HostOptions {
    let run = std::process::id() % 10_000;
    HostOptions::new(instance * 10_000 + run, prewarm, user_memory_mb)
}

fn start_of(record: &serde_json::Value) -> String {
    annotation(record, "keepwarm").unwrap()["start"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn blocking_and_non_blocking_activations_are_acknowledged_in_openwhisk_format() {
    let rt = Runtime::new().unwrap();
    let (host, mut c) = start(&rt, opts(7101, 0, 1024));

    let blocking = rt.block_on(c.invoke("guest", "echo", true, json!({"n": 1})));
    let acks = c.wait_for(&blocking, WAIT);
    // blocking: a ResultMessage first (no `instance`), then a CompletionMessage
    assert_eq!(acks.len(), 2, "{acks:?}\n{}", host.log());
    assert!(acks[0].get("instance").is_none());
    assert_eq!(
        acks[0]["response"]["response"]["result"],
        json!({"echo": {"n": 1}})
    );
    assert_eq!(acks[0]["response"]["response"]["statusCode"], 0);
    assert!(acks[0]["transid"].is_array());
    assert_eq!(acks[1]["activationId"], blocking.as_str());
    assert_eq!(acks[1]["isSystemError"], false);
    assert_eq!(acks[1]["instance"]["instance"], host.instance);
    assert_eq!(acks[1]["instance"]["userMemory"], "1024 MB");

    // the record of a blocking activation: the result message's
    let record = &acks[0]["response"];
    assert_eq!(record["activationId"], blocking.as_str());
    assert_eq!(record["namespace"], "guest");
    assert_eq!(record["name"], "echo");
    assert_eq!(annotation(record, "path").unwrap(), "guest/echo");
    assert_eq!(annotation(record, "kind").unwrap(), "shell:1");
    assert_eq!(annotation(record, "limits").unwrap()["timeout"], 10000);
    assert!(annotation(record, "waitTime").is_some());

    let later = rt.block_on(c.invoke("guest", "echo", false, json!({"n": 2})));
    let acks = c.wait_for(&later, WAIT);
    // non-blocking: one CompletionMessage, the result only in the activation store
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0]["activationId"], later.as_str());
    assert_eq!(acks[0]["isSystemError"], false);
    assert_eq!(acks[0]["instance"]["instance"], host.instance);
    assert!(acks[0]["transid"].is_array());
    assert!(acks[0].get("response").is_none(), "{acks:?}");
    // the record is written right after the completion is published: it may come a moment
    // after the completion is received
    let records = keepwarm_tests::eventually(
        Duration::from_secs(10),
        || format!("the record in the activation log\n{}", host.log()),
        || {
            let records = host.records();
            records
                .iter()
                .any(|r| r["activationId"] == later.as_str())
                .then_some(records)
        },
    );
    let record = records
        .iter()
        .find(|r| r["activationId"] == later.as_str())
        .unwrap();
    assert_eq!(record["response"]["result"], json!({"echo": {"n": 2}}));
    // the second activation reused the warm container: no init, no new container
    assert_eq!(start_of(record), "warm");
    assert!(annotation(record, "initTime").is_none());
    assert_eq!(containers_of(&host.cluster).len(), 1);

    // logs collected through the plugin, sentinel stripped, in the sink's record
    let full = records
        .iter()
        .find(|r| r["activationId"] == later.as_str())
        .unwrap();
    let logs: Vec<String> = serde_json::from_value(full["logs"].clone()).unwrap();
    assert!(
        logs.iter().any(|l| l.contains("log line from echo")),
        "{logs:?}"
    );
    assert!(logs.iter().any(|l| l.contains("log on stderr")), "{logs:?}");
    assert!(!logs.iter().any(|l| l.contains("XXX_THE_END")), "{logs:?}");
}

/// With the engine's log driver keeping the logs (upstream's `logCollectionOutOfBand`), a
/// blocking activation gets one `CombinedCompletionAndResultMessage` and a non-blocking one
/// a `CompletionMessage`, each as soon as `/run` answered.
#[test]
fn without_log_collection_a_blocking_activation_gets_one_combined_acknowledgement() {
    let rt = Runtime::new().unwrap();
    let mut o = opts(7120, 0, 1024);
    o.log_store = "log-driver";
    let (host, mut c) = start(&rt, o);
    let blocking = rt.block_on(c.invoke("guest", "echo", true, json!({"n": 1})));
    let acks = c.wait_for(&blocking, WAIT);
    assert_eq!(acks.len(), 1, "{acks:?}\n{}", host.log());
    assert_eq!(acks[0]["instance"]["instance"], host.instance);
    assert_eq!(acks[0]["isSystemError"], false);
    assert_eq!(
        acks[0]["response"]["response"]["result"],
        json!({"echo": {"n": 1}})
    );
    assert_eq!(acks[0]["response"]["logs"], json!([]));
    let later = rt.block_on(c.invoke("guest", "echo", false, json!({"n": 2})));
    let acks = c.wait_for(&later, WAIT);
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert!(acks[0].get("response").is_none(), "{acks:?}");
    assert_eq!(acks[0]["activationId"], later.as_str());
}

/// The engine's logs are read backwards from their end (`tail`, grown while every line read
/// is newer than the activation): an activation printing more lines than the first read asks
/// for gets all of them, and a warm container's earlier activations' lines stay out.
#[test]
fn a_warm_containers_logs_hold_all_of_this_activations_lines_and_no_earlier_ones() {
    let rt = Runtime::new().unwrap();
    let (host, mut c) = start(&rt, opts(7119, 0, 1024));
    let mut ids = Vec::new();
    for run in 1..=3 {
        let id = rt.block_on(c.invoke("guest", "loud", true, json!({ "run": run })));
        let record = Controller::record(&c.wait_for(&id, WAIT));
        assert_eq!(record["response"]["result"], json!({"loud": true}));
        if run > 1 {
            assert_eq!(start_of(&record), "warm");
        }
        ids.push(id);
    }
    // the record is written after the completion, which follows the logs
    let records = keepwarm_tests::eventually(
        Duration::from_secs(10),
        || format!("every record in the activation log\n{}", host.log()),
        || {
            let records = host.records();
            ids.iter()
                .all(|id| records.iter().any(|r| r["activationId"] == id.as_str()))
                .then_some(records)
        },
    );
    for (run, id) in ids.iter().enumerate() {
        let full = records.iter().find(|r| r["activationId"] == id.as_str());
        let logs: Vec<String> =
            serde_json::from_value(full.expect("a record")["logs"].clone()).unwrap();
        let own = format!("of {{\"run\":{}}}", run + 1);
        let mine = logs.iter().filter(|l| l.ends_with(&own)).count();
        assert_eq!(mine, 600, "run {}: {} lines: {logs:?}", run + 1, logs.len());
        assert_eq!(logs.len(), 600, "run {}: lines of other runs", run + 1);
        assert!(logs[0].contains("line 1 of") && logs[599].contains("line 600 of"));
    }
}

#[test]
fn prewarmed_containers_serve_new_actions_of_their_kind() {
    let rt = Runtime::new().unwrap();
    let (host, mut c) = start(&rt, opts(7102, 2, 1024));
    for _ in 0..200 {
        if containers_of(&host.cluster).len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = containers_of(&host.cluster);
    assert_eq!(
        before.len(),
        2,
        "prewarm containers did not start\n{}",
        host.log()
    );
    let id = rt.block_on(c.invoke("guest", "other", true, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(record["response"]["result"], json!({"other": true}));
    assert_eq!(start_of(&record), "prewarm");
    assert!(annotation(&record, "initTime").is_some());
    let used = annotation(&record, "keepwarm").unwrap()["container"].clone();
    assert!(before
        .iter()
        .any(|b| used.as_str().unwrap().starts_with(b.as_str())));
}

/// A prewarm container another host initialized (a previous active host took it just before
/// it died, before that was replicated) answers a second `/init` with 403: the activation is
/// placed again, not failed as the action's fault.
#[test]
fn a_prewarm_container_initialized_elsewhere_is_replaced_not_blamed_on_the_action() {
    let rt = Runtime::new().unwrap();
    let (host, mut c) = start(&rt, opts(7121, 1, 1024));
    let prewarm = keepwarm_tests::eventually(
        Duration::from_secs(20),
        || format!("no prewarm container\n{}", host.log()),
        || containers_of(&host.cluster).pop(),
    );
    let port = std::process::Command::new("docker")
        .args(["port", &prewarm, "8080/tcp"])
        .output()
        .unwrap();
    let address = String::from_utf8_lossy(&port.stdout)
        .lines()
        .next()
        .expect("the prewarm container publishes its proxy")
        .trim()
        .to_owned();
    // what the other host sent it
    let (code, body) = keepwarm_tests::cluster::post(
        &address,
        "/init",
        &json!({"value": {"main": "main", "code": "#!/bin/sh\necho '{}'\n", "binary": false}})
            .to_string(),
    )
    .expect("the proxy answers /init");
    assert_eq!(code, 200, "{body}");

    let id = rt.block_on(c.invoke("guest", "other", true, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(
        record["response"]["statusCode"],
        0,
        "{record}\n{}",
        host.log()
    );
    assert_eq!(record["response"]["result"], json!({"other": true}));
    let used = annotation(&record, "keepwarm").unwrap()["container"].clone();
    assert!(
        !used.as_str().unwrap().starts_with(prewarm.as_str()),
        "{record}"
    );
    assert!(
        host.log().contains("initialized by a previous active host"),
        "{}",
        host.log()
    );
}

#[test]
fn memory_pressure_evicts_the_least_recently_used_warm_container() {
    let rt = Runtime::new().unwrap();
    // room for two 128 MB containers
    let (_host, mut c) = start(&rt, opts(7103, 0, 256));
    let run = |c: &mut Controller, action: &str| {
        let id = rt.block_on(c.invoke("guest", action, true, json!({})));
        Controller::record(&c.wait_for(&id, WAIT))
    };
    assert_eq!(start_of(&run(&mut c, "echo")), "cold");
    assert_eq!(start_of(&run(&mut c, "other")), "cold");
    assert_eq!(start_of(&run(&mut c, "echo")), "warm"); // other is now least recently used
    assert_eq!(start_of(&run(&mut c, "third")), "cold"); // evicts other
    assert_eq!(start_of(&run(&mut c, "echo")), "warm");
    assert_eq!(start_of(&run(&mut c, "other")), "cold"); // it was evicted
}

#[test]
fn a_timed_out_action_gets_a_developer_error_and_its_container_is_replaced() {
    let rt = Runtime::new().unwrap();
    let (_host, mut c) = start(&rt, opts(7104, 0, 1024));
    let id = rt.block_on(c.invoke("guest", "sleepy", true, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(record["response"]["statusCode"], 2, "{record}");
    let error = record["response"]["result"]["error"].as_str().unwrap();
    assert!(
        error.contains("exceeded its time limits of 500 milliseconds"),
        "{error}"
    );
    let first = annotation(&record, "keepwarm").unwrap()["container"].clone();
    let id = rt.block_on(c.invoke("guest", "sleepy", true, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(start_of(&record), "cold");
    assert_ne!(annotation(&record, "keepwarm").unwrap()["container"], first);
}

#[test]
fn errors_become_the_right_activation_status() {
    let rt = Runtime::new().unwrap();
    let (host, mut c) = start(&rt, opts(7105, 0, 1024));
    // an application error
    let id = rt.block_on(c.invoke("guest", "failing", true, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(record["response"]["statusCode"], 1);
    assert_eq!(record["response"]["result"], json!({"error": "bad input"}));
    // an unknown action: upstream's application error, in one combined acknowledgement
    // even for a blocking activation
    let id = rt.block_on(c.invoke("guest", "nope", true, json!({})));
    let acks = c.wait_for(&id, WAIT);
    assert_eq!(acks.len(), 1, "{acks:?}");
    let record = Controller::record(&acks);
    assert_eq!(
        record["response"],
        json!({"statusCode": 1, "result": {"error": "Action could not be found or may have been deleted."}})
    );
    assert_eq!(acks[0]["isSystemError"], false);
    assert_eq!(record["duration"], 0);
    // a blackbox whose image only looks like an allowed one (`keepwarm/action-runtime-evil`
    // against the manifest's `keepwarm/action-runtime`): refused before any container
    let before = containers_of(&host.cluster);
    let id = rt.block_on(c.invoke("guest", "lookalike", true, json!({})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(
        record["response"]["result"]["error"],
        keepwarm::action::INCOMPATIBLE,
        "{record}"
    );
    assert!(host
        .log()
        .contains("not in the runtimes manifest's blackboxes"));
    assert_eq!(containers_of(&host.cluster), before);
}

#[test]
fn a_malformed_message_is_answered_or_skipped_and_the_next_one_processed() {
    let rt = Runtime::new().unwrap();
    let (host, mut c) = start(&rt, opts(7106, 0, 1024));
    rt.block_on(c.send_raw("{ this is not json"));
    rt.block_on(c.send_raw(r#"{"transid": "not an array"}"#));
    // names its activation and controller: answered with what was wrong
    let (odd, mut msg) = c.message("guest", "echo", false, json!({}));
    msg["user"]["namespace"]["uuid"] = json!(42);
    msg["transid"] = json!(["tid", 1, ["parent", 0]]);
    rt.block_on(c.send_raw(&msg.to_string()));
    let acks = c.wait_for(&odd, WAIT);
    let record = Controller::record(&acks);
    assert_eq!(record["response"]["statusCode"], 3);
    assert!(
        record["response"]["result"]["error"]
            .as_str()
            .unwrap()
            .contains("user.namespace.uuid"),
        "{record}"
    );
    assert_eq!(acks[0]["transid"], json!(["tid", 1, ["parent", 0]]));
    let id = rt.block_on(c.invoke("guest", "echo", true, json!({"after": "junk"})));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(
        record["response"]["result"],
        json!({"echo": {"after": "junk"}})
    );
    assert!(host
        .log()
        .contains("skipping a message that is not an ActivationMessage"));
}

#[test]
fn sigkill_and_restart_lose_no_activation() {
    let rt = Runtime::new().unwrap();
    let (mut host, mut c) = start(&rt, opts(7107, 0, 1024));
    let warm = rt.block_on(c.invoke("guest", "echo", true, json!({"warm": true})));
    c.wait_for(&warm, WAIT);

    let ids: Vec<String> = (0..30)
        .map(|i| rt.block_on(c.invoke("guest", "echo", true, json!({"i": i}))))
        .collect();
    // let some complete, then kill the host mid-stream
    c.poll_until(WAIT, |c| {
        ids.iter().filter(|i| c.received.contains_key(*i)).count() >= 5
    });
    host.kill();
    let left = containers_of(&host.cluster);
    assert!(!left.is_empty());
    let done_before = ids.iter().filter(|i| c.received.contains_key(*i)).count();
    host.spawn();
    let all = c.poll_until(Duration::from_secs(120), |c| {
        ids.iter().all(|i| c.received.contains_key(i))
    });
    assert!(all, "activations lost after restart\n{}", host.log());
    // what the killed run left behind was destroyed, not leaked
    let now = containers_of(&host.cluster);
    assert!(
        left.iter().all(|id| !now.contains(id)),
        "left {left:?}, now {now:?}\n{}",
        host.log()
    );
    let duplicated = ids.iter().filter(|i| c.completions(i) > 1).count();
    eprintln!("{done_before} done before the kill, {duplicated} acknowledged twice");
    assert!(duplicated <= 30 - done_before + 1);
}

#[test]
fn sigterm_drains_in_flight_activations_then_exits() {
    let rt = Runtime::new().unwrap();
    let (mut host, mut c) = start(&rt, opts(7108, 0, 1024));
    let warm = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&warm, WAIT);
    let ids: Vec<String> = (0..5)
        .map(|i| rt.block_on(c.invoke("guest", "echo", true, json!({"i": i}))))
        .collect();
    c.poll_until(WAIT, |c| ids.iter().any(|i| c.received.contains_key(i)));
    assert_eq!(host.terminate(), Some(0), "{}", host.log());
    let processed = ids.iter().filter(|i| c.received.contains_key(*i)).count();
    // a single host destroys its pool on a clean exit (`destroy-on-exit` defaults to true)
    let left = containers_of(&host.cluster);
    assert!(
        left.is_empty(),
        "left after SIGTERM: {left:?}\n{}",
        host.log()
    );
    // what was taken from Kafka finished; what was not stays for the next start (which may
    // cold-start several containers at once for it, so their number is not asserted)
    host.spawn();
    assert!(c.poll_until(WAIT, |c| ids.iter().all(|i| c.received.contains_key(i))));
    assert!(processed >= 1);
}

#[test]
fn a_second_host_on_the_same_data_dir_is_refused_naming_the_first() {
    let rt = Runtime::new().unwrap();
    let (host, mut c) = start(&rt, opts(7109, 0, 1024));
    let id = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&id, WAIT);
    let first = host.child.as_ref().unwrap().id();
    let second = std::process::Command::new(keepwarm_tests::keepwarm_bin())
        .args(["run", "--config"])
        .arg(&host.config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by another keepwarm process (pid {first}")),
        "{stderr}"
    );
    assert!(stderr.contains("keepwarm.lock"), "{stderr}");
    // the first one is untouched and still serves
    let id = rt.block_on(c.invoke("guest", "echo", true, json!({})));
    c.wait_for(&id, WAIT);
}

#[test]
fn a_plugin_that_names_a_foreign_address_is_sent_no_code_and_no_key() {
    let rt = Runtime::new().unwrap();
    // a listener the test owns, outside the plugin's allowed addresses (default: 127.0.0.1)
    let foreign = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    foreign.set_nonblocking(true).unwrap();
    let mut o = opts(7110, 0, 1024);
    o.log_store = "log-driver";
    o.plugin = PluginChoice {
        name: "probe".into(),
        stem: "probe".into(),
        routes: String::new(),
        config: format!("address = \"{}\"", foreign.local_addr().unwrap()),
        file: None,
    };
    let (host, mut c) = start(&rt, o);
    let id = rt.block_on(c.invoke("guest", "echo", true, json!({"secret": 1})));
    let acks = c.wait_for(&id, WAIT);
    let record = &acks[0]["response"];
    // a whisk (system) error for the activation, the reason in the host's log
    assert_eq!(record["response"]["statusCode"], 3, "{acks:?}");
    assert_eq!(acks[0]["isSystemError"], true, "{acks:?}");
    assert!(
        host.log().contains("outside allowed-addresses"),
        "{}",
        host.log()
    );
    let contacted = foreign.accept();
    assert!(
        contacted
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the host connected to the foreign address: {contacted:?}"
    );
}

/// A controller whose producer retried across a broker failure can leave one activation in
/// the topic twice, at two offsets (the 30-minute chaos run found offsets 44,526 and 44,527
/// holding the same activation, written 3 s apart, and the host ran both). The copy is not
/// run: one activation, one run, one completion — and the offset moves past both.
#[test]
fn an_activation_in_the_topic_twice_runs_once() {
    let rt = Runtime::new().unwrap();
    let (host, mut c) = start(&rt, opts(7111, 0, 1024));
    let (id, msg) = c.message("guest", "echo", true, json!({"copy": true}));
    let (next, next_msg) = c.message("guest", "echo", false, json!({"after": true}));
    rt.block_on(async {
        c.send_raw(&msg.to_string()).await;
        c.send_raw(&msg.to_string()).await;
        c.send_raw(&next_msg.to_string()).await;
    });
    c.wait_for(&id, WAIT);
    c.wait_for(&next, WAIT);
    // time enough for a second run of the copy to answer
    c.poll_until(Duration::from_secs(3), |_| false);
    assert_eq!(
        c.completions(&id),
        1,
        "{:?}\n{}",
        c.received[&id],
        host.log()
    );
    assert_eq!(c.completions(&next), 1);
    assert!(host.log().contains("the copy is not run"), "{}", host.log());
}
