//! `keepwarm plugin check`: the factory contract's conformance suite, run against any
//! component on the engine its routes reach.
//!
//! Two instances of the plugin share one `state` map, as the active host's and a standby's do
//! in a cluster. The checks (see [`lifecycle`]) walk a container's whole life through them,
//! then the error rules, the capability rules and the deadlines; each is reported as passed,
//! failed (and why) or skipped (and why). Whatever the checks created is destroyed at the end.

mod lifecycle;

use crate::factory::{CallError, ContainerFactory, PluginInfo};
use crate::plugin::engine::CONTRACT_VERSION;
use crate::plugin::{MemoryState, PluginRuntime, PluginSpec, WasmFactory};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a check run may assume of the engine.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The image containers are created from.
    pub image: String,
    /// Whether the image runs an OpenWhisk action proxy the checks can `/init` and `/run`
    /// at the address the plugin returns (off for engines without a real one).
    pub proxy: bool,
    /// Checks not to run (their names as reported), e.g. `image-missing` for an engine with
    /// no images.
    pub skip: Vec<String>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            image: "keepwarm/action-runtime:latest".into(),
            proxy: true,
            skip: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub check: String,
    pub status: Status,
    /// What was seen (passed), what went wrong (failed), or why it did not run (skipped).
    pub detail: String,
    pub ms: u64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    pub sha256: String,
    /// The `keepwarm:factory` version the plugin was built against.
    pub contract: String,
    pub plugin: PluginInfo,
    pub outcomes: Vec<Outcome>,
    /// The slowest call of each operation, in milliseconds.
    pub slowest_ms: std::collections::BTreeMap<String, u64>,
}

impl Report {
    pub fn count(&self, status: Status) -> usize {
        self.outcomes.iter().filter(|o| o.status == status).count()
    }

    pub fn passed(&self) -> bool {
        self.count(Status::Failed) == 0
    }

    /// The report as an author reads it.
    pub fn text(&self) -> String {
        let mut out = format!(
            "plugin check: {} ({} {}, engine {}) sha256 {}\n",
            self.file, self.plugin.name, self.plugin.version, self.plugin.engine, self.sha256
        );
        for o in &self.outcomes {
            let status = match o.status {
                Status::Passed => "ok  ",
                Status::Failed => "FAIL",
                Status::Skipped => "skip",
            };
            out += &format!("  {status}  {:<28} {:>6} ms  {}\n", o.check, o.ms, o.detail);
        }
        out += &format!(
            "{} passed, {} failed, {} skipped\n",
            self.count(Status::Passed),
            self.count(Status::Failed),
            self.count(Status::Skipped)
        );
        out
    }
}

/// Loads `spec` twice (two instances on one `state`) and runs every check. `Err`: the plugin
/// does not load, `init` or `describe` at all.
pub async fn run(
    runtime: &PluginRuntime,
    spec: PluginSpec,
    options: &CheckOptions,
) -> Result<Report, CallError> {
    let state = Arc::new(MemoryState::default());
    let file = spec.file.display().to_string();
    let call_timeout = spec.limits.call_timeout;
    let started = Instant::now();
    let active = WasmFactory::load_with_state(runtime, spec.clone(), state.clone()).await?;
    let loaded = started.elapsed();
    let info = active.info();
    let contract = active.contract();
    let mut checks = Checks {
        options: options.clone(),
        outcomes: Vec::new(),
        calls: Arc::default(),
        created: Arc::default(),
        call_timeout,
        info: info.clone(),
        active: Arc::new(active),
        standby: None,
    };
    checks.record(
        "load",
        loaded,
        describe_ok(&info).map(|()| {
            format!(
                "init and describe answered: {} {} (keepwarm:factory@{contract}{}, \
                 capabilities: {})",
                info.name,
                info.version,
                if contract == CONTRACT_VERSION {
                    ""
                } else {
                    ": an older contract, still loaded; rebuild with this release's SDK"
                },
                capabilities(&info)
            )
        }),
    );
    let started = Instant::now();
    match WasmFactory::load_with_state(runtime, spec, state).await {
        Ok(standby) => {
            checks.standby = Some(Arc::new(standby));
            checks.record(
                "second-instance",
                started.elapsed(),
                Ok("a second instance inits on the same state (init is idempotent)".into()),
            );
        }
        Err(e) => checks.record(
            "second-instance",
            started.elapsed(),
            Err(format!(
                "a second instance on the same state failed to load: {e}"
            )),
        ),
    }
    lifecycle::run(&mut checks).await;
    checks.clean_up().await;
    let slowest_ms = checks.calls.lock().expect("calls lock").iter().fold(
        std::collections::BTreeMap::new(),
        |mut m, (op, took)| {
            let ms = took.as_millis() as u64;
            let e = m.entry(op.to_string()).or_insert(0);
            *e = (*e).max(ms);
            m
        },
    );
    Ok(Report {
        sha256: checks.active.sha256().to_owned(),
        contract: contract.to_owned(),
        file,
        plugin: info,
        outcomes: checks.outcomes,
        slowest_ms,
    })
}

