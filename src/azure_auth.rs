//! Entra credentials for Azure resources (Key Vault, Storage), from `azure_identity` 1.x.
//!
//! * managed identity (Container Apps): system-assigned, or the user-assigned identity
//!   named by `AZURE_CLIENT_ID`;
//! * workload identity federation: `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`,
//!   `AZURE_TENANT_ID` (read by the credential itself);
//! * client secret: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` from the
//!   environment — not from the secret store, since the secret that opens Key Vault cannot
//!   live in Key Vault.

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_identity::{
    ClientSecretCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential,
};
use secrecy::{ExposeSecret, SecretString};

use crate::config::EntraCredentialKind;

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

pub fn azure_credential(kind: EntraCredentialKind) -> Result<Arc<dyn TokenCredential>, String> {
    match kind {
        EntraCredentialKind::ManagedIdentity => {
            let options = ManagedIdentityCredentialOptions {
                user_assigned_id: env("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
                ..Default::default()
            };
            let c = ManagedIdentityCredential::new(Some(options))
                .map_err(|e| format!("managed identity: {e}"))?;
            Ok(c)
        }
        EntraCredentialKind::WorkloadIdentity => {
            let c = WorkloadIdentityCredential::new(None)
                .map_err(|e| format!("workload identity: {e}"))?;
            Ok(c)
        }
        EntraCredentialKind::ClientSecret => {
            let need = |k: &str| {
                env(k).ok_or_else(|| {
                    format!("{k} is not set (client-secret credential for Azure resources)")
                })
            };
            let c = ClientSecretCredential::new(
                &need("AZURE_TENANT_ID")?,
                need("AZURE_CLIENT_ID")?,
                Secret::new(need("AZURE_CLIENT_SECRET")?),
                None,
            )
            .map_err(|e| format!("client secret credential: {e}"))?;
            Ok(c)
        }
    }
}

/// A fixed token (tests and test doubles); redacted in `Debug`.
pub struct StaticTokenCredential {
    token: SecretString,
}

impl StaticTokenCredential {
    pub fn new(token: SecretString) -> Arc<Self> {
        Arc::new(Self { token })
    }
}

impl std::fmt::Debug for StaticTokenCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticTokenCredential(***)")
    }
}

#[async_trait]
impl TokenCredential for StaticTokenCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken {
            token: Secret::new(self.token.expose_secret().to_string()),
            expires_on: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        })
    }
}
