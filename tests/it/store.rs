//! The store conformance suite, run unchanged against the embedded store and against
//! Azure Tables on Azurite.

use std::sync::Arc;

use chrono::{Duration, Utc};
use fido_connector::domain::{ShipmentRecord, Step};
use fido_connector::store::{Query, ShipmentStore, StoreError};

fn record(id: &str) -> ShipmentRecord {
    let mut r = ShipmentRecord::accepted(
        id,
        "alice@contoso.example",
        "oid",
        format!("fpr-{id}"),
        Utc::now(),
    );
    r.emails_to = vec!["a@example.org".into()];
    r
}

async fn sqlite() -> Arc<dyn ShipmentStore> {
    Arc::new(fido_connector::store::sqlite::SqliteStore::open_in_memory().unwrap())
}

async fn azurite() -> Arc<dyn ShipmentStore> {
    azurite_table(&format!("t{}", uuid::Uuid::new_v4().simple())).await
}

/// Connects to Azure Tables at `endpoint` with Azurite's shared key, through the project's
/// client, every call bounded by `timeout_s`.
async fn connect_at(
    endpoint: &str,
    table: &str,
    timeout_s: u64,
) -> Result<Arc<dyn ShipmentStore>, fido_connector::store::StoreError> {
    let timeout = std::time::Duration::from_secs(timeout_s);
    fido_connector::store::azure::AzureTableStore::connect(
        &endpoint.parse().unwrap(),
        table,
        fido_connector::store::azure::AzureTablesAuth::SharedKey {
            account: crate::support::azurite::ACCOUNT.into(),
            key: crate::support::azurite::KEY.to_string().into(),
        },
        timeout,
        fido_connector::upstream::http::build_client(timeout, None).unwrap(),
    )
    .await
}

/// A replica's store on the named table (each call connects anew, as another replica).
async fn azurite_table(table: &str) -> Arc<dyn ShipmentStore> {
    let endpoint = crate::support::azurite::azurite_endpoint().await;
    connect_at(&endpoint, table, 30).await.unwrap()
}

async fn insert_get_and_duplicates(s: Arc<dyn ShipmentStore>) {
    let r = record("r1");
    let e = s.insert(&r).await.unwrap();
    let got = s.get("r1").await.unwrap().unwrap();
    assert_eq!(got.value, r);
    assert_eq!(got.etag, e);
    assert!(matches!(s.insert(&r).await, Err(StoreError::AlreadyExists)));
    assert!(s.get("missing").await.unwrap().is_none());
}

async fn conditional_replace(s: Arc<dyn ShipmentStore>) {
    let mut r = record("r2");
    let e1 = s.insert(&r).await.unwrap();
    r.step = Step::Ongoing;
    r.ye_shipment_id = Some("ye-1".into());
    let e2 = s.replace(&r, &e1).await.unwrap();
    assert_ne!(e1, e2);
    assert!(matches!(
        s.replace(&r, &e1).await,
        Err(StoreError::Conflict)
    ));
    let got = s.get_by_shipment_id("ye-1").await.unwrap().unwrap();
    assert_eq!(got.value.step, Step::Ongoing);
    assert_eq!(got.etag, e2);
    // Two writers with the same ETag: exactly one wins.
    let (a, b) = tokio::join!(s.replace(&r, &e2), s.replace(&r, &e2));
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1);
}

/// Concurrent conditional writes with the same ETag (on SQLite they share one group
/// commit): exactly one wins, and every answer is true of what was stored.
async fn racing_replaces_have_one_winner(s: Arc<dyn ShipmentStore>) {
    let mut r = record("race1");
    let e = s.insert(&r).await.unwrap();
    r.step = Step::Ongoing;
    let futs = (0..8).map(|i| {
        let (s, e) = (s.clone(), e.clone());
        let mut mine = r.clone();
        mine.yubikey_name = Some(format!("writer {i}"));
        async move { (i, s.replace(&mine, &e).await) }
    });
    let results = futures::future::join_all(futs).await;
    let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
    assert_eq!(winners.len(), 1);
    assert!(results
        .iter()
        .all(|(_, r)| r.is_ok() || matches!(r, Err(StoreError::Conflict))));
    let stored = s.get("race1").await.unwrap().unwrap();
    assert_eq!(
        stored.value.yubikey_name,
        Some(format!("writer {}", winners[0].0))
    );
    assert_eq!(&stored.etag, winners[0].1.as_ref().unwrap());
}

