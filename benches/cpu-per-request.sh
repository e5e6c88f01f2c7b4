#!/usr/bin/env bash
# CPU per GET /ids over TLS, of the server and of the client: liqo-auth against the Go stand-in of
# the reference (../shared/bench/gobaseline), keep-alive and one new connection per request,
# alternating runs. Requests per second on a machine whose cores the client shares are bounded by
# the client's share too; this is the server's own cost, from its /proc/PID/stat (user + system
# time over the run) and the client's from bash's `time`.
#
# usage: benches/cpu-per-request.sh PATH/TO/liqo-auth [SECONDS_PER_RUN] [ROUNDS]
# needs: go (Debian golang-go), wrk (Debian wrk). Not part of CI (a load test).
set -euo pipefail
bin=$(realpath "$1"); secs=${2:-5}; rounds=${3:-3}
shared=$(cd "$(dirname "$0")/.." && realpath "${SHARED_BENCH:-../shared/bench}")
need() { command -v "$1" >/dev/null || { apt-get update -qq >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need go golang-go; need wrk wrk
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
(cd "$shared/gobaseline" && GOFLAGS=-mod=mod go build -o "$work/gobaseline" .)
pa=$((20000 + RANDOM % 5000)); pb=$((25000 + RANDOM % 5000))
"$bin" serve --backend local --data-dir "$work/data" --address "127.0.0.1:$pa" --enable-tls \
  --metrics-address off --log-level warn >"$work/ours.log" 2>&1 & pids+=($!)
"$work/gobaseline" -address "127.0.0.1:$pb" >"$work/go.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  curl -skf "https://127.0.0.1:$pa/healthz" >/dev/null 2>&1 && curl -skf "https://127.0.0.1:$pb/ids" >/dev/null 2>&1 && break
  sleep 0.1
done
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in clock ticks
# One run: "req/s server_us_per_request client_us_per_request"
run() {
  local pid=$1 url=$2; shift 2
  local before after rps client
  before=$(cpu "$pid")
  client=$( { TIMEFORMAT='%U %S'; time wrk "$@" "$url" >"$work/wrk.out" 2>&1; } 2>&1 | tail -1)
  after=$(cpu "$pid")
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  awk -v r="$rps" -v d=$((after - before)) -v t="$ticks" -v s="$secs" -v c="$client" 'BEGIN {
    split(c, u, " "); n = r * s
    printf "%.0f %.1f %.1f\n", r, (n > 0 ? d / t * 1e6 / n : 0), (n > 0 ? (u[1] + u[2]) * 1e6 / n : 0) }'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for mode in keepalive handshake; do
  args=(-t1 -c32 -d"${secs}s"); [[ $mode == handshake ]] && args=(-t1 -c16 -d"${secs}s" -H "Connection: close")
  : >"$work/ours.$mode"; : >"$work/go.$mode"
  for _ in $(seq "$rounds"); do
    run "${pids[0]}" "https://127.0.0.1:$pa/ids" "${args[@]}" >>"$work/ours.$mode"
    run "${pids[1]}" "https://127.0.0.1:$pb/ids" "${args[@]}" >>"$work/go.$mode"
  done
  col() { awk -v c="$2" '{print $c}' "$work/$1.$mode" | median; }
  so=$(col ours 2); sg=$(col go 2)
  echo "$mode: server CPU per request liqo-auth ${so} us (runs: $(awk '{printf "%s ", $2}' "$work/ours.$mode")), go baseline ${sg} us (runs: $(awk '{printf "%s ", $2}' "$work/go.$mode")), client CPU per request against them $(col ours 3) / $(col go 3) us, req/s $(col ours 1) / $(col go 1), go/liqo-auth server CPU $(awk -v a="$so" -v b="$sg" 'BEGIN {printf "%.2f", (a > 0 ? b / a : 0)}')"
done
