//! Finding shipments: `GET /v1/fpr/shipments` (JSON or CSV). Newest first, filtered by
//! user (UPN or object id, either finds both), state, and creation time, paged with an
//! opaque cursor.
//!
//! The store is read in key order and the listing filtered and ordered here, so that the
//! embedded store and Azure Tables (which cannot order by time) answer alike. A listing
//! therefore reads every shipment record once per page: fine for the thousands of records a
//! rollout holds (measured in docs/performance.md), and the reason `limit` goes up to 1000.

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
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
    }
}

/// The filters that need only the record (checked before an item is built).
fn record_matches(f: &ListFilter, rec: &ShipmentRecord) -> bool {
    let user_ok = f.user.as_ref().is_none_or(|u| {
        rec.user_id.eq_ignore_ascii_case(u) || rec.entra_user_id.eq_ignore_ascii_case(u)
    });
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

/// Every matching shipment, newest first (CSV exports), or one page of them.
async fn matching(
    deps: &Deps,
    f: &ListFilter,
) -> Result<Vec<(Position, ListItem)>, LifecycleError> {
    let now = deps.clock.now();
    let attention = Duration::from_std(deps.config.attention_window).unwrap_or(Duration::days(3));
    let mut out = Vec::new();
    let mut continuation = None;
    loop {
        let page = deps.store.query(&Query::All, continuation, 1000).await?;
        for v in page
            .items
            .into_iter()
            .filter(|v| record_matches(f, &v.value))
        {
            let it = item(&v.value, now, attention);
            if state_matches(f, &it) {
                out.push(((v.value.created_at, v.value.request_id.clone()), it));
            }
        }
        match page.next {
            Some(n) => continuation = Some(n),
            None => break,
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(out)
}

/// One page: at most `limit` items after `cursor`.
pub async fn list_shipments(
    deps: &Deps,
    f: &ListFilter,
    cursor: Option<&(DateTime<Utc>, String)>,
    limit: usize,
) -> Result<ListPage, LifecycleError> {
    let all = matching(deps, f).await?;
    let start = match cursor {
        None => 0,
        Some(c) => all.partition_point(|(p, _)| p >= c),
    };
    let rest = &all[start..];
    let take = rest.len().min(limit);
    let next_cursor = (rest.len() > take).then(|| encode_cursor(&rest[take - 1].0));
    Ok(ListPage {
        items: rest[..take].iter().map(|(_, it)| it.clone()).collect(),
        next_cursor,
    })
}

/// Every matching shipment, newest first.
pub async fn all_shipments(deps: &Deps, f: &ListFilter) -> Result<Vec<ListItem>, LifecycleError> {
    Ok(matching(deps, f)
        .await?
        .into_iter()
        .map(|(_, it)| it)
        .collect())
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
pub const CSV_HEADER: &str = "shipment_id,request_id,user_id,entra_user_id,state,step,needs_attention,error_kind,error_message,ye_state_code,ye_state,serial_number,challenge_expires_at,created_at,updated_at,completed_at\r\n";

fn csv_field(out: &mut String, v: &str) {
    // Quoted when needed; a leading =, +, - or @ is prefixed with ' so that a spreadsheet
    // never runs a value as a formula (CSV injection).
    let guarded;
    let v = if v.starts_with(['=', '+', '-', '@']) {
        guarded = format!("'{v}");
        guarded.as_str()
    } else {
        v
    };
    if v.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// One CSV row (with its CRLF).
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
    ];
    let mut out = String::new();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, f);
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let mut s = String::new();
        csv_field(&mut s, "plain");
        s.push('|');
        csv_field(&mut s, "a,b \"c\"");
        s.push('|');
        csv_field(&mut s, "=HYPERLINK(\"x\")");
        assert_eq!(s, "plain|\"a,b \"\"c\"\"\"|\"'=HYPERLINK(\"\"x\"\")\"");
    }

    #[test]
    fn cursors_round_trip() {
        let p = (Utc::now(), "abc123".to_string());
        assert_eq!(decode_cursor(&encode_cursor(&p)), Some(p));
        assert_eq!(decode_cursor("not a cursor"), None);
    }
}
