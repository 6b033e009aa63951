//! The store and secrets sections: where shipments and secrets live.

use std::path::Path;
use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use super::env::{require_https, Env};
use super::{ConfigError, DEFAULT_TABLE_NAME};

/// Which shipment store backs the service.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// A SQLite file in the data directory (single machine).
    Embedded { path: PathBuf },
    /// Azure Table Storage (production, N replicas).
    AzureTables {
        endpoint: Url,
        table: String,
        /// Shared-key account name/key (Azurite, or accounts that allow shared keys).
        /// Without them the service authenticates with its Entra identity.
        account: Option<String>,
        account_key: Option<SecretString>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretBackend {
    /// One file per secret (mode 0600) under this directory.
    File { dir: PathBuf },
    /// Azure Key Vault: the static secrets in `endpoint`; the per-shipment response keys
    /// in `response_keys` when set (a vault the connector may write, the other read-only
    /// to it), else in the same vault.
    KeyVault {
        endpoint: Url,
        response_keys: Option<Url>,
    },
}

/// `AZURE_TABLES_*`, `FIDO_CONNECTOR_STORE`, `AZURE_STORAGE_ACCOUNT_*`.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// As configured (shown by `/v1/status`), whichever backend is chosen.
    pub azure_tables_endpoint: Option<Url>,
    pub table_name: String,
}

impl StoreConfig {
    pub fn load(env: &Env, data_dir: &Path) -> Result<Self, ConfigError> {
        let azure_tables_endpoint = env.url("AZURE_TABLES_ENDPOINT")?;
        if let Some(u) = &azure_tables_endpoint {
            require_https("AZURE_TABLES_ENDPOINT", u)?;
        }
        let table_name = env
            .get("AZURE_TABLES_SHIPMENTS_TABLE_NAME")
            .unwrap_or_else(|| DEFAULT_TABLE_NAME.to_string());
        validate_table_name(&table_name)?;
        let embedded = || StoreBackend::Embedded {
            path: data_dir.join("shipments.sqlite3"),
        };
        let backend = match (
            env.get("FIDO_CONNECTOR_STORE").as_deref(),
            &azure_tables_endpoint,
        ) {
            (Some("embedded"), _) | (None, None) => embedded(),
            (Some("azure") | None, Some(endpoint)) => StoreBackend::AzureTables {
                endpoint: endpoint.clone(),
                table: table_name.clone(),
                account: env.get("AZURE_STORAGE_ACCOUNT_NAME"),
                account_key: env.get("AZURE_STORAGE_ACCOUNT_KEY").map(SecretString::from),
            },
            (Some("azure"), None) => {
                return Err(ConfigError::new(
                    "AZURE_TABLES_ENDPOINT",
                    "required when FIDO_CONNECTOR_STORE=azure",
                ))
            }
            (Some(other), _) => {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_STORE",
                    format!("`{other}` must be `embedded` or `azure`"),
                ))
            }
        };
        Ok(Self {
            backend,
            azure_tables_endpoint,
            table_name,
        })
    }
}

/// `AZURE_KEY_VAULT_ENDPOINT`, `FIDO_CONNECTOR_SECRETS`.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    pub backend: SecretBackend,
    /// As configured (shown by `/v1/status`).
    pub key_vault_endpoint: Option<Url>,
}

impl SecretsConfig {
    pub fn load(env: &Env, data_dir: &Path) -> Result<Self, ConfigError> {
        let key_vault_endpoint = env.url("AZURE_KEY_VAULT_ENDPOINT")?;
        if let Some(u) = &key_vault_endpoint {
            require_https("AZURE_KEY_VAULT_ENDPOINT", u)?;
        }
        let response_keys = env.url("FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT")?;
        if let Some(u) = &response_keys {
            require_https("FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT", u)?;
            if key_vault_endpoint.is_none() {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT",
                    "needs AZURE_KEY_VAULT_ENDPOINT (the vault of the static secrets)",
                ));
            }
            if key_vault_endpoint.as_ref() == Some(u) {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_RESPONSE_KEY_VAULT_ENDPOINT",
                    "is the same vault as AZURE_KEY_VAULT_ENDPOINT: leave it unset, or name the vault the connector may write",
                ));
            }
        }
        let files = || SecretBackend::File {
            dir: data_dir.join("secrets"),
        };
        let backend = match (
            env.get("FIDO_CONNECTOR_SECRETS").as_deref(),
            &key_vault_endpoint,
        ) {
            (Some("file"), _) | (None, None) => files(),
            (Some("keyvault") | None, Some(endpoint)) => SecretBackend::KeyVault {
                endpoint: endpoint.clone(),
                response_keys: response_keys.clone(),
            },
            (Some("keyvault"), None) => {
                return Err(ConfigError::new(
                    "AZURE_KEY_VAULT_ENDPOINT",
                    "required when FIDO_CONNECTOR_SECRETS=keyvault",
                ))
            }
            (Some(other), _) => {
                return Err(ConfigError::new(
                    "FIDO_CONNECTOR_SECRETS",
                    format!("`{other}` must be `file` or `keyvault`"),
                ))
            }
        };
        Ok(Self {
            backend,
            key_vault_endpoint,
        })
    }
}

fn validate_table_name(name: &str) -> Result<(), ConfigError> {
    // Azure: 3..63 alphanumeric characters, not starting with a digit.
    let ok = (3..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            "AZURE_TABLES_SHIPMENTS_TABLE_NAME",
            format!("`{name}` must be 3..63 letters/digits starting with a letter"),
        ))
    }
}
