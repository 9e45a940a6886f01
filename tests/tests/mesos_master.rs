//! The Mesos master simulator against the scheduler API as documented: a bare client (not
//! the plugin) checks framing, stream ids, offers, launches of real Docker containers,
//! reliable updates, reconciliation, failover timeout, agent loss and redirects.

use keepwarm_tests::mesos::client::{call, send, Events, Next};
use keepwarm_tests::mesos::{MesosMaster, Options};
use keepwarm_tests::proxy::{init_script, ProxyClient, ECHO_ACTION};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

const SOON: Duration = Duration::from_secs(10);

fn subscribe_call(id: Option<&str>, failover_timeout: f64) -> Value {
    let mut info =
        json!({"user": "root", "name": "protocol-test", "failover_timeout": failover_timeout});
    if let Some(id) = id {
        info["id"] = json!({"value": id});
    }
    json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info, "force": true}})
}

async fn subscribed(addr: SocketAddr, failover_timeout: f64) -> (Events, String) {
    let (status, mut events) =
        Events::subscribe(addr, &subscribe_call(None, failover_timeout)).await;
    assert_eq!(status, 200);
    let e = events.next_of("SUBSCRIBED", SOON).await;
    let fid = e["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    (events, fid)
}

fn resources(offer: &Value, name: &str) -> Value {
    offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap()
}

/// A LAUNCH of the action image on `offer`, mapping its first port to 8080.
fn launch(fid: &str, offer: &Value, task_id: &str, cpus: f64) -> (Value, u64) {
    let port = resources(offer, "ports")["ranges"]["range"][0]["begin"]
        .as_u64()
        .unwrap();
    let task = json!({
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": offer["agent_id"],
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 64.0}},
            {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": port, "end": port}]}}
        ],
        "command": {"shell": false},
        "container": {"type": "DOCKER", "docker": {
            "image": "keepwarm/action-runtime:latest", "network": "BRIDGE",
            "port_mappings": [{"host_port": port, "container_port": 8080, "protocol": "tcp"}]}},
        "labels": {"labels": [{"key": "test", "value": task_id}]}
    });
    let call = json!({"framework_id": {"value": fid}, "type": "ACCEPT", "accept": {
        "offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
        "filters": {"refuse_seconds": 0.0}}});
    (call, port)
}

fn ack(fid: &str, status: &Value) -> Value {
    json!({"framework_id": {"value": fid}, "type": "ACKNOWLEDGE", "acknowledge": {
        "agent_id": status["agent_id"], "task_id": status["task_id"], "uuid": status["uuid"]}})
}

