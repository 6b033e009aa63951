//! Azure Table Storage backend.

use std::sync::Arc;

use secrecy::SecretString;

use super::StoreError;

/// How the service authenticates to the storage account.
pub enum AzureTablesAuth {
    /// Shared key (Azurite, or accounts that allow shared-key access).
    SharedKey { account: String, key: SecretString },
    /// An Entra token credential (managed identity in production).
    Token(Arc<dyn azure_core::credentials::TokenCredential>),
}

pub struct AzureTableStore;

impl AzureTableStore {
    pub async fn connect(
        endpoint: &url::Url,
        table: &str,
        auth: AzureTablesAuth,
    ) -> Result<Arc<dyn super::ShipmentStore>, StoreError> {
        let _ = (endpoint, table, auth);
        Err(StoreError::Unavailable(
            "the Azure Tables backend is not available yet".into(),
        ))
    }
}
