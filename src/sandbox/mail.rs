//! Mail sink: stands in for the PIN mail relay (the Logic App). Accepts the PIN mail on
//! `POST /send?sig=...`, checks its shape and the signature, and de-duplicates by
//! `message_id` as the relay must. `GET /_sim/mails` shows what was delivered. With
//! [`MailSink::require_token`] it also enforces the trigger's authorization policy: a
//! bearer token of the connector's identity for the trigger's audience.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::faults::Faults;
use super::{serve, Served};

#[derive(Default)]
struct Inbox {
    delivered: Vec<Value>,
    seen: HashSet<String>,
    duplicates: usize,
    refused: usize,
}

type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
struct St {
    inbox: Arc<Mutex<Inbox>>,
    sig: String,
    token_check: Arc<Mutex<Option<TokenCheck>>>,
}

pub struct MailSink {
    served: Served,
    inbox: Arc<Mutex<Inbox>>,
    sig: String,
    token_check: Arc<Mutex<Option<TokenCheck>>>,
    pub faults: Faults,
}

impl MailSink {
    pub async fn start() -> std::io::Result<MailSink> {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> std::io::Result<MailSink> {
        use rand::Rng;
        let sig: String = (0..24)
            .map(|_| char::from(b'a' + rand::rng().random_range(0..26u8)))
            .collect();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let faults = Faults::default();
        let token_check = Arc::new(Mutex::new(None));
        let st = St {
            inbox: inbox.clone(),
            sig: sig.clone(),
            token_check: token_check.clone(),
        };
        let api = Router::new()
            .route("/send", post(send))
            .with_state(st.clone());
        let control = Router::new().route("/_sim/mails", get(list)).with_state(st);
        let router = faults.wrap(api).merge(control);
        let served = serve(router, port).await?;
        Ok(MailSink {
            served,
            inbox,
            sig,
            token_check,
            faults,
        })
    }

    /// From now on, accept only calls with a bearer token `check` accepts and no SAS
    /// signature: the Logic App trigger with its Entra authorization policy and SAS
    /// disabled ([`MailSink::unsigned_url`]).
    pub fn require_token(&self, check: TokenCheck) {
        *self.token_check.lock().unwrap_or_else(|p| p.into_inner()) = Some(check);
    }

    /// Calls refused by the authorization policy so far.
    pub fn refused(&self) -> usize {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner()).refused
    }

    /// The trigger URL, with a signature in its query like a Logic App's.
    pub fn url(&self) -> String {
        format!("{}/send?sig={}", self.served.url(), self.sig)
    }

    /// The trigger URL without `sig`, for a trigger that authorizes by token only.
    pub fn unsigned_url(&self) -> String {
        format!("{}/send", self.served.url())
    }

    pub fn root_url(&self) -> String {
        self.served.url()
    }

    /// The mails delivered so far (duplicates by `message_id` are not delivered twice).
    pub fn delivered(&self) -> Vec<Value> {
        self.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .delivered
            .clone()
    }

    /// How many repeats of an already delivered `message_id` were dropped.
    pub fn duplicates(&self) -> usize {
        self.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .duplicates
    }
}

async fn send(
    State(st): State<St>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    Json(mail): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let check = st
        .token_check
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(check) = check {
        if q.contains_key("sig") {
            st.inbox.lock().unwrap_or_else(|p| p.into_inner()).refused += 1;
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"code": "DirectApiAuthorizationRequired",
                    "message": "SAS authentication is disabled for this trigger."}})),
            );
        }
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !bearer.is_some_and(|t| check(t)) {
            st.inbox.lock().unwrap_or_else(|p| p.into_inner()).refused += 1;
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"code": "MisMatchingOAuthClaims",
                    "message": "One or more claims either missing or does not match with the open authentication access control policy."}})),
            );
        }
    } else if q.get("sig") != Some(&st.sig) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "DirectApiAuthorizationRequired"}})),
        );
    }
    let ok = mail["shipment_id"].is_string()
        && mail["user_id"].is_string()
        && mail["emails_to"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string))
        && mail["serial_number"].is_u64()
        && mail["pin"]
            .as_str()
            .is_some_and(|p| p.len() >= 4 && p.bytes().all(|b| b.is_ascii_digit()))
        && mail["message_id"].is_string();
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"code": "InvalidRequestContent"}})),
        );
    }
    let id = mail["message_id"].as_str().unwrap_or_default().to_string();
    let mut inbox = st.inbox.lock().unwrap_or_else(|p| p.into_inner());
    if !inbox.seen.insert(id) {
        inbox.duplicates += 1;
        return (StatusCode::ACCEPTED, Json(json!({"status": "duplicate"})));
    }
    inbox.delivered.push(mail);
    (StatusCode::ACCEPTED, Json(json!({"status": "accepted"})))
}

async fn list(State(st): State<St>) -> Json<Value> {
    Json(Value::Array(
        st.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .delivered
            .clone(),
    ))
}
