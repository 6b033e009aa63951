//! The helpdesk console in a real browser (headless Chromium over WebDriver): sign-in
//! through the Entra simulator, the pages, their actions, what is refused, and axe-core's
//! WCAG check on every page. The screenshots in docs/console are taken here.

use fantoccini::{Client, Locator};
use fido_connector::domain::Step;
use fido_connector::sandbox::run::DEMO_USERS;

use crate::support::browser::{
    self, assert_accessible, click, has, press, screenshot, sign_in, text,
};
use crate::support::{alice, Backend, World};

/// The console's address: `localhost`, as its redirect URI names it (the session cookie is
/// host-only).
fn console(w: &World) -> String {
    w.base.replace("127.0.0.1", "localhost")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn csrf_of(c: &Client) -> String {
    c.find(Locator::Css("input[name='csrf']"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap()
}

/// A shipment YubiEnterprise failed (processing error): failed at the connector.
async fn failed_shipment(w: &World, user: &str) -> String {
    let id = w.create_ok(user).await;
    assert!(w.sb.ye.set_state(&id, 8));
    assert_eq!(w.process().await, 204);
    assert_eq!(w.record(&id).await.step, Step::Failed);
    id
}

async fn wait_for_text(c: &Client, css: &str, want: &str) -> String {
    for _ in 0..50 {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if t.contains(want) {
                    return t;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no `{want}` in {css} at {}", c.current_url().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn helpdesk_finds_alice_resends_her_pin_once_and_signs_out_for_good() {
    let w = World::start(Backend::Embedded).await;
    let base = console(&w);
    let id = w.create_ok(alice()).await;
    assert!(w.sb.ye.advance(&id));
    assert_eq!(w.process().await, 204);
    assert_eq!(w.sb.mail.delivered().len(), 1);
    let pin = w.sb.mail.delivered()[0]["pin"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = failed_shipment(&w, DEMO_USERS[1].0).await;

    let c = browser::open(false).await;
    sign_in(&c, &base, "helpdesk").await;
    assert_eq!(text(&c, "h1").await, "Find");
    wait_for_text(&c, "main", "Needing attention (1)").await;
    assert_accessible(&c, "find").await;
    screenshot(&c, "find").await;

    // Find alice by UPN.
    c.find(Locator::Css("#q"))
        .await
        .unwrap()
        .send_keys(alice())
        .await
        .unwrap();
    click(&c, "form.search button").await;
    wait_for_text(&c, "h1", "Shipments for alice@contoso.example").await;
    assert!(has(&c, &format!("a[href='/console/shipments/{id}']")).await);
    assert_accessible(&c, "user").await;
    screenshot(&c, "user").await;

    // Her shipment: complete, no retry for the helpdesk.
    click(&c, &format!("a[href='/console/shipments/{id}']")).await;
    wait_for_text(&c, "p.headline", "Complete").await;
    assert!(!has(&c, "form[action$='/retry']").await);
    assert_accessible(&c, "shipment").await;
    screenshot(&c, "shipment").await;

    // Resend: the confirmation names the masked address and the resends left.
    click(&c, "a[href$='/resend']").await;
    let confirm = wait_for_text(&c, "main", "a***l@example.org").await;
    assert!(confirm.contains("3 of 3 resends are left"), "{confirm}");
    assert_accessible(&c, "resend confirmation").await;
    screenshot(&c, "resend").await;
    click(&c, "main form button[type='submit']").await;
    wait_for_text(&c, ".notice", "The PIN was sent again").await;
    let mails = w.sb.mail.delivered();
    assert_eq!(mails.len(), 2, "exactly one mail more: {mails:?}");
    assert!(mails[1]["message_id"]
        .as_str()
        .unwrap()
        .contains("/pin/resend"));
    let history = text(&c, "ol.history").await;
    assert!(history.contains("pin resend"), "{history}");
    assert!(
        history.contains("0b7c1d9e-1111-4a55-9c1e-000000000001"),
        "audited with the person's object id: {history}"
    );
    // Neither the PIN nor any token is in the page.
    let html = c.source().await.unwrap();
    assert!(!html.contains(&pin));
    assert!(!html.contains(&w.sb.api_key));

    // A failed shipment: the helpdesk sees no retry button, and a forged retry is refused.
    c.goto(&format!("{base}/console/shipments/{failed}"))
        .await
        .unwrap();
    wait_for_text(&c, "p.headline", "Failed").await;
    assert!(!has(&c, "form[action$='/retry']").await);
    let csrf = csrf_of(&c).await;
    let cookie = browser::session_cookie(&c).await;
    let r = no_redirects()
        .post(format!("{base}/console/shipments/{failed}/retry"))
        .header("cookie", &cookie)
        .header("origin", &base)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(w.record(&failed).await.step, Step::Failed);

    // Sign out: the old cookie no longer works, here or on any replica.
    click(&c, "form.signout button").await;
    wait_for_text(&c, "h1", "Signed out").await;
    assert_accessible(&c, "signed out").await;
    let r = no_redirects()
        .get(format!("{base}/console"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("/console/signin"));
    c.close().await.unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_posts_are_refused_and_an_idle_session_leads_back_to_sign_in() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert(
            "FIDO_CONNECTOR_CONSOLE_SESSION_IDLE_SECONDS".into(),
            "4".into(),
        );
    })
    .await;
    let base = console(&w);
    let failed = failed_shipment(&w, alice()).await;
    let c = browser::open(false).await;
    sign_in(&c, &base, "operator").await;
    c.goto(&format!("{base}/console/shipments/{failed}"))
        .await
        .unwrap();
    assert!(
        has(&c, "form[action$='/retry']").await,
        "an operator may retry"
    );
    let csrf = csrf_of(&c).await;
    let cookie = browser::session_cookie(&c).await;
    let post = |cookie: String, origin: Option<&str>, token: Option<&str>| {
        let mut rb = no_redirects()
            .post(format!("{base}/console/shipments/{failed}/retry"))
            .header("cookie", cookie);
        if let Some(o) = origin {
            rb = rb.header("origin", o);
        }
        let form: Vec<(&str, &str)> = token.map(|t| vec![("csrf", t)]).unwrap_or_default();
        rb.form(&form).send()
    };
    // Without the token, from another origin, without an origin: refused.
    assert_eq!(
        post(cookie.clone(), Some(&base), None)
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(cookie.clone(), Some(&base), Some("not-the-token"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(cookie.clone(), Some("https://evil.example"), Some(&csrf))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(cookie.clone(), None, Some(&csrf))
            .await
            .unwrap()
            .status(),
        403
    );
    // A tampered cookie is no session.
    let (name, value) = cookie.split_once('=').unwrap();
    let mut bytes = value.as_bytes().to_vec();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{name}={}", String::from_utf8(bytes).unwrap());
    assert_eq!(
        post(tampered.clone(), Some(&base), Some(&csrf))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        w.record(&failed).await.step,
        Step::Failed,
        "nothing was done"
    );
    // The same post, genuine: done.
    let r = post(cookie.clone(), Some(&base), Some(&csrf))
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_ne!(w.record(&failed).await.step, Step::Failed);

    // Idle past the configured 4 s: the next page leads to sign-in.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    c.goto(&format!("{base}/console")).await.unwrap();
    c.wait()
        .for_element(Locator::Css("button[value='operator']"))
        .await
        .unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/oauth2/v2.0/authorize"));
    c.close().await.unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_without_roles_is_told_which_role_to_ask_for() {
    let w = World::start(Backend::Embedded).await;
    let c = browser::open(true).await;
    sign_in(&c, &console(&w), "noroles").await;
    let main = wait_for_text(&c, "main", "No access yet").await;
    assert!(main.contains("Shipments.Read"), "{main}");
    assert!(!has(&c, "form.search").await);
    assert_accessible(&c, "no roles").await;
    screenshot(&c, "no-roles-phone").await;
    c.close().await.unwrap();
    w.stop().await;
}

const GOOD: [(&str, &str); 18] = [
    ("user_id", "alice@contoso.example"),
    ("pin_length", "8"),
    ("emails_to", "alice.personal@example.org"),
    ("recipient_company", "Contoso"),
    ("recipient_email", "alice@contoso.example"),
    ("recipient_firstname", "Alice"),
    ("recipient_lastname", "Liddell"),
    ("recipient_telephone", "5555555555"),
    ("street_line1", "1 Main Street"),
    ("city", "Seattle"),
    ("region", "WA"),
    ("postal_code", "98101"),
    ("country_code_2", "US"),
    ("product_id", "1"),
    ("inventory_product_id", "106"),
    ("customization_id", "CUSTID"),
    ("yubikey_name", "Primary"),
    ("delivery_type", "1"),
];

async fn fill(c: &Client, field: &str, value: &str) {
    let e = c.find(Locator::Css(&format!("#f-{field}"))).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_through_the_form_shows_the_error_beside_its_field_then_orders() {
    let w = World::start(Backend::Embedded).await;
    let base = console(&w);
    let c = browser::open(false).await;
    sign_in(&c, &base, "admin").await;
    c.goto(&format!("{base}/console/order")).await.unwrap();
    for (k, v) in GOOD {
        fill(&c, k, v).await;
    }
    fill(&c, "recipient_email", "not-an-email").await;
    click(&c, "button[value='check']").await;
    let err = wait_for_text(&c, "#f-recipient_email-err", "recipient_email").await;
    assert!(!err.is_empty());
    assert_eq!(
        c.find(Locator::Css("#f-recipient_email"))
            .await
            .unwrap()
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    assert!(
        !has(&c, "button[value='order']").await,
        "no order before a clean check"
    );
    assert_accessible(&c, "order with an error").await;
    screenshot(&c, "order-error").await;
    assert_eq!(w.sb.ye.created_count(), 0);

    fill(&c, "recipient_email", "alice@contoso.example").await;
    click(&c, "button[value='check']").await;
    wait_for_text(&c, "#checks", "Pre-flight checks").await;
    assert_accessible(&c, "order checked").await;
    screenshot(&c, "order-checked").await;
    click(&c, "button[value='order']").await;
    wait_for_text(&c, ".notice", "The key is ordered").await;
    assert_eq!(w.sb.ye.created_count(), 1);
    let shipment = c.current_url().await.unwrap();

    // Times in the reader's zone, UTC beside them.
    c.goto(&format!("{base}/console/settings")).await.unwrap();
    assert_accessible(&c, "time zone").await;
    c.find(Locator::Css("#tz"))
        .await
        .unwrap()
        .select_by_value("Europe/Berlin")
        .await
        .unwrap();
    click(&c, "main form button[type='submit']").await;
    wait_for_text(&c, "footer", "Europe/Berlin").await;
    c.goto(shipment.as_str()).await.unwrap();
    let facts = text(&c, "dl.facts").await;
    assert!(facts.contains("CET (") && facts.contains("UTC)"), "{facts}");
    c.close().await.unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_file_is_checked_row_by_row_and_orders_its_valid_rows_once() {
    let w = World::start(Backend::Embedded).await;
    let base = console(&w);
    let header: Vec<&str> = GOOD.iter().map(|(k, _)| *k).collect();
    let row = |user: &str, country: &str| {
        GOOD.iter()
            .map(|(k, v)| match *k {
                "user_id" => user.to_string(),
                "country_code_2" => country.to_string(),
                _ => v.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let csv = format!(
        "{}\n{}\n{}\n{}\n",
        header.join(","),
        row(DEMO_USERS[0].0, "US"),
        row(DEMO_USERS[1].0, "US"),
        row(DEMO_USERS[1].0, "XX")
    );
    let file = w.dir.path().join("keys.csv");
    std::fs::write(&file, csv).unwrap();
    let c = browser::open(false).await;
    sign_in(&c, &base, "admin").await;
    for round in 0..2 {
        c.goto(&format!("{base}/console/bulk")).await.unwrap();
        c.find(Locator::Css("#file"))
            .await
            .unwrap()
            .send_keys(&file.display().to_string())
            .await
            .unwrap();
        click(&c, "main form button[type='submit']").await;
        wait_for_text(&c, "main h2", "Rows (2 of 3 valid)").await;
        if round == 0 {
            assert_accessible(&c, "bulk report").await;
            screenshot(&c, "bulk").await;
        }
        click(&c, "button.primary").await;
        wait_for_text(&c, "main", "ordered:").await;
        assert!(has(&c, "form[action='/console/bulk/result.csv']").await);
        // The second round orders the same rows: nothing new at YubiEnterprise.
        assert_eq!(w.sb.ye.created_count(), 2, "round {round}");
    }
    c.close().await.unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_helpdesk_flow_works_by_keyboard_alone_in_document_order() {
    let w = World::start(Backend::Embedded).await;
    let base = console(&w);
    let id = w.create_ok(alice()).await;
    assert!(w.sb.ye.advance(&id));
    assert_eq!(w.process().await, 204);
    let c = browser::open(false).await;
    sign_in(&c, &base, "helpdesk").await;
    // Skip link, the menu, sign-out, then the search box.
    let order = browser::tab_to(&c, "#q", 10).await;
    assert_eq!(
        order,
        [
            "a:Skip to content",
            "a:Find",
            "a:Time zone",
            "button:Sign out",
            "input:q"
        ],
        "focus order"
    );
    press(&c, alice()).await;
    press(&c, "\u{e007}").await; // Enter
    wait_for_text(&c, "h1", "Shipments for").await;
    browser::tab_to(&c, &format!("a[href='/console/shipments/{id}']"), 12).await;
    press(&c, "\u{e007}").await;
    wait_for_text(&c, "p.headline", "Complete").await;
    browser::tab_to(&c, "a[href$='/resend']", 20).await;
    press(&c, "\u{e007}").await;
    wait_for_text(&c, "main", "resends are left").await;
    browser::tab_to(&c, "main form button", 12).await;
    press(&c, "\u{e007}").await;
    wait_for_text(&c, ".notice", "The PIN was sent again").await;
    assert_eq!(w.sb.mail.delivered().len(), 2);
    c.close().await.unwrap();
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_resolves_an_unknown_create_in_the_console() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_UPSTREAM_TIMEOUT_SECONDS".into(), "1".into());
    })
    .await;
    let base = console(&w);
    w.deps().keys.transport_key().await.unwrap();
    // YubiEnterprise takes the create and never answers in time: the outcome is unknown.
    w.sb.ye
        .faults
        .set(fido_connector::sandbox::faults::FaultConfig {
            hang_rate: 1.0,
            hang_ms: 2500,
            ..Default::default()
        });
    let r = w
        .auth(w.http.post(format!("{}/v1/fpr/shipments", w.base)))
        .header("idempotency-key", "console-unknown")
        .json(&crate::support::shipment_body(alice()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: serde_json::Value = r.json().await.unwrap();
    let request_id = v["error_data"]["request_id"].as_str().unwrap().to_string();
    w.sb.ye.faults.clear();
    assert_eq!(
        w.deps()
            .store
            .get(&request_id)
            .await
            .unwrap()
            .unwrap()
            .value
            .step,
        Step::Unknown
    );

    let c = browser::open(false).await;
    sign_in(&c, &base, "operator").await;
    wait_for_text(&c, "main", "outcome at YubiEnterprise is unknown").await;
    c.goto(&format!("{base}/console/shipments/{request_id}"))
        .await
        .unwrap();
    wait_for_text(&c, "p.headline", "unknown").await;
    assert_accessible(&c, "unknown create").await;
    click(&c, "#r-not").await;
    click(&c, "form[action$='/retry'] button[type='submit']").await;
    wait_for_text(&c, ".notice", "The create is resolved").await;
    assert_ne!(
        w.deps()
            .store
            .get(&request_id)
            .await
            .unwrap()
            .unwrap()
            .value
            .step,
        Step::Unknown
    );
    c.close().await.unwrap();
    w.stop().await;
}

/// An Okta shipment in a multi-IdP deployment: its page names the identity provider and
/// Okta's user id, the resend confirmation the (masked) address Okta mails, and resending
/// asks Okta to send the PIN again. The order form offers the instances, default first.
#[tokio::test(flavor = "multi_thread")]
async fn an_okta_shipment_names_its_provider_and_resends_through_okta() {
    let w = World::start(Backend::Embedded).await;
    let base = console(&w);
    let (login, okta_id, _) = fido_connector::sandbox::run::OKTA_DEMO_USERS[0];
    let (s, b) = w.create(&crate::okta::okta_body(login)).await;
    assert_eq!(s, 201, "{b}");
    let id = b["data"]["shipment_id"].as_str().unwrap().to_string();
    assert!(w.sb.ye.advance(&id));
    assert_eq!(w.process().await, 204);
    assert_eq!(w.sb.okta.mails().len(), 1);

    let c = browser::open(false).await;
    sign_in(&c, &base, "helpdesk").await;
    c.goto(&format!("{base}/console/shipments/{id}"))
        .await
        .unwrap();
    wait_for_text(&c, "p.headline", "Complete").await;
    let facts = text(&c, "main").await;
    assert!(facts.contains("Identity provider"), "{facts}");
    assert!(facts.contains("fabrikam"), "{facts}");
    assert!(facts.contains(okta_id), "{facts}");
    assert_accessible(&c, "okta shipment").await;
    click(&c, "a[href$='/resend']").await;
    wait_for_text(&c, "main", "c***l@fabrikam.example").await;
    click(&c, "main form button[type='submit']").await;
    wait_for_text(&c, ".notice", "The PIN was sent again").await;
    assert_eq!(w.sb.okta.mails().len(), 2, "Okta sent it once more");
    assert!(
        w.sb.mail.delivered().is_empty(),
        "never through Entra's relay"
    );
    c.close().await.unwrap();

    // The order form (an admin) starts with the instances, the default first.
    let c = browser::open(false).await;
    sign_in(&c, &base, "admin").await;
    c.goto(&format!("{base}/console/order")).await.unwrap();
    let choice = text(&c, "#f-idp_instance").await;
    assert!(
        choice.starts_with("contoso (default)") && choice.contains("fabrikam"),
        "{choice}"
    );
    assert_accessible(&c, "order with instances").await;
    c.close().await.unwrap();
    w.stop().await;
}
