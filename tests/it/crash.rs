//! The connector as a separate process, killed at each step boundary (test-only crash
//! points, feature `fault-injection`), restarted, and checked: each request has at most one
//! YubiEnterprise shipment, one Entra registration and one PIN mail, and no record is lost.
//! The same runs' logs are then searched for every secret they handled.

use std::path::PathBuf;

use fido_connector::domain::Step;
use fido_connector::sandbox::run::{prepare, Sandbox};
use fido_connector::store::{Query, ShipmentStore};
use serde_json::Value;

use crate::support::process::{spawn, Proc};
use crate::support::{alice, shipment_body};

async fn post(p: &Proc, key: &str, idem: &str) -> Result<(u16, Value), reqwest::Error> {
    post_body(p, key, idem, &shipment_body(alice())).await
}

async fn post_body(
    p: &Proc,
    key: &str,
    idem: &str,
    body: &Value,
) -> Result<(u16, Value), reqwest::Error> {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/fpr/shipments", p.base))
        .header("authorization", format!("Bearer {key}"))
        .header("idempotency-key", idem)
        .json(body)
        .send()
        .await?;
    let s = r.status().as_u16();
    Ok((s, r.json().await.unwrap_or(Value::Null)))
}

async fn get(p: &Proc, key: &str, path: &str) -> Result<u16, reqwest::Error> {
    Ok(reqwest::Client::new()
        .get(format!("{}{path}", p.base))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await?
        .status()
        .as_u16())
}

struct Run {
    sb: Sandbox,
    _dir: tempfile::TempDir,
    data: PathBuf,
    log: PathBuf,
}

async fn world() -> Run {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let mut sb = prepare(&data, "127.0.0.1:0", None).await.unwrap();
    sb.env.insert(
        "CRON_PROCESS_SHIPMENT_SCHEDULE".into(),
        "0 0 0 1 1 *".into(),
    );
    let log = data.join("connector.log");
    Run {
        sb,
        _dir: dir,
        data,
        log,
    }
}

fn store(run: &Run) -> fido_connector::store::sqlite::SqliteStore {
    fido_connector::store::sqlite::SqliteStore::open(&run.data.join("shipments.sqlite3")).unwrap()
}

/// The stored record of a shipment.
async fn shipment(run: &Run, id: &str) -> fido_connector::domain::ShipmentRecord {
    store(run)
        .get_by_shipment_id(id)
        .await
        .unwrap()
        .unwrap()
        .value
}

/// The record a 409 names (`error_data.request_id`).
async fn named_record(run: &Run, answer: &Value) -> fido_connector::domain::ShipmentRecord {
    let id = answer["error_data"]["request_id"].as_str().unwrap();
    store(run).get(id).await.unwrap().unwrap().value
}

/// Records with processing work left (the processing scan also reads ended records whose
/// alert is not settled yet; those are not open).
async fn open_records(run: &Run) -> Vec<fido_connector::domain::ShipmentRecord> {
    store(run)
        .query(&Query::Open, None, 1000)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|v| v.value)
        .filter(|r| r.step.is_open())
        .collect()
}

