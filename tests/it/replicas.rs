//! Three connector processes over one Azure Tables store (Azurite) and one set of
//! simulators process 300 ready shipments at once: every shipment is registered once and
//! mailed once. Coordination is only through conditional writes in the table.

use fido_connector::sandbox::run::prepare;
use serde_json::Value;

use crate::support::process::spawn;
use crate::support::{alice, shipment_body, use_azurite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_process_300_shipments_each_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = prepare(dir.path(), "127.0.0.1:0", None).await.unwrap();
    sb.env.insert(
        "CRON_PROCESS_SHIPMENT_SCHEDULE".into(),
        "0 0 0 1 1 *".into(),
    );
    sb.env
        .insert("FIDO_CONNECTOR_PROCESS_CONCURRENCY".into(), "8".into());
    use_azurite(&mut sb.env).await;
    let log = dir.path().join("replicas.log");
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(spawn(&sb.env, None, &log).await);
    }
    let http = reqwest::Client::new();
    let key = sb.api_key.clone();

    // 300 shipments, created round-robin through the three replicas, 10 at a time.
    let body = shipment_body(alice());
    let mut ids = Vec::new();
    for chunk in 0..30 {
        let futs = (0..10).map(|i| {
            let base = replicas[(chunk * 10 + i) % 3].base.clone();
            let (http, key, body) = (http.clone(), key.clone(), body.clone());
            async move {
                let r = http
                    .post(format!("{base}/v1/fpr/shipments"))
                    .header("authorization", format!("Bearer {key}"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                r.json::<Value>().await.unwrap()["data"]["shipment_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            }
        });
        ids.extend(futures::future::join_all(futs).await);
    }
    assert_eq!(sb.ye.created_count(), 300);
    assert_eq!(sb.ye.advance_all(), 300);

    // All three process at once.
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
    for s in futures::future::join_all(runs).await {
        assert_eq!(s, 204);
    }
    // Records a replica skipped because another held them are finished by a later run.
    let _ = http
        .get(format!(
            "{}/v1/operations/process-shipments",
            replicas[0].base
        ))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap();

    let mut complete = 0;
    for id in &ids {
        let v: Value = http
            .get(format!("{}/v1/fpr/shipments/{id}", replicas[1].base))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["shipment_state"] == "complete" {
            complete += 1;
        }
    }
    assert_eq!(complete, 300);
    assert_eq!(
        sb.entra.registration_count(),
        300,
        "each credential registered once"
    );
    assert_eq!(sb.mail.delivered().len(), 300, "each PIN mailed once");
    assert_eq!(
        sb.mail.duplicates(),
        0,
        "not even a repeat reached the relay"
    );
    for p in replicas {
        p.stop();
    }
}
