//! YubiEnterprise simulator: the FPR shipments API with bearer-token checks and YE-style
//! field validation, the two published key sets (with rotation on demand), and the
//! factory: on fulfilment it decrypts both requests with its transport key, refuses an
//! expired challenge (state 8), programs a software authenticator, and publishes sealed
//! (signed, then encrypted) PIN and credential responses with state 103.
//!
//! Control (tests call the methods; people use HTTP): `POST /_sim/advance-all`,
//! `POST /_sim/advance/{id}`, `POST /_sim/state/{id}` `{"shipment_state_id": 7}`,
//! `POST /_sim/rotate-keys`, `POST /_sim/token` `{"token": "..."}`, `GET /_sim/shipments`,
//! `POST /_sim/faults`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use josekit::jwk::Jwk;
use rand::Rng;
use serde_json::{json, Value};

use super::faults::Faults;
use super::{serve, Served};
use crate::crypto::{public_of, yubico_side};

/// When shipments get programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progression {
    /// Only when told (`advance`).
    Manual,
    /// At the n-th read of the shipment.
    AfterReads(u32),
}

#[derive(Debug, Clone)]
pub struct YeSimConfig {
    pub token: String,
    pub progression: Progression,
    pub port: u16,
}

impl YeSimConfig {
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            progression: Progression::Manual,
            port: 0,
        }
    }
}

struct Shipment {
    state_id: i64,
    body: Value,
    reads: u32,
    product_data: Option<Value>,
    note: Option<String>,
}

struct Inner {
    token: String,
    progression: Progression,
    shipments: HashMap<String, Shipment>,
    order: Vec<String>,
    transport: Vec<Jwk>,
    sign: Vec<Jwk>,
    generation: u32,
    created: usize,
    /// The next create is refused with this (code, message), as YE's own validation would.
    reject_next: Option<(String, String)>,
    /// Programs PIN responses naming another serial than the key (a half-bad answer).
    mismatched_pin_serial: bool,
    /// Seals responses with this key, never published (a forged or broken answer).
    unpublished_sign: Option<Jwk>,
}

#[derive(Clone)]
pub struct YeSim {
    inner: Arc<Mutex<Inner>>,
    served: Arc<Served>,
    pub faults: Faults,
}

fn keys(generation: u32) -> Result<(Jwk, Jwk), String> {
    Ok((
        yubico_side::new_key(&format!("yubico-transport-{generation}"), "enc")
            .map_err(|e| e.to_string())?,
        yubico_side::new_key(&format!("yubico-sign-{generation}"), "sig")
            .map_err(|e| e.to_string())?,
    ))
}

