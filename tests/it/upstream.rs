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
    for _ in 0..1000 {
        // Inside the cooldown an unknown kid is "not yet" (transient), never a fetch.
        assert!(matches!(
            cache.sign_key("bogus").await,
            Err(UpstreamError::Transient { .. })
        ));
    }
    // The flood of 1,000 bad kids caused no further fetch within the cooldown.
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
    // Three 429s with Retry-After: 1 in a row: the read waits as told, then succeeds.
    w.sb.entra
        .faults
        .set(fido_connector::sandbox::faults::FaultConfig {
            fail_next: 3,
            error_status: Some(429),
            retry_after_secs: 1,
            ..Default::default()
        });
    let t = std::time::Instant::now();
    idp.get_user(&user).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "Retry-After honoured: {:?}",
        t.elapsed()
    );
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

#[tokio::test]
async fn managed_and_workload_identity_tokens_work_and_are_cached() {
    use fido_connector::sandbox::entra::{EntraSim, EntraSimConfig};
    use fido_connector::upstream::entra::{
        GraphClient, GraphClientConfig, ManagedIdentityTokens, TokenSource, WorkloadIdentityTokens,
    };
    use secrecy::SecretString;

    let mut cfg = EntraSimConfig::new("tenant-1", "client-1", "unused-secret");
    cfg.identity_header = Some("identity-header".into());
    cfg.federated_assertion = Some("federated-assertion".into());
    let sim = EntraSim::start(cfg).await.unwrap();
    sim.add_user(
        "carol@contoso.example",
        "9a8b7c6d-0000-4000-8000-000000000001",
    );
    let http = reqwest::Client::new();
    let graph = |tokens: Arc<dyn TokenSource>, ver: &str| {
        GraphClient::new(
            GraphClientConfig {
                graph_endpoint: sim.graph_url().parse().unwrap(),
                api_version: ver.into(),
                challenge_timeout_minutes: 60,
            },
            tokens,
            http.clone(),
        )
    };
    let user = UserId::Upn("carol@contoso.example".into());

    let mi = Arc::new(ManagedIdentityTokens::new(
        sim.msi_url().parse().unwrap(),
        SecretString::from("identity-header".to_string()),
        None,
        http.clone(),
    ));
    let g = graph(mi, "beta");
    g.get_user(&user).await.unwrap();
    g.get_user(&user).await.unwrap();
    assert_eq!(sim.token_requests(), 1, "cached");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "federated-assertion").unwrap();
    let wi = Arc::new(
        WorkloadIdentityTokens::new(
            sim.login_url().parse().unwrap(),
            "tenant-1".into(),
            "client-1".into(),
            file.clone(),
            http.clone(),
        )
        .unwrap(),
    );
    let g = graph(wi, "v1.0");
    let found = g.get_user(&user).await.unwrap();
    // v1.0 creation options carry no timeout parameter and a 5-minute challenge.
    let opts = g.creation_options(&found.id).await.unwrap();
    assert!(opts.challenge_timeout < chrono::Utc::now() + chrono::Duration::minutes(6));

    // A wrong identity header or assertion is refused.
    let bad = Arc::new(ManagedIdentityTokens::new(
        sim.msi_url().parse().unwrap(),
        SecretString::from("wrong".to_string()),
        None,
        http.clone(),
    ));
    assert!(matches!(
        graph(bad, "beta").get_user(&user).await,
        Err(UpstreamError::Unauthorized { .. })
    ));
    std::fs::write(&file, "forged").unwrap();
    let forged = Arc::new(
        WorkloadIdentityTokens::new(
            sim.login_url().parse().unwrap(),
            "tenant-1".into(),
            "client-1".into(),
            file,
            http.clone(),
        )
        .unwrap(),
    );
    assert!(matches!(
        graph(forged, "beta").get_user(&user).await,
        Err(UpstreamError::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn the_ye_client_retries_reads_through_5xx_and_times_out_on_hangs() {
    use fido_connector::sandbox::faults::FaultConfig;
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_UPSTREAM_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    let id = w.create_ok(crate::support::alice()).await;
    let ye = &w.deps().ye;
    // Two failures in a row are absorbed by the client's in-call retries (3 tries) ...
    w.sb.ye.faults.set(FaultConfig {
        fail_next: 2,
        ..Default::default()
    });
    ye.get_shipment(&id).await.unwrap();
    // ... three are reported as transient.
    w.sb.ye.faults.set(FaultConfig {
        fail_next: 3,
        ..Default::default()
    });
    assert!(matches!(
        ye.get_shipment(&id).await,
        Err(UpstreamError::Transient { .. })
    ));
    // A hang beyond the timeout is a transient error, not a stuck call.
    w.sb.ye.faults.set(FaultConfig {
        hang_rate: 1.0,
        hang_ms: 5000,
        ..Default::default()
    });
    let t = std::time::Instant::now();
    assert!(matches!(
        ye.get_shipment(&id).await,
        Err(UpstreamError::Transient { .. })
    ));
    assert!(t.elapsed() < Duration::from_secs(5));
    w.sb.ye.faults.clear();
    w.stop().await;
}