async fn hostile_ids_cannot_corrupt_keys_or_queries(s: Arc<dyn ShipmentStore>) {
    for (i, ye) in ["a'b", "x/y#z?w", "é€😀", "' or true or '", "back\\slash"]
        .iter()
        .enumerate()
    {
        let mut r = record(&format!("h{i}"));
        let e = s.insert(&r).await.unwrap();
        r.ye_shipment_id = Some(ye.to_string());
        r.step = Step::Ongoing;
        s.replace(&r, &e).await.unwrap();
        assert_eq!(
            s.get_by_shipment_id(ye)
                .await
                .unwrap()
                .unwrap()
                .value
                .request_id,
            r.request_id
        );
    }
    assert!(s.get_by_shipment_id("' or '1'='1").await.unwrap().is_none());
}

async fn delete_is_conditional_and_idempotent(s: Arc<dyn ShipmentStore>) {
    let mut r = record("d1");
    let e1 = s.insert(&r).await.unwrap();
    r.attempts = 1;
    let e2 = s.replace(&r, &e1).await.unwrap();
    assert!(matches!(
        s.delete("d1", Some(&e1)).await,
        Err(StoreError::Conflict)
    ));
    s.delete("d1", Some(&e2)).await.unwrap();
    assert!(s.get("d1").await.unwrap().is_none());
    s.delete("d1", None).await.unwrap();
}

