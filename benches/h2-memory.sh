#!/usr/bin/env bash
# Memory under HTTP/2 floods and after them (the RSS figures in README "Connection limits"):
#   1. the issue's attack: 66 TLS connections x 250 POST streams that announce a body and never
#      send it (benches/h2_attack.py), from one address, with the per-source cap lifted;
#   2. 1,000 connections x 8 such streams (the per-source cap lifted, --max-connections 4096);
#   3. the same flood with the default per-source cap (64);
#   4. honest load: h2load (Debian nghttp2-client), 64 connections x 8 streams of GET /ids.
# The handshake deadline is raised to 60 s: one Python process needs longer than the default 10 s
# to complete a thousand handshakes, and the point here is memory, not deadlines.
# Prints the server's RSS before, at the peak of each run (sampled every 0.2 s) and 3 s after
# the clients closed. Not run in CI.
#
# usage: benches/h2-memory.sh            (builds the release binary)
#        LIQO_AUTH_BIN=path benches/h2-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/liqo-auth-target}"
if [[ -z ${LIQO_AUTH_BIN:-} ]]; then
  cargo build --release --locked
fi
bin=${LIQO_AUTH_BIN:-$CARGO_TARGET_DIR/release/liqo-auth}
command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client"; exit 1; }
# 1,000 connections need more descriptors than the usual soft limit of 1,024 (the server and the
# client inherit this).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
work=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT

rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
start() {
  port=$((30000 + RANDOM % 5000))
  "$bin" serve --backend local --data-dir "$work/data" --address "127.0.0.1:$port" --enable-tls \
    --metrics-address off --log-level error --tls-handshake-timeout 60s "$@" &
  pid=$!
  for _ in $(seq 100); do curl -skf "https://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
  for _ in $(seq 20); do curl -sk "https://127.0.0.1:$port/ids" >/dev/null; done
  echo "  RSS at start: $(rss) KiB"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
# Runs "$@" in the background, samples the server's RSS until it ends, prints peak and after.
measure() {
  "$@" &
  local client=$! peak=0 now
  while kill -0 "$client" 2>/dev/null; do
    now=$(rss); ((now > peak)) && peak=$now
    sleep 0.2
  done
  wait "$client" || true
  sleep 3
  echo "  RSS peak: $peak KiB; 3 s after the clients closed: $(rss) KiB"
}

echo "1. 66 connections x 250 streams without bodies (--max-connections-per-source 0)"
start --max-connections-per-source 0
measure python3 benches/h2_attack.py "$port" 66 250 8
stop
echo "2. 1000 connections x 8 streams without bodies (--max-connections-per-source 0)"
start --max-connections-per-source 0
measure python3 benches/h2_attack.py "$port" 1000 8 15
stop
echo "3. 1000 connections x 8 streams without bodies (default per-source cap)"
start
measure python3 benches/h2_attack.py "$port" 1000 8 15
stop
echo "4. h2load: 64 connections x 8 streams, 50000 GET /ids"
start
measure sh -c "h2load -c 64 -m 8 -n 50000 https://127.0.0.1:$port/ids | grep -E '^(finished|requests|status codes)'"
stop
