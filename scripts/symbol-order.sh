#!/usr/bin/env bash
# Regenerates link/symbol-order.txt, the order in which the release binary's hot functions
# are laid out (build.rs; docs/performance.md, "Idle memory"). For each build that ships
# (the production build `--no-default-features`, and the image's, which adds
# vendored-openssl: its own symbol names differ), it builds the binary with a link map,
# runs the bench's short run (BENCH_* below, with Azurite) with that connector under
# callgrind, and then lists the functions start-up ran, then those the read, create and
# processing paths ran. Needs valgrind. Takes about fifteen minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
# The Azure Tables rows too (production deployments start and serve through that store).
bash scripts/azurite.sh install
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
azurite=$(bash scripts/azurite.sh start "$port" "$work")
trap 'pkill -TERM -f "callgrind-out-file=$work" 2>/dev/null || true; kill "$azurite" 2>/dev/null || true; rm -rf "$work"' EXIT
export AZURITE_TABLE_ENDPOINT="http://127.0.0.1:${port}/devstoreaccount1"
profile() { # name, target dir, extra cargo arguments
  local name=$1 dir=$2
  shift 2
  FIDO_CONNECTOR_LINK_MAP="$work/$name.map" \
    cargo build --release --quiet --no-default-features --target-dir "$dir" "$@"
  local bin="$PWD/$dir/release/fido-connector"
  mkdir "$work/$name"
  # The bench starts the connector through this wrapper; callgrind writes the first file
  # when /readyz first answers, the second when the connector exits.
  cat > "$work/$name.sh" <<WRAP
#!/usr/bin/env bash
valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \
  --callgrind-out-file=$work/$name/cg.%p.out "$bin" "\$@" 2>/dev/null &
child=\$!
for _ in \$(seq 1 6000); do
  curl -sf "http://\${FIDO_CONNECTOR_LISTEN}/readyz" >/dev/null 2>&1 && break
  sleep 0.01
done
callgrind_control -d \$child >/dev/null 2>&1
wait \$child
WRAP
  chmod +x "$work/$name.sh"
  FIDO_CONNECTOR_BIN="$work/$name.sh" BENCH_RECORDS=2000 BENCH_AZURE_RECORDS=500 \
    BENCH_SHIPMENTS=32 BENCH_SECONDS=1 cargo bench --quiet --bench service >"$work/$name.log"
  # The bench kills the wrappers; the connectors under callgrind end on SIGTERM, and write.
  pkill -TERM -f "callgrind-out-file=$work" || true
  while pgrep -f "callgrind-out-file=$work" >/dev/null; do sleep 1; done
}
profile production target/production
profile image target/image --features vendored-openssl
python3 scripts/symbol-order.py "$work/production.map" "$work/production" \
  "$work/image.map" "$work/image" > link/symbol-order.txt