async fn queries_page_through_each_record_once(s: Arc<dyn ShipmentStore>) {
    let now = Utc::now();
    for i in 0..7 {
        let mut r = record(&format!("q{i}"));
        if i % 2 == 0 {
            r.step = Step::Complete;
            r.completed_at = Some(now - Duration::days(i));
        }
        s.insert(&r).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut next = None;
    loop {
        let p = s.query(&Query::Open, next, 2).await.unwrap();
        assert!(p.items.len() <= 2);
        seen.extend(p.items.into_iter().map(|v| v.value.request_id));
        next = p.next;
        if next.is_none() {
            break;
        }
    }
    seen.sort();
    assert_eq!(seen, ["q1", "q3", "q5"]);
    let old = s
        .query(&Query::EndedBefore(now - Duration::hours(36)), None, 1000)
        .await
        .unwrap();
    let mut ids: Vec<_> = old.items.into_iter().map(|v| v.value.request_id).collect();
    ids.sort();
    assert_eq!(ids, ["q2", "q4", "q6"]);
}

async fn leases_are_exclusive_and_expire(s: Arc<dyn ShipmentStore>) {
    let now = Utc::now();
    let later = now + Duration::minutes(10);
    assert!(s.try_acquire_lease("job", "a", now, later).await.unwrap());
    assert!(!s.try_acquire_lease("job", "b", now, later).await.unwrap());
    assert!(
        s.try_acquire_lease("job", "a", now, later).await.unwrap(),
        "re-entrant"
    );
    // After expiry another owner takes over.
    assert!(s
        .try_acquire_lease(
            "job",
            "b",
            later + Duration::seconds(1),
            later + Duration::minutes(10)
        )
        .await
        .unwrap());
    s.release_lease("job", "a").await.unwrap(); // not a's any more: no effect
    assert!(!s
        .try_acquire_lease("job", "a", later, later + Duration::minutes(1))
        .await
        .unwrap());
    s.release_lease("job", "b").await.unwrap();
    // N racing acquirers: exactly one wins.
    let futs = (0..8).map(|i| {
        let s = s.clone();
        async move {
            s.try_acquire_lease("race", &format!("o{i}"), now, later)
                .await
                .unwrap()
        }
    });
    let wins = futures::future::join_all(futs)
        .await
        .into_iter()
        .filter(|w| *w)
        .count();
    assert_eq!(wins, 1);
    // Leases (and marks) are found by the start of their name, exactly.
    for name in [
        "idp-in-use/contoso",
        "idp-in-use/fabrikam",
        "idp-in-usex",
        "idp-in/x",
    ] {
        s.try_acquire_lease(name, "mark", now, later).await.unwrap();
    }
    let mut named = s.leases_named("idp-in-use/").await.unwrap();
    named.sort();
    assert_eq!(named, ["idp-in-use/contoso", "idp-in-use/fabrikam"]);
    assert!(s.leases_named("nothing/").await.unwrap().is_empty());
    s.ping().await.unwrap();
}

fn listed(
    p: &fido_connector::store::Page<fido_connector::store::Versioned<ShipmentRecord>>,
) -> Vec<String> {
    p.items.iter().map(|v| v.value.request_id.clone()).collect()
}

/// Every page of a query, following the continuation.
async fn all_pages(s: &Arc<dyn ShipmentStore>, q: &Query, page: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut next = None;
    loop {
        let p = s.query(q, next, page).await.unwrap();
        assert!(p.items.len() <= page);
        seen.extend(listed(&p));
        next = p.next;
        if next.is_none() {
            return seen;
        }
    }
}

/// Listings come from an index by creation time (per user when asked), newest first, with
/// time bounds and paging; deleted records leave the listing.
async fn listings_by_time_and_user(s: Arc<dyn ShipmentStore>) {
    let t0 = Utc::now() - Duration::days(10);
    for i in 0..9i64 {
        let (upn, oid) = if i % 3 == 0 {
            ("Bob@Contoso.example", "OID-BOB")
        } else {
            ("alice@contoso.example", "oid-alice")
        };
        let mut r = ShipmentRecord::accepted(
            format!("l{i}"),
            upn,
            oid,
            format!("fpr-l{i}"),
            t0 + Duration::days(i),
        );
        if i == 4 {
            r.step = Step::Complete;
            r.completed_at = Some(t0 + Duration::days(5));
        }
        s.insert(&r).await.unwrap();
    }
    let all = |user: Option<&str>, after, before| Query::Created {
        user: user.map(str::to_string),
        after,
        before,
    };
    let newest_first: Vec<String> = (0..9).rev().map(|i| format!("l{i}")).collect();
    assert_eq!(all_pages(&s, &all(None, None, None), 2).await, newest_first);
    assert_eq!(
        all_pages(&s, &all(None, None, None), 1000).await,
        newest_first
    );
    // Either of a user's ids finds the same shipments, whatever the case.
    for who in ["bob@contoso.example", "oid-bob", "BOB@CONTOSO.EXAMPLE"] {
        assert_eq!(
            all_pages(&s, &all(Some(who), None, None), 2).await,
            ["l6", "l3", "l0"],
            "{who}"
        );
    }
    assert!(
        all_pages(&s, &all(Some("nobody@contoso.example"), None, None), 5)
            .await
            .is_empty()
    );
    // Time bounds (inclusive at the microsecond; the listing re-checks exact bounds).
    let window = all(
        None,
        Some(t0 + Duration::days(2)),
        Some(t0 + Duration::days(5)),
    );
    assert_eq!(all_pages(&s, &window, 2).await, ["l5", "l4", "l3", "l2"]);
    let alice_window = all(
        Some("alice@contoso.example"),
        Some(t0 + Duration::days(2)),
        None,
    );
    assert_eq!(
        all_pages(&s, &alice_window, 1).await,
        ["l8", "l7", "l5", "l4", "l2"]
    );
    // A position continues right after that record.
    let p = s
        .query(
            &all(None, None, None),
            Some(fido_connector::store::position(
                &(t0 + Duration::days(6)),
                "l6",
            )),
            3,
        )
        .await
        .unwrap();
    assert_eq!(listed(&p), ["l5", "l4", "l3"]);
    // A create that lost an insert race (same request id, its own time) leaves the
    // listing as it was: the record once, at its own time.
    let mut late = ShipmentRecord::accepted(
        "l5",
        "alice@contoso.example",
        "oid-alice",
        "fpr-late",
        t0 + Duration::days(9),
    );
    late.emails_to = vec!["a@example.org".into()];
    assert!(matches!(
        s.insert(&late).await,
        Err(StoreError::AlreadyExists)
    ));
    assert_eq!(all_pages(&s, &all(None, None, None), 3).await, newest_first);
    assert_eq!(
        all_pages(&s, &all(Some("oid-alice"), None, None), 4)
            .await
            .iter()
            .filter(|id| *id == "l5")
            .count(),
        1
    );
    // Deleted records leave the listing and the user's listing.
    s.delete("l3", None).await.unwrap();
    assert_eq!(
        all_pages(&s, &all(Some("OID-BOB"), None, None), 10).await,
        ["l6", "l0"]
    );
    assert!(!all_pages(&s, &all(None, None, None), 4)
        .await
        .contains(&"l3".to_string()));
}

/// The processing scan sees a record while it is open, not once it ended, and again after
/// an operator reopens it (also when a scan ran in between).
async fn the_open_scan_follows_a_reopen(s: Arc<dyn ShipmentStore>) {
    let mut r = record("o1");
    let e1 = s.insert(&r).await.unwrap();
    assert_eq!(all_pages(&s, &Query::Open, 10).await, ["o1"]);
    r.step = Step::Failed;
    r.completed_at = Some(Utc::now());
    let e2 = s.replace(&r, &e1).await.unwrap();
    assert!(all_pages(&s, &Query::Open, 10).await.is_empty());
    // A second scan after the first removed what it no longer needs.
    assert!(all_pages(&s, &Query::Open, 10).await.is_empty());
    r.step = Step::Ongoing;
    r.completed_at = None;
    let e3 = s.reopen(&r, &e2).await.unwrap();
    assert_eq!(all_pages(&s, &Query::Open, 10).await, ["o1"]);
    // Ended again and reopened while scans run: never lost.
    r.step = Step::Failed;
    let e4 = s.replace(&r, &e3).await.unwrap();
    r.step = Step::Registered;
    let (scan, reopened) = tokio::join!(all_pages(&s, &Query::Open, 10), s.reopen(&r, &e4));
    reopened.unwrap();
    assert!(scan.len() <= 1);
    assert_eq!(all_pages(&s, &Query::Open, 10).await, ["o1"]);
    assert_eq!(s.repair_indexes().await.unwrap(), 0, "nothing to repair");
}

/// The API's view of a shipment (served by id without decoding the record where the store
/// keeps it ready) follows every write: none before YubiEnterprise's id, then the state,
/// a retry's message and a terminal error, exactly as computed from the record.
async fn the_public_view_follows_every_write(s: Arc<dyn ShipmentStore>) {
    let mut rec = record("view1");
    let mut etag = s.insert(&rec).await.unwrap();
    let id = format!("ship-{}", uuid::Uuid::new_v4());
    assert_eq!(s.public_view(&id).await.unwrap(), None);
    let now = Utc::now();
    rec.created_at_ye(id.clone(), 0, now).unwrap();
    etag = s.replace(&rec, &etag).await.unwrap();
    let view = |v: Option<String>| -> serde_json::Value {
        serde_json::from_str(&v.expect("a view")).unwrap()
    };
    let want = |r: &ShipmentRecord| -> serde_json::Value {
        serde_json::from_str(&fido_connector::domain::shipment::public_view_json(r).unwrap())
            .unwrap()
    };
    let v = view(s.public_view(&id).await.unwrap());
    assert_eq!(
        v,
        serde_json::json!({"shipment_id": id, "shipment_state": "ongoing"})
    );
    rec.retry_later(
        "YubiEnterprise: HTTP 503".into(),
        now + Duration::minutes(5),
        now,
    )
    .unwrap();
    etag = s.replace(&rec, &etag).await.unwrap();
    let v = view(s.public_view(&id).await.unwrap());
    assert_eq!(v, want(&rec));
    assert!(v["error_message"].as_str().unwrap().contains("HTTP 503"));
    rec.failed("the Entra challenge expired".into(), now)
        .unwrap();
    s.replace(&rec, &etag).await.unwrap();
    let v = view(s.public_view(&id).await.unwrap());
    assert_eq!(v, want(&rec));
    assert!(v["error_kind"].is_string());
    assert_eq!(s.public_view("ship-unknown").await.unwrap(), None);
}

macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test]
            async fn insert_get_and_duplicates() {
                super::insert_get_and_duplicates(super::$backend().await).await
            }
            #[tokio::test]
            async fn conditional_replace() {
                super::conditional_replace(super::$backend().await).await
            }
            #[tokio::test]
            async fn racing_replaces_have_one_winner() {
                super::racing_replaces_have_one_winner(super::$backend().await).await
            }
            #[tokio::test]
            async fn hostile_ids_cannot_corrupt_keys_or_queries() {
                super::hostile_ids_cannot_corrupt_keys_or_queries(super::$backend().await).await
            }
            #[tokio::test]
            async fn delete_is_conditional_and_idempotent() {
                super::delete_is_conditional_and_idempotent(super::$backend().await).await
            }
            #[tokio::test]
            async fn queries_page_through_each_record_once() {
                super::queries_page_through_each_record_once(super::$backend().await).await
            }
            #[tokio::test]
            async fn listings_by_time_and_user() {
                super::listings_by_time_and_user(super::$backend().await).await
            }
            #[tokio::test]
            async fn the_open_scan_follows_a_reopen() {
                super::the_open_scan_follows_a_reopen(super::$backend().await).await
            }
            #[tokio::test]
            async fn the_public_view_follows_every_write() {
                super::the_public_view_follows_every_write(super::$backend().await).await
            }
            #[tokio::test]
            async fn leases_are_exclusive_and_expire() {
                super::leases_are_exclusive_and_expire(super::$backend().await).await
            }
        }
    };
}

