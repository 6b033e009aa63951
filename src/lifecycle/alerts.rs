//! Alerts: when a shipment needs attention, one notification per shipment and cause, from
//! whichever replica's processing run sees it first.
//!
//! Causes ([`CAUSES`]): a YubiEnterprise error state, a failed shipment, a create whose
//! outcome is unknown, Entra's challenge about to expire before Yubico programmed the key,
//! and a PIN mail that keeps failing. The processing scan reads every record that may owe
//! one ([`ShipmentRecord::needs_scan`] keeps failed and unknown records in the scan until
//! their alert is settled).
//!
//! Exactly once across replicas: a replica first claims the alert in the record with a
//! conditional write (owner and expiry), posts it, then marks it sent with another. Two
//! replicas racing: one claim wins. A replica dying after its claim: the claim lapses and
//! another posts it (at-least-once only when the post itself was delivered and the process
//! died before recording it). A post that fails is retried by a later run.

use chrono::{DateTime, Duration, Utc};

use super::{claim_free, Deps};
use crate::domain::shipment::{
    ye_state_label, ye_state_meaning, ye_state_ready, ALERT_FAILED, ALERT_UNKNOWN, ALERT_YE_ERROR,
};
use crate::domain::{ShipmentRecord, Step};
use crate::store::{StoreError, Versioned};
use crate::upstream::alert::Alert;

/// Every cause, as it appears in the webhook body and in the record.
pub const CAUSES: [&str; 5] = [
    ALERT_YE_ERROR,
    ALERT_FAILED,
    ALERT_UNKNOWN,
    "challenge_expiring",
    "mail_failing",
];

/// Failed PIN mail attempts after which the shipment is reported.
pub const MAIL_FAILURES: u32 = 3;

fn shipment_name(rec: &ShipmentRecord) -> String {
    match &rec.ye_shipment_id {
        Some(id) => format!("shipment {id}"),
        None => format!("request {}", rec.request_id),
    }
}

