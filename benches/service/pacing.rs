//! Under the upstreams' rate limits (#24): ready shipments processed while one upstream
//! admits `rate` calls a second (a token bucket in its simulator answering 429 with
//! `Retry-After`), against the bound N / rate; three replicas sharing one limit; an import
//! whose creates' Graph calls are limited.

#[allow(unused_imports)]
use super::*;

use fido_connector::sandbox::faults::RateLimit;

/// The upstream whose calls are limited, and which of its calls.
#[derive(Clone, Copy)]
pub(crate) enum Limited {
    /// Graph's credential registrations (`POST .../fido2Methods`).
    GraphRegistrations,
    /// YubiEnterprise's shipment reads (`GET .../fpr/shipments/{id}`).
    YeReads,
    /// The mail relay's PIN mails.
    Mail,
}

impl Limited {
    /// The service label the metrics give the limited upstream.
    fn service(self) -> &'static str {
        match self {
            Limited::GraphRegistrations => "service=\"entra\"",
            Limited::YeReads => "service=\"yubienterprise\"",
            Limited::Mail => "service=\"mail\"",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Limited::GraphRegistrations => "Graph registrations",
            Limited::YeReads => "YubiEnterprise GETs",
            Limited::Mail => "mail relay",
        }
    }

    fn faults(self, sb: &Sandbox) -> &fido_connector::sandbox::faults::Faults {
        match self {
            Limited::GraphRegistrations => &sb.entra.faults,
            Limited::YeReads => &sb.ye.faults,
            Limited::Mail => &sb.mail.faults,
        }
    }

    fn limit(self, rate: f64) -> FaultConfig {
        let (method, path) = match self {
            Limited::GraphRegistrations => ("POST", Some("fido2Methods")),
            Limited::YeReads => ("GET", Some("/fpr/shipments/")),
            Limited::Mail => ("POST", None),
        };
        FaultConfig {
            rate_limit: Some(RateLimit {
                per_second: rate,
                burst: rate,
                method: Some(method.into()),
                path_contains: path.map(str::to_string),
            }),
            ..Default::default()
        }
    }
}

/// The three-replica row: three connectors over one Azurite table sharing one Graph limit.
pub(crate) async fn three_replicas(azurite: &str) {
    let (sb, dir) = world(Some(azurite)).await;
    let limited_n = env_usize("BENCH_LIMITED_SHIPMENTS", 160);
    throttled(
        "azurite",
        &sb,
        dir.path(),
        limited_n,
        Limited::GraphRegistrations,
        10.0,
        3,
    )
    .await;
}

