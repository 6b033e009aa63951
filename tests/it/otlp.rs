//! Traces over OTLP: with `FIDO_CONNECTOR_OTLP_ENDPOINT` set, the connector process exports
//! its spans (OTLP/HTTP protobuf) to a collector; a shipment's processing span carries its
//! ids, and no export holds the PIN or a credential.

use std::sync::{Arc, Mutex};

use axum::routing::post;
use fido_connector::sandbox::run::prepare;
use serde_json::Value;

use crate::support::process::spawn;
use crate::support::{alice, shipment_body};

/// A collector that keeps every export request's body.
async fn collector() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let got: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let keep = keep.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    keep.lock().unwrap().push(body.to_vec());
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, got)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_ids_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut sb = prepare(dir.path(), "127.0.0.1:0", None).await.unwrap();
    let (url, got) = collector().await;
    sb.env
        .insert("FIDO_CONNECTOR_OTLP_ENDPOINT".into(), url.clone());
    let p = spawn(&sb.env, None, &dir.path().join("otlp.log")).await;
    let http = reqwest::Client::new();
    let key = sb.api_key.clone();
    let r = http
        .post(format!("{}/v1/fpr/shipments", p.base))
        .header("authorization", format!("Bearer {key}"))
        .json(&shipment_body(alice()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["data"]["shipment_id"]
        .as_str()
        .unwrap()
        .to_string();
    sb.ye.advance(&id);
    let s = http
        .get(format!("{}/v1/operations/process-shipments", p.base))
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 204);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let found = got.lock().unwrap().iter().any(|b| contains(b, &id));
        if found {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no span with the shipment id reached the collector"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let pin = sb.mail.delivered()[0]["pin"].as_str().unwrap().to_string();
    let bodies = got.lock().unwrap().clone();
    assert!(bodies.iter().any(|b| contains(b, "fido-connector")));
    assert!(bodies.iter().any(|b| contains(b, "shipment")));
    for b in &bodies {
        for secret in [
            pin.as_str(),
            key.as_str(),
            sb.env["AZURE_CLIENT_SECRET"].as_str(),
        ] {
            assert!(!contains(b, secret), "a secret in an OTLP export");
        }
    }
    p.stop();
}
