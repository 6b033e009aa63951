//! The stored shipment record and its state machine. Every change of step is one of the
//! transition methods below; each names the steps it leaves from and refuses the others,
//! so no code path can move a record sideways.
//!
//! ```text
//!              created at YE            credential registered          PIN mailed
//!   Accepted ───────────────► Ongoing ──────────────────────► Registered ──────────► Complete
//!     │  │                      │                               │
//!     │  └─ answer proves YE    └──── permanent error / ────────┴──► Failed ──(operator retry)──┐
//!     │     did nothing ──► Failed     deadline passed                  ▲                       │
//!     │     (released)                                                  │        back to the step its data allow
//!     └─ outcome unknown ──► Unknown ──(operator: created / not created)┘
//! ```
//!
//! * `Accepted`: written (with the creating request's claim) before YubiEnterprise is
//!   asked, so a crash after YE accepted never leaves a shipment we do not know about.
//! * `Unknown`: the create got no answer that says whether YE acted (or the creating
//!   process died). Never retried blindly: an operator resolves it.
//! * `Ongoing`: YE has the shipment; we poll it.
//! * `Registered`: Entra has the credential; the PIN mail is next.
//! * `Complete`: the relay accepted the PIN mail.
//! * `Failed`: a permanent error, or transient errors until the step's deadline.
//!
//! Transient failures keep the step and set `next_attempt_at`; they never end a shipment
//! before `deadline` (the Entra challenge expiry, less a margin, until registration; the
//! mail window after it).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Accepted,
    Ongoing,
    Registered,
    Complete,
    Failed,
    /// The create's outcome at YubiEnterprise is unknown: an operator must resolve it.
    Unknown,
}

impl Step {
    pub fn as_str(&self) -> &'static str {
        match self {
            Step::Accepted => "accepted",
            Step::Ongoing => "ongoing",
            Step::Registered => "registered",
            Step::Complete => "complete",
            Step::Failed => "failed",
            Step::Unknown => "unknown",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => Step::Accepted,
            "ongoing" => Step::Ongoing,
            "registered" => Step::Registered,
            "complete" => Step::Complete,
            "failed" => Step::Failed,
            "unknown" => Step::Unknown,
            _ => return None,
        })
    }
    /// Steps the processing job still has work for.
    pub fn is_open(&self) -> bool {
        matches!(self, Step::Accepted | Step::Ongoing | Step::Registered)
    }
    /// Steps that end a shipment (cleaned up after the retention period).
    pub fn is_ended(&self) -> bool {
        matches!(self, Step::Complete | Step::Failed)
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

/// A transition asked of a record in a step it does not leave from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a shipment in step `{from}` cannot {action}")]
pub struct TransitionError {
    pub from: &'static str,
    pub action: &'static str,
}

/// How an operator resolves a create whose outcome was unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// YubiEnterprise has the shipment under this id.
    Created { ye_shipment_id: String },
    /// YubiEnterprise has no such shipment: the request may be sent again.
    NotCreated,
}

/// One shipment request and everything the connector knows about it. Holds no secret: the
/// PIN is never stored, and the response key lives in the secret store under
/// `fpr-response-<response_kid>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentRecord {
    /// Our key: a random UUID, or derived from the caller and its Idempotency-Key.
    pub request_id: String,
    /// YubiEnterprise's shipment id, once YE accepted the shipment.
    pub ye_shipment_id: Option<String>,
    pub step: Step,
    pub error: Option<RecordError>,
    /// Transient failures so far at the current step (sets the back-off, never the end).
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Transient failures of the current step are retried until then.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// Last YE `shipment_state_id` seen.
    pub ye_state_id: Option<i64>,
    /// As the caller gave it (UPN or object id); used in the PIN mail.
    pub user_id: String,
    /// Entra object id resolved at creation.
    pub entra_user_id: String,
    /// The user principal name Entra returned at creation, so that a listing by UPN finds
    /// a shipment ordered by object id. Absent on records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_upn: Option<String>,
    pub emails_to: Vec<String>,
    pub yubikey_name: Option<String>,
    /// `kid` of the per-shipment response key (`fpr-<uuid>`). Okta: the `keyId` of its
    /// credential request (Okta holds the response keys; the connector none).
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
    /// Since when its responses name a signing key Yubico's published set lacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_missing_since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub registered_at: Option<DateTime<Utc>>,
    /// SHA-256 (hex) of the canonical request body when an Idempotency-Key was given.
    pub idempotency_body_hash: Option<String>,
    /// When the PIN was resent lately (bounded; for the per-shipment resend limit).
    #[serde(default)]
    pub resends: Vec<DateTime<Utc>>,
    /// Who asked for the shipment (token subject or `apikey:<name>`).
    #[serde(default)]
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub failed_at: Option<DateTime<Utc>>,
    /// Processing claim: a replica (`<replica>/<boot id>`) owns the record until
    /// `lease_until`.
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// What happened, oldest first: at most [`MAX_EVENTS`] (the first is always kept;
    /// repeats of one retry cause are counted in one event). Never a PIN or a token.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Alerts about this shipment, one per cause (see `lifecycle::alerts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertMark>,
    /// The identity-provider instance serving the shipment when it is not the Entra one
    /// (multi-IdP mode); absent: the deployment's Entra instance. For an Okta instance
    /// `entra_user_id` holds Okta's user id and `user_upn` its login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp: Option<String>,
    /// Okta: the enrollments its `enroll` made (one per relying party). Okta activates
    /// them and mails the PIN; `entra_method_id` is the first once activated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub okta_enrollments: Vec<String>,
}

