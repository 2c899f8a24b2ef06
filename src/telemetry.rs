//! Logging and traces.
//!
//! Logs are structured (`key=value`, or JSON), with one span per job carrying message_id and
//! record_id. Never a payload value: the code logs kinds, ids and our own reasons only, and the panic
//! hook below keeps panic messages (which could quote a value) out of the log.
//!
//! Traces (`otel.endpoint`, off by default): each job's span is exported over OTLP/HTTP, as a child
//! of the uploader's trace when its message carried a W3C `traceparent`, and what the daemon
//! publishes for the record (events, callbacks, retries, dead letters) carries the job's own
//! context on. When off, nothing of OpenTelemetry is set up, and the uploader's context is carried
//! on as it came. A build without the `otel` cargo feature has no OpenTelemetry and no HTTP client
//! at all: it refuses a set `otel.endpoint` at start.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

#[cfg(feature = "otel")]
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
#[cfg(feature = "otel")]
use opentelemetry_sdk::trace::SdkTracerProvider;
#[cfg(feature = "otel")]
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LogSettings, OtelSettings};

/// Whether job spans are exported (set once, at start).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// What must be flushed before the process ends.
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still held, then stops the exporter. Call outside any async runtime.
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider {
            let _ = provider.shutdown();
        }
    }
}

/// Sets up logging, and trace export when `otel.endpoint` is set.
pub fn init(log: &LogSettings, otel: &OtelSettings) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = match log.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Pretty => fmt.boxed(),
    };
    #[cfg(feature = "otel")]
    {
        let provider = match otel.endpoint.trim() {
            "" => None,
            endpoint => Some(provider(endpoint, &otel.service_name)?),
        };
        let traces = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("edc-ingest"))
                .boxed()
        });
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .with(traces)
            .try_init();
        EXPORTING.store(provider.is_some(), Relaxed);
        install_panic_hook();
        Ok(Telemetry { provider })
    }
    #[cfg(not(feature = "otel"))]
    {
        if !otel.endpoint.trim().is_empty() {
            return Err(
                "otel.endpoint is set, but this build has no trace export (built without the \
                 `otel` cargo feature): empty otel.endpoint, or use a build with the feature"
                    .into(),
            );
        }
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init();
        install_panic_hook();
        Ok(Telemetry {})
    }
}

#[cfg(feature = "otel")]
fn provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("otel.endpoint: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Whether job spans are exported (`otel.endpoint` is set).
pub fn exporting() -> bool {
    EXPORTING.load(Relaxed)
}

/// Makes `span` a child of the remote span `traceparent` names (already checked to be a standard
/// W3C value). Nothing when traces are not exported.
#[cfg(not(feature = "otel"))]
pub fn set_remote_parent(_span: &tracing::Span, _traceparent: &str, _tracestate: Option<&str>) {}

/// Makes `span` a child of the remote span `traceparent` names (already checked to be a standard
/// W3C value). Nothing when traces are not exported.
#[cfg(feature = "otel")]
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    if !exporting() {
        return;
    }
    let parts: Vec<&str> = traceparent.split('-').collect();
    let [_, trace, parent, flags] = parts.as_slice() else {
        return;
    };
    let (Ok(trace), Ok(parent), Ok(flags)) = (
        TraceId::from_hex(trace),
        SpanId::from_hex(parent),
        u8::from_str_radix(flags, 16),
    ) else {
        return;
    };
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let remote = SpanContext::new(trace, parent, TraceFlags::new(flags), true, state);
    let parent = opentelemetry::Context::new().with_remote_span_context(remote);
    let _ = span.set_parent(parent);
}

/// The W3C `traceparent` and `tracestate` of `span` itself, when traces are exported.
#[cfg(not(feature = "otel"))]
pub fn context_of(_span: &tracing::Span) -> Option<(String, Option<String>)> {
    None
}

/// The W3C `traceparent` and `tracestate` of `span` itself, when traces are exported.
#[cfg(feature = "otel")]
pub fn context_of(span: &tracing::Span) -> Option<(String, Option<String>)> {
    if !exporting() {
        return None;
    }
    let context = span.context();
    let span_ref = context.span();
    let sc = span_ref.span_context();
    if !sc.is_valid() {
        return None;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let state = sc.trace_state().header();
    Some((traceparent, (!state.is_empty()).then_some(state)))
}

/// Logs where a panic happened, not what it said. A job's panic message reaches the dead letter
/// after a check that it does not quote the record (see `worker::fate::panic_reason`).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic caught (message withheld from the log)");
    }));
}
