//! Traces and JSON logs of a real single host. The test plays the controller, sending a W3C
//! `traceContext`, and an OTLP/HTTP collector: a real HTTP server that decodes the protobuf
//! `ExportTraceServiceRequest`s the host posts, as a collector does (it only records them).

use axum::body::Bytes;
use axum::routing::post;
use keepwarm_tests::host::{Host, HostOptions};
use keepwarm_tests::kafka::Controller;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const WAIT: Duration = Duration::from_secs(60);

type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP/HTTP collector on loopback: its address and what it received.
fn collector(rt: &Runtime) -> (String, Spans) {
    let spans: Spans = Arc::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let received = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let received = received.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut all = received.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        all.extend(scope.spans);
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn an_activation_continues_the_controllers_trace_and_its_log_lines_name_it() {
    let rt = Runtime::new().unwrap();
    let (collector, spans) = collector(&rt);
    let instance = 7800 * 10_000 + std::process::id() % 10_000;
    let mut c = rt.block_on(Controller::new(instance, &format!("trc{instance}")));
    let mut opts = HostOptions::new(instance, 0, 1024);
    opts.extra = format!(
        "[log]\nformat = \"json\"\nfilter = \"keepwarm=debug,warn\"\n\
         [trace]\nendpoint = \"http://{collector}\"\nservice-name = \"keepwarm-test\"\n"
    );
    let host = Host::start(&opts);

    // the controller's trace: its ids, as OpenWhisk's OpenTracing support sends them
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let parent_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let (id, mut msg) = c.message("guest", "echo", true, json!({"traced": true}));
    msg["traceContext"] = json!({ "traceparent": format!("00-{trace_id}-{parent_id}-01") });
    rt.block_on(c.send_raw(&msg.to_string()));
    let record = Controller::record(&c.wait_for(&id, WAIT));
    assert_eq!(record["response"]["statusCode"], 0, "{record}");

    // the batch goes out within its 5 s schedule
    let ours = |spans: &[Span]| -> Vec<Span> {
        spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect()
    };
    let start = Instant::now();
    let traced = loop {
        let traced = ours(&spans.lock().unwrap());
        let names: Vec<&str> = traced.iter().map(|s| s.name.as_str()).collect();
        if names.contains(&"activation") && names.contains(&"acknowledge") {
            break traced;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no trace {trace_id} in {} spans received: {names:?}\n{}",
            spans.lock().unwrap().len(),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let activation = traced.iter().find(|s| s.name == "activation").unwrap();
    assert_eq!(hex(&activation.parent_span_id), parent_id, "{activation:?}");
    let attribute = |s: &Span, key: &str| {
        s.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
    };
    assert!(
        attribute(activation, "activation_id").is_some_and(|v| v.contains(&id)),
        "{activation:?}"
    );
    // feed → pool → /init → /run → acknowledgement, each a child of the activation's span
    for step in ["acquire", "init", "run", "logs", "acknowledge"] {
        let span = traced
            .iter()
            .find(|s| s.name == step)
            .unwrap_or_else(|| panic!("no `{step}` span in {traced:#?}"));
        assert_eq!(span.parent_span_id, activation.span_id, "{step}: {span:?}");
        assert!(
            span.start_time_unix_nano >= activation.start_time_unix_nano
                && span.end_time_unix_nano <= activation.end_time_unix_nano,
            "{step} lies outside the activation: {span:?} {activation:?}"
        );
    }

    // JSON lines: every line parses; the lines about the activation carry its id, transid
    // and epoch
    let log = host.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let about: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["activation_id"] == id.as_str()))
        })
        .collect();
    assert!(
        about.iter().any(|l| l["message"] == "activation ran"),
        "{log}"
    );
    for line in &about {
        let span = &line["spans"][0];
        assert_eq!(span["name"], "activation", "{line}");
        assert_eq!(span["transid"], format!("tid-{id}"), "{line}");
        assert_eq!(span["epoch"], 0, "{line}");
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    drop(host);
}
