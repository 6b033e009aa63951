//! Okta simulator, over HTTPS: the org authorization server's token endpoint (client
//! credentials with `private_key_jwt`, DPoP-bound tokens with the `use_dpop_nonce` dance),
//! users (`GET /api/v1/users/{id or login}`), and the WebAuthn preregistration endpoints
//! with real cryptography:
//!
//! * `enroll` makes an EC P-384 response key per request, a WebAuthn challenge per relying
//!   party, a PIN, and encrypts the credential and PIN requests to the given Yubico
//!   transport key in the wire profile (what the YubiEnterprise simulator opens);
//! * `activate` decrypts the responses with its keys, verifies Yubico's JWS with the
//!   given signing keys, checks the serial and the attestation as the Entra simulator does;
//! * `send-pin` mails the PIN to the sink kept here.
//!
//! Errors are in Okta's shape (`errorCode`, `errorSummary`, `errorLink`, `errorId`,
//! `errorCauses`); past its rate limit it answers 429 with the `X-Rate-Limit-*` headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{Duration, Utc};
use josekit::jwk::Jwk;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Served;
use crate::crypto::{ResponseKey, TransportKey};
use crate::domain::Pin;

/// A user of the simulated org.
#[derive(Debug, Clone)]
pub struct OktaUser {
    pub id: String,
    pub login: String,
    pub email: String,
    /// `ACTIVE`, `STAGED`, `PROVISIONED`, `SUSPENDED`, `DEPROVISIONED`, …
    pub status: String,
}

struct Enrollment {
    user_id: String,
    rp_id: String,
    challenge: String,
    cred_key: ResponseKey,
    pin_key: ResponseKey,
    pin: String,
    status: &'static str,
    activations: usize,
}

/// A PIN mail Okta sent.
#[derive(Debug, Clone)]
pub struct OktaMail {
    pub user_id: String,
    pub enrollment_id: String,
    pub to: String,
    pub pin: String,
}

#[derive(Default)]
struct Inner {
    users: Vec<OktaUser>,
    enrollments: HashMap<String, Enrollment>,
    /// Access token → (expiry, DPoP key thumbprint).
    tokens: HashMap<String, (chrono::DateTime<Utc>, String)>,
    nonce: String,
    mails: Vec<OktaMail>,
    token_requests: usize,
    /// Requests admitted in the current minute, and the limit (0: none).
    window_start: i64,
    window_used: u32,
    rate_limit: u32,
    /// The rate limit's window in seconds (Okta's is a minute).
    window_secs: i64,
    /// 429s answered.
    throttled: usize,
}

#[derive(Clone)]
struct St {
    inner: Arc<Mutex<Inner>>,
    client_id: String,
    client_key: Arc<Jwk>,
    base: Arc<Mutex<String>>,
}

