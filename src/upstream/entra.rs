//! Microsoft Entra ID through Microsoft Graph: user lookup, WebAuthn creation options,
//! FIDO2 method registration and listing, with app-only tokens from a client secret, a
//! managed identity or workload identity federation.
//!
//! Errors branch on Graph's `error.code`, never on its message. 429/503 honour
//! `Retry-After`; reads retry a bounded number of times; the registration POST is never
//! retried blindly (the lifecycle reconciles by listing methods instead).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use url::Url;

use super::http::{
    read_json_capped, read_text_capped, retry, retry_after, scrub, status_error, transport_error,
};
use super::{
    AttestedCredential, CreationOptions, EntraUser, Fido2Method, IdentityProvider, UpstreamError,
};
use crate::config::{Config, EntraCredentialKind};
use crate::domain::UserId;
use crate::secrets::{SecretStore, ENTRA_CLIENT_SECRET};

pub const SERVICE: &str = "Entra";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
const READ_ATTEMPTS: u32 = 4;
const READ_RETRY_BUDGET: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------ tokens

/// Where Graph access tokens come from.
#[async_trait]
pub trait TokenSource: Send + Sync {
    async fn token(&self) -> Result<SecretString, UpstreamError>;
    /// Forget the cached token (after a 401).
    fn invalidate(&self);
}

/// Caches one token until shortly before it expires; refreshes under a lock so that
/// concurrent callers make one request.
struct Cache {
    slot: Mutex<Option<(SecretString, Instant)>>,
    invalidated: std::sync::atomic::AtomicBool,
}

impl Cache {
    fn new() -> Self {
        Self {
            slot: Mutex::new(None),
            invalidated: std::sync::atomic::AtomicBool::new(false),
        }
    }

    async fn get<F, Fut>(&self, fetch: F) -> Result<SecretString, UpstreamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(SecretString, u64), UpstreamError>>,
    {
        let mut slot = self.slot.lock().await;
        let invalid = self
            .invalidated
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        if !invalid {
            if let Some((t, until)) = slot.as_ref() {
                if Instant::now() < *until {
                    return Ok(t.clone());
                }
            }
        }
        let (token, expires_in) = fetch().await?;
        // Renew 5 minutes (or 10% of the lifetime, if shorter) before expiry.
        let margin = (expires_in / 10).min(300);
        let until = Instant::now() + Duration::from_secs(expires_in.saturating_sub(margin));
        *slot = Some((token.clone(), until));
        Ok(token)
    }

