//! The JOSE wire profile between the connector and Yubico (see docs/jose-profile.md):
//! per-shipment EC P-384 response keys, JWE `ECDH-ES+A256KW`/`A256GCM` requests to a Yubico
//! transport key, and decrypt-then-verify (JWS `ES384`) of Yubico's responses.

use base64::Engine;
use josekit::jwe::{JweHeader, ECDH_ES_A256KW};
use josekit::jwk::alg::ec::EcCurve;
use josekit::jwk::Jwk;
use josekit::jws::{JwsHeader, ES384};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::domain::{AttestedCredential, Pin};

// ---------------------------------------------------------------- Yubico key sets

/// Yubico's published key sets: transport keys (encrypt requests to Yubico) and sign keys
/// (verify Yubico's responses). `upstream::jwks::JwksCache` fetches and caches them; the
/// profile only needs these lookups, so it names no HTTP or upstream type.
#[async_trait::async_trait]
pub trait YubicoKeys: Send + Sync {
    /// The source's own error; the profile reads only its [`KeySourceError::failure`].
    type Error: KeySourceError;
    /// A usable transport key (EC P-384, `use: enc`), chosen at random among them, parsed
    /// and ready to encrypt to.
    async fn transport_key(&self) -> Result<TransportKey, Self::Error>;
    /// The sign key with this `kid` (refreshing the set once, with a cooldown, if unknown).
    async fn sign_key(&self, kid: &str) -> Result<Jwk, Self::Error>;
    /// Every usable sign key (public JWKs), for a provider that verifies Yubico's
    /// responses itself (Okta's `activate` takes them as `yubicoSigningJwks`).
    async fn sign_keys(&self) -> Result<Vec<Jwk>, Self::Error>;
    /// An ES384 verifier for the sign key `kid` (a cache builds it once per key: building
    /// one checks the key, which costs about a third of a verification).
    async fn sign_verifier(
        &self,
        kid: &str,
    ) -> Result<std::sync::Arc<josekit::jws::alg::ecdsa::EcdsaJwsVerifier>, Self::Error>;
}

/// What a failed key lookup means to the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLookupFailure {
    /// The set, fetched again, has no key with this `kid` (not yet published, or never).
    UnknownKid,
    /// The key is there but is not a usable EC P-384 key.
    UnusableKey,
    /// The set could not be had just now.
    Unavailable,
}

pub trait KeySourceError: std::fmt::Display + Send + Sync + 'static {
    fn failure(&self) -> KeyLookupFailure;
}

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
    /// The response names a signing key the published set lacks, after a refresh: Yubico
    /// may publish it late, or the answer is forged or broken.
    #[error("signing key {0} is not published (yet)")]
    UnpublishedSigningKey(String),
}

/// What a [`CryptoError`] means for the work that met it: the one classification the
/// lifecycle maps to outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoFailure {
    /// Yubico's key sets could not be had, or lack the key yet: try again later.
    KeysUnavailable,
    /// Our own keys or encryption failed: an internal error.
    Local,
    /// A response from Yubico does not open, verify or parse: a bad upstream answer.
    BadResponse,
}

impl CryptoError {
    pub fn failure(&self) -> CryptoFailure {
        match self {
            CryptoError::KeySet(_) | CryptoError::UnpublishedSigningKey(_) => {
                CryptoFailure::KeysUnavailable
            }
            CryptoError::Key(_) | CryptoError::Encrypt(_) => CryptoFailure::Local,
            CryptoError::Decrypt(_)
            | CryptoError::Verify(_)
            | CryptoError::Payload(_)
            | CryptoError::SerialMismatch { .. } => CryptoFailure::BadResponse,
        }
    }
}

