//! Who may call what. Callers present an Entra ID bearer token (production) or, in setups
//! without Entra, an API key (`Authorization: Bearer fcak_...` or `X-API-Key`). Either way
//! the result is a [`Caller`] with a set of [`Permission`]s; handlers ask for the one they
//! need. There is no switch that turns authentication off.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::app::AppState;
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

    /// Grants named in scopes, roles or API-key configuration. `create_request` (the scope
    /// existing clients use) grants everything.
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
}

impl Authenticator {
    pub fn new(config: &Config) -> Result<Self, String> {
        let api_keys = config
            .api_keys
            .iter()
            .map(api_key_from_config)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { api_keys })
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
        Err(ApiError::Unauthenticated {
            message: "invalid credentials".into(),
            bearer_error: "invalid_token",
        })
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
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random API key with the recognisable prefix.
pub fn generate_api_key() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    use base64::Engine;
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
