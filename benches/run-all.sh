#!/usr/bin/env bash
# Every performance figure in one run, printed as one table: GET /ids and first issuances
# against the Go stand-in of the reference (../shared/bench/compare-*.sh, data on disk and on
# tmpfs), the server CPU per GET /ids of both (benches/cpu-per-request.sh), memory (idle, idle
# TLS connections, the curve over many issuances) and the Kubernetes API requests per issuance
# (counted by the test against the fake API server).
#
# usage: benches/run-all.sh [PATH/TO/liqo-auth]   (default: builds the release binary)
# env:   SECS, ROUNDS (compare runs), IDLE_CONNECTIONS (4096), ISSUANCES (100000), STEP (10000)
# Not part of CI (a load test): run it on a quiet machine; ratios come from alternating runs.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${SHARED_BENCH:-../shared/bench}
if [[ $# -ge 1 ]]; then
  bin=$(realpath "$1")
else
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/liqo-auth-target}"
  cargo build --release --locked
  bin="$CARGO_TARGET_DIR/release/liqo-auth"
fi
secs=${SECS:-4}; rounds=${ROUNDS:-3}
# The compare scripts start `serve` without --metrics-address: keep the admin port out of the way.
export LIQO_AUTH_METRICS_ADDRESS=${LIQO_AUTH_METRICS_ADDRESS:-off}
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT

echo "== GET /ids (compare-ids.sh $secs $rounds)"; bash "$shared/compare-ids.sh" "$bin" "$secs" "$rounds" | tee "$out/ids"
# One tokio worker: what a pod with a CPU limit of one core or less gets (deploy/base: 500m), and
# what suits a 2-core machine whose other core runs the load generator.
echo "== GET /ids, TOKIO_WORKER_THREADS=1"
TOKIO_WORKER_THREADS=1 bash "$shared/compare-ids.sh" "$bin" "$secs" "$rounds" | tee "$out/ids1"
echo "== CPU per GET /ids (cpu-per-request.sh)"; bash benches/cpu-per-request.sh "$bin" "$secs" "$rounds" | tee "$out/cpu"
echo "== first issuances, data on disk"; bash "$shared/compare-issuance.sh" "$bin" "$secs" "$rounds" 8 | tee "$out/disk"
echo "== first issuances, data on tmpfs"
TMPDIR=/dev/shm bash "$shared/compare-issuance.sh" "$bin" "$secs" "$rounds" 8 | tee "$out/tmpfs"
echo "== memory"
bash benches/memory.sh "$bin" "${IDLE_CONNECTIONS:-4096}" "${ISSUANCES:-100000}" "${STEP:-10000}" | tee "$out/memory"
echo "== Kubernetes API requests per issuance"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/liqo-auth-target}" \
  cargo test --locked --test integration full_issuance_creates_exactly_the_reference_objects -- --nocapture 2>/dev/null \
  | grep 'API requests' | tee "$out/kube"

# Whether the binary's code is laid out by link/serve.order (build.rs): the functions it lists
# sit together when it is applied, spread through the whole text when it is not or is stale.
echo "== code layout (link/serve.order)"
nm --defined-only -S "$bin" | python3 -c '
import sys
listed = set(open("link/serve.order").read().split())
windows, hot, found = set(), set(), 0
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 4 and parts[2] in "tTwW":
        start, size = int(parts[0], 16), int(parts[1], 16)
        span = range(start >> 16, ((start + max(size, 1) - 1) >> 16) + 1)
        windows.update(span)
        if parts[3] in listed:
            found += 1
            hot.update(span)
# The kernel maps code 64 KiB around each page touched: the windows the listed functions occupy
# are about what the service keeps resident.
print(f"{found} of {len(listed)} listed functions in the binary, in {len(hot)} of its {len(windows)} 64 KiB windows of code")
' | tee "$out/layout"

field() { grep -o "$2" "$out/$1" | head -1; }
issuance() { # file -> "ours (p50) | go (p50) | ratio"
  local line ours go ratio
  line=$(grep 'first issuance' "$out/$1")
  ours=$(echo "$line" | sed -E 's/.*liqo-auth ([0-9.]+) req\/s.*/\1/')
  go=$(echo "$line" | sed -E 's/.*go baseline ([0-9.]+) req\/s.*/\1/')
  ratio=$(grep -o 'issuance ratio [0-9.]*' "$out/$1" | awk '{print $3}')
  echo "$ours | $go | **$ratio**"
}
ids() { # mode [file] -> "ours | go | ratio"
  grep "^$1:" "$out/${2:-ids}" | sed -E 's/.*liqo-auth ([0-9.]+) req\/s.*go baseline ([0-9.]+) req\/s.*ratio ([0-9.]+)/\1 | \2 | **\3**/'
}
echo
echo "| Figure | liqo-auth | Go stand-in | ratio |"
echo "| --- | --- | --- | --- |"
echo "| first issuances/s, c=8, data on disk | $(issuance disk) |"
echo "| same, data on tmpfs | $(issuance tmpfs) |"
echo "| GET /ids keep-alive (req/s) | $(ids keepalive) |"
echo "| GET /ids new connection per request (req/s) | $(ids handshake) |"
echo "| GET /ids keep-alive, one tokio worker | $(ids keepalive ids1) |"
echo "| GET /ids new connection, one tokio worker | $(ids handshake ids1) |"
cpu() { # mode -> "ours us | go us | go/ours"
  grep "^$1:" "$out/cpu" | sed -E 's/.*liqo-auth ([0-9.]+) us .*go baseline ([0-9.]+) us .*server CPU ([0-9.]+)$/\1 µs | \2 µs | \3 (Go \/ liqo-auth)/'
}
echo "| server CPU per GET /ids, keep-alive | $(cpu keepalive) |"
echo "| server CPU per GET /ids, new connection | $(cpu handshake) |"
echo "| RSS idle | $(field memory 'RSS idle: [0-9]* KiB' | awk '{print $3}') KiB | | |"
echo "| RSS with ${IDLE_CONNECTIONS:-4096} idle TLS connections | $(grep -o 'open ([^)]*): [0-9]* KiB' "$out/memory" | awk '{print $(NF-1)}') KiB | | |"
echo "| RSS 12 s after those connections closed | $(grep -o '12 s after closing them: [0-9]* KiB' "$out/memory" | awk '{print $(NF-1)}') KiB | | |"
echo "| RSS after ${ISSUANCES:-100000} issuances | $(grep '(end)' "$out/memory" | awk '{print $2}') KiB | | |"
echo "| code layout: link/serve.order | $(cat "$out/layout") | | |"
echo "| Kubernetes API requests, first issuance / repeat | $(sed -E 's/.*first issuance ([0-9]+).*repeat ([0-9]+).*/\1 \/ \2/' "$out/kube") | | |"
echo
echo "p50 latencies and the runs behind each median are in the sections above."
