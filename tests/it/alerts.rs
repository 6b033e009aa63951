//! Alerts: three replicas over one Azure Tables store process the same shipments at once;
//! a YubiEnterprise error state, an expiring challenge and a PIN mail outage each produce
//! exactly one webhook call per shipment and cause, and no body holds a secret.

use std::collections::BTreeMap;

use fido_connector::sandbox::faults::FaultConfig;
use fido_connector::sandbox::run::prepare;
use serde_json::Value;

use crate::support::process::spawn;
use crate::support::{alice, shipment_body, use_azurite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cause_is_posted_once_with_three_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = prepare(dir.path(), "127.0.0.1:0", None).await.unwrap();
    for (k, v) in [
        // Runs only when asked (below), all three at once.
        ("CRON_PROCESS_SHIPMENT_SCHEDULE", "0 0 0 1 1 *"),
        // A challenge that expires within 15 days needs attention: the default 14-day
        // challenge always does, until Yubico programs the key.
        ("FIDO_CONNECTOR_ATTENTION_DAYS", "15"),
        // Mail retries come at once, so that a few runs make an outage.
        ("FIDO_CONNECTOR_RETRY_BASE_SECONDS", "0"),
    ] {
        sb.env.insert(k.into(), v.into());
    }
    use_azurite(&mut sb.env).await;
    let log = dir.path().join("alerts.log");
    let mut replicas = Vec::new();
    for i in 0..3 {
        let mut env = sb.env.clone();
        env.insert("FIDO_CONNECTOR_REPLICA_NAME".into(), format!("replica-{i}"));
        replicas.push(spawn(&env, None, &log).await);
    }
    let http = reqwest::Client::new();
    let key = sb.api_key.clone();
    let create = |base: String| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/fpr/shipments"))
                .header("authorization", format!("Bearer {key}"))
                .json(&shipment_body(alice()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<Value>().await.unwrap()["data"]["shipment_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // A: address undeliverable at YubiEnterprise. B: waiting for Yubico (its challenge
    // expires within the attention window). C: programmed, then its PIN mail fails.
    let a = create(replicas[0].base.clone()).await;
    let b = create(replicas[1].base.clone()).await;
    let c = create(replicas[2].base.clone()).await;
    assert!(sb.ye.set_state(&a, 7));
    assert!(sb.ye.advance(&c));
    sb.mail.faults.set(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    let run_all = || {
        let runs = replicas.iter().map(|p| {
            let (http, key, base) = (http.clone(), key.clone(), p.base.clone());
            async move {
                http.get(format!("{base}/v1/operations/process-shipments"))
                    .header("authorization", format!("Bearer {key}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        });
        futures::future::join_all(runs)
    };
    let expected: BTreeMap<(String, String), usize> = [
        // State 7 fails the shipment at once: the alert names the YubiEnterprise state.
        (a.clone(), "ye_error_state"),
        // C was expiring too when first scanned, but its step found it programmed.
        (b.clone(), "challenge_expiring"),
        (c.clone(), "mail_failing"),
    ]
    .into_iter()
    .map(|(id, cause)| ((id, cause.to_string()), 1))
    .collect();
    let posted = || {
        let mut m: BTreeMap<(String, String), usize> = BTreeMap::new();
        for body in sb.webhook.received() {
            let k = (
                body["alert"]["shipment_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                body["alert"]["cause"].as_str().unwrap().to_string(),
            );
            *m.entry(k).or_default() += 1;
        }
        m
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while posted() != expected && std::time::Instant::now() < deadline {
        for s in run_all().await {
            assert_eq!(s, 204);
        }
    }
    // More runs change nothing: every alert is settled.
    for _ in 0..2 {
        run_all().await;
    }
    assert_eq!(posted(), expected, "{:#?}", sb.webhook.received());
    sb.mail.faults.clear();

    // No body holds a secret or a link.
    let secrets = [
        key.as_str(),
        sb.env["AZURE_CLIENT_SECRET"].as_str(),
        sb.env["AZURE_STORAGE_ACCOUNT_KEY"].as_str(),
    ];
    for body in sb.webhook.received() {
        let text = body.to_string();
        for s in secrets {
            assert!(!text.contains(s), "a secret in {text}");
        }
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{text}"
        );
        assert!(body["text"]
            .as_str()
            .unwrap()
            .starts_with("fido-connector: "));
        assert_eq!(body["alert"]["user_id"], alice());
        assert_eq!(
            body["alert"]["idp_instance"],
            fido_connector::sandbox::run::SANDBOX_ENTRA_INSTANCE
        );
    }
    // The history says it was sent.
    let r = http
        .get(format!("{}/v1/fpr/shipments/{c}/events", replicas[0].base))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();
    let events: Value = r.json().await.unwrap();
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "alert_sent" && e["detail"] == "mail_failing"),
        "{events}"
    );
    for p in replicas {
        p.stop();
    }
}