/// A per-shipment EC P-384 response key pair. The private JWK is a secret: it lives only
/// in the secret store (`fpr-response-<kid>`) and in memory while used. The public JWK is
/// kept beside it, and the OpenSSL key is parsed once, on the first decryption (parsing
/// it costs about a tenth of a shipment's cryptography, and both responses use it).
pub struct ResponseKey {
    pub kid: String,
    private_jwk: SecretString,
    public: Jwk,
    decrypter: std::sync::OnceLock<josekit::jwe::alg::ecdh_es::EcdhEsJweDecrypter>,
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
        let kid = format!("fpr-{}", uuid::Uuid::new_v4());
        let mut jwk = Jwk::generate_ec_key(EcCurve::P384).map_err(key)?;
        jwk.set_key_id(&kid);
        jwk.set_key_use("enc");
        jwk.set_algorithm(JWE_ALG);
        Ok(Self {
            kid,
            public: public_of(&jwk)?,
            private_jwk: SecretString::from(jwk.to_string()),
            decrypter: std::sync::OnceLock::new(),
        })
    }

    /// Restores a key from the JSON private JWK kept in the secret store.
    pub fn from_private_jwk(json: SecretString) -> Result<Self, CryptoError> {
        let jwk = Jwk::from_bytes(json.expose_secret().as_bytes()).map_err(key)?;
        check_ec_p384(&jwk)?;
        if jwk.parameter("d").is_none() {
            return Err(CryptoError::Key("not a private key".into()));
        }
        let kid = jwk
            .key_id()
            .ok_or_else(|| CryptoError::Key("response key has no kid".into()))?
            .to_string();
        Ok(Self {
            kid,
            public: public_of(&jwk)?,
            private_jwk: json,
            decrypter: std::sync::OnceLock::new(),
        })
    }

    /// The private JWK as JSON, for the secret store.
    pub fn private_jwk_json(&self) -> &SecretString {
        &self.private_jwk
    }

    /// The public JWK (with `kid`, `use: enc`, `alg: ECDH-ES+A256KW`), sent to Yubico.
    pub fn public_jwk(&self) -> Result<Jwk, CryptoError> {
        Ok(self.public.clone())
    }

    /// Decrypts a response JWE sent to this key (see [`decrypt_with`] for the checks).
    pub fn decrypt(&self, jwe: &str) -> Result<Vec<u8>, CryptoError> {
        check_jwe_header(jwe, Some(&self.kid))?;
        let decrypter = match self.decrypter.get() {
            Some(d) => d,
            None => {
                let jwk =
                    Jwk::from_bytes(self.private_jwk.expose_secret().as_bytes()).map_err(key)?;
                let d = ECDH_ES_A256KW
                    .decrypter_from_jwk(&jwk)
                    .map_err(|e| CryptoError::Key(e.to_string()))?;
                self.decrypter.get_or_init(|| d)
            }
        };
        open_jwe(jwe, decrypter)
    }
}

/// Decrypts a compact JWE whose header was checked ([`check_jwe_header`]).
fn open_jwe(
    jwe: &str,
    decrypter: &josekit::jwe::alg::ecdh_es::EcdhEsJweDecrypter,
) -> Result<Vec<u8>, CryptoError> {
    josekit::jwe::deserialize_compact(jwe, decrypter)
        .map(|(payload, _)| payload)
        .map_err(|_| CryptoError::Decrypt("authentication failed".into()))
}

/// A Yubico transport key ready to encrypt to: the OpenSSL public key is parsed once, when
/// the key set is fetched, not for every request.
#[derive(Clone)]
pub struct TransportKey {
    jwk: Jwk,
    encrypter: josekit::jwe::alg::ecdh_es::EcdhEsJweEncrypter,
}

impl std::fmt::Debug for TransportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportKey")
            .field("kid", &self.jwk.key_id())
            .finish()
    }
}

impl TransportKey {
    /// Checks an EC P-384 public JWK with a kid and parses it for encryption.
    pub fn new(jwk: Jwk) -> Result<Self, CryptoError> {
        check_ec_p384(&jwk)?;
        if jwk.key_id().is_none() {
            return Err(CryptoError::Encrypt("recipient key has no kid".into()));
        }
        let encrypter = ECDH_ES_A256KW
            .encrypter_from_jwk(&jwk)
            .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
        Ok(Self { jwk, encrypter })
    }

    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub fn key_id(&self) -> Option<&str> {
        self.jwk.key_id()
    }

    /// Encrypts `plaintext` to this key as a compact JWE (`ECDH-ES+A256KW`, `A256GCM`).
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        let mut header = JweHeader::new();
        header.set_content_encryption(JWE_ENC);
        if let Some(kid) = self.jwk.key_id() {
            header.set_key_id(kid);
        }
        josekit::jwe::serialize_compact(plaintext, &header, &self.encrypter)
            .map_err(|e| CryptoError::Encrypt(e.to_string()))
    }
}