impl YeSim {
    pub async fn start(cfg: YeSimConfig) -> std::io::Result<YeSim> {
        let (t, s) = keys(1).map_err(std::io::Error::other)?;
        let inner = Arc::new(Mutex::new(Inner {
            token: cfg.token,
            progression: cfg.progression,
            shipments: HashMap::new(),
            order: Vec::new(),
            transport: vec![t],
            sign: vec![s],
            generation: 1,
            created: 0,
            reject_next: None,
            mismatched_pin_serial: false,
            unpublished_sign: None,
        }));
        let faults = Faults::default();
        let api = Router::new()
            .route("/v1/fpr/shipments", post(create))
            .route("/v1/fpr/shipments/{id}", get(read))
            .route(
                "/.well-known/yubico-transport-keys.jwks",
                get(transport_jwks),
            )
            .route("/.well-known/yubico-sign.jwks", get(sign_jwks))
            .with_state(inner.clone());
        let control = Router::new()
            .route("/_sim/advance-all", post(ctl_advance_all))
            .route("/_sim/advance/{id}", post(ctl_advance))
            .route("/_sim/state/{id}", post(ctl_state))
            .route("/_sim/rotate-keys", post(ctl_rotate))
            .route("/_sim/token", post(ctl_token))
            .route("/_sim/shipments", get(ctl_list))
            .with_state(inner.clone());
        let served = serve(faults.wrap(api).merge(control), cfg.port).await?;
        Ok(YeSim {
            inner,
            served: Arc::new(served),
            faults,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The API base (`YE_API_BASE_URL`).
    pub fn url(&self) -> String {
        format!("{}/v1", self.served.url())
    }
    pub fn root_url(&self) -> String {
        self.served.url()
    }
    pub fn transport_jwks_url(&self) -> String {
        format!(
            "{}/.well-known/yubico-transport-keys.jwks",
            self.served.url()
        )
    }
    pub fn sign_jwks_url(&self) -> String {
        format!("{}/.well-known/yubico-sign.jwks", self.served.url())
    }

    /// Accept only this token from now on (a rotation in the portal).
    pub fn set_token(&self, token: impl Into<String>) {
        self.lock().token = token.into();
    }
    pub fn set_progression(&self, p: Progression) {
        self.lock().progression = p;
    }
    /// From now on, PIN responses name a serial other than the key's (the credential
    /// response stays right): a half-bad answer from the factory.
    pub fn mismatch_pin_serials(&self, on: bool) {
        self.lock().mismatched_pin_serial = on;
    }
    /// Refuses the next create with YE's error `code` and `message`.
    pub fn reject_next(&self, code: &str, message: &str) {
        self.lock().reject_next = Some((code.into(), message.into()));
    }
    /// Programs every shipment still in progress.
    pub fn advance_all(&self) -> usize {
        let mut g = self.lock();
        let ids: Vec<String> = g.order.clone();
        ids.iter().filter(|id| fulfil(&mut g, id)).count()
    }
    pub fn advance(&self, id: &str) -> bool {
        fulfil(&mut self.lock(), id)
    }
    /// Puts a shipment into any state (e.g. 7 undeliverable, 9 denied party, 105 lost).
    pub fn set_state(&self, id: &str, state_id: i64) -> bool {
        match self.lock().shipments.get_mut(id) {
            Some(s) => {
                s.state_id = state_id;
                true
            }
            None => false,
        }
    }
    /// New transport and sign keys; the previous sign key stays published so responses
    /// already sealed still verify.
    pub fn rotate_keys(&self) -> Result<(), String> {
        rotate(&mut self.lock())
    }
    /// A new sign key only (transport keys unchanged): responses sealed from now on carry
    /// a kid the connector has not seen.
    pub fn rotate_sign_key(&self) -> Result<(), String> {
        let mut g = self.lock();
        g.generation += 1;
        let (_, s) = keys(g.generation)?;
        g.sign.insert(0, s);
        g.sign.truncate(2);
        Ok(())
    }
    /// While on, keys programmed from now on seal their responses with a sign key that is
    /// never published (what a forged or broken answer looks like to the connector).
    pub fn sign_with_an_unpublished_key(&self, on: bool) -> Result<(), String> {
        let mut g = self.lock();
        g.unpublished_sign = if on {
            Some(keys(1000 + g.generation)?.1)
        } else {
            None
        };
        Ok(())
    }
    /// Shipments created so far (each POST that YE accepted).
    pub fn created_count(&self) -> usize {
        self.lock().created
    }
    pub fn shipment_ids(&self) -> Vec<String> {
        self.lock().order.clone()
    }
    pub fn state_of(&self, id: &str) -> Option<i64> {
        self.lock().shipments.get(id).map(|s| s.state_id)
    }
    /// The shipment's product data (serial, sealed responses) once programmed.
    pub fn product_data(&self, id: &str) -> Option<Value> {
        self.lock()
            .shipments
            .get(id)
            .and_then(|s| s.product_data.clone())
    }
}

fn authorised(g: &Inner, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == g.token)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"code": "unauthorized", "message": "Invalid or expired API token"})),
    )
        .into_response()
}

fn validation(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"code": "validation_error", "message": msg})),
    )
        .into_response()
}