/// Crashed after writing the record, before YubiEnterprise: the record is kept (Accepted),
/// no shipment exists, and the retry with the same key does not create one blindly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_record_keeps_the_request_and_creates_nothing() {
    let run = world().await;
    let key = run.sb.api_key.clone();
    let mut p = spawn(&run.sb.env, Some("create:after-record"), &run.log).await;
    assert!(
        post(&p, &key, "k1").await.is_err(),
        "the process died mid-request"
    );
    p.wait_dead().await;
    // The same replica restarted: it takes its dead incarnation's claim back at once and,
    // since nobody knows whether YubiEnterprise acted, locks the key for an operator.
    let p = spawn(&run.sb.env, None, &run.log).await;
    let (s, v) = post(&p, &key, "k1").await.unwrap();
    assert_eq!(s, 409, "{v}");
    assert_eq!(run.sb.ye.created_count(), 0);
    assert!(open_records(&run).await.is_empty());
    let rec = named_record(&run, &v).await;
    assert_eq!(
        rec.step,
        Step::Unknown,
        "no record lost: flagged for an operator"
    );
    // The operator checked YubiEnterprise: nothing there. The same key then proceeds.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/operations/retry/{}", p.base, rec.request_id))
        .header("authorization", format!("Bearer {key}"))
        .json(&serde_json::json!({"resolution": "not_created"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, v) = post(&p, &key, "k1").await.unwrap();
    assert_eq!(s, 201, "{v}");
    assert_eq!(run.sb.ye.created_count(), 1);
    p.stop();
    assert_secrets_absent(&run);
}

/// A replica dies mid-create; another replica (another name) leaves the record alone while
/// the dead one's claim is live, and flags it for an operator once the claim lapses (a
/// 4 s TTL, waited for in real time). Nothing is sent to YubiEnterprise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_flags_an_interrupted_create_once_its_claim_lapses() {
    let mut run = world().await;
    run.sb
        .env
        .insert("FIDO_CONNECTOR_CLAIM_TTL_SECONDS".into(), "4".into());
    let key = run.sb.api_key.clone();
    let mut a = run.sb.env.clone();
    a.insert("FIDO_CONNECTOR_REPLICA_NAME".into(), "replica-a".into());
    let mut b = run.sb.env.clone();
    b.insert("FIDO_CONNECTOR_REPLICA_NAME".into(), "replica-b".into());
    let mut p = spawn(&a, Some("create:after-record"), &run.log).await;
    assert!(post(&p, &key, "k4").await.is_err());
    p.wait_dead().await;
    let died = std::time::Instant::now();
    let q = spawn(&b, None, &run.log).await;
    assert_eq!(
        get(&q, &key, "/v1/operations/process-shipments")
            .await
            .unwrap(),
        204
    );
    if died.elapsed() < std::time::Duration::from_secs(3) {
        let open = open_records(&run).await;
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].step, Step::Accepted, "a live claim is left alone");
    }
    tokio::time::sleep(std::time::Duration::from_millis(4200).saturating_sub(died.elapsed())).await;
    assert_eq!(
        get(&q, &key, "/v1/operations/process-shipments")
            .await
            .unwrap(),
        204
    );
    assert!(open_records(&run).await.is_empty());
    let (s, v) = post(&q, &key, "k4").await.unwrap();
    assert_eq!(s, 409, "{v}");
    let rec = named_record(&run, &v).await;
    assert_eq!(rec.step, Step::Unknown);
    assert!(rec.error.unwrap().message.contains(&rec.request_id));
    assert_eq!(run.sb.ye.created_count(), 0, "never retried blindly");
    q.stop();
}

/// Crashed after YubiEnterprise accepted, before recording it: exactly one YE shipment, the
/// retry does not create a second, and the record stays for the job to flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_ye_never_creates_a_second_shipment() {
    let run = world().await;
    let key = run.sb.api_key.clone();
    let mut p = spawn(&run.sb.env, Some("create:after-ye"), &run.log).await;
    assert!(post(&p, &key, "k2").await.is_err());
    p.wait_dead().await;
    assert_eq!(run.sb.ye.created_count(), 1);
    let p = spawn(&run.sb.env, None, &run.log).await;
    let mut answer = Value::Null;
    for _ in 0..3 {
        let (s, v) = post(&p, &key, "k2").await.unwrap();
        assert_eq!(s, 409);
        answer = v;
    }
    assert_eq!(run.sb.ye.created_count(), 1);
    let rec = named_record(&run, &answer).await;
    assert_eq!(
        rec.step,
        Step::Unknown,
        "no record lost: flagged for an operator"
    );
    p.stop();
    assert_secrets_absent(&run);
}

