//! `GET /metrics`: off by default, on its own listener when enabled, and its counters move
//! as a shipment goes through.

use crate::support::{alice, Backend, World};

/// A series' value; a labelled series that has not been counted yet is absent (0).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn scrape(w: &World) -> String {
    let r = w
        .http
        .get(format!("{}/metrics", w.metrics.as_ref().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    r.text().await.unwrap()
}

#[tokio::test]
async fn metrics_are_off_by_default_and_move_with_a_shipment() {
    let off = World::start(Backend::Embedded).await;
    assert!(off.metrics.is_none());
    // Never on the API's address.
    let (s, _) = off.get("/metrics").await;
    assert_eq!(s, 404);
    off.stop().await;

    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_METRICS_LISTEN".into(), "127.0.0.1:0".into());
    })
    .await;
    let before = scrape(&w).await;
    let id = w.create_ok(alice()).await;
    w.sb.ye.advance(&id);
    // An Okta shipment beside it, counted under its instance.
    let (s, b) = w
        .create(&crate::okta::okta_body(
            fido_connector::sandbox::run::OKTA_DEMO_USERS[0].0,
        ))
        .await;
    assert_eq!(s, 201, "{b}");
    w.sb.ye.advance(b["data"]["shipment_id"].as_str().unwrap());
    assert_eq!(w.process().await, 204);
    let (s, _) = w.get(&format!("/v1/operations/resend-pin/{id}")).await;
    assert_eq!(s, 204);
    // The store gauges are recomputed at most every 15 s; counters move at once.
    let after = scrape(&w).await;
    for (series, at_least) in [
        ("fido_connector_creates_total{outcome=\"created\",idp=\"contoso\"}", 1.0),
        ("fido_connector_creates_total{outcome=\"created\",idp=\"fabrikam\"}", 1.0),
        (
            "fido_connector_pin_mails_total{kind=\"initial\",outcome=\"sent\",idp=\"fabrikam\"}",
            1.0,
        ),
        ("fido_connector_processing_runs_total", 1.0),
        (
            "fido_connector_processed_shipments_total{outcome=\"completed\"}",
            1.0,
        ),
        (
            "fido_connector_pin_mails_total{kind=\"initial\",outcome=\"sent\",idp=\"contoso\"}",
            1.0,
        ),
        (
            "fido_connector_pin_mails_total{kind=\"resend\",outcome=\"sent\",idp=\"contoso\"}",
            1.0,
        ),
        // Upstream calls by service and outcome, with latency histograms.
        (
            "fido_connector_upstream_request_seconds_count{service=\"yubienterprise\",outcome=\"ok\"}",
            2.0,
        ),
        (
            "fido_connector_upstream_request_seconds_count{service=\"entra\",outcome=\"ok\"}",
            2.0,
        ),
        (
            "fido_connector_upstream_request_seconds_count{service=\"mail\",outcome=\"ok\"}",
            2.0,
        ),
    ] {
        assert!(
            value(&after, series) - value(&before, series) >= at_least,
            "{series} did not move"
        );
    }
    assert_eq!(value(&after, "fido_connector_store_up"), 1.0);
    assert!(after.contains("fido_connector_upstream_request_seconds_bucket{le=\"0.005\",service=\"yubienterprise\",outcome=\"ok\"}")
        || after.contains("fido_connector_upstream_request_seconds_bucket{service=\"yubienterprise\",outcome=\"ok\",le=\"0.005\"}"), "{after}");
    assert!(after.contains("# TYPE fido_connector_claim_takeovers counter"));
    assert!(after.trim_end().ends_with("# EOF"));

    // A mail relay outage: retries counted under their cause.
    let id2 = w.create_ok(alice()).await;
    w.sb.ye.advance(&id2);
    w.sb.mail
        .faults
        .set(fido_connector::sandbox::faults::FaultConfig {
            error_rate: 1.0,
            ..Default::default()
        });
    assert_eq!(w.process().await, 204);
    w.sb.mail.faults.clear();
    let outage = scrape(&w).await;
    assert!(
        value(&outage, "fido_connector_retries_total{cause=\"mail\"}")
            > value(&after, "fido_connector_retries_total{cause=\"mail\"}"),
        "{outage}"
    );
    assert!(
        value(
            &outage,
            "fido_connector_upstream_request_seconds_count{service=\"mail\",outcome=\"server_error\"}"
        ) > value(
            &after,
            "fido_connector_upstream_request_seconds_count{service=\"mail\",outcome=\"server_error\"}"
        ),
        "{outage}"
    );
    assert!(
        value(
            &outage,
            "fido_connector_pin_mails_total{kind=\"initial\",outcome=\"failed\",idp=\"contoso\"}"
        ) >= 1.0
    );
    assert!(value(&after, "fido_connector_shipments{state=\"ongoing\"}") >= 0.0);
    // No user, shipment id or secret in any label.
    assert!(!after.contains(alice()) && !after.contains(&id));
    assert!(!after.contains(&w.sb.api_key));
    w.stop().await;
}

/// Concurrent scrapes of stale store gauges make one store scan between them, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_scrapes_refresh_the_store_gauges_once() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_METRICS_LISTEN".into(), "127.0.0.1:0".into());
    })
    .await;
    let before = fido_connector::api::metrics::store_scans();
    let scrapes = (0..50).map(|_| scrape(&w));
    futures::future::join_all(scrapes).await;
    let scans = fido_connector::api::metrics::store_scans() - before;
    assert!(scans <= 1, "{scans} scans for 50 concurrent scrapes");
    w.stop().await;
}
