//! A real browser for the console's tests: Debian's headless Chromium driven over WebDriver
//! (ChromeDriver, started once per test process), axe-core run inside the page, and
//! screenshots (kept under target/console-screenshots; with CONSOLE_SCREENSHOTS=<dir> also
//! written there, as docs/console is refreshed).

use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

struct Driver {
    url: String,
    _child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn driver() -> &'static str {
    static D: OnceLock<Driver> = OnceLock::new();
    &D.get_or_init(|| {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/browser.sh install puts it on the PATH)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            url: format!("http://127.0.0.1:{port}"),
            _child: child,
        }
    })
    .url
}

/// A fresh browser (its own profile), at a laptop's width unless `phone`.
pub async fn open(phone: bool) -> Client {
    let profile = tempfile::tempdir().unwrap().keep();
    let size = if phone { "390,844" } else { "1280,900" };
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     format!("--window-size={size}"),
                     format!("--user-data-dir={}", profile.display())]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    let mut last = None;
    for _ in 0..3 {
        match ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(driver())
            .await
        {
            Ok(c) => return c,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    panic!("no browser session: {last:?}");
}

/// Signs in through the Entra simulator's picker as `person`; ends on the page the
/// sign-in returns to.
pub async fn sign_in(c: &Client, base: &str, person: &str) {
    c.goto(&format!("{base}/console")).await.unwrap();
    // The console sends the browser to Entra's authorization endpoint.
    let button = c
        .wait()
        .for_element(Locator::Css(&format!("button[value='{person}']")))
        .await
        .unwrap();
    button.click().await.unwrap();
    c.wait()
        .for_element(Locator::Css("form.signout"))
        .await
        .unwrap();
}

pub async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

pub async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn has(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

/// Runs axe-core in the page; panics listing every WCAG 2.x A/AA violation.
pub async fn assert_accessible(c: &Client, page: &str) {
    let axe = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.browser/node_modules/axe-core/axe.min.js"
    ))
    .expect("axe-core (scripts/browser.sh install)");
    c.execute(&axe, vec![]).await.unwrap();
    let r = c
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa']}})
                .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                    nodes: v.nodes.map(n => n.html).slice(0, 3)}))))
                .catch(e => done([{id: 'axe-error', help: String(e)}]));",
            vec![],
        )
        .await
        .unwrap();
    let violations = r.as_array().cloned().unwrap_or_default();
    assert!(
        violations.is_empty(),
        "{page}: WCAG violations: {}",
        serde_json::to_string_pretty(&Value::Array(violations)).unwrap()
    );
}

/// Saves a screenshot of the page as `<name>.png`.
pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let mut dirs = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/console-screenshots"
    ))];
    if let Ok(d) = std::env::var("CONSOLE_SCREENSHOTS") {
        dirs.push(d.into());
    }
    for d in dirs {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{name}.png")), &png).unwrap();
    }
}

/// The session cookie's `name=value`, as the browser holds it.
pub async fn session_cookie(c: &Client) -> String {
    let cookies = c.get_all_cookies().await.unwrap();
    let s = cookies
        .iter()
        .find(|k| k.name() == "__Host-fc-session")
        .expect("a session cookie");
    format!("{}={}", s.name(), s.value())
}

/// Presses Tab from the top of the page until the focus reaches `css`; returns a short
/// description of each element focused on the way (tag, and text or name).
pub async fn tab_to(c: &Client, css: &str, max: usize) -> Vec<String> {
    c.execute(
        "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);",
        vec![],
    )
    .await
    .unwrap();
    let body = c.find(Locator::Css("body")).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..max {
        let target = c.active_element().await.unwrap_or(body.clone());
        target.send_keys("\u{e004}").await.unwrap();
        let d = c
            .execute(
                "const e = document.activeElement; const m = arguments[0];
                 return [e.tagName.toLowerCase() + ':' + (e.getAttribute('name') || e.textContent.trim().slice(0, 30)), e.matches(m)];",
                vec![json!(css)],
            )
            .await
            .unwrap();
        seen.push(d[0].as_str().unwrap().to_string());
        if d[1].as_bool().unwrap() {
            return seen;
        }
    }
    panic!("`{css}` never took the focus: {seen:?}");
}

/// Presses a key on the focused element.
pub async fn press(c: &Client, key: &str) {
    c.active_element()
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
}
