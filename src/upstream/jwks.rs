//! Yubico's published key sets, cached: transport keys (`use: enc`, to encrypt requests to
//! Yubico) and sign keys (`use: sig`, to verify Yubico's responses), each a
//! [`KeySetCache`](super::keyset::KeySetCache) (the same cache that holds callers' token
//! keys). Only EC P-384 keys are kept; at most 100 per set.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use josekit::jwk::Jwk;
use rand::seq::IndexedRandom;
use serde_json::Value;
use url::Url;

use super::http::{read_json_capped, status_error};
use super::keyset::{KeyError, KeySetCache};
use super::{UpstreamError, YubicoKeys};

pub const SERVICE: &str = "Yubico JWKS";
const MAX_KEYS: usize = 100;
/// Keys are trusted at most this long after they were fetched.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// Minimum time between two fetches caused by an unknown kid.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);

pub struct JwksCache {
    transport: KeySetCache<crate::crypto::TransportKey>,
    sign: KeySetCache<SignKey>,
}

/// A sign key with its verifier, built once per fetch.
struct SignKey {
    jwk: Jwk,
    verifier: Arc<josekit::jws::alg::ecdsa::EcdsaJwsVerifier>,
}

/// Sign keys with their verifier, and transport keys parsed for encryption, both built
/// once per fetch; a key OpenSSL refuses is left out.
fn sign_fetcher(http: reqwest::Client, url: Url) -> super::keyset::Fetcher<SignKey> {
    parsed_fetcher(http, url, "sig", |jwk| {
        let verifier = Arc::new(crate::crypto::es384_verifier(&jwk).ok()?);
        Some(SignKey { jwk, verifier })
    })
}

fn transport_fetcher(
    http: reqwest::Client,
    url: Url,
) -> super::keyset::Fetcher<crate::crypto::TransportKey> {
    parsed_fetcher(http, url, "enc", |jwk| {
        crate::crypto::TransportKey::new(jwk).ok()
    })
}

/// The usable keys of a set, each turned into `K` by `parse` (keys it refuses are left out).
fn parsed_fetcher<K: Send + Sync + 'static>(
    http: reqwest::Client,
    url: Url,
    use_: &'static str,
    parse: fn(Jwk) -> Option<K>,
) -> super::keyset::Fetcher<K> {
    let inner = fetcher(http, url, use_);
    Box::new(move || {
        let fut = inner();
        Box::pin(async move {
            Ok(fut
                .await?
                .into_iter()
                .filter_map(|(kid, jwk)| Some((kid, parse(jwk)?)))
                .collect())
        })
    })
}

fn fetcher(http: reqwest::Client, url: Url, use_: &'static str) -> super::keyset::Fetcher<Jwk> {
    Box::new(move || {
        let (http, url) = (http.clone(), url.clone());
        Box::pin(async move {
            let v = fetch(&http, url).await.map_err(|e| e.to_string())?;
            Ok(usable_keys(&v, use_)
                .into_iter()
                .filter_map(|k| k.key_id().map(str::to_string).map(|kid| (kid, k)))
                .collect())
        })
    })
}

async fn fetch(http: &reqwest::Client, url: Url) -> Result<Value, UpstreamError> {
    fetch_from(http, url, SERVICE, "yubico_keys").await
}

/// GETs a published document (a key set, an OpenID configuration): a missing one is an
/// outage of its publisher, not a missing key.
async fn fetch_from(
    http: &reqwest::Client,
    url: Url,
    service: &'static str,
    metric: &'static str,
) -> Result<Value, UpstreamError> {
    let resp = super::http::send(metric, http.get(url))
        .await
        .map_err(|e| e.into_upstream(service))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(
            match status_error(service, status, String::new(), String::new(), None) {
                UpstreamError::NotFound { .. } | UpstreamError::Unauthorized { .. } => {
                    UpstreamError::Transient {
                        service,
                        message: format!("HTTP {}", status.as_u16()),
                        retry_after: None,
                    }
                }
                e => e,
            },
        );
    }
    read_json_capped(service, resp).await
}

