//! One processing pass over every open record, with bounded concurrency.
//!
//! Each record is first *claimed* with a conditional write (lease owner and expiry on the
//! record), so replicas never work on the same record at once; every step's outcome is
//! persisted with the ETag of the previous write before the next step starts.

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;

use super::{service_of, store_err};
use crate::api::ApiError;
use crate::app::Deps;
use crate::crypto::{self, CryptoError, ResponseKey};
use crate::domain::shipment::{ye_state_meaning, ye_state_ready};
use crate::domain::{RecordError, ShipmentRecord, Step};
use crate::faults::crash_point;
use crate::store::{ETag, Query, StoreError, Versioned};
use crate::upstream::{PinMail, ProductData, UpstreamError};

/// How long a claim protects a record from other replicas.
pub const CLAIM_TTL_MINUTES: i64 = 5;
/// A record still `Accepted` after this long was interrupted during creation.
pub const ACCEPTED_GRACE_MINUTES: i64 = 10;
const PAGE: usize = 200;

/// What one processing run did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub examined: usize,
    pub completed: usize,
    pub failed: usize,
    pub retried: usize,
    pub skipped: usize,
    pub waiting: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Failed,
    Retried,
    Skipped,
    Waiting,
}

/// One pass over every open record. Pages are fetched as the work drains, so the
/// concurrency limit applies across page boundaries (no wave barrier per page).
pub async fn process_shipments(deps: &Deps) -> Result<RunSummary, ApiError> {
    let concurrency = deps.config.process_concurrency;
    let mut summary = RunSummary::default();
    let mut queue = std::collections::VecDeque::new();
    let mut continuation: Option<String> = None;
    let mut exhausted = false;
    let mut inflight = futures::stream::FuturesUnordered::new();
    loop {
        while inflight.len() < concurrency {
            if queue.is_empty() && !exhausted {
                let page = deps
                    .store
                    .query(&Query::Open, continuation.take(), PAGE)
                    .await
                    .map_err(store_err)?;
                queue.extend(page.items);
                continuation = page.next;
                exhausted = continuation.is_none();
            }
            match queue.pop_front() {
                Some(v) => inflight.push(process_one(deps, v)),
                None => break,
            }
        }
        let Some(o) = inflight.next().await else {
            break;
        };
        summary.examined += 1;
        match o {
            Outcome::Completed => summary.completed += 1,
            Outcome::Failed => summary.failed += 1,
            Outcome::Retried => summary.retried += 1,
            Outcome::Skipped => summary.skipped += 1,
            Outcome::Waiting => summary.waiting += 1,
        }
    }
    tracing::info!(?summary, "processing run finished");
    Ok(summary)
}

/// Why a step did not finish.
enum StepError {
    Transient(String, Option<std::time::Duration>),
    Terminal(String),
    /// Another writer changed the record: stop, someone else owns it now.
    Lost,
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => StepError::Lost,
            other => StepError::Transient(format!("shipment store: {other}"), None),
        }
    }
}

fn upstream(context: &str, e: UpstreamError) -> StepError {
    match e {
        UpstreamError::Transient {
            message,
            retry_after,
            ..
        } => StepError::Transient(format!("{context}: {message}"), retry_after),
        UpstreamError::Unauthorized { service } => StepError::Transient(
            format!("{context}: {service} refused the connector's credentials"),
            None,
        ),
        UpstreamError::NotFound { code, message, .. } => {
            StepError::Terminal(format!("{context}: not found ({code}): {message}"))
        }
        UpstreamError::Rejected {
            status,
            code,
            message,
            ..
        } => StepError::Terminal(format!("{context}: rejected ({status} {code}): {message}")),
        e @ UpstreamError::Invalid { .. } => StepError::Terminal(format!(
            "{context}: {} sent an invalid answer",
            service_of(&e)
        )),
    }
}

fn crypto_err(context: &str, e: CryptoError) -> StepError {
    match e {
        CryptoError::KeySet(m) => StepError::Transient(format!("{context}: {m}"), None),
        other => StepError::Terminal(format!("{context}: {other}")),
    }
}

/// Persists `rec` over `etag`, returning the new ETag.
async fn save(deps: &Deps, rec: &mut ShipmentRecord, etag: &mut ETag) -> Result<(), StepError> {
    rec.updated_at = deps.clock.now();
    *etag = deps.store.replace(rec, etag).await?;
    Ok(())
}