impl St {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn base(&self) -> String {
        self.base.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn random_id(prefix: &str) -> String {
    use rand::Rng;
    let b: [u8; 12] = rand::rng().random();
    format!("{prefix}{}", crate::hex::hex(&b))
}

/// An error body in Okta's shape.
pub fn okta_error(status: StatusCode, code: &str, summary: &str, causes: &[&str]) -> Response {
    let causes: Vec<Value> = causes.iter().map(|c| json!({"errorSummary": c})).collect();
    (
        status,
        Json(json!({
            "errorCode": code,
            "errorSummary": summary,
            "errorLink": code,
            "errorId": random_id("oae"),
            "errorCauses": causes,
        })),
    )
        .into_response()
}

/// RFC 7638 thumbprint of an EC public JWK.
fn thumbprint(jwk: &Value) -> String {
    let canon = format!(
        "{{\"crv\":\"{}\",\"kty\":\"EC\",\"x\":\"{}\",\"y\":\"{}\"}}",
        jwk["crv"].as_str().unwrap_or(""),
        jwk["x"].as_str().unwrap_or(""),
        jwk["y"].as_str().unwrap_or("")
    );
    b64(&Sha256::digest(canon.as_bytes()))
}

/// Verifies a DPoP proof for `method` `htu`; returns the key's thumbprint and the claims.
fn check_dpop(proof: &str, method: &str, htu: &str) -> Result<(String, Value), String> {
    let header_b64 = proof.split('.').next().ok_or("malformed DPoP proof")?;
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| "malformed DPoP header")?,
    )
    .map_err(|_| "malformed DPoP header")?;
    if header["typ"] != "dpop+jwt" || header["alg"] != "ES256" {
        return Err("DPoP proof must be typ dpop+jwt, alg ES256".into());
    }
    let jwk_map = header["jwk"]
        .as_object()
        .cloned()
        .ok_or("DPoP proof has no jwk")?;
    if jwk_map.contains_key("d") {
        return Err("DPoP jwk must be public".into());
    }
    let jwk = Jwk::from_map(jwk_map).map_err(|e| e.to_string())?;
    let verifier = josekit::jws::ES256
        .verifier_from_jwk(&jwk)
        .map_err(|e| e.to_string())?;
    let (payload, _) = josekit::jwt::decode_with_verifier(proof, &verifier)
        .map_err(|_| "DPoP proof signature is invalid".to_string())?;
    let claims = Value::Object(payload.claims_set().clone());
    if claims["htm"].as_str() != Some(method) || claims["htu"].as_str() != Some(htu) {
        return Err("DPoP proof htm/htu do not match the request".into());
    }
    let iat = claims["iat"].as_i64().ok_or("DPoP proof has no iat")?;
    if (Utc::now().timestamp() - iat).abs() > 300 {
        return Err("DPoP proof iat is out of range".into());
    }
    if claims["jti"].as_str().is_none_or(str::is_empty) {
        return Err("DPoP proof has no jti".into());
    }
    Ok((thumbprint(&header["jwk"]), claims))
}

/// The rate limit: `Err` is the 429.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn admit(st: &St) -> Result<(), Response> {
    let mut g = st.lock();
    if g.rate_limit == 0 {
        return Ok(());
    }
    let now = Utc::now().timestamp();
    let window = g.window_secs.max(1);
    let minute = now - now % window;
    if g.window_start != minute {
        g.window_start = minute;
        g.window_used = 0;
    }
    let reset = (minute + window).to_string();
    if g.window_used >= g.rate_limit {
        g.throttled += 1;
        let mut r = okta_error(
            StatusCode::TOO_MANY_REQUESTS,
            "E0000047",
            "API call exceeded rate limit due to too many requests.",
            &[],
        );
        let h = r.headers_mut();
        let limit = g.rate_limit.to_string();
        for (k, v) in [
            ("x-rate-limit-limit", limit.as_str()),
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", reset.as_str()),
        ] {
            if let Ok(v) = v.parse() {
                h.insert(k, v);
            }
        }
        return Err(r);
    }
    g.window_used += 1;
    Ok(())
}

/// Okta's `X-Rate-Limit-*` headers on every answer while a limit is set: the limit, what is
/// left of the window, and when it resets.
async fn rate_limit_headers(
    State(st): State<St>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut r = next.run(req).await;
    let (limit, used, start, window) = {
        let g = st.lock();
        (
            g.rate_limit,
            g.window_used,
            g.window_start,
            g.window_secs.max(1),
        )
    };
    if limit > 0 && !r.headers().contains_key("x-rate-limit-limit") {
        let h = r.headers_mut();
        for (k, v) in [
            ("x-rate-limit-limit", limit.to_string()),
            (
                "x-rate-limit-remaining",
                limit.saturating_sub(used).to_string(),
            ),
            ("x-rate-limit-reset", (start + window).to_string()),
        ] {
            if let Ok(v) = v.parse() {
                h.insert(k, v);
            }
        }
    }
    r
}