conformance!(sqlite);
conformance!(azurite);

#[tokio::test]
async fn the_sqlite_file_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite3");
    {
        let s = fido_connector::store::sqlite::SqliteStore::open(&path).unwrap();
        s.insert(&record("keep")).await.unwrap();
    }
    let s = fido_connector::store::sqlite::SqliteStore::open(&path).unwrap();
    assert!(s.get("keep").await.unwrap().is_some());
}

/// A file written by the previous version (no listing columns, no view) is opened, its
/// columns added and filled in, its records listed and served by shipment id.
#[tokio::test]
async fn an_older_sqlite_file_gains_its_listing_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite3");
    let mut rec = record("old1");
    rec.created_at_ye("ship-old1".into(), 0, Utc::now())
        .unwrap();
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE shipments (request_id TEXT PRIMARY KEY, ye_shipment_id TEXT UNIQUE,
                step TEXT NOT NULL, open INTEGER NOT NULL, completed_at TEXT,
                etag TEXT NOT NULL, data TEXT NOT NULL);
             CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, until TEXT NOT NULL);",
        )
        .unwrap();
        c.execute(
            "INSERT INTO shipments (request_id, ye_shipment_id, step, open, etag, data)
             VALUES ('old1', 'ship-old1', 'ongoing', 1, 'e1', ?1)",
            [serde_json::to_string(&rec).unwrap()],
        )
        .unwrap();
    }
    let s: Arc<dyn ShipmentStore> =
        Arc::new(fido_connector::store::sqlite::SqliteStore::open(&path).unwrap());
    let q = Query::Created {
        user: Some("OID".into()),
        after: None,
        before: None,
    };
    assert_eq!(all_pages(&s, &q, 10).await, ["old1"]);
    s.insert(&record("new1")).await.unwrap();
    assert_eq!(all_pages(&s, &q, 10).await, ["new1", "old1"]);
    // Its rows have no stored view: a read by shipment id computes it from the record.
    let view: serde_json::Value =
        serde_json::from_str(&s.public_view("ship-old1").await.unwrap().unwrap()).unwrap();
    assert_eq!(
        view,
        serde_json::json!({"shipment_id": "ship-old1", "shipment_state": "ongoing"})
    );
}