    fn invalidate(&self) {
        self.invalidated
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

async fn token_request(
    http: &reqwest::Client,
    req: reqwest::RequestBuilder,
) -> Result<(SecretString, u64), UpstreamError> {
    let _ = http;
    let resp = req.send().await.map_err(|e| transport_error(SERVICE, &e))?;
    let status = resp.status();
    let ra = retry_after(&resp);
    let v: Value = read_json_capped(SERVICE, resp).await.unwrap_or(Value::Null);
    if !status.is_success() {
        let code = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("token_error")
            .to_string();
        return Err(match status.as_u16() {
            400 | 401 => UpstreamError::Unauthorized { service: SERVICE },
            _ => status_error(SERVICE, status, code, String::new(), ra),
        });
    }
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or(UpstreamError::Invalid {
            service: SERVICE,
            message: "token response without access_token".into(),
        })?;
    let expires_in = v
        .get("expires_in")
        .and_then(|e| {
            e.as_u64()
                .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(300);
    Ok((SecretString::from(token.to_string()), expires_in))
}

fn token_url(login: &Url, tenant: &str) -> Result<Url, UpstreamError> {
    login
        .join(&format!("{tenant}/oauth2/v2.0/token"))
        .map_err(|e| UpstreamError::Invalid {
            service: SERVICE,
            message: e.to_string(),
        })
}

/// Client credentials with a secret read from the secret store (`entra-client-secret`).
pub struct ClientSecretTokens {
    url: Url,
    client_id: String,
    secrets: Arc<dyn SecretStore>,
    http: reqwest::Client,
    cache: Cache,
}

impl ClientSecretTokens {
    pub fn new(
        login_endpoint: Url,
        tenant: String,
        client_id: String,
        secrets: Arc<dyn SecretStore>,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        Ok(Self {
            url: token_url(&login_endpoint, &tenant).map_err(|e| e.to_string())?,
            client_id,
            secrets,
            http,
            cache: Cache::new(),
        })
    }
}

#[async_trait]
impl TokenSource for ClientSecretTokens {
    async fn token(&self) -> Result<SecretString, UpstreamError> {
        self.cache
            .get(|| async {
                let secret = self
                    .secrets
                    .get(ENTRA_CLIENT_SECRET)
                    .await
                    .map_err(|e| UpstreamError::Transient {
                        service: SERVICE,
                        message: format!("cannot read the client secret: {e}"),
                        retry_after: None,
                    })?
                    .ok_or(UpstreamError::Unauthorized { service: SERVICE })?;
                let form = [
                    ("client_id", self.client_id.as_str()),
                    ("scope", GRAPH_SCOPE),
                    ("grant_type", "client_credentials"),
                    ("client_secret", secret.expose_secret()),
                ];
                token_request(&self.http, self.http.post(self.url.clone()).form(&form)).await
            })
            .await
    }
    fn invalidate(&self) {
        self.cache.invalidate()
    }
}

/// Managed identity on Azure Container Apps / App Service (`IDENTITY_ENDPOINT`,
/// `IDENTITY_HEADER`).
pub struct ManagedIdentityTokens {
    endpoint: Url,
    header: SecretString,
    client_id: Option<String>,
    http: reqwest::Client,
    cache: Cache,
}

impl ManagedIdentityTokens {
    pub fn new(
        identity_endpoint: Url,
        identity_header: SecretString,
        client_id: Option<String>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            endpoint: identity_endpoint,
            header: identity_header,
            client_id,
            http,
            cache: Cache::new(),
        }
    }
}

#[async_trait]
impl TokenSource for ManagedIdentityTokens {
    async fn token(&self) -> Result<SecretString, UpstreamError> {
        self.cache
            .get(|| async {
                let mut url = self.endpoint.clone();
                url.query_pairs_mut()
                    .append_pair("api-version", "2019-08-01")
                    .append_pair("resource", GRAPH_RESOURCE);
                if let Some(id) = &self.client_id {
                    url.query_pairs_mut().append_pair("client_id", id);
                }
                let req = self
                    .http
                    .get(url)
                    .header("X-IDENTITY-HEADER", self.header.expose_secret());
                token_request(&self.http, req).await
            })
            .await
    }
    fn invalidate(&self) {
        self.cache.invalidate()
    }
}

/// Workload identity federation: the platform's token file is the client assertion.
pub struct WorkloadIdentityTokens {
    url: Url,
    client_id: String,
    token_file: PathBuf,
    http: reqwest::Client,
    cache: Cache,
}

impl WorkloadIdentityTokens {
    pub fn new(
        login_endpoint: Url,
        tenant: String,
        client_id: String,
        token_file: PathBuf,
        http: reqwest::Client,
    ) -> Result<Self, String> {
        Ok(Self {
            url: token_url(&login_endpoint, &tenant).map_err(|e| e.to_string())?,
            client_id,
            token_file,
            http,
            cache: Cache::new(),
        })
    }
}

#[async_trait]
impl TokenSource for WorkloadIdentityTokens {
    async fn token(&self) -> Result<SecretString, UpstreamError> {
        self.cache
            .get(|| async {
                // Re-read every time: the platform rotates the file.
                let assertion = tokio::fs::read_to_string(&self.token_file)
                    .await
                    .map_err(|e| UpstreamError::Transient {
                        service: SERVICE,
                        message: format!("cannot read the federated token file: {}", e.kind()),
                        retry_after: None,
                    })?;
                let assertion = zeroize::Zeroizing::new(assertion);
                let form = [
                    ("client_id", self.client_id.as_str()),
                    ("scope", GRAPH_SCOPE),
                    ("grant_type", "client_credentials"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.trim()),
                ];
                token_request(&self.http, self.http.post(self.url.clone()).form(&form)).await
            })
            .await
    }
    fn invalidate(&self) {
        self.cache.invalidate()
    }
}

/// Chooses the token source the configuration asks for.
pub fn token_source_from_config(
    config: &Config,
    secrets: Arc<dyn SecretStore>,
    http: reqwest::Client,
) -> Result<Arc<dyn TokenSource>, String> {
    let client_id = config.entra_fido_api_client_id.clone();
    Ok(match config.entra_credential {
        EntraCredentialKind::ClientSecret => Arc::new(ClientSecretTokens::new(
            config.entra_login_endpoint.clone(),
            config.azure_tenant_id.clone(),
            client_id,
            secrets,
            http,
        )?),
        EntraCredentialKind::ManagedIdentity => {
            let endpoint = std::env::var("IDENTITY_ENDPOINT")
                .map_err(|_| "IDENTITY_ENDPOINT is not set (managed identity)".to_string())?;
            let header = std::env::var("IDENTITY_HEADER")
                .map_err(|_| "IDENTITY_HEADER is not set (managed identity)".to_string())?;
            let endpoint = Url::parse(&endpoint).map_err(|e| format!("IDENTITY_ENDPOINT: {e}"))?;
            // A user-assigned identity is chosen by AZURE_CLIENT_ID.
            let mi_client = std::env::var("AZURE_CLIENT_ID")
                .ok()
                .filter(|s| !s.is_empty());
            Arc::new(ManagedIdentityTokens::new(
                endpoint,
                SecretString::from(header),
                mi_client,
                http,
            ))
        }
        EntraCredentialKind::WorkloadIdentity => {
            let file = std::env::var("AZURE_FEDERATED_TOKEN_FILE").map_err(|_| {
                "AZURE_FEDERATED_TOKEN_FILE is not set (workload identity)".to_string()
            })?;
            Arc::new(WorkloadIdentityTokens::new(
                config.entra_login_endpoint.clone(),
                config.azure_tenant_id.clone(),
                client_id,
                PathBuf::from(file),
                http,
            )?)
        }
    })
}

// ------------------------------------------------------------------ Graph

#[derive(Debug, Clone)]
pub struct GraphClientConfig {
    pub graph_endpoint: Url,
    /// `beta` (pre-registration with a challenge timeout) or `v1.0`.
    pub api_version: String,
    pub challenge_timeout_minutes: u32,
}

pub struct GraphClient {
    cfg: GraphClientConfig,
    tokens: Arc<dyn TokenSource>,
    http: reqwest::Client,
}

impl GraphClient {
    pub fn new(
        cfg: GraphClientConfig,
        tokens: Arc<dyn TokenSource>,
        http: reqwest::Client,
    ) -> Self {
        Self { cfg, tokens, http }
    }

    /// `{graph}/{ver}/` + path, where `path` is already escaped.
    fn url(&self, path: &str) -> Result<Url, UpstreamError> {
        self.cfg
            .graph_endpoint
            .join(&format!("{}/{path}", self.cfg.api_version))
            .map_err(|e| UpstreamError::Invalid {
                service: SERVICE,
                message: e.to_string(),
            })
    }

    /// One call with a 401 → new token → one retry.
    async fn call(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Value, UpstreamError> {
        for attempt in 0..2 {
            let token = self.tokens.token().await?;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret());
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| transport_error(SERVICE, &e))?;
            let status = resp.status();
            if status.as_u16() == 401 && attempt == 0 {
                self.tokens.invalidate();
                continue;
            }
            let ra = retry_after(&resp);
            let text = read_text_capped(SERVICE, resp).await?;
            if status.is_success() {
                if text.trim().is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_str(&text).map_err(|_| UpstreamError::Invalid {
                    service: SERVICE,
                    message: "Graph answer is not JSON".into(),
                });
            }
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let code = v["error"]["code"].as_str().unwrap_or("unknown").to_string();
            let message = scrub(v["error"]["message"].as_str().unwrap_or(""));
            if code == "Request_ResourceNotFound" || code == "ResourceNotFound" {
                return Err(UpstreamError::NotFound {
                    service: SERVICE,
                    code,
                    message,
                });
            }
            return Err(status_error(SERVICE, status, code, message, ra));
        }
        Err(UpstreamError::Unauthorized { service: SERVICE })
    }

    /// Idempotent reads: transient failures are retried with back-off / Retry-After.
    async fn read(&self, url: &Url) -> Result<Value, UpstreamError> {
        retry(READ_ATTEMPTS, READ_RETRY_BUDGET, || {
            self.call(reqwest::Method::GET, url, None)
        })
        .await
    }
}

/// Path-segment escaping; `#` must become `%23` (Graph treats it as a fragment).
fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
        .to_string()
        .replace("%40", "@")
        .replace("%2E", ".")
        .replace("%2D", "-")
        .replace("%5F", "_")
}

/// Removes `@odata.*` keys at every depth.
pub fn strip_odata(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with("@odata."));
            m.values_mut().for_each(strip_odata);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_odata),
        _ => {}
    }
}

