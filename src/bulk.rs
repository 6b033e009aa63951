//! Bulk orders and exports from the command line, through the service's own HTTP API:
//!
//! * `fido-connector import FILE.csv [--submit] [--url URL] [--concurrency N] [--out FILE]`
//!   checks every row with the server's own rules ([`ShipmentRequest::parse`]) and prints a
//!   per-row report; with `--submit` it creates the valid rows with bounded concurrency.
//!   Each row's `Idempotency-Key` is derived from the row's content (and, for identical
//!   rows, their order of appearance), so running the same import again, after a crash,
//!   or with other rows fixed, never orders a key twice. Bad rows are reported and skipped.
//! * `fido-connector export [--url URL] [--out FILE] [filters]` writes the list CSV.
//!
//! Credentials come from the environment (`FIDO_CONNECTOR_TOKEN`, an Entra access token,
//! or `FIDO_CONNECTOR_API_KEY`), read by `config.rs`. Columns: docs/bulk.md.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::ClientSettings;
use crate::domain::ShipmentRequest;

/// The columns of an import file, in the order of the example (the request tree's flat
/// form, [`crate::domain::request::COLUMNS`]).
pub fn columns() -> impl Iterator<Item = &'static str> {
    crate::domain::request::COLUMNS.iter().map(|c| c.name)
}

/// One data row: its line in the file (the header is line 1), the request body, and the
/// verdict of the server's rules.
pub struct Row {
    pub line: usize,
    pub body: Value,
    pub verdict: Result<(), String>,
    pub idempotency_key: String,
}

/// The create body of one CSV record (columns by header name; unknown columns refused).
fn body_of(rec: &HashMap<String, String>) -> Value {
    crate::domain::request::body_of_columns(|k| rec.get(k).map(String::as_str))
}

/// Reads and checks a file. Errors that concern the whole file (not CSV, a missing or
/// unknown column) are `Err`.
pub fn read_rows(path: &std::path::Path) -> Result<Vec<Row>, String> {
    let reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    rows_of(reader, &path.display().to_string())
}

/// As [`read_rows`], from a file's bytes (an upload in the console).
pub fn parse_rows(bytes: &[u8]) -> Result<Vec<Row>, String> {
    let reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(bytes);
    rows_of(reader, "the file")
}

fn rows_of<R: std::io::Read>(mut reader: csv::Reader<R>, name: &str) -> Result<Vec<Row>, String> {
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("{name}: {e}"))?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    for h in &headers {
        if !columns().any(|c| c == h) {
            return Err(format!(
                "unknown column `{h}`; the columns are: {}",
                columns().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let required = crate::domain::request::COLUMNS
        .iter()
        .filter(|c| c.header_required);
    for c in required {
        if !headers.iter().any(|h| h == c.name) {
            return Err(format!("column `{}` is missing", c.name));
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| format!("line {line}: {e}"))?;
        let map: HashMap<String, String> = headers
            .iter()
            .cloned()
            .zip(rec.iter().map(str::to_string))
            .collect();
        let body = body_of(&map);
        let verdict = ShipmentRequest::parse(&body)
            .map(|_| ())
            .map_err(|e| format!("{}: {}", e.field, e.message));
        // The key: the row's content, and its occurrence among identical rows.
        let canonical = serde_json::to_string(&body).unwrap_or_default();
        let n = seen.entry(canonical.clone()).or_insert(0);
        let digest = Sha256::digest(format!("fido-connector import\n{canonical}\n{n}").as_bytes());
        *n += 1;
        rows.push(Row {
            line,
            body,
            verdict,
            idempotency_key: format!("import-{}", crate::hex::hex(&digest[..16])),
        });
    }
    Ok(rows)
}

/// The client that carries the credential to `url`: https, or plain http only to this
/// machine, as the service's own outbound calls.
fn client(settings: &ClientSettings, url: &str) -> Result<reqwest::Client, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("--url / FIDO_CONNECTOR_URL: {e}"))?;
    if !crate::config::allowed_outbound(&parsed) {
        return Err(format!(
            "refusing to send the credential to {}://{}: use https (plain http only to this machine)",
            parsed.scheme(),
            parsed.host_str().unwrap_or("")
        ));
    }
    let mut headers = reqwest::header::HeaderMap::new();
    let credential = settings.credential().ok_or(
        "set FIDO_CONNECTOR_TOKEN (an Entra access token) or FIDO_CONNECTOR_API_KEY".to_string(),
    )?;
    let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {credential}"))
        .map_err(|_| "the credential is not a valid header value".to_string())?;
    v.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, v);
    // The service's own outbound policy (no redirects, timeouts), with the credential.
    crate::upstream::http::client_builder(Duration::from_secs(120), None)?
        .default_headers(headers)
        .build()
        .map_err(|e| e.to_string())
}