async fn process_one(deps: &Deps, v: Versioned<ShipmentRecord>) -> Outcome {
    let now = deps.clock.now();
    let Versioned {
        value: mut rec,
        mut etag,
    } = v;
    if !rec.step.is_open() || rec.next_attempt_at.is_some_and(|t| t > now) {
        return Outcome::Skipped;
    }
    // Any unexpired claim, even this replica's own (another run of ours), means hands off.
    if rec.lease_until.is_some_and(|t| t > now) {
        return Outcome::Skipped;
    }
    // Claim.
    rec.lease_owner = Some(deps.instance_id.clone());
    rec.lease_until = Some(now + Duration::minutes(CLAIM_TTL_MINUTES));
    if save(deps, &mut rec, &mut etag).await.is_err() {
        return Outcome::Skipped;
    }

    let result = advance(deps, &mut rec, &mut etag, now).await;
    rec.lease_owner = None;
    rec.lease_until = None;
    let outcome = match result {
        Ok(o) => o,
        Err(StepError::Lost) => return Outcome::Skipped,
        Err(StepError::Terminal(msg)) => {
            tracing::warn!(request_id = %rec.request_id, ye_shipment_id = ?rec.ye_shipment_id,
                error = %msg, "shipment failed");
            rec.step = Step::Failed;
            rec.error = Some(RecordError::terminal(msg));
            rec.next_attempt_at = None;
            Outcome::Failed
        }
        Err(StepError::Transient(msg, retry_after)) => {
            rec.attempts += 1;
            if rec.attempts >= deps.config.max_attempts {
                tracing::warn!(request_id = %rec.request_id, attempts = rec.attempts,
                    error = %msg, "shipment failed after retries");
                rec.step = Step::Failed;
                rec.error = Some(RecordError::terminal(format!(
                    "{msg} (gave up after {} attempts)",
                    rec.attempts
                )));
                rec.next_attempt_at = None;
                Outcome::Failed
            } else {
                tracing::info!(request_id = %rec.request_id, attempts = rec.attempts,
                    error = %msg, "transient failure; will retry");
                rec.next_attempt_at = Some(next_attempt(
                    deps.clock.now(),
                    deps.config.retry_base,
                    rec.attempts,
                    retry_after,
                ));
                rec.error = Some(RecordError::transient(msg));
                Outcome::Retried
            }
        }
    };
    // Release the claim (and persist the outcome of an error).
    match save(deps, &mut rec, &mut etag).await {
        Ok(()) => outcome,
        Err(_) => Outcome::Skipped,
    }
}

/// Exponential back-off between runs: base × 2^(attempts-1), at most an hour, at least
/// what the upstream asked for.
fn next_attempt(
    now: DateTime<Utc>,
    base: std::time::Duration,
    attempts: u32,
    retry_after: Option<std::time::Duration>,
) -> DateTime<Utc> {
    let base = base.as_secs() as i64;
    let exp = base
        .saturating_mul(1i64 << attempts.saturating_sub(1).min(10))
        .min(3600);
    let floor = retry_after.map(|d| d.as_secs() as i64).unwrap_or(0);
    now + Duration::seconds(exp.max(floor))
}

fn display_name(rec: &ShipmentRecord, serial: u64) -> String {
    match &rec.yubikey_name {
        Some(n) => format!("{n}: {serial}"),
        None => format!("Pre-Reg YubiKey: {serial}"),
    }
}

async fn response_key(deps: &Deps, rec: &ShipmentRecord) -> Result<ResponseKey, StepError> {
    let json = deps
        .secrets
        .get(&rec.secret_name())
        .await
        .map_err(|e| StepError::Transient(format!("secret store: {e}"), None))?
        .ok_or_else(|| StepError::Terminal("the shipment's response key is missing".into()))?;
    ResponseKey::from_private_jwk(json).map_err(|e| crypto_err("response key", e))
}

async fn product_data(deps: &Deps, ye_id: &str) -> Result<(i64, Option<ProductData>), StepError> {
    let ship = deps
        .ye
        .get_shipment(ye_id)
        .await
        .map_err(|e| upstream("YubiEnterprise", e))?;
    Ok((ship.shipment_state_id, ship.product_data))
}

