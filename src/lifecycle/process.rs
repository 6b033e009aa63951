//! One processing pass over every open record, with bounded concurrency: at most
//! `process_concurrency` upstream calls in flight, twice as many shipments in hand.
//!
//! Each record is first *claimed* with a conditional write (owner and expiry on the
//! record), so processes never work on the same record at once. The claim is short
//! (`FIDO_CONNECTOR_CLAIM_TTL_SECONDS`) and renewed by every write, in particular just
//! before each side effect; every upstream call is bounded by the claim's remaining time,
//! so no step outlives its claim. A step that cannot renew (someone else wrote) stops
//! before acting.
//!
//! Failures are classified once, here: transient ones keep the step and are retried with
//! capped exponential back-off until the step's deadline; permanent ones fail the shipment
//! with the cause.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use super::idps::Provider;
use super::{claim_free, service_of, Deps, LifecycleError};
use crate::crypto::{self, CryptoError, ResponseKey};
use crate::domain::shipment::{ye_state_meaning, ye_state_ready};
use crate::domain::{ShipmentRecord, Step};
use crate::faults::crash_point;
use crate::store::{ETag, Query, StoreError, Versioned};
use crate::upstream::{PinMail, ProductData, UpstreamError};

const PAGE: usize = 200;
/// Open records read ahead and ordered by urgency before they are taken: within each
/// window of this many, the nearest deadline goes first, so that a run its budget cuts
/// short leaves the least urgent for the next run.
const WINDOW: usize = 2_000;

/// The order a run takes shipments in: the nearest step deadline (a challenge about to
/// expire, a PIN mail window closing) first; records without one last; then the oldest.
fn urgency(v: &Versioned<ShipmentRecord>) -> (DateTime<Utc>, DateTime<Utc>) {
    (
        v.value
            .step_deadline()
            .or(v.value.challenge_expires_at)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
        v.value.created_at,
    )
}
/// Upstream calls stop this long before the claim runs out.
const CLAIM_MARGIN: StdDuration = StdDuration::from_secs(1);

/// What one processing run did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub examined: usize,
    pub completed: usize,
    pub failed: usize,
    pub retried: usize,
    pub skipped: usize,
    pub waiting: usize,
    /// Creates whose outcome is unknown, flagged for an operator.
    pub flagged: usize,
    /// Left due for a later run by an upstream's rate limit (their back-off unchanged).
    pub paced: usize,
    /// Not reached: the run's time budget ran out (due for the next run).
    pub deferred: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Completed,
    Failed,
    Retried,
    Skipped,
    Waiting,
    Flagged,
    Paced,
}

/// One pass over every open record, most urgent first within each window of [`WINDOW`]
/// records ([`urgency`]). Windows are read as the work drains, so the concurrency limit
/// applies across their boundaries (no wave barrier per page).
/// One page of the processing scan. A store that is slow or briefly unavailable (a
/// timeout under load) is asked again, twice, after a pause, before the run gives up: one
/// slow page must not end a run that has the whole table to go through.
async fn scan_page(
    deps: &Deps,
    continuation: Option<String>,
) -> Result<
    crate::store::Page<crate::store::Versioned<crate::domain::ShipmentRecord>>,
    LifecycleError,