/// The public half of a key, keeping `kid`, `use` and `alg` (josekit drops them).
pub fn public_of(jwk: &Jwk) -> Result<Jwk, CryptoError> {
    let mut p = jwk.to_public_key().map_err(key)?;
    if let Some(kid) = jwk.key_id() {
        p.set_key_id(kid);
    }
    if let Some(u) = jwk.key_use() {
        p.set_key_use(u);
    }
    if let Some(a) = jwk.algorithm() {
        p.set_algorithm(a);
    }
    Ok(p)
}

pub const JWE_ALG: &str = "ECDH-ES+A256KW";
pub const JWE_ENC: &str = "A256GCM";
pub const JWS_ALG: &str = "ES384";

fn key(e: impl std::fmt::Display) -> CryptoError {
    CryptoError::Key(e.to_string())
}

fn check_ec_p384(jwk: &Jwk) -> Result<(), CryptoError> {
    if jwk.key_type() != "EC" || jwk.curve() != Some("P-384") {
        return Err(CryptoError::Key("key is not EC P-384".into()));
    }
    Ok(())
}

/// Reads a compact JOSE object's protected header without trusting anything in it.
fn protected_header(compact: &str, parts: usize) -> Result<serde_json::Map<String, Value>, String> {
    let segs: Vec<&str> = compact.split('.').collect();
    if segs.len() != parts {
        return Err(format!(
            "expected {parts} compact segments, found {}",
            segs.len()
        ));
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segs[0])
        .map_err(|_| "header is not base64url".to_string())?;
    match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err("header is not a JSON object".into()),
    }
}

fn header_str<'a>(h: &'a serde_json::Map<String, Value>, k: &str) -> Option<&'a str> {
    h.get(k).and_then(Value::as_str)
}

/// Encrypts `plaintext` to `recipient` (an EC P-384 public JWK with a kid).
pub fn encrypt_to(plaintext: &[u8], recipient: &Jwk) -> Result<String, CryptoError> {
    TransportKey::new(recipient.clone())?.encrypt(plaintext)
}

/// Checks a compact JWE's header names exactly the profile's algorithms, no compression,
/// and (when given) the expected recipient kid.
fn check_jwe_header(jwe: &str, kid: Option<&str>) -> Result<(), CryptoError> {
    let h = protected_header(jwe, 5).map_err(CryptoError::Decrypt)?;
    if header_str(&h, "alg") != Some(JWE_ALG) || header_str(&h, "enc") != Some(JWE_ENC) {
        return Err(CryptoError::Decrypt(format!(
            "algorithm must be {JWE_ALG}/{JWE_ENC}"
        )));
    }
    if h.contains_key("zip") {
        return Err(CryptoError::Decrypt(
            "compressed JWEs are not accepted".into(),
        ));
    }
    if header_str(&h, "kid") != kid {
        return Err(CryptoError::Decrypt(
            "encrypted to another key (kid mismatch)".into(),
        ));
    }
    Ok(())
}

/// Decrypts a compact JWE with `private` after checking its header names exactly the
/// profile's algorithms and `private`'s kid.
pub fn decrypt_with(jwe: &str, private: &Jwk) -> Result<Vec<u8>, CryptoError> {
    check_jwe_header(jwe, private.key_id())?;
    let decrypter = ECDH_ES_A256KW
        .decrypter_from_jwk(private)
        .map_err(|e| CryptoError::Key(e.to_string()))?;
    open_jwe(jwe, &decrypter)
}

/// Signs `payload` with `signer` (EC P-384 private JWK with a kid) as a compact ES384 JWS.
pub fn sign_with(payload: &[u8], signer: &Jwk) -> Result<String, CryptoError> {
    let kid = signer
        .key_id()
        .ok_or_else(|| CryptoError::Key("signing key has no kid".into()))?;
    let mut header = JwsHeader::new();
    header.set_key_id(kid);
    let s = ES384.signer_from_jwk(signer).map_err(key)?;
    josekit::jws::serialize_compact(payload, &header, &s).map_err(key)
}

/// An ES384 verifier for an EC P-384 public key.
pub fn es384_verifier(
    jwk: &Jwk,
) -> Result<josekit::jws::alg::ecdsa::EcdsaJwsVerifier, CryptoError> {
    check_ec_p384(jwk).map_err(|_| CryptoError::Verify("signing key is not EC P-384".into()))?;
    ES384
        .verifier_from_jwk(jwk)
        .map_err(|e| CryptoError::Verify(e.to_string()))
}

