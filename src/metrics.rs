//! Process-wide metrics for the Prometheus endpoint, on the `prometheus-client` crate (the
//! Prometheus project's Rust client: registry, counters, histograms and the text
//! exposition). `api::metrics` sets the store gauges and renders the registry. A leaf
//! module: the lifecycle and the upstream clients count here without depending on anything
//! above them. No label carries a user, a shipment id, a URL or a secret: every label value
//! comes from a fixed set in this file, except `idp`, an instance name of the deployment's
//! multi-IdP file (validated at start).

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cause {
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Mail {
    pub kind: &'static str,
    pub outcome: &'static str,
    /// The identity-provider instance (`default` in single-IdP mode).
    pub idp: String,
}

/// A create's outcome, by identity-provider instance.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Create {
    pub outcome: &'static str,
    pub idp: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Call {
    pub service: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Service {
    pub service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Lane {
    pub service: &'static str,
    pub method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Alert {
    pub cause: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    pub state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    pub registry: Registry,
    pub creates: Family<Create, Counter>,
    pub runs: Counter,
    pub run_seconds: Histogram,
    pub run_shipments: Histogram,
    pub processed: Family<Outcome, Counter>,
    pub retries: Family<Cause, Counter>,
    pub pin_mails: Family<Mail, Counter>,
    pub key_set_fetches: Counter,
    pub claim_takeovers: Counter,
    pub alerts: Family<Alert, Counter>,
    pub upstream: HistogramFamily<Call>,
    pub throttled: Family<Service, Counter>,
    pub paused_seconds: Family<Service, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub call_limit: Family<Lane, Gauge>,
    pub shipments: Family<State, Gauge>,
    pub needing_attention: Gauge,
    pub store_up: Gauge,
}

fn upstream_histogram() -> Histogram {
    // 5 ms … ~20 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("fido_connector");
        let m = Metrics {
            registry: Registry::default(),
            creates: Family::default(),
            runs: Counter::default(),
            run_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            run_shipments: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            processed: Family::default(),
            retries: Family::default(),
            pin_mails: Family::default(),
            key_set_fetches: Counter::default(),
            claim_takeovers: Counter::default(),
            alerts: Family::default(),
            upstream: Family::new_with_constructor(upstream_histogram),
            throttled: Family::default(),
            paused_seconds: Family::default(),
            call_limit: Family::default(),
            shipments: Family::default(),
            needing_attention: Gauge::default(),
            store_up: Gauge::default(),
        };
        registry.register("creates", "Create requests by outcome", m.creates.clone());
        registry.register(
            "processing_runs",
            "Processing runs finished",
            m.runs.clone(),
        );
        registry.register(
            "processing_run_seconds",
            "Duration of processing runs",
            m.run_seconds.clone(),
        );
        registry.register(
            "processing_run_shipments",
            "Shipments examined per processing run",
            m.run_shipments.clone(),
        );
        registry.register(
            "processed_shipments",
            "Shipments handled by processing runs, by outcome",
            m.processed.clone(),
        );
        registry.register(
            "retries",
            "Transient failures that put a shipment back to wait, by cause",
            m.retries.clone(),
        );
        registry.register(
            "pin_mails",
            "PIN mails by kind (initial, resend) and outcome (sent, failed)",
            m.pin_mails.clone(),
        );
        registry.register(
            "key_set_fetches",
            "Fetches of published key sets (Yubico's and the callers' token keys)",
            m.key_set_fetches.clone(),
        );
        registry.register(
            "claim_takeovers",
            "Shipments taken over from a claim another process held and let lapse (a dead or restarted replica)",
            m.claim_takeovers.clone(),
        );
        registry.register(
            "alerts",
            "Alerts by cause and outcome (sent, skipped without a webhook, failed)",
            m.alerts.clone(),
        );
        registry.register(
            "upstream_request_seconds",
            "Calls to upstream services by service and outcome, with their latency",
            m.upstream.clone(),
        );
        registry.register(
            "shipments",
            "Shipments still in processing (ended ones are counted by processed_shipments)",
            m.shipments.clone(),
        );
        registry.register(
            "shipments_needing_attention",
            "Shipments in processing that need someone to look at them",
            m.needing_attention.clone(),
        );
        registry.register(
            "upstream_throttled",
            "Answers of 429, or 503 with Retry-After, by upstream",
            m.throttled.clone(),
        );
        registry.register(
            "upstream_paused_seconds",
            "Time calls to an upstream were held for its stated pace",
            m.paused_seconds.clone(),
        );
        registry.register(
            "upstream_call_limit",
            "Calls to an upstream this process lets be in flight (adaptive)",
            m.call_limit.clone(),
        );
        registry.register(
            "store_up",
            "1 when the store answered the last scrape",
            m.store_up.clone(),
        );
        Metrics { registry, ..m }
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Causes of retries, as metric labels (a fixed set: no cardinality from messages).
pub const RETRY_CAUSES: [&str; 6] = ["yubienterprise", "entra", "mail", "keys", "store", "other"];

/// The cause of a transient failure, from the context its message starts with.
pub fn retry_cause(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    let idx = if m.starts_with("yubienterprise") {
        0
    } else if m.starts_with("entra") {
        1
    } else if m.starts_with("pin mail") || m.starts_with("mail") {
        2
    } else if m.contains("key set") || m.contains("signing key") || m.contains("yubico keys") {
        3
    } else if m.contains("store") || m.contains("key vault") || m.contains("secret") {
        4
    } else {
        5
    };
    RETRY_CAUSES[idx]
}

pub fn alert(cause: &'static str, outcome: &'static str) {
    METRICS
        .alerts
        .get_or_create(&Alert { cause, outcome })
        .inc();
}

/// A create's outcome; `idp` is an instance name of the deployment (validated, and as
/// few as the multi-IdP file names) or `unknown` for a create naming none of them.
pub fn created(outcome: &'static str, idp: &str) {
    METRICS
        .creates
        .get_or_create(&Create {
            outcome,
            idp: idp.to_string(),
        })
        .inc();
}

pub fn retried(message: &str) {
    METRICS
        .retries
        .get_or_create(&Cause {
            cause: retry_cause(message),
        })
        .inc();
}

pub fn pin_mail(kind: &'static str, sent: bool, idp: &str) {
    let outcome = if sent { "sent" } else { "failed" };
    METRICS
        .pin_mails
        .get_or_create(&Mail {
            kind,
            outcome,
            idp: idp.to_string(),
        })
        .inc();
}

/// Sends a request to a service, recording its latency under the service and the outcome
/// class (`ok`, `client_error`, `throttled`, `server_error`, `timeout`, `transport`).
pub async fn send(
    service: &'static str,
    req: reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    let (client, request) = req.build_split();
    execute(service, &client, request?).await
}

/// A 429 (or a 503 with `Retry-After`) from `service`, and the pause it stated.
pub fn throttled(service: &'static str, pause: std::time::Duration) {
    METRICS.throttled.get_or_create(&Service { service }).inc();
    METRICS
        .paused_seconds
        .get_or_create(&Service { service })
        .inc_by(pause.as_secs_f64());
}

/// The calls to `service` (with `method`) this process lets be in flight now.
pub fn call_limit(service: &'static str, method: &str, limit: f64) {
    let method = match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "other",
    };
    METRICS
        .call_limit
        .get_or_create(&Lane { service, method })
        .set(limit as i64);
}

/// As [`send`], for a request already built.
pub async fn execute(
    service: &'static str,
    client: &reqwest::Client,
    request: reqwest::Request,
) -> Result<reqwest::Response, reqwest::Error> {
    let started = Instant::now();
    let r = client.execute(request).await;
    let outcome = match &r {
        Ok(resp) => match resp.status().as_u16() {
            200..=399 => "ok",
            429 => "throttled",
            400..=499 => "client_error",
            _ => "server_error",
        },
        Err(e) if e.is_timeout() => "timeout",
        Err(_) => "transport",
    };
    METRICS
        .upstream
        .get_or_create(&Call { service, outcome })
        .observe(started.elapsed().as_secs_f64());
    r
}

/// The registry in the text exposition format (OpenMetrics 1.0).
pub fn encode() -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &METRICS.registry);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_come_from_a_fixed_set() {
        assert_eq!(super::retry_cause("YubiEnterprise: 503"), "yubienterprise");
        assert_eq!(super::retry_cause("PIN mail: relay down"), "mail");
        assert_eq!(super::retry_cause("anything else"), "other");
    }
}
