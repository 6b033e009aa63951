//! The HTTP surface: status, authentication, the error envelope, validation before any
//! upstream call, and the OpenAPI document.

use serde_json::{json, Value};

use crate::support::{alice, shipment_body, Backend, World};

fn is_envelope(v: &Value, error_type: &str) -> bool {
    v["error_code"] == "api_error"
        && v["error_message"].is_string()
        && v["error_data"]["error_type"] == error_type
}

#[tokio::test]
async fn status_is_public_and_has_the_sixteen_keys_in_order() {
    // A signed trigger URL (the SAS form, without a token audience).
    let w = World::start_with(Backend::Embedded, |env| {
        env.remove("EMAIL_API_TOKEN_AUDIENCE");
        let url = format!("{}?sig=SIGNATURE0123456789", env["EMAIL_API_SEND_ENDPOINT"]);
        env.insert("EMAIL_API_SEND_ENDPOINT".into(), url);
    })
    .await;
    let r = w
        .http
        .get(format!("{}/v1/status", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let v: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = v.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 16);
    assert_eq!(keys[0], "AZURE_TABLES_ENDPOINT");
    assert_eq!(keys[11], "FIDO_CONNECTOR_VERSION");
    assert_eq!(keys[15], "YE_JWKS_TRANSPORT_ENDPOINT");
    assert!(v.values().all(Value::is_string));
    assert_eq!(v["FIDO_CONNECTOR_VERSION"], env!("CARGO_PKG_VERSION"));
    // The mail trigger's signature never shows.
    assert!(!text.contains("SIGNATURE0123456789"));
    assert!(v["EMAIL_API_SEND_ENDPOINT"]
        .as_str()
        .unwrap()
        .ends_with("/***"));
    w.stop().await;
}

#[tokio::test]
async fn every_protected_endpoint_needs_credentials() {
    let w = World::start(Backend::Embedded).await;
    let c = &w.http;
    let b = &w.base;
    let reqs = vec![
        c.post(format!("{b}/v1/fpr/shipments"))
            .json(&shipment_body(alice())),
        c.get(format!("{b}/v1/fpr/shipments/abc")),
        c.get(format!("{b}/v1/operations/resend-pin/abc")),
        c.get(format!("{b}/v1/operations/process-shipments")),
    ];
    for r in reqs {
        for auth in [None, Some("Bearer fcak_wrong"), Some("Bearer not-a-token")] {
            let r = r.try_clone().unwrap();
            let r = match auth {
                Some(a) => r.header("authorization", a),
                None => r,
            };
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status(), 401);
            assert!(resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"));
            let v: Value = resp.json().await.unwrap();
            assert!(is_envelope(&v, "authentication"), "{v}");
        }
    }
    assert_eq!(w.sb.ye.created_count(), 0);
    w.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_the_envelope_not_plain_text() {
    let w = World::start(Backend::Embedded).await;
    let url = format!("{}/v1/fpr/shipments", w.base);
    // Wrong content type → 415.
    let r = w
        .auth(w.http.post(&url))
        .body("{}")
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(is_envelope(
        &r.json().await.unwrap(),
        "unsupported_media_type"
    ));
    // Malformed JSON → 400.
    let r = w
        .auth(w.http.post(&url))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(is_envelope(&r.json().await.unwrap(), "validation"));
    // Oversized → 413.
    let big = format!("{{\"user_id\":\"{}\"}}", "a".repeat(70 * 1024));
    let r = w
        .auth(w.http.post(&url))
        .body(big)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(is_envelope(&r.json().await.unwrap(), "payload_too_large"));
    // Unknown path and wrong method: same envelope.
    let r = w
        .http
        .get(format!("{}/v2/nothing", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(is_envelope(&r.json().await.unwrap(), "not_found"));
    let r = w
        .http
        .delete(format!("{}/v1/status", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(w.sb.ye.created_count(), 0);
    w.stop().await;
}

#[tokio::test]
async fn validation_failures_name_the_field_and_reach_no_upstream() {
    let w = World::start(Backend::Embedded).await;
    let tokens_before = w.sb.entra.token_requests();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "pin_request",
            json!({"type": "generate", "length": 64}),
            "PIN `length` must be between 4 and 63",
        ),
        ("user_id", json!("not a user"), "user_id"),
    ];
    for (field, val, expect) in cases {
        let mut body = shipment_body(alice());
        body[field] = val;
        let (s, v) = w.create(&body).await;
        assert_eq!(s, 400, "{v}");
        assert!(is_envelope(&v, "validation"), "{v}");
        assert!(v["error_message"].as_str().unwrap().contains(expect), "{v}");
    }
    let mut body = shipment_body(alice());
    body["yubico_shipment_request"]["recipient"]["recipient_lastname"] = json!("é".repeat(21));
    let (s, v) = w.create(&body).await;
    assert_eq!(s, 400);
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("recipient_lastname"),
        "{v}"
    );
    body["yubico_shipment_request"]["recipient"]["recipient_lastname"] = json!("é".repeat(20));
    body["yubico_shipment_request"]["mailing_address"]["postal_code"] = json!("9810");
    let (s, v) = w.create(&body).await;
    assert_eq!(s, 400);
    assert!(
        v["error_message"].as_str().unwrap().contains("postal_code"),
        "{v}"
    );
    // Nothing reached an upstream: no YE shipment, no Graph token, no user lookup.
    assert_eq!(w.sb.ye.created_count(), 0);
    assert_eq!(w.sb.entra.token_requests(), tokens_before);
    w.stop().await;
}

#[tokio::test]
async fn unknown_shipments_are_404_and_bad_ids_400() {
    let w = World::start(Backend::Embedded).await;
    let (s, v) = w.get("/v1/fpr/shipments/doesnotexist").await;
    assert_eq!(s, 404);
    assert!(is_envelope(&v, "not_found"));
    let (s, v) = w.get("/v1/operations/resend-pin/doesnotexist").await;
    assert_eq!(s, 404);
    assert!(is_envelope(&v, "not_found"));
    let (s, v) = w.get("/v1/fpr/shipments/a'b").await;
    assert_eq!(s, 400);
    assert!(v["error_message"].as_str().unwrap().contains("shipment_id"));
    w.stop().await;
}

#[tokio::test]
async fn health_probes_answer_without_credentials() {
    let w = World::start(Backend::Embedded).await;
    let r = w
        .http
        .get(format!("{}/healthz", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = w
        .http
        .get(format!("{}/readyz", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["store"], "ok");
    assert_eq!(v["secrets"], "ok");
    w.stop().await;
}

#[tokio::test]
async fn the_openapi_document_parses_and_lists_every_operation() {
    let w = World::start(Backend::Embedded).await;
    let text = w
        .http
        .get(format!("{}/v1/openapi.json", w.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let spec = oas3::from_json(&text).expect("a valid OpenAPI 3.1 document");
    assert!(spec.openapi.starts_with("3.1"));
    let paths = spec.paths.expect("paths");
    for (p, m) in [
        ("/v1/status", "get"),
        ("/v1/fpr/shipments", "post"),
        ("/v1/fpr/shipments/{shipment_id}", "get"),
        ("/v1/operations/resend-pin/{shipment_id}", "get"),
        ("/v1/operations/process-shipments", "get"),
    ] {
        let item = paths.get(p).unwrap_or_else(|| panic!("{p} missing"));
        let op = match m {
            "get" => item.get.as_ref(),
            _ => item.post.as_ref(),
        };
        assert!(op.is_some(), "{m} {p}");
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    // The document's paths come from the router's one list: every operation it names is
    // served (the router's own fallbacks never answer it), and the retry route is there.
    let mut operations = 0;
    for (path, item) in v["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{shipment_id}", "no-such-shipment")
            .replace("{id}", "no-such-shipment");
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            operations += 1;
            let r = w
                .http
                .request(m.clone(), format!("{}{concrete}", w.base))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            assert_ne!(status, 405, "{m} {path} is documented but not routed");
            assert!(
                !body.contains("no such endpoint"),
                "{m} {path} is documented but not routed: {status} {body}"
            );
        }
    }
    assert!(
        v["paths"]["/v1/operations/retry/{id}"]["post"].is_object(),
        "the retry route is documented"
    );
    assert!(operations >= 11, "{operations} operations documented");
    assert!(v["components"]["schemas"]["CreateShipmentRequest"].is_object());
    assert!(v["components"]["schemas"]["ErrorBody"].is_object());
    assert!(v["components"]["securitySchemes"]["bearer"].is_object());
    w.stop().await;
}

/// The document's query parameters and headers admit only what the server accepts: every
/// value a generated client could send from the document is taken (never a 400).
#[tokio::test]
async fn the_documents_parameters_and_headers_admit_only_what_the_server_accepts() {
    let w = World::start(Backend::Embedded).await;
    let doc: Value = w
        .http
        .get(format!("{}/v1/openapi.json", w.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let validator = |schema: &Value| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .unwrap()
    };
    let as_json = |v: &str| {
        v.parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(v))
    };
    let (mut admitted, mut refused) = (0, 0);
    let list = &doc["paths"]["/v1/fpr/shipments"]["get"]["parameters"];
    let candidates: [(&str, Vec<&str>); 4] = [
        (
            "created_after",
            vec![
                "2026-01-31T00:00:00Z",
                "2026-01-31T00:00:00+02:00",
                "yesterday",
                "2026-01-31",
                "0",
            ],
        ),
        (
            "created_before",
            vec!["2026-12-31T23:59:59.5Z", "31/12/2026", ""],
        ),
        (
            "state",
            vec!["ongoing", "needs_attention", "FAILED", "done"],
        ),
        ("limit", vec!["1", "1000", "0", "1001", "ten"]),
    ];
    for (name, values) in candidates {
        let p = list
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is documented"));
        let v = validator(&p["schema"]);
        for value in values {
            if !v.is_valid(&as_json(value)) {
                refused += 1;
                continue;
            }
            admitted += 1;
            // As a client sends it: the value percent-encoded.
            let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
            let (status, body) = w
                .get(&format!(
                    "/v1/fpr/shipments?user_id=alice%40contoso.example&{name}={encoded}"
                ))
                .await;
            assert_ne!(status, 400, "the document admits {name}={value}: {body}");
        }
    }
    let create = &doc["paths"]["/v1/fpr/shipments"]["post"]["parameters"];
    let key = create
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    let v = validator(&key["schema"]);
    for value in [
        "k-1",
        "~!",
        &"x".repeat(255),
        &"x".repeat(256),
        "with space",
        "é",
    ] {
        if !v.is_valid(&Value::from(value)) {
            refused += 1;
            continue;
        }
        admitted += 1;
        let r = w
            .auth(
                w.http
                    .post(format!("{}/v1/fpr/shipments?dry_run=true", w.base)),
            )
            .header("idempotency-key", value)
            .json(&crate::support::shipment_body(crate::support::alice()))
            .send()
            .await
            .unwrap();
        assert_ne!(
            r.status(),
            400,
            "the document admits Idempotency-Key {value:?}"
        );
    }
    assert!(
        admitted >= 8 && refused >= 8,
        "{admitted} admitted, {refused} refused"
    );
    w.stop().await;
}
