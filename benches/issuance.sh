#!/usr/bin/env bash
# Issuance latency and throughput on the local backend over TLS: N sequential first issuances
# (P-256 CSRs prepared beforehand with openssl), then N repeats of one CSR (the idempotent path).
# Prints requests per second and the server's RSS.
#
# usage: benches/issuance.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/liqo-auth-target}"
cargo build --release --locked
bin="$CARGO_TARGET_DIR/release/liqo-auth"
work=$(mktemp -d); trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((30000 + RANDOM % 5000))
"$bin" serve --backend local --data-dir "$work/data" --address "127.0.0.1:$port" --enable-tls --log-level warn &
pid=$!
for _ in $(seq 100); do curl -skf "https://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
token=$("$bin" token show --backend local --data-dir "$work/data" | tail -1)
for i in $(seq "$n"); do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=peer-$i/O=liqo.io" 2>/dev/null | base64 -w0 > "$work/csr-$i"
  printf '{"cluster":{"clusterID":"peer-%s","clusterName":"bench"},"destinationClusterToken":"%s","certificateSigningRequest":"%s"}' \
    "$i" "$token" "$(cat "$work/csr-$i")" > "$work/body-$i"
done
run() {
  local label=$1; shift
  local start end
  start=$(date +%s.%N)
  for i in $(seq "$n"); do
    code=$(curl -sk -o /dev/null -w '%{http_code}' "https://127.0.0.1:$port/identity/certificate" --data-binary @"$work/body-$("$@" "$i")")
    [[ $code == 202 ]] || { echo "unexpected status $code"; exit 1; }
  done
  end=$(date +%s.%N)
  awk -v n="$n" -v s="$start" -v e="$end" -v l="$label" 'BEGIN {printf "%s: %d requests in %.2fs, %.1f req/s (one curl process per request, TLS handshake included)\n", l, n, e - s, n / (e - s)}'
}
first() { echo "$1"; }
same() { echo 1; }
run "first issuances" first
run "idempotent repeats" same
echo "server RSS: $(awk '/VmRSS/ {print $2}' /proc/$pid/status) KiB"
