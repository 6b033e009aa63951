//! Clients of the systems the connector talks to, each behind a narrow trait so the
//! lifecycle can be driven against doubles and the real clients against the simulators:
//! YubiEnterprise ([`YubiEnterprise`]), Entra/Graph ([`IdentityProvider`]), the PIN mail relay
//! ([`Mailer`]) and Yubico's JWKS ([`jwks::JwksCache`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::domain::AttestedCredential;
use crate::domain::{Pin, UserId};

pub mod alert;
pub mod entra;
pub mod http;
pub mod jwks;
pub mod keyset;
pub mod mail;
pub mod okta;
pub mod pace;
pub mod ye;

/// What went wrong talking to an upstream. The lifecycle branches on the variant:
/// `Transient` is retried later, everything else is terminal for the step.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream refused our credentials (YE 401: surfaces to our caller as 401).
    #[error("{service}: unauthorized")]
    Unauthorized { service: &'static str },
    /// The thing asked for does not exist (Graph `Request_ResourceNotFound`, YE 404).
    #[error("{service}: not found: {message}")]
    NotFound {
        service: &'static str,
        code: String,
        message: String,
    },
    /// A 4xx answer other than 401/404/408/429: the request itself was refused.
    #[error("{service}: rejected ({status} {code}): {message}")]
    Rejected {
        service: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// Timeouts, connection errors, 5xx, 429: worth trying again later.
    #[error("{service}: temporarily unavailable: {message}")]
    Transient {
        service: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The upstream stated its pace (429, or 503 with `Retry-After`), or this process is
    /// holding its calls to it until then: nothing was done. Not the call's failure: call
    /// again after `retry_after`.
    #[error("{service}: rate limited for {}s", retry_after.as_secs().max(1))]
    Throttled {
        service: &'static str,
        retry_after: Duration,
    },
    /// A request that creates something got no answer that says whether it did (a timeout
    /// after sending, a connection lost mid-answer, 500/502/504): never retried blindly.
    #[error("{service}: outcome unknown: {message}")]
    OutcomeUnknown {
        service: &'static str,
        message: String,
    },
    /// The answer could not be understood or verified (bad JSON, bad signature, ...).
    #[error("{service}: invalid answer: {message}")]
    Invalid {
        service: &'static str,
        message: String,
    },
}

impl UpstreamError {
    /// Worth calling again later: an outage, or the upstream's pace.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Transient { .. } | UpstreamError::Throttled { .. }
        )
    }
}

// ---------------------------------------------------------------- YubiEnterprise

/// A YE FPR shipment as read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YeShipment {
    pub shipment_id: String,
    pub shipment_state_id: i64,
    /// `shipment_items[0].product_data[0]`, present once the key is programmed (103/104).
    pub product_data: Option<ProductData>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductData {
    pub serial_number: u64,
    pub firmware_version: Option<String>,
    /// Compact JWE.
    pub fido_pin_response: Option<String>,
    /// Compact JWEs.
    pub fido_credential_responses: Vec<String>,
}

#[async_trait]
pub trait YubiEnterprise: Send + Sync {
    /// `POST {base}/fpr/shipments` with the body built by `ShipmentRequest::ye_body`.
    /// Never retried blindly: a second POST would be a second shipment.
    async fn create_shipment(&self, body: &Value) -> Result<YeShipment, UpstreamError>;
    /// `GET {base}/fpr/shipments/{id}`.
    async fn get_shipment(&self, shipment_id: &str) -> Result<YeShipment, UpstreamError>;
}

// ---------------------------------------------------------------- Entra / Graph

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntraUser {
    /// Object id.
    pub id: String,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    /// `accountEnabled` (Graph returns it only when named in `$select`).
    pub account_enabled: Option<bool>,
    /// `userType`: `Member` or `Guest`.
    pub user_type: Option<String>,
    pub mail: Option<String>,
}