/// A replica remembers which record a YubiEnterprise id names (reads by shipment id then
/// read the record alone, writes skip the index entry it knows is there); what other
/// replicas do meanwhile still shows: a change of state, a delete, a reused request id.
#[tokio::test]
async fn reads_by_shipment_id_follow_what_other_replicas_write() {
    let table = format!("t{}", uuid::Uuid::new_v4().simple());
    let (a, b) = (azurite_table(&table).await, azurite_table(&table).await);
    let now = Utc::now();
    let mut rec = record("k1");
    let etag = a.insert(&rec).await.unwrap();
    let ye = format!("ship-{}", uuid::Uuid::new_v4());
    rec.created_at_ye(ye.clone(), 0, now).unwrap();
    let etag = a.replace(&rec, &etag).await.unwrap();
    let want = |r: &ShipmentRecord| fido_connector::domain::shipment::public_view_json(r);
    assert_eq!(b.public_view(&ye).await.unwrap(), want(&rec));
    // A writes again (its index entry known, not upserted again); B, which read the pair
    // before, sees the new state.
    rec.failed("the Entra challenge expired".into(), now)
        .unwrap();
    let etag = a.replace(&rec, &etag).await.unwrap();
    let view = b.public_view(&ye).await.unwrap();
    assert_eq!(view, want(&rec));
    assert!(view.unwrap().contains("the Entra challenge expired"));
    // A replica that never saw the record finds it through the index entry.
    let c = azurite_table(&table).await;
    assert_eq!(c.get_by_shipment_id(&ye).await.unwrap().unwrap().etag, etag);
    // A deletes it: B and C no longer serve it.
    a.delete("k1", Some(&etag)).await.unwrap();
    assert!(b.get_by_shipment_id(&ye).await.unwrap().is_none());
    assert_eq!(c.public_view(&ye).await.unwrap(), None);
    // The request id is used again, for a new YubiEnterprise shipment: the old id names
    // nothing, the new one the new record, on every replica.
    let mut again = record("k1");
    let etag = b.insert(&again).await.unwrap();
    let ye2 = format!("ship-{}", uuid::Uuid::new_v4());
    again.created_at_ye(ye2.clone(), 0, now).unwrap();
    b.replace(&again, &etag).await.unwrap();
    for s in [&a, &b, &c] {
        assert!(s.get_by_shipment_id(&ye).await.unwrap().is_none());
        assert_eq!(
            s.get_by_shipment_id(&ye2).await.unwrap().unwrap().value,
            again
        );
    }
}

