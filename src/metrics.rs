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
    /// Transient failures that put a shipment back to wait, by cause ([`RETRY_CAUSES`]).
    pub retries: [AtomicU64; RETRY_CAUSES.len()],
}

/// Causes of retries, as metric labels (a fixed set: no cardinality from messages).
pub const RETRY_CAUSES: [&str; 6] = ["yubienterprise", "entra", "mail", "keys", "store", "other"];

/// The cause of a transient failure, from the context its message starts with.
pub fn retry_cause(message: &str) -> usize {
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
    idx.min(RETRY_CAUSES.len() - 1)
}

pub static COUNTERS: std::sync::LazyLock<Counters> = std::sync::LazyLock::new(Counters::default);

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
