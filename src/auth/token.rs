//! Entra ID access-token validation (RS256, the tenant's published keys) and the cache of
//! tokens validated recently. No HTTP types: the key set comes through the one key-set
//! fetcher and cache of `upstream`, time from the injected clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use josekit::jws::alg::rsassa::RsassaJwsVerifier;
use josekit::jws::RS256;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use super::permission::{effective_permissions, Caller};
use crate::clock::Clock;
use crate::config::CallerAuthConfig;
use crate::upstream::keyset::{Fetcher, KeyError, KeySetCache};

/// Clock skew tolerated on `exp` and `nbf`: one constant, documented in docs/auth.md.
pub const LEEWAY_SECS: i64 = 60;
/// Larger bearer tokens are refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The tenant's signing keys (OpenID discovery, then the JWKS, through the one key-set
/// fetcher), one verifier built per key, once: RSA keys for signatures, at least 2048 bits.
fn key_fetcher(http: reqwest::Client, discovery: Url) -> Fetcher<RsassaJwsVerifier> {
    crate::upstream::jwks::discovered_fetcher(
        http,
        discovery,
        |k| {
            k.get("kty").and_then(Value::as_str) == Some("RSA")
                // RSA moduli below 2048 bits are not trusted.
                && k.get("n").and_then(Value::as_str).is_some_and(|n| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(n)
                        .is_ok_and(|b| b.len() >= 256)
                })
        },
        |jwk| RS256.verifier_from_jwk(&jwk).ok(),
    )
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
        config: &CallerAuthConfig,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        cooldown: Duration,
    ) -> Result<Self, String> {
        let tenant = config.tenant_id.clone();
        // Tokens name one tenant; the multi-tenant aliases would accept any tenant's issuer.
        if ["common", "organizations", "consumers"].contains(&tenant.to_ascii_lowercase().as_str())
        {
            return Err(format!(
                "FIDO_CONNECTOR_AUTH_TENANT_ID: `{tenant}` is a multi-tenant alias; name the tenant"
            ));
        }
        let login = config
            .login_endpoint
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
        // What only access tokens carry: the client they were issued to (`azp` in v2,
        // `appid` in v1). An ID token for the API's own app id has neither.
        if claims.get("azp").and_then(Value::as_str).is_none()
            && claims.get("appid").and_then(Value::as_str).is_none()
        {
            return Err("not an access token (no azp or appid)");
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
        // App-only tokens say so with `idtyp: app` where the claim is configured; there,
        // a stray `scp` grants nothing and the app's roles decide.
        let app_only = claims.get("idtyp").and_then(Value::as_str) == Some("app");
        let scopes = if app_only { Vec::new() } else { scopes };
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
