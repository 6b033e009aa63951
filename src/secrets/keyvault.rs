//! Azure Key Vault secret store, on the official `azure_security_keyvault_secrets` 1.x
//! client. Delete means delete then purge: a soft-deleted response key would otherwise
//! linger for the vault's retention period. Purging answers 409 while the deletion is still
//! in progress, so it is retried briefly; a vault that forbids purging (purge protection)
//! keeps the soft-deleted secret until retention ends, which is logged, not an error.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, RequestContent, RetryOptions, Transport,
};
use azure_security_keyvault_secrets::models::SetSecretParameters;
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use secrecy::{ExposeSecret, SecretString};

use super::{validate_name, SecretError, SecretStore};

pub struct KeyVaultSecretStore {
    client: SecretClient,
}

fn status(e: &azure_core::Error) -> Option<u16> {
    e.http_status().map(u16::from)
}

fn err(e: azure_core::Error) -> SecretError {
    match status(&e) {
        Some(s) => SecretError::Other(format!("Key Vault answered {s}")),
        None => SecretError::Unavailable(format!("Key Vault: {}", e.kind())),
    }
}

impl KeyVaultSecretStore {
    /// `http` is the connector's outbound client (its timeout bounds every call, its extra
    /// root CA is trusted, redirects are not followed).
    pub fn connect(
        endpoint: &url::Url,
        credential: Arc<dyn TokenCredential>,
        http: reqwest::Client,
    ) -> Result<Arc<dyn SecretStore>, SecretError> {
        // Bounded retries: a Key Vault outage must surface within seconds, not minutes,
        // so the lifecycle can record a transient error and move on.
        let client_options = ClientOptions {
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(200),
                max_retries: 3,
                max_total_elapsed: azure_core::time::Duration::seconds(10),
                max_delay: azure_core::time::Duration::seconds(2),
            }),
            transport: Some(Transport::new(Arc::new(http))),
            ..Default::default()
        };
        // The challenge's resource must match the vault's domain; a loopback test double
        // cannot be under vault.azure.net, so only loopback relaxes the check.
        let loopback = matches!(
            endpoint.host_str(),
            Some("127.0.0.1") | Some("localhost") | Some("[::1]")
        );
        let options = SecretClientOptions {
            client_options,
            verify_challenge_resource: Some(!loopback),
            ..Default::default()
        };
        let client = SecretClient::new(endpoint.as_str(), credential, Some(options))
            .map_err(|e| SecretError::Other(e.to_string()))?;
        Ok(Arc::new(Self { client }))
    }
}

#[async_trait]
impl SecretStore for KeyVaultSecretStore {
    async fn get(&self, name: &str) -> Result<Option<SecretString>, SecretError> {
        validate_name(name)?;
        match self.client.get_secret(name, None).await {
            Ok(r) => {
                let s = r.into_model().map_err(err)?;
                Ok(s.value.map(SecretString::from))
            }
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    async fn set(&self, name: &str, value: &SecretString) -> Result<(), SecretError> {
        validate_name(name)?;
        let params = SetSecretParameters {
            value: Some(value.expose_secret().to_string()),
            ..Default::default()
        };
        let body: RequestContent<SetSecretParameters> = params
            .try_into()
            .map_err(|e: azure_core::Error| SecretError::Other(e.to_string()))?;
        self.client
            .set_secret(name, body, None)
            .await
            .map(|_| ())
            .map_err(err)
    }

    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        validate_name(name)?;
        match self.client.delete_secret(name, None).await {
            Ok(_) => {}
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(err(e)),
        }
        // 409 while Key Vault is still deleting: tried again, spaced, for a few seconds.
        let policy = crate::backoff::Policy {
            attempts: 10,
            budget: Duration::from_secs(15),
            base: Duration::from_millis(200),
            cap: Duration::from_secs(2),
        };
        let purged = crate::backoff::retry(policy, || async {
            match self.client.purge_deleted_secret(name, None).await {
                Ok(_) => Ok(()),
                Err(e) if status(&e) == Some(404) => Ok(()),
                Err(e) if status(&e) == Some(409) => Err(Purge::Deleting),
                Err(e) if status(&e) == Some(403) => {
                    tracing::warn!(
                        secret = name,
                        "purge not permitted; the secret stays soft-deleted until retention ends"
                    );
                    Ok(())
                }
                Err(e) => Err(Purge::Failed(err(e))),
            }
        })
        .await;
        match purged {
            Ok(()) => Ok(()),
            Err(Purge::Deleting) => Err(SecretError::Unavailable(
                "Key Vault did not finish deleting in time".into(),
            )),
            Err(Purge::Failed(e)) => Err(e),
        }
    }

    async fn ping(&self) -> Result<(), SecretError> {
        match self
            .client
            .get_secret("fido-connector-readiness-probe", None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status(&e) == Some(404) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }
}

/// A purge attempt that did not end it.
enum Purge {
    /// 409: the deletion is still in progress.
    Deleting,
    Failed(SecretError),
}

impl crate::backoff::Retryable for Purge {
    fn retry_hint(&self) -> Option<Option<Duration>> {
        matches!(self, Purge::Deleting).then_some(None)
    }
}
