//! Benchmarks of the service against its bounds, measured in the same run so that ratios
//! hold on a noisy machine. Not a test: it prints. Run with `bash bench/run.sh`.
//!
//! 1. read path: GET /v1/fpr/shipments/{id} over 100,000 records vs a minimal axum handler
//! 2. processing: one run over N ready shipments with 50 ms added to every upstream call,
//!    vs N × calls × L ÷ concurrency
//! 3. create path: shipments per second and CPU per create with instant upstreams
//! 4. footprint: RSS idle and under load, start-up to /readyz, binary size
//! 5. the same read and processing figures on Azure Tables (Azurite)
//! 6. with BENCH_CALLGRIND=1: instructions per create and per processed shipment against
//!    the floors' instructions (callgrind; repeatable where CPU time is not)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as AxPath, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use fido_connector::domain::{ShipmentRecord, Step};
use fido_connector::sandbox::faults::FaultConfig;
use fido_connector::sandbox::run::{prepare, Sandbox};
use fido_connector::store::ShipmentStore;
use serde_json::{json, Value};

mod callgrind;
mod console;
mod floors;
mod harness;
mod pacing;
mod processing;
mod reads;

#[allow(unused_imports)]
use callgrind::*;
#[allow(unused_imports)]
use console::*;
#[allow(unused_imports)]
use floors::*;
#[allow(unused_imports)]
use harness::*;
#[allow(unused_imports)]
use pacing::*;
#[allow(unused_imports)]
use processing::*;
#[allow(unused_imports)]
use reads::*;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// Users of the seeded records: 1,000 of them, so a user's listing holds n / 1,000.
const BENCH_USERS: usize = 1000;

/// One round of the read path: Entra-token load and its connector CPU, API-key load and
/// its CPU, baseline load.
type Round = (Load, f64, Load, f64, Load);

