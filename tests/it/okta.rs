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

/// A transport key as Okta's `ECKeyJWK` (the simulator takes nothing else).
async fn transport_jwk(w: &World) -> Value {
    let t = w.deps().keys.transport_key().await.unwrap();
    fido_connector::upstream::okta::ec_key_jwk(t.jwk(), "enc")
}

async fn signing_keys(w: &World) -> Vec<Value> {
    let keys = w.deps().keys.sign_keys().await.unwrap();
    keys.iter()
        .map(|k| fido_connector::upstream::okta::ec_key_jwk(k, "sig"))
        .collect()
}

#[tokio::test]
async fn okta_takes_yubicos_keys_only_as_ec_key_jwks() {
    let w = World::start(Backend::Embedded).await;
    let (_sim, client, _) = okta(&w).await;
    let user = client.get_user("alice@okta.example").await.unwrap();
    let t = w.deps().keys.transport_key().await.unwrap();
    let mut raw = Value::Object(t.jwk().as_ref().clone());
    raw["alg"] = serde_json::json!("ECDH-ES+A256KW");
    match client
        .enroll(&user.id, &["contoso.okta.com".into()], &raw)
        .await
    {
        Err(UpstreamError::Rejected { message, .. }) => {
            assert!(
                message.contains("`alg` is not a member of ECKeyJWK"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    client
        .enroll(
            &user.id,
            &["contoso.okta.com".into()],
            &transport_jwk(&w).await,
        )
        .await
        .unwrap();
    w.stop().await;
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
    // Three calls per 2-second window (Okta's windows are a minute). Okta says on every
    // answer what is left of its window: at `X-Rate-Limit-Remaining: 0` the lane holds its
    // calls until `X-Rate-Limit-Reset`, so ten calls meet no 429 and span the windows.
    sim.set_rate_limit(3, 2);
    let t = std::time::Instant::now();
    for _ in 0..10 {
        client.get_user("alice@okta.example").await.unwrap();
    }
    assert_eq!(
        sim.throttled(),
        0,
        "held at the window's end, never sent into it"
    );
    assert!(
        t.elapsed() >= std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    // A 429 all the same (the window spent by someone else, another app of the org):
    // Okta's pace, as `Throttled` with the time to its reset; the next calls wait for it.
    sim.spend_window();
    match client.get_user("alice@okta.example").await {
        Err(UpstreamError::Throttled { retry_after, .. }) => {
            assert!(
                retry_after.as_secs() >= 1 && retry_after.as_secs() <= 2,
                "{retry_after:?}"
            )
        }
        other => panic!("expected Okta's 429 as a pace: {other:?}"),
    }
    assert_eq!(sim.throttled(), 1);
    for _ in 0..3 {
        client.get_user("alice@okta.example").await.unwrap();
    }
    assert_eq!(sim.throttled(), 1, "none sent into the limit");
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

// ------------------------------------------------------------- the lifecycle over Okta

use fido_connector::sandbox::run::{OKTA_DEMO_USERS, SANDBOX_OKTA_INSTANCE};
use serde_json::json;

fn carol() -> (&'static str, &'static str) {
    (OKTA_DEMO_USERS[0].0, OKTA_DEMO_USERS[0].1)
}

/// A create for an Okta user: the example's, for `user` (Okta mails the PIN to the user's
/// own address, so no `enrollment_contacts`).
pub fn okta_body(user: &str) -> Value {
    let mut b: Value =
        serde_json::from_str(include_str!("../../examples/shipment-okta.json")).unwrap();
    b["user_id"] = json!(user);
    b
}

async fn list_ids(w: &World, user: &str) -> Vec<String> {
    let (s, v) = w.get(&format!("/v1/fpr/shipments?user_id={user}")).await;
    assert_eq!(s, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["shipment_id"].as_str().map(str::to_string))
        .collect()
}

async fn okta_shipment_end_to_end(backend: Backend) {
    let w = World::start(backend).await;
    let (login, okta_id) = carol();
    let (s, b) = w.create(&okta_body(login)).await;
    assert_eq!(s, 201, "{b}");
    let id = b["data"]["shipment_id"].as_str().unwrap().to_string();
    let rec = w.record(&id).await;
    assert_eq!(rec.idp.as_deref(), Some(SANDBOX_OKTA_INSTANCE));
    assert_eq!(rec.entra_user_id, okta_id, "Okta's user id is kept");
    assert_eq!(rec.okta_enrollments.len(), 1);
    let enrollment = rec.okta_enrollments[0].clone();
    // Okta made the response keys: the connector stores none.
    assert!(w
        .deps()
        .secrets
        .get(&rec.secret_name())
        .await
        .unwrap()
        .is_none());
    // Not programmed yet: nothing is activated.
    assert_eq!(w.process().await, 204);
    assert_eq!(w.sb.okta.enrollment(&enrollment), Some(("ENROLLED", 0)));
    assert!(w.sb.ye.advance(&id));
    assert_eq!(w.process().await, 204);
    let st = w.status_of(&id).await;
    assert_eq!(st["shipment_state"], "complete", "{st}");
    assert_eq!(w.sb.okta.enrollment(&enrollment), Some(("ACTIVE", 1)));
    let mails = w.sb.okta.mails();
    assert_eq!(mails.len(), 1, "Okta sent the PIN once");
    assert_eq!(mails[0].to, login);
    assert_eq!(mails[0].enrollment_id, enrollment);
    assert!(
        w.sb.mail.delivered().is_empty(),
        "not through Entra's relay"
    );
    // Another run changes nothing.
    assert_eq!(w.process().await, 204);
    assert_eq!(w.sb.okta.enrollment(&enrollment), Some(("ACTIVE", 1)));
    assert_eq!(w.sb.okta.mails().len(), 1);
    // Resend PIN: Okta mails it again.
    assert_eq!(
        w.get(&format!("/v1/operations/resend-pin/{id}")).await.0,
        204
    );
    let mails = w.sb.okta.mails();
    assert_eq!(mails.len(), 2);
    assert_eq!(mails[0].pin, mails[1].pin);
    // Listed by Okta's login and by its user id, with its instance.
    assert_eq!(list_ids(&w, login).await, vec![id.clone()]);
    assert_eq!(list_ids(&w, okta_id).await, vec![id.clone()]);
    let (_, v) = w.get(&format!("/v1/fpr/shipments?user_id={login}")).await;
    assert_eq!(v["items"][0]["idp_instance"], SANDBOX_OKTA_INSTANCE);
    // An Entra shipment beside it is served by the default instance, as before.
    let entra = w.create_ok(crate::support::alice()).await;
    assert_eq!(w.record(&entra).await.idp, None);
    w.stop().await;
}

#[tokio::test]
async fn an_okta_shipment_end_to_end_on_the_embedded_store() {
    okta_shipment_end_to_end(Backend::Embedded).await;
}

#[tokio::test]
async fn an_okta_shipment_end_to_end_on_azure_tables() {
    okta_shipment_end_to_end(Backend::Azurite).await;
}

async fn oktas_refusals_on_the_shipment(backend: Backend) {
    let w = World::start(backend).await;
    let before = w.sb.ye.created_count();
    // An unknown user: the vendor's 400, before anything is stored or sent to Yubico.
    let (s, b) = w.create(&okta_body("nobody@fabrikam.example")).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error_message"]
            .as_str()
            .unwrap()
            .contains("Could not find user: nobody@fabrikam.example"),
        "{b}"
    );
    // A deactivated user: refused by the pre-flight, in Okta's status.
    let (login, okta_id) = carol();
    w.sb.okta.set_user_status(okta_id, "DEPROVISIONED");
    let (s, b) = w.create(&okta_body(login)).await;
    assert_eq!(s, 400, "{b}");
    let msg = b["error_message"].as_str().unwrap();
    assert!(
        msg.contains("user_status") && msg.contains("DEPROVISIONED"),
        "{b}"
    );
    w.sb.okta.set_user_status(okta_id, "ACTIVE");
    // An instance the deployment does not have: the field is named.
    let mut body = okta_body(login);
    body["idp_instance"] = json!("initech");
    let (s, b) = w.create(&body).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error_message"]
            .as_str()
            .unwrap()
            .contains("idp_instance"),
        "{b}"
    );
    // Other PIN recipients: Okta mails the user's own address, so they are refused.
    let mut body = okta_body(login);
    body["enrollment_contacts"] = json!({"emails_to": ["someone@example.org"]});
    let (s, b) = w.create(&body).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error_message"]
            .as_str()
            .unwrap()
            .contains("enrollment_contacts.emails_to"),
        "{b}"
    );
    assert_eq!(w.sb.ye.created_count(), before, "nothing reached Yubico");
    // A response tampered with on the way: Okta refuses the activation; the shipment fails
    // with Okta's summary and its enrollment is marked failed at Okta.
    let id = {
        let (s, b) = w.create(&okta_body(login)).await;
        assert_eq!(s, 201, "{b}");
        b["data"]["shipment_id"].as_str().unwrap().to_string()
    };
    w.sb.ye.mismatch_pin_serials(true);
    assert!(w.sb.ye.advance(&id));
    assert_eq!(w.process().await, 204);
    w.sb.ye.mismatch_pin_serials(false);
    let st = w.status_of(&id).await;
    // The vendor's shape: still `ongoing`, with the error that ended it.
    assert_eq!(st["error_kind"], "GENERAL", "{st}");
    assert_eq!(
        w.record(&id).await.step,
        fido_connector::domain::Step::Failed
    );
    let message = st["error_message"].as_str().unwrap_or("").to_string();
    assert!(
        message.contains("Okta refused the activation") && message.contains("pinResponseJwe"),
        "{st}"
    );
    let enrollment = w.record(&id).await.okta_enrollments[0].clone();
    assert_eq!(w.sb.okta.enrollment(&enrollment), Some(("ERROR", 0)));
    // An operator cannot resume it: Okta holds its enrollment as failed.
    let r = w
        .auth(w.http.post(format!("{}/v1/operations/retry/{id}", w.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("order a new key"),
        "{v}"
    );
    assert!(w.sb.okta.mails().is_empty(), "no PIN for a failed shipment");
    // A user deactivated after the order: Okta refuses the activation, in its words.
    let (s, b) = w.create(&okta_body(login)).await;
    assert_eq!(s, 201, "{b}");
    let later_id = b["data"]["shipment_id"].as_str().unwrap().to_string();
    w.sb.okta.set_user_status(okta_id, "SUSPENDED");
    assert!(w.sb.ye.advance(&later_id));
    assert_eq!(w.process().await, 204);
    w.sb.okta.set_user_status(okta_id, "ACTIVE");
    let st = w.status_of(&later_id).await;
    let message = st["error_message"].as_str().unwrap_or("");
    assert!(
        message.contains("Okta refused the activation") && message.contains("SUSPENDED"),
        "{st}"
    );
    assert!(w.sb.okta.mails().is_empty());
    // Past the retention (a later clock), its record goes and so does its enrollment.
    let mut later = w.deps().clone();
    later.clock = std::sync::Arc::new(fido_connector::clock::ManualClock::new(
        chrono::Utc::now() + chrono::Duration::days(401),
    ));
    later.instance_id = "later/boot".into();
    assert_eq!(fido_connector::lifecycle::cleanup(&later).await.unwrap(), 2);
    assert_eq!(w.sb.okta.enrollment(&enrollment), None);
    w.stop().await;
}

#[tokio::test]
async fn oktas_refusals_are_shown_in_its_words_on_the_embedded_store() {
    oktas_refusals_on_the_shipment(Backend::Embedded).await;
}

#[tokio::test]
async fn oktas_refusals_are_shown_in_its_words_on_azure_tables() {
    oktas_refusals_on_the_shipment(Backend::Azurite).await;
}

// ------------------------------------------------------------- one or several IdPs

/// Starts the connector of `w`'s sandbox with `env` (the same data directory and store).
async fn build_with(env: &std::collections::HashMap<String, String>) -> Result<(), String> {
    let config = fido_connector::config::Config::load(&fido_connector::config::Env::from_map(env))
        .map_err(|e| e.to_string())?;
    fido_connector::app::build(config)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn bad_configuration_stops_the_start(backend: Backend) {
    let w = World::start(backend).await;
    // An Okta shipment still open.
    let (s, b) = w.create(&okta_body(carol().0)).await;
    assert_eq!(s, 201, "{b}");
    let file = w.dir.path().join("other-idps.yaml");
    let mut env = w.sb.env.clone();
    env.insert(
        fido_connector::config::IDP_CONFIG_VAR.into(),
        file.display().to_string(),
    );
    // The instance removed while a shipment uses it.
    std::fs::write(
        &file,
        "default: contoso\ninstances:\n  - name: contoso\n    kind: entra\n",
    )
    .unwrap();
    let e = build_with(&env).await.unwrap_err();
    assert!(
        e.contains("instance `fabrikam`") && e.contains("removed while 1 open shipment"),
        "{e}"
    );
    // Back to single-IdP mode with it open: the same.
    let mut single = w.sb.env.clone();
    single.remove(fido_connector::config::IDP_CONFIG_VAR);
    let e = build_with(&single).await.unwrap_err();
    assert!(e.contains("instance `fabrikam`"), "{e}");
    // A service app key that is not in the secret store.
    let sandbox_file =
        std::fs::read_to_string(&w.sb.env[fido_connector::config::IDP_CONFIG_VAR]).unwrap();
    std::fs::write(
        &file,
        sandbox_file.replace("okta-fabrikam-key", "okta-fabrikam-key-2027"),
    )
    .unwrap();
    let e = build_with(&env).await.unwrap_err();
    assert!(
        e.contains("instance `fabrikam`: private_key_secret")
            && e.contains("okta-fabrikam-key-2027"),
        "{e}"
    );
    // An unknown kind and a duplicate name, named with the instance and the field.
    std::fs::write(&file, sandbox_file.replace("kind: okta", "kind: onelogin")).unwrap();
    let e = build_with(&env).await.unwrap_err();
    assert!(
        e.contains("instance `fabrikam`: kind") && e.contains("onelogin"),
        "{e}"
    );
    std::fs::write(
        &file,
        sandbox_file.replace("name: fabrikam", "name: contoso"),
    )
    .unwrap();
    let e = build_with(&env).await.unwrap_err();
    assert!(e.contains("instance `contoso`: name"), "{e}");
    w.stop().await;
}

#[tokio::test]
async fn bad_idp_configuration_stops_the_start_on_the_embedded_store() {
    bad_configuration_stops_the_start(Backend::Embedded).await;
}

#[tokio::test]
async fn bad_idp_configuration_stops_the_start_on_azure_tables() {
    bad_configuration_stops_the_start(Backend::Azurite).await;
}

/// Without the file the deployment is single-IdP exactly as before: the environment's
/// Entra tenant serves every create, `/v1/status` has its 16 keys, and a create naming an
/// instance is refused naming the field.
#[tokio::test]
async fn single_idp_mode_is_the_environment_alone() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.remove(fido_connector::config::IDP_CONFIG_VAR);
    })
    .await;
    let id = w.create_ok(crate::support::alice()).await;
    assert_eq!(w.record(&id).await.idp, None);
    let (s, b) = w.create(&okta_body(carol().0)).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error_message"]
            .as_str()
            .unwrap()
            .contains("idp_instance"),
        "{b}"
    );
    let (s, v) = w.get("/v1/status").await;
    assert_eq!(s, 200);
    assert_eq!(v.as_object().map(|o| o.len()), Some(16), "{v}");
    w.stop().await;
}

/// Okta's rate limit is its pace in the lifecycle too: eight ready Okta shipments under a
/// limit of eight calls per two-second window (each needs activate and send-pin) all
/// finish in one run, activated and their PIN sent once, with no attempt counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oktas_rate_limit_paces_the_run_without_failing_a_shipment() {
    let w = World::start(Backend::Embedded).await;
    let n = 8;
    let mut ids = Vec::new();
    for _ in 0..n {
        let (s, b) = w.create(&okta_body(carol().0)).await;
        assert_eq!(s, 201, "{b}");
        ids.push(b["data"]["shipment_id"].as_str().unwrap().to_string());
    }
    w.sb.ye.advance_all();
    w.sb.okta.set_rate_limit(8, 2);
    let summary = fido_connector::lifecycle::process_shipments(w.deps())
        .await
        .unwrap();
    assert_eq!(summary.completed, n, "{summary:?}");
    assert_eq!(
        summary.retried + summary.paced + summary.failed,
        0,
        "{summary:?}"
    );
    for id in &ids {
        let rec = w.record(id).await;
        assert_eq!(rec.attempts, 0, "{id}: pacing counted an attempt");
        let e = &rec.okta_enrollments[0];
        assert_eq!(w.sb.okta.enrollment(e), Some(("ACTIVE", 1)));
    }
    assert_eq!(w.sb.okta.mails().len(), n, "each PIN sent once");
    let limited = w.sb.okta.throttled();
    println!("Okta answered 429 {limited} times for {} calls", 2 * n);
    // Mostly none: answers saying the window is spent hold the next calls until it resets
    // (a 429 is met when calls were already on their way).
    assert!(
        limited <= n,
        "{limited} answers of 429: the run hammered the limit"
    );
    w.stop().await;
}

/// An instance removed once its shipments ended: the start goes on (nothing open needs
/// it), and a resend of such a shipment says its instance is gone instead of guessing.
#[tokio::test]
async fn an_instance_removed_after_its_shipments_ended_blocks_nothing_but_their_resend() {
    let w = World::start(Backend::Embedded).await;
    let (s, b) = w.create(&okta_body(carol().0)).await;
    assert_eq!(s, 201, "{b}");
    let id = b["data"]["shipment_id"].as_str().unwrap().to_string();
    assert!(w.sb.ye.advance(&id));
    assert_eq!(w.process().await, 204);
    assert_eq!(w.status_of(&id).await["shipment_state"], "complete");
    let mut single = w.sb.env.clone();
    single.remove(fido_connector::config::IDP_CONFIG_VAR);
    let config =
        fido_connector::config::Config::load(&fido_connector::config::Env::from_map(&single))
            .unwrap();
    let deps = fido_connector::app::build_deps(std::sync::Arc::new(config))
        .await
        .unwrap();
    match fido_connector::lifecycle::resend_pin(&deps, &id, "test").await {
        Err(fido_connector::lifecycle::LifecycleError::WrongState(m)) => {
            assert!(
                m.contains("`fabrikam`") && m.contains("no longer serves"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(w.sb.okta.mails().len(), 1, "nothing sent");
    w.stop().await;
}
