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
        // Inside the cooldown an unknown kid is unknown (the set was fetched moments ago;
        // the shipment tolerates it for the signing-key grace), never a fetch.
        assert!(matches!(
            cache.sign_key("bogus").await,
            Err(UpstreamError::NotFound { .. })
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

/// Graph through a workload-identity credential of `azure_identity`, built from the
/// configuration as production builds it: tokens are cached, a forged assertion is refused.
#[tokio::test]
async fn workload_identity_tokens_work_and_are_cached() {
    use fido_connector::azure_auth::Credentials;
    use fido_connector::config::{Config, Env};
    use fido_connector::upstream::entra::{
        CredentialTokens, GraphClient, GraphClientConfig, TokenSource,
    };

    let w = World::start(Backend::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, &w.sb.federated_assertion).unwrap();
    let mut env = w.sb.env.clone();
    env.insert("ENTRA_CREDENTIAL".into(), "workload_identity".into());
    env.insert(
        "AZURE_FEDERATED_TOKEN_FILE".into(),
        file.display().to_string(),
    );
    let cfg = Config::load(&Env::from_map(&env)).unwrap();
    let ca = std::fs::read(cfg.outbound.extra_root_ca_pem.as_ref().unwrap()).unwrap();
    let http =
        fido_connector::upstream::http::build_client(Duration::from_secs(10), Some(&ca)).unwrap();
    let graph = |tokens: Arc<dyn TokenSource>, ver: &str| {
        GraphClient::new(
            GraphClientConfig {
                graph_endpoint: cfg.entra.graph_endpoint.clone(),
                api_version: ver.into(),
                challenge_timeout_minutes: 60,
                policy_cache: Duration::from_secs(300),
            },
            tokens,
            http.clone(),
        )
    };
    let tokens = || {
        Arc::new(
            CredentialTokens::from_config(
                &cfg.entra,
                Credentials::from_config(&cfg.entra, http.clone()),
                w.deps().secrets.clone(),
            )
            .unwrap(),
        )
    };
    let user = UserId::Upn(crate::support::alice().into());
    let before = w.sb.entra.token_requests();
    let g = graph(tokens(), "v1.0");
    let found = g.get_user(&user).await.unwrap();
    g.get_user(&user).await.unwrap();
    assert_eq!(w.sb.entra.token_requests(), before + 1, "cached");
    // v1.0 creation options carry no timeout parameter and a 5-minute challenge.
    let opts = g.creation_options(&found.id).await.unwrap();
    assert!(opts.challenge_timeout < chrono::Utc::now() + chrono::Duration::minutes(6));

    std::fs::write(&file, "forged").unwrap();
    assert!(matches!(
        graph(tokens(), "beta").get_user(&user).await,
        Err(UpstreamError::Unauthorized { .. })
    ));
    w.stop().await;
}

/// The managed identity (the platform's `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, read by
/// `azure_identity` from the process environment, hence a child process): Graph and the
/// mail trigger both get their tokens from it, end to end.
#[tokio::test]
async fn managed_identity_serves_graph_and_the_mail_trigger() {
    use crate::support::process::spawn;
    let dir = tempfile::tempdir().unwrap();
    let sb = fido_connector::sandbox::run::prepare(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let mut env = sb.env.clone();
    env.insert("ENTRA_CREDENTIAL".into(), "managed_identity".into());
    env.remove("AZURE_CLIENT_ID");
    env.remove("AZURE_CLIENT_SECRET");
    env.insert("IDENTITY_ENDPOINT".into(), sb.entra.msi_url());
    env.insert("IDENTITY_HEADER".into(), sb.identity_header.clone());
    let log = dir.path().join("connector.log");
    let p = spawn(&env, None, &log).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/fpr/shipments", p.base))
        .bearer_auth(&sb.api_key)
        .json(&crate::support::shipment_body(crate::support::alice()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let id = r.json::<serde_json::Value>().await.unwrap()["data"]["shipment_id"]
        .as_str()
        .unwrap()
        .to_string();
    sb.ye.advance(&id);
    let r = http
        .get(format!("{}/v1/operations/process-shipments", p.base))
        .bearer_auth(&sb.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(sb.mail.delivered().len(), 1, "the PIN mail went through");
    assert_eq!(sb.mail.refused(), 0);
    assert_eq!(sb.entra.registration_count(), 1);
    p.stop();
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
