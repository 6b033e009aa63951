//! The Okta client against the Okta simulator, with YubiEnterprise's simulator between
//! them, all over real HTTPS with real cryptography: Okta encrypts the requests to Yubico's
//! transport key, YubiEnterprise programs the key, Okta decrypts and verifies what Yubico
//! sealed, then mails the PIN. (The lifecycle does not use Okta yet; this is the client.)

use fido_connector::sandbox::okta::{OktaSim, OktaUser};
use fido_connector::upstream::okta::{Activation, OktaClient};
use fido_connector::upstream::UpstreamError;
use josekit::jwk::Jwk;
use secrecy::SecretString;
use serde_json::Value;

use crate::support::{shipment_body, Backend, World};

const CLIENT_ID: &str = "0oa1fprconnector";

async fn okta(w: &World) -> (OktaSim, OktaClient, SecretString) {
    let mut key = Jwk::generate_rsa_key(2048).unwrap();
    key.set_key_id("fpr-okta-1");
    let public = fido_connector::crypto::public_of(&key).unwrap();
    let sim = OktaSim::start(CLIENT_ID, public, 0).await.unwrap();
    sim.add_user(OktaUser {
        id: "00u1alice".into(),
        login: "alice@okta.example".into(),
        email: "alice@okta.example".into(),
        status: "ACTIVE".into(),
    });
    let secret = SecretString::from(key.to_string());
    let client = client_for(&sim, &secret, w);
    (sim, client, secret)
}

fn client_for(sim: &OktaSim, key: &SecretString, w: &World) -> OktaClient {
    OktaClient::new(
        sim.url().parse().unwrap(),
        CLIENT_ID.into(),
        key,
        w.deps().http.clone(),
    )
    .unwrap()
}

async fn transport_jwk(w: &World) -> Value {
    let t = w.deps().keys.transport_key().await.unwrap();
    Value::Object(t.jwk().as_ref().clone())
}