/// YE's own field checks, with its wording.
fn ye_validate(body: &Value) -> Result<(), String> {
    let limits = [
        ("recipient", "recipient_company", "Company", 20),
        ("recipient", "recipient_firstname", "First Name", 15),
        ("recipient", "recipient_lastname", "Last Name", 20),
        ("recipient", "recipient_email", "Email", 80),
        ("recipient", "recipient_telephone", "Telephone", 40),
        ("mailing_address", "street_line1", "Street Line 1", 60),
        ("mailing_address", "street_line2", "Street Line 2", 60),
        ("mailing_address", "city", "City", 60),
        ("mailing_address", "region", "Region", 50),
        ("mailing_address", "postal_code", "Postal Code", 50),
    ];
    for (obj, field, label, max) in limits {
        if let Some(s) = body[obj][field].as_str() {
            if s.chars().count() > max {
                return Err(format!(
                    "Input for {label} exceeded limit of {max} characters"
                ));
            }
        }
    }
    let item = &body["shipment_items"][0];
    if item["product_quantity"].as_i64() != Some(1) {
        return Err("Only one key per FIDO pre-registration shipment".into());
    }
    let pc = &item["product_customizations"][0];
    if pc["fido_pin_request"].as_str().is_none()
        || pc["fido_credential_requests"][0].as_str().is_none()
    {
        return Err("FIDO pre-registration requests are missing".into());
    }
    Ok(())
}

async fn create(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    if !authorised(&g, &headers) {
        return unauthorized();
    }
    if let Some((code, message)) = g.reject_next.take() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": code, "message": message})),
        )
            .into_response();
    }
    if let Err(m) = ye_validate(&body) {
        return validation(m);
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    g.shipments.insert(
        id.clone(),
        Shipment {
            state_id: 0,
            body,
            reads: 0,
            product_data: None,
            note: None,
        },
    );
    g.order.push(id.clone());
    g.created += 1;
    (
        StatusCode::OK,
        Json(json!({"shipment_id": id, "shipment_state": {"shipment_state_id": 0, "name": "new"}})),
    )
        .into_response()
}

fn view(id: &str, s: &Shipment) -> Value {
    let mut item = json!({"product_quantity": 1});
    if let Some(pd) = &s.product_data {
        item["product_data"] = json!([pd]);
    }
    json!({"shipment_id": id, "shipment_state": {"shipment_state_id": s.state_id},
           "shipment_items": [item], "note": s.note})
}

