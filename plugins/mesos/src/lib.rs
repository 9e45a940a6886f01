//! keepwarm container factory for Apache Mesos: a framework on the v1 scheduler HTTP API
//! (`POST /api/v1/scheduler`, JSON, RecordIO event stream), reached through the `mesos` route.
//!
//! - `create` waits (up to `offer-wait-ms`) for an offer with the cpus, memory and a port the
//!   container needs, `ACCEPT`s it with a `LAUNCH` of a Docker task (bridge network, the host
//!   port mapped to the proxy port, the spec's labels and env), follows the task's `UPDATE`s to
//!   `TASK_RUNNING`, and returns `hostname:host-port` with the agent in the `handle`;
//! - `attach` reconciles the task; `destroy` kills it and waits for its terminal update;
//!   `list-containers` is the framework's own task records (labels, address) with the state
//!   reconciliation reported;
//! - the framework id and the task records live in the plugin's `state`, which a keepwarm
//!   cluster replicates: a standby that takes over re-subscribes with the same framework id
//!   (within `failover-timeout-s`) and attaches the running tasks instead of relaunching them.
//!
//! Mesos has no pause and the scheduler API does not read task output, so the plugin declares
//! neither `pause` nor `logs`; run the host with `log-store = "log-driver"`.
//! Settings: see [`config::Settings`].

mod config;
mod offers;
mod proto;
mod recordio;
mod scheduler;
mod tasks;

use config::Settings;
use keepwarm_plugin_sdk::{
    export, Capabilities, Container, ContainerSpec, ContainerState, Factory, FactoryError, Pairs,
    PluginInfo,
};
use offers::Needs;
use proto::{
    Accept, Call, CommandInfo, ContainerInfo, DockerInfo, Environment, Filters, Id, Label, Labels,
    Launch, Operation, PortMapping, ReconcileTask, TaskInfo, TaskStatus, Variable,
};
use scheduler::Scheduler;
use std::cell::RefCell;
use tasks::{Handle, TaskRecord};

thread_local! {
    static SCHEDULER: RefCell<Option<Scheduler>> = const { RefCell::new(None) };
}

/// Runs `f` with this instance's scheduler, made alive (subscribed) first.
fn with_scheduler<T>(
    f: impl FnOnce(&mut Scheduler) -> Result<T, FactoryError>,
) -> Result<T, FactoryError> {
    SCHEDULER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let scheduler = slot.get_or_insert_with(|| Scheduler::new(&Settings::get().master));
        scheduler.ensure()?;
        let result = f(scheduler);
        // Declining is housekeeping: a failure here must not fail the call that succeeded.
        let _ = scheduler.decline_stale_offers();
        result
    })
}

struct Mesos;

fn state_of(status: Option<&TaskStatus>) -> ContainerState {
    match status.map(|s| s.state.as_str()) {
        Some("TASK_RUNNING") => ContainerState::Running,
        Some("TASK_STAGING" | "TASK_STARTING") => ContainerState::Creating,
        Some("TASK_KILLING") => ContainerState::Stopped,
        _ => ContainerState::Unknown,
    }
}

fn container(record: &TaskRecord, state: ContainerState) -> Container {
    Container {
        id: record.task_id.clone(),
        name: record.name.clone(),
        address: record.address(),
        state,
        labels: record.labels.clone(),
        handle: record.handle(),
    }
}

/// Task ids are the container names the host chose (unique per host and cluster), kept to
/// the characters Mesos allows in an id.
fn task_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn needs(spec: &ContainerSpec) -> Needs {
    let cpus = spec
        .cpu_shares
        .map(|shares| (shares as f64 / 1024.0).max(0.01))
        .unwrap_or(Settings::get().cpus);
    Needs {
        cpus,
        mem: spec.memory_mb as f64,
    }
}

