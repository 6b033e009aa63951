//! Who may call what: Entra bearer tokens and API keys, mapped to permissions.

use crate::config::Config;

/// Validates caller credentials. Built once from the configuration.
pub struct Authenticator {}

impl Authenticator {
    pub fn new(config: &Config) -> Result<Self, String> {
        let _ = config;
        Ok(Self {})
    }
}
