//! The read path (GET by id, listings) against a bare axum handler, over seeded records.

#[allow(unused_imports)]
use super::*;

/// Seeded records: one a second going back from now, 1 in 10 still in processing (a
/// rollout's table is mostly ended shipments), spread over [`BENCH_USERS`] users.
pub(crate) fn record(i: usize) -> ShipmentRecord {
    let t = Utc::now() - chrono::Duration::seconds(i as i64);
    let mut r = ShipmentRecord::accepted(
        format!("bench-{i:08}"),
        format!("user{}@contoso.example", i % BENCH_USERS),
        format!("oid-{}", i % BENCH_USERS),
        format!("fpr-{i}"),
        t,
    );
    r.ye_shipment_id = Some(format!("ship{i:08}"));
    r.step = if i.is_multiple_of(10) {
        Step::Ongoing
    } else {
        Step::Complete
    };
    r.ye_state_id = Some(0);
    r.emails_to = vec!["alice@contoso.example".into()];
    r.yubikey_name = Some("Primary".into());
    r.completed_at = Some(t);
    r
}

pub(crate) async fn seed(store: Arc<dyn ShipmentStore>, n: usize) -> Duration {
    seed_with(store, n, record).await
}

/// Inserts `make(0..n)` with eight inserters at once; returns how long it took.
pub(crate) async fn seed_with(
    store: Arc<dyn ShipmentStore>,
    n: usize,
    make: fn(usize) -> ShipmentRecord,
) -> Duration {
    let t = Instant::now();
    let per = n / 8;
    let tasks: Vec<_> = (0..8)
        .map(|k| {
            let s = store.clone();
            tokio::spawn(async move {
                // The last inserter also takes the remainder: every id below n exists.
                let end = if k == 7 { n } else { (k + 1) * per };
                for i in k * per..end {
                    s.insert(&make(i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    t.elapsed()
}

#[derive(Clone)]
pub(crate) struct Load {
    pub(crate) rps: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) errors: usize,
}

/// `conns` keep-alive connections issue GETs of random ids for `secs`.
pub(crate) async fn load(base: &str, key: Option<&str>, n: usize, conns: usize, secs: u64) -> Load {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let base = base.to_string();
            let key = key.map(str::to_string);
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut lat = Vec::new();
                let mut errors = 0;
                let mut i = c * 7919;
                while Instant::now() < deadline {
                    i = (i * 31 + 17) % n;
                    let mut rb = http.get(format!("{base}/v1/fpr/shipments/ship{i:08}"));
                    if let Some(k) = &key {
                        rb = rb.header("authorization", format!("Bearer {k}"));
                    }
                    let t = Instant::now();
                    match rb.send().await {
                        Ok(r) if r.status() == 200 => {
                            let _ = r.bytes().await;
                            lat.push(t.elapsed());
                        }
                        _ => errors += 1,
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    Load {
        rps: all.len() as f64 / secs as f64,
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

/// Mean latency of one listing request (sequential, `rounds` times).
pub(crate) async fn list_ms(base: &str, key: &str, query: &str, rounds: usize) -> (f64, usize) {
    let http = reqwest::Client::new();
    let mut items = 0;
    let t = Instant::now();
    for _ in 0..rounds {
        let r = http
            .get(format!("{base}/v1/fpr/shipments{query}"))
            .header("authorization", format!("Bearer {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{query}");
        let v: Value = r.json().await.unwrap();
        items = v["items"].as_array().map_or(0, Vec::len);
    }
    (t.elapsed().as_secs_f64() * 1000.0 / rounds as f64, items)
}

/// Listings through the API (indexed by time and user) and the processing scan (open
/// records only) against a full read of every record.
pub(crate) async fn listings(label: &str, base: &str, key: &str, store: &Arc<dyn ShipmentStore>) {
    use fido_connector::store::Query;
    let rounds = if label == "azurite" { 3 } else { 20 };
    let window = (Utc::now() - chrono::Duration::seconds(600))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (what, q) in [
        ("newest 100", "?limit=100".to_string()),
        (
            "one user's (n/1000)",
            "?user_id=user7@contoso.example&limit=1000".to_string(),
        ),
        (
            "last 10 minutes, 100",
            format!("?created_after={window}&limit=100"),
        ),
        (
            "state=ongoing, 100 (1 in 10 match)",
            "?state=ongoing&limit=100".to_string(),
        ),
        (
            "state=failed (none match: one scan budget)",
            "?state=failed&limit=100".to_string(),
        ),
    ] {
        let (ms, items) = list_ms(base, key, &q, rounds).await;
        println!("[{label}] listing {what}: {ms:.1} ms per page ({items} items)");
    }
    let scan = |q: Query| {
        let store = store.clone();
        async move {
            let t = Instant::now();
            let (mut count, mut next) = (0, None);
            loop {
                let p = store.query(&q, next, 1000).await.unwrap();
                count += p.items.len();
                next = p.next;
                if next.is_none() {
                    break;
                }
            }
            (t.elapsed(), count)
        }
    };
    let (open_t, open_n) = scan(Query::Open).await;
    let (all_t, all_n) = scan(Query::All).await;
    println!(
        "[{label}] processing scan: {open_n} open of {all_n} records in {} ({:.1} µs per open record) |          full read of every record: {} | ratio {:.2}",
        ms(open_t),
        open_t.as_secs_f64() * 1e6 / open_n.max(1) as f64,
        ms(all_t),
        open_t.as_secs_f64() / all_t.as_secs_f64().max(1e-9)
    );
}

/// The baseline: a minimal axum handler returning the same JSON from memory.
pub(crate) async fn baseline(n: usize) -> String {
    let map: HashMap<String, Value> = (0..n)
        .map(|i| {
            let id = format!("ship{i:08}");
            let st = if i.is_multiple_of(2) {
                "complete"
            } else {
                "ongoing"
            };
            (id.clone(), json!({"shipment_id": id, "shipment_state": st}))
        })
        .collect();
    async fn h(
        State(m): State<Arc<HashMap<String, Value>>>,
        AxPath(id): AxPath<String>,
    ) -> Json<Value> {
        Json(m.get(&id).cloned().unwrap_or(Value::Null))
    }
    let app = Router::new()
        .route("/v1/fpr/shipments/{id}", get(h))
        .with_state(Arc::new(map));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}")
}

pub(crate) async fn read_path(
    label: &str,
    sb: &Sandbox,
    store: Arc<dyn ShipmentStore>,
    dir: &Path,
    n: usize,
) {
    let seeded = seed(store.clone(), n).await;
    println!(
        "[{label}] seeded {n} records in {:.1} s",
        seeded.as_secs_f64()
    );
    // Start-up is timed over three starts (the median is reported, with each): one start
    // on this shared machine moved by 10 ms from run to run. The last one stays up.
    let log = dir.join(format!("{label}.log"));
    let mut startups = Vec::new();
    for _ in 0..2 {
        let (p, t) = start_connector(&sb.env, &log).await;
        startups.push(t);
        drop(p);
    }
    let (proc_, t) = start_connector(&sb.env, &log).await;
    startups.push(t);
    let startup_each = startups
        .iter()
        .map(|t| ms(*t))
        .collect::<Vec<_>>()
        .join(", ");
    startups.sort();
    let startup = startups[1];
    let idle = rss_kib(proc_.0.id());
    // What the process owns (heap, stacks) against the binary's pages mapped from the page
    // cache (shared, reclaimable; they grow with the binary's size, not with the work).
    let (idle_anon, idle_file) = (
        status_kib(proc_.0.id(), "RssAnon:"),
        status_kib(proc_.0.id(), "RssFile:"),
    );
    let secs = env_usize("BENCH_SECONDS", 5) as u64;
    let conns = env_usize("BENCH_CONNECTIONS", 32);
    // The production-like caller: an app-only Entra access token (RS256) with the
    // Shipments.Read role, minted by the Entra simulator, validated by the production code.
    let mut claims = fido_connector::sandbox::entra::CallerClaims::for_audience(
        fido_connector::sandbox::run::SANDBOX_AUDIENCE,
        &[],
    );
    claims.scp = None;
    claims.roles = vec!["Shipments.Read".into()];
    claims.sub = "bench-daemon".into();
    let token = sb.entra.issue_caller_token(claims);
    // The three loads take turns, three rounds each, and each figure is the median round:
    // this machine's throughput drifts between runs (the baseline alone moved from 31k to
    // 75k req/s), so a ratio of two loads taken minutes apart says more about the drift.
    let base = baseline(n).await;
    let mut rounds: Vec<Round> = Vec::new();
    for _ in 0..3 {
        let cpu0 = proc_cpu(proc_.0.id());
        let entra = load(&proc_.1, Some(&token), n, conns, secs).await;
        let entra_cpu = proc_cpu(proc_.0.id()) - cpu0;
        let cpu0 = proc_cpu(proc_.0.id());
        let ours = load(&proc_.1, Some(&sb.api_key), n, conns, secs).await;
        let key_cpu = proc_cpu(proc_.0.id()) - cpu0;
        let theirs = load(&base, None, n, conns, secs).await;
        rounds.push((entra, entra_cpu, ours, key_cpu, theirs));
    }
    let loaded = rss_kib(proc_.0.id());
    let per_req = |cpu: f64, l: &Load| cpu * 1e6 / (l.rps * secs as f64).max(1.0);
    let median = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let pick = |rps: f64, f: &dyn Fn(&Round) -> (Load, f64)| {
        rounds.iter().map(f).find(|(l, _)| l.rps == rps).unwrap()
    };
    let (entra, entra_cpu) = pick(median(&|r| r.0.rps), &|r| (r.0.clone(), r.1));
    let (ours, key_cpu) = pick(median(&|r| r.2.rps), &|r| (r.2.clone(), r.3));
    let (theirs, _) = pick(median(&|r| r.4.rps), &|r| (r.4.clone(), 0.0));
    let each = |f: &dyn Fn(&Round) -> f64| {
        rounds
            .iter()
            .map(|r| format!("{:.2}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "[{label}] read path, Entra token ({conns} connections, 3 rounds of {secs} s, medians): {:.0} req/s, p50 {}, p99 {}, errors {}, \
         connector CPU {:.0} µs/req | baseline (minimal axum, in memory): {:.0} req/s | ratio {:.2} (goal >= 0.6; rounds: {})",
        entra.rps, ms(entra.p50), ms(entra.p99), entra.errors, per_req(entra_cpu, &entra), theirs.rps,
        entra.rps / theirs.rps.max(1.0), each(&|r| r.0.rps / r.4.rps.max(1.0))
    );
    println!(
        "[{label}] read path, API key ({conns} connections, 3 rounds of {secs} s, medians): {:.0} req/s, p50 {}, p99 {}, errors {}, \
         connector CPU {:.0} µs/req | baseline: {:.0} req/s, p50 {}, p99 {} | ratio {:.2} (goal >= 0.8; rounds: {})",
        ours.rps, ms(ours.p50), ms(ours.p99), ours.errors, per_req(key_cpu, &ours), theirs.rps, ms(theirs.p50), ms(theirs.p99),
        ours.rps / theirs.rps.max(1.0), each(&|r| r.2.rps / r.4.rps.max(1.0))
    );
    read_path_wrk(label, (proc_.0.id(), &proc_.1), &token, &sb.api_key, n, dir);
    listings(label, &proc_.1, &sb.api_key, &store).await;
    println!(
        "[{label}] footprint: start-up to ready {} (median of 3: {startup_each}), RSS idle {:.1} MiB (anonymous {:.1} MiB, \
         file-backed {:.1} MiB), under read load {} MiB",
        ms(startup),
        idle as f64 / 1024.0,
        idle_anon as f64 / 1024.0,
        idle_file as f64 / 1024.0,
        loaded / 1024
    );
}

/// `BENCH_BASELINE_CHILD=n`: the baseline handler as a process of its own (so that it can
/// be pinned to a core like the connector); prints its address, then serves.
pub(crate) async fn baseline_child(n: usize) {
    let base = baseline(n).await;
    println!("{base}");
    std::future::pending::<()>().await;
}

/// One `wrk` load (pinned to core `core`): requests per second, p50 and p99 in ms.
fn wrk(
    url: &str,
    auth: Option<&str>,
    n: usize,
    conns: usize,
    secs: u64,
    core: usize,
    dir: &Path,
) -> (f64, f64, f64) {
    let script = dir.join("ids.lua");
    std::fs::write(
        &script,
        format!(
            "math.randomseed(7)\nrequest = function()\n  return wrk.format(nil, string.format(\"/v1/fpr/shipments/ship%08d\", math.random(0, {})))\nend\n",
            n - 1
        ),
    )
    .unwrap();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &core.to_string(), "wrk", "-t1", "--latency"])
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(&script);
    if let Some(a) = auth {
        cmd.args(["-H", &format!("Authorization: Bearer {a}")]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next())
            .map(|v| {
                let (num, scale) = if let Some(x) = v.strip_suffix("ms") {
                    (x, 1.0)
                } else if let Some(x) = v.strip_suffix("us") {
                    (x, 0.001)
                } else if let Some(x) = v.strip_suffix('s') {
                    (x, 1000.0)
                } else {
                    (v, 1.0)
                };
                num.parse::<f64>().unwrap_or(0.0) * scale
            })
            .unwrap_or(0.0)
    };
    if text.contains("Non-2xx") {
        println!("wrk saw non-2xx answers: {text}");
    }
    (field("Requests/sec:"), field("50%"), field("99%"))
}

/// One wrk round: (req/s, p50, p99) and connector CPU for the Entra token and the API key,
/// then the bare handler's and its CPU.
type WrkRound = (
    (f64, f64, f64),
    f64,
    (f64, f64, f64),
    f64,
    (f64, f64, f64),
    f64,
);

/// Pins every thread of `pid` to the given cores (`taskset -a -p -c`).
fn pin(pid: u32, cores: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(Stdio::null())
        .status();
}

/// The read path measured honestly: the connector and the baseline each pinned to core 0
/// in turn, `wrk` on core 1, so the load generator never takes the server's CPU. Three
/// rounds, medians. Needs `wrk` and `taskset` (Debian: `apt-get install wrk`).
pub(crate) fn read_path_wrk(
    label: &str,
    connector: (u32, &str),
    token: &str,
    api_key: &str,
    n: usize,
    dir: &Path,
) {
    let have = |c: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    if !have("wrk") || !have("taskset") || cores < 2 {
        println!("[{label}] read path with wrk: skipped (needs wrk, taskset and two cores; apt-get install wrk)");
        return;
    }
    let secs = env_usize("BENCH_SECONDS", 5) as u64;
    let conns = env_usize("BENCH_CONNECTIONS", 32);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("BENCH_BASELINE_CHILD", n.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let base = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_string()
    };
    pin(child.id(), "0");
    pin(connector.0, "0");
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let c0 = proc_cpu(connector.0);
        let entra = wrk(connector.1, Some(token), n, conns, secs, 1, dir);
        let entra_cpu = proc_cpu(connector.0) - c0;
        let c0 = proc_cpu(connector.0);
        let key = wrk(connector.1, Some(api_key), n, conns, secs, 1, dir);
        let key_cpu = proc_cpu(connector.0) - c0;
        let b0 = proc_cpu(child.id());
        let bare = wrk(&base, None, n, conns, secs, 1, dir);
        let bare_cpu = proc_cpu(child.id()) - b0;
        rounds.push((entra, entra_cpu, key, key_cpu, bare, bare_cpu));
    }
    // BENCH_PERF=1: where the connector's CPU goes under the Entra-token load (perf, with
    // an unstripped binary: CARGO_PROFILE_RELEASE_STRIP=false).
    if std::env::var("BENCH_PERF").is_ok() && have("perf") {
        let data = dir.join("perf.data");
        let mut rec = Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "1999", "-g", "-o"])
            .arg(&data)
            .args([
                "-p",
                &connector.0.to_string(),
                "--",
                "sleep",
                &secs.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _ = wrk(connector.1, Some(token), n, conns, secs, 1, dir);
        let _ = rec.wait();
        let _ = std::fs::copy(&data, "/tmp/fido-connector-reads.perf.data");
        for sort in ["dso", "symbol"] {
            let out = Command::new("perf")
                .args([
                    "report",
                    "--stdio",
                    "--no-children",
                    "--percent-limit",
                    "1",
                    "--sort",
                    sort,
                    "-g",
                    "none",
                    "-i",
                ])
                .arg(&data)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            println!("[{label}] perf, Entra-token reads, by {sort}:");
            for l in text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .take(40)
            {
                println!("    {l}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    pin(connector.0, &format!("0-{}", cores - 1));
    let med = |f: &dyn Fn(&WrkRound) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let total = secs as f64;
    let us = |cpu: f64, rps: f64| cpu * 1e6 / (rps * total).max(1.0);
    let entra = med(&|r| r.0 .0);
    let key = med(&|r| r.2 .0);
    let bare = med(&|r| r.4 .0);
    let entra_us = med(&|r| us(r.1, r.0 .0));
    let key_us = med(&|r| us(r.3, r.2 .0));
    let bare_us = med(&|r| us(r.5, r.4 .0));
    let each = |f: &dyn Fn(&WrkRound) -> f64| {
        rounds
            .iter()
            .map(|r| format!("{:.2}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "[{label}] read path with wrk (server pinned to core 0, wrk on core 1, {conns} connections, 3 rounds of {secs} s, medians): \
         Entra token {entra:.0} req/s (p50 {:.2} ms, p99 {:.2} ms, {entra_us:.1} µs CPU/req) | API key {key:.0} req/s ({key_us:.1} µs CPU/req) | \
         bare axum {bare:.0} req/s ({bare_us:.1} µs CPU/req) | ratio Entra {:.2} (goal >= 0.6; rounds {}), API key {:.2} (rounds {})",
        med(&|r| r.0 .1),
        med(&|r| r.0 .2),
        entra / bare.max(1.0),
        each(&|r| r.0 .0 / r.4 .0.max(1.0)),
        key / bare.max(1.0),
        each(&|r| r.2 .0 / r.4 .0.max(1.0)),
    );
}