fn task_info(
    spec: &ContainerSpec,
    record: &TaskRecord,
    resources: Vec<proto::Resource>,
) -> TaskInfo {
    let s = Settings::get();
    let mut labels = spec.labels.clone();
    labels.push((
        keepwarm_plugin_sdk::engine::PORT_LABEL.into(),
        spec.port.to_string(),
    ));
    TaskInfo {
        name: spec.name.clone(),
        task_id: Id::new(&record.task_id),
        agent_id: Id::new(&record.agent_id),
        resources,
        command: CommandInfo {
            shell: false,
            environment: Environment {
                variables: spec
                    .env
                    .iter()
                    .map(|(name, value)| Variable {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            },
        },
        container: ContainerInfo {
            kind: "DOCKER",
            docker: DockerInfo {
                image: spec.image.clone(),
                network: s.network.clone(),
                port_mappings: if s.network == "BRIDGE" {
                    vec![PortMapping {
                        host_port: record.host_port as u32,
                        container_port: spec.port as u32,
                        protocol: "tcp",
                    }]
                } else {
                    Vec::new()
                },
            },
        },
        labels: Labels {
            labels: labels
                .into_iter()
                .map(|(key, value)| Label { key, value })
                .collect(),
        },
    }
}

/// Why a launch failed, as the factory error of the same meaning.
fn launch_failed(spec: &ContainerSpec, status: &TaskStatus) -> FactoryError {
    let message = status.message.clone().unwrap_or_default();
    let lower = message.to_ascii_lowercase();
    if lower.contains("no such image")
        || lower.contains("pull access denied")
        || lower.contains("manifest unknown")
        || (lower.contains("image") && lower.contains("not found"))
    {
        return FactoryError::ImageMissing(spec.image.clone());
    }
    let what = format!("task {} ended {}", status.task_id.value, status.describe());
    match status.state.as_str() {
        "TASK_ERROR" => FactoryError::InvalidSpec(what),
        "TASK_DROPPED" | "TASK_LOST" | "TASK_UNREACHABLE" => FactoryError::Unavailable(what),
        _ => FactoryError::Engine(what),
    }
}

fn create(s: &mut Scheduler, spec: ContainerSpec) -> Result<Container, FactoryError> {
    let settings = Settings::get();
    let id = task_id(&spec.name);
    if tasks::get(&id).is_some() {
        return Err(FactoryError::Conflict(format!(
            "a task named {id} already exists"
        )));
    }
    let needs = needs(&spec);
    if !s.offers().any(|o| offers::fits(o, needs).is_some()) {
        // Nothing held fits: ask for offers now rather than at the master's next allocation
        // (Mesos allocates once a second by default; a burst of creates would wait for it).
        s.revive()?;
    }
    let found = s.wait_for(settings.offer_wait, |s| {
        s.offers()
            .find_map(|o| offers::fits(o, needs).map(|port| (o.id.clone(), port)))
    })?;
    let Some((offer_id, port)) = found else {
        let held: Vec<_> = s.offers().cloned().collect();
        return Err(FactoryError::Capacity(format!(
            "no Mesos offer with {:.2} cpus, {} MB and a port within {} ms (held offers: {})",
            needs.cpus,
            needs.mem,
            settings.offer_wait.as_millis(),
            offers::summary(&held)
        )));
    };
    let (agent_id, hostname) = s
        .offers()
        .find(|o| o.id == offer_id)
        .map(|o| (o.agent_id.value.clone(), o.hostname.clone()))
        .expect("the offer just found");
    let record = TaskRecord {
        task_id: id.clone(),
        name: spec.name.clone(),
        agent_id,
        hostname,
        host_port: port,
        labels: spec.labels.clone(),
    };
    // Recorded before it is launched, so a launched task is never unknown to a standby; a
    // record the host refuses (its state is full) launches nothing and keeps the offer.
    tasks::put(&record)?;
    let offer = s.take_offer(&offer_id).expect("the offer just found");
    let task = task_info(&spec, &record, offers::take(&offer, needs, port));
    s.forget_status(&id);
    let accepted = s.call(|fid| {
        let mut c = Call::new("ACCEPT", Some(fid));
        c.accept = Some(Accept {
            offer_ids: vec![offer.id.clone()],
            operations: vec![Operation {
                kind: "LAUNCH",
                launch: Launch {
                    task_infos: vec![task.clone()],
                },
            }],
            // The rest of the offer comes back at the next allocation: an invoker creates
            // containers in bursts. `refuse-seconds` applies to what is declined.
            filters: Filters {
                refuse_seconds: 0.0,
            },
        });
        c
    });
    if let Err(e) = accepted {
        tasks::forget(&id);
        return Err(e);
    }
    let outcome = s.wait_for(settings.launch_timeout, |s| {
        s.status(&id)
            .filter(|st| st.state == "TASK_RUNNING" || st.is_terminal())
            .cloned()
    })?;
    match outcome {
        Some(status) if status.state == "TASK_RUNNING" => {
            Ok(container(&record, ContainerState::Running))
        }
        Some(status) => {
            tasks::forget(&id);
            Err(launch_failed(&spec, &status))
        }
        None => {
            let _ = s.kill(&id, Some(&record.agent_id));
            Err(FactoryError::Engine(format!(
                "task {id} did not reach TASK_RUNNING within {} ms; killed it",
                settings.launch_timeout.as_millis()
            )))
        }
    }
}

fn attach(s: &mut Scheduler, known: Container) -> Result<Container, FactoryError> {
    let settings = Settings::get();
    let record = match tasks::get(&known.id) {
        Some(r) => r,
        None => {
            // Not in the records (they may have been lost): the host's handle says where.
            let h: Handle = serde_json::from_str(&known.handle).map_err(|_| {
                FactoryError::NotFound(format!("task {} is not known to this framework", known.id))
            })?;
            let record = TaskRecord {
                task_id: known.id.clone(),
                name: known.name.clone(),
                agent_id: h.agent_id,
                hostname: h.hostname,
                host_port: h.host_port,
                labels: known.labels.clone(),
            };
            // Restored before reconciling: a live task without a record would be killed.
            tasks::put(&record)?;
            record
        }
    };
    s.forget_status(&record.task_id);
    s.reconcile(vec![ReconcileTask {
        task_id: Id::new(&record.task_id),
        agent_id: Some(Id::new(&record.agent_id)),
    }])?;
    let status = s.wait_for(settings.reply_timeout, |s| {
        s.status(&record.task_id).cloned()
    })?;
    match status {
        Some(st) if !st.is_terminal() => Ok(container(&record, state_of(Some(&st)))),
        Some(st) => {
            tasks::forget(&record.task_id);
            Err(FactoryError::NotFound(format!(
                "task {} is gone: {}",
                record.task_id,
                st.describe()
            )))
        }
        None => Err(FactoryError::Unavailable(format!(
            "the Mesos master did not reconcile task {} within {} ms",
            record.task_id,
            settings.reply_timeout.as_millis()
        ))),
    }
}

fn list(s: &mut Scheduler, labels: Pairs) -> Result<Vec<Container>, FactoryError> {
    let settings = Settings::get();
    let matching: Vec<TaskRecord> = tasks::all()
        .into_iter()
        .filter(|t| labels.iter().all(|l| t.labels.contains(l)))
        .collect();
    // Fresh states for the matching tasks (and, with none, a round trip proving the master
    // is there): explicit reconciliation, answered on the stream.
    for t in &matching {
        s.forget_status(&t.task_id);
    }
    s.reconcile(
        matching
            .iter()
            .map(|t| ReconcileTask {
                task_id: Id::new(&t.task_id),
                agent_id: Some(Id::new(&t.agent_id)),
            })
            .collect(),
    )?;
    s.wait_for(settings.reply_timeout, |s| {
        matching
            .iter()
            .all(|t| s.status(&t.task_id).is_some())
            .then_some(())
    })?;
    Ok(matching
        .iter()
        // Tasks that ended while we waited were forgotten.
        .filter(|t| tasks::get(&t.task_id).is_some())
        .map(|t| container(t, state_of(s.status(&t.task_id))))
        .collect())
}

fn destroy(s: &mut Scheduler, id: &str) -> Result<(), FactoryError> {
    let settings = Settings::get();
    let record = known(id)?;
    s.kill(id, Some(&record.agent_id))?;
    let ended = s.wait_for(settings.launch_timeout, |s| {
        s.status(id).filter(|st| st.is_terminal()).map(|_| ())
    })?;
    match ended {
        Some(()) => {
            tasks::forget(id);
            Ok(())
        }
        None => Err(FactoryError::Engine(format!(
            "task {id} was not killed within {} ms",
            settings.launch_timeout.as_millis()
        ))),
    }
}

fn known(id: &str) -> Result<TaskRecord, FactoryError> {
    tasks::get(id)
        .ok_or_else(|| FactoryError::NotFound(format!("task {id} is not known to this framework")))
}

fn unsupported(id: &str, what: &str) -> FactoryError {
    match known(id) {
        Err(e) => e,
        Ok(_) => FactoryError::Engine(format!("{what} is not supported by the Mesos plugin")),
    }
}

impl Factory for Mesos {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "keepwarm-mesos".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            engine: "mesos".into(),
            capabilities: Capabilities::CLUSTER_WIDE,
        }
    }

    fn init(config: Pairs) -> Result<(), FactoryError> {
        // No subscription here: a standby host loads the plugin too, and subscribing would
        // take the framework from the active host. The first call that needs Mesos subscribes.
        Settings::init(&config)
    }

    fn create(spec: ContainerSpec) -> Result<Container, FactoryError> {
        with_scheduler(|s| create(s, spec))
    }

    fn attach(known: Container) -> Result<Container, FactoryError> {
        with_scheduler(|s| attach(s, known))
    }

    fn list_containers(labels: Pairs) -> Result<Vec<Container>, FactoryError> {
        with_scheduler(|s| list(s, labels))
    }

    fn pause(id: String) -> Result<(), FactoryError> {
        Err(unsupported(&id, "pause"))
    }

    fn resume(id: String) -> Result<(), FactoryError> {
        Err(unsupported(&id, "resume"))
    }

    fn destroy(id: String) -> Result<(), FactoryError> {
        known(&id)?;
        with_scheduler(|s| destroy(s, &id))
    }

    fn logs(id: String, _since_ms: u64, _max_bytes: u32) -> Result<String, FactoryError> {
        Err(unsupported(
            &id,
            "reading logs (the scheduler API has no task output; use log-store = \"log-driver\")",
        ))
    }
}

// Exported only in the component: native builds run the unit tests of the pure parts.
#[cfg(target_family = "wasm")]
export!(Mesos);
