//! Process-wide counters for the Prometheus endpoint (`api::metrics` renders them with the
//! store's gauges). A leaf module: the lifecycle and the upstream clients count here
//! without depending on anything above them.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counters {
    pub creates_created: AtomicU64,
    pub creates_refused: AtomicU64,
    pub creates_failed: AtomicU64,
    pub runs: AtomicU64,
    pub run_millis_last: AtomicU64,
    pub run_millis_total: AtomicU64,
    pub shipments_completed: AtomicU64,
    pub shipments_failed: AtomicU64,
    pub shipments_retried: AtomicU64,
    pub shipments_waiting: AtomicU64,
    pub shipments_flagged: AtomicU64,
    pub pin_mails_initial: AtomicU64,
    pub pin_mails_resent: AtomicU64,
    pub key_set_fetches: AtomicU64,
}

pub static COUNTERS: std::sync::LazyLock<Counters> = std::sync::LazyLock::new(Counters::default);

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
