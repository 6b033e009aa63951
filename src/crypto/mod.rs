//! The JOSE wire profile between the connector and Yubico (see docs/jose-profile.md):
//! per-shipment EC P-384 response keys, JWE `ECDH-ES+A256KW`/`A256GCM` requests to a Yubico
//! transport key, and decrypt-then-verify (JWS `ES384`) of Yubico's responses.

use josekit::jwk::Jwk;
use secrecy::SecretString;
use serde_json::Value;

use crate::domain::Pin;
use crate::upstream::{AttestedCredential, YubicoKeys};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("key error: {0}")]
    Key(String),
    #[error("encryption failed: {0}")]
    Encrypt(String),
    /// Not decryptable with our key: tampered, or encrypted to another key.
    #[error("cannot decrypt response: {0}")]
    Decrypt(String),
    /// Signature, algorithm or signing key not acceptable.
    #[error("response signature rejected: {0}")]
    Verify(String),
    /// The payload is not what the profile says.
    #[error("malformed response payload: {0}")]
    Payload(String),
    /// The serial in the response differs from the one expected.
    #[error("serial number mismatch: expected {expected}, got {got}")]
    SerialMismatch { expected: u64, got: u64 },
    /// The key sets could not be fetched.
    #[error("key set unavailable: {0}")]
    KeySet(String),
}

/// A per-shipment EC P-384 response key pair. The private JWK is a secret: it lives only
/// in the secret store (`fpr-response-<kid>`) and in memory while used.
pub struct ResponseKey {
    pub kid: String,
    private_jwk: SecretString,
}

impl std::fmt::Debug for ResponseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseKey")
            .field("kid", &self.kid)
            .field("private_jwk", &"***")
            .finish()
    }
}

impl ResponseKey {
    /// A fresh key pair with `kid` = `fpr-<uuid>`.
    pub fn generate() -> Result<Self, CryptoError> {
        Err(CryptoError::Key("not implemented".into()))
    }
    /// Restores a key from the JSON private JWK kept in the secret store.
    pub fn from_private_jwk(json: SecretString) -> Result<Self, CryptoError> {
        let _ = json;
        Err(CryptoError::Key("not implemented".into()))
    }
    /// The private JWK as JSON, for the secret store.
    pub fn private_jwk_json(&self) -> &SecretString {
        &self.private_jwk
    }
    /// The public JWK (with `kid`, `use: enc`, `alg: ECDH-ES+A256KW`), sent to Yubico.
    pub fn public_jwk(&self) -> Result<Jwk, CryptoError> {
        Err(CryptoError::Key("not implemented".into()))
    }
}

/// `fido_pin_request`: `{"pin", "response_jwk"}` encrypted to `transport`.
pub fn encrypt_pin_request(
    pin: &Pin,
    response_key: &ResponseKey,
    transport: &Jwk,
) -> Result<String, CryptoError> {
    let _ = (pin, response_key, transport);
    Err(CryptoError::Encrypt("not implemented".into()))
}

/// `fido_credential_requests[0]`: `{"response_jwk", "challenge_expires_at", "public_key"}`
/// encrypted to `transport`.
pub fn encrypt_credential_request(
    response_key: &ResponseKey,
    challenge_expires_at: &str,
    public_key: &Value,
    transport: &Jwk,
) -> Result<String, CryptoError> {
    let _ = (response_key, challenge_expires_at, public_key, transport);
    Err(CryptoError::Encrypt("not implemented".into()))
}

/// A verified `fido_pin_response`.
#[derive(Debug)]
pub struct PinResponse {
    pub serial_number: u64,
    pub pin: Pin,
}

/// A verified `fido_credential_responses[0]`.
#[derive(Debug, Clone)]
pub struct CredentialResponse {
    pub serial_number: u64,
    pub credential: AttestedCredential,
}

/// Decrypts with the response key, verifies the inner JWS (ES384, sign key set) and checks
/// the serial against `expected_serial` (the one YE reports in `product_data`).
pub async fn open_pin_response(
    jwe: &str,
    response_key: &ResponseKey,
    keys: &dyn YubicoKeys,
    expected_serial: u64,
) -> Result<PinResponse, CryptoError> {
    let _ = (jwe, response_key, keys, expected_serial);
    Err(CryptoError::Decrypt("not implemented".into()))
}

/// As [`open_pin_response`], for the credential response.
pub async fn open_credential_response(
    jwe: &str,
    response_key: &ResponseKey,
    keys: &dyn YubicoKeys,
    expected_serial: u64,
) -> Result<CredentialResponse, CryptoError> {
    let _ = (jwe, response_key, keys, expected_serial);
    Err(CryptoError::Decrypt("not implemented".into()))
}
