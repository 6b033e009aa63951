//! The steps of a shipment served by an Okta instance, where they differ from Entra's.
//!
//! Okta made the response keys at `enroll`, so the connector cannot open Yubico's answers:
//! it checks what it can (the key programmed, a serial, one credential response per
//! enrollment, a PIN response, a firmware version) and relays them to `activate`, where
//! Okta decrypts and verifies. Then `send-pin`: Okta mails the PIN. Exactly once each:
//!
//! * the activation is marked on the record (`register_started_at`, a conditional write
//!   that also renews the claim) before it is asked; a run that finds the mark lists the
//!   user's enrollments and activates only if Okta has not;
//! * the PIN is sent from the `Registered` step, after the write that recorded the
//!   activation, as for Entra.

use super::idps::{OktaInstance, Provider};
use super::process::{upstream, Claimed, Outcome, Registration, StepError};
use super::{Deps, LifecycleError};
use crate::domain::ShipmentRecord;
use crate::faults::crash_point;
use crate::upstream::okta::Activation;
use crate::upstream::{ProductData, UpstreamError};

/// Okta's refusal of a processing call, in its words: the shipment fails with it.
fn refused(what: &str, e: UpstreamError) -> StepError {
    match e {
        UpstreamError::Rejected { code, message, .. } => {
            StepError::Permanent(format!("Okta refused {what}: {code}: {message}"))
        }
        other => upstream(&format!("Okta ({what})"), other),
    }
}

/// Ongoing, the key programmed: activates the enrollments at Okta (once) and records it.
pub(super) async fn activate(
    c: &mut Claimed<'_>,
    o: &OktaInstance,
    pd: &ProductData,
) -> Result<Registration, StepError> {
    let deps = c.deps;
    let enrollments = c.rec.okta_enrollments.clone();
    if enrollments.is_empty() {
        return Err(StepError::Permanent(
            "the shipment has no Okta enrollment to activate".into(),
        ));
    }
    let responses = &pd.fido_credential_responses;
    if responses.len() != enrollments.len() {
        return Err(StepError::Permanent(format!(
            "YubiEnterprise sent {} credential response(s) for {} Okta enrollment(s)",
            responses.len(),
            enrollments.len()
        )));
    }
    let pin_response_jwe = pd
        .fido_pin_response
        .clone()
        .ok_or_else(|| StepError::Permanent("YubiEnterprise sent no PIN response".into()))?;
    let version = pd
        .firmware_version
        .clone()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| {
            StepError::Permanent(
                "YubiEnterprise sent no firmware version, which Okta's activation needs".into(),
            )
        })?;
    let user = c.rec.entra_user_id.clone();
    let done_before = match c.rec.register_started_at {
        None => false,
        Some(_) => {
            let list = c
                .bounded("Okta (list enrollments)", async {
                    o.client
                        .enrollments(&user)
                        .await
                        .map_err(|e| refused("the enrollments list", e))
                })
                .await?;
            enrollments
                .iter()
                .all(|id| list.iter().any(|(i, s)| i == id && s == "ACTIVE"))
        }
    };
    if !done_before {
        let keys = deps
            .keys
            .sign_keys()
            .await
            .map_err(|e| upstream("Yubico's sign keys", e))?;
        if keys.is_empty() {
            return Err(StepError::Transient(
                "Yubico's sign key set has no usable key".into(),
                None,
            ));
        }
        let activation = Activation {
            user_id: user.clone(),
            cred_responses: enrollments
                .iter()
                .cloned()
                .zip(responses.iter().cloned())
                .collect(),
            pin_response_jwe,
            serial: pd.serial_number.to_string(),
            version,
            signing_keys: keys
                .iter()
                .map(|k| crate::upstream::okta::ec_key_jwk(k, "sig"))
                .collect(),
        };
        // Marked before asking: a crash from here on lists before activating again.
        c.rec.registering(deps.clock.now());
        c.save().await?;
        c.bounded("Okta (activate)", async {
            o.client
                .activate(&activation)
                .await
                .map_err(|e| refused("the activation", e))
        })
        .await?;
        crash_point("process:after-register");
    }
    let now = deps.clock.now();
    let mail_deadline = now
        + chrono::Duration::from_std(deps.config.processing.mail_deadline)
            .unwrap_or(chrono::Duration::days(7));
    c.rec
        .registered(pd.serial_number, enrollments[0].clone(), now, mail_deadline)?;
    c.save().await?;
    tracing::info!(request_id = %c.rec.request_id, idp = %o.name, "Okta activated the enrollment");
    Ok(Registration::Done(None))
}