> {
    let mut pause = std::time::Duration::from_millis(500);
    for _ in 0..2 {
        match deps
            .store
            .query(&Query::Open, continuation.clone(), PAGE)
            .await
        {
            Err(crate::store::StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "processing scan: the store did not answer; asking again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            other => return Ok(other?),
        }
    }
    Ok(deps.store.query(&Query::Open, continuation, PAGE).await?)
}

pub async fn process_shipments(deps: &Deps) -> Result<RunSummary, LifecycleError> {
    let started = std::time::Instant::now();
    let concurrency = deps.config.processing.concurrency;
    // The limit is on upstream calls in flight, which is what protects YubiEnterprise,
    // Graph and the mail endpoint; twice as many shipments are in hand, so that one
    // shipment's local work (opening its responses, store writes) does not keep a call
    // slot idle.
    let calls = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let in_hand = concurrency.saturating_mul(2);
    let mut summary = RunSummary::default();
    let mut queue = std::collections::VecDeque::new();
    let mut continuation: Option<String> = None;
    let mut exhausted = false;
    // Each shipment runs as its own task so that their cryptography spreads over every
    // worker thread (one task polling them all ran it on one core at a time). A JoinSet
    // keeps the old cancellation: dropping the run aborts its shipments at their next
    // await, as dropping the futures did.
    let mut inflight = tokio::task::JoinSet::new();
    // Past its budget the run takes no new shipment: the rest stay due for the next run.
    let run_deadline = started + deps.config.processing.run_budget;
    loop {
        while inflight.len() < in_hand {
            if std::time::Instant::now() >= run_deadline {
                summary.deferred += queue.len();
                queue.clear();
                exhausted = true;
                break;
            }
            if queue.is_empty() && !exhausted {
                // A window of open records, read ahead and taken most urgent first.
                while queue.len() < WINDOW && !exhausted {
                    let page = scan_page(deps, continuation.take()).await?;
                    queue.extend(page.items);
                    continuation = page.next;
                    exhausted = continuation.is_none();
                }
                queue.make_contiguous().sort_by_key(urgency);
            }
            match queue.pop_front() {
                Some(v) => {
                    // One span per shipment's processing, carrying its ids (never a
                    // secret), so its log lines can be followed together.
                    let span = tracing::info_span!(
                        "shipment",
                        request_id = %v.value.request_id,
                        ye_shipment_id = v.value.ye_shipment_id.as_deref().unwrap_or(""),
                        step = v.value.step.as_str(),
                    );
                    // Alerts are judged after the step, on a fresh read (the step may have
                    // found the key programmed, or failed the shipment); only records that
                    // had a cause when scanned are read again.
                    let alert_check = super::alerts::any_cause(deps, &v.value)
                        .then(|| v.value.request_id.clone());
                    let deps = deps.clone();
                    let calls = calls.clone();
                    let work = async move {
                        let outcome = process_one(&deps, v, run_deadline).await;
                        if let Some(id) = alert_check {
                            if let Ok(Some(fresh)) = deps.store.get(&id).await {
                                super::alerts::handle(&deps, fresh).await;
                            }
                        }
                        outcome
                    };
                    // Its upstream calls take the run's call slots as they go out.
                    let work = crate::upstream::pace::CALL_SLOTS.scope(calls, work);
                    inflight.spawn(tracing::Instrument::instrument(work, span));
                }
                None => break,
            }
        }
        let o = match inflight.join_next().await {
            Some(Ok(o)) => o,
            Some(Err(e)) => {
                // A panicking step leaves its record as the last write made it; its
                // claim lapses and the next run takes it up.
                tracing::error!(error = %e, "a shipment's processing task failed");
                Outcome::Skipped
            }
            None => break,
        };
        summary.examined += 1;
        match o {
            Outcome::Completed => summary.completed += 1,
            Outcome::Failed => summary.failed += 1,
            Outcome::Retried => summary.retried += 1,
            Outcome::Skipped => summary.skipped += 1,
            Outcome::Waiting => summary.waiting += 1,
            Outcome::Flagged => summary.flagged += 1,
            Outcome::Paced => summary.paced += 1,
        }
    }
    tracing::info!(?summary, "processing run finished");
    let m = &*crate::metrics::METRICS;
    m.runs.inc();
    m.run_seconds.observe(started.elapsed().as_secs_f64());
    m.run_shipments.observe(summary.examined as f64);
    for (outcome, n) in [
        ("completed", summary.completed),
        ("failed", summary.failed),
        ("retrying", summary.retried),
        ("waiting", summary.waiting),
        ("flagged_unknown", summary.flagged),
    ] {
        m.processed
            .get_or_create(&crate::metrics::Outcome { outcome })
            .inc_by(n as u64);
    }
    Ok(summary)
}

/// Why a step did not finish.
#[derive(Debug)]
pub(super) enum StepError {
    Transient(String, Option<StdDuration>),
    /// The upstream's pace (429, or 503 with `Retry-After`): not the shipment's failure.
    /// Its calls may go again after the wait.
    Throttled(String, StdDuration),
    Permanent(String),
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

impl From<crate::domain::TransitionError> for StepError {
    fn from(e: crate::domain::TransitionError) -> Self {
        StepError::Permanent(e.to_string())
    }
}

/// The one classification of upstream failures during processing.
pub(super) fn upstream(context: &str, e: UpstreamError) -> StepError {
    match e {
        UpstreamError::Transient {
            message,
            retry_after,
            ..
        } => StepError::Transient(format!("{context}: {message}"), retry_after),
        UpstreamError::Throttled {
            service,
            retry_after,
        } => StepError::Throttled(
            format!("{context}: waiting for {service}'s rate limit"),
            retry_after,
        ),
        // The token was re-read once already; the operator may be rotating it: keep trying.
        UpstreamError::Unauthorized { service } => StepError::Transient(
            format!("{context}: {service} refused the connector's credentials"),
            None,
        ),
        UpstreamError::OutcomeUnknown { message, .. } => {
            StepError::Transient(format!("{context}: {message}"), None)
        }
        UpstreamError::NotFound { code, message, .. } => {
            StepError::Permanent(format!("{context}: not found ({code}): {message}"))
        }
        UpstreamError::Rejected {
            status,
            code,
            message,
            ..
        } => StepError::Permanent(format!("{context}: rejected ({status} {code}): {message}")),
        e @ UpstreamError::Invalid { .. } => StepError::Permanent(format!(
            "{context}: {} sent an invalid answer",
            service_of(&e)
        )),
    }
}

fn crypto_err(context: &str, e: CryptoError) -> StepError {
    let message = match &e {
        CryptoError::KeySet(m) => format!("{context}: {m}"),
        other => format!("{context}: {other}"),
    };
    // Classified once, by crypto::CryptoError::failure (create and resend use the same).
    match e.failure() {
        crate::crypto::CryptoFailure::KeysUnavailable => StepError::Transient(message, None),
        _ => StepError::Permanent(message),
    }
}

/// A record this process works on. The claim is taken by the first write, which is
/// conditional on the version the scan read: the steps before it only read (the
/// YubiEnterprise state, the response key, the responses' decryption), so two replicas
/// that both start on a record waste a read at worst, and only one of them gets past
/// that write. Every side effect (registration, mail) comes after a write that renewed
/// the claim, as before; a shipment still with Yubico costs one write per run, not two.
pub(super) struct Claimed<'a> {
    pub(super) deps: &'a Deps,
    pub(super) rec: ShipmentRecord,
    etag: ETag,
    /// Whether a write of this run holds the claim.
    held: bool,
}

impl<'a> Claimed<'a> {
    /// Starts work on a record the scan read (no write yet; see the type's comment).
    fn take(deps: &'a Deps, v: Versioned<ShipmentRecord>) -> Self {
        Claimed {
            deps,
            rec: v.value,
            etag: v.etag,
            held: false,
        }
    }

    /// Persists the record and takes or renews the claim (owner, now + TTL), if the
    /// record is still the version this process last read or wrote.
    pub(super) async fn save(&mut self) -> Result<(), StepError> {
        let now = self.deps.clock.now();
        self.rec
            .claim(self.deps.owner(), now + self.deps.claim_ttl(), now);
        self.etag = self.deps.store.replace(&self.rec, &self.etag).await?;
        self.held = true;
        Ok(())
    }

    /// Writes the outcome and gives the claim up.
    async fn release(&mut self) -> Result<(), StepError> {
        self.rec.release_claim(self.deps.clock.now());
        self.etag = self.deps.store.replace(&self.rec, &self.etag).await?;
        Ok(())
    }

    /// Opening Yubico's response failed. A signing key missing from the published set is
    /// taken for a key published late for `FIDO_CONNECTOR_SIGNING_KEY_GRACE_MINUTES`
    /// (from the first time it was missing), then the shipment fails; anything else is
    /// classified by [`crypto_err`].
    fn opening_failed(&mut self, context: &str, e: CryptoError) -> StepError {
        let CryptoError::UnpublishedSigningKey(kid) = &e else {
            return crypto_err(context, e);
        };
        let now = self.deps.clock.now();
        let since = self.rec.signing_key_missing(now);
        let grace = Duration::from_std(self.deps.config.ye.signing_key_grace)
            .unwrap_or(Duration::minutes(15));
        if now - since >= grace {
            StepError::Permanent(format!(
                "Yubico's response is signed by key {kid}, still missing from Yubico's published \
                 sign keys {} min after it was first missing: a forged or broken answer",
                (now - since).num_minutes()
            ))
        } else {
            StepError::Transient(
                format!(
                    "{context}: {e} (tolerated until {})",
                    (since + grace).to_rfc3339()
                ),
                None,
            )
        }
    }

    /// Runs an upstream call within the claim's remaining time. Each request it sends
    /// takes one of the run's call slots once its upstream's lane lets it go
    /// (`upstream::pace::CALL_SLOTS`); the wait for either counts against the claim.
    pub(super) async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, StepError>>,
    ) -> Result<T, StepError> {
        // Before the first write, within the time a claim taken now would give.
        let left = match self.rec.lease_until.filter(|_| self.held) {
            Some(t) => (t - self.deps.clock.now()).to_std().unwrap_or_default(),
            None => self.deps.claim_ttl().to_std().unwrap_or_default(),
        }
        .saturating_sub(CLAIM_MARGIN);
        match tokio::time::timeout(left, f).await {
            Ok(r) => r,
            Err(_) => Err(StepError::Transient(
                format!("{what}: no answer within the claim's time"),
                None,
            )),
        }
    }
}