/// Decodes an id that may be unpadded base64url, base64url with a trailing padding digit
/// (0/1/2, the .NET `UrlTokenEncode` form) or padded standard base64, and re-encodes it as
/// unpadded base64url.
pub fn normalise_credential_id(id: &str) -> Option<String> {
    let e = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // The token form is ambiguous with plain base64url when it ends in 0/1/2; it is tried
    // first only when restoring the padding gives a strictly canonical encoding, which a
    // plain id ending in a digit rarely does. (These ids only feed excludeCredentials.)
    if let Some((body, last)) = id.len().checked_sub(1).map(|n| id.split_at(n)) {
        if let Ok(pad @ 0..=2) = last.parse::<usize>() {
            let padded = format!("{body}{}", "=".repeat(pad));
            if padded.len() % 4 == 0 {
                if let Ok(b) = base64::engine::general_purpose::URL_SAFE.decode(padded) {
                    return Some(e.encode(b));
                }
            }
        }
    }
    e.decode(id)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(id).ok())
        .or_else(|| base64::engine::general_purpose::URL_SAFE.decode(id).ok())
        .map(|b| e.encode(b))
}

fn method_of(v: &Value) -> Option<Fido2Method> {
    Some(Fido2Method {
        id: v.get("id")?.as_str()?.to_string(),
        display_name: v
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

#[async_trait]
impl IdentityProvider for GraphClient {
    async fn get_user(&self, user: &UserId) -> Result<EntraUser, UpstreamError> {
        let url = self.url(&format!("users/{}", seg(user.as_str())))?;
        let v = self.read(&url).await?;
        Ok(EntraUser {
            id: v["id"]
                .as_str()
                .ok_or(UpstreamError::Invalid {
                    service: SERVICE,
                    message: "user without id".into(),
                })?
                .to_string(),
            user_principal_name: v["userPrincipalName"].as_str().map(str::to_string),
            display_name: v["displayName"].as_str().map(str::to_string),
        })
    }

    async fn creation_options(
        &self,
        user_object_id: &str,
    ) -> Result<CreationOptions, UpstreamError> {
        let path = if self.cfg.api_version == "v1.0" {
            format!(
                "users/{}/authentication/fido2Methods/creationOptions",
                seg(user_object_id)
            )
        } else {
            format!(
                "users/{}/authentication/fido2Methods/creationOptions(challengeTimeoutInMinutes={})",
                seg(user_object_id),
                self.cfg.challenge_timeout_minutes
            )
        };
        let url = self.url(&path)?;
        let mut v = self.read(&url).await?;
        if let Some(inner) = v
            .get_mut("value")
            .filter(|x| x.is_object())
            .map(Value::take)
        {
            v = inner;
        }
        strip_odata(&mut v);
        let invalid = |m: &str| UpstreamError::Invalid {
            service: SERVICE,
            message: m.to_string(),
        };
        let expiry = v["challengeTimeoutDateTime"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc))
            .ok_or_else(|| invalid("creationOptions without challengeTimeoutDateTime"))?;
        let mut pk = v
            .get_mut("publicKey")
            .map(Value::take)
            .filter(Value::is_object)
            .ok_or_else(|| invalid("creationOptions without publicKey"))?;
        if pk["challenge"].as_str().is_none_or(str::is_empty) || pk["rp"]["id"].as_str().is_none() {
            return Err(invalid("publicKey without challenge or rp.id"));
        }
        if let Some(list) = pk
            .get_mut("excludeCredentials")
            .and_then(Value::as_array_mut)
        {
            for c in list {
                if let Some(id) = c.get("id").and_then(Value::as_str).map(str::to_string) {
                    let norm = normalise_credential_id(&id)
                        .ok_or_else(|| invalid("excludeCredentials id is not base64"))?;
                    c["id"] = Value::String(norm);
                }
            }
        }
        Ok(CreationOptions {
            challenge_timeout: expiry,
            public_key: pk,
        })
    }

    async fn register(
        &self,
        user_object_id: &str,
        display_name: &str,
        credential: &AttestedCredential,
    ) -> Result<Fido2Method, UpstreamError> {
        let url = self.url(&format!(
            "users/{}/authentication/fido2Methods",
            seg(user_object_id)
        ))?;
        let body = json!({
            "displayName": display_name,
            "publicKeyCredential": {
                "id": credential.id,
                "response": {
                    "clientDataJSON": credential.client_data_json,
                    "attestationObject": credential.attestation_object,
                },
                "clientExtensionResults": credential.client_extension_results,
            }
        });
        // Never retried here: a retry is a second registration if the first went through.
        let v = self.call(reqwest::Method::POST, &url, Some(&body)).await?;
        method_of(&v).ok_or(UpstreamError::Invalid {
            service: SERVICE,
            message: "registration answer without id".into(),
        })
    }

    async fn list_methods(&self, user_object_id: &str) -> Result<Vec<Fido2Method>, UpstreamError> {
        let mut url = self.url(&format!(
            "users/{}/authentication/fido2Methods",
            seg(user_object_id)
        ))?;
        let mut out = Vec::new();
        for _ in 0..50 {
            let v = self.read(&url).await?;
            out.extend(
                v["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(method_of),
            );
            match v["@odata.nextLink"]
                .as_str()
                .and_then(|s| Url::parse(s).ok())
            {
                // Only follow links to the configured Graph host.
                Some(next) if next.host_str() == self.cfg.graph_endpoint.host_str() => url = next,
                _ => break,
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_ids_in_all_three_encodings_normalise() {
        let raw = [0xfbu8, 0xff, 0x01, 0x02, 0x03];
        let want = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let padded_std = base64::engine::general_purpose::STANDARD.encode(raw);
        let url_padded = base64::engine::general_purpose::URL_SAFE.encode(raw);
        let pads = url_padded.matches('=').count();
        let token = format!("{}{pads}", url_padded.trim_end_matches('='));
        for form in [want.clone(), padded_std, token] {
            assert_eq!(
                normalise_credential_id(&form).as_deref(),
                Some(want.as_str()),
                "{form}"
            );
        }
    }

    #[test]
    fn odata_keys_are_stripped_everywhere() {
        let mut v = json!({"@odata.context": "x", "a": {"@odata.type": "t", "b": [{"@odata.id": 1, "c": 2}]}});
        strip_odata(&mut v);
        assert_eq!(v, json!({"a": {"b": [{"c": 2}]}}));
    }

    #[test]
    fn user_ids_are_escaped() {
        assert_eq!(seg("a#b@contoso.com"), "a%23b@contoso.com");
        assert_eq!(seg("x/y"), "x%2Fy");
    }
}
