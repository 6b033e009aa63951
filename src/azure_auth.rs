//! The one Entra credential stack: every token the connector presents (Microsoft Graph, Key
//! Vault, Storage, the mail trigger) comes from an `azure_identity` 1.x credential built
//! here, over the connector's own HTTP client (its extra root CA, no redirects, timeouts)
//! and against the configured login host (`ENTRA_LOGIN_ENDPOINT`, for sovereign clouds).
//!
//! * managed identity (Container Apps, App Service; IMDS elsewhere): system-assigned, or the
//!   user-assigned identity named by `AZURE_CLIENT_ID`;
//! * workload identity federation: `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_CLIENT_ID`;
//! * client secret: for Graph, the `entra-client-secret` in the secret store (read again
//!   after a 401, so a rotated secret is picked up without a restart); for Azure resources,
//!   `AZURE_CLIENT_SECRET` from the environment, since the secret that opens Key Vault cannot
//!   live in Key Vault.
//!
//! Every setting is read by `config.rs`; the managed-identity endpoint variables
//! (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), which the platform sets, are read by
//! `azure_identity` itself.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::config::{EntraConfig, EntraCredentialKind};

/// What every credential is built from.
#[derive(Clone)]
pub struct Credentials {
    kind: EntraCredentialKind,
    tenant: String,
    authority: Url,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    federated_token_file: Option<PathBuf>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("kind", &self.kind)
            .field("tenant", &self.tenant)
            .field("authority", &self.authority.as_str())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn from_config(config: &EntraConfig, http: reqwest::Client) -> Self {
        Self {
            kind: config.credential,
            tenant: config.tenant_id.clone(),
            authority: config.login_endpoint.clone(),
            client_id: config.azure_client_id.clone(),
            client_secret: config.azure_client_secret.clone(),
            federated_token_file: config.azure_federated_token_file.clone(),
            http,
        }
    }

    pub fn kind(&self) -> EntraCredentialKind {
        self.kind
    }

    /// The HTTP pipeline options: our client as transport, our login host as authority.
    fn client_options(&self) -> ClientOptions {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = self.authority.as_str().trim_end_matches('/').to_string();
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.http.clone()))),
            cloud: Some(Arc::new(CloudConfiguration::from(custom))),
            ..Default::default()
        }
    }

    /// The connector's identity for Azure resources (Key Vault, Storage, mail trigger).
    pub fn azure_resources(&self) -> Result<Arc<dyn TokenCredential>, String> {
        match self.kind {
            EntraCredentialKind::ManagedIdentity => self.managed_identity(),
            EntraCredentialKind::WorkloadIdentity => {
                let id = self.client_id.clone().ok_or_else(|| {
                    "AZURE_CLIENT_ID is not set (workload identity credential)".to_string()
                })?;
                self.workload_identity(&id)
            }
            EntraCredentialKind::ClientSecret => {
                let need = |v: &Option<String>, k: &str| {
                    v.clone().ok_or_else(|| {
                        format!("{k} is not set (client-secret credential for Azure resources)")
                    })
                };
                let id = need(&self.client_id, "AZURE_CLIENT_ID")?;
                let secret = self.client_secret.clone().ok_or_else(|| {
                    "AZURE_CLIENT_SECRET is not set (client-secret credential for Azure resources)"
                        .to_string()
                })?;
                self.client_secret(&id, &secret)
            }
        }
    }

    /// A client-secret credential for app `client_id`.
    pub fn client_secret(
        &self,
        client_id: &str,
        secret: &SecretString,
    ) -> Result<Arc<dyn TokenCredential>, String> {
        let c = ClientSecretCredential::new(
            &self.tenant,
            client_id.to_string(),
            Secret::new(secret.expose_secret().to_string()),
            Some(ClientSecretCredentialOptions {
                client_options: self.client_options(),
            }),
        )
        .map_err(|e| format!("client secret credential: {e}"))?;
        Ok(c)
    }

    /// The managed identity: user-assigned when `AZURE_CLIENT_ID` is set.
    pub fn managed_identity(&self) -> Result<Arc<dyn TokenCredential>, String> {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: self.client_id.clone().map(UserAssignedId::ClientId),
            client_options: self.client_options(),
        };
        let c = ManagedIdentityCredential::new(Some(options))
            .map_err(|e| format!("managed identity: {e}"))?;
        Ok(c)
    }

    /// Workload identity federation as app `client_id`.
    pub fn workload_identity(&self, client_id: &str) -> Result<Arc<dyn TokenCredential>, String> {
        let file = self.federated_token_file.clone().ok_or_else(|| {
            "AZURE_FEDERATED_TOKEN_FILE is not set (workload identity credential)".to_string()
        })?;
        let options = WorkloadIdentityCredentialOptions {
            credential_options: ClientAssertionCredentialOptions {
                client_options: self.client_options(),
            },
            client_id: Some(client_id.to_string()),
            tenant_id: Some(self.tenant.clone()),
            token_file_path: Some(file),
        };
        let c = WorkloadIdentityCredential::new(Some(options))
            .map_err(|e| format!("workload identity: {e}"))?;
        Ok(c)
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

/// The HTTP status of an `azure_core` error, looked for along its source chain (the
/// credentials wrap the token endpoint's answer in a credential error).
pub fn http_status(e: &azure_core::Error) -> Option<u16> {
    if let Some(s) = e.http_status() {
        return Some(u16::from(s));
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(inner) = s.downcast_ref::<azure_core::Error>() {
            if let Some(st) = inner.http_status() {
                return Some(u16::from(st));
            }
        }
        src = s.source();
    }
    None
}
