//! Yubico's published key sets, cached: transport keys (`use: enc`, to encrypt requests to
//! Yubico) and sign keys (`use: sig`, to verify Yubico's responses). Keys rotate, so an
//! unknown `kid` triggers one refresh, at most once per cooldown per set, so a flood of
//! bad kids cannot hammer the endpoint. Only EC P-384 keys are kept; at most 100 per set.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use josekit::jwk::Jwk;
use rand::seq::IndexedRandom;
use serde_json::Value;
use tokio::sync::Mutex;
use url::Url;

use super::http::{status_error, transport_error};
use super::{UpstreamError, YubicoKeys};

pub const SERVICE: &str = "Yubico JWKS";
const MAX_KEYS: usize = 100;
/// Sets are re-read at least this often even when every kid is known.
const MAX_AGE: Duration = Duration::from_secs(3600);

struct Set {
    url: Url,
    use_: &'static str,
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
    fetches: u64,
    /// Whether the last fetch failed: then a missing kid means "unavailable", not "unknown".
    failed: bool,
}

pub struct JwksCache {
    http: reqwest::Client,
    transport: Mutex<Set>,
    sign: Mutex<Set>,
    cooldown: Duration,
}

impl JwksCache {
    pub fn new(transport_url: Url, sign_url: Url, http: reqwest::Client) -> Self {
        Self::with_cooldown(transport_url, sign_url, http, Duration::from_secs(30))
    }

    pub fn with_cooldown(
        transport_url: Url,
        sign_url: Url,
        http: reqwest::Client,
        cooldown: Duration,
    ) -> Self {
        let set = |url, use_| {
            Mutex::new(Set {
                url,
                use_,
                keys: Vec::new(),
                fetched: None,
                fetches: 0,
                failed: false,
            })
        };
        Self {
            http,
            transport: set(transport_url, "enc"),
            sign: set(sign_url, "sig"),
            cooldown,
        }
    }

    /// How many times each set was fetched (transport, sign): for tests and metrics.
    pub async fn fetch_counts(&self) -> (u64, u64) {
        (
            self.transport.lock().await.fetches,
            self.sign.lock().await.fetches,
        )
    }

    async fn refresh(&self, set: &mut Set) -> Result<(), UpstreamError> {
        set.fetches += 1;
        set.fetched = Some(Instant::now());
        set.failed = true;
        let r = self.fetch(set).await;
        if r.is_ok() {
            set.failed = false;
        }
        r
    }

    async fn fetch(&self, set: &mut Set) -> Result<(), UpstreamError> {
        let resp = self
            .http
            .get(set.url.clone())
            .send()
            .await
            .map_err(|e| transport_error(SERVICE, &e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(
                match status_error(SERVICE, status, String::new(), String::new(), None) {
                    // A missing key set is an outage of the publisher, not a missing kid.
                    UpstreamError::NotFound { .. } | UpstreamError::Unauthorized { .. } => {
                        UpstreamError::Transient {
                            service: SERVICE,
                            message: format!("HTTP {}", status.as_u16()),
                            retry_after: None,
                        }
                    }
                    e => e,
                },
            );
        }
        let v: Value = resp.json().await.map_err(|_| UpstreamError::Transient {
            service: SERVICE,
            message: "key set is not JSON".into(),
            retry_after: None,
        })?;
        set.keys = usable_keys(&v, set.use_);
        Ok(())
    }

    async fn ensure(&self, set: &mut Set) -> Result<(), UpstreamError> {
        let stale = set.fetched.is_none_or(|t| t.elapsed() > MAX_AGE);
        if stale || (set.keys.is_empty() && self.may_refresh(set)) {
            self.refresh(set).await?;
        }
        Ok(())
    }

    /// The cooldown guards the endpoint against floods of unknown kids; after a failed
    /// fetch the set is retried sooner (once a second) so an outage heals quickly.
    fn may_refresh(&self, set: &Set) -> bool {
        let wait = if set.failed {
            self.cooldown.min(Duration::from_secs(1))
        } else {
            self.cooldown
        };
        set.fetched.is_none_or(|t| t.elapsed() >= wait)
    }
}

/// EC P-384 keys with a kid whose `use` (if present) matches; at most [`MAX_KEYS`].
pub fn usable_keys(set: &Value, use_: &str) -> Vec<Jwk> {
    let Some(keys) = set.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    keys.iter()
        .filter_map(|k| k.as_object())
        .filter(|k| {
            k.get("kty").and_then(Value::as_str) == Some("EC")
                && k.get("crv").and_then(Value::as_str) == Some("P-384")
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
    async fn transport_key(&self) -> Result<Jwk, UpstreamError> {
        let mut set = self.transport.lock().await;
        self.ensure(&mut set).await?;
        set.keys
            .choose(&mut rand::rng())
            .cloned()
            .ok_or(UpstreamError::Transient {
                service: SERVICE,
                message: "no usable transport key (EC P-384, use enc)".into(),
                retry_after: None,
            })
    }

    async fn sign_key(&self, kid: &str) -> Result<Jwk, UpstreamError> {
        let mut set = self.sign.lock().await;
        self.ensure(&mut set).await?;
        if let Some(k) = set.keys.iter().find(|k| k.key_id() == Some(kid)) {
            return Ok(k.clone());
        }
        if self.may_refresh(&set) {
            self.refresh(&mut set).await?;
            if let Some(k) = set.keys.iter().find(|k| k.key_id() == Some(kid)) {
                return Ok(k.clone());
            }
        }
        if set.failed {
            return Err(UpstreamError::Transient {
                service: SERVICE,
                message: "the sign key set could not be fetched".into(),
                retry_after: None,
            });
        }
        Err(UpstreamError::NotFound {
            service: SERVICE,
            code: "unknown_kid".into(),
            message: format!("no signing key {kid}"),
        })
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
