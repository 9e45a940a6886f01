//! The Prometheus metrics every host serves on `/metrics` (with `prometheus-client`): the
//! names OpenWhisk operators already graph, and keepwarm's own.
//!
//! - OpenWhisk's user-event metrics, named and labelled as upstream's `PrometheusRecorder`
//!   (user-events service, simpleclient 0.6) writes them: `openwhisk_action_activations_total`,
//!   `openwhisk_action_coldStarts_total`, `openwhisk_action_status`,
//!   `openwhisk_action_status_code`, `openwhisk_action_{waitTime,initTime,duration}_seconds`,
//!   `openwhisk_action_response_size_bytes`, `openwhisk_action_memory`. One activation
//!   record is one event, as upstream's `Activation.from(WhiskActivation)` reads it.
//! - The container pool's gauges (upstream's `containerPool_*` markers).
//! - keepwarm's own: failover time, containers adopted and lost per takeover, lease lapses,
//!   plugin call latency and faults by plugin and operation.
//!
//! The registry is process-wide ([`global`]): activations, takeovers, leases and plugin calls
//! happen in different modules and each records where it happens.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// simpleclient's default buckets (seconds), which upstream's histograms use.
const UPSTREAM_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Upstream's `MAX_ACTIVATION_ENTITY_LIMIT` (1 MiB): the response size buckets are ten of it.
const ENTITY_LIMIT_BYTES: f64 = 1_048_576.0;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActivationLabels {
    namespace: String,
    initiator: String,
    action: String,
    kind: String,
    memory: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    namespace: String,
    initiator: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    namespace: String,
    initiator: String,
    action: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusCodeLabels {
    namespace: String,
    initiator: String,
    action: String,
    status_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FateLabels {
    fate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    plugin: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    plugin: String,
    operation: String,
    fault: String,
}

/// A counter written as simpleclient 0.6 writes one: the sample carries the registered name
/// as is (`openwhisk_action_status`, `openwhisk_action_activations_total`), the `# TYPE`
/// line the same name, so a parser of the text format (0.0.4) files every sample under
/// its counter.
#[derive(Debug, Default, Clone)]
struct UpstreamCounter(Counter);

impl UpstreamCounter {
    fn inc(&self) -> u64 {
        self.0.inc()
    }

    fn inc_by(&self, n: u64) -> u64 {
        self.0.inc_by(n)
    }
}

impl TypedMetric for UpstreamCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for UpstreamCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&(self.0.get() as i64))
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Registers a counter whose samples carry `name` (ending in `_total`) as it is, declared
/// under the same name. The registry's own `register` refuses such a counter name (it adds
/// the suffix itself, on the samples only), so it goes in as a collector.
fn register_total<M>(r: &mut Registry, name: &'static str, help: &'static str, metric: M)
where
    M: EncodeMetric + std::fmt::Debug + Send + Sync + 'static,
{
    r.register_collector(Box::new(Named { name, help, metric }));
}

#[derive(Debug)]
struct Named<M> {
    name: &'static str,
    help: &'static str,
    metric: M,
}

impl<M: EncodeMetric + std::fmt::Debug + Send + Sync + 'static> Collector for Named<M> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metric =
            encoder.encode_descriptor(self.name, self.help, None, self.metric.metric_type())?;
        self.metric.encode(metric)
    }
}

#[derive(Clone, Debug)]
struct Buckets(fn() -> Vec<f64>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new((self.0)())
    }
}

fn seconds_buckets() -> Vec<f64> {
    UPSTREAM_BUCKETS.to_vec()
}

fn size_buckets() -> Vec<f64> {
    (0..10).map(|i| i as f64 * ENTITY_LIMIT_BYTES).collect()
}

/// Plugin calls take from tens of microseconds to the call deadline.
fn call_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ]
}

/// Failovers are budgeted in hundreds of milliseconds; a slow one takes seconds.
fn failover_buckets() -> Vec<f64> {
    vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0]
}

/// Upstream's `Activation` event (`connector/Message.scala`), read from a finished
/// activation's record by `WhiskActivation::event`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationEvent {
    /// The root of the action's path.
    pub namespace: String,
    /// The rest of the path: `[package/]name`.
    pub action: String,
    /// The invoking user's namespace.
    pub initiator: String,
    pub kind: String,
    pub memory_mb: i64,
    /// `success`, `application_error`, `action_developer_error`, `whisk_internal_error`.
    pub status: &'static str,
    pub wait_ms: i64,
    /// 0: no initialization (a warm start).
    pub init_ms: i64,
    pub duration_ms: i64,
    /// Bytes of the result.
    pub size: Option<usize>,
    /// The `statusCode` the action put in its result.
    pub user_status_code: Option<i64>,
}

/// The active host's pool, by state.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolCounts {
    pub prewarm: usize,
    pub warm: usize,
    pub busy: usize,
    pub used_mb: u64,
}

