//! Round trips of the wire formats, built from the shapes OpenWhisk's Scala serializers write.

use super::*;
use serde_json::{json, Value};

/// An ActivationMessage as `ActivationMessage.serdes` (jsonFormat12) writes it.
fn upstream_message() -> Value {
    json!({
        "transid": ["sid_123", 1700000000000i64],
        "action": { "path": "guest/pkg", "name": "hello", "version": "0.0.2", "binding": "guest/bound" },
        "revision": "3-abc",
        "user": {
            "subject": "guest-subject",
            "namespace": { "name": "guest", "uuid": "23bc46b1-71f6-4ed5-8c54-816aa4f8c502" },
            "authkey": { "api_key": "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:key" },
            "rights": ["READ", "PUT", "DELETE", "ACTIVATE"],
            "limits": { "concurrentInvocations": 30 },
            "remainingQuota": null
        },
        "activationId": "a1b2c3",
        "rootControllerIndex": { "asString": "0", "instanceType": "controller" },
        "blocking": true,
        "content": { "name": "Ada" },
        "initArgs": ["secret"],
        "lockedArgs": { "secret": "enc" },
        "cause": "parent-activation",
        "traceContext": { "traceparent": "00-1" },
        "someFutureField": 42
    })
}

#[test]
fn parses_an_upstream_activation_message() {
    let raw = upstream_message();
    let m = ActivationMessage::parse(raw.to_string().as_bytes()).unwrap();
    assert_eq!(m.transid.id, "sid_123");
    assert_eq!(m.transid.start_ms, 1_700_000_000_000);
    assert_eq!(m.action.qualified(), "guest/pkg/hello");
    assert_eq!(m.action.namespace(), "guest");
    assert_eq!(m.action.binding.as_deref(), Some("guest/bound"));
    assert_eq!(m.revision.as_deref(), Some("3-abc"));
    assert_eq!(
        m.user.api_key(),
        Some("23bc46b1-71f6-4ed5-8c54-816aa4f8c502:key")
    );
    assert_eq!(m.completion_topic(), "completed0");
    assert_eq!(m.init_args, vec!["secret".to_string()]);
    assert_eq!(m.cause.as_deref(), Some("parent-activation"));

    // written back, every field the controller reads is as it was
    let again = serde_json::to_value(&m).unwrap();
    for key in [
        "transid",
        "action",
        "revision",
        "activationId",
        "rootControllerIndex",
        "blocking",
        "content",
        "initArgs",
        "lockedArgs",
        "cause",
        "traceContext",
    ] {
        assert_eq!(again[key], raw[key], "{key}");
    }
}