fn describe_ok(info: &PluginInfo) -> Result<(), String> {
    if info.name.trim().is_empty() || info.version.trim().is_empty() {
        return Err(format!(
            "describe must name the plugin and its version, said name `{}` version `{}`",
            info.name, info.version
        ));
    }
    Ok(())
}

fn capabilities(info: &PluginInfo) -> String {
    let c = info.capabilities;
    let named = [
        (c.pause, "pause"),
        (c.logs, "logs"),
        (c.cluster_wide, "cluster-wide"),
        (c.concurrent, "concurrent"),
    ];
    let named: Vec<&str> = named
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    if named.is_empty() {
        "none".into()
    } else {
        named.join(", ")
    }
}

/// The state of a run: the two instances, what was created, every call's time.
pub(crate) struct Checks {
    options: CheckOptions,
    outcomes: Vec<Outcome>,
    calls: Arc<Mutex<Vec<(&'static str, Duration)>>>,
    /// Ids of containers the checks created (destroyed at the end, whatever happened).
    created: Arc<Mutex<Vec<String>>>,
    call_timeout: Duration,
    info: PluginInfo,
    active: Arc<WasmFactory>,
    standby: Option<Arc<WasmFactory>>,
}

impl Checks {
    fn record(&mut self, check: &str, took: Duration, result: Result<String, String>) {
        let (status, detail) = match result {
            Ok(seen) => (Status::Passed, seen),
            Err(why) => (Status::Failed, why),
        };
        self.outcomes.push(Outcome {
            check: check.into(),
            status,
            detail,
            ms: took.as_millis() as u64,
        });
    }

    fn skip(&mut self, check: &str, why: impl Into<String>) {
        self.outcomes.push(Outcome {
            check: check.into(),
            status: Status::Skipped,
            detail: why.into(),
            ms: 0,
        });
    }

    /// Whether the operator skipped `check` (then it is reported as skipped).
    fn skipped(&mut self, check: &str) -> bool {
        if self.options.skip.iter().any(|s| s == check) {
            self.skip(check, "skipped by --skip");
            return true;
        }
        false
    }

    /// Destroys what the checks created and did not destroy.
    async fn clean_up(&self) {
        let ids = std::mem::take(&mut *self.created.lock().expect("created lock"));
        for id in ids {
            let _ = self.active.destroy(&id).await;
        }
    }
}

/// Times a call to `op`, for the deadline check.
async fn timed<T>(
    calls: &Mutex<Vec<(&'static str, Duration)>>,
    op: &'static str,
    call: impl std::future::Future<Output = T>,
) -> T {
    let started = Instant::now();
    let result = call.await;
    calls
        .lock()
        .expect("calls lock")
        .push((op, started.elapsed()));
    result
}
