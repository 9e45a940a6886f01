//! The checks, in the order a container lives: create, its action proxy, list, a second
//! instance attaching it, pause and logs by capability, destroy; then the error rules,
//! concurrency and deadlines. The rules are the contract's (`wit/factory.wit`).

use super::{timed, Checks};
use crate::activation::proxy::ProxyClient;
use crate::factory::{
    CallError, CallResult, Container, ContainerFactory, ContainerSpec, ContainerState,
    FactoryError, Pairs,
};
use crate::plugin::WasmFactory;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The action the checks run: logs a line and echoes its input.
const ECHO: &str = "#!/bin/sh\necho \"log line from the check\"\necho \"{\\\"echo\\\": $1}\"\n";
/// What OpenWhisk runtimes print after each activation's output.
const SENTINEL: &str = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX";
const RUN_LABEL: &str = "keepwarm.check-run";
/// How long a new container's action proxy may take to answer `/init` (the host waits 60 s).
const PROXY_READY: Duration = Duration::from_secs(30);

pub(super) async fn run(c: &mut Checks) {
    let run = format!(
        "kwcheck-{}-{}",
        std::process::id(),
        crate::clock::now_ms() % 1_000_000_000
    );
    let labels: Pairs = vec![(RUN_LABEL.into(), run.clone())];
    let started = Instant::now();
    let created = c.create(spec(&run, &c.options.image, &labels)).await;
    let created = match created.map_err(|e| e.to_string()).and_then(|made| {
        running(&made, &labels)?;
        Ok(made)
    }) {
        Ok(made) => {
            let seen = format!("{} running at {}", made.id, made.address);
            c.record("create", started.elapsed(), Ok(seen));
            Some(made)
        }
        Err(why) => {
            c.record("create", started.elapsed(), Err(why));
            None
        }
    };
    if let Some(made) = created {
        with_container(c, &made, &labels).await;
    } else {
        for check in [
            "proxy",
            "list-by-label",
            "attach-elsewhere",
            "pause",
            "logs",
            "destroy",
        ] {
            c.skip(check, "no container: create failed");
        }
    }
    errors(c, &run).await;
    concurrent(c, &run).await;
    deadlines(c);
}

/// Every check on one created container, ending with its destroy.
async fn with_container(c: &mut Checks, made: &Container, labels: &Pairs) {
    if !c.options.proxy {
        c.skip("proxy", "--no-proxy: the image runs no action proxy");
    } else {
        let started = Instant::now();
        let result = init_and_run(&made.address, 1).await;
        c.record("proxy", started.elapsed(), result);
    }

    let started = Instant::now();
    let listed = c.list(labels.clone()).await;
    let result = listed.map_err(|e| e.to_string()).and_then(|list| {
        match list.as_slice() {
            [one] if one.id == made.id && one.address == made.address => {}
            _ => {
                return Err(format!(
                    "listing by {labels:?} should give exactly {} at {}, gave {list:?}",
                    made.id, made.address
                ))
            }
        }
        running(&list[0], labels)?;
        Ok(format!(
            "found {} by its label, with its address and labels",
            made.id
        ))
    });
    c.record("list-by-label", started.elapsed(), result);
    let started = Instant::now();
    let none = vec![(
        RUN_LABEL.to_string(),
        format!("{}-none", label_value(labels)),
    )];
    let result = match c.list(none.clone()).await {
        Ok(list) if list.is_empty() => Ok("a label no container has lists nothing".into()),
        Ok(list) => Err(format!(
            "listing by {none:?} should give nothing, gave {list:?}"
        )),
        Err(e) => Err(e.to_string()),
    };
    c.record("list-none", started.elapsed(), result);

    attach_elsewhere(c, made, labels).await;
    pause(c, made, labels).await;
    logs(c, made).await;
    destroy(c, made, labels).await;
}

/// A second instance (a standby host's) attaches what the first created, from the shared
/// `state` and the container's record, its address cleared.
async fn attach_elsewhere(c: &mut Checks, made: &Container, labels: &Pairs) {
    let Some(standby) = c.standby.clone() else {
        c.skip("attach-elsewhere", "no second instance");
        return;
    };
    let mut known = made.clone();
    known.address.clear();
    let started = Instant::now();
    let attached = timed(&c.calls, "attach", standby.attach(known)).await;
    let result = attached.map_err(|e| e.to_string()).and_then(|a| {
        if a.id != made.id || a.address != made.address {
            return Err(format!(
                "attach from a second instance should give {} at {}, gave {} at {}",
                made.id, made.address, a.id, a.address
            ));
        }
        running(&a, labels)?;
        Ok(format!(
            "a second instance attached {} at {}",
            a.id, a.address
        ))
    });
    c.record("attach-elsewhere", started.elapsed(), result);
}

