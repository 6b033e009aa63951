//! API keys: for setups without Entra. Only their SHA-256 is configured; a presented key is
//! compared with every configured one in constant time.

use std::collections::BTreeSet;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::permission::{Caller, Permission};
use crate::config::ApiKeyConfig;

/// Prefix of every API key, so secret scanners can recognise leaked ones.
pub const API_KEY_PREFIX: &str = "fcak_";

pub(super) struct ApiKey {
    name: String,
    hash: [u8; 32],
    permissions: BTreeSet<Permission>,
}

pub(super) fn api_key_from_config(c: &ApiKeyConfig) -> Result<ApiKey, String> {
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
    crate::hex::hex(&Sha256::digest(key.as_bytes()))
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

impl ApiKey {
    /// The caller a presented key names, if it is one of `keys`.
    pub(super) fn find(keys: &[ApiKey], key: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compare against every key in constant time, without early exit.
        let mut found: Option<&ApiKey> = None;
        for k in keys {
            if bool::from(k.hash.ct_eq(&digest)) {
                found = Some(k);
            }
        }
        found.map(|k| Caller {
            subject: format!("apikey:{}", k.name),
            permissions: k.permissions.clone(),
        })
    }
}
