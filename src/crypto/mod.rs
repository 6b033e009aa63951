//! The JOSE wire profile between the connector and Yubico (see docs/jose-profile.md):
//! per-shipment EC P-384 response keys, JWE `ECDH-ES+A256KW`/`A256GCM` requests to a Yubico
//! transport key, and decrypt-then-verify (JWS `ES384`) of Yubico's responses.
