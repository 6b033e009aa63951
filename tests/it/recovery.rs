//! Every failure recovers: the six cases of issue "Every failure recovers", each against
//! the simulators with real timing (nothing in the store is edited to skip a wait).

use std::time::Duration;

use fido_connector::sandbox::faults::FaultConfig;
use serde_json::Value;

use crate::support::{alice, shipment_body, Backend, World};

fn fast(env: &mut std::collections::HashMap<String, String>) {
    env.insert("FIDO_CONNECTOR_RETRY_BASE_SECONDS".into(), "0".into());
}

/// A running replica has Yubico's transport keys cached from earlier creates (they are
/// published on another host than the API, so API faults do not reach them).
async fn warm(w: &World) {
    w.deps().keys.transport_key().await.unwrap();
}

async fn post_idem(w: &World, key: &str) -> (u16, Value, Option<String>) {
    let r = w
        .auth(w.http.post(format!("{}/v1/fpr/shipments", w.base)))
        .header("idempotency-key", key)
        .json(&shipment_body(alice()))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let ra = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (s, r.json().await.unwrap_or(Value::Null), ra)
}

/// 1. Yubico rotates its signing key seconds after the connector fetched the set: the
///    next response is "not yet" (retried), then verifies once the cooldown allows a
///    refresh. Never failed.
#[tokio::test]
async fn a_sign_key_rotated_after_the_last_fetch_delays_but_never_fails() {
    let w = World::start_with(Backend::Embedded, |env| {
        fast(env);
        env.insert(
            "FIDO_CONNECTOR_KEY_REFRESH_COOLDOWN_MS".into(),
            "1500".into(),
        );
    })
    .await;
    let a = w.create_ok(alice()).await;
    let b = w.create_ok(alice()).await;
    w.sb.ye.advance(&a);
    assert_eq!(w.process().await, 204);
    assert_eq!(w.status_of(&a).await["shipment_state"], "complete");
    // Rotation right after the fetch; B is sealed with the new key.
    w.sb.ye.rotate_sign_key().unwrap();
    w.sb.ye.advance(&b);
    assert_eq!(w.process().await, 204);
    let v = w.status_of(&b).await;
    assert_eq!(v["shipment_state"], "ongoing", "{v}");
    assert!(v.get("error_kind").is_none(), "not failed: {v}");
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("not published"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(w.process().await, 204);
    assert_eq!(w.status_of(&b).await["shipment_state"], "complete");
    assert_eq!(w.sb.entra.registration_count(), 2);
    w.stop().await;
}

/// 2. YubiEnterprise answered 503 (then 429): it did nothing, so the same
///    Idempotency-Key proceeds once it is back. One shipment in the end.
#[tokio::test]
async fn a_create_refused_with_503_or_429_can_be_retried_with_the_same_key() {
    let w = World::start(Backend::Embedded).await;
    warm(&w).await;
    for (i, fault) in [
        FaultConfig {
            error_rate: 1.0,
            ..Default::default()
        },
        FaultConfig {
            throttle_rate: 1.0,
            retry_after_secs: 1,
            ..Default::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("careful-client-{i}");
        w.sb.ye.faults.set(fault);
        let (s, v, ra) = post_idem(&w, &key).await;
        assert_eq!(s, 503, "{v}");
        assert!(ra.is_some(), "503 carries Retry-After");
        // The key is not stuck in "in progress".
        w.sb.ye.faults.clear();
        let (s, v, _) = post_idem(&w, &key).await;
        assert_eq!(s, 201, "{v}");
        let (s, v2, _) = post_idem(&w, &key).await;
        assert_eq!(s, 201);
        assert_eq!(v["data"], v2["data"]);
    }
    assert_eq!(w.sb.ye.created_count(), 2);
    w.stop().await;
}

/// A brief 503 burst is absorbed inside the request (bounded, honouring Retry-After).
#[tokio::test]
async fn a_short_503_burst_is_retried_inside_the_request() {
    let w = World::start(Backend::Embedded).await;
    warm(&w).await;
    w.sb.ye.faults.set(FaultConfig {
        fail_next: 2,
        ..Default::default()
    });
    let (s, v, _) = post_idem(&w, "burst").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(w.sb.ye.created_count(), 1);
    w.stop().await;
}

/// An unknown outcome (no answer after sending) locks the key with 409 + Retry-After and
/// the request id; the operator resolves it and the shipment goes on.
#[tokio::test]
async fn an_unknown_create_outcome_is_locked_until_an_operator_resolves_it() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_UPSTREAM_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    warm(&w).await;
    w.sb.ye.faults.set(FaultConfig {
        hang_rate: 1.0,
        hang_ms: 2500,
        ..Default::default()
    });
    let (s, v, ra) = post_idem(&w, "k-unknown").await;
    assert_eq!(s, 409, "{v}");
    assert!(ra.is_some());
    let request_id = v["error_data"]["request_id"].as_str().unwrap().to_string();
    w.sb.ye.faults.clear();
    let (s, _, _) = post_idem(&w, "k-unknown").await;
    assert_eq!(s, 409, "still locked: never created blindly");
    assert_eq!(w.sb.ye.created_count(), 0);
    // Resolving needs Operations.Run and a valid resolution.
    let retry = |body: Value| {
        w.auth(
            w.http
                .post(format!("{}/v1/operations/retry/{request_id}", w.base)),
        )
        .json(&body)
        .send()
    };
    let r = retry(serde_json::json!({"resolution": "created", "ye_shipment_id": "nope"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "YubiEnterprise has no such shipment");
    let r = retry(serde_json::json!({"resolution": "not_created"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, v, _) = post_idem(&w, "k-unknown").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(w.sb.ye.created_count(), 1);
    w.stop().await;
}

/// 4. A half-bad answer (the PIN response names another serial): nothing is registered in
///    Entra; the shipment fails naming the cause.
#[tokio::test]
async fn a_half_bad_yubico_answer_registers_nothing() {
    let w = World::start(Backend::Embedded).await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.mismatch_pin_serials(true);
    w.sb.ye.advance(&id);
    assert_eq!(w.process().await, 204);
    let v = w.status_of(&id).await;
    assert_eq!(v["error_kind"], "GENERAL", "{v}");
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("PIN response"),
        "{v}"
    );
    assert_eq!(
        w.sb.entra.registration_count(),
        0,
        "no live credential without its PIN"
    );
    assert!(w.sb.mail.delivered().is_empty());
    w.stop().await;
}

/// 5. The mail relay is down for longer than the old attempt limit, then back: the
///    shipment completes and its PIN is mailed once; while it waits, resend works too.
#[tokio::test]
async fn a_long_mail_outage_ends_in_one_mail() {
    let w = World::start_with(Backend::Embedded, fast).await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.advance(&id);
    w.sb.mail.faults.set(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    for _ in 0..15 {
        assert_eq!(w.process().await, 204);
    }
    let v = w.status_of(&id).await;
    assert_eq!(v["shipment_state"], "ongoing");
    assert!(v.get("error_kind").is_none(), "{v}");
    assert!(
        v["error_message"].as_str().unwrap().contains("PIN mail"),
        "{v}"
    );
    assert_eq!(w.sb.entra.registration_count(), 1);
    w.sb.mail.faults.clear();
    // Resend works for a registered shipment whose mail is still pending.
    let (s, _) = w.get(&format!("/v1/operations/resend-pin/{id}")).await;
    assert_eq!(s, 204);
    assert_eq!(w.process().await, 204);
    assert_eq!(w.status_of(&id).await["shipment_state"], "complete");
    let initial: Vec<_> =
        w.sb.mail
            .delivered()
            .into_iter()
            .filter(|m| m["message_id"].as_str().unwrap().ends_with("/pin/initial"))
            .collect();
    assert_eq!(initial.len(), 1);
    assert_eq!(w.sb.entra.registration_count(), 1);
    w.stop().await;
}

/// 6. A step slower than the claim cannot outlive it: the call is cut at the claim's
///    end, and a second replica running meanwhile keeps its hands off the record.
#[tokio::test]
async fn a_slow_step_never_outlives_its_claim_nor_runs_twice() {
    let w = World::start_with(Backend::Embedded, |env| {
        fast(env);
        env.insert("FIDO_CONNECTOR_CLAIM_TTL_SECONDS".into(), "3".into());
    })
    .await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.advance(&id);
    w.sb.mail.faults.set(FaultConfig {
        latency_ms: 6000,
        ..Default::default()
    });
    let mut other = w.deps().clone();
    other.instance_id = "other-replica/boot".into();
    let started = std::time::Instant::now();
    let first = fido_connector::lifecycle::process_shipments(w.deps());
    let second = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        fido_connector::lifecycle::process_shipments(&other).await
    };
    let (a, b) = tokio::join!(first, second);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut at the claim's end"
    );
    assert_eq!(a.retried, 1, "{a:?}");
    assert_eq!(b.skipped, 1, "the other replica kept its hands off: {b:?}");
    w.sb.mail.faults.clear();
    assert_eq!(w.process().await, 204);
    assert_eq!(w.status_of(&id).await["shipment_state"], "complete");
    assert_eq!(w.sb.entra.registration_count(), 1);
    w.stop().await;
}

/// Fault test: 20 creates, each retried by a careful client with one Idempotency-Key,
/// under 10 % 503 and 10 % 429 at every upstream: 20 shipments, 20 registrations, 20
/// mails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_creates_under_503_and_429_everywhere_make_twenty_of_everything() {
    let w = World::start_with(Backend::Embedded, fast).await;
    warm(&w).await;
    let flaky = FaultConfig {
        error_rate: 0.1,
        throttle_rate: 0.1,
        retry_after_secs: 0,
        ..Default::default()
    };
    w.sb.ye.faults.set(flaky.clone());
    w.sb.entra.faults.set(flaky.clone());
    w.sb.mail.faults.set(flaky);
    let mut ids = Vec::new();
    for i in 0..20 {
        let key = format!("order-{i}");
        let mut tries = 0;
        loop {
            tries += 1;
            let (s, v, _) = post_idem(&w, &key).await;
            if s == 201 {
                ids.push(v["data"]["shipment_id"].as_str().unwrap().to_string());
                break;
            }
            assert!([503, 409].contains(&s), "{s} {v}");
            assert!(tries < 50, "gave up on {key}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(w.sb.ye.created_count(), 20);
    w.sb.ye.advance_all();
    for _ in 0..60 {
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &ids {
        assert_eq!(w.status_of(id).await["shipment_state"], "complete", "{id}");
    }
    assert_eq!(w.sb.entra.registration_count(), 20);
    let mails = w.sb.mail.delivered();
    assert_eq!(mails.len(), 20);
    w.stop().await;
}

/// A response signed by a key Yubico never publishes is tolerated as a key published late
/// only for the configured grace, then the shipment fails saying why (and is alerted
/// like every failed shipment), instead of retrying until the challenge expires.
#[tokio::test]
async fn a_response_signed_by_an_unpublished_key_fails_after_the_grace() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert(
            "FIDO_CONNECTOR_SIGNING_KEY_GRACE_MINUTES".into(),
            "1".into(),
        );
    })
    .await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.sign_with_an_unpublished_key(true).unwrap();
    w.sb.ye.advance(&id);
    fido_connector::lifecycle::process_shipments(w.deps())
        .await
        .unwrap();
    let rec = w.record(&id).await;
    assert_eq!(rec.step, fido_connector::domain::Step::Ongoing);
    let err = rec.error.clone().expect("retrying");
    assert!(
        !err.terminal && err.message.contains("not published"),
        "{err:?}"
    );
    assert!(
        rec.signing_key_missing_since.is_some(),
        "{err:?} {:?}",
        rec.events.last()
    );
    // Two minutes later, as a replica whose clock says so: past the grace.
    let mut later = w.deps().clone();
    later.clock = std::sync::Arc::new(fido_connector::clock::ManualClock::new(
        chrono::Utc::now() + chrono::Duration::minutes(2),
    ));
    later.instance_id = "later/boot".into();
    fido_connector::lifecycle::process_shipments(&later)
        .await
        .unwrap();
    let rec = w.record(&id).await;
    assert_eq!(rec.step, fido_connector::domain::Step::Failed);
    let err = rec.error.expect("failed");
    assert!(err.terminal, "{err:?}");
    assert!(err.message.contains("forged or broken"), "{err:?}");
    assert_eq!(w.sb.entra.registration_count(), 0, "nothing registered");
    w.stop().await;
}