#[test]
fn tolerates_absent_optional_fields_and_string_names() {
    let m = ActivationMessage::parse(
        json!({
            "transid": ["t", 1, true],
            "action": "guest/hello",
            "user": { "subject": "s", "namespace": { "name": "guest", "uuid": "u" } },
            "activationId": "x",
            "rootControllerIndex": { "asString": "c1" },
            "blocking": false
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    assert!(m.transid.extra_logging);
    assert_eq!(
        serde_json::to_value(&m.transid).unwrap(),
        json!(["t", 1, true])
    );
    assert_eq!(m.action.path, "guest");
    assert!(m.content.is_none() && m.revision.is_none() && m.init_args.is_empty());
    assert!(ActivationMessage::parse(b"{\"transid\": \"nope\"}").is_err());
}

fn record(status: ActivationResponse) -> WhiskActivation {
    WhiskActivation {
        namespace: "guest".into(),
        name: "hello".into(),
        subject: "guest-subject".into(),
        activation_id: "a1".into(),
        start: 1,
        end: 5,
        cause: None,
        response: status,
        logs: vec!["2026-01-01T00:00:00Z stdout: hi".into()],
        version: "0.0.1".into(),
        publish: false,
        annotations: vec![record::Annotation {
            key: "kind".into(),
            value: json!("shell:1"),
        }],
        duration: Some(4),
    }
}

#[test]
fn acknowledgements_round_trip_and_are_told_apart_as_the_controller_does() {
    let transid = TransactionId::new("t", 9);
    let instance = InvokerInstanceId::new(0, 2048, None);
    let acks = [
        Acknowledgement::Combined {
            transid: transid.clone(),
            activation: record(ActivationResponse::success(json!({"ok": 1}))),
            instance: instance.clone(),
        },
        Acknowledgement::Completion {
            transid: transid.clone(),
            activation_id: "a1".into(),
            is_system_error: true,
            instance: instance.clone(),
        },
        Acknowledgement::Result {
            transid: transid.clone(),
            activation: record(ActivationResponse::application_error(json!("no"))),
        },
    ];
    for ack in &acks {
        let wire = ack.to_json();
        assert_eq!(
            &Acknowledgement::parse(wire.to_string().as_bytes()).unwrap(),
            ack
        );
        assert_eq!(wire["transid"], json!(["t", 9]));
    }
    let combined = acks[0].to_json();
    assert_eq!(combined["isSystemError"], false);
    assert_eq!(combined["instance"]["userMemory"], "2048 MB");
    assert_eq!(combined["instance"]["instanceType"], "invoker");
    assert_eq!(
        combined["response"]["response"],
        json!({"statusCode": 0, "result": {"ok": 1}})
    );
    assert_eq!(
        combined["response"]["annotations"][0],
        json!({"key": "kind", "value": "shell:1"})
    );
    assert_eq!(acks[1].to_json()["activationId"], "a1");
    let ping = serde_json::to_value(PingMessage { name: instance }).unwrap();
    assert_eq!(ping["name"]["instance"], 0);
}

#[test]
fn run_answers_map_to_openwhisk_status_codes() {
    use record::StatusCode::*;
    let code = |s: u16, b: &str| ActivationResponse::from_run(s, b.as_bytes()).status_code;
    assert_eq!(code(200, r#"{"a":1}"#), Success);
    assert_eq!(code(200, r#"{"error":"x"}"#), ApplicationError);
    assert_eq!(
        code(
            502,
            r#"{"error":"The action did not return a dictionary."}"#
        ),
        DeveloperError
    );
    // upstream's `processRunResponseContent`: a JSON array is a result too
    assert_eq!(code(200, "[1,2]"), Success);
    assert_eq!(code(502, "[1,2]"), DeveloperError);
    assert_eq!(code(200, "42"), DeveloperError);
    assert_eq!(code(200, "not json"), DeveloperError);
    assert_eq!(
        ActivationResponse::whisk_error("boom").status_code,
        WhiskError
    );
    let init = ActivationResponse::from_failed_init(br#"{"error":"cannot compile"}"#);
    assert_eq!(init.result, Some(json!({"error": "cannot compile"})));
}

/// Issue 33, part 2: `ActivationResponse` as upstream's `jsonFormat3` writes it, `size` the
/// Java length of the container's answer (`ActivationResult.scala`), absent where no answer
/// was read.
#[test]
fn responses_carry_upstreams_size() {
    let json = |r: ActivationResponse| serde_json::to_value(r).unwrap();
    assert_eq!(
        json(ActivationResponse::from_run(200, br#"{"a":1}"#)),
        json!({"statusCode": 0, "result": {"a": 1}, "size": 7})
    );
    assert_eq!(
        json(ActivationResponse::from_run(200, br#"{"error":"no"}"#)),
        json!({"statusCode": 1, "result": {"error": "no"}, "size": 14})
    );
    assert_eq!(
        json(ActivationResponse::from_run(200, "[\"é\"]".as_bytes())),
        json!({"statusCode": 0, "result": ["é"], "size": 5})
    );
    assert_eq!(
        json(ActivationResponse::from_run(500, b"")),
        json!({"statusCode": 2, "result": {"error": "The action did not produce a valid JSON or JSON Array response"}, "size": 0})
    );
    assert_eq!(
        json(ActivationResponse::from_failed_init(b"oops")),
        json!({"statusCode": 2, "result": {"error": "The action failed during initialization: oops"}, "size": 4})
    );
    assert_eq!(
        json(ActivationResponse::whisk_error("boom")),
        json!({"statusCode": 3, "result": {"error": "boom"}})
    );
}

/// Issue 33, part 6: `instance` as master's `InvokerInstanceId.serdes` writes it
/// (`InstanceId.scala`): `tags` and `dedicatedNamespaces` always, which master's reader
/// requires; 1.0.0's reader takes the fields it knows and ignores these.
#[test]
fn the_invoker_instance_is_written_as_masters_serdes_writes_it() {
    let upstream = json!({
        "instance": 3, "userMemory": "2048 MB", "instanceType": "invoker",
        "tags": [], "dedicatedNamespaces": []
    });
    let ours = InvokerInstanceId::new(3, 2048, None);
    assert_eq!(serde_json::to_value(&ours).unwrap(), upstream);
    let named = InvokerInstanceId::new(3, 2048, Some("kw-1".into()));
    assert_eq!(serde_json::to_value(&named).unwrap()["uniqueName"], "kw-1");
    // a completion, field for field as `CompletionMessage.serdes` writes it
    let completion = Acknowledgement::Completion {
        transid: TransactionId::new("t", 9),
        activation_id: "a1".into(),
        is_system_error: false,
        instance: ours.clone(),
    };
    assert_eq!(
        completion.to_json(),
        json!({"transid": ["t", 9], "activationId": "a1", "isSystemError": false, "instance": upstream})
    );
    // and the ping on `health` (`PingMessage.serdes`: `name`, `isEnabled` left out)
    assert_eq!(
        serde_json::to_value(PingMessage { name: ours }).unwrap(),
        json!({"name": upstream})
    );
}

#[test]
fn nested_transaction_ids_are_read_and_echoed_exactly() {
    let raw = json!(["child", 20, true, ["parent", 10, ["root", 1]]]);
    let t: TransactionId = serde_json::from_value(raw.clone()).unwrap();
    assert_eq!(
        (t.id.as_str(), t.start_ms, t.extra_logging),
        ("child", 20, true)
    );
    let parent = t.parent().unwrap();
    assert_eq!((parent.id.as_str(), parent.start_ms), ("parent", 10));
    assert_eq!(parent.parent().unwrap().id, "root");
    assert_eq!(serde_json::to_value(&t).unwrap(), raw);
    // upstream reads what it cannot understand as its `sid_unknown` transaction
    let odd: TransactionId = serde_json::from_value(json!({"not": "an array"})).unwrap();
    assert_eq!(odd.id, "sid_unknown");
    assert_eq!(
        serde_json::to_value(&odd).unwrap(),
        json!({"not": "an array"})
    );
}

#[test]
fn a_readable_id_and_controller_are_enough_to_answer_a_broken_message() {
    let bytes = json!({
        "transid": ["tid", 5, ["parent", 1]],
        "action": { "path": "guest", "name": "hello" },
        "user": { "subject": "s", "namespace": { "name": "guest", "uuid": "u" } },
        "activationId": "0123456789abcdef0123456789abcdef",
        "rootControllerIndex": { "asString": "0", "instanceType": "controller" },
        "blocking": "maybe"
    })
    .to_string();
    let err = ActivationMessage::parse(bytes.as_bytes()).unwrap_err();
    let u = Unreadable::read(bytes.as_bytes(), &err).unwrap();
    assert_eq!(u.completion_topic(), "completed0");
    let record = WhiskActivation::not_understood(&u, 7);
    assert_eq!(record.response.status_code, StatusCode::WhiskError);
    assert!(record.response.result.as_ref().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("blocking"));
    assert_eq!(record.name, "hello");
    assert_eq!(
        serde_json::to_value(&u.transid).unwrap(),
        json!(["tid", 5, ["parent", 1]])
    );
    assert!(Unreadable::read(b"{\"activationId\": \"x\"}", &err).is_none());
    assert!(Unreadable::read(b"not json", &err).is_none());
}

mod upstream_shapes {
    //! Messages in every shape upstream's serializers write, generated: each parses, and
    //! its acknowledgement echoes the transaction id and activation id byte for byte.
    use super::*;
    use proptest::prelude::*;

    fn transid(depth: u32) -> BoxedStrategy<Value> {
        let base = ("[a-zA-Z0-9]{1,32}", 0i64..4_102_444_800_000, any::<bool>());
        if depth == 0 {
            base.prop_map(|(id, start, extra)| {
                if extra {
                    json!([id, start, true])
                } else {
                    json!([id, start])
                }
            })
            .boxed()
        } else {
            (base, prop::option::of(transid(depth - 1)))
                .prop_map(|((id, start, extra), parent)| {
                    let mut a = vec![json!(id), json!(start)];
                    if extra {
                        a.push(json!(true));
                    }
                    a.extend(parent);
                    Value::Array(a)
                })
                .boxed()
        }
    }

    fn message() -> impl Strategy<Value = Value> {
        let name = "[a-zA-Z][a-zA-Z0-9_-]{0,20}";
        (
            transid(4),
            (name, prop::option::of(name), name, prop::option::of("[0-9]\\.[0-9]\\.[0-9]"), any::<bool>()),
            prop::option::of("[0-9]-[a-f0-9]{32}"),
            "[a-f0-9]{32}",
            any::<bool>(),
            prop_oneof![
                Just(None),
                Just(Some(Value::Null)),
                Just(Some(json!({}))),
                Just(Some(json!({"name": "Ada", "n": [1, {"x": null}]}))),
                Just(Some(json!([1, "two"]))),
            ],
            prop::option::of("[a-f0-9]{32}"),
            prop::option::of(Just(json!({"traceparent": "00-abc-01"}))),
        )
            .prop_map(|(transid, (ns, pkg, action, version, as_string), revision, id, blocking, content, cause, trace)| {
                let path = match pkg { Some(p) => format!("{ns}/{p}"), None => ns.clone() };
                let action = if as_string {
                    json!(format!("{path}/{action}"))
                } else {
                    let mut a = json!({ "path": path, "name": action });
                    if let Some(v) = version { a["version"] = json!(v); }
                    a
                };
                let mut m = json!({
                    "transid": transid,
                    "action": action,
                    "revision": revision,
                    "user": { "subject": "subject", "namespace": { "name": ns, "uuid": "u-u-i-d" },
                              "authkey": { "api_key": "u-u-i-d:key" }, "rights": ["READ"], "limits": {} },
                    "activationId": id,
                    "rootControllerIndex": { "asString": "0", "instanceType": "controller" },
                    "blocking": blocking,
                    "initArgs": [],
                    "lockedArgs": {},
                });
                if let Some(c) = content { m["content"] = c; }
                if let Some(c) = cause { m["cause"] = json!(c); }
                if let Some(t) = trace { m["traceContext"] = t; }
                m
            })
    }

    proptest! {
        #[test]
        fn every_upstream_shape_parses_and_is_echoed(raw in message()) {
            let bytes = raw.to_string();
            let m = ActivationMessage::parse(bytes.as_bytes()).unwrap();
            let record = WhiskActivation::fallback(&m, ActivationResponse::whisk_error("x"), 1);
            let ack = Acknowledgement::Combined {
                transid: m.transid.clone(),
                activation: record,
                instance: InvokerInstanceId::new(0, 2048, None),
            };
            let wire = ack.to_json().to_string();
            let echoed: Value = serde_json::from_str(&wire).unwrap();
            prop_assert_eq!(echoed["transid"].to_string(), raw["transid"].to_string());
            prop_assert_eq!(&echoed["response"]["activationId"], &raw["activationId"]);
            let again = serde_json::to_value(&m).unwrap();
            prop_assert_eq!(&again["transid"], &raw["transid"]);
            prop_assert_eq!(&again["content"], &raw["content"]);
        }
    }
}

#[test]
fn a_record_becomes_upstreams_activation_event() {
    let record: WhiskActivation = serde_json::from_value(json!({
        "namespace": "guest", "name": "hello", "subject": "guest", "activationId": "a1",
        "start": 0, "end": 30, "duration": 30, "version": "0.0.1",
        "response": {"statusCode": 2, "result": {"error": {"statusCode": "teapot"}}},
        "annotations": [
            {"key": "path", "value": "guest/pkg/hello"},
            {"key": "kind", "value": "nodejs:20"},
            {"key": "limits", "value": {"memory": 256, "timeout": 60000, "logs": 10, "concurrency": 1}},
            {"key": "waitTime", "value": 12},
            {"key": "initTime", "value": 40}
        ]
    }))
    .unwrap();
    let e = record.event("alice").unwrap();
    assert_eq!(
        (
            e.namespace.as_str(),
            e.action.as_str(),
            e.initiator.as_str(),
            e.kind.as_str()
        ),
        ("guest", "pkg/hello", "alice", "nodejs:20")
    );
    assert_eq!(
        (e.memory_mb, e.wait_ms, e.init_ms, e.duration_ms),
        (256, 12, 40, 30)
    );
    assert_eq!(e.status, "action_developer_error");
    // not an integer: upstream counts it as 400
    assert_eq!(e.user_status_code, Some(400));
    assert_eq!(e.size, Some(r#"{"error":{"statusCode":"teapot"}}"#.len()));
    let mut bare = record.clone();
    bare.annotations.retain(|a| a.key != "kind");
    assert!(bare.event("alice").is_none());
}