async fn pause(c: &mut Checks, made: &Container, labels: &Pairs) {
    let started = Instant::now();
    if !c.info.capabilities.pause {
        let result = match c.call("pause", c.active.pause(&made.id)).await {
            Err(e) if is(&e, |f| matches!(f, FactoryError::Engine(_))) => {
                match c.list(labels.clone()).await {
                    Ok(list) if list.iter().all(|l| l.state == ContainerState::Running) => Ok(
                        "pause not declared: answered engine(..), the container kept running".into(),
                    ),
                    Ok(list) => Err(format!("after a refused pause the container should run: {list:?}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            other => Err(format!(
                "a plugin without the pause capability answers pause with engine(..), answered {other:?}"
            )),
        };
        c.record("pause", started.elapsed(), result);
        return;
    }
    let result = async {
        c.call("pause", c.active.pause(&made.id))
            .await
            .map_err(|e| e.to_string())?;
        expect_state(c, labels, ContainerState::Paused).await?;
        c.call("resume", c.active.resume(&made.id))
            .await
            .map_err(|e| e.to_string())?;
        expect_state(c, labels, ContainerState::Running).await?;
        if c.options.proxy {
            init_and_run(&made.address, 2)
                .await
                .map_err(|e| format!("after resume: {e}"))?;
        }
        // attach resumes a paused container
        c.call("pause", c.active.pause(&made.id))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(standby) = c.standby.clone() {
            let attached = timed(&c.calls, "attach", standby.attach(made.clone()))
                .await
                .map_err(|e| e.to_string())?;
            if attached.state != ContainerState::Running {
                return Err(format!(
                    "attach of a paused container should resume it, its state is {:?}",
                    attached.state
                ));
            }
        } else {
            c.call("resume", c.active.resume(&made.id))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(
            "paused (listed paused), resumed (listed running), and attach resumed a paused one"
                .to_string(),
        )
    }
    .await;
    c.record("pause", started.elapsed(), result);
}

async fn expect_state(c: &Checks, labels: &Pairs, want: ContainerState) -> Result<(), String> {
    let list = c.list(labels.clone()).await.map_err(|e| e.to_string())?;
    match list.as_slice() {
        [one] if one.state == want => Ok(()),
        _ => Err(format!("listed as {list:?}, expected one {want:?}")),
    }
}

async fn logs(c: &mut Checks, made: &Container) {
    let started = Instant::now();
    let result = if c.info.capabilities.logs {
        async {
            let logs = c
                .call("logs", c.active.logs(&made.id, 0, 1 << 20))
                .await
                .map_err(|e| e.to_string())?;
            if c.options.proxy && !(logs.contains("log line from the check") && logs.contains(SENTINEL)) {
                return Err(format!("logs should hold the action's output and the sentinel {SENTINEL}, held {logs:?}"));
            }
            let cut = c
                .call("logs", c.active.logs(&made.id, 0, 10))
                .await
                .map_err(|e| e.to_string())?;
            if cut.len() > 10 {
                return Err(format!("logs with max-bytes 10 returned {} bytes", cut.len()));
            }
            Ok::<_, String>(format!("{} bytes, at most max-bytes when cut", logs.len()))
        }
        .await
    } else {
        match c.call("logs", c.active.logs(&made.id, 0, 100)).await {
            Err(e) if is(&e, |f| matches!(f, FactoryError::Engine(_))) => {
                Ok("logs not declared: answered engine(..)".into())
            }
            other => Err(format!(
                "a plugin without the logs capability answers logs with engine(..), answered {other:?}"
            )),
        }
    };
    c.record("logs", started.elapsed(), result);
}

async fn destroy(c: &mut Checks, made: &Container, labels: &Pairs) {
    let started = Instant::now();
    let result = async {
        c.call("destroy", c.active.destroy(&made.id))
            .await
            .map_err(|e| e.to_string())?;
        c.created
            .lock()
            .expect("created lock")
            .retain(|id| *id != made.id);
        let list = c.list(labels.clone()).await.map_err(|e| e.to_string())?;
        if !list.is_empty() {
            return Err(format!("a destroyed container is still listed: {list:?}"));
        }
        let again = c.call("destroy", c.active.destroy(&made.id)).await;
        if !again
            .as_ref()
            .is_err_and(|e| is(e, |f| matches!(f, FactoryError::NotFound(_))))
        {
            return Err(format!(
                "a second destroy answers not-found(..), answered {again:?}"
            ));
        }
        if let Some(standby) = c.standby.clone() {
            let attached = timed(&c.calls, "attach", standby.attach(made.clone())).await;
            if !attached
                .as_ref()
                .is_err_and(|e| is(e, |f| matches!(f, FactoryError::NotFound(_))))
            {
                return Err(format!(
                    "attach of a destroyed container answers not-found(..), answered {attached:?}"
                ));
            }
        }
        Ok::<_, String>(
            "gone from the list; a second destroy and an attach answer not-found".to_string(),
        )
    }
    .await;
    c.record("destroy", started.elapsed(), result);
}

/// A missing image, unknown ids.
async fn errors(c: &mut Checks, run: &str) {
    if !c.skipped("image-missing") {
        let image = format!("keepwarm/no-such-image:{run}");
        let started = Instant::now();
        let labels = vec![(RUN_LABEL.to_string(), run.to_owned())];
        let result = match c.create(spec(&format!("{run}-missing"), &image, &labels)).await {
            Err(e) if is(&e, |f| matches!(f, FactoryError::ImageMissing(_))) => {
                Ok(format!("create from {image} answered image-missing(..)"))
            }
            other => Err(format!("create from an image the engine cannot have answers image-missing(..), answered {other:?} (an engine without images: --skip image-missing)")),
        };
        c.record("image-missing", started.elapsed(), result);
    }
    if !c.skipped("unknown-id") {
        let id = format!("{run}-no-such-container");
        let started = Instant::now();
        let caps = c.info.capabilities;
        let not_found = |e: &FactoryError| matches!(e, FactoryError::NotFound(_));
        let unsupported =
            |e: &FactoryError| matches!(e, FactoryError::NotFound(_) | FactoryError::Engine(_));
        let answers = [
            (
                "destroy",
                c.call("destroy", c.active.destroy(&id))
                    .await
                    .map(|_| String::new()),
                true,
            ),
            (
                "pause",
                c.call("pause", c.active.pause(&id))
                    .await
                    .map(|_| String::new()),
                caps.pause,
            ),
            (
                "logs",
                c.call("logs", c.active.logs(&id, 0, 100)).await,
                caps.logs,
            ),
        ];
        let wrong: Vec<String> = answers
            .iter()
            .filter(|(_, answer, declared)| {
                let rule: &dyn Fn(&FactoryError) -> bool =
                    if *declared { &not_found } else { &unsupported };
                !answer.as_ref().is_err_and(|e| is(e, rule))
            })
            .map(|(op, answer, _)| format!("{op} answered {answer:?}"))
            .collect();
        let result = if wrong.is_empty() {
            Ok("destroy, pause and logs of an unknown id answered not-found(..)".into())
        } else {
            Err(format!(
                "an unknown id answers not-found(..) (engine(..) for an undeclared capability): {}",
                wrong.join("; ")
            ))
        };
        c.record("unknown-id", started.elapsed(), result);
    }
}

/// A plugin declaring `concurrent` serves two instances creating at once.
async fn concurrent(c: &mut Checks, run: &str) {
    if !c.info.capabilities.concurrent {
        c.skip(
            "concurrent",
            "not declared: the host calls one instance at a time",
        );
        return;
    }
    let Some(standby) = c.standby.clone() else {
        c.skip("concurrent", "no second instance");
        return;
    };
    let labels = vec![(RUN_LABEL.to_string(), format!("{run}-both"))];
    let started = Instant::now();
    let (a, b) = tokio::join!(
        c.create(spec(&format!("{run}-a"), &c.options.image, &labels)),
        track(
            c,
            &standby,
            spec(&format!("{run}-b"), &c.options.image, &labels)
        ),
    );
    let result = match (a, b) {
        (Ok(a), Ok(b)) if a.id != b.id => match c.list(labels.clone()).await {
            Ok(list) if list.len() == 2 => Ok("two instances created at once; both listed".into()),
            Ok(list) => Err(format!(
                "two created at once, {} listed: {list:?}",
                list.len()
            )),
            Err(e) => Err(e.to_string()),
        },
        (a, b) => Err(format!("two instances creating at once: {a:?} and {b:?}")),
    };
    c.record("concurrent", started.elapsed(), result);
    c.clean_up().await;
}

fn deadlines(c: &mut Checks) {
    let calls = c.calls.lock().expect("calls lock").clone();
    let slowest = calls.iter().max_by_key(|(_, took)| *took);
    let result = match slowest {
        None => Err("no call was made".to_string()),
        Some((op, took)) if *took < c.call_timeout => Ok(format!(
            "{} calls; the slowest ({op}) took {} ms of the {} ms deadline",
            calls.len(),
            took.as_millis(),
            c.call_timeout.as_millis()
        )),
        Some((op, took)) => Err(format!(
            "{op} took {} ms, past the {} ms deadline (--timeout-ms)",
            took.as_millis(),
            c.call_timeout.as_millis()
        )),
    };
    c.record("deadlines", Duration::ZERO, result);
}

impl Checks {
    /// Creates through the first instance, remembering the container for the clean-up.
    async fn create(&self, spec: ContainerSpec) -> CallResult<Container> {
        track(self, &self.active, spec).await
    }

    async fn list(&self, labels: Pairs) -> CallResult<Vec<Container>> {
        timed(
            &self.calls,
            "list-containers",
            self.active.list_containers(labels),
        )
        .await
    }

    async fn call<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = CallResult<T>>,
    ) -> CallResult<T> {
        timed(&self.calls, op, call).await
    }
}

async fn track(
    c: &Checks,
    through: &Arc<WasmFactory>,
    spec: ContainerSpec,
) -> CallResult<Container> {
    let made = timed(&c.calls, "create", through.create(spec)).await?;
    c.created
        .lock()
        .expect("created lock")
        .push(made.id.clone());
    Ok(made)
}

fn spec(name: &str, image: &str, labels: &Pairs) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        image: image.into(),
        memory_mb: 128,
        cpu_shares: None,
        env: vec![("__OW_API_HOST".into(), "http://127.0.0.1".into())],
        labels: labels.clone(),
        network: None,
        port: 8080,
    }
}

