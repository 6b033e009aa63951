//! The secret-store scenarios, run against the file store and against the official Key
//! Vault client talking HTTPS to the Key Vault simulator.

use std::sync::Arc;

use fido_connector::azure_auth::StaticTokenCredential;
use fido_connector::sandbox::faults::FaultConfig;
use fido_connector::sandbox::keyvault::KeyVaultSim;
use fido_connector::secrets::file::FileSecretStore;
use fido_connector::secrets::keyvault::KeyVaultSecretStore;
use fido_connector::secrets::{SecretError, SecretStore};
use secrecy::{ExposeSecret, SecretString};

async fn scenarios(s: Arc<dyn SecretStore>) {
    let v = |x: &str| SecretString::from(x.to_string());
    assert!(s.get("ye-api-token").await.unwrap().is_none());
    s.set("ye-api-token", &v("first")).await.unwrap();
    assert_eq!(
        s.get("ye-api-token")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "first"
    );
    s.set("ye-api-token", &v("rotated")).await.unwrap();
    assert_eq!(
        s.get("ye-api-token")
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        "rotated"
    );
    s.set("fpr-response-fpr-1", &v("{\"d\":\"x\"}"))
        .await
        .unwrap();
    s.delete("fpr-response-fpr-1").await.unwrap();
    assert!(s.get("fpr-response-fpr-1").await.unwrap().is_none());
    s.delete("fpr-response-fpr-1").await.unwrap(); // deleting twice is fine
                                                   // Invalid names are refused before any I/O.
    for bad in ["", "a/b", "a_b", "../etc", &"x".repeat(128)] {
        assert!(
            matches!(s.get(bad).await, Err(SecretError::InvalidName)),
            "{bad}"
        );
        assert!(
            matches!(s.set(bad, &v("x")).await, Err(SecretError::InvalidName)),
            "{bad}"
        );
    }
    s.ping().await.unwrap();
}

#[tokio::test]
async fn file_store_scenarios_and_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let s = FileSecretStore::new(dir.path().join("secrets")).unwrap();
    scenarios(Arc::new(s.clone())).await;
    s.set(
        "entra-client-secret",
        &SecretString::from("hush".to_string()),
    )
    .await
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(dir.path().join("secrets/entra-client-secret.secret")).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let md = std::fs::metadata(dir.path().join("secrets")).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o700);
    assert!(!format!("{:?}", s.get("entra-client-secret").await.unwrap()).contains("hush"));
}

fn client(ca: &[u8], timeout: std::time::Duration) -> reqwest::Client {
    fido_connector::upstream::http::build_client(timeout, Some(ca)).unwrap()
}

async fn vault() -> (KeyVaultSim, Arc<dyn SecretStore>) {
    let sim = KeyVaultSim::start("kv-token".into()).await.unwrap();
    let store = KeyVaultSecretStore::connect(
        &sim.url.parse().unwrap(),
        StaticTokenCredential::new(SecretString::from("kv-token".to_string())),
        client(&sim.ca_pem, std::time::Duration::from_secs(10)),
    )
    .unwrap();
    (sim, store)
}