async fn process_one(
    deps: &Deps,
    v: Versioned<ShipmentRecord>,
    run_deadline: std::time::Instant,
) -> Outcome {
    let now = deps.clock.now();
    let rec = &v.value;
    if !rec.step.is_open() || rec.next_attempt_at.is_some_and(|t| t > now) {
        return Outcome::Skipped;
    }
    if !claim_free(
        rec.lease_owner.as_deref(),
        rec.lease_until,
        now,
        deps.owner(),
    ) {
        return Outcome::Skipped;
    }
    if rec
        .lease_owner
        .as_deref()
        .is_some_and(|o| o != deps.owner())
    {
        // Another process held it and let the claim lapse (or this replica restarted).
        crate::metrics::METRICS.claim_takeovers.inc();
    }
    if rec.step == Step::Accepted {
        // Its creating request's claim is gone: that process died or its call outlived
        // the claim. What YubiEnterprise did is unknown; an operator resolves it.
        let Versioned {
            value: mut rec,
            etag,
        } = v;
        return match super::create::flag_interrupted(deps, &mut rec, &etag).await {
            Ok(()) => Outcome::Flagged,
            Err(_) => Outcome::Skipped,
        };
    }
    let mut c = Claimed::take(deps, v);
    let result = loop {
        match advance(&mut c).await {
            // The upstream's pace, not this shipment's failure: it stays in hand and its
            // call goes again once the upstream allows, within the run's budget.
            Err(StepError::Throttled(_, wait))
                if std::time::Instant::now() + wait < run_deadline =>
            {
                tokio::time::sleep(wait).await;
            }
            r => break r,
        }
    };
    let now = deps.clock.now();
    let outcome = match result {
        Ok(o) => o,
        Err(StepError::Lost) => return Outcome::Skipped,
        Err(StepError::Throttled(msg, wait)) => {
            // Due again when the upstream allows: no attempt counted, no back-off grown.
            let at = now + Duration::from_std(wait).unwrap_or(Duration::seconds(1));
            tracing::info!(request_id = %c.rec.request_id, error = %msg, until = %at,
                "paced by the upstream's rate limit");
            if c.rec.paced(msg, at, now).is_err() {
                return Outcome::Skipped;
            }
            Outcome::Paced
        }
        Err(StepError::Permanent(msg)) => {
            tracing::warn!(request_id = %c.rec.request_id, ye_shipment_id = ?c.rec.ye_shipment_id,
                error = %msg, "shipment failed");
            if c.rec.failed(msg, now).is_err() {
                return Outcome::Skipped;
            }
            Outcome::Failed
        }
        Err(StepError::Transient(msg, retry_after)) => match c.rec.step_deadline() {
            Some(deadline) if now >= deadline => {
                tracing::warn!(request_id = %c.rec.request_id, error = %msg, %deadline,
                        "transient failure past the shipment's deadline; failing it");
                let m = format!(
                    "{msg} (still failing at the deadline {})",
                    deadline.to_rfc3339()
                );
                if c.rec.failed(m, now).is_err() {
                    return Outcome::Skipped;
                }
                Outcome::Failed
            }
            deadline => {
                let next = next_attempt(
                    now,
                    deps.config.processing.retry_base,
                    deps.config.processing.retry_max,
                    c.rec.attempts,
                    retry_after,
                    deadline,
                );
                tracing::info!(request_id = %c.rec.request_id, attempts = c.rec.attempts + 1,
                        error = %msg, next_attempt = %next, "transient failure; will retry");
                crate::metrics::retried(&msg);
                if c.rec.retry_later(msg, next, now).is_err() {
                    return Outcome::Skipped;
                }
                Outcome::Retried
            }
        },
    };
    match c.release().await {
        Ok(()) => {
            if outcome == Outcome::Failed {
                super::okta::release(deps, &c.rec, super::okta::Release::MarkError).await;
            }
            outcome
        }
        Err(_) => Outcome::Skipped,
    }
}