/// Checks `Authorization: DPoP <token>` and its proof (with `ath`) for a resource call.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself
fn authorize(st: &St, headers: &HeaderMap, method: &Method, uri: &Uri) -> Result<(), Response> {
    admit(st)?;
    let unauthorized = |summary: &str| {
        okta_error(
            StatusCode::UNAUTHORIZED,
            "E0000011",
            &format!("Invalid token provided: {summary}"),
            &[],
        )
    };
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DPoP "))
        .ok_or_else(|| unauthorized("a DPoP-bound access token is required"))?;
    let proof = headers
        .get("dpop")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("the DPoP proof is missing"))?;
    let htu = format!("{}{}", st.base(), uri.path());
    let (jkt, claims) = check_dpop(proof, method.as_str(), &htu).map_err(|e| unauthorized(&e))?;
    if claims["ath"].as_str() != Some(b64(&Sha256::digest(token.as_bytes())).as_str()) {
        return Err(unauthorized(
            "the DPoP proof's ath does not match the token",
        ));
    }
    let g = st.lock();
    match g.tokens.get(token) {
        Some((exp, bound)) if *exp > Utc::now() && *bound == jkt => Ok(()),
        Some(_) => Err(unauthorized("expired, or bound to another key")),
        None => Err(unauthorized("unknown token")),
    }
}

async fn token(
    State(st): State<St>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let bad = |code: &str, desc: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": code, "error_description": desc})),
        )
            .into_response()
    };
    if let Err(r) = admit(&st) {
        return r;
    }
    let url = format!("{}/oauth2/v1/token", st.base());
    if f.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return bad("unsupported_grant_type", "The grant_type is not supported.");
    }
    if f.get("client_assertion_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return bad(
            "invalid_client",
            "Client authentication must use private_key_jwt.",
        );
    }
    // The client assertion: signed by the registered key, for this client and endpoint.
    let assertion = f.get("client_assertion").cloned().unwrap_or_default();
    let verifier = match josekit::jws::RS256.verifier_from_jwk(&st.client_key) {
        Ok(v) => v,
        Err(e) => return bad("server_error", &e.to_string()),
    };
    let Ok((claims, _)) = josekit::jwt::decode_with_verifier(&assertion, &verifier) else {
        return bad(
            "invalid_client",
            "The client_assertion signature is invalid.",
        );
    };
    let c = claims.claims_set();
    let now = Utc::now().timestamp();
    let ok = c.get("iss").and_then(Value::as_str) == Some(st.client_id.as_str())
        && c.get("sub").and_then(Value::as_str) == Some(st.client_id.as_str())
        && c.get("aud").and_then(Value::as_str) == Some(url.as_str())
        && c.get("exp")
            .and_then(Value::as_i64)
            .is_some_and(|e| e > now && e <= now + 3600)
        && c.get("jti")
            .and_then(Value::as_str)
            .is_some_and(|j| !j.is_empty());
    if !ok {
        return bad(
            "invalid_client",
            "The client_assertion is not valid for this client.",
        );
    }
    let scopes: Vec<&str> = f
        .get("scope")
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    if scopes.is_empty()
        || scopes
            .iter()
            .any(|s| !matches!(*s, "okta.users.read" | "okta.users.manage"))
    {
        return bad(
            "invalid_scope",
            "One or more scopes are not configured for the authorization server resource.",
        );
    }
    let Some(proof) = headers.get("dpop").and_then(|v| v.to_str().ok()) else {
        return bad("invalid_dpop_proof", "DPoP proof JWT header is missing.");
    };
    let (jkt, claims) = match check_dpop(proof, "POST", &url) {
        Ok(x) => x,
        Err(e) => return bad("invalid_dpop_proof", &e),
    };
    let nonce = st.lock().nonce.clone();
    if claims["nonce"].as_str() != Some(nonce.as_str()) {
        let mut r = bad(
            "use_dpop_nonce",
            "Authorization server requires nonce in DPoP proof.",
        );
        if let Ok(v) = nonce.parse() {
            r.headers_mut().insert("dpop-nonce", v);
        }
        return r;
    }
    let access = random_id("eyJ.sim.");
    let mut g = st.lock();
    g.token_requests += 1;
    g.tokens
        .insert(access.clone(), (Utc::now() + Duration::seconds(3600), jkt));
    Json(
        json!({"token_type": "DPoP", "expires_in": 3600, "access_token": access,
                "scope": scopes.join(" ")}),
    )
    .into_response()
}

