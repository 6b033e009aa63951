//! The stored shipment record and its state machine.
//!
//! ```text
//!   Accepted ──YE created──► Ongoing ──credential registered──► Registered ──PIN mailed──► Complete
//!      │                        │                                  │
//!      └──────────── terminal error (error set, step = Failed) ◄────┘
//! ```
//!
//! * `Accepted`: written before the YubiEnterprise call, so a crash after YE accepted the
//!   shipment never leaves a shipment we do not know about. A record that stays here past
//!   the creation deadline is marked failed by the processing job for an operator to check.
//! * `Ongoing`: YE has the shipment (`ye_shipment_id` set); we poll it.
//! * `Registered`: Entra has the credential (`entra_method_id` set); the PIN mail is next.
//! * `Complete`: the PIN mail was accepted by the relay.
//! * `Failed`: a terminal error; `error` says why. Publicly still `ongoing` with an error.
//!
//! Transient errors keep the step, count `attempts` and set `next_attempt_at`; once
//! `attempts` reaches the configured maximum the record becomes `Failed`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Accepted,
    Ongoing,
    Registered,
    Complete,
    Failed,
}

impl Step {
    pub fn as_str(&self) -> &'static str {
        match self {
            Step::Accepted => "accepted",
            Step::Ongoing => "ongoing",
            Step::Registered => "registered",
            Step::Complete => "complete",
            Step::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => Step::Accepted,
            "ongoing" => Step::Ongoing,
            "registered" => Step::Registered,
            "complete" => Step::Complete,
            "failed" => Step::Failed,
            _ => return None,
        })
    }
    /// Steps the processing job still has work for.
    pub fn is_open(&self) -> bool {
        matches!(self, Step::Accepted | Step::Ongoing | Step::Registered)
    }
}

/// An error recorded on the shipment. `message` is what the API shows in `error_message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    /// Always "GENERAL" (the vendor's only kind).
    pub kind: String,
    pub message: String,
    /// False while it is a transient error still being retried.
    pub terminal: bool,
}

impl RecordError {
    pub fn terminal(message: impl Into<String>) -> Self {
        Self {
            kind: "GENERAL".into(),
            message: message.into(),
            terminal: true,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: "GENERAL".into(),
            message: message.into(),
            terminal: false,
        }
    }
}

/// One shipment request and everything the connector knows about it. Holds no secret: the
/// PIN is never stored, and the response key lives in the secret store under
/// `fpr-response-<response_kid>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentRecord {
    /// Our key: a random UUID, or derived from the caller's Idempotency-Key.
    pub request_id: String,
    /// YubiEnterprise's shipment id, once YE accepted the shipment.
    pub ye_shipment_id: Option<String>,
    pub step: Step,
    pub error: Option<RecordError>,
    /// Transient failures so far at the current step.
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Last YE `shipment_state_id` seen.
    pub ye_state_id: Option<i64>,
    /// As the caller gave it (UPN or object id); used in the PIN mail.
    pub user_id: String,
    /// Entra object id resolved at creation.
    pub entra_user_id: String,
    pub emails_to: Vec<String>,
    pub yubikey_name: Option<String>,
    /// `kid` of the per-shipment response key (`fpr-<uuid>`).
    pub response_kid: String,
    /// When Entra's challenge expires; Yubico must program the key before this.
    pub challenge_expires_at: Option<DateTime<Utc>>,
    pub serial_number: Option<u64>,
    pub entra_method_id: Option<String>,
    /// Set (and persisted) just before the Entra registration call: if the process dies
    /// before recording the result, the next run looks for the method instead of
    /// registering a second time.
    #[serde(default)]
    pub register_started_at: Option<DateTime<Utc>>,
    /// SHA-256 (hex) of the canonical request body when an Idempotency-Key was given.
    pub idempotency_body_hash: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Processing claim: a replica owns the record until `lease_until`.
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
}

impl ShipmentRecord {
    /// A fresh record in step `Accepted`: what create writes before calling YubiEnterprise.
    pub fn accepted(
        request_id: impl Into<String>,
        user_id: impl Into<String>,
        entra_user_id: impl Into<String>,
        response_kid: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            request_id: request_id.into(),
            ye_shipment_id: None,
            step: Step::Accepted,
            error: None,
            attempts: 0,
            next_attempt_at: None,
            ye_state_id: None,
            user_id: user_id.into(),
            entra_user_id: entra_user_id.into(),
            emails_to: Vec::new(),
            yubikey_name: None,
            response_kid: response_kid.into(),
            challenge_expires_at: None,
            serial_number: None,
            entra_method_id: None,
            register_started_at: None,
            idempotency_body_hash: None,
            created_at: now,
            updated_at: now,
            completed_at: None,
            lease_owner: None,
            lease_until: None,
        }
    }

    pub fn secret_name(&self) -> String {
        response_secret_name(&self.response_kid)
    }
}

/// Secret-store name of a response key's private JWK.
pub fn response_secret_name(kid: &str) -> String {
    format!("fpr-response-{kid}")
}

/// What `GET /v1/fpr/shipments/{id}` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublicState {
    Ongoing,
    Complete,
}

impl PublicState {
    pub fn as_str(&self) -> &'static str {
        match self {
            PublicState::Ongoing => "ongoing",
            PublicState::Complete => "complete",
        }
    }
}

/// The one mapping from internal to public state: `(shipment_state, Some((error_kind,
/// error_message)))`. Transient errors still being retried are not shown.
pub fn public_view(rec: &ShipmentRecord) -> (PublicState, Option<(String, String)>) {
    let state = if rec.step == Step::Complete {
        PublicState::Complete
    } else {
        PublicState::Ongoing
    };
    let err = rec
        .error
        .as_ref()
        .filter(|e| e.terminal)
        .map(|e| (e.kind.clone(), e.message.clone()));
    (state, err)
}

/// Meaning of YubiEnterprise shipment states, for error messages.
pub fn ye_state_meaning(id: i64) -> Option<&'static str> {
    Some(match id {
        1 => "incomplete request",
        6 => "incomplete",
        7 => "address undeliverable or not understood",
        8 => "processing error",
        9 => "denied-party-list match",
        99 => "shipping error",
        105 => "lost",
        106 => "delivery exception",
        _ => return None,
    })
}

/// Whether YubiEnterprise has programmed the key (responses available).
pub fn ye_state_ready(id: i64) -> bool {
    id == 103 || id == 104
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(step: Step) -> ShipmentRecord {
        let mut r = ShipmentRecord::accepted("r", "u@example.com", "oid", "fpr-1", Utc::now());
        r.ye_shipment_id = Some("s".into());
        r.step = step;
        r
    }

    #[test]
    fn only_complete_is_public_complete_and_transient_errors_are_hidden() {
        assert_eq!(public_view(&rec(Step::Registered)).0, PublicState::Ongoing);
        assert_eq!(public_view(&rec(Step::Complete)).0, PublicState::Complete);
        let mut r = rec(Step::Ongoing);
        r.error = Some(RecordError::transient("YE 503"));
        assert_eq!(public_view(&r).1, None);
        r.step = Step::Failed;
        r.error = Some(RecordError::terminal(
            "YubiEnterprise state 7: address undeliverable",
        ));
        let (s, e) = public_view(&r);
        assert_eq!(s, PublicState::Ongoing);
        assert_eq!(e.unwrap().0, "GENERAL");
    }

    #[test]
    fn steps_round_trip() {
        for s in [
            Step::Accepted,
            Step::Ongoing,
            Step::Registered,
            Step::Complete,
            Step::Failed,
        ] {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
    }
}