/// A table written by the previous version (records only, no index entities) is indexed
/// when the first replica of this version connects: its records are listed and its open
/// records processed.
#[tokio::test]
async fn an_older_azure_table_is_indexed_at_connect() {
    let endpoint = crate::support::azurite::azurite_endpoint().await;
    let table = format!("t{}", uuid::Uuid::new_v4().simple());
    let service = azure_data_tables::clients::TableServiceClientBuilder::with_location(
        azure_storage::CloudLocation::Custom {
            account: crate::support::azurite::ACCOUNT.into(),
            uri: endpoint.trim_end_matches('/').to_string(),
        },
        azure_storage::prelude::StorageCredentials::access_key(
            crate::support::azurite::ACCOUNT,
            crate::support::azurite::KEY.to_string(),
        ),
    )
    .transport(azure_core_legacy::TransportOptions::new(
        std::sync::Arc::new(fido_connector::store::transport::ProjectTransport(
            reqwest::Client::new(),
        )),
    ))
    .build();
    let client = service.table_client(&table);
    client.create().await.unwrap();
    // The previous version's entity: the record in the `shipment` partition.
    let rec = record("legacy1");
    let legacy = serde_json::json!({
        "PartitionKey": "shipment", "RowKey": "legacy1", "Step": "accepted", "Open": true,
        "CompletedAt": "", "YeShipmentId": "", "Data": serde_json::to_string(&rec).unwrap(),
    });
    client
        .insert::<_, serde_json::Value>(&legacy)
        .unwrap()
        .await
        .unwrap();
    let s = connect_at(&endpoint, &table, 30).await.unwrap();
    assert_eq!(all_pages(&s, &Query::Open, 10).await, ["legacy1"]);
    let q = Query::Created {
        user: Some("alice@contoso.example".into()),
        after: None,
        before: None,
    };
    assert_eq!(all_pages(&s, &q, 10).await, ["legacy1"]);
}

