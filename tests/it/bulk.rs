//! `fido-connector import` and `export` against a running service: per-row reports, bad
//! rows skipped, idempotent reruns, and a run killed half-way then resumed.

use std::path::Path;
use std::process::Stdio;

use crate::support::{Backend, World};

pub(crate) const HEADER: &str = "user_id,pin_length,emails_to,recipient_company,recipient_email,recipient_firstname,recipient_lastname,recipient_telephone,street_line1,street_line2,city,region,postal_code,country_code_2,product_id,inventory_product_id,customization_id,yubikey_name,delivery_type,reseller_organization_id";

/// 200 rows; the bad ones at these lines (header = line 1), with the field each names.
const BAD: [(usize, &str); 5] = [
    (12, "recipient_email"),
    (50, "country_code_2"),
    (77, "pin_request.length"),
    (130, "city"),
    (199, "postal_code"),
];

fn write_csv(path: &Path) {
    let mut s = format!("{HEADER}\n");
    for i in 0..200 {
        let line = i + 2;
        let user = if i % 2 == 0 {
            "alice@contoso.example"
        } else {
            "bob@contoso.example"
        };
        let mut email = format!("r{i}@contoso.example");
        let mut country = "US";
        let mut pin = "8";
        let mut city = "Seattle";
        let mut zip = "98101";
        match BAD.iter().find(|b| b.0 == line).map(|b| b.1) {
            Some("recipient_email") => email = "not-an-address".into(),
            Some("country_code_2") => country = "XX",
            Some("pin_request.length") => pin = "99",
            Some("city") => city = "",
            Some("postal_code") => zip = "ABCDE",
            _ => {}
        }
        // A hostile value that must travel intact: a comma and quotes in the company.
        s.push_str(&format!(
            "{user},{pin},,\"Contoso, \"\"East\"\"\",{email},Row,Number{i},5555555555,{i} Main Street,,{city},WA,{zip},{country},1,106,CUSTID,Key {i},1,\n"
        ));
    }
    std::fs::write(path, s).unwrap();
}

async fn run(w: &World, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fido-connector"))
        .args(args)
        .env_clear()
        .env("FIDO_CONNECTOR_URL", &w.base)
        .env("FIDO_CONNECTOR_API_KEY", &w.sb.api_key)
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

fn ids_of(result: &Path) -> Vec<String> {
    let mut r = csv::Reader::from_path(result).unwrap();
    let mut ids: Vec<String> = r
        .records()
        .map(|x| x.unwrap()[1].to_string())
        .filter(|s| !s.is_empty())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn import_reports_bad_rows_and_orders_each_good_row_once() {
    let w = World::start(Backend::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.csv");
    write_csv(&file);
    let f = file.to_str().unwrap();

    // Dry run (the default): the report names each bad row and field; nothing is sent.
    let (code, report) = run(&w, &["import", f]).await;
    assert_eq!(code, 1);
    for (line, field) in BAD {
        let l = report
            .lines()
            .find(|l| l.starts_with(&format!("line {line}:")))
            .unwrap();
        assert!(l.contains(field), "{l}");
    }
    assert!(
        report.contains("200 rows: 195 valid, 5 with errors"),
        "{report}"
    );
    assert!(
        report.contains("with the service's pre-flight checks"),
        "{report}"
    );
    assert_eq!(w.sb.ye.created_count(), 0);

    // The dry run includes the service's pre-flight checks: with bob's account disabled,
    // his 98 locally valid rows are reported bad, naming the check.
    let bob = fido_connector::sandbox::run::DEMO_USERS[1].1;
    w.sb.entra.set_user_state(bob, false, "Member");
    let (code, report) = run(&w, &["import", f]).await;
    assert_eq!(code, 1);
    assert!(
        report.contains("200 rows: 97 valid, 103 with errors"),
        "{report}"
    );
    let line3 = report.lines().find(|l| l.starts_with("line 3:")).unwrap();
    assert!(line3.contains("pre-flight account_enabled fail"), "{line3}");
    assert_eq!(w.sb.ye.created_count(), 0);
    w.sb.entra.set_user_state(bob, true, "Member");

    // Submit: exactly the 195 good rows.
    let out1 = dir.path().join("first.csv");
    let (code, report) = run(
        &w,
        &["import", f, "--submit", "--out", out1.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(w.sb.ye.created_count(), 195);
    let first = ids_of(&out1);
    assert_eq!(first.len(), 195);

    // Again: nothing new; the same shipments come back.
    let out2 = dir.path().join("second.csv");
    run(
        &w,
        &["import", f, "--submit", "--out", out2.to_str().unwrap()],
    )
    .await;
    assert_eq!(w.sb.ye.created_count(), 195);
    assert_eq!(ids_of(&out2), first);

    // The hostile company name arrived intact.
    let (_, v) = w.get(&format!("/v1/fpr/shipments/{}", first[0])).await;
    assert_eq!(v["shipment_state"], "ongoing");

    // Export: every shipment as CSV.
    let export = dir.path().join("export.csv");
    let (code, _) = run(&w, &["export", "--out", export.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(&export).unwrap();
    assert_eq!(text.lines().count(), 196);
    w.stop().await;
}

#[tokio::test]
async fn an_import_killed_half_way_and_rerun_orders_each_row_once() {
    let w = World::start(Backend::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.csv");
    write_csv(&file);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fido-connector"))
        .args([
            "import",
            file.to_str().unwrap(),
            "--submit",
            "--concurrency",
            "4",
        ])
        .env_clear()
        .env("FIDO_CONNECTOR_URL", &w.base)
        .env("FIDO_CONNECTOR_API_KEY", &w.sb.api_key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if w.sb.ye.created_count() >= 60 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
    let partial = w.sb.ye.created_count();
    assert!((60..195).contains(&partial), "killed after {partial}");
    let (_, report) = run(&w, &["import", file.to_str().unwrap(), "--submit"]).await;
    assert!(
        report.contains("created or found 195 shipments, 0 failed"),
        "{report}"
    );
    assert_eq!(w.sb.ye.created_count(), 195);
    w.stop().await;
}

/// The commands send the bearer credential only over https, or plain http to this
/// machine: a plain-http URL elsewhere is refused before anything is sent.
#[tokio::test]
async fn import_and_export_refuse_to_send_the_credential_over_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.csv");
    write_csv(&file);
    for args in [
        vec!["import", file.to_str().unwrap(), "--submit"],
        vec!["export"],
    ] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fido-connector"))
            .args(&args)
            .env_clear()
            .env("FIDO_CONNECTOR_URL", "http://connector.example.invalid")
            .env("FIDO_CONNECTOR_API_KEY", "fcak_not-a-real-key")
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("refusing to send the credential"),
            "{args:?}: {err}"
        );
    }
}
