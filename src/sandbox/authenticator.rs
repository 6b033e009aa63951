//! A software FIDO2 authenticator, the "factory" that programs a YubiKey in the simulators:
//! given Entra's `creationOptions.publicKey`, it makes a fresh P-256 credential and a
//! `packed` (self) attestation over real authenticator data, with clientDataJSON of type
//! `webauthn.create`, the given challenge and origin `https://<rp.id>`.

use serde_json::Value;

use crate::upstream::AttestedCredential;

/// Creates a credential for `public_key` (the `publicKey` object of creationOptions).
/// Returns the WebAuthn fields base64url-encoded without padding.
pub fn make_credential(public_key: &Value) -> Result<AttestedCredential, String> {
    let _ = public_key;
    Err("not implemented".into())
}