/// `replicas` connectors (over one store) process `n` ready shipments together, each
/// with one run, while `limited` admits `rate` calls a second.
pub(crate) async fn throttled(
    label: &str,
    sb: &Sandbox,
    dir: &Path,
    n: usize,
    limited: Limited,
    rate: f64,
    replicas: usize,
) {
    let mut procs = Vec::new();
    let mut metrics_ports = Vec::new();
    for i in 0..replicas {
        let mut env = sb.env.clone();
        env.insert("FIDO_CONNECTOR_REPLICA_NAME".into(), format!("bench-{i}"));
        env.insert(
            "FIDO_CONNECTOR_REQUEST_TIMEOUT_SECONDS".into(),
            "3600".into(),
        );
        // The metrics listener: the final in-flight limit of each lane after the run.
        let mport = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        env.insert(
            "FIDO_CONNECTOR_METRICS_LISTEN".into(),
            format!("127.0.0.1:{mport}"),
        );
        metrics_ports.push(mport);
        let log = dir.join(format!("{label}-throttled-{i}.log"));
        procs.push(start_connector(&env, &log).await.0);
    }
    let http = reqwest::Client::new();
    let key = sb.api_key.clone();
    upstream_latency(sb, 0);
    let created = create_shipments(&http, &procs[0].1, &key, n, 16).await;
    sb.ye.advance_all();
    let (registered0, mailed0) = (sb.entra.registration_count(), sb.mail.delivered().len());
    let faults = limited.faults(sb);
    faults.set(limited.limit(rate));
    let t = Instant::now();
    let runs: Vec<_> = procs
        .iter()
        .map(|p| process_all(&http, &p.1, &key))
        .collect();
    futures::future::join_all(runs).await;
    let took = t.elapsed().as_secs_f64();
    // BENCH_SHOW_RUNS=1: each replica's run summary and its warnings, from its log.
    if std::env::var("BENCH_SHOW_RUNS").is_ok() {
        for i in 0..replicas {
            let path = dir.join(format!("{label}-throttled-{i}.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            for l in log
                .lines()
                .filter(|l| {
                    l.contains("processing run finished")
                        || l.contains("\"WARN\"")
                        || l.contains("\"ERROR\"")
                        || l.contains("etry")
                })
                .take(12)
            {
                println!("    replica {i}: {}", &l[..l.len().min(600)]);
            }
        }
    }
    let (admitted, refused) = faults.rate_limited();
    faults.clear();
    // Each replica's final in-flight limit on the limited upstream's lanes.
    let mut limits = Vec::new();
    for p in &metrics_ports {
        let text = http
            .get(format!("http://127.0.0.1:{p}/metrics"))
            .send()
            .await
            .ok();
        let text = match text {
            Some(r) => r.text().await.unwrap_or_default(),
            None => String::new(),
        };
        let lanes: Vec<String> = text
            .lines()
            .filter(|l| l.contains("upstream_call_limit{"))
            .filter(|l| l.contains(limited.service()))
            .map(|l| {
                let method = l
                    .split("method=\"")
                    .nth(1)
                    .and_then(|m| m.split('"').next())
                    .unwrap_or("?");
                let v = l.rsplit(' ').next().unwrap_or("?");
                format!("{method} {v}")
            })
            .collect();
        limits.push(lanes.join(", "));
    }
    let bound = created as f64 / rate;
    let registered = sb.entra.registration_count() - registered0;
    let mailed = sb.mail.delivered().len() - mailed0;
    println!(
        "[{label}] {created} ready shipments, {} limited to {rate}/s (burst {rate}), {replicas} replica(s), \
         one run each: {took:.2} s vs bound N/rate {bound:.2} s (bound/took {:.2}); {refused} of {} calls \
         answered 429 ({:.1}%); registered {registered}, mailed {mailed} (each exactly once: {}); final in-flight limit per replica: [{}]",
        limited.label(),
        bound / took,
        admitted + refused,
        100.0 * refused as f64 / (admitted + refused).max(1) as f64,
        registered == created && mailed == created && sb.mail.duplicates() == 0,
        limits.join("; "),
    );
}

/// `fido-connector import --submit` of `rows` rows while every Graph call is limited to
/// `rate` a second: bound = rows x Graph calls per create / rate, where the calls per
/// create are counted; then a rerun, which must create nothing.
pub(crate) async fn import_throttled(
    label: &str,
    sb: &Sandbox,
    dir: &Path,
    rows: usize,
    rate: f64,
) {
    let mut env = sb.env.clone();
    env.insert(
        "FIDO_CONNECTOR_REQUEST_TIMEOUT_SECONDS".into(),
        "120".into(),
    );
    let (proc_, _) = start_connector(&env, &dir.join(format!("{label}-import.log"))).await;
    let file = dir.join("import.csv");
    let header = include_str!("../../examples/shipments.csv")
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut csv = format!("{header}\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "alice@contoso.example,8,,Contoso,r{i}@contoso.example,Row,Number{i},5555555555,{i} Main Street,,Seattle,WA,98101,US,1,106,CUSTID,Key {i},1,\n"
        ));
    }
    std::fs::write(&file, csv).unwrap();
    sb.entra.faults.set(FaultConfig {
        rate_limit: Some(RateLimit {
            per_second: rate,
            burst: rate,
            method: None,
            path_contains: None,
        }),
        ..Default::default()
    });
    let bin = std::env::var("FIDO_CONNECTOR_BIN")
        .unwrap_or_else(|_| "target/release/fido-connector".into());
    let import = || {
        Command::new(&bin)
            .args([
                "import",
                file.to_str().unwrap(),
                "--submit",
                "--concurrency",
                "16",
            ])
            .env_clear()
            .env("FIDO_CONNECTOR_URL", &proc_.1)
            .env("FIDO_CONNECTOR_API_KEY", &sb.api_key)
            .output()
            .unwrap()
    };
    let created0 = sb.ye.created_count();
    let t = Instant::now();
    let out = tokio::task::block_in_place(import);
    let took = t.elapsed().as_secs_f64();
    let (admitted, refused) = sb.entra.faults.rate_limited();
    let report = String::from_utf8_lossy(&out.stdout);
    let summary = report.lines().last().unwrap_or("").to_string();
    let created = sb.ye.created_count() - created0;
    let calls_per_create = admitted as f64 / created.max(1) as f64;
    let bound = rows as f64 * calls_per_create / rate;
    let again = tokio::task::block_in_place(import);
    let created_again = sb.ye.created_count() - created0 - created;
    sb.entra.faults.clear();
    println!(
        "[{label}] import --submit of {rows} rows, every Graph call limited to {rate}/s: {took:.2} s vs bound \
         {bound:.2} s ({calls_per_create:.2} Graph calls per create; bound/took {:.2}); {refused} Graph answers \
         of 429; exit {}: {summary}; a rerun created {created_again} (exit {})",
        bound / took,
        out.status.code().unwrap_or(-1),
        again.status.code().unwrap_or(-1),
    );
}
