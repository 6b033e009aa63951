//! Where secrets live: the YE API token (`ye-api-token`), the Entra client secret
//! (`entra-client-secret`), optionally the mail endpoint (`email-api-send-endpoint`), and one
//! `fpr-response-<kid>` private JWK per open shipment.
//!
//! Backends: [`file::FileSecretStore`] (single machine: one 0600 file per secret) and
//! [`keyvault::KeyVaultSecretStore`] (Azure Key Vault).

use async_trait::async_trait;
use secrecy::SecretString;

pub mod file;
pub mod keyvault;
pub mod split;

pub const YE_API_TOKEN: &str = "ye-api-token";
pub const ENTRA_CLIENT_SECRET: &str = "entra-client-secret";
pub const EMAIL_API_SEND_ENDPOINT: &str = "email-api-send-endpoint";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Names are `[0-9a-zA-Z-]`, 1..127 characters (Key Vault's rule, applied everywhere).
    #[error("invalid secret name")]
    InvalidName,
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
    #[error("secret store error: {0}")]
    Other(String),
}

/// Key Vault's name rule, enforced by every backend.
pub fn validate_name(name: &str) -> Result<(), SecretError> {
    if (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(())
    } else {
        Err(SecretError::InvalidName)
    }
}

#[async_trait]
pub trait SecretStore: Send + Sync {
    async fn get(&self, name: &str) -> Result<Option<SecretString>, SecretError>;
    async fn set(&self, name: &str, value: &SecretString) -> Result<(), SecretError>;
    /// Deletes and purges; deleting a missing secret is not an error.
    async fn delete(&self, name: &str) -> Result<(), SecretError>;
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), SecretError>;
}
