//! The credential Yubico's factory made on the key, as the identity provider registers it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What Yubico's factory produced for the key, as sent to `POST fido2Methods`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttestedCredential {
    /// base64url, no padding.
    pub id: String,
    pub client_data_json: String,
    pub attestation_object: String,
    pub client_extension_results: Value,
}