/// Verifies a compact JWS: `ES384` only, signed by the key its `kid` names in the sign set.
pub async fn verify_signed<K: YubicoKeys + ?Sized>(
    jws: &str,
    keys: &K,
) -> Result<Value, CryptoError> {
    let h = protected_header(jws, 3).map_err(CryptoError::Verify)?;
    if header_str(&h, "alg") != Some(JWS_ALG) {
        return Err(CryptoError::Verify(format!("algorithm must be {JWS_ALG}")));
    }
    if h.contains_key("crit")
        || h.contains_key("jwk")
        || h.contains_key("jku")
        || h.contains_key("x5u")
    {
        return Err(CryptoError::Verify("unsupported header parameters".into()));
    }
    let kid = header_str(&h, "kid").ok_or_else(|| CryptoError::Verify("no kid".into()))?;
    // A kid not (yet) in the published set is a key-set matter, retried later: Yubico may
    // have rotated since the set was fetched.
    let verifier = keys
        .sign_verifier(kid)
        .await
        .map_err(|e| match e.failure() {
            KeyLookupFailure::UnknownKid => CryptoError::UnpublishedSigningKey(kid.to_string()),
            KeyLookupFailure::UnusableKey => {
                CryptoError::Verify("signing key is not EC P-384".into())
            }
            KeyLookupFailure::Unavailable => CryptoError::KeySet(e.to_string()),
        })?;
    let (payload, _) = josekit::jws::deserialize_compact(jws, verifier.as_ref())
        .map_err(|_| CryptoError::Verify("bad signature".into()))?;
    // The payload may carry the PIN: wipe the decoded bytes once parsed.
    let payload = zeroize::Zeroizing::new(payload);
    serde_json::from_slice(&payload).map_err(|e| CryptoError::Payload(e.to_string()))
}

/// `fido_pin_request`: `{"pin", "response_jwk"}` encrypted to `transport`.
pub fn encrypt_pin_request(
    pin: &Pin,
    response_key: &ResponseKey,
    transport: &TransportKey,
) -> Result<String, CryptoError> {
    // Serialized from borrowed fields: no JSON value holds a copy of the PIN, and the one
    // buffer that does is wiped after encryption.
    #[derive(serde::Serialize)]
    struct PinRequest<'a> {
        pin: &'a str,
        response_jwk: &'a serde_json::Map<String, Value>,
    }
    let body = zeroize::Zeroizing::new(
        serde_json::to_vec(&PinRequest {
            pin: pin.expose(),
            response_jwk: response_key.public.as_ref(),
        })
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?,
    );
    transport.encrypt(&body)
}

/// `fido_credential_requests[0]`: `{"response_jwk", "challenge_expires_at", "public_key"}`
/// encrypted to `transport`.
pub fn encrypt_credential_request(
    response_key: &ResponseKey,
    challenge_expires_at: &str,
    public_key: &Value,
    transport: &TransportKey,
) -> Result<String, CryptoError> {
    let body = serde_json::to_vec(&serde_json::json!({
        "response_jwk": response_key.public.as_ref(),
        "challenge_expires_at": challenge_expires_at,
        "public_key": public_key,
    }))
    .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    transport.encrypt(&body)
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

async fn open<K: YubicoKeys + ?Sized>(
    jwe: &str,
    response_key: &ResponseKey,
    keys: &K,
    expected_serial: u64,
) -> Result<Value, CryptoError> {
    let inner = zeroize::Zeroizing::new(response_key.decrypt(jwe)?);
    let jws = std::str::from_utf8(&inner)
        .map_err(|_| CryptoError::Payload("inner JWS is not text".into()))?;
    let payload = verify_signed(jws.trim(), keys).await?;
    let got = payload
        .get("serial_number")
        .and_then(Value::as_u64)
        .ok_or_else(|| CryptoError::Payload("serial_number missing".into()))?;
    if got != expected_serial {
        return Err(CryptoError::SerialMismatch {
            expected: expected_serial,
            got,
        });
    }
    Ok(payload)
}

/// Decrypts with the response key, verifies the inner JWS (ES384, sign key set) and checks
/// the serial against `expected_serial` (the one YE reports in `product_data`).
pub async fn open_pin_response<K: YubicoKeys + ?Sized>(
    jwe: &str,
    response_key: &ResponseKey,
    keys: &K,
    expected_serial: u64,
) -> Result<PinResponse, CryptoError> {
    let mut payload = open(jwe, response_key, keys, expected_serial).await?;
    let pin = payload
        .get("pin")
        .and_then(Value::as_str)
        .and_then(Pin::from_digits)
        .ok_or_else(|| CryptoError::Payload("pin missing or not 4..63 digits".into()));
    // Scrub the PIN from the parsed JSON before it is dropped.
    if let Some(Value::String(s)) = payload.get_mut("pin") {
        zeroize::Zeroize::zeroize(s);
    }
    Ok(PinResponse {
        serial_number: expected_serial,
        pin: pin?,
    })
}

/// As [`open_pin_response`], for the credential response.
pub async fn open_credential_response<K: YubicoKeys + ?Sized>(
    jwe: &str,
    response_key: &ResponseKey,
    keys: &K,
    expected_serial: u64,
) -> Result<CredentialResponse, CryptoError> {
    let payload = open(jwe, response_key, keys, expected_serial).await?;
    let c = payload
        .get("credential")
        .and_then(Value::as_object)
        .ok_or_else(|| CryptoError::Payload("credential missing".into()))?;
    let field = |k: &str| -> Result<String, CryptoError> {
        let v = c
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| CryptoError::Payload(format!("credential.{k} missing")))?;
        // Must be base64url (no padding) as Graph expects.
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v)
            .map_err(|_| CryptoError::Payload(format!("credential.{k} is not base64url")))?;
        Ok(v.to_string())
    };
    Ok(CredentialResponse {
        serial_number: expected_serial,
        credential: AttestedCredential {
            id: field("id")?,
            client_data_json: field("clientDataJSON")?,
            attestation_object: field("attestationObject")?,
            client_extension_results: c
                .get("clientExtensionResults")
                .cloned()
                .unwrap_or_else(|| serde_json::json!({})),
        },
    })
}

