//! The real clients against the simulators: JWKS refresh and cooldown, Graph token caching
//! and tolerant parsing, the software authenticator verified by the Entra simulator.

use std::sync::Arc;
use std::time::Duration;

use fido_connector::domain::UserId;
use fido_connector::sandbox::ye::{YeSim, YeSimConfig};
use fido_connector::upstream::jwks::JwksCache;
use fido_connector::upstream::{IdentityProvider, UpstreamError, YubicoKeys};

use crate::support::{Backend, World};

#[tokio::test]
async fn unknown_kids_refresh_the_sign_set_once_per_cooldown() {
    let ye = YeSim::start(YeSimConfig::new("t")).await.unwrap();
    let cache = JwksCache::with_cooldown(
        ye.transport_jwks_url().parse().unwrap(),
        ye.sign_jwks_url().parse().unwrap(),
        reqwest::Client::new(),
        Duration::from_secs(60),
    );
    assert!(cache.sign_key("yubico-sign-1").await.is_ok());
    assert_eq!(cache.fetch_counts().await.1, 1);
    for _ in 0..20 {
        assert!(matches!(
            cache.sign_key("bogus").await,
            Err(UpstreamError::NotFound { .. })
        ));
    }
    // The flood of bad kids caused no further fetch within the cooldown.
    assert_eq!(cache.fetch_counts().await.1, 1);

    // After a rotation, a zero-cooldown cache finds the new kid with one refresh.
    ye.rotate_keys().unwrap();
    let fresh = JwksCache::with_cooldown(
        ye.transport_jwks_url().parse().unwrap(),
        ye.sign_jwks_url().parse().unwrap(),
        reqwest::Client::new(),
        Duration::ZERO,
    );
    assert!(fresh.sign_key("yubico-sign-2").await.is_ok());
    assert!(
        fresh.sign_key("yubico-sign-1").await.is_ok(),
        "previous sign key stays published"
    );
    let t = fresh.transport_key().await.unwrap();
    assert_eq!(t.key_id(), Some("yubico-transport-2"));
}

#[tokio::test]
async fn graph_tokens_are_cached_and_creation_options_are_cleaned() {
    let w = World::start(Backend::Embedded).await;
    let idp = &w.deps().idp;
    let before = w.sb.entra.token_requests();
    let user = idp
        .get_user(&UserId::Upn("alice@contoso.example".into()))
        .await
        .unwrap();
    let opts = idp.creation_options(&user.id).await.unwrap();
    let _ = idp.list_methods(&user.id).await.unwrap();
    assert_eq!(
        w.sb.entra.token_requests() - before,
        1,
        "one token for three calls"
    );
    let text = opts.public_key.to_string();
    assert!(!text.contains("@odata"), "{text}");
    assert!(
        opts.public_key["challenge"].as_str().unwrap().len() > 1000,
        "challenge not capped"
    );
    assert!(opts.challenge_timeout > chrono::Utc::now() + chrono::Duration::days(13));
    assert!(matches!(
        idp.get_user(&UserId::Upn("ghost@contoso.example".into()))
            .await,
        Err(UpstreamError::NotFound { .. })
    ));
    w.stop().await;
}

#[tokio::test]
async fn expired_graph_tokens_are_replaced_and_429_is_honoured() {
    let w = World::start(Backend::Embedded).await;
    let idp = &w.deps().idp;
    let user = UserId::Upn("alice@contoso.example".into());
    idp.get_user(&user).await.unwrap();
    let before = w.sb.entra.token_requests();
    // Every token is expired for one request: the client fetches a new one and retries.
    w.sb.entra
        .faults
        .set(fido_connector::sandbox::faults::FaultConfig {
            expire_tokens: true,
            ..Default::default()
        });
    let r = idp.get_user(&user).await;
    assert!(
        matches!(r, Err(UpstreamError::Unauthorized { .. })),
        "{r:?}"
    );
    w.sb.entra.faults.clear();
    idp.get_user(&user).await.unwrap();
    assert!(w.sb.entra.token_requests() > before);
    // Throttled half the time with Retry-After: 0 → reads still succeed.
    w.sb.entra
        .faults
        .set(fido_connector::sandbox::faults::FaultConfig {
            throttle_rate: 0.5,
            retry_after_secs: 0,
            ..Default::default()
        });
    for _ in 0..5 {
        idp.get_user(&user).await.unwrap();
    }
    w.stop().await;
}

#[tokio::test]
async fn the_entra_simulator_refuses_tampered_and_duplicate_registrations() {
    let w = World::start(Backend::Embedded).await;
    let idp: &Arc<dyn IdentityProvider> = &w.deps().idp;
    let user = idp
        .get_user(&UserId::Upn("bob@contoso.example".into()))
        .await
        .unwrap();
    let opts = idp.creation_options(&user.id).await.unwrap();
    let cred = fido_connector::sandbox::authenticator::make_credential(&opts.public_key).unwrap();
    let mut tampered = cred.clone();
    tampered.client_data_json = tampered.client_data_json.replacen('e', "f", 1);
    assert!(matches!(
        idp.register(&user.id, "x: 1", &tampered).await,
        Err(UpstreamError::Rejected { .. })
    ));
    idp.register(&user.id, "Pre-Reg YubiKey: 1", &cred)
        .await
        .unwrap();
    match idp.register(&user.id, "Pre-Reg YubiKey: 1", &cred).await {
        Err(UpstreamError::Rejected { code, .. }) => {
            assert_eq!(code, "credentialAlreadyRegistered")
        }
        other => panic!("{other:?}"),
    }
    // A challenge never issued to this user is refused.
    let mut foreign = opts.public_key.clone();
    foreign["challenge"] = serde_json::json!("bm90LWlzc3VlZA");
    let c2 = fido_connector::sandbox::authenticator::make_credential(&foreign).unwrap();
    assert!(idp.register(&user.id, "y: 2", &c2).await.is_err());
    let methods = idp.list_methods(&user.id).await.unwrap();
    assert_eq!(methods.len(), 1);
    // The next creationOptions excludes the registered credential, in one of Graph's forms,
    // which the client normalises.
    let again = idp.creation_options(&user.id).await.unwrap();
    assert_eq!(
        again.public_key["excludeCredentials"][0]["id"],
        serde_json::json!(cred.id)
    );
    w.stop().await;
}