fn user_json(u: &OktaUser) -> Value {
    json!({
        "id": u.id,
        "status": u.status,
        "created": "2026-01-05T10:00:00.000Z",
        "profile": {"login": u.login, "email": u.email},
        "_links": {"self": {"href": format!("/api/v1/users/{}", u.id)}}
    })
}

fn find_user<'a>(g: &'a Inner, id: &str) -> Option<&'a OktaUser> {
    g.users
        .iter()
        .find(|u| u.id == id || u.login.eq_ignore_ascii_case(id))
}

fn not_found(what: &str) -> Response {
    okta_error(
        StatusCode::NOT_FOUND,
        "E0000007",
        &format!("Not found: Resource not found: {what} (User)"),
        &[],
    )
}

async fn get_user(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &method, &uri) {
        return r;
    }
    let g = st.lock();
    match find_user(&g, &id) {
        Some(u) => Json(user_json(u)).into_response(),
        None => not_found(&id),
    }
}

fn invalid(summary: &str) -> Response {
    okta_error(
        StatusCode::BAD_REQUEST,
        "E0000001",
        "Api validation failed: preregistration",
        &[summary],
    )
}

/// Okta's `ECKeyJWK`: exactly `kid`, `kty`, `crv`, `x`, `y` and `use`, all present.
fn check_ec_key_jwk(v: &Value) -> Result<(), String> {
    const MEMBERS: [&str; 6] = ["kid", "kty", "crv", "x", "y", "use"];
    let m = v.as_object().ok_or("must be an object")?;
    if let Some(k) = m.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
        return Err(format!("`{k}` is not a member of ECKeyJWK"));
    }
    match MEMBERS
        .iter()
        .find(|k| !m.get(**k).is_some_and(Value::is_string))
    {
        Some(k) => Err(format!("`{k}` is required")),
        None => Ok(()),
    }
}

async fn enroll(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Json(b): Json<Value>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &method, &uri) {
        return r;
    }
    if b["fulfillmentProvider"] != "yubico" {
        return invalid("fulfillmentProvider: must be yubico");
    }
    let user_id = b["userId"].as_str().unwrap_or("").to_string();
    let user = {
        let g = st.lock();
        find_user(&g, &user_id).cloned()
    };
    let Some(user) = user else {
        return not_found(&user_id);
    };
    if !matches!(user.status.as_str(), "ACTIVE" | "STAGED" | "PROVISIONED") {
        return invalid(&format!(
            "userId: the user's status {} does not allow enrollment",
            user.status
        ));
    }
    let rp_ids: Vec<String> = b["enrollmentRpIds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if rp_ids.is_empty() {
        return invalid("enrollmentRpIds: at least one relying party id is required");
    }
    if let Err(e) = check_ec_key_jwk(&b["yubicoTransportKeyJWK"]) {
        return invalid(&format!("yubicoTransportKeyJWK: {e}"));
    }
    let transport = match b["yubicoTransportKeyJWK"]
        .as_object()
        .cloned()
        .ok_or("yubicoTransportKeyJWK: required".to_string())
        .and_then(|m| Jwk::from_map(m).map_err(|e| e.to_string()))
        .and_then(|j| TransportKey::new(j).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => return invalid(&format!("yubicoTransportKeyJWK: {e}")),
    };
    let pin = Pin::generate(8);
    let expires = (Utc::now() + Duration::days(30)).to_rfc3339();
    let mut cred_requests = Vec::new();
    let mut pin_request = None;
    let mut created = Vec::new();
    for rp_id in &rp_ids {
        let (Ok(cred_key), Ok(pin_key)) = (ResponseKey::generate(), ResponseKey::generate()) else {
            return okta_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "E0000009",
                "Internal Server Error",
                &[],
            );
        };
        use rand::Rng;
        let challenge: [u8; 32] = rand::rng().random();
        let challenge = b64(&challenge);
        let public_key = json!({
            "challenge": challenge,
            "rp": {"id": rp_id, "name": "Okta"},
            "user": {"id": b64(user.id.as_bytes()), "name": user.login, "displayName": user.login},
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}, {"type": "public-key", "alg": -257}],
            "attestation": "direct",
            "authenticatorSelection": {"requireResidentKey": true, "userVerification": "required"}
        });
        let cred_jwe = match crate::crypto::encrypt_credential_request(
            &cred_key,
            &expires,
            &public_key,
            &transport,
        ) {
            Ok(j) => j,
            Err(e) => return invalid(&format!("yubicoTransportKeyJWK: {e}")),
        };
        if pin_request.is_none() {
            pin_request = crate::crypto::encrypt_pin_request(&pin, &pin_key, &transport).ok();
        }
        let id = random_id("fwf");
        cred_requests.push(
            json!({"authenticatorEnrollmentId": id, "credRequestJwe": cred_jwe,
                                  "keyId": transport.key_id().unwrap_or("")}),
        );
        created.push((
            id,
            Enrollment {
                user_id: user.id.clone(),
                rp_id: rp_id.clone(),
                challenge,
                cred_key,
                pin_key,
                pin: pin.expose().to_string(),
                status: "ENROLLED",
                activations: 0,
            },
        ));
    }
    // One PIN for the key: every enrollment of this request shares the PIN key of the first.
    let mut g = st.lock();
    for (id, e) in created {
        g.enrollments.insert(id, e);
    }
    Json(json!({
        "fulfillmentProvider": "yubico",
        "userId": user.id,
        "pinRequestJwe": pin_request,
        "credRequests": cred_requests,
    }))
    .into_response()
}