/// The Yubico side of the profile, used by the YubiEnterprise simulator and tests:
/// decrypting requests with a transport key and sealing responses (sign, then encrypt).
pub mod yubico_side {
    use super::*;

    /// Decrypts a request JWE with the transport private key and parses its JSON.
    pub fn decrypt_request(jwe: &str, transport_private: &Jwk) -> Result<Value, CryptoError> {
        let raw = zeroize::Zeroizing::new(decrypt_with(jwe, transport_private)?);
        serde_json::from_slice(&raw).map_err(|e| CryptoError::Payload(e.to_string()))
    }

    /// Signs `payload` (ES384, `sign_key`) and encrypts the JWS to `response_public`.
    pub fn seal_response(
        payload: &Value,
        sign_key: &Jwk,
        response_public: &Jwk,
    ) -> Result<String, CryptoError> {
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(payload).map_err(|e| CryptoError::Encrypt(e.to_string()))?,
        );
        let jws = sign_with(&body, sign_key)?;
        encrypt_to(jws.as_bytes(), response_public)
    }

    /// A fresh EC P-384 key for a key set, with kid and use.
    pub fn new_key(kid: &str, use_: &str) -> Result<Jwk, CryptoError> {
        let mut jwk = Jwk::generate_ec_key(EcCurve::P384).map_err(key)?;
        jwk.set_key_id(kid);
        jwk.set_key_use(use_);
        if use_ == "sig" {
            jwk.set_algorithm(JWS_ALG);
        }
        Ok(jwk)
    }
}

#[cfg(test)]
mod tests {
    use super::yubico_side::*;
    use super::*;
    use crate::upstream::UpstreamError;
    use async_trait::async_trait;

    struct Keys {
        transport: Jwk,
        sign: Vec<Jwk>,
    }

    #[async_trait]
    impl YubicoKeys for Keys {
        type Error = UpstreamError;
        async fn sign_verifier(
            &self,
            kid: &str,
        ) -> Result<std::sync::Arc<josekit::jws::alg::ecdsa::EcdsaJwsVerifier>, UpstreamError>
        {
            let jwk = self.sign_key(kid).await?;
            es384_verifier(&jwk)
                .map(std::sync::Arc::new)
                .map_err(|e| UpstreamError::Invalid {
                    service: "test",
                    message: e.to_string(),
                })
        }
        async fn sign_keys(&self) -> Result<Vec<Jwk>, UpstreamError> {
            Ok(self.sign.iter().map(|k| public_of(k).unwrap()).collect())
        }
        async fn transport_key(&self) -> Result<TransportKey, UpstreamError> {
            public_of(&self.transport)
                .and_then(TransportKey::new)
                .map_err(|e| UpstreamError::Invalid {
                    service: "test",
                    message: e.to_string(),
                })
        }
        async fn sign_key(&self, kid: &str) -> Result<Jwk, UpstreamError> {
            self.sign
                .iter()
                .find(|k| k.key_id() == Some(kid))
                .map(|k| public_of(k).unwrap())
                .ok_or(UpstreamError::NotFound {
                    service: "test",
                    code: "kid".into(),
                    message: kid.into(),
                })
        }
    }

