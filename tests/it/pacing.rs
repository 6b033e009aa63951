//! At the pace the upstreams allow: a 429 (or a 503 with `Retry-After`) is the upstream's
//! pace, not the shipment's failure. Shipments under a rate limit all finish in the run,
//! exactly once, with no attempt counted and no back-off grown; a stated `Retry-After`
//! holds every shipment's calls to that upstream; an import under a limit fails no row.

use std::time::{Duration, Instant};

use fido_connector::sandbox::faults::{FaultConfig, RateLimit};

use crate::support::{alice, Backend, World};

fn graph_registrations(per_second: f64) -> FaultConfig {
    FaultConfig {
        rate_limit: Some(RateLimit {
            per_second,
            burst: per_second,
            method: Some("POST".into()),
            path_contains: Some("fido2Methods".into()),
        }),
        ..Default::default()
    }
}

async fn ready_shipments(w: &World, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(w.create_ok(alice()).await);
    }
    w.sb.ye.advance_all();
    ids
}

/// 40 shipments ready at once, Graph admitting 10 registrations a second: one run
/// registers and mails each exactly once, none is pushed to a later run, and the run
/// keeps to the limit instead of hammering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_paces_the_run_and_grows_no_back_off() {
    let w = World::start(Backend::Embedded).await;
    // PACING_SHIPMENTS: more shipments, to look at a longer run (the bench's 160).
    let n: usize = std::env::var("PACING_SHIPMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let ids = ready_shipments(&w, n).await;
    let before = w.sb.entra.registration_count();
    w.sb.entra.faults.set(graph_registrations(10.0));
    let t = Instant::now();
    let summary = fido_connector::lifecycle::process_shipments(w.deps())
        .await
        .unwrap();
    let took = t.elapsed();
    println!("{n} shipments under 10/s: {took:?}, {summary:?}");
    assert_eq!(summary.completed, n, "{summary:?}");
    assert_eq!(
        summary.retried + summary.paced + summary.failed,
        0,
        "{summary:?}"
    );
    assert_eq!(
        w.sb.entra.registration_count() - before,
        n,
        "each registered once"
    );
    assert_eq!(w.sb.mail.delivered().len(), n, "each mailed once");
    for id in &ids {
        let rec = w.record(id).await;
        assert_eq!(rec.attempts, 0, "{id}: pacing counted an attempt");
        assert!(rec.next_attempt_at.is_none(), "{id}");
    }
    let (admitted, limited) = w.sb.entra.faults.rate_limited();
    println!("admitted {admitted}, answered 429: {limited}");
    assert_eq!(admitted, n as u64);
    // The burst of 10 goes at once, the other 30 at 10 a second. (Without pacing each
    // shipment past the burst met a 429 and was put off: 30 answers of 429 for 40.)
    assert!(took >= Duration::from_millis(2500), "took {took:?}");
    assert!(
        (limited as f64) <= 0.5 * admitted as f64,
        "{limited} answers of 429 for {admitted} registrations: the run hammered the limit"
    );
    w.stop().await;
}

/// One 429 with `Retry-After: 2` holds every shipment's registration for those two
/// seconds (the others do not try meanwhile), and nothing counts as an attempt. One call
/// at a time, so that no other registration is already on its way when the 429 comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stated_retry_after_holds_the_other_shipments_calls_to_that_upstream() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_PROCESS_CONCURRENCY".into(), "1".into());
    })
    .await;
    let ids = ready_shipments(&w, 6).await;
    w.sb.entra.faults.set(FaultConfig {
        // Spans are recorded for requests with latency added.
        latency_ms: 1,
        fail_next: 1,
        error_status: Some(429),
        retry_after_secs: 2,
        ..Default::default()
    });
    let t0 = Instant::now();
    let summary = fido_connector::lifecycle::process_shipments(w.deps())
        .await
        .unwrap();
    assert_eq!(summary.completed, 6, "{summary:?}");
    let spans = w.sb.entra.faults.served_spans();
    // Six registrations (and the look-up the throttled one makes before registering
    // again) reached Graph, every one after the pause.
    assert!(spans.len() >= 6, "{} requests reached Graph", spans.len());
    for (arrived, _) in &spans {
        assert!(
            *arrived >= t0 + Duration::from_millis(1900),
            "a registration went out {:?} after the start, inside the stated pause",
            arrived.duration_since(t0)
        );
    }
    for id in &ids {
        assert_eq!(w.record(id).await.attempts, 0);
    }
    w.stop().await;
}

/// A pause longer than the run's budget leaves the shipment due at the upstream's time,
/// with no attempt counted, saying what it waits for; the next run finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_past_the_run_leaves_the_shipment_due_saying_why() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_RUN_BUDGET_SECONDS".into(), "1".into());
    })
    .await;
    let ids = ready_shipments(&w, 1).await;
    w.sb.entra.faults.set(FaultConfig {
        fail_next: 1,
        error_status: Some(429),
        retry_after_secs: 3,
        ..Default::default()
    });
    let summary = fido_connector::lifecycle::process_shipments(w.deps())
        .await
        .unwrap();
    assert_eq!(summary.paced, 1, "{summary:?}");
    let rec = w.record(&ids[0]).await;
    assert_eq!(rec.attempts, 0);
    let due = rec.next_attempt_at.expect("due again");
    assert!(due <= chrono::Utc::now() + chrono::Duration::seconds(4));
    let status = w.status_of(&ids[0]).await;
    let message = status["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("rate limit"), "{status}");
    assert_eq!(status["shipment_state"], "ongoing");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let summary = fido_connector::lifecycle::process_shipments(w.deps())
        .await
        .unwrap();
    assert_eq!(summary.completed, 1, "{summary:?}");
    w.stop().await;
}

