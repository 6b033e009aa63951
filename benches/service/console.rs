//! The console's pages on the embedded store at 100,000 records: time per page (loopback,
//! one request at a time, HTTP included: an upper bound of the server's time), page size,
//! and references to other origins in the HTML.

use super::*;

/// 100,000 shipments: one in a hundred in processing, one in a thousand failed, the rest
/// complete; the helpdesk's user has 40 of them.
fn console_record(i: usize) -> ShipmentRecord {
    let t = Utc::now() - chrono::Duration::seconds(i as i64 * 30);
    let user = if i.is_multiple_of(2500) {
        "alice@contoso.example".to_string()
    } else {
        format!("user{}@contoso.example", i % 20_000)
    };
    let mut r = ShipmentRecord::accepted(
        format!("bench-{i:08}"),
        user,
        format!("oid-{}", i % 20_000),
        format!("fpr-{i}"),
        t,
    );
    r.ye_shipment_id = Some(format!("ship{i:08}"));
    r.emails_to = vec!["alice.personal@example.org".into()];
    r.yubikey_name = Some("Primary".into());
    r.serial_number = Some(10_000_000 + i as u64);
    if i.is_multiple_of(100) {
        r.step = Step::Ongoing;
        r.ye_state_id = Some(0);
    } else if i % 1000 == 1 {
        r.step = Step::Failed;
        r.error = Some(fido_connector::domain::RecordError::terminal(
            "YubiEnterprise shipment state 8: processing error",
        ));
        r.failed_at = Some(t);
    } else {
        r.step = Step::Complete;
        r.ye_state_id = Some(104);
        r.completed_at = Some(t);
        r.registered_at = Some(t);
    }
    r
}

/// Follows the sign-in through the Entra simulator's picker as `person`; returns the
/// session cookie.
async fn sign_in(base: &str, person: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(format!("{base}/console/signin"))
        .send()
        .await
        .unwrap();
    let pending = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let authorize = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("person".into(), person.into()));
    let mut target = authorize.clone();
    target.set_query(None);
    let r = http.post(target).form(&form).send().await.unwrap();
    let callback = r.headers()["location"].to_str().unwrap().to_string();
    let r = http
        .get(callback)
        .header("cookie", pending)
        .send()
        .await
        .unwrap();
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("__Host-fc-session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// Absolute references (`src=`, `href=`, `action=`) to an origin other than `origin`.
fn foreign_refs(html: &str, origin: &str) -> usize {
    ["src=\"", "href=\"", "action=\""]
        .iter()
        .map(|attr| {
            html.match_indices(attr)
                .filter(|(i, _)| {
                    let v = &html[i + attr.len()..];
                    (v.starts_with("http:") || v.starts_with("https:") || v.starts_with("//"))
                        && !v.starts_with(origin)
                })
                .count()
        })
        .sum()
}

pub(crate) async fn console_pages(records: usize) {
    let (mut sb, dir) = world(None).await;
    sb.env
        .insert("LOGGING_LEVEL_COM_YUBICO".into(), "WARN".into());
    sb.config =
        fido_connector::config::Config::load(&fido_connector::config::Env::from_map(&sb.env))
            .unwrap();
    let store: Arc<dyn ShipmentStore> = Arc::new(
        fido_connector::store::sqlite::SqliteStore::open(&dir.path().join("shipments.sqlite3"))
            .unwrap(),
    );
    let took = seed_with(store, records, console_record).await;
    println!(
        "[console] seeded {records} records ({} in processing, {} failed) in {:.1} s",
        records / 100,
        records / 1000,
        took.as_secs_f64()
    );
    let app = fido_connector::app::build(sb.config.clone()).await.unwrap();
    let base = format!("http://localhost:{}", app.addr.port());
    tokio::spawn(async move {
        let _ = app.run().await;
    });
    let cookie = sign_in(&base, "admin").await;
    let http = reqwest::Client::new();
    let fetch = |path: String| {
        let (http, cookie, base) = (http.clone(), cookie.clone(), base.clone());
        async move {
            let t = Instant::now();
            let r = http
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            (t.elapsed(), status, body)
        }
    };
    let pages = [
        (
            "find (cold: reads the open shipments)",
            "/console".to_string(),
            1,
        ),
        ("find", "/console".to_string(), 200),
        (
            "user (40 shipments)",
            "/console/users/alice@contoso.example".into(),
            200,
        ),
        ("shipment", "/console/shipments/ship00000001".into(), 200),
        (
            "resend confirmation",
            "/console/shipments/ship00000002/resend".into(),
            200,
        ),
        ("order form", "/console/order".into(), 200),
        ("bulk form", "/console/bulk".into(), 200),
        ("time zone", "/console/settings".into(), 200),
        (
            "find by serial (walks the newest)",
            "/console?q=10000001".into(),
            20,
        ),
    ];
    println!(
        "[console] page | median | p95 | bytes | other-origin refs (goal: <= 5 ms, <= 60 KB, 0)"
    );
    for (name, path, n) in pages {
        let mut times = Vec::new();
        let (mut bytes, mut foreign, mut status) = (0, 0, 0);
        for _ in 0..n {
            let (t, s, body) = fetch(path.clone()).await;
            times.push(t);
            bytes = body.len();
            foreign = foreign_refs(&body, &base);
            status = s;
        }
        times.sort();
        let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "[console] {name}: {} | {} | {:.1} KB | {foreign}{}",
            ms(p(0.5)),
            ms(p(0.95)),
            bytes as f64 / 1024.0,
            if status == 200 || status == 303 {
                String::new()
            } else {
                format!(" (status {status})")
            }
        );
    }
}
