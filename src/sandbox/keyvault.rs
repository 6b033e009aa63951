//! Azure Key Vault simulator: the secrets REST API over HTTPS (the official client sends
//! tokens only over TLS) with a certificate from a throw-away CA that tests tell the client
//! to trust. It answers unauthenticated requests with Key Vault's bearer challenge, keeps
//! versions, soft-deletes, answers 409 to a purge while a deletion is in progress, purges,
//! and takes [`Faults`] like every simulator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};

use super::faults::Faults;

struct Entry {
    value: String,
    version: String,
}

struct Deleted {
    entry: Entry,
    purgeable_at: Instant,
}

#[derive(Default)]
struct Vault {
    live: HashMap<String, Entry>,
    deleted: HashMap<String, Deleted>,
    requests: usize,
    /// The caller holds a read-only role (Key Vault Secrets User): writes are 403.
    read_only: bool,
}

#[derive(Clone)]
struct St {
    vault: Arc<Mutex<Vault>>,
    check: TokenCheck,
    base: Arc<String>,
}

pub struct KeyVaultSim {
    /// `https://127.0.0.1:<port>/`
    pub url: String,
    /// The CA certificate (PEM) to trust.
    pub ca_pem: Vec<u8>,
    pub faults: Faults,
    vault: Arc<Mutex<Vault>>,
    _served: super::Served,
}

/// Decides whether a bearer token opens the vault.
pub type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

impl KeyVaultSim {
    /// Starts on a free loopback port, accepting `Bearer <expected_token>`.
    pub async fn start(expected_token: String) -> std::io::Result<KeyVaultSim> {
        Self::start_with(Arc::new(move |t: &str| t == expected_token)).await
    }

    /// Starts on a free loopback port, accepting the bearer tokens `check` accepts (e.g.
    /// tokens the Entra simulator issued for the vault's audience).
    pub async fn start_with(check: TokenCheck) -> std::io::Result<KeyVaultSim> {
        let ca_pem = super::tls::ca_pem()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let url = format!("https://127.0.0.1:{port}/");
        let vault = Arc::new(Mutex::new(Vault::default()));
        let st = St {
            vault: vault.clone(),
            check,
            base: Arc::new(url.trim_end_matches('/').to_string()),
        };
        let faults = Faults::default();
        let api = Router::new()
            .route(
                "/secrets/{name}",
                get(get_secret).put(put_secret).delete(delete_secret),
            )
            // The client asks for `/secrets/{name}/` (empty version = latest).
            .route("/secrets/{name}/", get(get_secret))
            .route("/secrets/{name}/{version}", get(get_version))
            .route("/deletedsecrets/{name}", get(get_deleted).delete(purge))
            .with_state(st);
        let served = super::serve_tls_on(listener, faults.wrap(api)).await?;
        Ok(KeyVaultSim {
            url,
            ca_pem,
            faults,
            vault,
            _served: served,
        })
    }

    /// Gives the caller a read-only role (Key Vault Secrets User) or back its write role:
    /// while read-only, set, delete and purge answer 403 `ForbiddenByRbac`.
    pub fn set_read_only(&self, on: bool) {
        self.vault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read_only = on;
    }

    pub fn live_names(&self) -> Vec<String> {
        self.vault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .keys()
            .cloned()
            .collect()
    }
    pub fn deleted_names(&self) -> Vec<String> {
        self.vault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .deleted
            .keys()
            .cloned()
            .collect()
    }
    /// Requests that reached the API with a valid token.
    pub fn requests(&self) -> usize {
        self.vault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requests
    }
}

/// Key Vault's answer to a write by a caller with a read-only role.
fn refused_write(st: &St) -> Option<Response> {
    let ro = st.vault.lock().unwrap_or_else(|p| p.into_inner()).read_only;
    ro.then(|| {
        kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/setSecret/action' (ForbiddenByRbac)",
        )
    })
}

fn kv_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn challenge() -> Response {
    let mut r = kv_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "AKV10000: Request is missing a Bearer or PoP token.",
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(
        "Bearer authorization=\"https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000\", resource=\"https://vault.azure.net\"",
    ) {
        r.headers_mut().insert("www-authenticate", v);
    }
    r
}