async fn advance(
    deps: &Deps,
    rec: &mut ShipmentRecord,
    etag: &mut ETag,
    now: DateTime<Utc>,
) -> Result<Outcome, StepError> {
    loop {
        match rec.step {
            Step::Accepted => {
                if now - rec.created_at < Duration::minutes(ACCEPTED_GRACE_MINUTES) {
                    return Ok(Outcome::Waiting);
                }
                return Err(StepError::Terminal(format!(
                    "creation was interrupted (request {} for {} at {}); the outcome at \
                     YubiEnterprise is unknown: check the YubiEnterprise console for this \
                     shipment before ordering again",
                    rec.request_id,
                    rec.user_id,
                    rec.created_at.to_rfc3339()
                )));
            }
            Step::Ongoing => {
                let ye_id = rec
                    .ye_shipment_id
                    .clone()
                    .ok_or_else(|| StepError::Terminal("ongoing without a shipment id".into()))?;
                let (state, pd) = product_data(deps, &ye_id).await?;
                rec.ye_state_id = Some(state);
                if let Some(meaning) = ye_state_meaning(state) {
                    return Err(StepError::Terminal(format!(
                        "YubiEnterprise shipment state {state}: {meaning}"
                    )));
                }
                if !ye_state_ready(state) {
                    // Still with Yubico. Any earlier transient error is over.
                    rec.error = None;
                    rec.attempts = 0;
                    rec.next_attempt_at = None;
                    return Ok(Outcome::Waiting);
                }
                let pd = pd.ok_or_else(|| {
                    StepError::Terminal(
                        "YubiEnterprise reports the key shipped but sent no product data".into(),
                    )
                })?;
                if rec.challenge_expires_at.is_some_and(|t| t <= now) {
                    return Err(StepError::Terminal(
                        "the Entra challenge expired before Yubico programmed the key".into(),
                    ));
                }
                let jwe = pd.fido_credential_responses.first().ok_or_else(|| {
                    StepError::Terminal("YubiEnterprise sent no credential response".into())
                })?;
                let key = response_key(deps, rec).await?;
                let cred = crypto::open_credential_response(
                    jwe,
                    &key,
                    deps.keys.as_ref(),
                    pd.serial_number,
                )
                .await
                .map_err(|e| crypto_err("credential response", e))?;
                let name = display_name(rec, pd.serial_number);
                let suffix = format!(": {}", pd.serial_number);

                // A registration may have happened before a crash: look before registering.
                let mut method_id = None;
                if rec.register_started_at.is_some() {
                    let methods = deps
                        .idp
                        .list_methods(&rec.entra_user_id)
                        .await
                        .map_err(|e| upstream("Entra (list methods)", e))?;
                    method_id = methods
                        .into_iter()
                        .find(|m| {
                            m.display_name
                                .as_deref()
                                .is_some_and(|d| d == name || d.ends_with(&suffix))
                        })
                        .map(|m| m.id);
                }
                let method_id = match method_id {
                    Some(id) => id,
                    None => {
                        rec.register_started_at = Some(deps.clock.now());
                        save(deps, rec, etag).await?;
                        let m = deps
                            .idp
                            .register(&rec.entra_user_id, &name, &cred.credential)
                            .await
                            .map_err(|e| match e {
                                UpstreamError::Rejected { code, message, .. } => {
                                    StepError::Terminal(format!(
                                        "Entra rejected the credential: {code}: {message}"
                                    ))
                                }
                                other => upstream("Entra (register)", other),
                            })?;
                        crash_point("process:after-register");
                        m.id
                    }
                };
                rec.step = Step::Registered;
                rec.serial_number = Some(pd.serial_number);
                rec.entra_method_id = Some(method_id);
                rec.error = None;
                rec.attempts = 0;
                rec.next_attempt_at = None;
                save(deps, rec, etag).await?;
            }
            Step::Registered => {
                let ye_id = rec.ye_shipment_id.clone().ok_or_else(|| {
                    StepError::Terminal("registered without a shipment id".into())
                })?;
                let serial = rec
                    .serial_number
                    .ok_or_else(|| StepError::Terminal("registered without a serial".into()))?;
                let (_, pd) = product_data(deps, &ye_id).await?;
                let jwe = pd.and_then(|p| p.fido_pin_response).ok_or_else(|| {
                    StepError::Terminal("YubiEnterprise sent no PIN response".into())
                })?;
                let key = response_key(deps, rec).await?;
                let pin = crypto::open_pin_response(&jwe, &key, deps.keys.as_ref(), serial)
                    .await
                    .map_err(|e| crypto_err("PIN response", e))?;
                let mail = PinMail {
                    shipment_id: ye_id.clone(),
                    user_id: rec.user_id.clone(),
                    emails_to: rec.emails_to.clone(),
                    serial_number: serial,
                    yubikey_name: rec.yubikey_name.clone(),
                    pin: pin.pin,
                    message_id: PinMail::initial_message_id(&ye_id),
                };
                deps.mailer
                    .send_pin(&mail)
                    .await
                    .map_err(|e| upstream("PIN mail", e))?;
                drop(mail);
                crash_point("process:after-mail");
                rec.step = Step::Complete;
                rec.completed_at = Some(deps.clock.now());
                rec.error = None;
                rec.attempts = 0;
                rec.next_attempt_at = None;
                tracing::info!(request_id = %rec.request_id, ye_shipment_id = %ye_id, "shipment complete");
                return Ok(Outcome::Completed);
            }
            Step::Complete | Step::Failed => return Ok(Outcome::Skipped),
        }
    }
}
