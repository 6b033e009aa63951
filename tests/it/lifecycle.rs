//! Lifecycle scenarios against the simulators: errors, idempotency, token rotation,
//! retries, concurrency, faults and cleanup.

use std::sync::Arc;

use fido_connector::sandbox::faults::FaultConfig;
use fido_connector::sandbox::run::DEMO_USERS;
use serde_json::{json, Value};

use crate::support::{alice, shipment_body, Backend, World};

/// Retries are due at once in these tests (no 30 s back-off).
fn fast_retries(env: &mut std::collections::HashMap<String, String>) {
    env.insert("FIDO_CONNECTOR_RETRY_BASE_SECONDS".into(), "0".into());
}

#[tokio::test]
async fn a_yubienterprise_error_state_is_shown_on_the_shipment() {
    let w = World::start(Backend::Embedded).await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.set_state(&id, 7);
    assert_eq!(w.process().await, 204);
    let v = w.status_of(&id).await;
    assert_eq!(v["shipment_state"], "ongoing");
    assert_eq!(v["error_kind"], "GENERAL");
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("address undeliverable"),
        "{v}"
    );
    assert_eq!(w.sb.entra.registration_count(), 0);
    assert!(w.sb.mail.delivered().is_empty());
    w.stop().await;
}

#[tokio::test]
async fn an_unknown_user_is_an_idp_error_and_no_shipment_is_created() {
    let w = World::start(Backend::Embedded).await;
    let (s, v) = w.create(&shipment_body("nobody@contoso.example")).await;
    assert_eq!(s, 400);
    assert_eq!(
        v,
        json!({"error_code": "idp_error", "error_message": "Could not find user: nobody@contoso.example"})
    );
    assert_eq!(w.sb.ye.created_count(), 0);
    w.stop().await;
}

#[tokio::test]
async fn object_ids_work_as_user_ids() {
    let w = World::start(Backend::Embedded).await;
    let id = w.create_ok(DEMO_USERS[1].1).await;
    w.sb.ye.advance(&id);
    assert_eq!(w.process().await, 204);
    assert_eq!(w.status_of(&id).await["shipment_state"], "complete");
    assert_eq!(w.sb.entra.registered_methods(DEMO_USERS[1].1).len(), 1);
    w.stop().await;
}

#[tokio::test]
async fn idempotency_keys_make_retries_safe() {
    let w = World::start(Backend::Embedded).await;
    let url = format!("{}/v1/fpr/shipments", w.base);
    let body = shipment_body(alice());
    let send = |b: &Value| {
        w.auth(w.http.post(&url))
            .header("idempotency-key", "order-4711")
            .json(b)
            .send()
    };
    let r1 = send(&body).await.unwrap();
    assert_eq!(r1.status(), 201);
    let v1: Value = r1.json().await.unwrap();
    let r2 = send(&body).await.unwrap();
    assert_eq!(r2.status(), 201);
    let v2: Value = r2.json().await.unwrap();
    assert_eq!(v1, v2);
    assert_eq!(w.sb.ye.created_count(), 1);
    let mut other = body.clone();
    other["pin_request"]["length"] = json!(6);
    let r3 = send(&other).await.unwrap();
    assert_eq!(r3.status(), 422);
    let v3: Value = r3.json().await.unwrap();
    assert_eq!(v3["error_data"]["error_type"], "idempotency");
    assert_eq!(w.sb.ye.created_count(), 1);
    w.stop().await;
}

#[tokio::test]
async fn yubienterprise_validation_errors_pass_through_as_ye_error() {
    let w = World::start(Backend::Embedded).await;
    w.sb.ye.reject_next(
        "validation_error",
        "Input for Last Name exceeded limit of 20 characters",
    );
    let (s, v) = w.create(&shipment_body(alice())).await;
    assert_eq!(s, 400);
    assert_eq!(
        v,
        json!({"error_code": "ye_error", "error_message": "Validation error when creating YED shipment",
               "error_data": {"code": "validation_error", "message": "Input for Last Name exceeded limit of 20 characters"}})
    );
    w.stop().await;
}

#[tokio::test]
async fn a_rotated_ye_token_surfaces_as_401_then_is_picked_up_without_restart() {
    let w = World::start(Backend::Embedded).await;
    w.sb.ye.set_token("rotated-in-the-portal");
    let (s, v) = w.create(&shipment_body(alice())).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(v["error_code"], "ye_error");
    // The operator stores the new token; the next call re-reads it on the 401.
    use secrecy::SecretString;
    w.deps()
        .secrets
        .set(
            "ye-api-token",
            &SecretString::from("rotated-in-the-portal".to_string()),
        )
        .await
        .unwrap();
    w.create_ok(alice()).await;
    w.stop().await;
}

