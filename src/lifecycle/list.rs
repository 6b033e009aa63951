//! Finding shipments: `GET /v1/fpr/shipments` (JSON or CSV). Newest first, filtered by
//! user (UPN or object id, either finds both), state, and creation time, paged with an
//! opaque cursor.
//!
//! The store serves shipments newest first from an index by creation time (per user when
//! the filter names one: [`Query::Created`]); the state filter and the exact time bounds
//! are checked here. A page reads at most [`SCAN_BUDGET`] records, so a rare state never
//! makes one request walk the whole table.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use serde::Serialize;

use super::{Deps, LifecycleError};
use crate::domain::shipment::{ye_state_label, ye_state_meaning, ye_state_ready};
use crate::domain::{ShipmentRecord, Step};
use crate::store::Query;

/// `state=` of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    Ongoing,
    Complete,
    Failed,
    NeedsAttention,
}

impl StateFilter {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ongoing" => Self::Ongoing,
            "complete" => Self::Complete,
            "failed" => Self::Failed,
            "needs_attention" => Self::NeedsAttention,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// UPN or object id; matches either, case-insensitively.
    pub user: Option<String>,
    pub state: Option<StateFilter>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// YubiEnterprise's shipment state, as a code and its meaning.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct YeState {
    pub code: i64,
    pub meaning: &'static str,
}

/// One row of a listing (and of its CSV).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListItem {
    /// YubiEnterprise's id; absent until YubiEnterprise confirmed the shipment.
    pub shipment_id: Option<String>,
    /// The connector's own id of the request (operators use it for unknown creates).
    pub request_id: String,
    pub user_id: String,
    pub entra_user_id: String,
    /// `ongoing`, `complete` or `failed`.
    pub state: &'static str,
    /// The lifecycle step: accepted, ongoing, registered, complete, failed, unknown.
    pub step: &'static str,
    pub needs_attention: bool,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub ye_state: Option<YeState>,
    pub serial_number: Option<u64>,
    pub challenge_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The identity-provider instance of a multi-IdP deployment (absent: the Entra
    /// instance). `entra_user_id` is then that provider's user id (Okta's, for Okta).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idp_instance: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListPage {
    pub items: Vec<ListItem>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Whether someone should look at the shipment: a YubiEnterprise error state, a failed
/// shipment, a create whose outcome is unknown, or a challenge that expires within
/// `attention` while Yubico has not programmed the key.
pub fn needs_attention(rec: &ShipmentRecord, now: DateTime<Utc>, attention: Duration) -> bool {
    let ye_error = rec
        .ye_state_id
        .is_some_and(|s| ye_state_meaning(s).is_some());
    let expiring = matches!(rec.step, Step::Accepted | Step::Ongoing)
        && !rec.ye_state_id.is_some_and(ye_state_ready)
        && rec
            .challenge_expires_at
            .is_some_and(|t| t <= now + attention);
    ye_error || matches!(rec.step, Step::Failed | Step::Unknown) || expiring
}

fn item(rec: &ShipmentRecord, now: DateTime<Utc>, attention: Duration) -> ListItem {
    let state = match rec.step {
        Step::Complete => "complete",
        Step::Failed => "failed",
        _ => "ongoing",
    };
    let (error_kind, error_message) = match crate::domain::public_view(rec).1 {
        Some(crate::domain::PublicError::Terminal { kind, message }) => (Some(kind), Some(message)),
        Some(crate::domain::PublicError::Retrying { message }) => (None, Some(message)),
        None => (None, None),
    };
    ListItem {
        shipment_id: rec.ye_shipment_id.clone(),
        request_id: rec.request_id.clone(),
        user_id: rec.user_id.clone(),
        entra_user_id: rec.entra_user_id.clone(),
        state,
        step: rec.step.as_str(),
        needs_attention: needs_attention(rec, now, attention),
        error_kind,
        error_message,
        ye_state: rec.ye_state_id.map(|code| YeState {
            code,
            meaning: ye_state_label(code),
        }),
        serial_number: rec.serial_number,
        challenge_expires_at: rec.challenge_expires_at,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
        completed_at: rec.ended_at(),
        idp_instance: rec.idp.clone(),
    }
}

/// The filters that need only the record (checked before an item is built).
fn record_matches(f: &ListFilter, rec: &ShipmentRecord) -> bool {
    let user_ok = f.user.as_ref().is_none_or(|u| rec.is_for_user(u));
    let after_ok = f.created_after.is_none_or(|t| rec.created_at >= t);
    let before_ok = f.created_before.is_none_or(|t| rec.created_at < t);
    user_ok && after_ok && before_ok
}

fn state_matches(f: &ListFilter, it: &ListItem) -> bool {
    match f.state {
        None => true,
        Some(StateFilter::Ongoing) => it.state == "ongoing",
        Some(StateFilter::Complete) => it.state == "complete",
        Some(StateFilter::Failed) => it.state == "failed",
        Some(StateFilter::NeedsAttention) => it.needs_attention,
    }
}

/// The position after an item: (created at, request id), newest first.
type Position = (DateTime<Utc>, String);

fn encode_cursor(p: &Position) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{}|{}",
        p.0.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        p.1
    ))
}