async fn signing_keys(w: &World) -> Vec<Value> {
    let v: Value = reqwest::get(w.sb.ye.sign_jwks_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["keys"].as_array().unwrap().clone()
}

/// Enrolls alice at Okta, ships through YubiEnterprise, programs the key; returns the
/// activation Okta expects.
async fn enrolled_and_programmed(w: &World, client: &OktaClient) -> Activation {
    let user = client.get_user("alice@okta.example").await.unwrap();
    assert!(user.may_enroll());
    let e = client
        .enroll(
            &user.id,
            &["contoso.okta.com".into()],
            &transport_jwk(w).await,
        )
        .await
        .unwrap();
    assert_eq!(e.cred_requests.len(), 1);
    let req = fido_connector::domain::ShipmentRequest::parse(&shipment_body("alice@okta.example"))
        .unwrap();
    let ship = w
        .deps()
        .ye
        .create_shipment(&req.ye_body(&e.pin_request_jwe, &e.cred_requests[0].1))
        .await
        .unwrap();
    assert!(w.sb.ye.advance(&ship.shipment_id));
    let pd = w
        .deps()
        .ye
        .get_shipment(&ship.shipment_id)
        .await
        .unwrap()
        .product_data
        .expect("programmed");
    Activation {
        user_id: user.id,
        cred_responses: vec![(
            e.cred_requests[0].0.clone(),
            pd.fido_credential_responses[0].clone(),
        )],
        pin_response_jwe: pd.fido_pin_response.unwrap(),
        serial: pd.serial_number.to_string(),
        version: pd.firmware_version.unwrap_or_default(),
        signing_keys: signing_keys(w).await,
    }
}

#[tokio::test]
async fn an_okta_enrollment_is_shipped_activated_once_and_its_pin_mailed() {
    let w = World::start(Backend::Embedded).await;
    let (sim, client, _) = okta(&w).await;
    let a = enrolled_and_programmed(&w, &client).await;
    client.activate(&a).await.unwrap();
    let enrollment = &a.cred_responses[0].0;
    assert_eq!(sim.enrollment(enrollment), Some(("ACTIVE", 1)));
    // A second activation is refused in Okta's words, and activates nothing twice.
    match client.activate(&a).await {
        Err(UpstreamError::Rejected {
            status: 400,
            code,
            message,
            ..
        }) => {
            assert_eq!(code, "E0000001");
            assert!(message.contains("already active"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.enrollment(enrollment), Some(("ACTIVE", 1)));
    client.send_pin(&a.user_id, enrollment).await.unwrap();
    client.send_pin(&a.user_id, enrollment).await.unwrap(); // a resend
    let mails = sim.mails();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].to, "alice@okta.example");
    assert_eq!(mails[0].pin, mails[1].pin);
    assert_eq!(mails[0].pin.len(), 8);
    // One token for every call: DPoP-bound, asked for twice only for the server's nonce.
    assert_eq!(sim.token_requests(), 1);
    w.stop().await;
}

#[tokio::test]
async fn okta_refusals_keep_oktas_summary() {
    let w = World::start(Backend::Embedded).await;
    let (sim, client, _) = okta(&w).await;
    // An unknown user.
    match client.get_user("nobody@okta.example").await {
        Err(UpstreamError::NotFound { code, message, .. }) => {
            assert_eq!(code, "E0000007");
            assert!(message.contains("Not found"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A tampered credential response: Okta's verification refuses the activation.
    let mut a = enrolled_and_programmed(&w, &client).await;
    let jwe = &mut a.cred_responses[0].1;
    let mut parts: Vec<String> = jwe.split('.').map(str::to_string).collect();
    let ct = parts[3].clone().into_bytes();
    let mut ct = ct;
    ct[5] = if ct[5] == b'A' { b'B' } else { b'A' };
    parts[3] = String::from_utf8(ct).unwrap();
    *jwe = parts.join(".");
    match client.activate(&a).await {
        Err(UpstreamError::Rejected {
            status: 400,
            message,
            ..
        }) => {
            assert!(message.contains("credResponseJwe"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sim.enrollment(&a.cred_responses[0].0),
        Some(("ENROLLED", 0))
    );
    // A deactivated user cannot enroll.
    sim.set_user_status("00u1alice", "DEPROVISIONED");
    let user = client.get_user("00u1alice").await.unwrap();
    assert!(!user.may_enroll());
    match client
        .enroll(
            &user.id,
            &["contoso.okta.com".into()],
            &transport_jwk(&w).await,
        )
        .await
    {
        Err(UpstreamError::Rejected { message, .. }) => {
            assert!(message.contains("does not allow enrollment"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    w.stop().await;
}

#[tokio::test]
async fn oktas_rate_limit_is_its_pace_and_a_new_nonce_is_followed() {
    let w = World::start(Backend::Embedded).await;
    let (sim, client, key) = okta(&w).await;
    client.get_user("alice@okta.example").await.unwrap();
    // Three calls per 2-second window (Okta's windows are a minute).
    sim.set_rate_limit(3, 2);
    let mut throttled = None;
    for _ in 0..10 {
        match client.get_user("alice@okta.example").await {
            Ok(_) => {}
            Err(e) => {
                throttled = Some(e);
                break;
            }
        }
    }
    match throttled {
        Some(UpstreamError::Throttled { retry_after, .. }) => {
            assert!(
                retry_after.as_secs() >= 1 && retry_after.as_secs() <= 2,
                "{retry_after:?}"
            )
        }
        other => panic!("expected Okta's 429 as a pace: {other:?}"),
    }
    assert_eq!(sim.throttled(), 1);
    // The lane to Okta is held until the window resets: the next calls wait for it and
    // are admitted, none is sent into the limit.
    for _ in 0..3 {
        client.get_user("alice@okta.example").await.unwrap();
    }
    assert_eq!(sim.throttled(), 1);
    sim.set_rate_limit(0, 60);
    // A client that never met the server's nonce learns it on its first token request.
    sim.rotate_nonce();
    let before = sim.token_requests();
    client_for(&sim, &key, &w)
        .get_user("alice@okta.example")
        .await
        .unwrap();
    assert_eq!(sim.token_requests(), before + 1);
    w.stop().await;
}