#[tokio::main]
async fn main() {
    if let Ok(spec) = std::env::var("BENCH_FLOOR_CHILD") {
        floor_child(&spec);
        return;
    }
    if let Ok(n) = std::env::var("BENCH_BASELINE_CHILD") {
        baseline_child(n.parse().unwrap()).await;
        return;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("fido-connector benchmarks on {cores} cores");
    if let Ok(md) = std::fs::metadata(
        std::env::var("FIDO_CONNECTOR_BIN")
            .unwrap_or_else(|_| "target/release/fido-connector".into()),
    ) {
        println!("release binary: {:.1} MiB", md.len() as f64 / 1048576.0);
    }
    // BENCH_ONLY_REPLICAS=1: the three-replica row alone (needs AZURITE_TABLE_ENDPOINT).
    if std::env::var("BENCH_ONLY_REPLICAS").is_ok() {
        if let Ok(ep) = std::env::var("AZURITE_TABLE_ENDPOINT") {
            three_replicas(&ep).await;
        }
        return;
    }
    let records = env_usize("BENCH_RECORDS", 100_000);
    // BENCH_ONLY_CONSOLE=1: the console's page rows alone.
    if std::env::var("BENCH_ONLY_CONSOLE").is_ok() {
        console_pages(records).await;
        return;
    }
    let n = env_usize("BENCH_SHIPMENTS", 1000);
    let latency = env_usize("BENCH_LATENCY_MS", 50) as u64;

    // Embedded store.
    let (sb, dir) = world(None).await;
    let store: Arc<dyn ShipmentStore> = Arc::new(
        fido_connector::store::sqlite::SqliteStore::open(&dir.path().join("shipments.sqlite3"))
            .unwrap(),
    );
    // BENCH_SKIP_READS=1 leaves the read rows out (to look at processing alone).
    let reads = std::env::var("BENCH_SKIP_READS").is_err();
    if reads {
        read_path("embedded", &sb, store, dir.path(), records).await;
        console_pages(records).await;
    }
    let levels: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    for c in levels {
        let (sb, dir) = world(None).await;
        processing("embedded", &sb, dir.path(), n, c, latency).await;
    }
    // Under the upstreams' rate limits (BENCH_SKIP_LIMITS=1 to leave them out).
    if std::env::var("BENCH_SKIP_LIMITS").is_err() {
        let limited_n = env_usize("BENCH_LIMITED_SHIPMENTS", 160);
        for limited in [Limited::GraphRegistrations, Limited::YeReads, Limited::Mail] {
            let (sb, dir) = world(None).await;
            throttled("embedded", &sb, dir.path(), limited_n, limited, 10.0, 1).await;
        }
        let (sb, dir) = world(None).await;
        let rows = env_usize("BENCH_IMPORT_ROWS", 1000);
        import_throttled("embedded", &sb, dir.path(), rows, 20.0).await;
    }
    // BENCH_CALLGRIND=1: the same create and processing under callgrind (needs valgrind).
    if std::env::var("BENCH_CALLGRIND").is_ok() {
        let (sb, dir) = world(None).await;
        let shipments = env_usize("BENCH_CALLGRIND_SHIPMENTS", 64);
        instructions("embedded", &sb, dir.path(), shipments, latency).await;
    }

    // Azure Tables on Azurite (BENCH_SKIP_AZURITE=1 to leave it out).
    let azurite = std::env::var("AZURITE_TABLE_ENDPOINT")
        .ok()
        .filter(|_| std::env::var("BENCH_SKIP_AZURITE").is_err());
    if let Some(ep) = azurite {
        let (sb, dir) = world(Some(&ep)).await;
        let store = fido_connector::store::azure::AzureTableStore::connect(
            &ep.parse().unwrap(),
            &sb.env["AZURE_TABLES_SHIPMENTS_TABLE_NAME"],
            fido_connector::store::azure::AzureTablesAuth::SharedKey {
                account: "devstoreaccount1".into(),
                key: sb.env["AZURE_STORAGE_ACCOUNT_KEY"].clone().into(),
            },
            std::time::Duration::from_secs(30),
            fido_connector::upstream::http::build_client(std::time::Duration::from_secs(30), None)
                .unwrap(),
        )
        .await
        .unwrap();
        let azure_records = env_usize("BENCH_AZURE_RECORDS", 10_000);
        if reads {
            read_path("azurite", &sb, store.clone(), dir.path(), azure_records).await;
            // The emulator's own cost: point reads of the same entities straight through the
            // Azure SDK from this process, with the same concurrency, in the same run. A read
            // by shipment id is one of them once the replica knows which record the id
            // names, two before (the index entity, then the record).
            let secs = env_usize("BENCH_SECONDS", 5) as u64;
            let conns = env_usize("BENCH_CONNECTIONS", 32);
            let deadline = Instant::now() + Duration::from_secs(secs);
            let tasks: Vec<_> = (0..conns)
                .map(|c| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut n = 0usize;
                        let mut i = c * 7919;
                        while Instant::now() < deadline {
                            i = (i * 31 + 17) % azure_records;
                            if store.get(&format!("bench-{i:08}")).await.is_ok() {
                                n += 1;
                            }
                        }
                        n
                    })
                })
                .collect();
            let mut done = 0;
            for t in tasks {
                done += t.await.unwrap();
            }
            println!(
                "[azurite] raw point reads through the SDK ({conns} tasks, {secs} s): {:.0} reads/s \
                 (a connector read by shipment id: one point read once its pair is known, two before)",
                done as f64 / secs as f64
            );
        }
        let (sb, dir) = world(Some(&ep)).await;
        processing("azurite", &sb, dir.path(), n, 64, latency).await;
        if std::env::var("BENCH_SKIP_LIMITS").is_err() {
            // Three replicas over one table, sharing one Graph limit.
            three_replicas(&ep).await;
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
    } else {
        println!("[azurite] skipped (BENCH_SKIP_AZURITE, or AZURITE_TABLE_ENDPOINT not set)");
    }
}
