//! Verification of a WebAuthn registration as Entra performs it, for the Entra simulator:
//! attestation format `packed` (self attestation) or `none`; rpIdHash, flags UP/UV/AT,
//! clientDataJSON type/challenge/origin, credential id, and the packed signature.

use base64::Engine;
use ciborium::value::Value as Cbor;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::sign::Verifier;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a successful verification yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub credential_id: Vec<u8>,
    pub aaguid: [u8; 16],
    pub format: String,
    /// The challenge from clientDataJSON (to be matched against issued ones).
    pub challenge: String,
}

fn b64d(s: &str, what: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| format!("{what} is not base64url"))
}

fn map_get<'a>(m: &'a [(Cbor, Cbor)], key: &Cbor) -> Option<&'a Cbor> {
    m.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Verifies `id`, `clientDataJSON`, `attestationObject` (base64url) for `rp_id`.
/// Challenge freshness is the caller's business (it knows which it issued).
pub fn verify_registration(
    id: &str,
    client_data_json: &str,
    attestation_object: &str,
    rp_id: &str,
) -> Result<Verified, String> {
    let cdj = b64d(client_data_json, "clientDataJSON")?;
    let cd: Value = serde_json::from_slice(&cdj).map_err(|_| "clientDataJSON is not JSON")?;
    if cd["type"] != "webauthn.create" {
        return Err("clientDataJSON.type is not webauthn.create".into());
    }
    if cd["origin"].as_str() != Some(&format!("https://{rp_id}")) {
        return Err("clientDataJSON.origin does not match the relying party".into());
    }
    let challenge = cd["challenge"]
        .as_str()
        .ok_or("clientDataJSON.challenge missing")?
        .to_string();

    let ao = b64d(attestation_object, "attestationObject")?;
    let ao: Cbor =
        ciborium::de::from_reader(ao.as_slice()).map_err(|_| "attestationObject is not CBOR")?;
    let m = ao.as_map().ok_or("attestationObject is not a map")?;
    let fmt = map_get(m, &Cbor::Text("fmt".into()))
        .and_then(Cbor::as_text)
        .ok_or("fmt missing")?
        .to_string();
    let auth_data = map_get(m, &Cbor::Text("authData".into()))
        .and_then(Cbor::as_bytes)
        .ok_or("authData missing")?;
    let att_stmt = map_get(m, &Cbor::Text("attStmt".into()))
        .and_then(Cbor::as_map)
        .ok_or("attStmt missing")?;

    if auth_data.len() < 37 + 18 {
        return Err("authData too short".into());
    }
    if auth_data[..32] != Sha256::digest(rp_id.as_bytes())[..] {
        return Err("rpIdHash does not match the relying party".into());
    }
    let flags = auth_data[32];
    if flags & 0x01 == 0 || flags & 0x04 == 0 || flags & 0x40 == 0 {
        return Err("flags must have UP, UV and AT set".into());
    }
    let mut aaguid = [0u8; 16];
    aaguid.copy_from_slice(&auth_data[37..53]);
    let id_len = u16::from_be_bytes([auth_data[53], auth_data[54]]) as usize;
    let cred_id = auth_data
        .get(55..55 + id_len)
        .ok_or("credential id overruns authData")?
        .to_vec();
    if b64d(id, "id")? != cred_id {
        return Err("id does not match the credential id in authData".into());
    }
    let cose: Cbor = ciborium::de::from_reader(&auth_data[55 + id_len..])
        .map_err(|_| "credential public key is not CBOR")?;
    let cose = cose.as_map().ok_or("credential public key is not a map")?;
    let int = |i: i64| Cbor::Integer(i.into());
    let x = map_get(cose, &int(-2))
        .and_then(Cbor::as_bytes)
        .ok_or("COSE x missing")?;
    let y = map_get(cose, &int(-3))
        .and_then(Cbor::as_bytes)
        .ok_or("COSE y missing")?;
    if map_get(cose, &int(3)) != Some(&int(-7)) || map_get(cose, &int(-1)) != Some(&int(1)) {
        return Err("only ES256 P-256 credentials are supported".into());
    }

    match fmt.as_str() {
        "none" => {}
        "packed" => {
            if map_get(att_stmt, &Cbor::Text("x5c".into())).is_some() {
                return Err(
                    "packed full attestation (x5c) is not supported by the simulator".into(),
                );
            }
            if map_get(att_stmt, &Cbor::Text("alg".into())) != Some(&int(-7)) {
                return Err("packed attStmt.alg must be -7".into());
            }
            let sig = map_get(att_stmt, &Cbor::Text("sig".into()))
                .and_then(Cbor::as_bytes)
                .ok_or("packed attStmt.sig missing")?;
            let group =
                EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|e| e.to_string())?;
            let mut ctx = BigNumContext::new().map_err(|e| e.to_string())?;
            let mut point = EcPoint::new(&group).map_err(|e| e.to_string())?;
            let bx = BigNum::from_slice(x).map_err(|e| e.to_string())?;
            let by = BigNum::from_slice(y).map_err(|e| e.to_string())?;
            point
                .set_affine_coordinates_gfp(&group, &bx, &by, &mut ctx)
                .map_err(|_| "credential public key is not on the curve")?;
            let key = EcKey::from_public_key(&group, &point).map_err(|e| e.to_string())?;
            let pkey = PKey::from_ec_key(key).map_err(|e| e.to_string())?;
            let mut v = Verifier::new(MessageDigest::sha256(), &pkey).map_err(|e| e.to_string())?;
            v.update(auth_data).map_err(|e| e.to_string())?;
            v.update(&Sha256::digest(&cdj)).map_err(|e| e.to_string())?;
            if !v.verify(sig).unwrap_or(false) {
                return Err("packed attestation signature is invalid".into());
            }
        }
        other => return Err(format!("attestation format {other} is not accepted")),
    }
    Ok(Verified {
        credential_id: cred_id,
        aaguid,
        format: fmt,
        challenge,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::authenticator::make_credential;

    fn options() -> Value {
        serde_json::json!({"challenge": "Y2hhbGxlbmdl", "rp": {"id": "login.microsoft.com", "name": "Microsoft"},
            "pubKeyCredParams": [{"type": "public-key", "alg": -7}]})
    }

    #[test]
    fn a_fresh_credential_verifies() {
        let c = make_credential(&options()).unwrap();
        let v = verify_registration(
            &c.id,
            &c.client_data_json,
            &c.attestation_object,
            "login.microsoft.com",
        )
        .unwrap();
        assert_eq!(v.format, "packed");
        assert_eq!(v.challenge, "Y2hhbGxlbmdl");
    }

    #[test]
    fn wrong_rp_tampered_data_and_wrong_id_are_refused() {
        let c = make_credential(&options()).unwrap();
        assert!(verify_registration(
            &c.id,
            &c.client_data_json,
            &c.attestation_object,
            "evil.example"
        )
        .is_err());
        let mut cd: Value =
            serde_json::from_slice(&b64d(&c.client_data_json, "").unwrap()).unwrap();
        cd["challenge"] = "b3RoZXI".into();
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(cd.to_string());
        let e = verify_registration(&c.id, &forged, &c.attestation_object, "login.microsoft.com")
            .unwrap_err();
        assert!(e.contains("signature"), "{e}");
        let other = make_credential(&options()).unwrap();
        assert!(verify_registration(
            &other.id,
            &c.client_data_json,
            &c.attestation_object,
            "login.microsoft.com"
        )
        .is_err());
    }
}