    fn setup() -> (Keys, Jwk, Jwk) {
        let transport = new_key("t1", "enc").unwrap();
        let sign = new_key("s1", "sig").unwrap();
        (
            Keys {
                transport: transport.clone(),
                sign: vec![sign.clone()],
            },
            transport,
            sign,
        )
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[tokio::test]
    async fn pin_request_and_response_round_trip() {
        let (keys, transport, sign) = setup();
        let rk = ResponseKey::generate().unwrap();
        assert!(rk.kid.starts_with("fpr-"));
        let pin = Pin::generate(8);
        let jwe = encrypt_pin_request(&pin, &rk, &keys.transport_key().await.unwrap()).unwrap();
        assert!(!jwe.contains(pin.expose()));
        let req = decrypt_request(&jwe, &transport).unwrap();
        assert_eq!(req["pin"], pin.expose());
        assert_eq!(req["response_jwk"]["kid"], rk.kid.as_str());
        assert!(
            req["response_jwk"].get("d").is_none(),
            "private part leaked"
        );

        let response_public =
            Jwk::from_map(req["response_jwk"].as_object().unwrap().clone()).unwrap();
        let sealed = seal_response(
            &serde_json::json!({"serial_number": 12345678, "pin": pin.expose()}),
            &sign,
            &response_public,
        )
        .unwrap();
        // Restored from the secret store's JSON, as the lifecycle does.
        let restored = ResponseKey::from_private_jwk(rk.private_jwk_json().clone()).unwrap();
        let opened = open_pin_response(&sealed, &restored, &keys, 12345678)
            .await
            .unwrap();
        assert_eq!(opened.pin, pin);
        assert_eq!(opened.serial_number, 12345678);
    }

    #[tokio::test]
    async fn credential_response_round_trip_and_serial_mismatch() {
        let (keys, _transport, sign) = setup();
        let rk = ResponseKey::generate().unwrap();
        let payload = serde_json::json!({"serial_number": 7, "credential": {
            "id": b64(b"id"), "clientDataJSON": b64(b"{}"), "attestationObject": b64(b"ao"),
            "clientExtensionResults": {}}});
        let sealed = seal_response(&payload, &sign, &rk.public_jwk().unwrap()).unwrap();
        let c = open_credential_response(&sealed, &rk, &keys, 7)
            .await
            .unwrap();
        assert_eq!(c.credential.id, b64(b"id"));
        let e = open_credential_response(&sealed, &rk, &keys, 8)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            CryptoError::SerialMismatch {
                expected: 8,
                got: 7
            }
        );
    }

    #[tokio::test]
    async fn a_response_for_another_shipment_is_refused() {
        let (keys, _t, sign) = setup();
        let mine = ResponseKey::generate().unwrap();
        let other = ResponseKey::generate().unwrap();
        let sealed = seal_response(
            &serde_json::json!({"serial_number": 1, "pin": "1234"}),
            &sign,
            &other.public_jwk().unwrap(),
        )
        .unwrap();
        let e = open_pin_response(&sealed, &mine, &keys, 1)
            .await
            .unwrap_err();
        assert!(matches!(e, CryptoError::Decrypt(_)), "{e:?}");
    }

    #[tokio::test]
    async fn tampered_ciphertext_and_signature_are_refused() {
        let (keys, _t, sign) = setup();
        let rk = ResponseKey::generate().unwrap();
        let payload = serde_json::json!({"serial_number": 1, "pin": "1234"});
        let sealed = seal_response(&payload, &sign, &rk.public_jwk().unwrap()).unwrap();
        let mut parts: Vec<String> = sealed.split('.').map(str::to_string).collect();
        let mut ct = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[3])
            .unwrap();
        ct[0] ^= 1;
        parts[3] = b64(&ct);
        let e = open_pin_response(&parts.join("."), &rk, &keys, 1)
            .await
            .unwrap_err();
        assert!(matches!(e, CryptoError::Decrypt(_)), "{e:?}");