/// Activations finished by this host.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Activity {
    /// Since the process started.
    pub total: u64,
    /// Over the last 10 s.
    pub per_second: f64,
    /// Controller's transaction start to the activation's end, over the last 10 s.
    pub p50_ms: u64,
    pub p99_ms: u64,
}

/// Every metric this process exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    activations: Family<ActivationLabels, UpstreamCounter>,
    cold_starts: Family<ActionLabels, UpstreamCounter>,
    status: Family<StatusLabels, UpstreamCounter>,
    status_code: Family<StatusCodeLabels, UpstreamCounter>,
    wait_time: Family<ActionLabels, Histogram, Buckets>,
    init_time: Family<ActionLabels, Histogram, Buckets>,
    duration: Family<ActionLabels, Histogram, Buckets>,
    response_size: Family<ActionLabels, Histogram, Buckets>,
    memory: Family<ActionLabels, Gauge>,
    pool_count: Family<StateLabels, Gauge>,
    pool_memory: Gauge,
    failover: Histogram,
    takeover_containers: Family<FateLabels, UpstreamCounter>,
    lease_lapses: UpstreamCounter,
    publish_retries: UpstreamCounter,
    activation_copies: UpstreamCounter,
    plugin_calls: Family<CallLabels, Histogram, Buckets>,
    plugin_faults: Family<FaultLabels, UpstreamCounter>,
    acks_dropped: Family<ReasonLabels, UpstreamCounter>,
    /// Finish instant and latency (ms) of the activations of the last [`WINDOW`].
    recent: Mutex<VecDeque<(Instant, u64)>>,
    finished: AtomicU64,
}

