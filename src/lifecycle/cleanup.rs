//! Deletes ended records (complete or failed) older than
//! `CRON_DATA_CLEANUP_COMPLETED_DAYS` (0 = never) and purges their response keys. The key
//! goes first: a record without its key is harmless, a key without its record would be an
//! orphaned secret.

use chrono::Duration;

use super::{Deps, LifecycleError};
use crate::store::{Query, StoreError};

pub async fn cleanup(deps: &Deps) -> Result<usize, LifecycleError> {
    let days = deps.config.cron_data_cleanup_completed_days;
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
            if let Err(e) = deps.secrets.delete(&v.value.secret_name()).await {
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