pub fn decode_cursor(s: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (t, id) = raw.split_once('|')?;
    let t = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
    Some((t, id.to_string()))
}

/// Records a page request reads at most before it answers (with fewer than `limit` items
/// and a cursor when a rare state filter matched little), so one request never walks the
/// whole table.
const SCAN_BUDGET: usize = 2000;

/// Reads the store's creation-time index from `position` on, newest first, keeping
/// matching items until `want` are found or `budget` records were read. Returns the items
/// with their positions, and the position to continue from (`None`: nothing more).
async fn walk(
    deps: &Deps,
    f: &ListFilter,
    position: Option<String>,
    want: usize,
    budget: usize,
) -> Result<(Vec<(Position, ListItem)>, Option<String>), LifecycleError> {
    let now = deps.clock.now();
    let attention =
        Duration::from_std(deps.config.processing.attention_window).unwrap_or(Duration::days(3));
    let q = Query::Created {
        user: f.user.clone(),
        after: f.created_after,
        before: f.created_before,
    };
    let mut out = Vec::new();
    let mut read = 0;
    let mut continuation = position;
    loop {
        let page_size = (want - out.len()).clamp(50, 1000);
        let page = deps
            .store
            .query(&q, continuation.clone(), page_size)
            .await?;
        for v in &page.items {
            read += 1;
            let rec = &v.value;
            if record_matches(f, rec) {
                let it = item(rec, now, attention);
                if state_matches(f, &it) {
                    out.push(((rec.created_at, rec.request_id.clone()), it));
                }
            }
            if out.len() == want || read >= budget {
                // Stop after this record: continue right after it.
                let next = crate::store::position(&rec.created_at, &rec.request_id);
                return Ok((out, Some(next)));
            }
        }
        match page.next {
            Some(n) => continuation = Some(n),
            None => return Ok((out, None)),
        }
    }
}

/// Shipments still in processing, and how many of them need attention: one processing
/// scan (its cost follows the open shipments, not every shipment ever made).
pub async fn open_counts(deps: &Deps) -> Result<(u64, u64), LifecycleError> {
    let now = deps.clock.now();
    let attention =
        Duration::from_std(deps.config.processing.attention_window).unwrap_or(Duration::days(3));
    let (mut open, mut flagged) = (0, 0);
    let mut continuation = None;
    loop {
        let page = deps.store.query(&Query::Open, continuation, 1000).await?;
        for v in page.items.iter().filter(|v| v.value.step.is_open()) {
            open += 1;
            if needs_attention(&v.value, now, attention) {
                flagged += 1;
            }
        }
        continuation = page.next;
        if continuation.is_none() {
            return Ok((open, flagged));
        }
    }
}

