//! Finding shipments: `GET /v1/fpr/shipments` filters, pages and exports, on both stores.

use serde_json::Value;

use crate::support::{alice, Backend, World};

const BOB: &str = "bob@contoso.example";

async fn list(w: &World, query: &str) -> (u16, Value) {
    w.get(&format!("/v1/fpr/shipments{query}")).await
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["request_id"].as_str().unwrap().to_string())
        .collect()
}

async fn scenario(backend: Backend) {
    let w = World::start(backend).await;
    let a1 = w.create_ok(alice()).await;
    let a2 = w.create_ok(alice()).await;
    let a3 = w.create_ok(alice()).await;
    let b1 = w.create_ok(BOB).await;
    // a1 completes; a2 hits an undeliverable address (a YubiEnterprise error state).
    w.sb.ye.advance(&a1);
    w.sb.ye.set_state(&a2, 7);
    assert_eq!(w.process().await, 204);

    let (s, all) = list(&w, "").await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    assert!(all["next_cursor"].is_null());
    // Newest first.
    let created: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["created_at"].as_str().unwrap())
        .collect();
    let mut sorted = created.clone();
    sorted.sort_by(|a, b| {
        chrono::DateTime::parse_from_rfc3339(b)
            .unwrap()
            .cmp(&chrono::DateTime::parse_from_rfc3339(a).unwrap())
    });
    assert_eq!(created, sorted);
    let by_ship = |id: &str| {
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["shipment_id"] == id)
            .cloned()
            .unwrap()
    };
    let done = by_ship(&a1);
    assert_eq!(done["state"], "complete");
    assert!(done["serial_number"].is_u64());
    assert!(done["completed_at"].is_string());
    let bad = by_ship(&a2);
    assert_eq!(bad["state"], "failed");
    assert_eq!(bad["needs_attention"], true);
    assert_eq!(bad["ye_state"]["code"], 7);
    assert!(bad["error_message"]
        .as_str()
        .unwrap()
        .contains("undeliverable"));
    assert_eq!(by_ship(&a3)["state"], "ongoing");
    assert_eq!(by_ship(&a3)["needs_attention"], false);

    // By user: the UPN and the object id find the same shipments.
    let (_, by_upn) = list(&w, &format!("?user_id={}", alice().to_uppercase())).await;
    assert_eq!(by_upn["items"].as_array().unwrap().len(), 3);
    let oid = fido_connector::sandbox::run::DEMO_USERS[0].1;
    let (_, by_oid) = list(&w, &format!("?user_id={oid}")).await;
    assert_eq!(ids(&by_oid), ids(&by_upn));
    let (_, bobs) = list(&w, &format!("?user_id={BOB}")).await;
    assert_eq!(bobs["items"][0]["shipment_id"], b1.as_str());

    // By state.
    for (state, n) in [
        ("complete", 1),
        ("failed", 1),
        ("ongoing", 2),
        ("needs_attention", 1),
    ] {
        let (s, v) = list(&w, &format!("?state={state}")).await;
        assert_eq!(s, 200);
        assert_eq!(v["items"].as_array().unwrap().len(), n, "{state}: {v}");
    }

    // By time.
    let (_, none) = list(&w, "?created_after=2999-01-01T00:00:00Z").await;
    assert!(none["items"].as_array().unwrap().is_empty());
    let (_, every) = list(&w, "?created_before=2999-01-01T00:00:00Z").await;
    assert_eq!(every["items"].as_array().unwrap().len(), 4);

    // Pages: 3 + 1, no repeats, same order as the whole list.
    let (_, p1) = list(&w, "?limit=3").await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 3);
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    let (_, p2) = list(&w, &format!("?limit=3&cursor={cursor}")).await;
    assert!(p2["next_cursor"].is_null());
    let mut paged = ids(&p1);
    paged.extend(ids(&p2));
    assert_eq!(paged, ids(&all));

    // Bad parameters are named.
    for (q, name) in [
        ("?state=lost", "state"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?created_after=yesterday", "created_after"),
        ("?cursor=garbage", "cursor"),
    ] {
        let (s, v) = list(&w, q).await;
        assert_eq!(s, 400, "{q}");
        assert!(v["error_message"].as_str().unwrap().contains(name), "{v}");
    }

    // CSV: the same rows, RFC 4180, one request.
    let r = w
        .auth(w.http.get(format!("{}/v1/fpr/shipments", w.base)))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = r.text().await.unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("shipment_id,request_id,user_id"));
    assert!(text.contains(&a1) && text.contains(&b1));

    // History: oldest first, who and what, never a PIN.
    let (s, _) = w.get(&format!("/v1/operations/resend-pin/{a1}")).await;
    assert_eq!(s, 204);
    let (s, h) = w.get(&format!("/v1/fpr/shipments/{a1}/events")).await;
    assert_eq!(s, 200, "{h}");
    let kinds: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "ye_created",
            "ye_state",
            "ye_state",
            "registered",
            "pin_mailed",
            "pin_resend"
        ],
        "{h}"
    );
    assert!(h["events"][0]["by"]
        .as_str()
        .unwrap()
        .starts_with("apikey:"));
    assert!(h["events"][4]["detail"]
        .as_str()
        .unwrap()
        .contains("serial"));
    assert!(h["events"][6]["by"].is_string());
    let text = h.to_string();
    for m in w.sb.mail.delivered() {
        assert!(
            !text.contains(m["pin"].as_str().unwrap()),
            "a PIN in the history"
        );
    }
    let (_, h) = w.get(&format!("/v1/fpr/shipments/{a2}/events")).await;
    let last = h["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "failed");
    assert!(last["detail"].as_str().unwrap().contains("undeliverable"));
    let (s, _) = w.get("/v1/fpr/shipments/nosuchshipment/events").await;
    assert_eq!(s, 404);

    // Without credentials: 401.
    let r = w
        .http
        .get(format!("{}/v1/fpr/shipments", w.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    w.stop().await;
}

#[tokio::test]
async fn list_filter_page_and_export_on_the_embedded_store() {
    scenario(Backend::Embedded).await;
}

#[tokio::test]
async fn list_filter_page_and_export_on_azure_tables() {
    scenario(Backend::Azurite).await;
}

/// A shipment ordered by object id is found by the UPN Entra returned for it, and one
/// ordered by UPN by the object id: either form finds every shipment of the user.
async fn either_form_finds_every_shipment(backend: Backend) {
    let w = World::start(backend).await;
    let oid = fido_connector::sandbox::run::DEMO_USERS[0].1;
    let by_oid_order = w.create_ok(oid).await;
    let by_upn_order = w.create_ok(alice()).await;
    let mut want = vec![by_oid_order.clone(), by_upn_order.clone()];
    want.sort();
    for form in [alice().to_uppercase(), oid.to_string(), alice().to_string()] {
        let (s, v) = list(&w, &format!("?user_id={form}")).await;
        assert_eq!(s, 200, "{v}");
        let mut got: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["shipment_id"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        assert_eq!(got, want, "listing by {form}");
    }
    w.stop().await;
}

#[tokio::test]
async fn a_shipment_ordered_by_object_id_is_listed_by_upn_on_the_embedded_store() {
    either_form_finds_every_shipment(Backend::Embedded).await;
}

#[tokio::test]
async fn a_shipment_ordered_by_object_id_is_listed_by_upn_on_azure_tables() {
    either_form_finds_every_shipment(Backend::Azurite).await;
}

/// An export is bounded: past its row cap the transfer breaks (never a short file), and
/// with every export permit taken one more is answered 503 with `Retry-After`.
#[tokio::test]
async fn exports_are_bounded_in_rows_and_in_how_many_run_at_once() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_EXPORT_MAX_ROWS".into(), "2".into());
        env.insert("FIDO_CONNECTOR_EXPORTS_AT_ONCE".into(), "1".into());
    })
    .await;
    for _ in 0..3 {
        w.create_ok(alice()).await;
    }
    let export = || {
        w.auth(w.http.get(format!("{}/v1/fpr/shipments", w.base)))
            .header("accept", "text/csv")
            .send()
    };
    // The transfer breaks: before the client has read the head (hyper sends it with the
    // first rows) or in the body, never as a complete short file.
    let broken = match export().await {
        Err(_) => true,
        Ok(r) => {
            assert_eq!(r.status(), 200);
            r.text().await.is_err()
        }
    };
    assert!(
        broken,
        "three rows under a cap of two must break the transfer"
    );
    // Within the cap (a window holding two) it completes.
    let r = w
        .auth(w.http.get(format!(
            "{}/v1/fpr/shipments?user_id={}&limit=2",
            w.base,
            alice()
        )))
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    let newest = page["items"][1]["created_at"].as_str().unwrap().to_string();
    // The export of the newest two only.
    let windowed = || {
        w.auth(w.http.get(format!("{}/v1/fpr/shipments", w.base)))
            .query(&[("created_after", newest.as_str())])
            .header("accept", "text/csv")
            .send()
    };
    let r = windowed().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert_eq!(
        text.split("\r\n").filter(|l| !l.is_empty()).count(),
        3,
        "{text}"
    );

    // One export is streaming (its permit held): the next waits its turn.
    let held = w.state.exports.clone().try_acquire_owned().unwrap();
    let r = export().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error_message"]
            .as_str()
            .unwrap()
            .contains("exports are running"),
        "{v}"
    );
    drop(held);
    let r = windowed().await.unwrap();
    assert_eq!(r.status(), 200, "the permit is free again");
    w.stop().await;
}