/// Capped exponential back-off: base × 2^attempts, at most `max`, at least what the
/// upstream asked for, never past the deadline.
fn next_attempt(
    now: DateTime<Utc>,
    base: StdDuration,
    max: StdDuration,
    attempts: u32,
    retry_after: Option<StdDuration>,
    deadline: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let wait = crate::backoff::capped(attempts, base, max).max(retry_after.unwrap_or_default());
    let next = now + Duration::from_std(wait).unwrap_or(Duration::hours(1));
    match deadline {
        Some(d) if next > d => d.max(now),
        _ => next,
    }
}

/// Runs a future that mostly computes (opening a shipment's responses is about 5 ms of
/// P-384 work) with `block_in_place`, so that the worker's other tasks (answers from
/// upstreams, the next call waiting for a slot) move to another worker instead of waiting
/// behind it; on a current-thread runtime (some tests) it is simply awaited. Measured at
/// concurrency 16 with 50 ms upstreams: 0.92–0.93 of the latency bound against 0.89.
async fn compute<T>(f: impl std::future::Future<Output = T>) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| Handle::current().block_on(f))
    } else {
        f.await
    }
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
        .ok_or_else(|| StepError::Permanent("the shipment's response key is missing".into()))?;
    ResponseKey::from_private_jwk(json).map_err(|e| crypto_err("response key", e))
}