/// Why a shipment needs attention, in words, and since when.
pub fn attention_cause(
    rec: &ShipmentRecord,
    now: DateTime<Utc>,
    attention: Duration,
) -> Option<(String, DateTime<Utc>)> {
    if !needs_attention(rec, now, attention) {
        return None;
    }
    let since = |cause: &str, fallback: DateTime<Utc>| {
        rec.alerts
            .iter()
            .find(|a| a.cause == cause)
            .map_or(fallback, |a| a.since)
    };
    let message = rec.error.as_ref().map(|e| e.message.clone());
    Some(match rec.step {
        Step::Failed => (
            format!(
                "failed: {}",
                message.unwrap_or_else(|| "no cause recorded".into())
            ),
            since(
                crate::domain::shipment::ALERT_FAILED,
                rec.failed_at.unwrap_or(rec.updated_at),
            ),
        ),
        Step::Unknown => (
            "the create's outcome at YubiEnterprise is unknown: an operator must resolve it".into(),
            since(crate::domain::shipment::ALERT_UNKNOWN, rec.updated_at),
        ),
        _ => match rec.ye_state_id.and_then(ye_state_meaning) {
            Some(meaning) => (
                format!("YubiEnterprise reports: {meaning}"),
                since(crate::domain::shipment::ALERT_YE_ERROR, rec.updated_at),
            ),
            None => (
                "Entra's challenge expires soon and Yubico has not programmed the key".into(),
                rec.created_at,
            ),
        },
    })
}

/// A shipment that needs attention, with its cause and since when.
#[derive(Debug, Clone)]
pub struct Attention {
    pub item: ListItem,
    pub cause: String,
    pub since: DateTime<Utc>,
}

/// The console's front page: shipments in processing by step (and failed or unresolved
/// ones needing attention), and those needing attention (oldest cause first).
#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub by_step: std::collections::BTreeMap<&'static str, u64>,
    pub attention: Vec<Attention>,
    /// Shipments needing attention in all, of which at most `limit` are listed.
    pub attention_total: usize,
    /// When it was read.
    pub at: DateTime<Utc>,
}

/// Reads the processing scan's records (its cost follows open shipments, not every
/// shipment ever made) and the newest [`RECENT_FOR_ATTENTION`] shipments (failed ones whose
/// alert is settled have left the scan).
pub async fn overview(deps: &Deps, limit: usize) -> Result<Overview, LifecycleError> {
    let now = deps.clock.now();
    let attention =
        Duration::from_std(deps.config.processing.attention_window).unwrap_or(Duration::days(3));
    let mut o = Overview {
        at: now,
        ..Default::default()
    };
    let mut found: std::collections::HashMap<String, Attention> = Default::default();
    let note = |found: &mut std::collections::HashMap<String, Attention>, rec: &ShipmentRecord| {
        if let Some((cause, since)) = attention_cause(rec, now, attention) {
            found
                .entry(rec.request_id.clone())
                .or_insert_with(|| Attention {
                    item: item(rec, now, attention),
                    cause,
                    since,
                });
        }
    };
    let mut continuation = None;
    loop {
        let page = deps.store.query(&Query::Open, continuation, 1000).await?;
        for v in &page.items {
            if v.value.step.is_open() {
                *o.by_step.entry(v.value.step.as_str()).or_default() += 1;
            }
            note(&mut found, &v.value);
        }
        continuation = page.next;
        if continuation.is_none() {
            break;
        }
    }
    let f = ListFilter {
        state: Some(StateFilter::NeedsAttention),
        ..Default::default()
    };
    let (recent, _) = walk(deps, &f, None, limit, RECENT_FOR_ATTENTION).await?;
    for (_, it) in recent {
        if !found.contains_key(&it.request_id) {
            if let Some(v) = deps.store.get(&it.request_id).await? {
                note(&mut found, &v.value);
            }
        }
    }
    let mut all: Vec<Attention> = found.into_values().collect();
    for a in &all {
        if matches!(a.item.step, "failed" | "unknown") {
            *o.by_step.entry(a.item.step).or_default() += 1;
        }
    }
    all.sort_by(|a, b| {
        a.since
            .cmp(&b.since)
            .then(a.item.request_id.cmp(&b.item.request_id))
    });
    o.attention_total = all.len();
    all.truncate(limit);
    o.attention = all;
    Ok(o)
}

