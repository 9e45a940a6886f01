//! Logging and tracing: the `tracing` subscriber every command logs through, as text or
//! JSON lines (`[log]`), and, when `[trace]` is configured, an OpenTelemetry layer that
//! exports the activations' spans over OTLP/HTTP. An activation's span continues the trace
//! the controller sent in its `traceContext` (W3C `traceparent`), see [`continue_trace`].

mod sections;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
pub use sections::{LogFormat, LogSection, TraceSection};
use std::collections::BTreeMap;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

const DEFAULT_FILTER: &str = "keepwarm=info,warn";

/// Flushes the spans still batched when dropped (at exit).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // the exporter blocks on its HTTP client: off the async workers
            let _ = std::thread::spawn(move || {
                if let Err(e) = provider.shutdown() {
                    eprintln!("flushing traces: {e}");
                }
            })
            .join();
        }
    }
}

/// Text lines on stderr, filtered by `RUST_LOG` (else `keepwarm=info,warn`): what every
/// command but `run` logs with.
pub fn text() {
    let _ = init(&LogSection::default(), None);
}

/// The process's subscriber from `[log]` and `[trace]`.
pub fn init(log: &LogSection, trace: Option<&TraceSection>) -> anyhow::Result<Telemetry> {
    let filter = || {
        EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(log.filter.as_deref().unwrap_or(DEFAULT_FILTER)))
    };
    let lines = match log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed(),
    };
    let provider = trace.map(exporting).transpose()?;
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("keepwarm"))
            .with_filter(EnvFilter::new("keepwarm=info"))
    });
    tracing_subscriber::registry()
        .with(lines)
        .with(spans)
        .try_init()
        .map_err(|e| anyhow::anyhow!("setting up logging: {e}"))?;
    if let Some(t) = trace {
        tracing::info!(endpoint = %t.endpoint, "exporting activation traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

/// A tracer provider batching spans to `trace`'s collector.
fn exporting(trace: &TraceSection) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let url = trace.traces_url().map_err(anyhow::Error::msg)?;
    let service = trace.service_name.clone();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // the blocking HTTP client starts a runtime of its own: built off the async workers
    std::thread::spawn(move || {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_headers(Default::default())
            .build()?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))?
}

/// Makes `span` a child of the controller's trace when the message carried a W3C trace
/// context (`traceparent`, `tracestate`); a no-op when tracing is off or there is none.
pub fn continue_trace(span: &tracing::Span, context: Option<&BTreeMap<String, String>>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(carrier) = context else {
        return;
    };
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Carrier(carrier)));
    let _ = span.set_parent(parent);
}

struct Carrier<'a>(&'a BTreeMap<String, String>);

impl opentelemetry::propagation::Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}
