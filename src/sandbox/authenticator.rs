//! A software FIDO2 authenticator, the "factory" that programs a YubiKey in the simulators:
//! given Entra's `creationOptions.publicKey`, it makes a fresh P-256 credential and a
//! `packed` (self) attestation over real authenticator data, with clientDataJSON of type
//! `webauthn.create`, the given challenge and origin `https://<rp.id>`.

use base64::Engine;
use ciborium::value::Value as Cbor;
use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, PointConversionForm};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use rand::Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::AttestedCredential;

/// A made-up AAGUID for the simulated key model.
pub const SIM_AAGUID: [u8; 16] = *b"fido-connector-s";

/// Flags: user present (0x01), user verified (0x04), attested credential data (0x40).
pub const FLAGS: u8 = 0x45;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn cbor_bytes(v: &Cbor) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Creates a credential for `public_key` (the `publicKey` object of creationOptions).
/// Returns the WebAuthn fields base64url-encoded without padding.
pub fn make_credential(public_key: &Value) -> Result<AttestedCredential, String> {
    let rp_id = public_key["rp"]["id"]
        .as_str()
        .ok_or("publicKey.rp.id missing")?;
    let challenge = public_key["challenge"]
        .as_str()
        .ok_or("publicKey.challenge missing")?;
    let algs: Vec<i64> = public_key["pubKeyCredParams"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["alg"].as_i64()).collect())
        .unwrap_or_default();
    if !algs.is_empty() && !algs.contains(&-7) {
        return Err("ES256 (-7) not among pubKeyCredParams".into());
    }

    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| e.to_string())?;
    let key = EcKey::generate(&group).map_err(|e| e.to_string())?;
    let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
    let point = key
        .public_key()
        .to_bytes(&group, PointConversionForm::UNCOMPRESSED, &mut ctx)
        .map_err(|e| e.to_string())?;
    let (x, y) = (&point[1..33], &point[33..65]);
    let cose_key = Cbor::Map(vec![
        (Cbor::Integer(1.into()), Cbor::Integer(2.into())), // kty: EC2
        (Cbor::Integer(3.into()), Cbor::Integer((-7).into())), // alg: ES256
        (Cbor::Integer((-1).into()), Cbor::Integer(1.into())), // crv: P-256
        (Cbor::Integer((-2).into()), Cbor::Bytes(x.to_vec())),
        (Cbor::Integer((-3).into()), Cbor::Bytes(y.to_vec())),
    ]);
    let cred_id: [u8; 32] = rand::rng().random();

    let mut auth_data = Vec::with_capacity(256);
    auth_data.extend_from_slice(&Sha256::digest(rp_id.as_bytes()));
    auth_data.push(FLAGS);
    auth_data.extend_from_slice(&0u32.to_be_bytes());
    auth_data.extend_from_slice(&SIM_AAGUID);
    auth_data.extend_from_slice(&(cred_id.len() as u16).to_be_bytes());
    auth_data.extend_from_slice(&cred_id);
    auth_data.extend_from_slice(&cbor_bytes(&cose_key)?);

    let client_data = serde_json::json!({
        "type": "webauthn.create",
        "challenge": challenge,
        "origin": format!("https://{rp_id}"),
        "crossOrigin": false,
    })
    .to_string();
    let mut signed = auth_data.clone();
    signed.extend_from_slice(&Sha256::digest(client_data.as_bytes()));
    let pkey = PKey::from_ec_key(key).map_err(|e| e.to_string())?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey).map_err(|e| e.to_string())?;
    signer.update(&signed).map_err(|e| e.to_string())?;
    let sig = signer.sign_to_vec().map_err(|e| e.to_string())?;

    let att_obj = Cbor::Map(vec![
        (Cbor::Text("fmt".into()), Cbor::Text("packed".into())),
        (
            Cbor::Text("attStmt".into()),
            Cbor::Map(vec![
                (Cbor::Text("alg".into()), Cbor::Integer((-7).into())),
                (Cbor::Text("sig".into()), Cbor::Bytes(sig)),
            ]),
        ),
        (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
    ]);
    Ok(AttestedCredential {
        id: b64(&cred_id),
        client_data_json: b64(client_data.as_bytes()),
        attestation_object: b64(&cbor_bytes(&att_obj)?),
        client_extension_results: serde_json::json!({}),
    })
}
