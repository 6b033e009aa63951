#!/usr/bin/env bash
# Benchmarks: prints each figure beside its bound (see docs/performance.md). Not a test.
#   BENCH_RECORDS (100000)  records for the read path
#   BENCH_SHIPMENTS (1000)  shipments for the create and processing figures
#   BENCH_LATENCY_MS (50)   added to every upstream call while processing
#   BENCH_CONCURRENCY (16,64) processing concurrencies to run
#   BENCH_SECONDS (5), BENCH_CONNECTIONS (32), BENCH_AZURE_RECORDS (10000)
#   BENCH_SKIP_AZURITE=1    leave out the Azure Tables figures
#   BENCH_SKIP_READS=1      leave out the read rows (to look at create and processing)
#   BENCH_SKIP_LIMITS=1     leave out the rows under upstream rate limits (#24)
#   BENCH_LIMITED_SHIPMENTS (160), BENCH_IMPORT_ROWS (1000)  their sizes
#   BENCH_ONLY_REPLICAS=1   only the three-replica row under one Graph limit
#   BENCH_SHOW_RUNS=1       rate-limit rows: log at INFO, print each replica's run summary
#   BENCH_PERF=1            where the connector's CPU goes on the read path (perf; build
#                           unstripped: CARGO_PROFILE_RELEASE_STRIP=false)
#   The read path is also measured with wrk (server pinned to core 0, wrk on core 1) when
#   wrk and taskset are installed (Debian: apt-get install wrk).
#   BENCH_CALLGRIND=1       add instruction counts per create and per processed shipment
#                           against the floors' (needs valgrind; BENCH_CALLGRIND_SHIPMENTS, 64)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
# The connector under test is the production build (no simulators, as the image ships it);
# the simulators and the load generator run in the bench process.
cargo build --release --quiet --no-default-features --target-dir target/production
export FIDO_CONNECTOR_BIN="${FIDO_CONNECTOR_BIN:-target/production/release/fido-connector}"
bash scripts/azurite.sh install
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=$(bash scripts/azurite.sh start "$port" "$work")
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
export AZURITE_TABLE_ENDPOINT="http://127.0.0.1:${port}/devstoreaccount1"
cargo bench --quiet --bench service