/// Bearer check; also validates the name (Key Vault's rule).
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn check(st: &St, headers: &HeaderMap, name: &str) -> Result<(), Response> {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| (st.check)(t));
    if !ok {
        return Err(challenge());
    }
    if crate::secrets::validate_name(name).is_err() {
        return Err(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The request URI contains an invalid name",
        ));
    }
    st.vault.lock().unwrap_or_else(|p| p.into_inner()).requests += 1;
    Ok(())
}

fn bundle(st: &St, name: &str, e: &Entry) -> Value {
    let now = Utc::now().timestamp();
    json!({"value": e.value, "id": format!("{}/secrets/{name}/{}", st.base, e.version),
           "attributes": {"enabled": true, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable"}})
}

async fn put_secret(
    State(st): State<St>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: String,
) -> Response {
    if let Err(r) = check(&st, &headers, &name) {
        return r;
    }
    if let Some(r) = refused_write(&st) {
        return r;
    }
    let Some(value) = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["value"].as_str().map(str::to_string))
    else {
        return kv_error(StatusCode::BAD_REQUEST, "BadParameter", "value is required");
    };
    let mut v = st.vault.lock().unwrap_or_else(|p| p.into_inner());
    if v.deleted.contains_key(&name) {
        return kv_error(
            StatusCode::CONFLICT,
            "Conflict",
            "Secret is currently in a deleted but recoverable state",
        );
    }
    let e = Entry {
        value,
        version: uuid::Uuid::new_v4().simple().to_string(),
    };
    let b = bundle(&st, &name, &e);
    v.live.insert(name, e);
    Json(b).into_response()
}

async fn get_secret(
    State(st): State<St>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = check(&st, &headers, &name) {
        return r;
    }
    let v = st.vault.lock().unwrap_or_else(|p| p.into_inner());
    match v.live.get(&name) {
        Some(e) => Json(bundle(&st, &name, e)).into_response(),
        None => kv_error(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            &format!("A secret with (name/id) {name} was not found in this key vault."),
        ),
    }
}

async fn get_version(
    State(st): State<St>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    if let Err(r) = check(&st, &headers, &name) {
        return r;
    }
    let v = st.vault.lock().unwrap_or_else(|p| p.into_inner());
    match v
        .live
        .get(&name)
        .filter(|e| version.is_empty() || e.version == version)
    {
        Some(e) => Json(bundle(&st, &name, e)).into_response(),
        None => kv_error(StatusCode::NOT_FOUND, "SecretNotFound", "not found"),
    }
}

async fn delete_secret(
    State(st): State<St>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = check(&st, &headers, &name) {
        return r;
    }
    if let Some(r) = refused_write(&st) {
        return r;
    }
    let mut v = st.vault.lock().unwrap_or_else(|p| p.into_inner());
    let Some(e) = v.live.remove(&name) else {
        return kv_error(StatusCode::NOT_FOUND, "SecretNotFound", "not found");
    };
    let mut b = bundle(&st, &name, &e);
    b["recoveryId"] = json!(format!("{}/deletedsecrets/{name}", st.base));
    b["deletedDate"] = json!(Utc::now().timestamp());
    b["scheduledPurgeDate"] = json!(Utc::now().timestamp() + 90 * 86400);
    v.deleted.insert(
        name,
        Deleted {
            entry: e,
            purgeable_at: Instant::now() + Duration::from_millis(150),
        },
    );
    Json(b).into_response()
}

async fn get_deleted(
    State(st): State<St>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = check(&st, &headers, &name) {
        return r;
    }
    let v = st.vault.lock().unwrap_or_else(|p| p.into_inner());
    match v.deleted.get(&name) {
        Some(d) => Json(bundle(&st, &name, &d.entry)).into_response(),
        None => kv_error(StatusCode::NOT_FOUND, "SecretNotFound", "not found"),
    }
}

async fn purge(State(st): State<St>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Err(r) = check(&st, &headers, &name) {
        return r;
    }
    if let Some(r) = refused_write(&st) {
        return r;
    }
    let mut v = st.vault.lock().unwrap_or_else(|p| p.into_inner());
    match v.deleted.get(&name) {
        None => kv_error(StatusCode::NOT_FOUND, "SecretNotFound", "not found"),
        Some(d) if d.purgeable_at > Instant::now() => kv_error(
            StatusCode::CONFLICT,
            "Conflict",
            "Secret is currently being deleted.",
        ),
        Some(_) => {
            v.deleted.remove(&name);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