/// The vault opened with the connector's own identity: an `azure_identity` client-secret
/// credential against the Entra simulator's HTTPS login host, whose token the vault checks
/// for its audience.
#[tokio::test]
async fn key_vault_with_the_connectors_entra_identity() {
    use fido_connector::azure_auth::Credentials;
    use fido_connector::config::{Config, Env};
    let dir = tempfile::tempdir().unwrap();
    let sb = fido_connector::sandbox::run::prepare(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let sim = KeyVaultSim::start_with(sb.entra.token_check("https://vault.azure.net"))
        .await
        .unwrap();
    let cfg = Config::load(&Env::from_map(&sb.env)).unwrap();
    let http = client(&sim.ca_pem, std::time::Duration::from_secs(10));
    let credential = Credentials::from_config(&cfg.entra, http.clone())
        .azure_resources()
        .unwrap();
    let store = KeyVaultSecretStore::connect(&sim.url.parse().unwrap(), credential, http).unwrap();
    scenarios(store).await;
    assert!(sim.requests() > 0);
}

/// A vault that accepts the connection and never answers costs a bounded wait, not a hang.
#[tokio::test]
async fn key_vault_calls_time_out() {
    let (sim, _) = vault().await;
    let store = KeyVaultSecretStore::connect(
        &sim.url.parse().unwrap(),
        StaticTokenCredential::new(SecretString::from("kv-token".to_string())),
        client(&sim.ca_pem, std::time::Duration::from_secs(1)),
    )
    .unwrap();
    sim.faults.set(FaultConfig {
        hang_rate: 1.0,
        hang_ms: 120_000,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        store.get("ye-api-token"),
    )
    .await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    // One timeout per try, four tries, short back-off: well under the retry budget.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn key_vault_scenarios_over_https_with_the_official_client() {
    let (sim, store) = vault().await;
    scenarios(store.clone()).await;
    // Deleted secrets were purged: nothing live or soft-deleted remains but the token.
    assert_eq!(sim.live_names(), ["ye-api-token"]);
    assert!(sim.deleted_names().is_empty(), "{:?}", sim.deleted_names());
}

#[tokio::test]
async fn key_vault_with_a_wrong_token_fails_cleanly() {
    let sim = KeyVaultSim::start("right".into()).await.unwrap();
    let store = KeyVaultSecretStore::connect(
        &sim.url.parse().unwrap(),
        StaticTokenCredential::new(SecretString::from("wrong".to_string())),
        client(&sim.ca_pem, std::time::Duration::from_secs(10)),
    )
    .unwrap();
    assert!(store.get("ye-api-token").await.is_err());
    assert!(store.ping().await.is_err());
    assert_eq!(sim.requests(), 0);
}

#[tokio::test]
async fn key_vault_outages_surface_as_errors_not_panics() {
    let (sim, store) = vault().await;
    store
        .set("ye-api-token", &SecretString::from("t".to_string()))
        .await
        .unwrap();
    sim.faults.set(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        store.get("ye-api-token"),
    )
    .await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
    sim.faults.clear();
    assert!(store.get("ye-api-token").await.unwrap().is_some());
}

/// Two vaults: the static secrets read-only to the connector (Key Vault Secrets User), the
/// response keys in a vault it writes. The connector writes and deletes response keys,
/// reads the static secrets, and cannot rewrite one of them.
#[tokio::test]
async fn static_secrets_are_read_only_and_response_keys_go_to_their_own_vault() {
    use secrecy::ExposeSecret;
    let (statics_sim, statics) = vault().await;
    let (keys_sim, keys) = vault().await;
    // The deployer stored the static secret; the connector's role is read-only.
    statics
        .set(
            fido_connector::secrets::EMAIL_API_SEND_ENDPOINT,
            &SecretString::from("https://relay.example/send".to_string()),
        )
        .await
        .unwrap();
    statics_sim.set_read_only(true);
    let split = fido_connector::secrets::split::SplitSecrets { statics, keys };
    let response = fido_connector::domain::shipment::response_secret_name("fpr-abc");
    split
        .set(
            &response,
            &SecretString::from("{\"kty\":\"EC\"}".to_string()),
        )
        .await
        .unwrap();
    assert_eq!(keys_sim.live_names(), vec![response.clone()]);
    assert!(statics_sim.live_names().iter().all(|n| n != &response));
    let endpoint = split
        .get(fido_connector::secrets::EMAIL_API_SEND_ENDPOINT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(endpoint.expose_secret(), "https://relay.example/send");
    // A compromised identity cannot redirect the PIN mails.
    assert!(split
        .set(
            fido_connector::secrets::EMAIL_API_SEND_ENDPOINT,
            &SecretString::from("https://attacker.example/".to_string()),
        )
        .await
        .is_err());
    split.delete(&response).await.unwrap();
    assert!(keys_sim.live_names().is_empty());
    split.ping().await.unwrap();
}