/// The newest shipments the front page reads for failed ones.
pub const RECENT_FOR_ATTENTION: usize = 500;

/// The newest shipment whose key has this serial number, among the newest `budget`.
pub async fn find_serial(
    deps: &Deps,
    serial: u64,
    budget: usize,
) -> Result<Option<ListItem>, LifecycleError> {
    let mut position = None;
    let mut read = 0;
    while read < budget {
        let (items, next) = walk(deps, &ListFilter::default(), position, 500, 500).await?;
        read += items.len().max(1);
        if let Some((_, it)) = items
            .into_iter()
            .find(|(_, it)| it.serial_number == Some(serial))
        {
            return Ok(Some(it));
        }
        match next {
            Some(n) => position = Some(n),
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// One page: at most `limit` items after `cursor`. A page may hold fewer than `limit`
/// items and still carry a cursor (a state filter that matched few of the records read).
pub async fn list_shipments(
    deps: &Deps,
    f: &ListFilter,
    cursor: Option<&(DateTime<Utc>, String)>,
    limit: usize,
) -> Result<ListPage, LifecycleError> {
    let start = cursor.map(|(t, id)| crate::store::position(t, id));
    // One more than asked, to know whether a next page exists.
    let (mut found, rest) = walk(deps, f, start, limit + 1, SCAN_BUDGET).await?;
    let next_cursor = if found.len() > limit {
        found.truncate(limit);
        found.last().map(|(p, _)| encode_cursor(p))
    } else {
        rest.as_deref()
            .and_then(crate::store::parse_position)
            .map(|p| encode_cursor(&p))
    };
    Ok(ListPage {
        items: found.into_iter().map(|(_, it)| it).collect(),
        next_cursor,
    })
}

/// Every matching shipment, newest first, read page by page as the stream is consumed
/// (CSV exports).
pub fn stream_shipments(
    deps: Deps,
    f: ListFilter,
) -> impl futures::Stream<Item = Result<ListItem, LifecycleError>> + Send {
    futures::stream::unfold(Some(None), move |state: Option<Option<String>>| {
        let (deps, f) = (deps.clone(), f.clone());
        async move {
            let position = state?;
            match walk(&deps, &f, position, 500, SCAN_BUDGET).await {
                Ok((items, next)) => {
                    let items: Vec<_> = items.into_iter().map(|(_, it)| Ok(it)).collect();
                    Some((futures::stream::iter(items), next.map(Some)))
                }
                Err(e) => Some((futures::stream::iter(vec![Err(e)]), None)),
            }
        }
    })
    .flatten()
}

/// The CSV export of every matching shipment: the header, then one row per shipment,
/// bounded in rows and time. Past `max_rows` rows or `within` the stream ends with an
/// error (the client sees a broken transfer), never a silently short report.
pub fn csv_export<S>(
    items: S,
    max_rows: usize,
    within: std::time::Duration,
) -> impl futures::Stream<Item = Result<String, LifecycleError>> + Send
where
    S: futures::Stream<Item = Result<ListItem, LifecycleError>> + Send,
{
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut rows = 0usize;
    let body = items.map(move |r| {
        rows += 1;
        if rows > max_rows {
            return Err(LifecycleError::Invalid(format!(
                "more than {max_rows} rows: narrow the export with created_after/created_before"
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(LifecycleError::Invalid(format!(
                "the export ran past {} s",
                within.as_secs()
            )));
        }
        r.map(|it| csv_row(&it))
    });
    // Ends at the first error: nothing is sent after a broken row.
    futures::stream::once(async { Ok(CSV_HEADER.to_string()) })
        .chain(body)
        .scan(false, |failed, r| {
            let out = if *failed { None } else { Some(r) };
            if matches!(out, Some(Err(_))) {
                *failed = true;
            }
            futures::future::ready(out)
        })
}

/// A shipment's history, oldest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct History {
    pub shipment_id: Option<String>,
    pub request_id: String,
    pub events: Vec<crate::domain::shipment::Event>,
}

/// The history of a shipment, by YubiEnterprise's id or (for a create that never got
/// one) the request id.
pub async fn history(deps: &Deps, id: &str) -> Result<History, LifecycleError> {
    let rec = super::find_by_any_id(deps, id).await?.value;
    Ok(History {
        shipment_id: rec.ye_shipment_id,
        request_id: rec.request_id,
        events: rec.events,
    })
}

/// The CSV header (RFC 4180).
pub const CSV_HEADER: &str = "shipment_id,request_id,user_id,entra_user_id,state,step,needs_attention,error_kind,error_message,ye_state_code,ye_state,serial_number,challenge_expires_at,created_at,updated_at,completed_at,idp_instance\r\n";

/// One CSV row (with its CRLF; [`crate::csv_safe`]).
pub fn csv_row(it: &ListItem) -> String {
    let ts = |t: &Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    };
    let fields = [
        it.shipment_id.clone().unwrap_or_default(),
        it.request_id.clone(),
        it.user_id.clone(),
        it.entra_user_id.clone(),
        it.state.to_string(),
        it.step.to_string(),
        it.needs_attention.to_string(),
        it.error_kind.clone().unwrap_or_default(),
        it.error_message.clone().unwrap_or_default(),
        it.ye_state
            .as_ref()
            .map(|s| s.code.to_string())
            .unwrap_or_default(),
        it.ye_state
            .as_ref()
            .map(|s| s.meaning.to_string())
            .unwrap_or_default(),
        it.serial_number.map(|s| s.to_string()).unwrap_or_default(),
        ts(&it.challenge_expires_at),
        ts(&Some(it.created_at)),
        ts(&Some(it.updated_at)),
        ts(&it.completed_at),
        it.idp_instance.clone().unwrap_or_default(),
    ];
    crate::csv_safe::record(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: usize) -> ListItem {
        ListItem {
            shipment_id: Some(format!("s{n}")),
            request_id: format!("r{n}"),
            user_id: "alice@contoso.example".into(),
            entra_user_id: "oid".into(),
            state: "ongoing",
            step: "ongoing",
            needs_attention: false,
            error_kind: None,
            error_message: None,
            ye_state: None,
            serial_number: None,
            challenge_expires_at: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            completed_at: None,
            idp_instance: None,
        }
    }

    #[tokio::test]
    async fn an_export_past_its_row_cap_breaks_instead_of_ending_short() {
        use futures::StreamExt;
        let items = futures::stream::iter((0..5).map(|n| Ok(item(n))));
        let out: Vec<_> = csv_export(items, 3, std::time::Duration::from_secs(60))
            .collect()
            .await;
        // The header, three rows, then the error that breaks the transfer; nothing after.
        assert_eq!(out.len(), 5, "{out:?}");
        assert!(out[..4].iter().all(|r| r.is_ok()));
        assert!(
            matches!(&out[4], Err(LifecycleError::Invalid(m)) if m.contains("more than 3 rows"))
        );
        // Within the cap it ends cleanly.
        let items = futures::stream::iter((0..3).map(|n| Ok(item(n))));
        let out: Vec<_> = csv_export(items, 3, std::time::Duration::from_secs(60))
            .collect()
            .await;
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|r| r.is_ok()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_export_past_its_deadline_breaks() {
        use futures::StreamExt;
        // A reader (or a store) slow enough that the rows take 10 s each.
        let items = futures::stream::iter(0..100).then(|n| async move {
            tokio::time::sleep(std::time::Duration::from_secs(10)).await;
            Ok(item(n))
        });
        let out: Vec<_> = csv_export(items, 1000, std::time::Duration::from_secs(25))
            .collect()
            .await;
        // Header, rows at 10 s and 20 s; the one at 30 s is past the deadline.
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(matches!(&out[3], Err(LifecycleError::Invalid(m)) if m.contains("ran past 25 s")));
    }

    #[test]
    fn cursors_round_trip() {
        let p = (Utc::now(), "abc123".to_string());
        assert_eq!(decode_cursor(&encode_cursor(&p)), Some(p));
        assert_eq!(decode_cursor("not a cursor"), None);
    }
}
