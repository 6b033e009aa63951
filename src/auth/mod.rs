//! Who may call what. Callers present an Entra ID access token (production) or, in setups
//! without Entra, an API key (prefix `fcak_`). Either way the result is a [`Caller`] with a
//! set of [`Permission`]s; handlers ask for the one they need. There is no switch that turns
//! authentication off.
//!
//! This module knows no HTTP: `api::auth` takes the credential from the request's headers
//! and turns an [`AuthError`] into the API's error body. The caller-token key set comes
//! through `upstream`'s one key-set fetcher and cache, over the process's one HTTP client,
//! and time from the injected clock.

use std::sync::Arc;
use std::time::Duration;

mod api_key;
mod permission;
mod token;

pub use api_key::{generate_api_key, hash_api_key, API_KEY_PREFIX};
pub use permission::{effective_permissions, Caller, Forbidden, Permission};
pub use token::{TokenValidator, LEEWAY_SECS, MAX_TOKEN_BYTES, TOKEN_CACHE_ENTRIES};

use crate::clock::Clock;
use crate::config::CallerAuthConfig;

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// None presented.
    #[error("authentication required")]
    Missing,
    /// Presented, and not valid; the reason is safe to show (it never echoes the credential).
    #[error("{0}")]
    Invalid(String),
}

/// Validates caller credentials. Built once from the configuration.
pub struct Authenticator {
    api_keys: Vec<api_key::ApiKey>,
    tokens: Option<TokenValidator>,
}

impl Authenticator {
    /// `http` is the process's outbound client, `clock` the service's clock; `cooldown`
    /// spaces key-set refreshes caused by unknown `kid`s (`FIDO_CONNECTOR_KEY_REFRESH_COOLDOWN_MS` in service).
    pub fn new(
        config: &CallerAuthConfig,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
        cooldown: Duration,
    ) -> Result<Self, String> {
        let api_keys = config
            .api_keys
            .iter()
            .map(api_key::api_key_from_config)
            .collect::<Result<Vec<_>, _>>()?;
        let tokens = if config.allowed_audiences.is_empty() {
            None
        } else {
            Some(TokenValidator::new(config, http, clock, cooldown)?)
        };
        Ok(Self { api_keys, tokens })
    }

    pub fn token_validator(&self) -> Option<&TokenValidator> {
        self.tokens.as_ref()
    }

    /// Establishes who presents `credential` (an API key or an access token).
    pub async fn authenticate(&self, credential: Option<&str>) -> Result<Caller, AuthError> {
        let Some(credential) = credential else {
            return Err(AuthError::Missing);
        };
        let invalid = || AuthError::Invalid("invalid credentials".into());
        if credential.starts_with(API_KEY_PREFIX) {
            return api_key::ApiKey::find(&self.api_keys, credential).ok_or_else(invalid);
        }
        match &self.tokens {
            Some(v) => v
                .validate(credential)
                .await
                .map_err(|why| AuthError::Invalid(format!("invalid token: {why}"))),
            None => Err(invalid()),
        }
    }
}

/// One audit line per authorised action: who, what, which shipment. Never a credential.
pub fn audit(caller: &Caller, action: &str, shipment_id: Option<&str>) {
    tracing::info!(
        target: "fido_connector::audit",
        subject = %caller.subject,
        action,
        shipment_id = shipment_id.unwrap_or(""),
        "authorised call"
    );
}