/// What the status's activity covers.
const WINDOW: Duration = Duration::from_secs(10);

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let histograms = |f: fn() -> Vec<f64>| Family::new_with_constructor(Buckets(f));
        let m = Metrics {
            activations: Family::default(),
            cold_starts: Family::default(),
            status: Family::default(),
            status_code: Family::default(),
            wait_time: histograms(seconds_buckets),
            init_time: histograms(seconds_buckets),
            duration: histograms(seconds_buckets),
            response_size: histograms(size_buckets),
            memory: Family::default(),
            pool_count: Family::default(),
            pool_memory: Gauge::default(),
            failover: Histogram::new(failover_buckets()),
            takeover_containers: Family::default(),
            lease_lapses: UpstreamCounter::default(),
            publish_retries: UpstreamCounter::default(),
            activation_copies: UpstreamCounter::default(),
            plugin_calls: Family::new_with_constructor(Buckets(call_buckets)),
            plugin_faults: Family::default(),
            acks_dropped: Family::default(),
            recent: Mutex::default(),
            finished: AtomicU64::new(0),
            registry: Registry::default(),
        };
        m.register_upstream(&mut registry);
        m.register_keepwarm(&mut registry);
        Metrics { registry, ..m }
    }

    /// Upstream's user-events metrics and container-pool gauges, named as upstream names them.
    fn register_upstream(&self, r: &mut Registry) {
        let m = self;
        register_total(
            r,
            "openwhisk_action_activations_total",
            "Activation Count",
            m.activations.clone(),
        );
        register_total(
            r,
            "openwhisk_action_coldStarts_total",
            "Cold start counts",
            m.cold_starts.clone(),
        );
        r.register(
            "openwhisk_action_status",
            "Activation failure status type",
            m.status.clone(),
        );
        r.register(
            "openwhisk_action_status_code",
            "status code returned in action result response set by developer",
            m.status_code.clone(),
        );
        r.register(
            "openwhisk_action_waitTime_seconds",
            "Internal system hold time",
            m.wait_time.clone(),
        );
        r.register(
            "openwhisk_action_initTime_seconds",
            "Time it took to initialize an action, e.g. docker init",
            m.init_time.clone(),
        );
        r.register(
            "openwhisk_action_duration_seconds",
            "Actual time the action code was running",
            m.duration.clone(),
        );
        r.register(
            "openwhisk_action_response_size_bytes",
            "Activation Response size",
            m.response_size.clone(),
        );
        r.register(
            "openwhisk_action_memory",
            "Memory consumption of the action containers",
            m.memory.clone(),
        );
        r.register(
            "openwhisk_containerPool_containers",
            "Containers of the active host's pool by state: prewarmed, warmed (idle), busy, all",
            m.pool_count.clone(),
        );
        r.register(
            "openwhisk_containerPool_memory_megabytes",
            "Memory (the actions' limits, MB) the active host's pool holds",
            m.pool_memory.clone(),
        );
    }

    /// What keepwarm adds: failovers, takeovers, the lease, acknowledgements and plugins.
    fn register_keepwarm(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "keepwarm_failover_seconds",
            "Takeovers by this host: from the claim's election (this host became leader) to consuming",
            m.failover.clone(),
        );
        register_total(
            r,
            "keepwarm_takeover_containers_total",
            "Containers by fate at this host's takeovers: adopted (re-attached), lost (gone or unhealthy), busy_destroyed, orphans_destroyed, quarantine_adopted, quarantine_destroyed",
            m.takeover_containers.clone(),
        );
        register_total(
            r,
            "keepwarm_lease_lapses_total",
            "Times the active host's lease lapsed (no quorum acknowledgement within lease-ms)",
            m.lease_lapses.clone(),
        );
        register_total(
            r,
            "keepwarm_publish_retries_total",
            "Acknowledgements sent again after a broker error",
            m.publish_retries.clone(),
        );
        register_total(
            r,
            "keepwarm_activation_copies_skipped_total",
            "Activation messages whose activation id this feed had already taken (a producer's retry): not run",
            m.activation_copies.clone(),
        );
        r.register(
            "keepwarm_plugin_call_seconds",
            "Plugin calls by plugin and operation: time inside the sandbox",
            m.plugin_calls.clone(),
        );
        register_total(
            r,
            "keepwarm_plugin_faults_total",
            "Plugin calls that faulted, by plugin, operation and fault (trap, timeout, memory_cap, factory_error)",
            m.plugin_faults.clone(),
        );
        register_total(
            r,
            "keepwarm_acknowledgements_dropped_total",
            "Acknowledgements given up on, by reason (too_large even shrunk, invalid_topic, illegal_topic, unpublishable for 60 s)",
            m.acks_dropped.clone(),
        );
    }

    /// One finished activation, as upstream's user-events service records an `Activation`
    /// event.
    pub fn activation(&self, e: &ActivationEvent) {
        let action_labels = ActionLabels {
            namespace: e.namespace.clone(),
            initiator: e.initiator.clone(),
            action: e.action.clone(),
        };
        self.activations
            .get_or_create(&ActivationLabels {
                namespace: e.namespace.clone(),
                initiator: e.initiator.clone(),
                action: e.action.clone(),
                kind: e.kind.clone(),
                memory: e.memory_mb.to_string(),
            })
            .inc();
        self.memory.get_or_create(&action_labels).set(e.memory_mb);
        self.finished(e.wait_ms + e.duration_ms);
        if e.init_ms > 0 {
            self.cold_starts.get_or_create(&action_labels).inc();
            self.init_time
                .get_or_create(&action_labels)
                .observe(e.init_ms as f64 / 1000.0);
        }
        self.wait_time
            .get_or_create(&action_labels)
            .observe(e.wait_ms as f64 / 1000.0);
        self.duration
            .get_or_create(&action_labels)
            .observe(e.duration_ms as f64 / 1000.0);
        self.status
            .get_or_create(&StatusLabels {
                namespace: e.namespace.clone(),
                initiator: e.initiator.clone(),
                action: e.action.clone(),
                status: e.status.to_owned(),
            })
            .0
            .inc();
        if let Some(size) = e.size {
            self.response_size
                .get_or_create(&action_labels)
                .observe(size as f64);
        }
        if let Some(code) = e.user_status_code {
            self.status_code
                .get_or_create(&StatusCodeLabels {
                    namespace: e.namespace.clone(),
                    initiator: e.initiator.clone(),
                    action: e.action.clone(),
                    status_code: code.to_string(),
                })
                .0
                .inc();
        }
    }

    fn finished(&self, latency_ms: i64) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut recent = self.recent.lock().expect("recent lock");
        while recent.front().is_some_and(|(at, _)| now - *at > WINDOW) {
            recent.pop_front();
        }
        recent.push_back((now, latency_ms.max(0) as u64));
    }

    /// Activations finished: in all, and rate and latency over the last 10 s.
    pub fn activity(&self) -> Activity {
        let now = Instant::now();
        let mut latencies: Vec<u64> = {
            let recent = self.recent.lock().expect("recent lock");
            recent
                .iter()
                .filter(|(at, _)| now - *at <= WINDOW)
                .map(|(_, l)| *l)
                .collect()
        };
        latencies.sort_unstable();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0)
        };
        Activity {
            total: self.finished.load(Ordering::Relaxed),
            per_second: latencies.len() as f64 / WINDOW.as_secs_f64(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
        }
    }

    /// A takeover finished: how long from this host's election to consuming, and how many
    /// replicated containers met each fate (`adopted`, `lost`, ...).
    pub fn takeover(&self, took: Duration, fates: &[(&str, usize)]) {
        self.failover.observe(took.as_secs_f64());
        for (fate, n) in fates {
            self.takeover_containers
                .get_or_create(&FateLabels {
                    fate: (*fate).to_owned(),
                })
                .inc_by(*n as u64);
        }
    }

    /// Containers held apart after a takeover: adopted once their activation ended, or
    /// destroyed.
    pub fn quarantine(&self, adopted: usize, destroyed: usize) {
        for (fate, n) in [
            ("quarantine_adopted", adopted),
            ("quarantine_destroyed", destroyed),
        ] {
            self.takeover_containers
                .get_or_create(&FateLabels { fate: fate.into() })
                .inc_by(n as u64);
        }
    }

    pub fn lease_lapsed(&self) {
        self.lease_lapses.inc();
    }

    /// An acknowledgement to be sent again after a broker error.
    pub fn publish_retried(&self) {
        self.publish_retries.inc();
    }

    /// A copy of an activation message this feed already took, not run.
    pub fn activation_copy_skipped(&self) {
        self.activation_copies.inc();
    }

    /// Acknowledgements sent again since the process started.
    pub fn publish_retries(&self) -> u64 {
        self.publish_retries.0.get()
    }

    /// One plugin call and how it ended (`None`: it answered, `factory-error` included).
    pub fn plugin_call(&self, plugin: &str, operation: &str, took: Duration, fault: Option<&str>) {
        let labels = CallLabels {
            plugin: plugin.to_owned(),
            operation: operation.to_owned(),
        };
        self.plugin_calls
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(fault) = fault {
            self.plugin_faults
                .get_or_create(&FaultLabels {
                    plugin: labels.plugin,
                    operation: labels.operation,
                    fault: fault.to_owned(),
                })
                .inc();
        }
    }

    /// An acknowledgement given up on.
    pub fn acknowledgement_dropped(&self, reason: &str) {
        self.acks_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the pool's gauges set from `pool` (the active host's) first.
    pub fn encode(&self, pool: Option<PoolCounts>) -> String {
        if let Some(p) = pool {
            for (state, n) in [
                ("prewarmed", p.prewarm),
                ("warmed", p.warm),
                ("busy", p.busy),
                ("all", p.prewarm + p.warm + p.busy),
            ] {
                self.pool_count
                    .get_or_create(&StateLabels {
                        state: state.into(),
                    })
                    .set(n as i64);
            }
            self.pool_memory.set(p.used_mb as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: &'static str, init_ms: i64, user_status_code: Option<i64>) -> ActivationEvent {
        ActivationEvent {
            namespace: "guest".into(),
            action: "pkg/hello".into(),
            initiator: "alice".into(),
            kind: "nodejs:20".into(),
            memory_mb: 256,
            status,
            wait_ms: 12,
            init_ms,
            duration_ms: 30,
            size: Some(11),
            user_status_code,
        }
    }

    #[test]
    fn an_activation_is_counted_under_upstreams_names_and_labels() {
        let m = Metrics::new();
        m.activation(&event("success", 40, None));
        m.activation(&event("action_developer_error", 0, Some(404)));
        let text = m.encode(None);
        for line in [
            r#"openwhisk_action_activations_total{namespace="guest",initiator="alice",action="pkg/hello",kind="nodejs:20",memory="256"} 2"#,
            r#"openwhisk_action_coldStarts_total{namespace="guest",initiator="alice",action="pkg/hello"} 1"#,
            r#"openwhisk_action_status{namespace="guest",initiator="alice",action="pkg/hello",status="success"} 1"#,
            r#"openwhisk_action_status{namespace="guest",initiator="alice",action="pkg/hello",status="action_developer_error"} 1"#,
            r#"openwhisk_action_status_code{namespace="guest",initiator="alice",action="pkg/hello",status_code="404"} 1"#,
            r#"openwhisk_action_initTime_seconds_count{namespace="guest",initiator="alice",action="pkg/hello"} 1"#,
            r#"openwhisk_action_waitTime_seconds_bucket{le="0.025",namespace="guest",initiator="alice",action="pkg/hello"} 2"#,
            r#"openwhisk_action_memory{namespace="guest",initiator="alice",action="pkg/hello"} 256"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        assert!(text.contains("# TYPE openwhisk_action_status counter"));
        assert!(text.contains("# TYPE openwhisk_action_activations_total counter"));
        // as a 0.0.4 parser reads it: every sample under the family its `# TYPE` declared
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split(' ').next().unwrap().to_owned();
            } else if !line.starts_with('#') && !line.is_empty() {
                let name = line.split(['{', ' ']).next().unwrap();
                let suffix = name.strip_prefix(family.as_str());
                assert!(
                    matches!(suffix, Some("" | "_bucket" | "_sum" | "_count")),
                    "`{name}` is not a sample of `{family}`"
                );
            }
        }
        // 12 ms waiting + 30 ms running, twice
        let activity = m.activity();
        assert_eq!(
            (activity.total, activity.p50_ms, activity.p99_ms),
            (2, 42, 42)
        );
        assert!((activity.per_second - 0.2).abs() < 1e-9);
    }
}
