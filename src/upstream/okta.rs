//! Okta's Management API for the WebAuthn preregistration flow: the user lookup, `enroll`,
//! `activate`, `send-pin`, `mark-error` and deleting an enrollment.
//!
//! Authentication is an OAuth 2.0 service app: client credentials with `private_key_jwt`
//! (an RS256 assertion signed by the app's key, held in the secret store) and DPoP-bound
//! access tokens. Each process makes one DPoP key (EC P-256); every call carries a proof
//! (`htm`, `htu`, `iat`, `jti`, `ath`, and the server's nonce once it asked for one with
//! `use_dpop_nonce`). A 429 is Okta's pace: its `X-Rate-Limit-Reset` says until when.
//! Errors keep Okta's `errorSummary` (and first `errorCauses`) for the shipment.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use josekit::jwk::Jwk;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{self, CallError};
use super::UpstreamError;

const SERVICE: &str = "okta";
/// The scopes the service app needs.
pub const SCOPES: &str = "okta.users.read okta.users.manage";

/// An Okta user, as the flow needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OktaUser {
    pub id: String,
    pub login: String,
    pub email: String,
    pub status: String,
}

impl OktaUser {
    /// Whether Okta lets a factor be enrolled for the user now: active, or a new hire not
    /// yet activated.
    pub fn may_enroll(&self) -> bool {
        matches!(self.status.as_str(), "ACTIVE" | "STAGED" | "PROVISIONED")
    }
}

/// What `enroll` answers: requests Okta encrypted to Yubico itself.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub pin_request_jwe: String,
    /// (authenticatorEnrollmentId, credRequestJwe, keyId)
    pub cred_requests: Vec<(String, String, String)>,
}

/// The part of `activate`'s body the connector relays from Yubico.
#[derive(Debug, Clone)]
pub struct Activation {
    pub user_id: String,
    /// (authenticatorEnrollmentId, credResponseJwe)
    pub cred_responses: Vec<(String, String)>,
    pub pin_response_jwe: String,
    pub serial: String,
    pub version: String,
    /// Yubico's usable signing keys (public JWKs).
    pub signing_keys: Vec<Value>,
}

struct Token {
    value: SecretString,
    until: std::time::Instant,
}

pub struct OktaClient {
    org: url::Url,
    client_id: String,
    /// The service app's private key (RS256 JWK), from the secret store.
    client_key: Jwk,
    dpop_key: Jwk,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<Token>>,
    nonce: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for OktaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OktaClient")
            .field("org", &self.org.as_str())
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn invalid(message: impl Into<String>) -> UpstreamError {
    UpstreamError::Invalid {
        service: SERVICE,
        message: message.into(),
    }
}

/// Okta's error body as (errorCode, summary with the first cause).
fn okta_error(body: &Value) -> (String, String) {
    let code = body["errorCode"].as_str().unwrap_or("").to_string();
    let mut summary = body["errorSummary"].as_str().unwrap_or("").to_string();
    // A list in Okta's documents; a single object is taken too.
    let causes = &body["errorCauses"];
    let first = if causes.is_array() {
        &causes[0]
    } else {
        causes
    };
    if let Some(cause) = first["errorSummary"].as_str() {
        summary = format!("{summary}: {cause}");
    }
    (code, http::scrub(&summary))
}

impl OktaClient {
    pub fn new(
        org: url::Url,
        client_id: String,
        client_key_json: &SecretString,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        let client_key = Jwk::from_bytes(client_key_json.expose_secret().as_bytes())
            .map_err(|e| format!("the Okta service app key is not a JWK: {e}"))?;
        if client_key.parameter("d").is_none() {
            return Err("the Okta service app key must be a private JWK".into());
        }
        let dpop_key = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            org,
            client_id,
            client_key,
            dpop_key,
            http,
            token: tokio::sync::Mutex::new(None),
            nonce: std::sync::Mutex::new(None),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.org.as_str().trim_end_matches('/'), path)
    }