/// Creates one row's shipment: 201/200 give the id; no answer, 409 (the same key still in
/// progress), 429 and 503 are tried again, at least `Retry-After` apart, for up to two
/// minutes ([`crate::backoff::retry`]).
async fn submit_one(
    http: &reqwest::Client,
    url: &str,
    row: &Row,
    pause: &Pause,
) -> Result<String, String> {
    let policy = crate::backoff::Policy {
        attempts: u32::MAX,
        budget: Duration::from_secs(120),
        base: Duration::from_millis(500),
        cap: Duration::from_secs(5),
    };
    crate::backoff::retry(policy, || async {
        pause.wait().await;
        let r = submit_once(http, url, row).await;
        if let Err(SubmitError {
            again: Some(Some(wait)),
            ..
        }) = &r
        {
            pause.hold(*wait);
        }
        r
    })
    .await
    .map_err(|e| e.message)
}

/// The import's one pause: when the service asks to wait (429, or 503 with Retry-After),
/// every worker waits, so a big import slows down to the service's pace instead of
/// failing rows.
#[derive(Clone, Default)]
struct Pause(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl Pause {
    fn hold(&self, wait: Duration) {
        let until = std::time::Instant::now() + wait;
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none_or(|t| t < until) {
            *g = Some(until);
        }
    }

    /// Whether the workers are held now.
    fn waiting(&self) -> bool {
        let until = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        until.is_some_and(|t| t > std::time::Instant::now())
    }

    async fn wait(&self) {
        let until = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = until {
            tokio::time::sleep_until(t.into()).await;
        }
    }
}

/// A create that did not give a shipment id.
struct SubmitError {
    message: String,
    /// `Some` when worth another try, with the wait the service asked for.
    again: Option<Option<Duration>>,
}

impl crate::backoff::Retryable for SubmitError {
    fn retry_hint(&self) -> Option<Option<Duration>> {
        self.again
    }
}

async fn submit_once(http: &reqwest::Client, url: &str, row: &Row) -> Result<String, SubmitError> {
    let r = http
        .post(format!("{url}/v1/fpr/shipments"))
        .header("idempotency-key", &row.idempotency_key)
        .json(&row.body)
        .send()
        .await
        .map_err(|e| {
            let message = format!("no answer: {}", e.without_url());
            tracing::debug!(error = %message, "retrying");
            SubmitError {
                message,
                again: Some(None),
            }
        })?;
    let status = r.status().as_u16();
    let wait = crate::upstream::http::retry_after(&r).map(|w| w.min(Duration::from_secs(30)));
    let v: Value = r.json().await.unwrap_or(Value::Null);
    match status {
        200 | 201 => v["data"]["shipment_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| SubmitError {
                message: "the answer has no shipment id".into(),
                again: None,
            }),
        _ => Err(SubmitError {
            message: format!(
                "HTTP {status}: {}",
                v["error_message"].as_str().unwrap_or("no error message")
            ),
            again: matches!(status, 409 | 429 | 503).then_some(wait),
        }),
    }
}

/// What the service's dry run says of a row: the checks that did not pass, and whether
/// the row would be created.
struct Preflight {
    would_create: bool,
    notes: Vec<String>,
}