/// Launches one task and acknowledges it to TASK_RUNNING.
async fn running_task(
    master: &MesosMaster,
    events: &mut Events,
    fid: &str,
    task_id: &str,
) -> (Value, u64) {
    let offer = events.next_of("OFFERS", SOON).await["offers"]["offers"][0].clone();
    let (accept, port) = launch(fid, &offer, task_id, 0.1);
    let sid = events.stream_id.clone();
    assert_eq!(call(master.addr, sid.as_deref(), &accept).await.0, 202);
    loop {
        let s = events.update_of(task_id, SOON).await;
        assert_eq!(
            call(master.addr, sid.as_deref(), &ack(fid, &s)).await.0,
            202
        );
        if s["state"] == "TASK_RUNNING" {
            return (s, port);
        }
        assert_eq!(s["state"], "TASK_STARTING", "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_is_a_recordio_stream_with_a_stream_id_heartbeats_and_offers() {
    let master = MesosMaster::start(Options::default()).await;
    let e = send(
        master.addr,
        "POST",
        "application/json",
        None,
        subscribe_call(None, 60.0).to_string(),
    )
    .await;
    assert_eq!(e.status, 200);
    assert_eq!(e.headers["content-type"], "application/json");
    assert!(e.headers.contains_key("mesos-stream-id"));
    drop(e); // a framework that goes away: its offers go to the next one
    let (_, mut events) = Events::subscribe(master.addr, &subscribe_call(None, 60.0)).await;
    let first = events.next(SOON).await;
    let Next::Event(first) = first else {
        panic!("{first:?}")
    };
    assert_eq!(first["type"], "SUBSCRIBED");
    assert!(first["subscribed"]["framework_id"]["value"].is_string());
    assert_eq!(first["subscribed"]["heartbeat_interval_seconds"], 1.0);
    let offer = events.next_of("OFFERS", SOON).await["offers"]["offers"][0].clone();
    assert_eq!(offer["hostname"], "127.0.0.1");
    assert_eq!(resources(&offer, "cpus")["scalar"]["value"], 8.0);
    assert_eq!(resources(&offer, "ports")["type"], "RANGES");
    events.next_of("HEARTBEAT", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_post_json_a_subscription_and_its_stream_id() {
    let master = MesosMaster::start(Options::default()).await;
    let (events, fid) = subscribed(master.addr, 60.0).await;
    let revive = json!({"framework_id": {"value": fid}, "type": "REVIVE"});
    let sid = events.stream_id.clone().unwrap();
    assert_eq!(call(master.addr, Some(&sid), &revive).await.0, 202);
    let (status, body) = call(master.addr, None, &revive).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Mesos-Stream-Id"), "{body}");
    assert_eq!(
        call(master.addr, Some("another-stream"), &revive).await.0,
        400
    );
    let stranger = json!({"framework_id": {"value": "no-such-framework"}, "type": "REVIVE"});
    assert_eq!(call(master.addr, Some(&sid), &stranger).await.0, 403);
    assert_eq!(
        send(master.addr, "GET", "application/json", None, "")
            .await
            .status,
        405
    );
    assert_eq!(
        send(master.addr, "POST", "text/plain", None, "{}")
            .await
            .status,
        415
    );
    assert_eq!(
        send(master.addr, "POST", "application/json", None, "{not json")
            .await
            .status,
        400
    );
    let no_info = json!({"type": "SUBSCRIBE", "subscribe": {}});
    assert_eq!(call(master.addr, None, &no_info).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_single_use_launches_are_checked_and_updates_resent_until_acknowledged() {
    let master = MesosMaster::start(Options::default()).await;
    let (mut events, fid) = subscribed(master.addr, 60.0).await;
    let sid = events.stream_id.clone();
    let offer = events.next_of("OFFERS", SOON).await["offers"]["offers"][0].clone();

    // more cpus than offered: TASK_ERROR, and the offer is used up
    let (greedy, _) = launch(&fid, &offer, "greedy", 64.0);
    assert_eq!(call(master.addr, sid.as_deref(), &greedy).await.0, 202);
    let s = events.update_of("greedy", SOON).await;
    assert_eq!(
        (s["state"].as_str(), s["reason"].as_str()),
        (Some("TASK_ERROR"), Some("REASON_TASK_INVALID"))
    );
    let (again, _) = launch(&fid, &offer, "again", 0.1);
    assert_eq!(call(master.addr, sid.as_deref(), &again).await.0, 202);
    let s = events.update_of("again", SOON).await;
    assert_eq!(
        (s["state"].as_str(), s["reason"].as_str()),
        (Some("TASK_LOST"), Some("REASON_INVALID_OFFERS"))
    );

    // a valid launch: a real container; STARTING is re-sent until acknowledged, then RUNNING
    let offer = events.next_of("OFFERS", SOON).await["offers"]["offers"][0].clone();
    let (good, port) = launch(&fid, &offer, "good", 0.1);
    assert_eq!(call(master.addr, sid.as_deref(), &good).await.0, 202);
    let starting = events.update_of("good", SOON).await;
    assert_eq!(starting["state"], "TASK_STARTING");
    let resent = events.update_of("good", Duration::from_secs(3)).await;
    assert_eq!(
        resent["uuid"], starting["uuid"],
        "the same update, not the next"
    );
    assert_eq!(
        call(master.addr, sid.as_deref(), &ack(&fid, &starting))
            .await
            .0,
        202
    );
    let running = events.update_of("good", SOON).await;
    assert_eq!(running["state"], "TASK_RUNNING");
    assert_ne!(running["uuid"], starting["uuid"]);
    assert_eq!(
        call(master.addr, sid.as_deref(), &ack(&fid, &running))
            .await
            .0,
        202
    );
    let address = format!("127.0.0.1:{port}");
    let (status, _) = ProxyClient::default()
        .post_ready(&address, "/init", &init_script(ECHO_ACTION), SOON)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(master.launched(), 1);
    assert_eq!(master.tasks()[0].unacknowledged, 0);

    // kill: TASK_KILLED, the container gone, its resources offered again
    let kill = json!({"framework_id": {"value": fid}, "type": "KILL",
        "kill": {"task_id": {"value": "good"}, "agent_id": running["agent_id"]}});
    assert_eq!(call(master.addr, sid.as_deref(), &kill).await.0, 202);
    let killed = events.update_of("good", SOON).await;
    assert_eq!(killed["state"], "TASK_KILLED");
    assert_eq!(
        call(master.addr, sid.as_deref(), &ack(&fid, &killed))
            .await
            .0,
        202
    );
    assert!(ProxyClient::default()
        .post(&address, "/run", &json!({}))
        .await
        .is_err());
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_explicit_and_implicit() {
    let master = MesosMaster::start(Options::default()).await;
    let (mut events, fid) = subscribed(master.addr, 60.0).await;
    let sid = events.stream_id.clone();
    let (running, _) = running_task(&master, &mut events, &fid, "r1").await;
    let reconcile = |tasks: Value| json!({"framework_id": {"value": fid}, "type": "RECONCILE", "reconcile": {"tasks": tasks}});

    let asked = json!([{"task_id": {"value": "r1"}, "agent_id": running["agent_id"]},
                       {"task_id": {"value": "never-launched"}}]);
    assert_eq!(
        call(master.addr, sid.as_deref(), &reconcile(asked)).await.0,
        202
    );
    let s = events.update_of("r1", SOON).await;
    assert_eq!(
        (s["state"].as_str(), s["reason"].as_str()),
        (Some("TASK_RUNNING"), Some("REASON_RECONCILIATION"))
    );
    assert!(
        s.get("uuid").is_none(),
        "reconciliation updates are not acknowledged: {s}"
    );
    let s = events.update_of("never-launched", SOON).await;
    assert_eq!(s["state"], "TASK_LOST");

    assert_eq!(
        call(master.addr, sid.as_deref(), &reconcile(json!([])))
            .await
            .0,
        202
    );
    let s = events.update_of("r1", SOON).await;
    assert_eq!(s["state"], "TASK_RUNNING");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscription_keeps_the_framework_and_its_tasks_and_closes_the_old_stream() {
    let master = MesosMaster::start(Options::default()).await;
    let (mut old, fid) = subscribed(master.addr, 60.0).await;
    running_task(&master, &mut old, &fid, "kept").await;

    let (status, mut new) = Events::subscribe(master.addr, &subscribe_call(Some(&fid), 60.0)).await;
    assert_eq!(status, 200);
    let e = new.next_of("SUBSCRIBED", SOON).await;
    assert_eq!(e["subscribed"]["framework_id"]["value"], fid.as_str());
    assert_ne!(new.stream_id, old.stream_id);
    loop {
        match old.next(SOON).await {
            Next::Closed => break,
            Next::Event(_) => continue,
            Next::Silent => panic!("the old stream stayed open"),
        }
    }
    let revive = json!({"framework_id": {"value": fid}, "type": "REVIVE"});
    assert_eq!(
        call(master.addr, old.stream_id.as_deref(), &revive).await.0,
        400
    );
    assert_eq!(
        call(master.addr, new.stream_id.as_deref(), &revive).await.0,
        202
    );
    assert_eq!(master.tasks().len(), 1);
    assert_eq!(master.tasks()[0].state, "TASK_RUNNING");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_framework_gone_past_its_failover_timeout_is_removed_with_its_tasks() {
    let options = Options {
        heartbeat: Duration::from_millis(100),
        ..Options::default()
    };
    let master = MesosMaster::start(options).await;
    let (mut events, fid) = subscribed(master.addr, 0.5).await;
    running_task(&master, &mut events, &fid, "doomed").await;
    let container = master.tasks()[0].container.clone().unwrap();
    drop(events);
    let start = std::time::Instant::now();
    while !master.removed_frameworks().contains(&fid) {
        assert!(start.elapsed() < SOON, "not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(master.tasks().is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = std::process::Command::new("docker")
        .args(["ps", "-aq", "--no-trunc"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&container),
        "the task's container survived"
    );

    let (status, mut late) = Events::subscribe(master.addr, &subscribe_call(Some(&fid), 0.5)).await;
    assert_eq!(status, 200);
    let e = late.next_of("ERROR", SOON).await;
    assert_eq!(e["error"]["message"], "Framework has been removed");
    assert_eq!(late.next(SOON).await, Next::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_agent_loses_its_tasks_and_rescinds_its_offers() {
    let options = Options {
        agents: 2,
        ..Options::default()
    };
    let master = MesosMaster::start(options).await;
    let (mut events, fid) = subscribed(master.addr, 60.0).await;
    let (running, _) = running_task(&master, &mut events, &fid, "on-agent").await;
    let agent = running["agent_id"]["value"].as_str().unwrap().to_owned();
    // by now the agent's remaining resources are on offer again (refuse_seconds 0)
    master.remove_agent(&agent).await;
    let mut seen = Vec::new();
    while let Next::Event(e) = events.next(Duration::from_millis(500)).await {
        seen.push(e);
    }
    let lost = seen
        .iter()
        .find(|e| e["type"] == "UPDATE" && e["update"]["status"]["task_id"]["value"] == "on-agent")
        .unwrap_or_else(|| panic!("no update: {seen:?}"));
    let s = &lost["update"]["status"];
    assert_eq!(
        (s["state"].as_str(), s["reason"].as_str()),
        (Some("TASK_LOST"), Some("REASON_AGENT_REMOVED"))
    );
    assert!(
        seen.iter()
            .any(|e| e["type"] == "FAILURE" && e["failure"]["agent_id"]["value"] == agent.as_str()),
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| e["type"] == "RESCIND"), "{seen:?}");
    assert_eq!(master.agents().len(), 1);
    assert!(master.tasks().is_empty());
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_master_redirects_to_the_leader() {
    let master = MesosMaster::start(Options::default()).await;
    let (standby, _task) = MesosMaster::standby_for(&master).await;
    let e = send(
        standby,
        "POST",
        "application/json",
        None,
        subscribe_call(None, 60.0).to_string(),
    )
    .await;
    assert_eq!(e.status, 307);
    assert_eq!(
        e.headers["location"],
        format!("//{}/api/v1/scheduler", master.addr).as_str()
    );
}
