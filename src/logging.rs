//! Structured JSON logs, and optionally traces over OTLP.
//!
//! `LOGGING_LEVEL_COM_YUBICO` (Java level names) sets the service's own level; dependencies
//! stay at WARN unless `RUST_LOG` says otherwise. With `FIDO_CONNECTOR_OTLP_ENDPOINT` set,
//! the same spans (each request; each shipment's processing with its ids, never a secret)
//! are also exported as OTLP/HTTP protobuf to that URL (an OpenTelemetry Collector, or
//! Azure Monitor through one), in batches, over the connector's own HTTP client (its
//! timeouts and trusted roots; https outside loopback).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, LogLevel};

static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// Sends OTLP requests with our reqwest client on the tokio runtime that built it (the
/// batch processor exports from a thread of its own).
#[derive(Debug)]
struct OtlpHttp {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let client = self.client.clone();
        let send = async move {
            let (parts, body) = request.into_parts();
            let mut rb = client
                .request(parts.method, parts.uri.to_string())
                .body(body);
            for (k, v) in parts.headers.iter() {
                rb = rb.header(k, v);
            }
            let resp = crate::metrics::send("otlp", rb).await?;
            let mut out = http::Response::builder().status(resp.status().as_u16());
            for (k, v) in resp.headers() {
                out = out.header(k.as_str(), v.as_bytes());
            }
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>(out.body(body))
        };
        let r = self.runtime.spawn(send).await??;
        Ok(r?)
    }
}

/// Where traces go, if anywhere.
pub struct Otlp {
    pub endpoint: url::Url,
    pub client: reqwest::Client,
}

pub fn init(level: LogLevel, format: LogFormat) {
    init_with(level, format, None);
}

/// Logs, plus traces to `otlp` when given (call from within the tokio runtime).
pub fn init_with(level: LogLevel, format: LogFormat, otlp: Option<Otlp>) {
    let filter = crate::config::log_filter(level);
    // One of the two is set: JSON objects for collectors, or readable lines.
    let (json, text) = match format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stdout),
            ),
            None,
        ),
        LogFormat::Text => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                    .with_writer(std::io::stdout),
            ),
        ),
    };
    let otel = otlp.and_then(|o| match tracer(o) {
        Ok(t) => Some(tracing_opentelemetry::layer().with_tracer(t)),
        Err(e) => {
            eprintln!("fido-connector: OTLP export disabled: {e}");
            None
        }
    });
    let _ = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(filter))
        .with(json)
        .with(text)
        .with(otel)
        .try_init();
}

fn tracer(o: Otlp) -> Result<opentelemetry_sdk::trace::SdkTracer, String> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(o.endpoint.as_str())
        .with_http_client(OtlpHttp {
            client: o.client,
            runtime: tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?,
        })
        .build()
        .map_err(|e| e.to_string())?;
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(std::time::Duration::from_secs(1))
                .build(),
        )
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("fido-connector")
                .build(),
        )
        .build();
    let tracer = provider.tracer("fido-connector");
    let _ = PROVIDER.set(provider);
    Ok(tracer)
}

/// Flushes spans not exported yet (at shutdown).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}
