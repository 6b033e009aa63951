#!/usr/bin/env bash
# Azurite (the Azure Storage emulator) for the tests, pinned and installed into the repo.
#   scripts/azurite.sh install          npm install azurite@3.35.0 into ./.azurite (once)
#   scripts/azurite.sh start PORT DIR   start azurite-table in memory on 127.0.0.1:PORT,
#                                        wait until it answers, print its pid
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.35.0
BIN=.azurite/node_modules/.bin/azurite-table

case "${1:-}" in
  install)
    if [ -x "$BIN" ] && grep -q "\"version\": \"$VERSION\"" .azurite/node_modules/azurite/package.json 2>/dev/null; then
      exit 0
    fi
    command -v npm >/dev/null || { echo "npm is required to install Azurite" >&2; exit 1; }
    mkdir -p .azurite
    npm install --prefix .azurite --no-audit --no-fund --loglevel=error "azurite@$VERSION" >&2
    ;;
  start)
    port=${2:?port}; dir=${3:?dir}
    "$BIN" --inMemoryPersistence --skipApiVersionCheck --loose --disableTelemetry \
      --tableHost 127.0.0.1 --tablePort "$port" >"$dir/azurite.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 150); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$pid"; exit 0; fi
      kill -0 "$pid" 2>/dev/null || { cat "$dir/azurite.log" >&2; exit 1; }
      sleep 0.1
    done
    echo "azurite-table did not start on port $port" >&2; cat "$dir/azurite.log" >&2; exit 1
    ;;
  *) echo "usage: $0 install | start PORT DIR" >&2; exit 2 ;;
esac