async fn product_data(
    c: &Claimed<'_>,
    ye_id: &str,
) -> Result<(i64, Option<ProductData>), StepError> {
    let ship = c
        .bounded("YubiEnterprise", async {
            c.deps
                .ye
                .get_shipment(ye_id)
                .await
                .map_err(|e| upstream("YubiEnterprise", e))
        })
        .await?;
    Ok((ship.shipment_state_id, ship.product_data))
}

/// The record's identity provider. A record whose instance this replica's file lacks (a
/// newer file on another replica) is left for a later run, within its deadline.
fn provider<'a>(c: &Claimed<'a>) -> Result<Provider<'a>, StepError> {
    c.deps.idps.of_record(&c.rec).ok_or_else(|| {
        StepError::Transient(
            format!(
                "this replica does not serve the shipment's identity provider instance `{}`",
                c.deps.idps.name_of(&c.rec)
            ),
            None,
        )
    })
}

async fn advance(c: &mut Claimed<'_>) -> Result<Outcome, StepError> {
    // The PIN verified in this run, carried to the mail step so that it is not fetched and
    // decrypted twice; after a restart the mail step reads it again from YubiEnterprise.
    let mut verified_pin: Option<crate::domain::Pin> = None;
    loop {
        match c.rec.step {
            Step::Ongoing => match register(c).await? {
                Registration::Done(pin) => verified_pin = pin,
                Registration::NotYet(outcome) => return Ok(outcome),
            },
            Step::Registered => return mail_pin(c, verified_pin.take()).await,
            Step::Accepted | Step::Complete | Step::Failed | Step::Unknown => {
                return Ok(Outcome::Skipped)
            }
        }
    }
}

/// What the Ongoing step came to: registered (with the PIN it verified; none when the
/// provider holds the PIN itself, as Okta does), or not yet.
pub(super) enum Registration {
    Done(Option<crate::domain::Pin>),
    NotYet(Outcome),
}