/// The state of one alert (a shipment and a cause): claimed by a replica while it posts
/// it, then sent (or skipped when no webhook is configured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMark {
    pub cause: String,
    /// When the cause was first seen.
    pub since: DateTime<Utc>,
    #[serde(default)]
    pub sent_at: Option<DateTime<Utc>>,
    /// True when it was settled without a post (no webhook configured).
    #[serde(default)]
    pub skipped: bool,
    /// The replica posting it, until when (a dead replica's claim lapses).
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Failed posts so far (retried by later processing runs).
    #[serde(default)]
    pub attempts: u32,
}

/// Alert cause of a failed shipment (one that reached YubiEnterprise).
pub const ALERT_FAILED: &str = "failed";
/// Alert cause of a shipment in (or failed by) a YubiEnterprise error state.
pub const ALERT_YE_ERROR: &str = "ye_error_state";
/// Alert cause of a create whose outcome is unknown.
pub const ALERT_UNKNOWN: &str = "unknown_outcome";

/// Events kept per shipment.
pub const MAX_EVENTS: usize = 64;

/// One entry of a shipment's history (`GET /v1/fpr/shipments/{id}/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// `created`, `ye_created`, `ye_state`, `registered`, `pin_mailed`, `pin_resend`,
    /// `retrying`, `failed`, `released`, `unknown`, `operator_retry`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Who did it (token subject or `apikey:<name>`), for caller and operator actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// How many times in a row this happened (retries of one cause), and the last time.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<DateTime<Utc>>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Registration must happen at least this long before Entra's challenge expires.
