//! `GET /metrics` in the Prometheus text format, on its own listener
//! (`FIDO_CONNECTOR_METRICS_LISTEN`, off by default) so it is never public by accident:
//! the process-wide counters ([`crate::metrics`]) and gauges of the store computed when
//! scraped (at most every 15 s; one scan of the open records). No label carries a user, a
//! shipment id or a secret.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lifecycle::Deps;
use crate::metrics::METRICS;

/// Counts of the store, by state, with the needs-attention count.
#[derive(Clone, Default)]
struct StoreGauges {
    ongoing: u64,
    needs_attention: u64,
}

static GAUGES: Mutex<Option<(Instant, StoreGauges)>> = Mutex::new(None);
const GAUGE_MAX_AGE: Duration = Duration::from_secs(15);
/// One refresh at a time: concurrent scrapes of stale gauges wait for the one scan.
static REFRESH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
static SCANS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Scans of the store made for the gauges (tests).
pub fn store_scans() -> u64 {
    SCANS.load(std::sync::atomic::Ordering::Relaxed)
}

fn fresh_gauges() -> Option<StoreGauges> {
    GAUGES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(at, _)| at.elapsed() < GAUGE_MAX_AGE)
        .map(|(_, g)| g.clone())
}

async fn store_gauges(deps: &Deps) -> Option<StoreGauges> {
    if let Some(g) = fresh_gauges() {
        return Some(g);
    }
    let _one = REFRESH.lock().await;
    // Another scrape may have refreshed them while this one waited.
    if let Some(g) = fresh_gauges() {
        return Some(g);
    }
    SCANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (open, flagged) = crate::lifecycle::list::open_counts(deps).await.ok()?;
    let g = StoreGauges {
        ongoing: open,
        needs_attention: flagged,
    };
    *GAUGES.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), g.clone()));
    Some(g)
}

/// The exposition: the registry, with the store gauges set from a scan of the open
/// records (cached 15 s).
pub async fn render(deps: &Deps) -> String {
    let m = &*METRICS;
    match store_gauges(deps).await {
        Some(g) => {
            m.shipments
                .get_or_create(&crate::metrics::State { state: "ongoing" })
                .set(g.ongoing as i64);
            m.needing_attention.set(g.needs_attention as i64);
            m.store_up.set(1);
        }
        None => {
            m.store_up.set(0);
        }
    }
    crate::metrics::encode()
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
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(&deps).await,
                )
            }
        }),
    )
}