fn label_value(labels: &Pairs) -> &str {
    labels.first().map_or("", |(_, v)| v.as_str())
}

/// A created or attached container: running, with an address, carrying the spec's labels.
fn running(c: &Container, labels: &Pairs) -> Result<(), String> {
    if c.id.is_empty() {
        return Err("the container has no id".into());
    }
    if c.state != ContainerState::Running {
        return Err(format!("{} should be running, is {:?}", c.id, c.state));
    }
    if c.address
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(format!(
            "{}: address `{}` is not host:port",
            c.id, c.address
        ));
    }
    if let Some(missing) = labels.iter().find(|l| !c.labels.contains(l)) {
        return Err(format!(
            "{} should carry the spec's label {missing:?}, carries {:?}",
            c.id, c.labels
        ));
    }
    Ok(())
}

fn is(e: &CallError, rule: impl Fn(&FactoryError) -> bool) -> bool {
    e.factory_error().is_some_and(rule)
}

/// `/init` with the echo action, then `/run`, at `address`.
async fn init_and_run(address: &str, n: u32) -> Result<String, String> {
    let proxy = ProxyClient::new(1 << 20);
    let init = json!({ "value": { "name": "check", "main": "main", "binary": false, "code": ECHO, "env": {} } });
    let answer = proxy
        .init(address, &init, PROXY_READY)
        .await
        .map_err(|e| format!("/init: {e}"))?;
    // a proxy initialized already (after resume) answers 403: it still runs the action
    if answer.status != 200 && answer.status != 403 {
        return Err(format!(
            "/init answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    let body = json!({ "value": { "n": n }, "activation_id": "check", "deadline": "0",
                       "namespace": "guest", "action_name": "/guest/check" });
    let answer = proxy
        .post(address, "/run", &body, Duration::from_secs(10))
        .await
        .map_err(|e| format!("/run: {e}"))?;
    let result: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    if answer.status != 200 || result != json!({ "echo": { "n": n } }) {
        return Err(format!("/run answered {}: {result}", answer.status));
    }
    Ok(format!(
        "/init and /run at {address} answered the echo action"
    ))
}