/// Registered: Okta mails the PIN (`send-pin`), then the shipment is complete. `renew`:
/// the claim is renewed first (when not coming straight from the activation's write).
pub(super) async fn send_pin(
    c: &mut Claimed<'_>,
    o: &OktaInstance,
    renew: bool,
) -> Result<Outcome, StepError> {
    let deps = c.deps;
    let enrollment = c
        .rec
        .entra_method_id
        .clone()
        .ok_or_else(|| StepError::Permanent("registered without an Okta enrollment".into()))?;
    if renew {
        c.save().await?;
    }
    let user = c.rec.entra_user_id.clone();
    let sent = c
        .bounded("Okta (send-pin)", async {
            o.client
                .send_pin(&user, &enrollment)
                .await
                .map_err(|e| refused("to send the PIN", e))
        })
        .await;
    crate::metrics::pin_mail("initial", sent.is_ok(), &o.name);
    sent?;
    crash_point("process:after-mail");
    c.rec
        .completed(&format!("okta/send-pin/{enrollment}"), deps.clock.now())?;
    tracing::info!(request_id = %c.rec.request_id, idp = %o.name, "shipment complete (Okta sent the PIN)");
    Ok(Outcome::Completed)
}

/// What becomes of a never-activated enrollment of an ended shipment.
#[derive(Clone, Copy)]
pub(super) enum Release {
    /// The shipment failed: marked failed at Okta (`mark-error`).
    MarkError,
    /// Its record is cleaned up: deleted at Okta.
    Delete,
}

/// Releases the enrollments of an Okta shipment that ended without activation (best
/// effort: Okta's own clean-up removes them otherwise). An activated shipment's
/// enrollments are the user's key and stay.
pub(super) async fn release(deps: &Deps, rec: &ShipmentRecord, how: Release) {
    let Some(Provider::Okta(o)) = deps.idps.of_record(rec) else {
        return;
    };
    if rec.is_registered() {
        return;
    }
    for id in &rec.okta_enrollments {
        let user = &rec.entra_user_id;
        match how {
            Release::MarkError => {
                best_effort(rec, id, "mark failed", o.client.mark_error(user, id)).await
            }
            Release::Delete => {
                best_effort(rec, id, "delete", o.client.delete_enrollment(user, id)).await
            }
        }
    }
}

/// A call about an enrollment that nothing waits on: bounded, and logged when it fails.
async fn best_effort(
    rec: &ShipmentRecord,
    enrollment: &str,
    what: &str,
    call: impl std::future::Future<Output = Result<(), UpstreamError>>,
) {
    let rid = rec.request_id.as_str();
    match tokio::time::timeout(std::time::Duration::from_secs(10), call).await {
        Ok(Ok(())) => tracing::info!(
            request_id = rid,
            enrollment,
            "Okta enrollment: {what}: done"
        ),
        Ok(Err(e)) => {
            tracing::warn!(request_id = rid, enrollment, error = %e, "Okta enrollment: could not {what} it")
        }
        Err(_) => tracing::warn!(
            request_id = rid,
            enrollment,
            "Okta enrollment: no answer to {what} it"
        ),
    }
}

/// Resend PIN for an Okta shipment: `send-pin` again.
pub(super) async fn resend(
    o: &OktaInstance,
    rec: &ShipmentRecord,
) -> Result<String, LifecycleError> {
    let enrollment = rec.entra_method_id.clone().ok_or_else(|| {
        LifecycleError::Internal("registered Okta record without enrollment".into())
    })?;
    o.client
        .send_pin(&rec.entra_user_id, &enrollment)
        .await
        .map_err(|e| match e {
            UpstreamError::Rejected { code, message, .. } => LifecycleError::IdpRejected {
                idp: "Okta",
                what: "sending the PIN",
                code,
                summary: Some(message),
            },
            other => other.into(),
        })?;
    Ok(enrollment)
}
