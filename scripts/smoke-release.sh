#!/usr/bin/env bash
# Builds the production binary (no simulators) and checks that every example configuration
# in config/ loads, and that the binary started with config/local-azurite.env (against a
# local Azurite) answers its health, readiness and status endpoints.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --no-default-features
BIN=target/release/fido-connector
ls -l "$BIN"

for f in config/azure.env config/local-azurite.env; do
  echo "-- check-config $f"
  ( set -a; . "./$f"; set +a; "$BIN" check-config )
done

# Outside the sandbox, missing production settings stop the start with a clear message.
if env -i PATH="$PATH" "$BIN" serve 2>/tmp/fc-missing.err; then
  echo "started without configuration" >&2; exit 1
fi
grep -q "required production setting" /tmp/fc-missing.err

bash scripts/azurite.sh install
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
azport=$(free_port)
pid=$(bash scripts/azurite.sh start "$azport" "$work")
port=$(free_port)
( set -a; . ./config/local-azurite.env; set +a
  AZURE_TABLES_ENDPOINT="http://127.0.0.1:$azport/devstoreaccount1" \
  FIDO_CONNECTOR_LISTEN="127.0.0.1:$port" FIDO_CONNECTOR_DATA_DIR="$work/data" exec "$BIN" serve ) >"$work/connector.log" 2>&1 &
app=$!
trap 'kill $app $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz"; echo
curl -fsS "http://127.0.0.1:$port/readyz"; echo
curl -fsS "http://127.0.0.1:$port/v1/status" >/dev/null
echo "release smoke test: ok"