/// The tenant's passkey (FIDO2) method policy: Graph's
/// `fido2AuthenticationMethodConfiguration`, the parts the pre-flight checks read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fido2Policy {
    /// `state == "enabled"`.
    pub enabled: bool,
    pub self_service_registration: bool,
    /// `includeTargets`: (`targetType`, `id`); the id `all_users` targets everyone.
    pub include_targets: Vec<(String, String)>,
    /// `excludeTargets`: (`targetType`, `id`).
    pub exclude_targets: Vec<(String, String)>,
    pub key_restrictions: Option<KeyRestrictions>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRestrictions {
    pub enforced: bool,
    /// `allow` or `block`.
    pub enforcement_type: String,
    /// Lower-cased AAGUIDs.
    pub aaguids: Vec<String>,
}

/// Entra's `creationOptions` answer, `@odata.*` keys stripped, `value` wrapper removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreationOptions {
    pub challenge_timeout: DateTime<Utc>,
    /// The `publicKey` object as received (minus `@odata.*` keys).
    pub public_key: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fido2Method {
    pub id: String,
    pub display_name: Option<String>,
}

#[async_trait]
pub trait IdentityProvider: Send + Sync {
    /// `GET /{ver}/users/{id}`; a missing user is `NotFound`.
    async fn get_user(&self, user: &UserId) -> Result<EntraUser, UpstreamError>;
    async fn creation_options(
        &self,
        user_object_id: &str,
    ) -> Result<CreationOptions, UpstreamError>;
    /// `POST /{ver}/users/{id}/authentication/fido2Methods`. Never retried blindly.
    async fn register(
        &self,
        user_object_id: &str,
        display_name: &str,
        credential: &AttestedCredential,
    ) -> Result<Fido2Method, UpstreamError>;
    async fn list_methods(&self, user_object_id: &str) -> Result<Vec<Fido2Method>, UpstreamError>;
    /// `GET /{ver}/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2`
    /// (cached by the client for a few minutes).
    async fn fido2_policy(&self) -> Result<Fido2Policy, UpstreamError>;
    /// `POST /{ver}/users/{id}/checkMemberGroups`: which of `group_ids` (at most 20) the
    /// user is a member of, transitively.
    async fn member_groups(
        &self,
        user_object_id: &str,
        group_ids: &[String],
    ) -> Result<Vec<String>, UpstreamError>;
}

// ---------------------------------------------------------------- mail

/// The PIN mail. `message_id` is the relay's de-duplication key.
#[derive(Debug, Clone)]
pub struct PinMail {
    pub shipment_id: String,
    pub user_id: String,
    pub emails_to: Vec<String>,
    pub serial_number: u64,
    pub yubikey_name: Option<String>,
    pub pin: Pin,
    pub message_id: String,
}

impl PinMail {
    /// The PIN mail of a shipment: its recipients, user and key name come from the record.
    pub fn for_record(
        rec: &crate::domain::ShipmentRecord,
        shipment_id: &str,
        serial_number: u64,
        pin: Pin,
        message_id: String,
    ) -> Self {
        PinMail {
            shipment_id: shipment_id.to_string(),
            user_id: rec.user_id.clone(),
            emails_to: rec.emails_to.clone(),
            serial_number,
            yubikey_name: rec.yubikey_name.clone(),
            pin,
            message_id,
        }
    }

    pub fn initial_message_id(shipment_id: &str) -> String {
        format!("{shipment_id}/pin/initial")
    }
    pub fn resend_message_id(shipment_id: &str) -> String {
        format!("{shipment_id}/pin/resend/{}", uuid::Uuid::new_v4())
    }
}

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send_pin(&self, mail: &PinMail) -> Result<(), UpstreamError>;
}

// ---------------------------------------------------------------- Yubico key sets

pub use crate::crypto::YubicoKeys;

impl crate::crypto::KeySourceError for UpstreamError {
    fn failure(&self) -> crate::crypto::KeyLookupFailure {
        use crate::crypto::KeyLookupFailure;
        match self {
            UpstreamError::NotFound { .. } => KeyLookupFailure::UnknownKid,
            UpstreamError::Invalid { .. } => KeyLookupFailure::UnusableKey,
            _ => KeyLookupFailure::Unavailable,
        }
    }
}