        // A valid JWE around a JWS whose payload was altered after signing.
        let jws = sign_with(&serde_json::to_vec(&payload).unwrap(), &sign).unwrap();
        let mut p: Vec<String> = jws.split('.').map(str::to_string).collect();
        p[1] = b64(br#"{"serial_number":1,"pin":"9999"}"#);
        let forged = encrypt_to(p.join(".").as_bytes(), &rk.public_jwk().unwrap()).unwrap();
        let e = open_pin_response(&forged, &rk, &keys, 1).await.unwrap_err();
        assert!(matches!(e, CryptoError::Verify(_)), "{e:?}");
    }

    #[tokio::test]
    async fn unknown_kid_and_foreign_signers_are_refused() {
        let (keys, _t, _sign) = setup();
        let rk = ResponseKey::generate().unwrap();
        let stranger = new_key("s-unknown", "sig").unwrap();
        let sealed = seal_response(
            &serde_json::json!({"serial_number": 1, "pin": "1234"}),
            &stranger,
            &rk.public_jwk().unwrap(),
        )
        .unwrap();
        let e = open_pin_response(&sealed, &rk, &keys, 1).await.unwrap_err();
        // Refused, and classified as a key-set matter (retried until the deadline: the kid
        // may be a rotation not yet seen), never accepted.
        assert!(matches!(e, CryptoError::UnpublishedSigningKey(_)), "{e:?}");

        // A stranger's key under a known kid: bad signature.
        let impostor = new_key("s1", "sig").unwrap();
        let sealed = seal_response(
            &serde_json::json!({"serial_number": 1, "pin": "1234"}),
            &impostor,
            &rk.public_jwk().unwrap(),
        )
        .unwrap();
        let e = open_pin_response(&sealed, &rk, &keys, 1).await.unwrap_err();
        assert!(matches!(e, CryptoError::Verify(_)), "{e:?}");
    }

    #[tokio::test]
    async fn wrong_algorithms_are_refused_before_any_key_is_used() {
        let (keys, _t, sign) = setup();
        let rk = ResponseKey::generate().unwrap();
        let hdr = |v: serde_json::Value| b64(v.to_string().as_bytes());
        let body = b64(br#"{"serial_number":1,"pin":"1234"}"#);
        // alg none
        let none = format!(
            "{}.{}.",
            hdr(serde_json::json!({"alg":"none","kid":"s1"})),
            body
        );
        // HS256 keyed with the signer's public key (algorithm confusion)
        let pubkey = public_of(&sign).unwrap().to_string();
        let hs = josekit::jws::HS256
            .signer_from_bytes(pubkey.as_bytes())
            .unwrap();
        let mut h = JwsHeader::new();
        h.set_key_id("s1");
        let confused =
            josekit::jws::serialize_compact(br#"{"serial_number":1,"pin":"1234"}"#, &h, &hs)
                .unwrap();
        for inner in [none, confused] {
            let jwe = encrypt_to(inner.as_bytes(), &rk.public_jwk().unwrap()).unwrap();
            let e = open_pin_response(&jwe, &rk, &keys, 1).await.unwrap_err();
            assert!(
                matches!(e, CryptoError::Verify(ref m) if m.contains("ES384")),
                "{e:?}"
            );
        }
        // A JWE claiming another key-management algorithm.
        let jwe = encrypt_to(b"x", &rk.public_jwk().unwrap()).unwrap();
        let mut parts: Vec<String> = jwe.split('.').map(str::to_string).collect();
        let mut h: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[0])
                .unwrap(),
        )
        .unwrap();
        for alg in ["dir", "RSA-OAEP-256", "ECDH-ES"] {
            h["alg"] = serde_json::json!(alg);
            parts[0] = b64(h.to_string().as_bytes());
            let e = open_pin_response(&parts.join("."), &rk, &keys, 1)
                .await
                .unwrap_err();
            assert!(
                matches!(e, CryptoError::Decrypt(ref m) if m.contains("algorithm")),
                "{alg}: {e:?}"
            );
        }
    }

    #[test]
    fn response_keys_redact_their_private_part() {
        let rk = ResponseKey::generate().unwrap();
        let dbg = format!("{rk:?}");
        assert!(dbg.contains(&rk.kid));
        assert!(!dbg.contains("\"d\""));
        assert!(ResponseKey::from_private_jwk(SecretString::from(
            rk.public_jwk().unwrap().to_string()
        ))
        .is_err());
    }
}