pub const CHALLENGE_MARGIN_SECS: i64 = 60;

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
            deadline: None,
            ye_state_id: None,
            user_id: user_id.into(),
            entra_user_id: entra_user_id.into(),
            user_upn: None,
            emails_to: Vec::new(),
            yubikey_name: None,
            response_kid: response_kid.into(),
            challenge_expires_at: None,
            serial_number: None,
            entra_method_id: None,
            register_started_at: None,
            signing_key_missing_since: None,
            registered_at: None,
            idempotency_body_hash: None,
            resends: Vec::new(),
            created_by: None,
            created_at: now,
            updated_at: now,
            completed_at: None,
            failed_at: None,
            lease_owner: None,
            lease_until: None,
            events: Vec::new(),
            alerts: Vec::new(),
            idp: None,
            okta_enrollments: Vec::new(),
        }
    }

    /// What the create request fixes on its new record.
    pub fn with_order(mut self, order: Order) -> Self {
        self.user_upn = order.user_upn;
        self.emails_to = order.emails_to;
        self.yubikey_name = order.yubikey_name;
        self.challenge_expires_at = Some(order.challenge_expires_at);
        self.idempotency_body_hash = order.idempotency_body_hash;
        self.created_by = Some(order.created_by);
        self
    }

    /// The keys the record is listed under, lowercased and distinct: the user as the
    /// caller gave it, the object id, and the UPN Entra returned (when kept).
    pub fn user_keys(&self) -> Vec<String> {
        let mut keys = vec![self.user_id.to_lowercase()];
        for k in [Some(&self.entra_user_id), self.user_upn.as_ref()]
            .into_iter()
            .flatten()
        {
            let k = k.to_lowercase();
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }

    /// Whether the record is this user's, by any of [`Self::user_keys`] (case-insensitive).
    pub fn is_for_user(&self, user: &str) -> bool {
        self.user_id.eq_ignore_ascii_case(user)
            || self.entra_user_id.eq_ignore_ascii_case(user)
            || self
                .user_upn
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(user))
    }

    /// Its responses name a signing key the published set lacks: since when (the first
    /// time is now).
    pub fn signing_key_missing(&mut self, now: DateTime<Utc>) -> DateTime<Utc> {
        *self.signing_key_missing_since.get_or_insert(now)
    }

    /// Its responses opened: a key published late was found.
    pub fn signing_key_found(&mut self) {
        self.signing_key_missing_since = None;
    }

    /// Takes (or renews) the record's claim for `owner` until `until`.
    pub fn claim(&mut self, owner: &str, until: DateTime<Utc>, now: DateTime<Utc>) {
        self.lease_owner = Some(owner.to_string());
        self.lease_until = Some(until);
        self.updated_at = now;
    }

    /// Gives the record's claim up.
    pub fn release_claim(&mut self, now: DateTime<Utc>) {
        self.lease_owner = None;
        self.lease_until = None;
        self.updated_at = now;
    }

    /// The registration call is about to be made: a later run that finds the record still
    /// ongoing looks for the credential before registering again.
    pub fn registering(&mut self, now: DateTime<Utc>) {
        self.register_started_at = Some(now);
    }

    /// Claims the alert for `cause` (made when first due) for `owner` until `until`, and
    /// returns since when its cause holds.
    pub fn claim_alert(
        &mut self,
        cause: &str,
        owner: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let idx = match self.alerts.iter().position(|a| a.cause == cause) {
            Some(i) => i,
            None => {
                self.alerts.push(AlertMark {
                    cause: cause.to_string(),
                    since: now,
                    sent_at: None,
                    skipped: false,
                    owner: None,
                    until: None,
                    attempts: 0,
                });
                self.alerts.len() - 1
            }
        };
        let mark = &mut self.alerts[idx];
        mark.owner = Some(owner.to_string());
        mark.until = Some(until);
        mark.since
    }

    /// What became of a claimed alert: posted (`Ok(true)`), settled without a webhook
    /// (`Ok(false)`), or not delivered (`Err`, a later run tries again).
    pub fn settle_alert(&mut self, cause: &str, outcome: Result<bool, ()>, now: DateTime<Utc>) {
        if let Some(mark) = self.alerts.iter_mut().find(|a| a.cause == cause) {
            mark.owner = None;
            mark.until = None;
            match outcome {
                Ok(posted) => {
                    mark.sent_at = Some(now);
                    mark.skipped = !posted;
                }
                Err(()) => mark.attempts += 1,
            }
        }
        if outcome == Ok(true) {
            self.note("alert_sent", Some(cause.to_string()), None, now);
        }
    }

    /// Counts a PIN resend by `caller` (mail `message_id`), at most `limit` within
    /// `window`; refused with the resends counted and how long until one is allowed.
    pub fn resend(
        &mut self,
        message_id: &str,
        caller: &str,
        limit: usize,
        window: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), ResendRefused> {
        self.resends.retain(|t| *t > now - window);
        if self.resends.len() >= limit {
            let oldest = self.resends.iter().min().copied().unwrap_or(now);
            return Err(ResendRefused {
                count: self.resends.len(),
                retry_after: (oldest + window - now).to_std().unwrap_or_default(),
            });
        }
        self.resends.push(now);
        self.note(
            "pin_resend",
            Some(format!("message {message_id}")),
            Some(caller),
            now,
        );
        Ok(())
    }

    /// Adds an event to the history (bounded; consecutive retries of one cause collapse).
    pub fn note(
        &mut self,
        kind: &str,
        detail: Option<String>,
        by: Option<&str>,
        now: DateTime<Utc>,
    ) {
        if let Some(last) = self.events.last_mut() {
            if kind == "retrying" && last.kind == kind && last.detail == detail {
                last.count = last.count.saturating_add(1);
                last.last_at = Some(now);
                return;
            }
        }
        self.events.push(Event {
            at: now,
            kind: kind.to_string(),
            detail,
            by: by.map(str::to_string),
            count: 1,
            last_at: None,
        });
        if self.events.len() > MAX_EVENTS {
            self.events.remove(1);
        }
    }

    /// Records YubiEnterprise's state, noting a change in the history.
    pub fn saw_ye_state(&mut self, ye_state_id: i64, now: DateTime<Utc>) {
        if self.ye_state_id != Some(ye_state_id) {
            self.note(
                "ye_state",
                Some(format!("{ye_state_id}: {}", ye_state_label(ye_state_id))),
                None,
                now,
            );
        }
        self.ye_state_id = Some(ye_state_id);
    }

    pub fn secret_name(&self) -> String {
        response_secret_name(&self.response_kid)
    }

    /// Whether the connector holds a response key for it (Okta keeps its own keys).
    pub fn holds_response_key(&self) -> bool {
        self.okta_enrollments.is_empty()
    }

    /// When the shipment ended (complete or failed), for the retention clean-up.
    pub fn ended_at(&self) -> Option<DateTime<Utc>> {
        match self.step {
            Step::Complete => self.completed_at,
            Step::Failed => self.failed_at.or(Some(self.updated_at)),
            _ => None,
        }
    }

    /// Whether Entra holds the credential (the PIN may then be mailed or resent).
    pub fn is_registered(&self) -> bool {
        self.entra_method_id.is_some()
    }

    fn require_step(&self, from: &[Step], action: &'static str) -> Result<(), TransitionError> {
        if from.contains(&self.step) {
            Ok(())
        } else {
            Err(TransitionError {
                from: self.step.as_str(),
                action,
            })
        }
    }

    fn clear_retry(&mut self) {
        self.error = None;
        self.attempts = 0;
        self.next_attempt_at = None;
    }

    fn pre_registration_deadline(&self) -> Option<DateTime<Utc>> {
        self.challenge_expires_at
            .map(|t| t - Duration::seconds(CHALLENGE_MARGIN_SECS))
    }

    /// Accepted → Ongoing: YubiEnterprise created the shipment.
    pub fn created_at_ye(
        &mut self,
        ye_shipment_id: String,
        ye_state_id: i64,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.require_step(&[Step::Accepted], "record a created shipment")?;
        self.enter_ongoing(ye_shipment_id, ye_state_id, now);
        Ok(())
    }

    /// Into Ongoing with the shipment YubiEnterprise created; the create's claim ends.
    fn enter_ongoing(&mut self, ye_shipment_id: String, ye_state_id: i64, now: DateTime<Utc>) {
        self.note(
            "ye_created",
            Some(format!("YubiEnterprise shipment {ye_shipment_id}")),
            None,
            now,
        );
        self.ye_shipment_id = Some(ye_shipment_id);
        self.saw_ye_state(ye_state_id, now);
        self.step = Step::Ongoing;
        self.deadline = self.pre_registration_deadline();
        self.clear_retry();
        self.updated_at = now;
        self.lease_owner = None;
        self.lease_until = None;
    }

    /// Accepted → Failed without a YE shipment: YubiEnterprise's answer proves it created
    /// nothing, so a retry of the same request may proceed.
    pub fn released(&mut self, why: String, now: DateTime<Utc>) -> Result<(), TransitionError> {
        self.require_step(&[Step::Accepted], "be released")?;
        self.enter_released(why, now);
        Ok(())
    }

    /// Into Failed without a YubiEnterprise shipment (the same request may be sent again).
    fn enter_released(&mut self, why: String, now: DateTime<Utc>) {
        self.note("released", Some(why.clone()), None, now);
        self.step = Step::Failed;
        self.error = Some(RecordError::terminal(why));
        self.failed_at = Some(now);
        self.updated_at = now;
        self.lease_owner = None;
        self.lease_until = None;
    }

    /// Whether the alert for `cause` has been settled (sent, or skipped without a webhook).
    pub fn alert_settled(&self, cause: &str) -> bool {
        self.alerts
            .iter()
            .any(|a| a.cause == cause && a.sent_at.is_some())
    }

    /// The alert cause of a failed shipment: a YubiEnterprise error state, or any other
    /// failure.
    pub fn failure_alert_cause(&self) -> &'static str {
        if self
            .ye_state_id
            .is_some_and(|s| ye_state_meaning(s).is_some())
        {
            ALERT_YE_ERROR
        } else {
            ALERT_FAILED
        }
    }

    /// Whether the processing scan must still read this record: it has work left, or it
    /// ended in a way someone must be told about and the alert is not settled yet.
    pub fn needs_scan(&self) -> bool {
        match self.step {
            Step::Failed => {
                self.ye_shipment_id.is_some() && !self.alert_settled(self.failure_alert_cause())
            }
            Step::Unknown => !self.alert_settled(ALERT_UNKNOWN),
            s => s.is_open(),
        }
    }

    /// Whether this record is a create that provably made nothing at YubiEnterprise.
    pub fn is_released(&self) -> bool {
        self.step == Step::Failed && self.ye_shipment_id.is_none()
    }

    /// Accepted → Unknown: the create's outcome is unknown; an operator must resolve it.
    pub fn outcome_unknown(
        &mut self,
        why: String,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.require_step(&[Step::Accepted], "be flagged as unknown")?;
        self.note("unknown", Some(why.clone()), None, now);
        self.step = Step::Unknown;
        self.error = Some(RecordError::terminal(format!(
            "the outcome of creating the shipment at YubiEnterprise is unknown ({why}); \
             an operator must check the YubiEnterprise console and resolve request {} \
             with POST /v1/operations/retry/{}",
            self.request_id, self.request_id
        )));
        self.updated_at = now;
        self.lease_owner = None;
        self.lease_until = None;
        Ok(())
    }

    /// Ongoing → Registered: Entra holds the credential; the PIN mail is retried until
    /// `mail_deadline`.
    pub fn registered(
        &mut self,
        serial: u64,
        method_id: String,
        now: DateTime<Utc>,
        mail_deadline: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.require_step(&[Step::Ongoing], "record a registration")?;
        self.note(
            "registered",
            Some(format!("Entra method {method_id}, serial {serial}")),
            None,
            now,
        );
        self.step = Step::Registered;
        self.serial_number = Some(serial);
        self.entra_method_id = Some(method_id);
        self.registered_at = Some(now);
        self.deadline = Some(mail_deadline);
        self.clear_retry();
        self.updated_at = now;
        Ok(())
    }

    /// Registered → Complete: the relay accepted the PIN mail `message_id`.
    pub fn completed(
        &mut self,
        message_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.require_step(&[Step::Registered], "complete")?;
        self.note(
            "pin_mailed",
            Some(format!("message {message_id}")),
            None,
            now,
        );
        self.step = Step::Complete;
        self.completed_at = Some(now);
        self.deadline = None;
        self.clear_retry();
        self.updated_at = now;
        Ok(())
    }

    /// Open → Failed: a permanent error, or the deadline passed.
    pub fn failed(&mut self, message: String, now: DateTime<Utc>) -> Result<(), TransitionError> {
        self.require_step(&[Step::Accepted, Step::Ongoing, Step::Registered], "fail")?;
        self.note("failed", Some(message.clone()), None, now);
        self.step = Step::Failed;
        self.error = Some(RecordError::terminal(message));
        self.next_attempt_at = None;
        self.failed_at = Some(now);
        self.updated_at = now;
        Ok(())
    }

    /// Open → same step, to be tried again at `next` (a transient failure).
    pub fn retry_later(
        &mut self,
        message: String,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.require_step(&[Step::Ongoing, Step::Registered], "be retried")?;
        self.note("retrying", Some(message.clone()), None, now);
        self.attempts = self.attempts.saturating_add(1);
        self.error = Some(RecordError::transient(message));
        self.next_attempt_at = Some(next);
        self.updated_at = now;
        Ok(())
    }

    /// Open → same step, due again at `at` because an upstream stated its pace: the
    /// attempts and their back-off are left as they were (pacing is not a failure).
    pub fn paced(
        &mut self,
        message: String,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.require_step(&[Step::Ongoing, Step::Registered], "wait for a rate limit")?;
        let message = format!(
            "{message} until {}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        self.note("paced", Some(message.clone()), None, now);
        self.error = Some(RecordError::transient(message));
        self.next_attempt_at = Some(at);
        self.updated_at = now;
        Ok(())
    }

    /// Ongoing, still with Yubico: any earlier transient error is over.
    pub fn waiting(&mut self, ye_state_id: i64, now: DateTime<Utc>) -> Result<(), TransitionError> {
        self.require_step(&[Step::Ongoing], "wait for Yubico")?;
        self.saw_ye_state(ye_state_id, now);
        if self.error.is_some() || self.attempts > 0 {
            self.clear_retry();
            self.updated_at = now;
        }
        Ok(())
    }

    /// The step's deadline: stored, or derived from the challenge for older records.
    pub fn step_deadline(&self) -> Option<DateTime<Utc>> {
        self.deadline.or_else(|| match self.step {
            Step::Ongoing | Step::Accepted => self.pre_registration_deadline(),
            _ => None,
        })
    }

    /// Failed → back into processing from the last persisted step (operator action).
    /// A registered shipment goes back to mailing its PIN with a new mail window.
    pub fn resume(
        &mut self,
        now: DateTime<Utc>,
        mail_deadline: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        self.require_step(&[Step::Failed], "be retried by an operator")?;
        if self.is_registered() {
            self.step = Step::Registered;
            self.deadline = Some(mail_deadline);
        } else if self.ye_shipment_id.is_some() {
            self.step = Step::Ongoing;
            self.deadline = self.pre_registration_deadline();
        } else {
            return Err(TransitionError {
                from: "failed before YubiEnterprise created it",
                action: "be retried (send the create request again)",
            });
        }
        self.failed_at = None;
        self.clear_retry();
        self.updated_at = now;
        self.lease_owner = None;
        self.lease_until = None;
        Ok(())
    }

    /// Unknown → Ongoing (the operator found the shipment) or → Failed, released (it was
    /// never created; the same request may be sent again).
    pub fn resolve(&mut self, r: Resolution, now: DateTime<Utc>) -> Result<(), TransitionError> {
        self.require_step(&[Step::Unknown], "be resolved")?;
        match r {
            Resolution::Created { ye_shipment_id } => self.enter_ongoing(ye_shipment_id, 0, now),
            Resolution::NotCreated => self.enter_released(
                "an operator confirmed that YubiEnterprise did not create the shipment".into(),
                now,
            ),
        }
        Ok(())
    }
}