/// Three replicas processing the same shipments under one Graph limit all finish them,
/// each registered and mailed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_under_one_limit_finish_each_shipment_once() {
    let w = World::start(Backend::Embedded).await;
    let ids = ready_shipments(&w, 30).await;
    let before = w.sb.entra.registration_count();
    w.sb.entra.faults.set(graph_registrations(10.0));
    let replicas: Vec<_> = (0..3)
        .map(|i| {
            let mut d = w.deps().clone();
            d.instance_id = format!("pacing-replica-{i}/boot");
            d
        })
        .collect();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let runs = replicas
            .iter()
            .map(fido_connector::lifecycle::process_shipments);
        futures::future::join_all(runs).await;
        let mut done = 0;
        for id in &ids {
            if w.record(id).await.step == fido_connector::domain::Step::Complete {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
    }
    for id in &ids {
        let rec = w.record(id).await;
        assert_eq!(rec.step, fido_connector::domain::Step::Complete, "{id}");
    }
    assert_eq!(w.sb.entra.registration_count() - before, 30);
    assert_eq!(w.sb.mail.delivered().len(), 30);
    assert_eq!(w.sb.mail.duplicates(), 0);
    w.stop().await;
}

/// `fido-connector import --submit` under a Graph limit on every user read (the create's
/// look-ups): the service answers at the upstream's pace, the import's workers share one
/// pause, and no row fails; a rerun creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_under_a_limit_fails_no_row_and_a_rerun_creates_nothing() {
    let w = World::start(Backend::Embedded).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys.csv");
    let header = include_str!("../../examples/shipments.csv")
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut csv = format!("{header}\n");
    for i in 0..30 {
        csv.push_str(&format!(
            "alice@contoso.example,8,,Contoso,r{i}@contoso.example,Row,Number{i},5555555555,{i} Main Street,,Seattle,WA,98101,US,1,106,CUSTID,Key {i},1,\n"
        ));
    }
    std::fs::write(&file, csv).unwrap();
    w.sb.entra.faults.set(FaultConfig {
        rate_limit: Some(RateLimit {
            per_second: 5.0,
            burst: 5.0,
            method: Some("GET".into()),
            path_contains: Some("/users/".into()),
        }),
        ..Default::default()
    });
    let created_before = w.sb.ye.created_count();
    let run = || async {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fido-connector"))
            .args([
                "import",
                file.to_str().unwrap(),
                "--submit",
                "--concurrency",
                "8",
            ])
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
    };
    let (code, report) = run().await;
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("30 shipments, 0 failed"), "{report}");
    assert_eq!(w.sb.ye.created_count() - created_before, 30);
    let (_, limited) = w.sb.entra.faults.rate_limited();
    assert!(
        limited > 0,
        "the limit was reached (else this proves nothing)"
    );
    let (code, report) = run().await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        w.sb.ye.created_count() - created_before,
        30,
        "a rerun creates nothing"
    );
    w.stop().await;
}

/// A run its budget cuts short has taken the most urgent shipments first: those whose
/// challenge expires soonest (the oldest here) are done, the rest stay due for the next
/// run, which finishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_short_by_its_budget_took_the_nearest_deadlines_first() {
    let w = World::start_with(Backend::Embedded, |env| {
        env.insert("FIDO_CONNECTOR_RUN_BUDGET_SECONDS".into(), "1".into());
        env.insert("FIDO_CONNECTOR_PROCESS_CONCURRENCY".into(), "1".into());
    })
    .await;
    // Created one after the other: each challenge expires a little later than the last.
    let ids = ready_shipments(&w, 12).await;
    // Slow registrations: far fewer than 12 fit in the 1 s budget.
    w.sb.entra.faults.set(FaultConfig {
        latency_ms: 250,
        ..Default::default()
    });
    let summary = fido_connector::lifecycle::process_shipments(w.deps())
        .await
        .unwrap();
    assert!(summary.deferred > 0, "{summary:?}");
    let mut done = Vec::new();
    for id in &ids {
        done.push(w.record(id).await.step == fido_connector::domain::Step::Complete);
    }
    let k = done.iter().filter(|d| **d).count();
    assert!(k >= 1 && k < ids.len(), "{done:?} {summary:?}");
    // The completed ones are exactly the k nearest deadlines.
    assert!(done[..k].iter().all(|d| *d), "{done:?}");
    w.sb.entra.faults.set(FaultConfig::default());
    let rest = fido_connector::lifecycle::process_shipments(w.deps())
        .await
        .unwrap();
    assert_eq!(rest.completed, ids.len() - k, "{rest:?}");
    w.stop().await;
}
