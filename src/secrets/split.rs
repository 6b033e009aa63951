//! Two vaults with different rights: the per-shipment response keys (`fpr-response-*`),
//! which the connector writes and deletes, in one; the static secrets (the YubiEnterprise
//! token, the mail endpoint, the alert webhook …), which it only reads, in the other. A
//! one-time compromise of the connector's identity then cannot rewrite where PINs are
//! mailed or alerts go.

use async_trait::async_trait;
use secrecy::SecretString;

use super::{SecretError, SecretStore};

/// The prefix of every per-shipment response key's secret name.
pub const RESPONSE_KEY_PREFIX: &str = "fpr-response-";

/// Whether `name` is a per-shipment response key (the vault the connector writes).
pub fn is_response_key(name: &str) -> bool {
    name.starts_with(RESPONSE_KEY_PREFIX)
}

/// Routes response keys to `keys` and every other secret to `statics`.
pub struct SplitSecrets {
    pub statics: std::sync::Arc<dyn SecretStore>,
    pub keys: std::sync::Arc<dyn SecretStore>,
}

impl SplitSecrets {
    fn of(&self, name: &str) -> &dyn SecretStore {
        if is_response_key(name) {
            self.keys.as_ref()
        } else {
            self.statics.as_ref()
        }
    }
}

#[async_trait]
impl SecretStore for SplitSecrets {
    async fn get(&self, name: &str) -> Result<Option<SecretString>, SecretError> {
        self.of(name).get(name).await
    }
    async fn set(&self, name: &str, value: &SecretString) -> Result<(), SecretError> {
        self.of(name).set(name, value).await
    }
    async fn delete(&self, name: &str) -> Result<(), SecretError> {
        self.of(name).delete(name).await
    }
    async fn ping(&self) -> Result<(), SecretError> {
        self.statics.ping().await?;
        self.keys.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::file::FileSecretStore;
    use secrecy::ExposeSecret;
    use std::sync::Arc;

    #[tokio::test]
    async fn response_keys_go_to_their_vault_and_everything_else_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let statics = Arc::new(FileSecretStore::new(dir.path().join("statics")).unwrap());
        let keys = Arc::new(FileSecretStore::new(dir.path().join("keys")).unwrap());
        let split = SplitSecrets {
            statics: statics.clone(),
            keys: keys.clone(),
        };
        let response = crate::domain::shipment::response_secret_name("fpr-1234");
        assert!(is_response_key(&response), "{response}");
        split
            .set(&response, &SecretString::from("jwk"))
            .await
            .unwrap();
        split
            .set(crate::secrets::YE_API_TOKEN, &SecretString::from("token"))
            .await
            .unwrap();
        assert!(keys.get(&response).await.unwrap().is_some());
        assert!(statics.get(&response).await.unwrap().is_none());
        assert!(statics
            .get(crate::secrets::YE_API_TOKEN)
            .await
            .unwrap()
            .is_some());
        assert!(keys
            .get(crate::secrets::YE_API_TOKEN)
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            split.get(&response).await.unwrap().unwrap().expose_secret(),
            "jwk"
        );
        split.delete(&response).await.unwrap();
        assert!(keys.get(&response).await.unwrap().is_none());
    }
}