async fn read(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    if !authorised(&g, &headers) {
        return unauthorized();
    }
    let progression = g.progression;
    let Some(s) = g.shipments.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": "not_found", "message": "Shipment not found"})),
        )
            .into_response();
    };
    s.reads += 1;
    let due = matches!(progression, Progression::AfterReads(n) if s.reads >= n);
    if due && s.state_id == 0 {
        fulfil(&mut g, &id);
    }
    match g.shipments.get(&id) {
        Some(s) => Json(view(&id, s)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The factory. Returns whether the shipment was programmed now.
fn fulfil(g: &mut Inner, id: &str) -> bool {
    let sign = g
        .unpublished_sign
        .clone()
        .or_else(|| g.sign.first().cloned());
    let transport = g.transport.clone();
    let pin_serial_offset = u64::from(g.mismatched_pin_serial);
    let Some(s) = g.shipments.get_mut(id) else {
        return false;
    };
    if s.state_id != 0 {
        return false;
    }
    match program(&s.body, &transport, sign.as_ref(), pin_serial_offset) {
        Ok(pd) => {
            s.product_data = Some(pd);
            s.state_id = 103;
        }
        Err(note) => {
            s.state_id = 8;
            s.note = Some(note);
        }
    }
    true
}

fn program(
    body: &Value,
    transport: &[Jwk],
    sign: Option<&Jwk>,
    pin_serial_offset: u64,
) -> Result<Value, String> {
    let sign = sign.ok_or("no sign key")?;
    let pc = &body["shipment_items"][0]["product_customizations"][0];
    let open = |jwe: &str| -> Result<Value, String> {
        for k in transport {
            if let Ok(v) = yubico_side::decrypt_request(jwe, k) {
                return Ok(v);
            }
        }
        Err("request not encrypted to a current transport key".into())
    };
    let pin_req = open(pc["fido_pin_request"].as_str().ok_or("no PIN request")?)?;
    let cred_req = open(
        pc["fido_credential_requests"][0]
            .as_str()
            .ok_or("no credential request")?,
    )?;
    let expires = cred_req["challenge_expires_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .ok_or("challenge_expires_at missing")?;
    if expires.with_timezone(&Utc) <= Utc::now() {
        return Err("challenge expired before programming".into());
    }
    let pin = pin_req["pin"].as_str().ok_or("PIN missing")?.to_string();
    let pin_key = Jwk::from_map(
        pin_req["response_jwk"]
            .as_object()
            .cloned()
            .ok_or("no response_jwk")?,
    )
    .map_err(|e| e.to_string())?;
    let cred_key = Jwk::from_map(
        cred_req["response_jwk"]
            .as_object()
            .cloned()
            .ok_or("no response_jwk")?,
    )
    .map_err(|e| e.to_string())?;
    let cred = super::authenticator::make_credential(&cred_req["public_key"])?;
    let serial: u64 = rand::rng().random_range(10_000_000..100_000_000);
    let pin_resp = yubico_side::seal_response(
        &json!({"serial_number": serial + pin_serial_offset, "pin": pin}),
        sign,
        &pin_key,
    )
    .map_err(|e| e.to_string())?;
    let cred_resp = yubico_side::seal_response(
        &json!({"serial_number": serial, "credential": {
            "id": cred.id, "clientDataJSON": cred.client_data_json,
            "attestationObject": cred.attestation_object, "clientExtensionResults": {}}}),
        sign,
        &cred_key,
    )
    .map_err(|e| e.to_string())?;
    Ok(json!({"serial_number": serial, "firmware_version": "5.7.1",
              "fido_pin_response": pin_resp, "fido_credential_responses": [cred_resp]}))
}

fn jwks(keys: &[Jwk]) -> Json<Value> {
    let keys: Vec<Value> = keys
        .iter()
        .filter_map(|k| public_of(k).ok())
        .map(|k| Value::Object(k.as_ref().clone()))
        .collect();
    Json(json!({"keys": keys}))
}

async fn transport_jwks(State(inner): State<Arc<Mutex<Inner>>>) -> Json<Value> {
    jwks(&inner.lock().unwrap_or_else(|p| p.into_inner()).transport)
}

async fn sign_jwks(State(inner): State<Arc<Mutex<Inner>>>) -> Json<Value> {
    jwks(&inner.lock().unwrap_or_else(|p| p.into_inner()).sign)
}

async fn ctl_advance_all(State(inner): State<Arc<Mutex<Inner>>>) -> Json<Value> {
    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    let ids = g.order.clone();
    let n = ids.iter().filter(|id| fulfil(&mut g, id)).count();
    Json(json!({"programmed": n}))
}

async fn ctl_advance(State(inner): State<Arc<Mutex<Inner>>>, Path(id): Path<String>) -> StatusCode {
    if fulfil(&mut inner.lock().unwrap_or_else(|p| p.into_inner()), &id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn ctl_state(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    Json(v): Json<Value>,
) -> StatusCode {
    let mut g = inner.lock().unwrap_or_else(|p| p.into_inner());
    match (g.shipments.get_mut(&id), v["shipment_state_id"].as_i64()) {
        (Some(s), Some(st)) => {
            s.state_id = st;
            StatusCode::NO_CONTENT
        }
        _ => StatusCode::NOT_FOUND,
    }
}

fn rotate(g: &mut Inner) -> Result<(), String> {
    g.generation += 1;
    let (t, s) = keys(g.generation)?;
    g.transport = vec![t];
    g.sign.insert(0, s);
    g.sign.truncate(2);
    Ok(())
}

async fn ctl_rotate(State(inner): State<Arc<Mutex<Inner>>>) -> StatusCode {
    match rotate(&mut inner.lock().unwrap_or_else(|p| p.into_inner())) {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn ctl_token(State(inner): State<Arc<Mutex<Inner>>>, Json(v): Json<Value>) -> StatusCode {
    match v["token"].as_str() {
        Some(t) => {
            inner.lock().unwrap_or_else(|p| p.into_inner()).token = t.to_string();
            StatusCode::NO_CONTENT
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn ctl_list(State(inner): State<Arc<Mutex<Inner>>>) -> Json<Value> {
    let g = inner.lock().unwrap_or_else(|p| p.into_inner());
    Json(Value::Array(
        g.order
            .iter()
            .filter_map(|id| {
                g.shipments.get(id).map(
                    |s| json!({"shipment_id": id, "shipment_state_id": s.state_id, "note": s.note}),
                )
            })
            .collect(),
    ))
}
