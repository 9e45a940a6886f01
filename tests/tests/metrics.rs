//! `/metrics` of a real single host, read by a Prometheus text-format parser
//! (`prometheus-parse`): OpenWhisk's user-event metrics count exactly the activations sent,
//! under upstream's names and labels, and the pool and plugin metrics are there.

use keepwarm_tests::cluster::get;
use keepwarm_tests::host::{Host, HostOptions};
use keepwarm_tests::kafka::Controller;
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use std::time::Duration;
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

fn scrape(address: &str) -> (Scrape, String) {
    let text = get(address, "/metrics").expect("/metrics answers");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition");
    (scrape, text)
}

/// The value of the sample named `name` whose labels include `labels` (0 when absent).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name}: unexpected {other:?}"),
        })
        .sum()
}

#[test]
fn the_metrics_page_counts_the_activations_sent_under_openwhisks_names() {
    let rt = Runtime::new().unwrap();
    let address = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let instance = 7700 * 10_000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(instance, &format!("met{instance}")));
    let mut opts = HostOptions::new(instance, 1, 1024);
    opts.prefix = vec![
        "env".into(),
        format!("KEEPWARM_INVOKER_STATUS_ADDRESS={address}"),
    ];
    let host = Host::start(&opts);

    let echo = ["guest", "alice-space"];
    for (n, initiator) in (0..5).zip(echo.iter().cycle()) {
        // the invoking user's namespace is the `initiator` label
        let (id, mut msg) = c.message("guest", "echo", true, json!({ "n": n }));
        msg["user"]["namespace"]["name"] = json!(initiator);
        rt.block_on(c.send_raw(&msg.to_string()));
        let record = Controller::record(&c.wait_for(&id, WAIT));
        assert_eq!(record["response"]["statusCode"], 0, "{record}");
    }
    for n in 0..2 {
        let id = rt.block_on(c.invoke("guest", "failing", true, json!({ "n": n })));
        let record = Controller::record(&c.wait_for(&id, WAIT));
        assert_eq!(record["response"]["statusCode"], 1, "{record}");
    }

    let (m, text) = scrape(&address);
    let echo_by = |initiator: &str| {
        value(
            &m,
            "openwhisk_action_activations_total",
            &[
                ("namespace", "guest"),
                ("initiator", initiator),
                ("action", "echo"),
                ("kind", "shell:1"),
                ("memory", "128"),
            ],
        )
    };
    assert_eq!(
        (echo_by("guest"), echo_by("alice-space")),
        (3.0, 2.0),
        "{text}"
    );
    let failing = [("namespace", "guest"), ("action", "failing")];
    assert_eq!(
        value(&m, "openwhisk_action_activations_total", &failing),
        2.0,
        "{text}"
    );
    let status = |action: &str, status: &str| {
        value(
            &m,
            "openwhisk_action_status",
            &[("action", action), ("status", status)],
        )
    };
    assert_eq!(status("echo", "success"), 5.0, "{text}");
    assert_eq!(status("failing", "application_error"), 2.0, "{text}");
    assert_eq!(status("echo", "application_error"), 0.0, "{text}");
    // a warm container serves one invoking namespace (as upstream's pool): echo ran cold
    // once for each initiator, `failing` once; the rest ran warm
    let cold = |initiator: &str, action: &str| {
        let labels = [("initiator", initiator), ("action", action)];
        (
            value(&m, "openwhisk_action_coldStarts_total", &labels),
            value(&m, "openwhisk_action_initTime_seconds_count", &labels),
        )
    };
    assert_eq!(cold("guest", "echo"), (1.0, 1.0), "{text}");
    assert_eq!(cold("alice-space", "echo"), (1.0, 1.0), "{text}");
    assert_eq!(cold("guest", "failing"), (1.0, 1.0), "{text}");
    let echo = [("action", "echo")];
    assert_eq!(
        value(&m, "openwhisk_action_duration_seconds_count", &echo),
        5.0,
        "{text}"
    );
    assert_eq!(
        value(&m, "openwhisk_action_waitTime_seconds_count", &echo),
        5.0,
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            "openwhisk_action_memory",
            &[("action", "echo"), ("initiator", "guest")]
        ),
        128.0,
        "{text}"
    );
    // the pool: three warm containers (echo twice, failing), none busy
    assert_eq!(
        value(
            &m,
            "openwhisk_containerPool_containers",
            &[("state", "warmed")]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            "openwhisk_containerPool_containers",
            &[("state", "busy")]
        ),
        0.0,
        "{text}"
    );
    // the plugin's calls: containers were created and logs read, none faulted
    let calls = |op: &str| {
        value(
            &m,
            "keepwarm_plugin_call_seconds_count",
            &[("plugin", "docker"), ("operation", op)],
        )
    };
    assert!(calls("create") >= 2.0 && calls("logs") >= 7.0, "{text}");
    assert_eq!(
        value(&m, "keepwarm_plugin_faults_total", &[]),
        0.0,
        "{text}"
    );

    // the same listener serves the dashboard and the typed status it reads
    let page = get(&address, "/").expect("the dashboard answers");
    assert!(page.contains("<title>keepwarm</title>"), "{page}");
    let status: serde_json::Value =
        serde_json::from_str(&get(&address, "/status").expect("/status answers")).unwrap();
    assert_eq!(status["state"], "Single", "{status}");
    assert_eq!(status["activity"]["total"], 7, "{status}");
    assert_eq!(status["plugins"][0]["name"], "docker", "{status}");
    let echo_row = status["pool_by_action"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "guest/echo")
        .cloned()
        .unwrap_or_else(|| panic!("no guest/echo row in {status}"));
    assert_eq!(
        (echo_row["warm"].as_u64(), echo_row["plugin"].as_str()),
        (Some(2), Some("docker"))
    );
    drop(host);
}