/// Opens a response sealed to `key` and signed by one of `signing`.
fn open_response(jwe: &str, key: &ResponseKey, signing: &[Jwk]) -> Result<Value, String> {
    let inner = key
        .decrypt(jwe)
        .map_err(|e| format!("cannot decrypt: {e}"))?;
    let jws = String::from_utf8(inner).map_err(|_| "inner JWS is not text")?;
    for k in signing {
        if let Ok(v) = crate::crypto::es384_verifier(k) {
            if let Ok((payload, _)) = josekit::jws::deserialize_compact(jws.trim(), &v) {
                return serde_json::from_slice(&payload).map_err(|_| "payload is not JSON".into());
            }
        }
    }
    Err("the response is not signed by any of yubicoSigningJwks".into())
}

async fn activate(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Json(b): Json<Value>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &method, &uri) {
        return r;
    }
    let user_id = b["userId"].as_str().unwrap_or("").to_string();
    let serial: u64 = match b["serial"].as_str().and_then(|s| s.parse().ok()) {
        Some(s) => s,
        None => return invalid("serial: required"),
    };
    if b["version"].as_str().is_none_or(str::is_empty) {
        return invalid("version: required");
    }
    let given = b["yubicoSigningJwks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(e) = given.iter().find_map(|k| check_ec_key_jwk(k).err()) {
        return invalid(&format!("yubicoSigningJwks: {e}"));
    }
    let signing: Vec<Jwk> = b["yubicoSigningJwks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_object().cloned())
        .filter_map(|m| Jwk::from_map(m).ok())
        .collect();
    if signing.is_empty() {
        return invalid("yubicoSigningJwks: at least one key is required");
    }
    let responses = b["credResponses"].as_array().cloned().unwrap_or_default();
    if responses.is_empty() {
        return invalid("credResponses: required");
    }
    let mut g = st.lock();
    match find_user(&g, &user_id) {
        None => return not_found(&user_id),
        Some(u) if !matches!(u.status.as_str(), "ACTIVE" | "STAGED" | "PROVISIONED") => {
            return invalid(&format!(
                "userId: the user's status {} does not allow activation",
                u.status
            ))
        }
        Some(_) => {}
    }
    let mut activated = Vec::new();
    for r in &responses {
        let id = r["authenticatorEnrollmentId"].as_str().unwrap_or("");
        let Some(e) = g.enrollments.get(id) else {
            return invalid(&format!("authenticatorEnrollmentId: {id} is unknown"));
        };
        if e.user_id != user_id {
            return invalid("userId: the enrollment belongs to another user");
        }
        if e.status == "ACTIVE" {
            return invalid(&format!(
                "authenticatorEnrollmentId: {id} is already active"
            ));
        }
        let cred = match open_response(
            r["credResponseJwe"].as_str().unwrap_or(""),
            &e.cred_key,
            &signing,
        ) {
            Ok(v) => v,
            Err(m) => return invalid(&format!("credResponseJwe: {m}")),
        };
        if cred["serial_number"].as_u64() != Some(serial) {
            return invalid("credResponseJwe: the serial does not match");
        }
        let c = &cred["credential"];
        match super::webauthn::verify_registration(
            c["id"].as_str().unwrap_or(""),
            c["clientDataJSON"].as_str().unwrap_or(""),
            c["attestationObject"].as_str().unwrap_or(""),
            &e.rp_id,
        ) {
            Ok(v) if v.challenge == e.challenge => {}
            Ok(_) => return invalid("credResponseJwe: the challenge is not the one issued"),
            Err(m) => return invalid(&format!("credResponseJwe: attestation: {m}")),
        }
        let pin = match open_response(
            b["pinResponseJwe"].as_str().unwrap_or(""),
            &e.pin_key,
            &signing,
        ) {
            Ok(v) => v,
            Err(m) => return invalid(&format!("pinResponseJwe: {m}")),
        };
        if pin["serial_number"].as_u64() != Some(serial)
            || pin["pin"].as_str() != Some(e.pin.as_str())
        {
            return invalid("pinResponseJwe: the serial or the PIN does not match");
        }
        activated.push(id.to_string());
    }
    for id in &activated {
        if let Some(e) = g.enrollments.get_mut(id) {
            e.status = "ACTIVE";
            e.activations += 1;
        }
    }
    Json(json!({"fulfillmentProvider": "yubico", "userId": user_id,
                "authenticatorEnrollmentIds": activated}))
    .into_response()
}

