//! Telemetry shared by every role: logs, metrics and traces.
//!
//! - [`init`] installs the `tracing` log subscriber (stderr, `RUST_LOG`), an
//!   OpenTelemetry meter provider whose metrics are always readable as
//!   Prometheus text ([`prometheus_text`], served on `/metrics` next to the
//!   health endpoints) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
//!   signal-specific variable) is set, exported over OTLP/gRPC together with
//!   the traces.
//! - Traces follow one chat event through the services: ingest starts a root
//!   span ([`root_span`]) and writes its W3C trace context into the NATS
//!   headers ([`inject`]); every later hop reads it back ([`extract`]) and
//!   starts a child ([`child_span`]). Nothing is traced unless an OTLP
//!   endpoint is configured, and then a ratio of the roots (default 1 %,
//!   `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` override it).
//! - [`metrics`] holds the instruments the roles record.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};

pub use opentelemetry::Context as TraceContext;
pub use opentelemetry::KeyValue;

mod instruments;
pub use instruments::{Metrics, metrics};

/// Default share of root spans sampled when `OTEL_TRACES_SAMPLER` is unset.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;

const TRACER: &str = "spamscope";

static TRACING: AtomicBool = AtomicBool::new(false);
static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Otlp(String),
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
}

/// Keeps the providers alive; flushes what is buffered when dropped.
#[derive(Debug)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: SdkMeterProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            let _ = t.force_flush();
            let _ = t.shutdown();
        }
        let _ = self.meter.shutdown();
        TRACING.store(false, Ordering::Relaxed);
    }
}

/// Whether an OTLP endpoint is configured in the environment.
pub fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()))
}

/// Installs logging, metrics and (with an OTLP endpoint) tracing for the
/// role `service` (the OpenTelemetry `service.name` unless
/// `OTEL_SERVICE_NAME` says otherwise). Must run inside a Tokio runtime.
pub fn init(service: &str) -> Result<Telemetry, TelemetryError> {
    init_with(service, "info")
}

/// [`init`] with `log_default` as the log filter when `RUST_LOG` is unset.
pub fn init_with(service: &str, log_default: &str) -> Result<Telemetry, TelemetryError> {
    init_logging_or(log_default);
    let mut resource = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(format!("spamscope-{service}"));
    }
    let resource = resource.build();

    let registry = REGISTRY.get_or_init(prometheus::Registry::new).clone();
    let prom = opentelemetry_prometheus::exporter()
        .with_registry(registry)
        .build()
        .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
    let mut meter = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(prom);
    let otlp = otlp_configured();
    if otlp {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
        meter = meter.with_periodic_exporter(exporter);
    }
    let meter = meter.build();
    global::set_meter_provider(meter.clone());

    let tracer = if otlp {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
        let mut b = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter);
        if std::env::var("OTEL_TRACES_SAMPLER").is_err() {
            b = b.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                DEFAULT_SAMPLE_RATIO,
            ))));
        }
        let provider = b.build();
        global::set_tracer_provider(provider.clone());
        TRACING.store(true, Ordering::Relaxed);
        tracing::info!(service, "OTLP export of traces and metrics on");
        Some(provider)
    } else {
        None
    };
    Ok(Telemetry { tracer, meter })
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    init_logging_or("info");
}

/// Logs to stderr; `RUST_LOG` filters (default `default`).
pub fn init_logging_or(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Every metric of this process in the Prometheus text format (empty
/// before [`init`]).
pub fn prometheus_text() -> String {
    use prometheus::Encoder;
    let Some(registry) = REGISTRY.get() else {
        return String::new();
    };
    let mut out = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "metrics do not encode");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Whether spans are recorded at all (an OTLP endpoint is configured).
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Starts a root span (sampled by ratio); `None` when tracing is off or the
/// sampler dropped it. `attrs` runs only when tracing is on: callers sit on
/// the per-event path.
pub fn root_span(name: &'static str, attrs: impl FnOnce() -> Vec<KeyValue>) -> Option<Context> {
    if !tracing_enabled() {
        return None;
    }
    let attrs = attrs();
    let tracer = global::tracer(TRACER);
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Producer)
        .with_attributes(attrs)
        .start(&tracer);
    if !span.span_context().is_sampled() {
        return None;
    }
    Some(Context::new().with_span(span))
}

/// Starts a span under `parent` (a context read from message headers).
pub fn child_span(name: &'static str, parent: &Context, attrs: Vec<KeyValue>) -> Context {
    let tracer = global::tracer(TRACER);
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Consumer)
        .with_attributes(attrs)
        .start_with_context(&tracer, parent);
    parent.with_span(span)
}

/// Ends the span of `cx` (spans also end when their context is dropped).
pub fn end(cx: &Context) {
    cx.span().end();
}

/// The `service` attribute of every metric.
pub fn service(name: &'static str) -> [KeyValue; 1] {
    [KeyValue::new("service", name)]
}

/// Writes the W3C trace context (`traceparent`, `tracestate`) of `cx` into
/// NATS message headers.
pub fn inject(cx: &Context, headers: &mut async_nats::HeaderMap) {
    struct H<'a>(&'a mut async_nats::HeaderMap);
    impl Injector for H<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key, value.as_str());
        }
    }
    TraceContextPropagator::new().inject_context(cx, &mut H(headers));
}

/// The sampled trace context carried by NATS message headers, if any.
pub fn extract(headers: Option<&async_nats::HeaderMap>) -> Option<Context> {
    struct H<'a>(&'a async_nats::HeaderMap);
    impl Extractor for H<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(|v| v.as_str())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_ref()).collect()
        }
    }
    if !tracing_enabled() {
        return None;
    }
    let headers = headers?;
    headers.get("traceparent")?;
    let cx = TraceContextPropagator::new().extract(&H(headers));
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled()).then_some(cx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_survives_nats_headers() {
        TRACING.store(true, Ordering::Relaxed);
        let sc = opentelemetry::trace::SpanContext::new(
            opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            opentelemetry::trace::SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            opentelemetry::trace::TraceFlags::SAMPLED,
            true,
            Default::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut h = async_nats::HeaderMap::new();
        inject(&cx, &mut h);
        assert_eq!(
            h.get("traceparent").unwrap().as_str(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let back = extract(Some(&h)).expect("sampled context read back");
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
        assert_eq!(back.span().span_context().span_id(), sc.span_id());

        let mut garbage = async_nats::HeaderMap::new();
        garbage.insert("traceparent", "not-a-trace");
        assert!(extract(Some(&garbage)).is_none());
        assert!(extract(None).is_none());
    }
}