/// Ongoing: once Yubico has programmed the key, verifies both responses, registers the
/// credential with Entra (exactly once) and records it.
async fn register(c: &mut Claimed<'_>) -> Result<Registration, StepError> {
    let deps = c.deps;
    let ye_id = c
        .rec
        .ye_shipment_id
        .clone()
        .ok_or_else(|| StepError::Permanent("ongoing without a shipment id".into()))?;
    let (state, pd) = product_data(c, &ye_id).await?;
    c.rec.saw_ye_state(state, deps.clock.now());
    if let Some(meaning) = ye_state_meaning(state) {
        return Err(StepError::Permanent(format!(
            "YubiEnterprise shipment state {state}: {meaning}"
        )));
    }
    let now = deps.clock.now();
    let expired = c.rec.challenge_expires_at.is_some_and(|t| t <= now);
    if !ye_state_ready(state) {
        if expired {
            return Err(StepError::Permanent(
                "the challenge expired before Yubico programmed the key".into(),
            ));
        }
        c.rec.waiting(state, now)?;
        return Ok(Registration::NotYet(Outcome::Waiting));
    }
    let pd = pd.ok_or_else(|| {
        StepError::Permanent(
            "YubiEnterprise reports the key programmed but sent no product data".into(),
        )
    })?;
    if expired {
        return Err(StepError::Permanent(
            "the challenge expired before the credential could be registered".into(),
        ));
    }
    if let Provider::Okta(o) = provider(c)? {
        return super::okta::activate(c, o, &pd).await;
    }
    let (cred, pin) = open_responses(c, &pd).await?;
    let name = display_name(&c.rec, pd.serial_number);
    let method_id = match existing_method(c, &name, pd.serial_number).await? {
        Some(id) => id,
        None => register_once(c, &name, &cred.credential).await?,
    };
    let now = deps.clock.now();
    let mail_deadline =
        now + Duration::from_std(deps.config.processing.mail_deadline).unwrap_or(Duration::days(7));
    c.rec
        .registered(pd.serial_number, method_id, now, mail_deadline)?;
    c.save().await?;
    Ok(Registration::Done(Some(pin)))
}

/// Verifies every response of the shipment before any side effect (a key whose PIN
/// cannot be sent is never registered): the credential and the PIN, for one serial.
async fn open_responses(
    c: &mut Claimed<'_>,
    pd: &crate::upstream::ProductData,
) -> Result<(crypto::CredentialResponse, crate::domain::Pin), StepError> {
    let deps = c.deps;
    let jwe = pd
        .fido_credential_responses
        .first()
        .ok_or_else(|| StepError::Permanent("YubiEnterprise sent no credential response".into()))?;
    let pin_jwe = pd
        .fido_pin_response
        .as_deref()
        .ok_or_else(|| StepError::Permanent("YubiEnterprise sent no PIN response".into()))?;
    let key = response_key(deps, &c.rec).await?;
    // About 5 ms of P-384 work, off the worker that answers upstream calls.
    let open_both = async {
        let (keys, serial) = (deps.keys.as_ref(), pd.serial_number);
        let cred = crypto::open_credential_response(jwe, &key, keys, serial)
            .await
            .map_err(|e| ("credential response", e))?;
        let pin = crypto::open_pin_response(pin_jwe, &key, keys, serial)
            .await
            .map_err(|e| ("PIN response", e))?;
        Ok((cred, pin))
    };
    let (cred, pin) = compute(open_both)
        .await
        .map_err(|(context, e)| c.opening_failed(context, e))?;
    c.rec.signing_key_found();
    if pin.serial_number != cred.serial_number {
        return Err(StepError::Permanent(format!(
            "the PIN response is for serial {} but the credential for {}",
            pin.serial_number, cred.serial_number
        )));
    }
    Ok((cred, pin.pin))
}

/// A registration may have happened before a crash: the method it made, if Entra has it.
async fn existing_method(
    c: &Claimed<'_>,
    name: &str,
    serial: u64,
) -> Result<Option<String>, StepError> {
    if c.rec.register_started_at.is_none() {
        return Ok(None);
    }
    let deps = c.deps;
    let suffix = format!(": {serial}");
    let uid = c.rec.entra_user_id.clone();
    let methods = c
        .bounded("Entra", async {
            deps.idp
                .list_methods(&uid)
                .await
                .map_err(|e| upstream("Entra (list methods)", e))
        })
        .await?;
    Ok(methods
        .into_iter()
        .find(|m| {
            m.display_name
                .as_deref()
                .is_some_and(|d| d == name || d.ends_with(&suffix))
        })
        .map(|m| m.id))
}