/// A new table spreads its records over 16 partitions (beyond one partition's throughput
/// target), and everything still works across them.
#[tokio::test]
async fn a_new_azure_table_spreads_records_over_partitions() {
    use futures::StreamExt;
    let endpoint = crate::support::azurite::azurite_endpoint().await;
    let table = format!("t{}", uuid::Uuid::new_v4().simple());
    let s = connect_at(&endpoint, &table, 30).await.unwrap();
    for i in 0..64 {
        s.insert(&record(&format!("spread{i}"))).await.unwrap();
    }
    assert_eq!(all_pages(&s, &Query::Open, 7).await.len(), 64);
    assert_eq!(all_pages(&s, &Query::All, 9).await.len(), 64);
    let service = azure_data_tables::clients::TableServiceClientBuilder::with_location(
        azure_storage::CloudLocation::Custom {
            account: crate::support::azurite::ACCOUNT.into(),
            uri: endpoint.trim_end_matches('/').to_string(),
        },
        azure_storage::prelude::StorageCredentials::access_key(
            crate::support::azurite::ACCOUNT,
            crate::support::azurite::KEY.to_string(),
        ),
    )
    .transport(azure_core_legacy::TransportOptions::new(
        std::sync::Arc::new(fido_connector::store::transport::ProjectTransport(
            reqwest::Client::new(),
        )),
    ))
    .build();
    let mut stream = service
        .table_client(&table)
        .query()
        .filter(azure_data_tables::prelude::Filter::new(
            "PartitionKey ge 'shipment-' and PartitionKey lt 'shipment.'",
        ))
        .into_stream::<serde_json::Value>();
    let mut partitions = std::collections::BTreeSet::new();
    let mut records = 0;
    while let Some(page) = stream.next().await {
        for e in page.unwrap().entities {
            partitions.insert(e["PartitionKey"].as_str().unwrap().to_string());
            records += 1;
        }
    }
    assert_eq!(records, 64);
    assert!(partitions.len() >= 12, "{partitions:?}");
}

/// Azure Tables that accepts connections and never answers: the start fails within the
/// configured bound with a clear error instead of hanging.
#[tokio::test]
async fn azure_tables_calls_time_out() {
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = blackhole.local_addr().unwrap();
    let started = std::time::Instant::now();
    let r = connect_at(&format!("http://{addr}/devstoreaccount1"), "shipments", 1).await;
    match r {
        Err(fido_connector::store::StoreError::Unavailable(m)) => {
            assert!(m.contains("did not answer"), "{m}")
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a silent endpoint connected"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(blackhole);
}

/// The Tables client goes through the process's outbound client: a redirect from the
/// Tables endpoint is an answer it does not follow (the default client of azure_core 0.21
/// would have sent the signed request on to the other host).
#[tokio::test]
async fn the_tables_client_uses_the_hardened_client_and_follows_no_redirect() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let azurite = crate::support::azurite::azurite_endpoint().await;
    // Where the redirect points: a server counting what reaches it.
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let target = axum::Router::new().fallback(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async { axum::http::StatusCode::NO_CONTENT }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, target).await;
    });
    let redirector = axum::Router::new().fallback(move |uri: axum::http::Uri| async move {
        (
            axum::http::StatusCode::TEMPORARY_REDIRECT,
            [(
                axum::http::header::LOCATION,
                format!("http://{target_addr}{uri}"),
            )],
        )
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirector_addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, redirector).await;
    });
    let connect = |endpoint: String| async move {
        connect_at(
            &endpoint,
            &format!("t{}", uuid::Uuid::new_v4().simple()),
            10,
        )
        .await
    };
    assert!(connect(azurite).await.is_ok(), "the direct endpoint works");
    let r = connect(format!("http://{redirector_addr}/devstoreaccount1")).await;
    assert!(r.is_err(), "a redirected create must not succeed");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
}