    /// A DPoP proof for `method` `url` (`ath` when bound to `token`).
    fn proof(&self, method: &str, url: &str, token: Option<&str>) -> Result<String, UpstreamError> {
        let mut header = josekit::jws::JwsHeader::new();
        header.set_token_type("dpop+jwt");
        let public =
            crate::crypto::public_of(&self.dpop_key).map_err(|e| invalid(e.to_string()))?;
        header
            .set_claim("jwk", Some(Value::Object(public.as_ref().clone())))
            .map_err(|e| invalid(e.to_string()))?;
        let mut p = josekit::jwt::JwtPayload::new();
        let set = |p: &mut josekit::jwt::JwtPayload, k: &str, v: Value| {
            p.set_claim(k, Some(v)).map_err(|e| invalid(e.to_string()))
        };
        set(&mut p, "htm", json!(method))?;
        set(&mut p, "htu", json!(url))?;
        set(&mut p, "iat", json!(Utc::now().timestamp()))?;
        set(&mut p, "jti", json!(uuid::Uuid::new_v4().to_string()))?;
        if let Some(n) = self.nonce.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            set(&mut p, "nonce", json!(n))?;
        }
        if let Some(t) = token {
            set(&mut p, "ath", json!(b64(&Sha256::digest(t.as_bytes()))))?;
        }
        let signer = josekit::jws::ES256
            .signer_from_jwk(&self.dpop_key)
            .map_err(|e| invalid(e.to_string()))?;
        josekit::jwt::encode_with_signer(&p, &header, &signer).map_err(|e| invalid(e.to_string()))
    }

    /// The `private_key_jwt` client assertion for the token endpoint.
    fn assertion(&self, token_url: &str) -> Result<String, UpstreamError> {
        let now = Utc::now().timestamp();
        let mut p = josekit::jwt::JwtPayload::new();
        for (k, v) in [
            ("iss", json!(self.client_id)),
            ("sub", json!(self.client_id)),
            ("aud", json!(token_url)),
            ("iat", json!(now)),
            ("exp", json!(now + 300)),
            ("jti", json!(uuid::Uuid::new_v4().to_string())),
        ] {
            p.set_claim(k, Some(v))
                .map_err(|e| invalid(e.to_string()))?;
        }
        let mut h = josekit::jws::JwsHeader::new();
        h.set_token_type("JWT");
        if let Some(kid) = self.client_key.key_id() {
            h.set_key_id(kid);
        }
        let signer = josekit::jws::RS256
            .signer_from_jwk(&self.client_key)
            .map_err(|e| invalid(format!("the Okta service app key: {e}")))?;
        josekit::jwt::encode_with_signer(&p, &h, &signer).map_err(|e| invalid(e.to_string()))
    }

    fn remember_nonce(&self, resp: &reqwest::Response) {
        if let Some(n) = resp
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
        {
            *self.nonce.lock().unwrap_or_else(|p| p.into_inner()) = Some(n.to_string());
        }
    }

    /// A DPoP-bound access token (cached until a minute before it expires).
    async fn access_token(&self, fresh: bool) -> Result<SecretString, UpstreamError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot
            .as_ref()
            .filter(|t| !fresh && t.until > std::time::Instant::now())
        {
            return Ok(t.value.clone());
        }
        let url = self.url("/oauth2/v1/token");
        // At most twice: the first answer may ask for the server's DPoP nonce.
        for _ in 0..2 {
            let form = [
                ("grant_type", "client_credentials".to_string()),
                ("scope", SCOPES.to_string()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
                ),
                ("client_assertion", self.assertion(&url)?),
            ];
            let req = self
                .http
                .post(&url)
                .header("DPoP", self.proof("POST", &url, None)?)
                .header("accept", "application/json")
                .form(&form);
            let resp = http::send(SERVICE, req)
                .await
                .map_err(|e| self.transport(e))?;
            self.remember_nonce(&resp);
            let status = resp.status();
            let ra = http::retry_after(&resp);
            let body: Value = http::read_json_capped(SERVICE, resp)
                .await
                .unwrap_or(Value::Null);
            if status.is_success() {
                let value = body["access_token"]
                    .as_str()
                    .ok_or_else(|| invalid("token answer without access_token"))?;
                let lifetime = body["expires_in"].as_u64().unwrap_or(3600).max(120);
                let token = SecretString::from(value.to_string());
                *slot = Some(Token {
                    value: token.clone(),
                    until: std::time::Instant::now() + Duration::from_secs(lifetime - 60),
                });
                return Ok(token);
            }
            if status == StatusCode::BAD_REQUEST && body["error"] == "use_dpop_nonce" {
                continue;
            }
            let error = body["error"].as_str().unwrap_or("").to_string();
            return Err(match status.as_u16() {
                400 | 401 if error == "invalid_client" || error == "invalid_scope" => {
                    UpstreamError::Unauthorized { service: SERVICE }
                }
                _ => http::status_error(
                    SERVICE,
                    status,
                    error,
                    http::scrub(body["error_description"].as_str().unwrap_or("")),
                    ra,
                ),
            });
        }
        Err(invalid(
            "the token endpoint kept asking for a new DPoP nonce",
        ))
    }

    fn transport(&self, e: CallError) -> UpstreamError {
        match e {
            CallError::Paused(wait) => UpstreamError::Throttled {
                service: SERVICE,
                retry_after: wait,
            },
            CallError::Transport(e) => http::transport_error(SERVICE, &e),
        }
    }

    /// One call: token, proof, the nonce dance and one fresh token after a 401.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, UpstreamError> {
        let url = self.url(path);
        let mut fresh = false;
        for attempt in 0..3 {
            let token = self.access_token(fresh).await?;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("authorization", format!("DPoP {}", token.expose_secret()))
                .header(
                    "DPoP",
                    self.proof(method.as_str(), &url, Some(token.expose_secret()))?,
                )
                .header("accept", "application/json");
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = http::send(SERVICE, req)
                .await
                .map_err(|e| self.transport(e))?;
            self.remember_nonce(&resp);
            let status = resp.status();
            let ra = http::retry_after(&resp);
            let nonce_asked = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("use_dpop_nonce"));
            let text = http::read_text_capped(SERVICE, resp)
                .await
                .unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status.is_success() {
                return Ok(value);
            }
            if status == StatusCode::UNAUTHORIZED && attempt < 2 {
                // A nonce the server asked for, or a token it no longer takes.
                fresh = !nonce_asked;
                continue;
            }
            let (code, message) = okta_error(&value);
            return Err(http::status_error(SERVICE, status, code, message, ra));
        }
        Err(UpstreamError::Unauthorized { service: SERVICE })
    }

    /// `GET /api/v1/users/{id or login}`.
    pub async fn get_user(&self, id_or_login: &str) -> Result<OktaUser, UpstreamError> {
        let id =
            percent_encoding::utf8_percent_encode(id_or_login, percent_encoding::NON_ALPHANUMERIC);
        let v = self
            .call(Method::GET, &format!("/api/v1/users/{id}"), None)
            .await?;
        let s = |k: &Value| k.as_str().map(str::to_string);
        Ok(OktaUser {
            id: s(&v["id"]).ok_or_else(|| invalid("user without id"))?,
            login: s(&v["profile"]["login"]).unwrap_or_default(),
            email: s(&v["profile"]["email"]).unwrap_or_default(),
            status: s(&v["status"]).unwrap_or_default(),
        })
    }

    /// `POST /webauthn-registration/api/v1/enroll` with Yubico as the fulfillment provider.
    pub async fn enroll(
        &self,
        user_id: &str,
        rp_ids: &[String],
        transport_key: &Value,
    ) -> Result<Enrolled, UpstreamError> {
        let body = json!({
            "fulfillmentProvider": "yubico",
            "userId": user_id,
            "enrollmentRpIds": rp_ids,
            "yubicoTransportKeyJWK": transport_key,
        });
        let v = self
            .call(
                Method::POST,
                "/webauthn-registration/api/v1/enroll",
                Some(&body),
            )
            .await?;
        let pin_request_jwe = v["pinRequestJwe"]
            .as_str()
            .ok_or_else(|| invalid("enroll answer without pinRequestJwe"))?
            .to_string();
        let cred_requests: Vec<(String, String, String)> = v["credRequests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c["authenticatorEnrollmentId"].as_str()?.to_string(),
                    c["credRequestJwe"].as_str()?.to_string(),
                    c["keyId"].as_str().unwrap_or("").to_string(),
                ))
            })
            .collect();
        if cred_requests.is_empty() {
            return Err(invalid("enroll answer without credRequests"));
        }
        Ok(Enrolled {
            pin_request_jwe,
            cred_requests,
        })
    }

    /// `POST /webauthn-registration/api/v1/activate`: Okta decrypts and verifies. An answer
    /// that lists the activated enrollments (`authenticatorEnrollmentIds`) must name every
    /// one asked for.
    pub async fn activate(&self, a: &Activation) -> Result<(), UpstreamError> {
        let body = json!({
            "fulfillmentProvider": "yubico",
            "userId": a.user_id,
            "credResponses": a.cred_responses.iter().map(|(id, jwe)| json!({
                "authenticatorEnrollmentId": id, "credResponseJwe": jwe})).collect::<Vec<_>>(),
            "pinResponseJwe": a.pin_response_jwe,
            "serial": a.serial,
            "version": a.version,
            "yubicoSigningJwks": a.signing_keys,
        });
        let v = self
            .call(
                Method::POST,
                "/webauthn-registration/api/v1/activate",
                Some(&body),
            )
            .await?;
        if let Some(ids) = v["authenticatorEnrollmentIds"].as_array() {
            let missing: Vec<&str> = a
                .cred_responses
                .iter()
                .map(|(id, _)| id.as_str())
                .filter(|id| !ids.iter().any(|i| i.as_str() == Some(id)))
                .collect();
            if !missing.is_empty() {
                return Err(invalid(format!(
                    "the activation answer does not name the enrollment(s) {}",
                    missing.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// `POST /webauthn-registration/api/v1/send-pin`: Okta mails the PIN.
    pub async fn send_pin(&self, user_id: &str, enrollment_id: &str) -> Result<(), UpstreamError> {
        let body = json!({
            "fulfillmentProvider": "yubico",
            "userId": user_id,
            "authenticatorEnrollmentId": enrollment_id,
        });
        self.call(
            Method::POST,
            "/webauthn-registration/api/v1/send-pin",
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// `GET /webauthn-registration/api/v1/users/{userId}/enrollments`: each preregistration
    /// factor's (id, status). After a crash mid-activation it tells whether Okta activated.
    pub async fn enrollments(&self, user_id: &str) -> Result<Vec<(String, String)>, UpstreamError> {
        let path = format!("/webauthn-registration/api/v1/users/{user_id}/enrollments");
        let v = self.call(Method::GET, &path, None).await?;
        let list = v
            .as_array()
            .ok_or_else(|| invalid("the enrollments answer is not a list"))?;
        Ok(list
            .iter()
            .filter_map(|f| {
                Some((
                    f["id"].as_str()?.to_string(),
                    f["status"].as_str().unwrap_or("").to_string(),
                ))
            })
            .collect())
    }

    /// Marks an enrollment as failed at the fulfillment provider.
    pub async fn mark_error(
        &self,
        user_id: &str,
        enrollment_id: &str,
    ) -> Result<(), UpstreamError> {
        let path = format!(
            "/webauthn-registration/api/v1/users/{user_id}/enrollments/{enrollment_id}/mark-error"
        );
        self.call(Method::POST, &path, None).await.map(|_| ())
    }

    /// Deletes an enrollment (a shipment given up before activation).
    pub async fn delete_enrollment(
        &self,
        user_id: &str,
        enrollment_id: &str,
    ) -> Result<(), UpstreamError> {
        let path =
            format!("/webauthn-registration/api/v1/users/{user_id}/enrollments/{enrollment_id}");
        match self.call(Method::DELETE, &path, None).await {
            Ok(_) | Err(UpstreamError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A Yubico key as Okta's `ECKeyJWK`: exactly its six members (`kid`, `kty`, `crv`, `x`,
/// `y`, `use`), `use` being `default_use` when the published key leaves it out. Used for
/// the transport key of `enroll` (`enc`) and the sign keys of `activate` (`sig`).
pub fn ec_key_jwk(jwk: &Jwk, default_use: &str) -> Value {
    let m = jwk.as_ref();
    let get = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    json!({
        "kid": get("kid"),
        "kty": get("kty"),
        "crv": get("crv"),
        "x": get("x"),
        "y": get("y"),
        "use": m.get("use").cloned().unwrap_or_else(|| json!(default_use)),
    })
}

/// Makes an RS256 key pair for an Okta service app: writes the private JWK to `out`
/// (created new, mode 0600 on Unix) and returns the public JWK to register on the app.
pub fn write_service_app_key(kid: &str, out: &std::path::Path) -> Result<String, String> {
    use std::io::Write;
    let mut key = Jwk::generate_rsa_key(2048).map_err(|e| e.to_string())?;
    key.set_key_id(kid);
    key.set_key_use("sig");
    key.set_algorithm("RS256");
    let public = crate::crypto::public_of(&key).map_err(|e| e.to_string())?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    f.write_all(key.to_string().as_bytes())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(public.to_string())
}

/// Keeps a client shareable between tasks.
pub type SharedOkta = Arc<OktaClient>;