/// Registers the credential, after a write that marks the attempt and renews the claim
/// (if someone else wrote meanwhile, it stops there).
async fn register_once(
    c: &mut Claimed<'_>,
    name: &str,
    credential: &crate::domain::AttestedCredential,
) -> Result<String, StepError> {
    let deps = c.deps;
    c.rec.registering(deps.clock.now());
    c.save().await?;
    let uid = c.rec.entra_user_id.clone();
    let m = c
        .bounded("Entra (register)", async {
            deps.idp
                .register(&uid, name, credential)
                .await
                .map_err(|e| match e {
                    UpstreamError::Rejected { code, message, .. } => StepError::Permanent(format!(
                        "Entra rejected the credential: {code}: {message}"
                    )),
                    other => upstream("Entra (register)", other),
                })
        })
        .await?;
    crash_point("process:after-register");
    Ok(m.id)
}

/// Registered: mails the PIN (the one verified in this run, or read again) and completes.
async fn mail_pin(
    c: &mut Claimed<'_>,
    verified_pin: Option<crate::domain::Pin>,
) -> Result<Outcome, StepError> {
    let deps = c.deps;
    if let Provider::Okta(o) = provider(c)? {
        return super::okta::send_pin(c, o, verified_pin.is_none()).await;
    }
    let ye_id = c
        .rec
        .ye_shipment_id
        .clone()
        .ok_or_else(|| StepError::Permanent("registered without a shipment id".into()))?;
    let serial = c
        .rec
        .serial_number
        .ok_or_else(|| StepError::Permanent("registered without a serial".into()))?;
    // Coming straight from registering, the claim was renewed by the write that recorded
    // the registration a moment ago.
    let claim_fresh = verified_pin.is_some();
    let pin = match verified_pin {
        Some(pin) => pin,
        None => {
            let (_, pd) = product_data(c, &ye_id).await?;
            let jwe = pd.and_then(|p| p.fido_pin_response).ok_or_else(|| {
                StepError::Permanent("YubiEnterprise sent no PIN response".into())
            })?;
            let key = response_key(deps, &c.rec).await?;
            let opened = compute(crypto::open_pin_response(
                &jwe,
                &key,
                deps.keys.as_ref(),
                serial,
            ))
            .await;
            let pin = opened.map_err(|e| c.opening_failed("PIN response", e))?.pin;
            c.rec.signing_key_found();
            pin
        }
    };
    let mail = PinMail::for_record(
        &c.rec,
        &ye_id,
        serial,
        pin,
        PinMail::initial_message_id(&ye_id),
    );
    // Renew before the side effect; stop if the record changed hands.
    if !claim_fresh {
        c.save().await?;
    }
    let sent = c
        .bounded("PIN mail", async {
            deps.mailer
                .send_pin(&mail)
                .await
                .map_err(|e| upstream("PIN mail", e))
        })
        .await;
    crate::metrics::pin_mail("initial", sent.is_ok(), &deps.idps.name_of(&c.rec));
    sent?;
    let message_id = mail.message_id.clone();
    drop(mail); // zeroizes the PIN
    crash_point("process:after-mail");
    c.rec.completed(&message_id, deps.clock.now())?;
    tracing::info!(request_id = %c.rec.request_id, ye_shipment_id = %ye_id, "shipment complete");
    Ok(Outcome::Completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_cap_and_never_passes_the_deadline() {
        let now = Utc::now();
        let s = StdDuration::from_secs;
        let n = |a, ra, d| next_attempt(now, s(10), s(300), a, ra, d);
        assert_eq!(n(0, None, None), now + Duration::seconds(10));
        assert_eq!(n(3, None, None), now + Duration::seconds(80));
        assert_eq!(n(30, None, None), now + Duration::seconds(300));
        assert_eq!(n(0, Some(s(120)), None), now + Duration::seconds(120));
        let d = now + Duration::seconds(50);
        assert_eq!(n(5, None, Some(d)), d);
    }
}
