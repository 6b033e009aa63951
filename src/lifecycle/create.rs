//! `POST /v1/fpr/shipments` after validation.
//!
//! Order matters: the record is written (step `Accepted`, claimed by this request) before
//! YubiEnterprise is asked to create the shipment, so a crash after YE accepted it never
//! leaves a shipment we do not know about. The answer decides what happens to the record:
//!
//! * created → `Ongoing` with YE's id;
//! * an answer that proves YE did nothing (429/503 after the in-request retries, a 4xx, a
//!   refused connection) → released (`Failed` without a YE id): a retry with the same
//!   Idempotency-Key proceeds;
//! * no answer that says (timeout after sending, 500/502/504, a lost connection) →
//!   `Unknown`: the key stays locked (409 with Retry-After) until an operator resolves it.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::idps::Provider;
use super::{claim_free, hex, Deps, LifecycleError};
use crate::crypto::{self, ResponseKey};
use crate::domain::shipment::response_secret_name;
use crate::domain::shipment::Order;
use crate::domain::{Pin, ShipmentRecord, ShipmentRequest, Step};
use crate::faults::crash_point;
use crate::store::{ETag, StoreError, Versioned};
use crate::upstream::UpstreamError;

/// How long a client is asked to wait before retrying a request whose outcome is unknown.
pub const UNKNOWN_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The YubiEnterprise call stops this long before the request's claim runs out.
const CLAIM_MARGIN: Duration = Duration::from_secs(2);

/// A caller-supplied `Idempotency-Key` and the hash of the body it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 hex of the raw request body.
    pub body_sha256: String,
}

/// Idempotency keys are scoped to the caller: two callers using the same key never meet.
fn request_id_for(idem: Option<&Idempotency>, caller: &str) -> String {
    match idem {
        // Never the raw key: it is caller data, and keys must be safe in every store.
        Some(i) => {
            let mut h = Sha256::new();
            h.update(caller.as_bytes());
            h.update(b"\n");
            h.update(i.key.as_bytes());
            format!("idem-{}", hex(&h.finalize()))
        }
        None => uuid::Uuid::new_v4().to_string(),
    }
}

enum Replay {
    /// The request was done before: its YubiEnterprise shipment id.
    Done(String),
    /// It provably created nothing: this request takes the record over.
    Retake(ETag),
}

