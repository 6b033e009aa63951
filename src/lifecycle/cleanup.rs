//! Deletes ended records (complete or failed) older than
//! `CRON_DATA_CLEANUP_COMPLETED_DAYS`, or, where that is the vendor's 0 ("never"), older
//! than `FIDO_CONNECTOR_RETENTION_DAYS` (400; 0 keeps them), and purges their response
//! keys: nothing kept for ever by default. The key
//! goes first: a record without its key is harmless, a key without its record would be an
//! orphaned secret.
//!
//! Once a day (per process) it also has the store repair index entries a crash may have
//! left out ([`crate::store::ShipmentStore::repair_indexes`]): a safety net behind the
//! write order that keeps them consistent.

use chrono::Duration;

use super::{Deps, LifecycleError};
use crate::store::{Query, StoreError};

/// When this process last repaired the store's indexes (Unix seconds of the deps' clock).
static LAST_REPAIR: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);
const REPAIR_EVERY: i64 = 24 * 3600;

pub async fn cleanup(deps: &Deps) -> Result<usize, LifecycleError> {
    use std::sync::atomic::Ordering;
    let now = deps.clock.now().timestamp();
    let last = LAST_REPAIR.load(Ordering::Relaxed);
    if last == i64::MIN || now - last >= REPAIR_EVERY {
        LAST_REPAIR.store(now, Ordering::Relaxed);
        match deps.store.repair_indexes().await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(repaired = n, "store index entries repaired"),
            Err(e) => tracing::warn!(error = %e, "could not check the store's indexes"),
        }
    }
    let p = &deps.config.processing;
    let days = match p.cleanup_completed_days {
        0 => p.retention_days,
        d => d,
    };
    if days == 0 {
        return Ok(0);
    }
    let before = deps.clock.now() - Duration::days(i64::from(days));
    let mut removed = 0;
    let mut continuation = None;
    loop {
        let page = deps
            .store
            .query(&Query::EndedBefore(before), continuation, 200)
            .await?;
        for v in page.items {
            if !v.value.holds_response_key() {
                super::okta::release(deps, &v.value, super::okta::Release::Delete).await;
            } else if let Err(e) = deps.secrets.delete(&v.value.secret_name()).await {
                tracing::warn!(request_id = %v.value.request_id, error = %e, "could not purge response key; keeping record");
                continue;
            }
            match deps.store.delete(&v.value.request_id, Some(&v.etag)).await {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(target: "fido_connector::audit", request_id = %v.value.request_id,
                        step = v.value.step.as_str(), "ended shipment cleaned up");
                }
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        continuation = page.next;
        if continuation.is_none() {
            break;
        }
    }
    if removed > 0 {
        tracing::info!(removed, days, "cleaned up ended shipments");
    }
    Ok(removed)
}
