//! Three connector processes over one Azure Tables store (Azurite) and one set of
//! simulators process 300 ready shipments at once, Entra's and Okta's side by side: every
//! shipment is registered (activated) once and its PIN mailed once. Coordination is only through conditional writes in the table.

use fido_connector::sandbox::run::prepare;
use serde_json::Value;

use crate::support::process::spawn;
use crate::support::{alice, shipment_body, use_azurite};

/// The same environment as replica `i` (each replica has its own name).
fn as_replica(
    env: &std::collections::HashMap<String, String>,
    i: usize,
) -> std::collections::HashMap<String, String> {
    let mut e = env.clone();
    e.insert("FIDO_CONNECTOR_REPLICA_NAME".into(), format!("replica-{i}"));
    e
}

async fn create_many(base: &str, key: &str, n: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = http
            .post(format!("{base}/v1/fpr/shipments"))
            .header("authorization", format!("Bearer {key}"))
            .json(&shipment_body(alice()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        ids.push(
            r.json::<Value>().await.unwrap()["data"]["shipment_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ids
}

async fn all_complete(base: &str, key: &str, ids: &[String]) -> bool {
    let http = reqwest::Client::new();
    for id in ids {
        let Ok(r) = http
            .get(format!("{base}/v1/fpr/shipments/{id}"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
        else {
            return false;
        };
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if v["shipment_state"] != "complete" {
            return false;
        }
    }
    true
}

/// Three replicas on their cron schedule; one is killed (`kill -9`) mid-run and never
/// restarted. The other two finish its work within one claim TTL plus one tick, each
/// shipment registered and mailed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_is_absorbed_by_the_others_within_one_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = prepare(dir.path(), "127.0.0.1:0", None).await.unwrap();
    // Ticks every 2 s; claims and job leases last 5 s.
    sb.env.insert(
        "CRON_PROCESS_SHIPMENT_SCHEDULE".into(),
        "*/2 * * * * *".into(),
    );
    sb.env
        .insert("FIDO_CONNECTOR_CLAIM_TTL_SECONDS".into(), "5".into());
    sb.env
        .insert("FIDO_CONNECTOR_RETRY_BASE_SECONDS".into(), "0".into());
    use_azurite(&mut sb.env).await;
    let log = dir.path().join("replicas-kill.log");
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(spawn(&as_replica(&sb.env, i), None, &log).await);
    }
    let key = sb.api_key.clone();
    let ids = create_many(&replicas[0].base, &key, 30).await;
    // Slow upstreams: a run takes seconds, so the kill lands mid-run.
    let slow = fido_connector::sandbox::faults::FaultConfig {
        latency_ms: 300,
        ..Default::default()
    };
    sb.entra.faults.set(slow.clone());
    sb.mail.faults.set(slow);
    sb.ye.advance_all();
    // Replica 2 starts an on-demand run (it claims up to its concurrency at once) ...
    let base2 = replicas[2].base.clone();
    let k2 = key.clone();
    tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .get(format!("{base2}/v1/operations/process-shipments"))
            .header("authorization", format!("Bearer {k2}"))
            .send()
            .await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    // ... and dies holding its claims.
    let killed = replicas.pop().unwrap();
    killed.stop();
    let t0 = std::time::Instant::now();
    let mut done = false;
    while t0.elapsed() < std::time::Duration::from_secs(30) {
        if all_complete(&replicas[0].base, &key, &ids).await {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let took = t0.elapsed();
    assert!(done, "the survivors did not finish the dead replica's work");
    // One TTL (5 s) + one tick (2 s) + the survivors' own processing at 300 ms per call.
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
    eprintln!("survivors finished the dead replica's work {took:?} after the kill");
    assert_eq!(sb.entra.registration_count(), 30, "registered once each");
    assert_eq!(sb.mail.delivered().len(), 30, "mailed once each");
    for p in replicas {
        p.stop();
    }
}

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
    for i in 0..3 {
        replicas.push(spawn(&as_replica(&sb.env, i), None, &log).await);
    }
    let http = reqwest::Client::new();
    let key = sb.api_key.clone();

    // 300 shipments, created round-robin through the three replicas, 10 at a time; every
    // third one for an Okta user (the sandbox's second instance), the others for Entra.
    let entra_body = shipment_body(alice());
    let okta_body = crate::okta::okta_body(fido_connector::sandbox::run::OKTA_DEMO_USERS[0].0);
    let mut ids = Vec::new();
    for chunk in 0..30 {
        let futs = (0..10).map(|i| {
            let n = chunk * 10 + i;
            let base = replicas[n % 3].base.clone();
            let body = if n % 3 == 2 { &okta_body } else { &entra_body };
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
        200,
        "each Entra credential registered once"
    );
    assert_eq!(sb.mail.delivered().len(), 200, "each Entra PIN mailed once");
    let enrollments = sb.okta.enrollments();
    assert_eq!(enrollments.len(), 100);
    assert!(
        enrollments
            .iter()
            .all(|(_, status, n)| *status == "ACTIVE" && *n == 1),
        "each Okta enrollment activated once"
    );
    let mut sent: Vec<String> = sb
        .okta
        .mails()
        .into_iter()
        .map(|m| m.enrollment_id)
        .collect();
    sent.sort();
    sent.dedup();
    assert_eq!(sb.okta.mails().len(), 100, "each Okta PIN sent once");
    assert_eq!(sent.len(), 100);
    assert_eq!(
        sb.mail.duplicates(),
        0,
        "not even a repeat reached the relay"
    );
    for p in replicas {
        p.stop();
    }
}
