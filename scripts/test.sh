#!/usr/bin/env bash
# Runs every test. Installs what the tests need (Azurite from npm, pinned) into the repo
# when it is missing, starts one Azurite table service for the run, and stops it after.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/azurite.sh install
# Headless Chromium, ChromeDriver and axe-core for the console's browser tests.
bash scripts/browser.sh install

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
workdir=$(mktemp -d)
pid=$(bash scripts/azurite.sh start "$port" "$workdir")
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$workdir"' EXIT
export AZURITE_TABLE_ENDPOINT="http://127.0.0.1:${port}/devstoreaccount1"
echo "azurite-table listening on ${AZURITE_TABLE_ENDPOINT} (pid ${pid})"

# fault-injection compiles the test-only crash points the crash tests use; they do nothing
# unless FIDO_CONNECTOR_CRASH_AT is set in a child process's environment.
cargo test --features fault-injection --no-fail-fast "$@"
