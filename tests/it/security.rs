//! Close the doors: outbound redirects, inbound bounds, per-shipment resend limits,
//! caller-scoped idempotency, allowed mail domains, the readiness cache.

use std::time::Duration;

use fido_connector::auth::{generate_api_key, hash_api_key};
use fido_connector::sandbox::faults::FaultConfig;
use fido_connector::sandbox::mail::MailSink;

use crate::support::{alice, shipment_body, Backend, World};

/// A relay that answers 307 pointing at another sink: the connector never follows it, so
/// the PIN goes nowhere else.
#[tokio::test]
async fn a_redirect_from_the_mail_relay_is_not_followed() {
    let elsewhere = MailSink::start().await.unwrap();
    let target = elsewhere.url();
    let app = axum::Router::new().fallback(move || {
        let t = target.clone();
        async move {
            (
                axum::http::StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, t)],
            )
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    let w = World::start_with(Backend::Embedded, move |env| {
        env.insert(
            "EMAIL_API_SEND_ENDPOINT".into(),
            format!("http://{addr}/workflows/x"),
        );
    })
    .await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.advance(&id);
    assert_eq!(w.process().await, 204);
    assert_ne!(w.status_of(&id).await["shipment_state"], "complete");
    assert!(
        elsewhere.delivered().is_empty(),
        "the PIN went nowhere else"
    );
    // A redirect is an unexpected answer, not a refusal: the shipment is retried (it
    // stays ongoing without a terminal error), never failed for it.
    let rec = w.record(&id).await;
    assert_eq!(rec.step, fido_connector::domain::Step::Registered);
    let err = rec.error.expect("the redirect is recorded");
    assert!(!err.terminal, "{err:?}");
    assert!(err.message.contains("redirect"), "{err:?}");
    let status = w.status_of(&id).await;
    assert!(status["error_kind"].is_null(), "{status}");
    w.stop().await;
}

#[tokio::test]
async fn a_flood_of_readiness_probes_costs_a_handful_of_checks() {
    let w = World::start(Backend::Embedded).await;
    let probes = (0..1000).map(|_| {
        let (http, base) = (w.http.clone(), w.base.clone());
        async move {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(probes).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let checks = w.state.readiness.checks();
    assert!(checks <= 5, "{checks} store/vault checks for 1,000 probes");
    w.stop().await;
}

#[tokio::test]
async fn resend_past_its_limit_gets_429_with_retry_after() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_RESEND_LIMIT".into(), "2".into());
    })
    .await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.advance(&id);
    assert_eq!(w.process().await, 204);
    let path = format!("/v1/operations/resend-pin/{id}");
    assert_eq!(w.get(&path).await.0, 204);
    assert_eq!(w.get(&path).await.0, 204);
    let r = w
        .auth(w.http.get(format!("{}{path}", w.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error_data"]["error_type"], "rate_limited");
    assert_eq!(w.sb.mail.delivered().len(), 3, "initial + 2 resends");
    w.stop().await;
}

#[tokio::test]
async fn a_slow_request_gets_its_timeout_in_the_error_envelope() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_REQUEST_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    w.sb.entra.faults.set(FaultConfig {
        latency_ms: 3000,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let (s, v) = w.create(&shipment_body(alice())).await;
    assert_eq!(s, 504, "{v}");
    assert_eq!(v["error_code"], "api_error");
    assert!(started.elapsed() < Duration::from_millis(2500));
    w.stop().await;
}

#[tokio::test]
async fn idempotency_keys_are_scoped_to_the_caller() {
    let other = generate_api_key();
    let o = other.clone();
    let w = World::start_with(Backend::Embedded, move |env| {
        let admin = env["FIDO_CONNECTOR_API_KEYS"].clone();
        env.insert(
            "FIDO_CONNECTOR_API_KEYS".into(),
            format!("{admin};hr:{}:Shipments.Create", hash_api_key(&o)),
        );
    })
    .await;
    let post = |key: String| {
        w.http
            .post(format!("{}/v1/fpr/shipments", w.base))
            .header("authorization", format!("Bearer {key}"))
            .header("idempotency-key", "same-key")
            .json(&shipment_body(alice()))
            .send()
    };
    let a: serde_json::Value = post(w.sb.api_key.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: serde_json::Value = post(other).await.unwrap().json().await.unwrap();
    assert_ne!(a["data"]["shipment_id"], b["data"]["shipment_id"]);
    assert_eq!(w.sb.ye.created_count(), 2);
    w.stop().await;
}

#[tokio::test]
async fn pin_mail_recipients_can_be_restricted_to_domains() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert(
            "FIDO_CONNECTOR_ALLOWED_MAIL_DOMAINS".into(),
            "contoso.example".into(),
        );
    })
    .await;
    let (s, v) = w.create(&shipment_body(alice())).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error_message"].as_str().unwrap().contains("emails_to"),
        "{v}"
    );
    let mut body = shipment_body(alice());
    body["enrollment_contacts"]["emails_to"] = serde_json::json!(["alice@contoso.example"]);
    let (s, v) = w.create(&body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(w.sb.ye.created_count(), 1);
    w.stop().await;
}

/// A client that opens a connection and trickles header bytes is cut off after the
/// header-read timeout instead of holding the connection for ever; others are served.
#[tokio::test]
async fn a_slow_header_client_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert(
            "FIDO_CONNECTOR_HEADER_READ_TIMEOUT_SECONDS".into(),
            "1".into(),
        );
    })
    .await;
    let addr = w.base.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (possibly after a 408); never a 200.
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 10 s");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "cut off too early: {elapsed:?}"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains(" 200 "),
        "an incomplete request was answered"
    );
    let ok = w
        .http
        .get(format!("{}/v1/status", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    w.stop().await;
}

/// The mail trigger admits only the connector's identity (its authorization policy): a
/// connector that presents no token is refused and the PIN is not delivered; with the
/// token (the sandbox default) it is.
#[tokio::test]
async fn the_mail_trigger_admits_only_the_connectors_identity() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.remove("EMAIL_API_TOKEN_AUDIENCE");
    })
    .await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.advance(&id);
    assert_eq!(w.process().await, 204);
    assert!(w.sb.mail.delivered().is_empty());
    assert!(w.sb.mail.refused() >= 1);
    assert_ne!(w.status_of(&id).await["shipment_state"], "complete");
    w.stop().await;

    let w = World::start(Backend::Embedded).await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.advance(&id);
    assert_eq!(w.process().await, 204);
    assert_eq!(w.sb.mail.delivered().len(), 1);
    assert_eq!(w.sb.mail.refused(), 0);
    w.stop().await;
}

/// The retry's body has the same size cap as every other body.
#[tokio::test]
async fn the_retry_body_has_the_same_size_cap_as_the_others() {
    let w = World::start(Backend::Embedded).await;
    let big = format!("{{\"resolution\":\"{}\"}}", "x".repeat(200 * 1024));
    let r = w
        .auth(
            w.http
                .post(format!("{}/v1/operations/retry/some-id", w.base)),
        )
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    w.stop().await;
}
