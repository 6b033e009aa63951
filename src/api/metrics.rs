//! `GET /metrics` in the Prometheus text format, on its own listener
//! (`FIDO_CONNECTOR_METRICS_LISTEN`, off by default) so it is never public by accident:
//! the process-wide counters ([`crate::metrics`]) and gauges of the store computed when
//! scraped (at most every 15 s; one scan of the records). No label carries a user, a
//! shipment id or a secret.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lifecycle::Deps;
use crate::metrics::COUNTERS;

/// Counts of the store, by state, with the needs-attention count.
#[derive(Clone, Default)]
struct StoreGauges {
    ongoing: u64,
    complete: u64,
    failed: u64,
    needs_attention: u64,
}

static GAUGES: Mutex<Option<(Instant, StoreGauges)>> = Mutex::new(None);
const GAUGE_MAX_AGE: Duration = Duration::from_secs(15);

async fn store_gauges(deps: &Deps) -> Option<StoreGauges> {
    if let Some((at, g)) = GAUGES.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        if at.elapsed() < GAUGE_MAX_AGE {
            return Some(g.clone());
        }
    }
    let items =
        crate::lifecycle::list::all_shipments(deps, &crate::lifecycle::list::ListFilter::default())
            .await
            .ok()?;
    let mut g = StoreGauges::default();
    for it in &items {
        match it.state {
            "complete" => g.complete += 1,
            "failed" => g.failed += 1,
            _ => g.ongoing += 1,
        }
        if it.needs_attention {
            g.needs_attention += 1;
        }
    }
    *GAUGES.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), g.clone()));
    Some(g)
}

fn series(out: &mut String, name: &str, kind: &str, help: &str, values: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in values {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

/// The exposition text.
pub async fn render(deps: &Deps) -> String {
    let c = &*COUNTERS;
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::new();
    series(
        &mut out,
        "fido_connector_creates_total",
        "counter",
        "Create requests by outcome.",
        &[
            ("outcome=\"created\"", l(&c.creates_created)),
            ("outcome=\"refused\"", l(&c.creates_refused)),
            ("outcome=\"failed\"", l(&c.creates_failed)),
        ],
    );
    series(
        &mut out,
        "fido_connector_processing_runs_total",
        "counter",
        "Processing runs finished.",
        &[("", l(&c.runs))],
    );
    series(
        &mut out,
        "fido_connector_processing_run_seconds_total",
        "counter",
        "Time spent in processing runs.",
        &[],
    );
    let _ = writeln!(
        out,
        "fido_connector_processing_run_seconds_total {:.3}",
        l(&c.run_millis_total) as f64 / 1000.0
    );
    series(
        &mut out,
        "fido_connector_processing_last_run_seconds",
        "gauge",
        "Duration of the last processing run.",
        &[],
    );
    let _ = writeln!(
        out,
        "fido_connector_processing_last_run_seconds {:.3}",
        l(&c.run_millis_last) as f64 / 1000.0
    );
    series(
        &mut out,
        "fido_connector_processed_shipments_total",
        "counter",
        "Shipments handled by processing runs, by outcome.",
        &[
            ("outcome=\"completed\"", l(&c.shipments_completed)),
            ("outcome=\"failed\"", l(&c.shipments_failed)),
            ("outcome=\"retrying\"", l(&c.shipments_retried)),
            ("outcome=\"waiting\"", l(&c.shipments_waiting)),
            ("outcome=\"flagged_unknown\"", l(&c.shipments_flagged)),
        ],
    );
    let retries: Vec<(String, u64)> = crate::metrics::RETRY_CAUSES
        .iter()
        .zip(c.retries.iter())
        .map(|(cause, n)| (format!("cause=\"{cause}\""), l(n)))
        .collect();
    let retries: Vec<(&str, u64)> = retries.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    series(
        &mut out,
        "fido_connector_retries_total",
        "counter",
        "Transient failures that put a shipment back to wait, by cause.",
        &retries,
    );
    series(
        &mut out,
        "fido_connector_pin_mails_total",
        "counter",
        "PIN mails accepted by the relay.",
        &[
            ("kind=\"initial\"", l(&c.pin_mails_initial)),
            ("kind=\"resend\"", l(&c.pin_mails_resent)),
        ],
    );
    series(
        &mut out,
        "fido_connector_key_set_fetches_total",
        "counter",
        "Fetches of published key sets (Yubico's and the callers' token keys).",
        &[("", l(&c.key_set_fetches))],
    );
    match store_gauges(deps).await {
        Some(g) => {
            series(
                &mut out,
                "fido_connector_shipments",
                "gauge",
                "Shipments in the store by state.",
                &[
                    ("state=\"ongoing\"", g.ongoing),
                    ("state=\"complete\"", g.complete),
                    ("state=\"failed\"", g.failed),
                ],
            );
            series(
                &mut out,
                "fido_connector_shipments_needing_attention",
                "gauge",
                "Shipments that need someone to look at them.",
                &[("", g.needs_attention)],
            );
            series(
                &mut out,
                "fido_connector_store_up",
                "gauge",
                "1 when the store answered the last scrape.",
                &[("", 1)],
            );
        }
        None => series(
            &mut out,
            "fido_connector_store_up",
            "gauge",
            "1 when the store answered the last scrape.",
            &[("", 0)],
        ),
    }
    out
}

/// The metrics listener's router.
pub fn router(deps: std::sync::Arc<Deps>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let deps = deps.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    render(&deps).await,
                )
            }
        }),
    )
}