async fn replay(
    deps: &Deps,
    existing: Versioned<ShipmentRecord>,
    idem: &Idempotency,
) -> Result<Replay, LifecycleError> {
    let Versioned {
        value: mut rec,
        etag,
    } = existing;
    if rec.idempotency_body_hash.as_deref() != Some(idem.body_sha256.as_str()) {
        return Err(LifecycleError::IdempotencyMismatch);
    }
    if let Some(id) = &rec.ye_shipment_id {
        return Ok(Replay::Done(id.clone()));
    }
    let now = deps.clock.now();
    match rec.step {
        _ if rec.is_released() => Ok(Replay::Retake(etag)),
        Step::Accepted
            if !claim_free(
                rec.lease_owner.as_deref(),
                rec.lease_until,
                now,
                deps.owner(),
            ) =>
        {
            let left = rec
                .lease_until
                .map(|t| (t - now).to_std().unwrap_or_default())
                .unwrap_or_default();
            Err(LifecycleError::InProgress {
                request_id: rec.request_id,
                retry_after: left.max(Duration::from_secs(1)),
            })
        }
        Step::Accepted => {
            match flag_interrupted(deps, &mut rec, &etag).await {
                Ok(()) | Err(StoreError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
            Err(LifecycleError::OutcomeUnknown {
                request_id: rec.request_id,
                retry_after: UNKNOWN_RETRY_AFTER,
            })
        }
        _ => Err(LifecycleError::OutcomeUnknown {
            request_id: rec.request_id,
            retry_after: UNKNOWN_RETRY_AFTER,
        }),
    }
}

/// An `accepted` record whose creating process is gone (its claim lapsed, or belonged to a
/// former incarnation of this replica): nobody knows what YubiEnterprise did, so it is
/// flagged `unknown` for an operator. Used by a retried create and by the processing job.
pub(super) async fn flag_interrupted(
    deps: &Deps,
    rec: &mut ShipmentRecord,
    etag: &ETag,
) -> Result<(), StoreError> {
    if rec
        .outcome_unknown(
            "the creating process stopped while calling YubiEnterprise".into(),
            deps.clock.now(),
        )
        .is_err()
    {
        return Err(StoreError::Conflict);
    }
    deps.store.replace(rec, etag).await?;
    tracing::warn!(request_id = %rec.request_id, user_id = %rec.user_id,
        "create interrupted; outcome unknown; flagged for an operator");
    Ok(())
}

/// Creates the shipment; returns YubiEnterprise's shipment id.
pub async fn create_shipment(
    deps: &Deps,
    req: ShipmentRequest,
    idempotency: Option<Idempotency>,
    caller: &str,
) -> Result<String, LifecycleError> {
    let idp = deps
        .idps
        .for_create(req.idp_instance.as_ref().map(|i| i.as_str()))
        .map_or_else(|_| "unknown".to_string(), |(name, _)| name);
    let r = create_inner(deps, req, idempotency, caller).await;
    let outcome = match &r {
        Ok(_) => "created",
        Err(e) if e.is_refusal() => "refused",
        Err(_) => "failed",
    };
    crate::metrics::created(outcome, &idp);
    r
}

/// What `POST /v1/fpr/shipments?dry_run=true` answers: every pre-flight check, and whether
/// the create would go ahead. Nothing is stored and nothing is sent to Yubico.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct DryRun {
    pub dry_run: bool,
    /// False when a check failed (or, with `FIDO_CONNECTOR_PREFLIGHT=strict`, could not be
    /// evaluated).
    pub would_create: bool,
    pub checks: Vec<super::preflight::Check>,
}

/// Runs validation's sequel for a create without creating: the user lookup and every
/// pre-flight check.
pub async fn dry_run(deps: &Deps, req: &ShipmentRequest) -> Result<DryRun, LifecycleError> {
    use super::preflight::{Check, CheckResult};

    let not_found = || Check {
        name: "user_exists",
        result: CheckResult::Fail,
        message: format!("Could not find user: {}", req.user_id.as_str()),
    };
    let requested = req.idp_instance.as_ref().map(|i| i.as_str());
    let checks = match deps.idps.for_create(requested)?.1 {
        Provider::Entra => match deps.idp.get_user(&req.user_id).await {
            Ok(user) => super::preflight::run(deps, req, &user).await,
            Err(UpstreamError::NotFound { .. }) => vec![not_found()],
            Err(e) => return Err(e.into()),
        },
        Provider::Okta(o) => match okta_request_fits(req, o)
            .map(|()| o.client.get_user(req.user_id.as_str()))?
            .await
        {
            Ok(user) => vec![
                Check {
                    name: "user_exists",
                    result: CheckResult::Pass,
                    message: format!("Okta user {} ({})", user.id, user.login),
                },
                Check {
                    name: "user_status",
                    result: if user.may_enroll() {
                        CheckResult::Pass
                    } else {
                        CheckResult::Fail
                    },
                    message: format!(
                        "Okta reports the status {}; enrolment needs ACTIVE, STAGED or PROVISIONED",
                        user.status
                    ),
                },
            ],
            Err(UpstreamError::NotFound { .. }) => vec![not_found()],
            Err(e) => return Err(e.into()),
        },
    };
    // Okta refuses to enroll a user whose status does not allow it, whatever the mode.
    let would_create = !checks.iter().any(|c| {
        super::preflight::blocks(deps.config.entra.preflight, c)
            || (c.name == "user_status" && c.result == CheckResult::Fail)
    });
    Ok(DryRun {
        dry_run: true,
        would_create,
        checks,
    })
}

async fn create_inner(
    deps: &Deps,
    req: ShipmentRequest,
    idempotency: Option<Idempotency>,
    caller: &str,
) -> Result<String, LifecycleError> {
    let request_id = request_id_for(idempotency.as_ref(), caller);

    // A retry with the same key: answer from the record, without any upstream call.
    let mut retake: Option<ETag> = None;
    if let Some(idem) = &idempotency {
        if let Some(existing) = deps.store.get(&request_id).await? {
            match replay(deps, existing, idem).await? {
                Replay::Done(id) => return Ok(id),
                Replay::Retake(etag) => retake = Some(etag),
            }
        }
    }

    let p = prepare(deps, &req).await?;
    if let Some(name) = &p.idp {
        let marked = deps
            .idps
            .mark_in_use(deps.store.as_ref(), name, deps.clock.now())
            .await;
        if let Err(e) = marked {
            p.discard(deps).await;
            return Err(e.into());
        }
    }
    let (rec, etag, claim_until) = match record_accepted(
        deps,
        &req,
        &p,
        &request_id,
        idempotency.as_ref(),
        caller,
        retake,
    )
    .await?
    {
        Accepted::Replayed(id) => return Ok(id),
        Accepted::Claimed {
            rec,
            etag,
            claim_until,
        } => (*rec, etag, claim_until),
    };
    crash_point("create:after-record");
    ship(deps, &req, &p, rec, etag, claim_until, caller).await
}

/// What the create prepared before anything is stored: the user, the JWEs to Yubico, and
/// (Entra) the response key, already in the secret store.
struct Prepared {
    /// What the record keeps in `idp` (absent for the Entra instance).
    idp: Option<String>,
    /// The identity provider's user id (Entra object id, Okta user id).
    entra_user_id: String,
    /// Entra's UPN, Okta's login.
    user_upn: Option<String>,
    response_kid: String,
    /// Entra: the response key's secret; Okta keeps its keys itself.
    secret_name: Option<String>,
    challenge_timeout: chrono::DateTime<chrono::Utc>,
    pin_jwe: String,
    cred_jwes: Vec<String>,
    /// Okta: the enrollments made, to activate (or mark failed) later.
    okta_enrollments: Vec<String>,
    /// Where the PIN goes (Okta: the user's own address, which Okta mails).
    pin_to: Vec<String>,
}

impl Prepared {
    /// Undoes what preparing left behind when no shipment comes of it.
    async fn discard(&self, deps: &Deps) {
        if let Some(name) = &self.secret_name {
            let _ = deps.secrets.delete(name).await;
        }
        if let Some(o) = self.idp.as_deref().and_then(|n| deps.idps.okta(n)) {
            for id in &self.okta_enrollments {
                if let Err(e) = o.client.delete_enrollment(&self.entra_user_id, id).await {
                    tracing::warn!(enrollment = %id, error = %e,
                        "could not delete the Okta enrollment of a shipment not created");
                }
            }
        }
    }
}

/// Upstream reads first (nothing is stored if the user does not exist), the pre-flight
/// checks, then the requests to Yubico, from the instance the request names.
async fn prepare(deps: &Deps, req: &ShipmentRequest) -> Result<Prepared, LifecycleError> {
    let requested = req.idp_instance.as_ref().map(|i| i.as_str());
    let (name, provider) = deps.idps.for_create(requested)?;
    let mut p = match provider {
        Provider::Entra => prepare_entra(deps, req).await?,
        Provider::Okta(o) => prepare_okta(deps, req, o).await?,
    };
    p.idp = deps.idps.stored_name(&name);
    Ok(p)
}

async fn prepare_entra(deps: &Deps, req: &ShipmentRequest) -> Result<Prepared, LifecycleError> {
    // Upstream reads first: nothing is stored if the user does not exist.
    let user = deps.idp.get_user(&req.user_id).await.map_err(|e| match e {
        UpstreamError::NotFound { .. } => {
            LifecycleError::UserNotFound(req.user_id.as_str().to_string())
        }
        other => other.into(),
    })?;
    // Before anything is stored or sent to Yubico: would the key register once shipped?
    super::preflight::enforce(deps, req, &user).await?;
    let options = deps
        .idp
        .creation_options(&user.id)
        .await
        .map_err(|e| match e {
            UpstreamError::Rejected { code, .. } => LifecycleError::IdpRejected {
                idp: "Entra",
                what: "creation options",
                code,
                summary: None,
            },
            other => other.into(),
        })?;
    let transport = deps.keys.transport_key().await?;

    let response_key = ResponseKey::generate()?;
    let pin = Pin::generate(req.pin_length());
    let expires = options.challenge_timeout.to_rfc3339();
    let pin_jwe = crypto::encrypt_pin_request(&pin, &response_key, &transport)?;
    drop(pin); // zeroized: the connector keeps no copy of the PIN
    let cred_jwe = crypto::encrypt_credential_request(
        &response_key,
        &expires,
        &options.public_key,
        &transport,
    )?;

    let secret_name = response_secret_name(&response_key.kid);
    deps.secrets
        .set(&secret_name, response_key.private_jwk_json())
        .await?;
    Ok(Prepared {
        idp: None,
        entra_user_id: user.id,
        user_upn: user.user_principal_name,
        response_kid: response_key.kid.clone(),
        secret_name: Some(secret_name),
        challenge_timeout: options.challenge_timeout,
        pin_jwe,
        cred_jwes: vec![cred_jwe],
        okta_enrollments: Vec::new(),
        pin_to: req.mail_recipients(),
    })
}

/// Okta's refusal of the user lookup or the enrollment, in its words.
fn okta_refused(what: &'static str, user: &str, e: UpstreamError) -> LifecycleError {
    match e {
        UpstreamError::NotFound { .. } => LifecycleError::UserNotFound(user.to_string()),
        UpstreamError::Rejected { code, message, .. } => LifecycleError::IdpRejected {
            idp: "Okta",
            what,
            code,
            summary: Some(message),
        },
        other => other.into(),
    }
}

/// What an Okta instance cannot honour is refused before any upstream call: Okta sends
/// the PIN to the user's own email address, so other recipients cannot be named.
fn okta_request_fits(
    req: &ShipmentRequest,
    o: &super::idps::OktaInstance,
) -> Result<(), LifecycleError> {
    if req.emails_to().is_empty() {
        return Ok(());
    }
    Err(LifecycleError::Invalid(format!(
        "`enrollment_contacts.emails_to` does not apply to instance `{}`: Okta sends the PIN to \
         the user's own email address",
        o.name
    )))
}

/// Okta: the user (whose status must allow enrolment), then `enroll`: Okta makes the
/// response keys and encrypts the requests to Yubico's transport key itself.
async fn prepare_okta(
    deps: &Deps,
    req: &ShipmentRequest,
    o: &super::idps::OktaInstance,
) -> Result<Prepared, LifecycleError> {
    okta_request_fits(req, o)?;
    let asked = req.user_id.as_str();
    let user = o
        .client
        .get_user(asked)
        .await
        .map_err(|e| okta_refused("the user lookup", asked, e))?;
    if !user.may_enroll() {
        return Err(LifecycleError::PreflightFailed {
            check: "user_status",
            message: format!(
                "Okta reports the user's status as {}; enrolment needs ACTIVE, STAGED or PROVISIONED",
                user.status
            ),
        });
    }
    let transport = deps.keys.transport_key().await?;
    let jwk = crate::upstream::okta::ec_key_jwk(transport.jwk(), "enc");
    let enrolled = o
        .client
        .enroll(&user.id, &o.rp_ids, &jwk)
        .await
        .map_err(|e| okta_refused("the enrollment", asked, e))?;
    let key_id = enrolled
        .cred_requests
        .first()
        .map(|(_, _, k)| k.clone())
        .unwrap_or_default();
    let pin_to = [&user.email, &user.login]
        .into_iter()
        .find(|a| !a.is_empty())
        .map(|a| vec![a.clone()])
        .unwrap_or_default();
    Ok(Prepared {
        idp: None,
        pin_to,
        entra_user_id: user.id,
        user_upn: Some(user.login).filter(|l| !l.is_empty()),
        response_kid: key_id,
        secret_name: None,
        challenge_timeout: deps.clock.now() + o.challenge_timeout,
        pin_jwe: enrolled.pin_request_jwe,
        cred_jwes: enrolled
            .cred_requests
            .iter()
            .map(|(_, jwe, _)| jwe.clone())
            .collect(),
        okta_enrollments: enrolled
            .cred_requests
            .into_iter()
            .map(|(id, _, _)| id)
            .collect(),
    })
}

/// The request's record as written: claimed by this request, or a concurrent request's
/// answer (the same Idempotency-Key won the race).
enum Accepted {
    Claimed {
        rec: Box<ShipmentRecord>,
        etag: ETag,
        claim_until: chrono::DateTime<chrono::Utc>,
    },
    Replayed(String),
}

/// Writes the record (step `Accepted`, claimed by this request) before YubiEnterprise is
/// asked: a crash after YE accepted it never leaves a shipment we do not know about.
async fn record_accepted(
    deps: &Deps,
    req: &ShipmentRequest,
    p: &Prepared,
    request_id: &str,
    idempotency: Option<&Idempotency>,
    caller: &str,
    retake: Option<ETag>,
) -> Result<Accepted, LifecycleError> {
    let now = deps.clock.now();
    let mut rec = ShipmentRecord::accepted(
        request_id,
        req.user_id.as_str(),
        p.entra_user_id.clone(),
        p.response_kid.clone(),
        now,
    )
    .with_order(Order {
        user_upn: p.user_upn.clone(),
        emails_to: p.pin_to.clone(),
        yubikey_name: req.yubikey_name().map(str::to_string),
        challenge_expires_at: p.challenge_timeout,
        idempotency_body_hash: idempotency.as_ref().map(|i| i.body_sha256.clone()),
        created_by: caller.to_string(),
    });
    rec.idp = p.idp.clone();
    rec.okta_enrollments = p.okta_enrollments.clone();
    rec.note(
        "created",
        Some(format!("request {request_id}")),
        Some(caller),
        now,
    );
    // The request's own claim: nobody flags it while the YubiEnterprise call runs.
    let claim_until = now + deps.claim_ttl();
    rec.claim(deps.owner(), claim_until, now);
    let written = match &retake {
        Some(etag) => deps.store.replace(&rec, etag).await,
        None => deps.store.insert(&rec).await,
    };
    let etag = match written {
        Ok(e) => e,
        Err(StoreError::AlreadyExists) | Err(StoreError::Conflict) => {
            // A concurrent request with the same key won the race.
            p.discard(deps).await;
            let existing =
                deps.store.get(request_id).await?.ok_or_else(|| {
                    LifecycleError::Internal("record vanished after conflict".into())
                })?;
            let idem = idempotency
                .as_ref()
                .ok_or_else(|| LifecycleError::Internal("uuid collision".into()))?;
            return match replay(deps, existing, idem).await? {
                Replay::Done(id) => Ok(Accepted::Replayed(id)),
                Replay::Retake(_) => Err(LifecycleError::InProgress {
                    request_id: request_id.to_string(),
                    retry_after: Duration::from_secs(1),
                }),
            };
        }
        Err(e) => {
            p.discard(deps).await;
            return Err(e.into());
        }
    };
    Ok(Accepted::Claimed {
        rec: Box::new(rec),
        etag,
        claim_until,
    })
}

/// Asks YubiEnterprise to create the shipment, within the request's claim, and records
/// what its answer proves (created, nothing created, or unknown).
async fn ship(
    deps: &Deps,
    req: &ShipmentRequest,
    p: &Prepared,
    mut rec: ShipmentRecord,
    etag: ETag,
    claim_until: chrono::DateTime<chrono::Utc>,
    caller: &str,
) -> Result<String, LifecycleError> {
    let request_id = rec.request_id.clone();
    let request_id = request_id.as_str();

    let body = req.ye_body_with(&p.pin_jwe, &p.cred_jwes);
    // The call may not outlive the claim: past it, another process could flag the record.
    let budget = (claim_until - deps.clock.now())
        .to_std()
        .unwrap_or_default()
        .saturating_sub(CLAIM_MARGIN);
    let answer = match tokio::time::timeout(budget, deps.ye.create_shipment(&body)).await {
        Ok(a) => a,
        Err(_) => Err(UpstreamError::OutcomeUnknown {
            service: crate::upstream::ye::SERVICE,
            message: "no answer before the request's claim ran out".into(),
        }),
    };
    match answer {
        Ok(created) => {
            crash_point("create:after-ye");
            rec.created_at_ye(
                created.shipment_id.clone(),
                created.shipment_state_id,
                deps.clock.now(),
            )?;
            if let Err(e) = deps.store.replace(&rec, &etag).await {
                // YE has the shipment; our record still says Accepted. When the claim runs
                // out it is flagged for an operator, who finds it by this log line.
                tracing::error!(request_id, ye_shipment_id = %created.shipment_id, error = %e,
                    "YubiEnterprise created the shipment but recording it failed");
                return Err(e.into());
            }
            tracing::info!(target: "fido_connector::audit", caller, request_id,
                ye_shipment_id = %created.shipment_id, "shipment created");
            Ok(created.shipment_id)
        }
        Err(UpstreamError::OutcomeUnknown { message, .. }) => {
            tracing::warn!(request_id, why = %message, "YubiEnterprise create outcome unknown; flagged for an operator");
            rec.outcome_unknown(message, deps.clock.now())?;
            if let Err(e) = deps.store.replace(&rec, &etag).await {
                tracing::error!(request_id, error = %e, "could not flag the unknown create; it is flagged when its claim runs out");
            }
            Err(LifecycleError::OutcomeUnknown {
                request_id: request_id.to_string(),
                retry_after: UNKNOWN_RETRY_AFTER,
            })
        }
        Err(e) => {
            // YE's answer proves it created nothing: release the key for a retry.
            rec.released(
                format!("YubiEnterprise did not create the shipment: {e}"),
                deps.clock.now(),
            )?;
            if let Err(se) = deps.store.replace(&rec, &etag).await {
                tracing::warn!(request_id, error = %se, "could not release the request record");
            }
            p.discard(deps).await;
            Err(match e {
                UpstreamError::Rejected {
                    status,
                    code,
                    message,
                    ..
                } => LifecycleError::YeRejected {
                    status,
                    code,
                    message,
                },
                other => other.into(),
            })
        }
    }
}