/// Creates `body` in a process that dies at `point` of its processing run once Yubico has
/// programmed the key; returns the shipment id.
async fn created_then_crashed(run: &Run, point: &str, body: &Value) -> String {
    let key = run.sb.api_key.clone();
    let mut p = spawn(&run.sb.env, Some(point), &run.log).await;
    let (s, v) = post_body(&p, &key, "k3", body).await.unwrap();
    assert_eq!(s, 201, "{v}");
    let id = v["data"]["shipment_id"].as_str().unwrap().to_string();
    run.sb.ye.advance(&id);
    assert!(get(&p, &key, "/v1/operations/process-shipments")
        .await
        .is_err());
    p.wait_dead().await;
    id
}

async fn crash_in_processing(point: &str) -> Run {
    let run = world().await;
    let key = run.sb.api_key.clone();
    let id = created_then_crashed(&run, point, &shipment_body(alice())).await;
    let s = store(&run);
    let v = s.get_by_shipment_id(&id).await.unwrap().unwrap();
    assert!(
        v.value.lease_until.is_some_and(|t| t > chrono::Utc::now()),
        "the dead process still holds a live claim"
    );
    drop(s);
    // Restarted as the same replica: it takes the claim of its former incarnation at once,
    // with nothing edited in the store.
    let p = spawn(&run.sb.env, None, &run.log).await;
    assert_eq!(
        get(&p, &key, "/v1/operations/process-shipments")
            .await
            .unwrap(),
        204
    );
    let st = reqwest::Client::new()
        .get(format!("{}/v1/fpr/shipments/{id}", p.base))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(st["shipment_state"], "complete", "{st}");
    assert_eq!(run.sb.ye.created_count(), 1);
    assert_eq!(
        run.sb.entra.registration_count(),
        1,
        "registered exactly once"
    );
    assert_eq!(run.sb.mail.delivered().len(), 1, "mailed exactly once");
    p.stop();
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_registration_does_not_register_twice() {
    let run = crash_in_processing("process:after-register").await;
    assert_secrets_absent(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_mail_does_not_mail_twice() {
    let run = crash_in_processing("process:after-mail").await;
    // The relay saw the first mail's id again after the restart and dropped the repeat.
    assert_eq!(run.sb.mail.duplicates(), 1);
    assert_secrets_absent(&run);
}

/// 30 ready shipments; the process is killed (`kill -9`) mid-run three times and restarted
/// as the same replica each time. It takes its dead incarnations' claims back at once (the
/// claim TTL is the default 30 s, and nothing in the store is edited): everything completes
/// within 10 s of the last restart, each shipment registered and mailed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_three_times_mid_run_it_resumes_at_once_after_each_restart() {
    let mut run = world().await;
    run.sb
        .env
        .insert("FIDO_CONNECTOR_RETRY_BASE_SECONDS".into(), "0".into());
    let key = run.sb.api_key.clone();
    let mut p = spawn(&run.sb.env, None, &run.log).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let (s, v) = post(&p, &key, &format!("kill-{i}")).await.unwrap();
        assert_eq!(s, 201, "{v}");
        ids.push(v["data"]["shipment_id"].as_str().unwrap().to_string());
    }
    run.sb.ye.advance_all();
    let slow = fido_connector::sandbox::faults::FaultConfig {
        latency_ms: 150,
        ..Default::default()
    };
    run.sb.entra.faults.set(slow.clone());
    run.sb.mail.faults.set(slow);
    for k in 0..3u64 {
        let (base, key) = (p.base.clone(), key.clone());
        tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .get(format!("{base}/v1/operations/process-shipments"))
                .header("authorization", format!("Bearer {key}"))
                .send()
                .await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(400 + 150 * k)).await;
        p.stop(); // SIGKILL
        p = spawn(&run.sb.env, None, &run.log).await;
    }
    let restarted = std::time::Instant::now();
    loop {
        assert_eq!(
            get(&p, &key, "/v1/operations/process-shipments")
                .await
                .unwrap(),
            204
        );
        let mut done = 0;
        for id in &ids {
            let v = reqwest::Client::new()
                .get(format!("{}/v1/fpr/shipments/{id}", p.base))
                .header("authorization", format!("Bearer {key}"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap();
            if v["shipment_state"] == "complete" {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            restarted.elapsed() < std::time::Duration::from_secs(10),
            "{done}/30 complete 10 s after the last restart"
        );
    }
    eprintln!(
        "all 30 complete {:?} after the last restart",
        restarted.elapsed()
    );
    assert_eq!(
        run.sb.entra.registration_count(),
        30,
        "registered once each"
    );
    assert_eq!(run.sb.mail.delivered().len(), 30, "mailed once each");
    p.stop();
    assert_secrets_absent(&run);
}

/// Okta: killed right after Okta activated the enrollment, before the activation was
/// recorded. Restarted as the same replica, it sees the activation was asked (the mark
/// written before the call), lists the user's enrollments, finds it active and goes on to
/// send-pin: activated once, the PIN sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_crash_between_activate_and_send_pin_does_not_activate_twice() {
    let run = world().await;
    let key = run.sb.api_key.clone();
    let body = crate::okta::okta_body(fido_connector::sandbox::run::OKTA_DEMO_USERS[0].0);
    let id = created_then_crashed(&run, "process:after-register", &body).await;
    let rec = shipment(&run, &id).await;
    assert_eq!(rec.step, Step::Ongoing, "the activation was not recorded");
    assert!(rec.register_started_at.is_some());
    let enrollment = rec.okta_enrollments[0].clone();
    assert_eq!(run.sb.okta.enrollment(&enrollment), Some(("ACTIVE", 1)));
    assert!(run.sb.okta.mails().is_empty());
    let p = spawn(&run.sb.env, None, &run.log).await;
    assert_eq!(
        get(&p, &key, "/v1/operations/process-shipments")
            .await
            .unwrap(),
        204
    );
    let rec = shipment(&run, &id).await;
    assert_eq!(rec.step, Step::Complete, "{:?}", rec.error);
    assert_eq!(
        run.sb.okta.enrollment(&enrollment),
        Some(("ACTIVE", 1)),
        "activated exactly once"
    );
    assert_eq!(run.sb.okta.mails().len(), 1, "the PIN sent exactly once");
    assert_eq!(run.sb.ye.created_count(), 1);
    p.stop();
    assert_secrets_absent(&run);
}

/// Greps the run's logs for every secret the run handled.
fn assert_secrets_absent(run: &Run) {
    let logs = std::fs::read_to_string(&run.log).unwrap();
    assert!(
        logs.contains("fido-connector listening") || logs.contains("\"level\""),
        "logs were captured"
    );
    let mut secrets: Vec<(String, String)> = vec![
        ("API key".into(), run.sb.api_key.clone()),
        (
            "mail signature".into(),
            run.sb.mail.url().split("sig=").nth(1).unwrap().to_string(),
        ),
    ];
    for m in run.sb.mail.delivered() {
        secrets.push(("PIN".into(), m["pin"].as_str().unwrap().to_string()));
    }
    for t in run.sb.entra.issued_tokens() {
        secrets.push(("Graph token".into(), t));
    }
    for m in run.sb.okta.mails() {
        secrets.push(("PIN sent by Okta".into(), m.pin));
    }
    for t in run.sb.okta.issued_tokens() {
        secrets.push(("Okta token".into(), t));
    }
    for entry in std::fs::read_dir(run.data.join("secrets")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        match serde_json::from_str::<Value>(&text) {
            Ok(jwk) => secrets.push((
                "response private key".into(),
                jwk["d"].as_str().unwrap().to_string(),
            )),
            Err(_) => secrets.push((path.display().to_string(), text)),
        }
    }
    assert!(secrets.len() >= 4);
    for (what, s) in secrets {
        assert!(s.len() >= 4);
        assert!(!logs.contains(&s), "{what} appears in the logs");
    }
}