/// What the create request fixes on its new record ([`ShipmentRecord::with_order`]).
#[derive(Debug, Clone)]
pub struct Order {
    /// The user principal name Entra returned for the user.
    pub user_upn: Option<String>,
    pub emails_to: Vec<String>,
    pub yubikey_name: Option<String>,
    pub challenge_expires_at: DateTime<Utc>,
    pub idempotency_body_hash: Option<String>,
    pub created_by: String,
}

/// A resend refused by the limit: how many were counted in the window, and how long until
/// one is allowed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendRefused {
    pub count: usize,
    pub retry_after: std::time::Duration,
}

/// Secret-store name of a response key's private JWK.
pub fn response_secret_name(kid: &str) -> String {
    // `crate::secrets::split::RESPONSE_KEY_PREFIX` routes these to the keys vault.
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

/// What the API shows besides the state: `(error_kind, error_message)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicError {
    /// A permanent error: `error_kind` "GENERAL" and the cause.
    Terminal { kind: String, message: String },
    /// A transient failure being retried: only `error_message`, saying what it waits for.
    Retrying { message: String },
}

/// The one mapping from internal to public state.
pub fn public_view(rec: &ShipmentRecord) -> (PublicState, Option<PublicError>) {
    let state = if rec.step == Step::Complete {
        PublicState::Complete
    } else {
        PublicState::Ongoing
    };
    let err = rec.error.as_ref().map(|e| {
        if e.terminal {
            PublicError::Terminal {
                kind: e.kind.clone(),
                message: e.message.clone(),
            }
        } else {
            PublicError::Retrying {
                message: format!(
                    "retrying: {}{}",
                    e.message,
                    rec.next_attempt_at
                        .map(|t| format!(" (next attempt at {})", t.to_rfc3339()))
                        .unwrap_or_default()
                ),
            }
        }
    });
    (state, err)
}

