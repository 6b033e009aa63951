//! For a person at a terminal: `--help` and `--version` answer, every subcommand's help
//! names the environment variables it reads, `import --submit` reports its progress, and
//! log lines are readable text or JSON as asked.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{Backend, World};

const BIN: &str = env!("CARGO_BIN_EXE_fido-connector");

async fn run(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn help_and_version_answer_and_name_the_environment() {
    let (code, out, _) = run(&["--help"]).await;
    assert_eq!(code, 0, "{out}");
    for cmd in [
        "serve",
        "sandbox",
        "check-config",
        "import",
        "export",
        "okta-key",
    ] {
        assert!(out.contains(cmd), "--help lists {cmd}: {out}");
    }
    let (code, out, _) = run(&["--version"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("fido-connector {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run(&["import", "--help"]).await;
    assert_eq!(code, 0, "{out}");
    for needle in [
        "--submit",
        "--concurrency",
        "--out",
        "FIDO_CONNECTOR_URL",
        "FIDO_CONNECTOR_TOKEN",
        "FIDO_CONNECTOR_API_KEY",
    ] {
        assert!(out.contains(needle), "import --help names {needle}: {out}");
    }
    let (code, out, _) = run(&["export", "--help"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("--user_id") && out.contains("FIDO_CONNECTOR_API_KEY"),
        "{out}"
    );
    let (code, out, _) = run(&["serve", "--help"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("FIDO_CONNECTOR_LOG_FORMAT"), "{out}");
    // Usage errors: exit 2, on stderr, with a pointer to --help.
    let (code, out, err) = run(&["bogus"]).await;
    assert_eq!(code, 2);
    assert!(out.is_empty() && err.contains("--help"), "{err}");
    let (code, _, err) = run(&["import", "rows.csv", "--concurrency", "0"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--concurrency"), "{err}");
}

/// Without a terminal on stderr, `import --submit` writes plain progress lines.
#[tokio::test]
async fn import_submit_reports_progress_in_plain_lines_without_a_terminal() {
    let w = World::start(Backend::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    let mut csv = format!("{}\n", crate::bulk::HEADER);
    for i in 0..3 {
        csv.push_str(&format!(
            "alice@contoso.example,8,,Contoso,r{i}@contoso.example,Row,Number{i},5555555555,{i} Main Street,,Seattle,WA,98101,US,1,106,CUSTID,Key {i},1,\n"
        ));
    }
    std::fs::write(&file, csv).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["import", file.to_str().unwrap(), "--submit"])
        .env_clear()
        .env("FIDO_CONNECTOR_URL", &w.base)
        .env("FIDO_CONNECTOR_API_KEY", &w.sb.api_key)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.lines().any(|l| l == "submitted 3/3, 0 failed"), "{err}");
    assert!(
        !err.contains('\r'),
        "no terminal control characters: {err:?}"
    );
    w.stop().await;
}

/// The first log line the sandbox writes for an authorised call, in the format asked.
async fn a_log_line(format: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    // Four consecutive free ports for the simulators: bind them to find them.
    let base = loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p > 65000 {
            continue;
        }
        let rest: Vec<_> = (1..4)
            .map(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)))
            .collect();
        if rest.iter().all(|r| r.is_ok()) {
            break p;
        }
    };
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("sandbox")
        .env_clear()
        .env("FIDO_CONNECTOR_DATA_DIR", dir.path().join("sb"))
        .env("FIDO_CONNECTOR_LISTEN", "127.0.0.1:0")
        .env("FIDO_CONNECTOR_SANDBOX_SIM_PORT", base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(f) = format {
        cmd.env("FIDO_CONNECTOR_LOG_FORMAT", f);
    }
    let mut child = cmd.spawn().unwrap();
    // The banner (stderr) names the connector's address.
    let mut banner = BufReader::new(child.stderr.take().unwrap()).lines();
    let connector = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = banner.next_line().await.unwrap() {
            if let Some(url) = l.strip_prefix("connector:") {
                return url.trim().to_string();
            }
        }
        panic!("the sandbox ended without its banner");
    })
    .await
    .unwrap();
    let key = std::fs::read_to_string(dir.path().join("sb").join("api-key")).unwrap();
    let r = reqwest::Client::new()
        .get(format!("{connector}/v1/fpr/shipments/nosuchshipment"))
        .header("x-api-key", key.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let mut logs = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(l) = logs.next_line().await.unwrap() {
            if l.contains("authorised call") {
                return l;
            }
        }
        panic!("no audit line");
    })
    .await
    .unwrap();
    let _ = child.kill().await;
    line
}

#[tokio::test]
async fn logs_are_readable_lines_in_the_sandbox_and_json_when_asked() {
    let text = a_log_line(None).await;
    assert!(!text.starts_with('{'), "{text}");
    assert!(
        text.contains(" INFO ") && text.contains("authorised call"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes without a terminal: {text:?}"
    );
    let json = a_log_line(Some("json")).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["fields"]["message"], "authorised call", "{v}");
}

/// `okta-key` makes the service app's key pair: the private JWK in a new 0600 file (an
/// existing file is never overwritten), the public JWK on stdout, and the private one is
/// what the Okta client takes.
#[tokio::test]
async fn okta_key_writes_a_private_jwk_and_prints_the_public_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("okta-key.json");
    let path = out.display().to_string();
    let (code, stdout, err) = run(&["okta-key", "--kid", "fpr-2027", "--out", &path]).await;
    assert_eq!(code, 0, "{err}");
    let public: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(public["kid"], "fpr-2027");
    assert_eq!(public["kty"], "RSA");
    assert!(public.get("d").is_none(), "the public half only");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let private = secrecy::SecretString::from(std::fs::read_to_string(&out).unwrap());
    fido_connector::upstream::okta::OktaClient::new(
        "https://fabrikam.okta.com".parse().unwrap(),
        "0oa1".into(),
        &private,
        reqwest::Client::new(),
    )
    .unwrap();
    let (code, _, err) = run(&["okta-key", "--out", &path]).await;
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");
}