async fn send_pin(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Json(b): Json<Value>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &method, &uri) {
        return r;
    }
    let id = b["authenticatorEnrollmentId"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut g = st.lock();
    let Some(e) = g.enrollments.get(&id) else {
        return invalid(&format!("authenticatorEnrollmentId: {id} is unknown"));
    };
    if e.status != "ACTIVE" || b["userId"].as_str() != Some(e.user_id.as_str()) {
        return invalid("authenticatorEnrollmentId: the enrollment is not active for this user");
    }
    let (user_id, pin) = (e.user_id.clone(), e.pin.clone());
    let to = find_user(&g, &user_id)
        .map(|u| u.email.clone())
        .unwrap_or_default();
    g.mails.push(OktaMail {
        user_id,
        enrollment_id: id,
        to,
        pin,
    });
    StatusCode::NO_CONTENT.into_response()
}

async fn list_enrollments(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &method, &uri) {
        return r;
    }
    let g = st.lock();
    if find_user(&g, &user).is_none() {
        return not_found(&user);
    }
    let list: Vec<Value> = g
        .enrollments
        .iter()
        .filter(|(_, e)| e.user_id == user)
        .map(|(id, e)| {
            json!({"id": id, "factorType": "webauthn", "provider": "FIDO",
                   "vendorName": "FIDO", "status": e.status,
                   "profile": {"rpId": e.rp_id}})
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

async fn mark_error(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((user, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &method, &uri) {
        return r;
    }
    let mut g = st.lock();
    match g.enrollments.get_mut(&id).filter(|e| e.user_id == user) {
        Some(e) => {
            e.status = "ERROR";
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(&id),
    }
}

async fn delete_enrollment(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Path((user, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, &method, &uri) {
        return r;
    }
    let mut g = st.lock();
    if g.enrollments.get(&id).is_some_and(|e| e.user_id == user) {
        g.enrollments.remove(&id);
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found(&id)
    }
}

/// `GET /_sim/mails`: the PIN mails Okta sent (the sandbox walk-through reads them).
async fn sim_mails(State(st): State<St>) -> Json<Value> {
    let g = st.lock();
    Json(Value::Array(
        g.mails
            .iter()
            .map(|m| {
                json!({"user_id": m.user_id, "authenticator_enrollment_id": m.enrollment_id,
                            "to": m.to, "pin": m.pin})
            })
            .collect(),
    ))
}

/// The running simulator.
#[derive(Clone)]
pub struct OktaSim {
    st: St,
    served: Arc<Served>,
}

impl OktaSim {
    /// Starts over HTTPS (the sandbox CA) on `port` (0: any), for the service app
    /// `client_id` whose public key is `client_public_jwk` (RS256).
    pub async fn start(
        client_id: &str,
        client_public_jwk: Jwk,
        port: u16,
    ) -> std::io::Result<OktaSim> {
        let st = St {
            inner: Arc::new(Mutex::new(Inner {
                nonce: random_id("n"),
                ..Default::default()
            })),
            client_id: client_id.into(),
            client_key: Arc::new(client_public_jwk),
            base: Arc::new(Mutex::new(String::new())),
        };
        let router = Router::new()
            .route("/oauth2/v1/token", post(token))
            .route("/api/v1/users/{id}", get(get_user))
            .route("/webauthn-registration/api/v1/enroll", post(enroll))
            .route("/webauthn-registration/api/v1/activate", post(activate))
            .route("/webauthn-registration/api/v1/send-pin", post(send_pin))
            .route(
                "/webauthn-registration/api/v1/users/{user}/enrollments",
                get(list_enrollments),
            )
            .route(
                "/webauthn-registration/api/v1/users/{user}/enrollments/{id}/mark-error",
                post(mark_error),
            )
            .route(
                "/webauthn-registration/api/v1/users/{user}/enrollments/{id}",
                delete(delete_enrollment),
            )
            .route("/_sim/mails", get(sim_mails))
            .layer(axum::middleware::from_fn_with_state(
                st.clone(),
                rate_limit_headers,
            ))
            .with_state(st.clone());
        let served = super::serve_tls(router, port).await?;
        *st.base.lock().unwrap_or_else(|p| p.into_inner()) = served.url();
        Ok(OktaSim {
            st,
            served: Arc::new(served),
        })
    }

    /// The org URL (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        self.served.url()
    }
    pub fn add_user(&self, u: OktaUser) {
        self.st.lock().users.push(u);
    }
    pub fn set_user_status(&self, id: &str, status: &str) {
        if let Some(u) = self.st.lock().users.iter_mut().find(|u| u.id == id) {
            u.status = status.into();
        }
    }
    /// Requests admitted per window of `window_secs` (Okta's: 60); 0: no limit.
    pub fn set_rate_limit(&self, per_window: u32, window_secs: i64) {
        let mut g = self.st.lock();
        g.rate_limit = per_window;
        g.window_secs = window_secs;
    }
    /// Spends what is left of the current window (as another app of the org would): the
    /// next call is answered 429 until the window resets.
    pub fn spend_window(&self) {
        let mut g = self.st.lock();
        let now = Utc::now().timestamp();
        let window = g.window_secs.max(1);
        g.window_start = now - now % window;
        g.window_used = g.rate_limit;
    }
    /// A new DPoP nonce: proofs with the old one are answered `use_dpop_nonce`.
    pub fn rotate_nonce(&self) {
        self.st.lock().nonce = random_id("n");
    }
    pub fn mails(&self) -> Vec<OktaMail> {
        self.st.lock().mails.clone()
    }
    /// 429s answered so far.
    pub fn throttled(&self) -> usize {
        self.st.lock().throttled
    }
    pub fn token_requests(&self) -> usize {
        self.st.lock().token_requests
    }
    /// (status, activations) of an enrollment.
    pub fn enrollment(&self, id: &str) -> Option<(&'static str, usize)> {
        self.st
            .lock()
            .enrollments
            .get(id)
            .map(|e| (e.status, e.activations))
    }
    /// (id, status, activations) of every enrollment.
    pub fn enrollments(&self) -> Vec<(String, &'static str, usize)> {
        self.st
            .lock()
            .enrollments
            .iter()
            .map(|(id, e)| (id.clone(), e.status, e.activations))
            .collect()
    }
    /// Every access token issued (tests grep logs for them).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.st.lock().tokens.keys().cloned().collect()
    }
}
