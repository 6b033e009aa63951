//! Azure Key Vault secret store.
