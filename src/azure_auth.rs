//! Entra credentials for Azure resources (Key Vault, Storage).

use std::sync::Arc;

use crate::config::EntraCredentialKind;

pub fn azure_credential(
    kind: EntraCredentialKind,
) -> Result<Arc<dyn azure_core::credentials::TokenCredential>, String> {
    let _ = kind;
    Err("Azure credentials are not available yet".into())
}
