//! Who may call what. Callers present an Entra ID bearer token (production) or, in setups
//! without Entra, an API key (`Authorization: Bearer fcak_...` or `X-API-Key`). Either way
//! the result is a [`Caller`] with a set of [`Permission`]s; handlers ask for the one they
//! need. There is no switch that turns authentication off.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use base64::Engine;
use josekit::jwk::Jwk;
use josekit::jws::alg::rsassa::RsassaJwsVerifier;
use josekit::jws::RS256;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::upstream::http::read_json_capped;
use crate::upstream::keyset::{Fetcher, KeyError, KeySetCache};
use url::Url;

use crate::clock::Clock;

use super::AppState;
use crate::api::ApiError;
use crate::config::{ApiKeyConfig, Config};

/// Prefix of every API key, so secret scanners can recognise leaked ones.
pub const API_KEY_PREFIX: &str = "fcak_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    ShipmentsCreate,
    ShipmentsRead,
    PinResend,
    OperationsRun,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::ShipmentsCreate,
        Permission::ShipmentsRead,
        Permission::PinResend,
        Permission::OperationsRun,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::ShipmentsCreate => "Shipments.Create",
            Permission::ShipmentsRead => "Shipments.Read",
            Permission::PinResend => "Pin.Resend",
            Permission::OperationsRun => "Operations.Run",
        }
    }

    /// Grants named in API-key configuration. `create_request` grants everything there.
    pub fn from_grant(grant: &str) -> Vec<Permission> {
        match grant {
            "create_request" => Permission::ALL.to_vec(),
            "Shipments.Create" => vec![Permission::ShipmentsCreate],
            "Shipments.Read" => vec![Permission::ShipmentsRead],
            "Pin.Resend" => vec![Permission::PinResend],
            "Operations.Run" => vec![Permission::OperationsRun],
            _ => vec![],
        }
    }
}

/// What an Entra access token lets its bearer do.
///
/// * App-only token (no `scp`): the app's own app roles.
/// * Delegated token (`scp`): the scopes say what the client may do on the user's behalf
///   (`create_request` covers every action, `Shipments.Read` etc. one each); the user's
///   app roles say what the user may do. Both must agree: the result is the intersection.
/// * With `vendor_scope_grants_all` (the vendor connector's behaviour, off by default), a
///   delegated `create_request` alone grants everything: safe only when the enterprise
///   application requires assignment, so that only assigned users obtain the scope.
pub fn effective_permissions(
    scopes: &[&str],
    roles: &[&str],
    vendor_scope_grants_all: bool,
) -> BTreeSet<Permission> {
    let role = |r: &str| match r {
        "Shipments.Create" => Some(Permission::ShipmentsCreate),
        "Shipments.Read" => Some(Permission::ShipmentsRead),
        "Pin.Resend" => Some(Permission::PinResend),
        "Operations.Run" => Some(Permission::OperationsRun),
        _ => None,
    };
    let by_roles: BTreeSet<Permission> = roles.iter().filter_map(|r| role(r)).collect();
    if scopes.is_empty() {
        return by_roles;
    }
    if vendor_scope_grants_all && scopes.contains(&"create_request") {
        return Permission::ALL.into_iter().collect();
    }
    let client_may: BTreeSet<Permission> = scopes
        .iter()
        .flat_map(|s| match *s {
            "create_request" => Permission::ALL.to_vec(),
            other => role(other).into_iter().collect(),
        })
        .collect();
    client_may.intersection(&by_roles).copied().collect()
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who, for audit logs: token subject/app id, or `apikey:<name>`.
    pub subject: String,
    pub permissions: BTreeSet<Permission>,
}

impl Caller {
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(&p) {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                message: format!("caller lacks the {} permission", p.as_str()),
            })
        }
    }
}

struct ApiKey {
    name: String,
    hash: [u8; 32],
    permissions: BTreeSet<Permission>,
}

/// Validates caller credentials. Built once from the configuration.
pub struct Authenticator {
    api_keys: Vec<ApiKey>,
    tokens: Option<TokenValidator>,
}

/// Clock skew tolerated on `exp` and `nbf`: one constant, documented in docs/auth.md.
pub const LEEWAY_SECS: i64 = 60;
/// Larger bearer tokens are refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// At most one JWKS refresh per this interval for unknown `kid`s.
pub const JWKS_COOLDOWN: Duration = Duration::from_secs(30);