/// A fetcher for a key set found through OpenID discovery (the document's `jwks_uri`, which
/// must be https outside loopback): keys of `use: sig` that `kind` accepts, each turned
/// into `K` by `parse`. Callers' Entra tokens are verified with such a set.
pub fn discovered_fetcher<K: Send + Sync + 'static>(
    http: reqwest::Client,
    discovery: Url,
    kind: fn(&serde_json::Map<String, Value>) -> bool,
    parse: fn(Jwk) -> Option<K>,
) -> super::keyset::Fetcher<K> {
    Box::new(move || {
        let (http, discovery) = (http.clone(), discovery.clone());
        Box::pin(async move {
            let conf = fetch_from(&http, discovery, "OpenID configuration", "entra_keys")
                .await
                .map_err(|e| e.to_string())?;
            let jwks_uri = conf["jwks_uri"]
                .as_str()
                .ok_or("OpenID configuration without jwks_uri")?;
            let jwks_uri = Url::parse(jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
            if !super::http::allowed_outbound(&jwks_uri) {
                return Err("jwks_uri is not https".to_string());
            }
            let set = fetch_from(&http, jwks_uri, "JWKS", "entra_keys")
                .await
                .map_err(|e| e.to_string())?;
            Ok(published_keys(&set, "sig", kind)
                .into_iter()
                .filter_map(|jwk| {
                    let kid = jwk.key_id()?.to_string();
                    Some((kid, parse(jwk)?))
                })
                .collect())
        })
    })
}

fn key_error(e: KeyError) -> UpstreamError {
    match e {
        KeyError::Unknown { kid } => UpstreamError::NotFound {
            service: SERVICE,
            code: "unknown_kid".into(),
            message: format!("no signing key {kid}"),
        },
        // Fetched moments ago and still without it: as unknown as after a refresh.
        KeyError::NotYet { kid, .. } => UpstreamError::NotFound {
            service: SERVICE,
            code: "unknown_kid".into(),
            message: format!("no signing key {kid} (refreshed moments ago)"),
        },
        e => UpstreamError::Transient {
            service: SERVICE,
            message: e.to_string(),
            retry_after: e.retry_after(),
        },
    }
}

impl JwksCache {
    pub fn new(transport_url: Url, sign_url: Url, http: reqwest::Client) -> Self {
        Self::with_cooldown(transport_url, sign_url, http, DEFAULT_COOLDOWN)
    }

    pub fn with_cooldown(
        transport_url: Url,
        sign_url: Url,
        http: reqwest::Client,
        cooldown: Duration,
    ) -> Self {
        Self::with_limits(transport_url, sign_url, http, cooldown, MAX_AGE)
    }

    pub fn with_limits(
        transport_url: Url,
        sign_url: Url,
        http: reqwest::Client,
        cooldown: Duration,
        max_age: Duration,
    ) -> Self {
        Self {
            transport: KeySetCache::new(
                transport_fetcher(http.clone(), transport_url),
                cooldown,
                max_age,
            ),
            sign: KeySetCache::new(sign_fetcher(http, sign_url), cooldown, max_age),
        }
    }

    /// How many times each set was fetched (transport, sign): for tests and metrics.
    pub async fn fetch_counts(&self) -> (u64, u64) {
        (self.transport.fetches(), self.sign.fetches())
    }
}

/// EC P-384 keys with a kid whose `use` (if present) matches; at most [`MAX_KEYS`].
pub fn usable_keys(set: &Value, use_: &str) -> Vec<Jwk> {
    published_keys(set, use_, |k| {
        k.get("kty").and_then(Value::as_str) == Some("EC")
            && k.get("crv").and_then(Value::as_str) == Some("P-384")
    })
}

/// The public keys of a set that `kind` accepts, with a kid, whose `use` (if present)
/// matches; at most [`MAX_KEYS`].
pub fn published_keys(
    set: &Value,
    use_: &str,
    kind: impl Fn(&serde_json::Map<String, Value>) -> bool,
) -> Vec<Jwk> {
    let Some(keys) = set.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|k| k.as_object())
        .filter(|k| {
            kind(k)
                && k.get("kid")
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
                && k.get("use")
                    .and_then(Value::as_str)
                    .is_none_or(|u| u == use_)
                && !k.contains_key("d")
        })
        .take(MAX_KEYS)
        .filter_map(|k| Jwk::from_map(k.clone()).ok())
        .collect()
}

#[async_trait]
impl YubicoKeys for JwksCache {
    type Error = UpstreamError;

    async fn transport_key(&self) -> Result<crate::crypto::TransportKey, UpstreamError> {
        let keys: Vec<Arc<crate::crypto::TransportKey>> =
            self.transport.all().await.map_err(key_error)?;
        keys.choose(&mut rand::rng())
            .map(|k| k.as_ref().clone())
            .ok_or(UpstreamError::Transient {
                service: SERVICE,
                message: "no usable transport key (EC P-384, use enc)".into(),
                retry_after: None,
            })
    }

    async fn sign_key(&self, kid: &str) -> Result<Jwk, UpstreamError> {
        self.sign
            .get(kid)
            .await
            .map(|k| k.jwk.clone())
            .map_err(key_error)
    }

    async fn sign_keys(&self) -> Result<Vec<Jwk>, UpstreamError> {
        let keys = self.sign.all().await.map_err(key_error)?;
        Ok(keys.iter().map(|k| k.jwk.clone()).collect())
    }

    async fn sign_verifier(
        &self,
        kid: &str,
    ) -> Result<Arc<josekit::jws::alg::ecdsa::EcdsaJwsVerifier>, UpstreamError> {
        self.sign
            .get(kid)
            .await
            .map(|k| k.verifier.clone())
            .map_err(key_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ec_p384_keys_of_the_right_use_are_kept() {
        use crate::crypto::{public_of, yubico_side::new_key};
        let ec = |kid: &str, use_: Option<&str>| {
            let k = public_of(&new_key(kid, use_.unwrap_or("enc")).unwrap()).unwrap();
            let mut m = k.as_ref().clone();
            if use_.is_none() {
                m.remove("use");
            }
            serde_json::Value::Object(m)
        };
        let p256 = Jwk::generate_ec_key(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
        let mut p256 = p256.to_public_key().unwrap();
        p256.set_key_id("b");
        let mut nokid = ec("x", Some("enc"));
        nokid.as_object_mut().unwrap().remove("kid");
        let private = serde_json::Value::Object(new_key("p", "enc").unwrap().as_ref().clone());
        let set = serde_json::json!({"keys": [
            ec("a", Some("enc")),
            serde_json::Value::Object(p256.as_ref().clone()),
            {"kty": "RSA", "kid": "c", "n": "AQAB", "e": "AQAB"},
            ec("d", Some("sig")),
            ec("e", None),
            nokid,
            private,
        ]});
        let kids: Vec<_> = usable_keys(&set, "enc")
            .iter()
            .map(|k| k.key_id().unwrap().to_string())
            .collect();
        assert_eq!(kids, ["a", "e"]);
        let one = ec("k", None);
        let many = serde_json::json!({"keys": vec![one; 150]});
        assert_eq!(usable_keys(&many, "sig").len(), 100);
    }
}