#[tokio::test]
async fn an_entra_rejection_fails_the_shipment_with_its_code() {
    let w = World::start(Backend::Embedded).await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.advance(&id);
    // The challenge expires at Entra before registration: Entra refuses it.
    w.sb.entra.expire_challenges();
    assert_eq!(w.process().await, 204);
    let v = w.status_of(&id).await;
    assert_eq!(v["error_kind"], "GENERAL");
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("challengeExpired"),
        "{v}"
    );
    assert!(
        w.sb.mail.delivered().is_empty(),
        "no PIN for an incomplete shipment"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_failed_mail_is_retried_without_registering_again() {
    let w = World::start_with(Backend::Embedded, fast_retries).await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.advance(&id);
    w.sb.mail.faults.set(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    assert_eq!(w.process().await, 204);
    let rec = w.record(&id).await;
    assert_eq!(rec.step, fido_connector::domain::Step::Registered);
    assert_eq!(rec.attempts, 1);
    // Transient errors are not shown while being retried.
    assert!(w.status_of(&id).await.get("error_kind").is_none());
    w.sb.mail.faults.clear();
    assert_eq!(w.process().await, 204);
    assert_eq!(w.status_of(&id).await["shipment_state"], "complete");
    assert_eq!(w.sb.entra.registration_count(), 1);
    assert_eq!(w.sb.mail.delivered().len(), 1);
    w.stop().await;
}

#[tokio::test]
async fn transient_failures_retry_until_the_deadline_never_on_a_count() {
    let w = World::start_with(Backend::Embedded, fast_retries).await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.faults.set(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    // Far more failures than the old attempt limit: still ongoing, saying what it waits for.
    for _ in 0..15 {
        assert_eq!(w.process().await, 204);
    }
    let v = w.status_of(&id).await;
    assert_eq!(v["shipment_state"], "ongoing");
    assert!(v.get("error_kind").is_none(), "not final: {v}");
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .starts_with("retrying: YubiEnterprise"),
        "{v}"
    );
    // The same service with its clock at the deadline (the challenge expiry less the
    // margin): the transient failure now ends the shipment, naming the deadline.
    let rec = w.record(&id).await;
    let clock = std::sync::Arc::new(fido_connector::clock::ManualClock::new(
        rec.step_deadline().unwrap() + chrono::Duration::seconds(1),
    ));
    let mut late = w.deps().clone();
    late.clock = clock;
    let s = fido_connector::lifecycle::process_shipments(&late)
        .await
        .unwrap();
    assert_eq!(s.failed, 1, "{s:?}");
    let v = w.status_of(&id).await;
    assert_eq!(v["error_kind"], "GENERAL");
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("at the deadline"),
        "{v}"
    );
    w.stop().await;
}

#[tokio::test]
async fn resend_is_only_for_complete_shipments() {
    let w = World::start(Backend::Embedded).await;
    let id = w.create_ok(alice()).await;
    let (s, v) = w.get(&format!("/v1/operations/resend-pin/{id}")).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error_data"]["error_type"], "conflict");
    assert!(w.sb.mail.delivered().is_empty());
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_register_and_mail_each_shipment_once() {
    let w = World::start(Backend::Embedded).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(w.create_ok(alice()).await);
    }
    assert_eq!(w.sb.ye.advance_all(), 20);
    // A second "replica": its own dependencies (own store connection, own clients).
    let other = fido_connector::app::build_deps(Arc::new(w.sb.config.clone()))
        .await
        .unwrap();
    let (a, b, c) = tokio::join!(
        fido_connector::lifecycle::process_shipments(w.deps()),
        fido_connector::lifecycle::process_shipments(&other),
        w.process(),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(c, 204);
    // Whatever a lost claim skipped, a later run finishes.
    assert_eq!(w.process().await, 204);
    for id in &ids {
        assert_eq!(w.status_of(id).await["shipment_state"], "complete");
    }
    assert_eq!(w.sb.entra.registration_count(), 20);
    assert_eq!(w.sb.mail.delivered().len(), 20);
    assert_eq!(w.sb.mail.duplicates(), 0);
    w.stop().await;
}

/// `FIDO_CONNECTOR_PROCESS_CONCURRENCY` limits the upstream calls a run has in flight, not
/// the shipments it has in hand: the simulators (YubiEnterprise, Entra, mail together) never
/// see more calls at once than the limit, and a run with enough ready shipments reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_its_upstream_calls_in_flight_within_the_limit() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_PROCESS_CONCURRENCY".into(), "3".into());
    })
    .await;
    // One shipment first, without latency: the token and key-set fetches (once an hour,
    // outside the limit) are done before the spans are counted.
    let first = w.create_ok(alice()).await;
    assert!(w.sb.ye.advance(&first));
    assert_eq!(w.process().await, 204);
    assert_eq!(w.status_of(&first).await["shipment_state"], "complete");
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(w.create_ok(alice()).await);
    }
    assert_eq!(w.sb.ye.advance_all(), 12);
    let slow = FaultConfig {
        latency_ms: 100,
        ..Default::default()
    };
    for f in [&w.sb.ye.faults, &w.sb.entra.faults, &w.sb.mail.faults] {
        f.set(slow.clone());
    }
    assert_eq!(w.process().await, 204);
    for id in &ids {
        assert_eq!(w.status_of(id).await["shipment_state"], "complete");
    }
    assert_eq!(w.sb.entra.registration_count(), 13);
    assert_eq!(w.sb.mail.delivered().len(), 13);
    let spans: Vec<_> = [&w.sb.ye.faults, &w.sb.entra.faults, &w.sb.mail.faults]
        .iter()
        .flat_map(|f| f.served_spans())
        .collect();
    // Three calls per shipment: the YubiEnterprise read, the registration, the mail.
    assert_eq!(spans.len(), 36);
    assert_eq!(fido_connector::sandbox::faults::max_overlap(&spans), 3);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_completes_through_5xx_429_and_timeouts_with_nothing_duplicated() {
    let w = World::start_with(Backend::Embedded, |env| {
        fast_retries(env);
        env.insert("FIDO_CONNECTOR_UPSTREAM_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(w.create_ok(alice()).await);
    }
    w.sb.ye.advance_all();
    let flaky = FaultConfig {
        error_rate: 0.2,
        throttle_rate: 0.1,
        retry_after_secs: 0,
        hang_rate: 0.05,
        hang_ms: 1500,
        ..Default::default()
    };
    w.sb.ye.faults.set(flaky.clone());
    w.sb.entra.faults.set(flaky.clone());
    w.sb.mail.faults.set(flaky);
    for _ in 0..40 {
        assert_eq!(w.process().await, 204);
        let mut done = 0;
        for id in &ids {
            if w.status_of(id).await["shipment_state"] == "complete" {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        // Let a failed key-set fetch become retryable (at most once a second).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for id in &ids {
        let v = w.status_of(id).await;
        let rec = w
            .deps()
            .store
            .get_by_shipment_id(id)
            .await
            .unwrap()
            .unwrap()
            .value;
        assert_eq!(v["shipment_state"], "complete", "{v} {rec:?}");
    }
    assert_eq!(w.sb.entra.registration_count(), 10);
    assert_eq!(w.sb.mail.delivered().len(), 10);
    assert_eq!(w.sb.ye.created_count(), 10);
    w.stop().await;
}

#[tokio::test]
async fn cleanup_removes_old_complete_records_and_their_keys() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("CRON_DATA_CLEANUP_COMPLETED_DAYS".into(), "1".into());
    })
    .await;
    let done = w.create_ok(alice()).await;
    w.sb.ye.advance(&done);
    assert_eq!(w.process().await, 204);
    let open = w.create_ok(alice()).await;
    let rec = w
        .deps()
        .store
        .get_by_shipment_id(&done)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert!(w
        .deps()
        .secrets
        .get(&rec.secret_name())
        .await
        .unwrap()
        .is_some());

    // Today nothing is old enough.
    assert_eq!(
        fido_connector::lifecycle::cleanup(w.deps()).await.unwrap(),
        0
    );
    // Two days later, as seen by a replica whose clock says so.
    let mut later = w.deps().clone();
    later.clock = Arc::new(fido_connector::clock::ManualClock::new(
        chrono::Utc::now() + chrono::Duration::days(2),
    ));
    later.instance_id = "later".into();
    assert_eq!(fido_connector::lifecycle::cleanup(&later).await.unwrap(), 1);
    assert!(w
        .deps()
        .store
        .get_by_shipment_id(&done)
        .await
        .unwrap()
        .is_none());
    assert!(w
        .deps()
        .secrets
        .get(&rec.secret_name())
        .await
        .unwrap()
        .is_none());
    assert!(w
        .deps()
        .store
        .get_by_shipment_id(&open)
        .await
        .unwrap()
        .is_some());
    w.stop().await;
}

/// With the vendor's "never" (`CRON_DATA_CLEANUP_COMPLETED_DAYS=0`, the default), ended
/// shipments and their response keys still go after the retention (400 days by default):
/// nothing is kept for ever unless configured so.
#[tokio::test]
async fn ended_shipments_go_after_the_default_retention() {
    let w = World::start(Backend::Embedded).await;
    let done = w.create_ok(alice()).await;
    w.sb.ye.advance(&done);
    assert_eq!(w.process().await, 204);
    let rec = w.record(&done).await;
    assert_eq!(rec.step, fido_connector::domain::Step::Complete);
    let at = |days: i64| {
        let mut d = w.deps().clone();
        d.clock = Arc::new(fido_connector::clock::ManualClock::new(
            chrono::Utc::now() + chrono::Duration::days(days),
        ));
        d.instance_id = format!("later-{days}/boot");
        d
    };
    assert_eq!(
        fido_connector::lifecycle::cleanup(&at(399)).await.unwrap(),
        0
    );
    assert_eq!(
        fido_connector::lifecycle::cleanup(&at(401)).await.unwrap(),
        1
    );
    assert!(w
        .deps()
        .secrets
        .get(&rec.secret_name())
        .await
        .unwrap()
        .is_none());
    w.stop().await;
}