/// The causes this record has now, each with its sentence.
pub fn causes(
    rec: &ShipmentRecord,
    now: DateTime<Utc>,
    attention: Duration,
) -> Vec<(&'static str, String)> {
    let name = shipment_name(rec);
    let user = &rec.user_id;
    let mut out = Vec::new();
    if rec.step.is_open() {
        if let Some(code) = rec.ye_state_id.filter(|s| ye_state_meaning(*s).is_some()) {
            out.push((
                CAUSES[0],
                format!(
                    "{name} for {user} is in YubiEnterprise state {code} ({}): check it in the YubiEnterprise console",
                    ye_state_label(code)
                ),
            ));
        }
        if matches!(rec.step, Step::Accepted | Step::Ongoing)
            && !rec.ye_state_id.is_some_and(ye_state_ready)
        {
            if let Some(t) = rec.challenge_expires_at.filter(|t| *t <= now + attention) {
                out.push((
                    CAUSES[3],
                    format!(
                        "Entra's challenge for {name} ({user}) expires {} and Yubico has not programmed the key yet",
                        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                ));
            }
        }
        if rec.step == Step::Registered && rec.attempts >= MAIL_FAILURES {
            out.push((
                CAUSES[4],
                format!(
                    "the PIN mail for {name} ({user}) has failed {} times; the key is registered and the mail is retried",
                    rec.attempts
                ),
            ));
        }
    }
    if rec.step == Step::Failed && rec.ye_shipment_id.is_some() {
        let why = rec
            .error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default();
        out.push((
            rec.failure_alert_cause(),
            format!("{name} for {user} failed: {why}"),
        ));
    }
    if rec.step == Step::Unknown {
        out.push((
            ALERT_UNKNOWN,
            format!(
                "the outcome of creating {name} for {user} at YubiEnterprise is unknown: an operator must resolve it (POST /v1/operations/retry/{})",
                rec.request_id
            ),
        ));
    }
    out
}

/// Whether the record has a cause at all (checked on the scanned record; alerts are then
/// handled on a fresh read after its processing step).
pub fn any_cause(deps: &Deps, rec: &ShipmentRecord) -> bool {
    !due(deps, rec, deps.clock.now()).is_empty()
}

/// The causes not yet settled and not claimed by another live replica.
fn due(deps: &Deps, rec: &ShipmentRecord, now: DateTime<Utc>) -> Vec<(&'static str, String)> {
    let attention =
        Duration::from_std(deps.config.processing.attention_window).unwrap_or(Duration::days(3));
    causes(rec, now, attention)
        .into_iter()
        .filter(
            |(cause, _)| match rec.alerts.iter().find(|a| a.cause == *cause) {
                None => true,
                Some(a) if a.sent_at.is_some() => false,
                Some(a) => claim_free(a.owner.as_deref(), a.until, now, deps.owner()),
            },
        )
        .collect()
}

/// Posts the record's due alerts. Returns the record as now stored, or `None` when another
/// process wrote it meanwhile (it will be seen again by the next run).
pub async fn handle(
    deps: &Deps,
    v: Versioned<ShipmentRecord>,
) -> Option<Versioned<ShipmentRecord>> {
    let now = deps.clock.now();
    // Never while another process holds the record's processing claim: its next write
    // would fail on our ETag and cut its step short.
    if !claim_free(
        v.value.lease_owner.as_deref(),
        v.value.lease_until,
        now,
        deps.owner(),
    ) {
        return Some(v);
    }
    let due = due(deps, &v.value, now);
    if due.is_empty() {
        return Some(v);
    }
    let Versioned {
        value: mut rec,
        mut etag,
    } = v;
    for (cause, sentence) in due {
        let claim_until = now
            + Duration::from_std(deps.config.processing.claim_ttl).unwrap_or(Duration::seconds(30));
        let since = rec.claim_alert(cause, deps.owner(), claim_until, now);
        etag = write(deps, &rec, &etag).await?;
        let sent = match &deps.alerter {
            None => Ok(false),
            Some(a) => {
                let alert = Alert {
                    cause,
                    sentence: sentence.clone(),
                    shipment_id: rec.ye_shipment_id.clone(),
                    request_id: rec.request_id.clone(),
                    user_id: rec.user_id.clone(),
                    idp: deps.idps.name_of(&rec),
                    since,
                };
                a.send(&alert).await.map(|()| true)
            }
        };
        match &sent {
            Ok(true) => {
                crate::metrics::alert(cause, "sent");
                tracing::warn!(request_id = %rec.request_id, ye_shipment_id = ?rec.ye_shipment_id,
                    cause, "alert sent: {sentence}");
            }
            Ok(false) => crate::metrics::alert(cause, "skipped"),
            Err(e) => {
                crate::metrics::alert(cause, "failed");
                tracing::warn!(request_id = %rec.request_id, cause, error = %e,
                    "alert not delivered; a later run retries it");
            }
        }
        let outcome = sent.map_err(|_| ());
        (rec, etag) = record_outcome(deps, rec, etag, cause, outcome).await?;
    }
    Some(Versioned { value: rec, etag })
}

/// Records what became of a claimed alert. Another process may have written the record
/// since the claim (its processing step): the outcome is then applied to a fresh read, so
/// that a delivered alert is never left looking undelivered (which would post it again).
async fn record_outcome(
    deps: &Deps,
    mut rec: ShipmentRecord,
    mut etag: crate::store::ETag,
    cause: &str,
    outcome: Result<bool, ()>,
) -> Option<(ShipmentRecord, crate::store::ETag)> {
    for _ in 0..5 {
        let now = deps.clock.now();
        rec.settle_alert(cause, outcome, now);
        match deps.store.replace(&rec, &etag).await {
            Ok(e) => return Some((rec, e)),
            Err(StoreError::Conflict) => {
                let fresh = deps.store.get(&rec.request_id).await.ok()??;
                rec = fresh.value;
                etag = fresh.etag;
            }
            Err(e) => {
                tracing::warn!(request_id = %rec.request_id, error = %e, "could not record an alert");
                return None;
            }
        }
    }
    None
}

async fn write(
    deps: &Deps,
    rec: &ShipmentRecord,
    etag: &crate::store::ETag,
) -> Option<crate::store::ETag> {
    match deps.store.replace(rec, etag).await {
        Ok(e) => Some(e),
        Err(StoreError::Conflict) => None,
        Err(e) => {
            tracing::warn!(request_id = %rec.request_id, error = %e, "could not record an alert");
            None
        }
    }
}