/// Fetches the tenant's signing keys (OpenID discovery, then the JWKS) and builds one
/// verifier per key, once: RSA keys for signatures, at least 2048 bits, at most 100.
fn key_fetcher(http: reqwest::Client, discovery: Url) -> Fetcher<RsassaJwsVerifier> {
    Box::new(move || {
        let (http, discovery) = (http.clone(), discovery.clone());
        Box::pin(async move {
            let conf: Value = read_json_capped(
                "OpenID configuration",
                http.get(discovery)
                    .send()
                    .await
                    .map_err(|_| "OpenID configuration unreachable".to_string())?,
            )
            .await
            .map_err(|e| e.to_string())?;
            let jwks_uri = conf["jwks_uri"]
                .as_str()
                .ok_or("OpenID configuration without jwks_uri")?
                .to_string();
            let jwks_uri = Url::parse(&jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
            if !crate::upstream::http::allowed_outbound(&jwks_uri) {
                return Err("jwks_uri is not https".to_string());
            }
            let set: Value = read_json_capped(
                "JWKS",
                http.get(jwks_uri)
                    .send()
                    .await
                    .map_err(|_| "JWKS unreachable".to_string())?,
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(set["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|k| k["kty"] == "RSA" && k["use"].as_str().is_none_or(|u| u == "sig"))
                // RSA moduli below 2048 bits are not trusted.
                .filter(|k| {
                    k["n"].as_str().is_some_and(|n| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(n)
                            .is_ok_and(|b| b.len() >= 256)
                    })
                })
                .take(100)
                .filter_map(|k| k.as_object().cloned())
                .filter_map(|m| Jwk::from_map(m).ok())
                .filter_map(|jwk| {
                    let kid = jwk.key_id()?.to_string();
                    RS256.verifier_from_jwk(&jwk).ok().map(|v| (kid, v))
                })
                .collect())
        })
    })
}

/// Tokens validated recently, by SHA-256 of the token: a hit skips the signature check and
/// the claim parsing. Bounded (`TOKEN_CACHE_ENTRIES`, in shards so that lookups under load
/// do not queue on one lock), never past the token's `exp` (plus the leeway validation
/// allows), and an entry counts only while the key that verified it is still the published
/// key of that `kid` (a withdrawn or rotated key stops its tokens at once).
struct ValidatedTokens {
    shards: Vec<std::sync::RwLock<HashMap<[u8; 32], Validated>>>,
    per_shard: usize,
}

#[derive(Clone)]
struct Validated {
    caller: Caller,
    exp: i64,
    nbf: Option<i64>,
    kid: String,
    verifier: Arc<RsassaJwsVerifier>,
}

/// Validated tokens kept at most (about 1 KiB each).
pub const TOKEN_CACHE_ENTRIES: usize = 4096;
const TOKEN_CACHE_SHARDS: usize = 16;

impl ValidatedTokens {
    fn new(capacity: usize) -> Self {
        Self {
            shards: (0..TOKEN_CACHE_SHARDS)
                .map(|_| std::sync::RwLock::new(HashMap::new()))
                .collect(),
            per_shard: capacity.div_ceil(TOKEN_CACHE_SHARDS).max(1),
        }
    }

    fn shard(&self, key: &[u8; 32]) -> &std::sync::RwLock<HashMap<[u8; 32], Validated>> {
        &self.shards[usize::from(key[0]) % TOKEN_CACHE_SHARDS]
    }

    fn get(&self, key: &[u8; 32]) -> Option<Validated> {
        self.shard(key)
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn insert(&self, key: [u8; 32], v: Validated, now: i64) {
        let mut shard = self.shard(&key).write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard {
            // Expired entries go first; if the shard is still full, it starts over (a
            // miss costs one validation, never memory).
            shard.retain(|_, e| now <= e.exp + LEEWAY_SECS);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(key, v);
    }

    fn remove(&self, key: &[u8; 32]) {
        self.shard(key)
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

/// Entra ID access-token validation: RS256 only, signature first, then issuer, audience,
/// lifetime and tenant.
pub struct TokenValidator {
    issuers: Vec<String>,
    audiences: Vec<String>,
    tenant: String,
    vendor_scope_grants_all: bool,
    clock: Arc<dyn Clock>,
    keys: KeySetCache<RsassaJwsVerifier>,
    validated: ValidatedTokens,
}

impl TokenValidator {
    pub fn new(
        config: &Config,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        cooldown: Duration,
    ) -> Result<Self, String> {
        let tenant = config.auth_tenant_id.clone();
        // Tokens name one tenant; the multi-tenant aliases would accept any tenant's issuer.
        if ["common", "organizations", "consumers"].contains(&tenant.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "FIDO_CONNECTOR_AUTH_TENANT_ID: `{tenant}` is a multi-tenant alias; name the tenant"
            ));
        }
        let login = config
            .auth_login_endpoint
            .as_str()
            .trim_end_matches('/')
            .to_string();
        let discovery = Url::parse(&format!(
            "{login}/{tenant}/v2.0/.well-known/openid-configuration"
        ))
        .map_err(|e| format!("FIDO_CONNECTOR_AUTH_LOGIN_ENDPOINT: {e}"))?;
        Ok(Self {
            // v2 tokens name the login host; v1 tokens name sts.windows.net.
            issuers: vec![
                format!("{login}/{tenant}/v2.0"),
                format!("https://sts.windows.net/{tenant}/"),
            ],
            audiences: config.allowed_audiences.clone(),
            tenant,
            vendor_scope_grants_all: config.vendor_scope_grants_all,
            clock,
            keys: KeySetCache::new(
                key_fetcher(http, discovery),
                cooldown,
                crate::upstream::jwks::MAX_AGE,
            ),
            validated: ValidatedTokens::new(TOKEN_CACHE_ENTRIES),
        })
    }

    /// Tokens in the validated-token cache (tests, metrics).
    pub fn cached_tokens(&self) -> usize {
        self.validated.len()
    }

    /// How many times the signing keys were fetched (tests, metrics).
    pub async fn key_fetches(&self) -> u64 {
        self.keys.fetches()
    }

    /// Validates a bearer token and returns the caller it names.
    pub async fn validate(&self, token: &str) -> Result<Caller, &'static str> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err("token too large");
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.validated.get(&key) {
            let now = self.clock.now().timestamp();
            if now > hit.exp + LEEWAY_SECS {
                self.validated.remove(&key);
                return Err("token expired");
            }
            let not_yet = hit.nbf.is_some_and(|nbf| now + LEEWAY_SECS < nbf);
            // The key that verified it must still be the one published under its kid.
            let same_key = matches!(
                self.keys.get(&hit.kid).await,
                Ok(k) if Arc::ptr_eq(&k, &hit.verifier)
            );
            if same_key && !not_yet {
                return Ok(hit.caller);
            }
            self.validated.remove(&key);
        }
        let (caller, validated) = self.validate_fully(token).await?;
        self.validated
            .insert(key, validated, self.clock.now().timestamp());
        Ok(caller)
    }

    async fn validate_fully(&self, token: &str) -> Result<(Caller, Validated), &'static str> {
        // Only the header is read before the signature is checked.
        let header = token.split('.').next().ok_or("malformed token")?;
        let header: Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("malformed token")?;
        if header["alg"] != "RS256" {
            return Err("token algorithm not accepted");
        }
        if token.split('.').count() != 3 {
            return Err("malformed token");
        }
        let kid = header["kid"].as_str().ok_or("token without kid")?;
        let verifier = self.keys.get(kid).await.map_err(|e| match e {
            KeyError::Unavailable(_) => "signing keys unavailable",
            _ => "unknown signing key",
        })?;
        let (payload, _) = josekit::jwt::decode_with_verifier(token, verifier.as_ref())
            .map_err(|_| "bad signature")?;
        let kid = kid.to_string();
        let claims = payload.claims_set();

        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or("no issuer")?;
        if !self.issuers.iter().any(|i| i == iss) {
            return Err("wrong issuer");
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => self.audiences.contains(a),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.audiences.iter().any(|x| x == a)),
            _ => false,
        };
        if !aud_ok {
            return Err("wrong audience");
        }
        let now = self.clock.now().timestamp();
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or("no expiry")?;
        if now > exp + LEEWAY_SECS {
            return Err("token expired");
        }
        let nbf = claims.get("nbf").and_then(Value::as_i64);
        if let Some(nbf) = nbf {
            if now + LEEWAY_SECS < nbf {
                return Err("token not yet valid");
            }
        }
        match claims.get("tid").and_then(Value::as_str) {
            Some(tid) if tid == self.tenant => {}
            Some(_) => return Err("wrong tenant"),
            None => return Err("token without tenant"),
        }
        // Only access tokens for this API: an ID token carries a nonce and neither scopes
        // nor roles.
        if claims.get("nonce").is_some() {
            return Err("ID tokens are not accepted; present an access token");
        }
        let scopes: Vec<&str> = claims
            .get("scp")
            .and_then(Value::as_str)
            .map(|s| s.split(' ').filter(|g| !g.is_empty()).collect())
            .unwrap_or_default();
        let roles: Vec<&str> = claims
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if scopes.is_empty() && roles.is_empty() {
            return Err("not an access token for this API (no scopes or roles)");
        }
        let permissions = effective_permissions(&scopes, &roles, self.vendor_scope_grants_all);
        // oid (the user or app object) is stable across apps; fall back to sub, azp, appid.
        let subject = ["oid", "sub", "azp", "appid"]
            .iter()
            .find_map(|k| claims.get(*k).and_then(Value::as_str))
            .unwrap_or("unknown")
            .to_string();
        let caller = Caller {
            subject,
            permissions,
        };
        let validated = Validated {
            caller: caller.clone(),
            exp,
            nbf,
            kid,
            verifier,
        };
        Ok((caller, validated))
    }
}

impl Authenticator {
    pub fn new(config: &Config) -> Result<Self, String> {
        let extra = match &config.extra_root_ca_pem {
            Some(p) => Some(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?),
            None => None,
        };
        let http = crate::upstream::http::build_client(config.upstream_timeout, extra.as_deref())?;
        Self::with_clock(
            config,
            Arc::new(crate::clock::SystemClock),
            http,
            JWKS_COOLDOWN,
        )
    }

    pub fn with_clock(
        config: &Config,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
        cooldown: Duration,
    ) -> Result<Self, String> {
        let api_keys = config
            .api_keys
            .iter()
            .map(api_key_from_config)
            .collect::<Result<Vec<_>, _>>()?;
        let tokens = if config.allowed_audiences.is_empty() {
            None
        } else {
            Some(TokenValidator::new(config, http, clock, cooldown)?)
        };
        Ok(Self { api_keys, tokens })
    }

    pub fn token_validator(&self) -> Option<&TokenValidator> {
        self.tokens.as_ref()
    }

    /// Establishes who is calling from the request headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let presented = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .or_else(|| bearer(headers));
        let Some(credential) = presented else {
            return Err(ApiError::Unauthenticated {
                message: "authentication required".into(),
                bearer_error: "invalid_request",
            });
        };
        if credential.starts_with(API_KEY_PREFIX) {
            return self.check_api_key(credential);
        }
        match &self.tokens {
            Some(v) => v
                .validate(credential)
                .await
                .map_err(|why| ApiError::Unauthenticated {
                    message: format!("invalid token: {why}"),
                    bearer_error: "invalid_token",
                }),
            None => Err(ApiError::Unauthenticated {
                message: "invalid credentials".into(),
                bearer_error: "invalid_token",
            }),
        }
    }

    fn check_api_key(&self, key: &str) -> Result<Caller, ApiError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compare against every key in constant time, without early exit.
        let mut found: Option<&ApiKey> = None;
        for k in &self.api_keys {
            if bool::from(k.hash.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        match found {
            Some(k) => Ok(Caller {
                subject: format!("apikey:{}", k.name),
                permissions: k.permissions.clone(),
            }),
            None => Err(ApiError::Unauthenticated {
                message: "invalid credentials".into(),
                bearer_error: "invalid_token",
            }),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn api_key_from_config(c: &ApiKeyConfig) -> Result<ApiKey, String> {
    let mut hash = [0u8; 32];
    for (i, chunk) in c.sha256_hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).map_err(|e| e.to_string())?;
        *hash.get_mut(i).ok_or("hash too long")? =
            u8::from_str_radix(s, 16).map_err(|e| format!("api key {}: {e}", c.name))?;
    }
    let mut permissions = BTreeSet::new();
    for g in &c.grants {
        let p = Permission::from_grant(g);
        if p.is_empty() {
            return Err(format!("api key {}: unknown grant `{g}`", c.name));
        }
        permissions.extend(p);
    }
    Ok(ApiKey {
        name: c.name.clone(),
        hash,
        permissions,
    })
}

/// SHA-256 hex of a key, as configured in `FIDO_CONNECTOR_API_KEYS`.
pub fn hash_api_key(key: &str) -> String {
    crate::lifecycle::hex(&Sha256::digest(key.as_bytes()))
}

/// A new random API key with the recognisable prefix.
pub fn generate_api_key() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    format!(
        "{API_KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state.auth.authenticate(&parts.headers).await
    }
}

/// One audit line per authorised action: who, what, which shipment. Never a credential.
pub fn audit(caller: &Caller, action: &str, shipment_id: Option<&str>) {
    tracing::info!(
        target: "fido_connector::audit",
        subject = %caller.subject,
        action,
        shipment_id = shipment_id.unwrap_or(""),
        "authorised call"
    );
}