/// The body of `GET /v1/fpr/shipments/{id}` for this record (`None` before YubiEnterprise
/// gave it an id). The embedded store keeps it beside the record, written with it, so a
/// read serves it without decoding the record.
pub fn public_view_json(rec: &ShipmentRecord) -> Option<String> {
    let id = rec.ye_shipment_id.as_deref()?;
    let (state, error) = public_view(rec);
    let mut body = serde_json::json!({"shipment_id": id, "shipment_state": state.as_str()});
    match error {
        Some(PublicError::Terminal { kind, message }) => {
            body["error_kind"] = serde_json::Value::String(kind);
            body["error_message"] = serde_json::Value::String(message);
        }
        Some(PublicError::Retrying { message }) => {
            body["error_message"] = serde_json::Value::String(message);
        }
        None => {}
    }
    Some(body.to_string())
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

/// A YubiEnterprise state's meaning, for every state (listings, history).
pub fn ye_state_label(code: i64) -> &'static str {
    match code {
        103 => "shipped",
        104 => "delivered",
        c => ye_state_meaning(c).unwrap_or("in progress"),
    }
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
    fn only_complete_is_public_complete_and_transient_errors_say_what_they_wait_for() {
        assert_eq!(public_view(&rec(Step::Registered)).0, PublicState::Ongoing);
        assert_eq!(public_view(&rec(Step::Complete)).0, PublicState::Complete);
        let mut r = rec(Step::Ongoing);
        let now = Utc::now();
        r.retry_later("YubiEnterprise: HTTP 503".into(), now, now)
            .unwrap();
        assert!(
            matches!(public_view(&r).1, Some(PublicError::Retrying { message }) if message.contains("503"))
        );
        r.failed("YubiEnterprise state 7: address undeliverable".into(), now)
            .unwrap();
        let (s, e) = public_view(&r);
        assert_eq!(s, PublicState::Ongoing);
        assert!(matches!(e, Some(PublicError::Terminal { kind, .. }) if kind == "GENERAL"));
    }

    #[test]
    fn transitions_leave_only_from_their_steps() {
        let now = Utc::now();
        let mut r = ShipmentRecord::accepted("r", "u", "oid", "k", now);
        assert!(r.registered(1, "m".into(), now, now).is_err());
        assert!(r.completed("m", now).is_err());
        r.created_at_ye("s".into(), 0, now).unwrap();
        assert!(r.created_at_ye("t".into(), 0, now).is_err());
        r.registered(1, "m".into(), now, now).unwrap();
        r.failed("mail relay down until the deadline".into(), now)
            .unwrap();
        r.resume(now, now).unwrap();
        assert_eq!(
            r.step,
            Step::Registered,
            "a registered shipment resumes at the mail"
        );
        r.completed("m", now).unwrap();
        assert!(r.failed("x".into(), now).is_err());

        let mut u = ShipmentRecord::accepted("r2", "u", "oid", "k", now);
        u.outcome_unknown("timed out".into(), now).unwrap();
        assert!(u.resume(now, now).is_err());
        u.resolve(Resolution::NotCreated, now).unwrap();
        assert!(u.is_released());
        let mut u = ShipmentRecord::accepted("r3", "u", "oid", "k", now);
        u.outcome_unknown("timed out".into(), now).unwrap();
        u.resolve(
            Resolution::Created {
                ye_shipment_id: "found".into(),
            },
            now,
        )
        .unwrap();
        assert_eq!(u.step, Step::Ongoing);
    }

    #[test]
    fn steps_round_trip() {
        for s in [
            Step::Accepted,
            Step::Ongoing,
            Step::Registered,
            Step::Complete,
            Step::Failed,
            Step::Unknown,
        ] {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn history_is_bounded_and_collapses_repeated_retries() {
        let mut r = rec(Step::Ongoing);
        let now = Utc::now();
        r.note("created", None, Some("apikey:x"), now);
        for _ in 0..5 {
            r.retry_later("YubiEnterprise: HTTP 503".into(), now, now)
                .unwrap();
        }
        assert_eq!(r.events.len(), 2);
        assert_eq!(r.events[1].count, 5);
        for i in 0..200 {
            r.retry_later(format!("cause {i}"), now, now).unwrap();
        }
        assert_eq!(r.events.len(), MAX_EVENTS);
        assert_eq!(r.events[0].kind, "created", "the first event is kept");
        assert_eq!(
            r.events.last().unwrap().detail.as_deref(),
            Some("cause 199")
        );
    }
}