/// `POST /v1/fpr/shipments?dry_run=true` for one row (docs/preflight.md).
async fn preflight_one(http: &reqwest::Client, url: &str, row: &Row) -> Result<Preflight, String> {
    let r = http
        .post(format!("{url}/v1/fpr/shipments?dry_run=true"))
        .json(&row.body)
        .send()
        .await
        .map_err(|e| format!("no answer: {}", e.without_url()))?;
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status != 200 {
        return Err(format!(
            "HTTP {status}: {}",
            v["error_message"].as_str().unwrap_or("no error message")
        ));
    }
    let notes = v["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["result"] != "pass")
        .map(|c| {
            format!(
                "pre-flight {} {}: {}",
                c["name"].as_str().unwrap_or("?"),
                c["result"].as_str().unwrap_or("?"),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    Ok(Preflight {
        would_create: v["would_create"].as_bool().unwrap_or(false),
        notes,
    })
}

const CLIENT_ENV: &str = "Environment: FIDO_CONNECTOR_TOKEN (an Entra access token for the \
service) or FIDO_CONNECTOR_API_KEY (an API key), sent as the bearer credential, never over \
plain http outside loopback; FIDO_CONNECTOR_URL (the service, default http://127.0.0.1:8080).";

/// `fido-connector import`: the options.
#[derive(Debug, clap::Args)]
#[command(after_help = CLIENT_ENV)]
pub struct ImportArgs {
    /// The CSV file of shipment requests (docs/bulk.md lists its columns)
    pub file: PathBuf,
    /// Order the valid rows (without it nothing is created)
    #[arg(long, overrides_with = "dry_run")]
    pub submit: bool,
    /// Check only: report each row, create nothing (the default)
    #[arg(long, overrides_with = "submit")]
    pub dry_run: bool,
    /// The service's base URL
    #[arg(long, env = "FIDO_CONNECTOR_URL")]
    pub url: Option<String>,
    /// Requests in flight at once
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub concurrency: u8,
    /// Where the per-row result CSV goes (default FILE.result.csv)
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `fido-connector export`: the options (the filters of `GET /v1/fpr/shipments`).
#[derive(Debug, clap::Args)]
#[command(after_help = CLIENT_ENV)]
pub struct ExportArgs {
    /// The service's base URL
    #[arg(long, env = "FIDO_CONNECTOR_URL")]
    pub url: Option<String>,
    /// Write the CSV here (default stdout)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only this user's shipments (UPN or object id)
    #[arg(long = "user_id")]
    pub user_id: Option<String>,
    /// ongoing, complete, failed or needs_attention
    #[arg(long)]
    pub state: Option<String>,
    /// RFC 3339 time (inclusive)
    #[arg(long = "created_after")]
    pub created_after: Option<String>,
    /// RFC 3339 time (exclusive)
    #[arg(long = "created_before")]
    pub created_before: Option<String>,
}

/// How far `import --submit` has got: a progress bar when stderr is a terminal, else a
/// plain line every tenth of the rows (and at the end), for logs and CI.
#[derive(Clone)]
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    done: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    total: usize,
}

impl Progress {
    fn new(total: usize) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} submitted, {elapsed} elapsed, about {eta} left {msg}",
            ) {
                b.set_style(style);
            }
            b
        });
        Self {
            bar,
            done: Arc::default(),
            failed: Arc::default(),
            total,
        }
    }

    /// One row answered; `paced`: the service asked the workers to wait.
    fn one_done(&self, failed: bool, paced: bool) {
        let n = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let f = self
            .failed
            .fetch_add(usize::from(failed), Ordering::Relaxed)
            + usize::from(failed);
        match &self.bar {
            Some(b) => {
                b.set_position(n as u64);
                let mut msg = String::new();
                if f > 0 {
                    msg.push_str(&format!("({f} failed)"));
                }
                if paced {
                    msg.push_str(" (the service asked to slow down)");
                }
                b.set_message(msg);
            }
            None => {
                let step = (self.total / 10).max(1);
                if n.is_multiple_of(step) || n == self.total {
                    eprintln!("submitted {n}/{}, {f} failed", self.total);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

/// `fido-connector import`. Exit status: 0 all rows good (and created), 1 some rows bad or
/// failed, 2 usage or file errors.
pub async fn import(a: ImportArgs, settings: &ClientSettings) -> u8 {
    let concurrency = usize::from(a.concurrency);
    let rows = match read_rows(&a.file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let url = a
        .url
        .clone()
        .unwrap_or_else(|| settings.url.clone())
        .trim_end_matches('/')
        .to_string();
    // A dry run with a credential also asks the service's dry run for each valid row: its
    // pre-flight checks (the user, the tenant's passkey policy, the key model) are in the
    // report before anything is ordered.
    let mut preflight: HashMap<usize, Result<Preflight, String>> = HashMap::new();
    if !a.submit && settings.credential().is_some() {
        match client(settings, &url) {
            Ok(http) => {
                let checked: Vec<(usize, Result<Preflight, String>)> =
                    futures::stream::iter(rows.iter().filter(|r| r.verdict.is_ok()))
                        .map(|row| {
                            let (http, url) = (http.clone(), url.clone());
                            async move { (row.line, preflight_one(&http, &url, row).await) }
                        })
                        .buffer_unordered(concurrency)
                        .collect()
                        .await;
                preflight = checked.into_iter().collect();
            }
            Err(e) => eprintln!("pre-flight checks skipped: {e}"),
        }
    }
    let mut bad = 0;
    for r in &rows {
        match (&r.verdict, preflight.get(&r.line)) {
            (Err(e), _) => {
                bad += 1;
                println!("line {}: {e}", r.line)
            }
            (Ok(()), Some(Ok(p))) if !p.would_create => {
                bad += 1;
                for n in &p.notes {
                    println!("line {}: {n}", r.line);
                }
            }
            (Ok(()), Some(Ok(p))) if !p.notes.is_empty() => {
                println!("line {}: ok ({})", r.line, p.notes.join("; "))
            }
            (Ok(()), Some(Err(e))) => {
                println!("line {}: ok locally; pre-flight not run: {e}", r.line)
            }
            (Ok(()), _) => println!("line {}: ok", r.line),
        }
    }
    println!(
        "{} rows: {} valid, {bad} with errors{}",
        rows.len(),
        rows.len() - bad,
        if a.submit {
            ""
        } else if preflight.is_empty() {
            " (dry run, local checks only: nothing sent; set a credential for the service's pre-flight checks, add --submit to create the valid rows)"
        } else {
            " (dry run with the service's pre-flight checks: nothing created; add --submit to create the valid rows)"
        }
    );
    if !a.submit {
        return u8::from(bad > 0);
    }
    let bad = rows.iter().filter(|r| r.verdict.is_err()).count();
    let http = match client(settings, &url) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let good: Vec<&Row> = rows.iter().filter(|r| r.verdict.is_ok()).collect();
    let total = good.len();
    let progress = Progress::new(total);
    // One pause for every worker: a 429 or 503 with Retry-After holds them all.
    let pause = Pause::default();
    let results: Vec<(usize, Result<String, String>)> = futures::stream::iter(good)
        .map(|row| {
            let (http, url, progress, pause) =
                (http.clone(), url.clone(), progress.clone(), pause.clone());
            async move {
                let r = submit_one(&http, &url, row, &pause).await;
                progress.one_done(r.is_err(), pause.waiting());
                (row.line, r)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    progress.finish();
    let mut by_line: HashMap<usize, Result<String, String>> = results.into_iter().collect();
    let failed = by_line.values().filter(|r| r.is_err()).count();
    let out_path = a
        .out
        .clone()
        .unwrap_or_else(|| a.file.with_extension("result.csv"));
    let mut csv = crate::csv_safe::record(&["line", "shipment_id", "error"]);
    for r in &rows {
        let (id, err) = match (&r.verdict, by_line.remove(&r.line)) {
            (Err(e), _) => (String::new(), e.clone()),
            (Ok(()), Some(Ok(id))) => (id, String::new()),
            (Ok(()), Some(Err(e))) => (String::new(), e),
            (Ok(()), None) => (String::new(), "not submitted".into()),
        };
        csv.push_str(&crate::csv_safe::record(&[r.line.to_string(), id, err]));
    }
    if let Err(e) = std::fs::write(&out_path, csv) {
        eprintln!("{}: {e}", out_path.display());
        return 2;
    }
    println!(
        "created or found {} shipments, {failed} failed; results in {}",
        total - failed,
        out_path.display()
    );
    let _ = std::io::stdout().flush();
    u8::from(bad > 0 || failed > 0)
}

/// `fido-connector export [--url URL] [--out FILE] [--user_id U] [--state S]
/// [--created_after T] [--created_before T]`: the list CSV.
pub async fn export(a: ExportArgs, settings: &ClientSettings) -> u8 {
    let url = a.url.clone().unwrap_or_else(|| settings.url.clone());
    let out = a.out.clone();
    let query: Vec<(&str, String)> = [
        ("user_id", a.user_id),
        ("state", a.state),
        ("created_after", a.created_after),
        ("created_before", a.created_before),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let http = match client(settings, &url) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let r = http
        .get(format!("{}/v1/fpr/shipments", url.trim_end_matches('/')))
        .query(&query)
        .header("accept", "text/csv")
        .send()
        .await;
    let r = match r {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            eprintln!(
                "HTTP {status}: {}",
                v["error_message"].as_str().unwrap_or("")
            );
            return 1;
        }
        Err(e) => {
            eprintln!("no answer: {}", e.without_url());
            return 1;
        }
    };
    let body = match r.bytes().await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{}", e.without_url());
            return 1;
        }
    };
    let written = match &out {
        Some(p) => std::fs::write(p, &body).map_err(|e| format!("{}: {e}", p.display())),
        None => std::io::stdout()
            .write_all(&body)
            .map_err(|e| e.to_string()),
    };
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
