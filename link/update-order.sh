#!/usr/bin/env bash
# Regenerates link/serve.order, the symbol ordering file build.rs hands to the linker for release
# builds: the functions `serve` runs, placed side by side in the binary. The kernel maps code in
# 64 KiB windows around each page a process touches, so with the functions the service runs
# scattered through 13 MB of text nearly every window ends up resident (14 MB RSS idle); packed
# together they fill about 3 MB (8 MB RSS idle, benches/memory.sh).
#
# How: run the release binary under valgrind's callgrind through a short session of everything
# serve does on the local backend (start-up, TLS over HTTP/1.1 and h2, /ids, probes, 404s, first
# and repeated issuances, a refused token, a metrics scrape, shutdown), keep the functions it
# entered that are symbols of the binary, and add ring's CPU-dispatched crypto routines (the CPU
# valgrind emulates may pick other ones than the real machine). Kubernetes-backend code is not in
# the session (it needs an API server); it stays where the linker puts it.
#
# The file names symbols as rustc mangles them for this toolchain and this Cargo.lock: after a
# toolchain or dependency update, or a large change to the serving path, run this again. A stale
# file does no harm: the linker skips names it does not find, and code it misses is only mapped
# less compactly.
#
# usage: link/update-order.sh        needs: valgrind, openssl, curl (apt-get install them if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/liqo-auth-target}"
for tool in valgrind openssl curl; do
  command -v "$tool" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool"; }
done
cargo build --release --locked
bin="$CARGO_TARGET_DIR/release/liqo-auth"
work=$(mktemp -d); pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
port=$((30000 + RANDOM % 5000)); metrics=$((35000 + RANDOM % 5000))
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" --compress-strings=no --compress-pos=no \
  --demangle=no "$bin" serve --backend local --data-dir "$work/data" --address "127.0.0.1:$port" --enable-tls \
  --metrics-address "127.0.0.1:$metrics" >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 300); do curl -skf "https://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
url="https://127.0.0.1:$port"
token=$("$bin" token show --backend local --data-dir "$work/data" | tail -1)
for version in --http2 --http1.1; do
  curl -sk "$version" "$url/ids" "$url/readyz" "$url/healthz" "$url/nope" "$url//ids" >/dev/null
  curl -sk "$version" -X DELETE "$url/ids" >/dev/null
done
for i in 1 2; do
  csr=$(openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/CN=peer-$i/O=liqo.io" 2>/dev/null | base64 -w0)
  body=$(printf '{"cluster":{"clusterID":"peer-%s","clusterName":"train"},"destinationClusterToken":"%s","certificateSigningRequest":"%s"}' \
    "$i" "$token" "$csr")
  for version in --http2 --http1.1; do
    curl -sk "$version" -o /dev/null "$url/identity/certificate" --data-binary "$body"
  done
  curl -sk -o /dev/null "$url/identity/certificate" --data-binary "${body/$token/wrong}"
done
curl -sk -o /dev/null "$url/identity/certificate" --data-binary '{"cluster":{}}'
curl -s -o /dev/null "http://127.0.0.1:$metrics/metrics"
kill -TERM "$pid"; wait "$pid" || true; pid=

nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u >"$work/text"
grep -E '^c?fn=' "$work/callgrind.out" | sed -E 's/^c?fn=//' | sort -u >"$work/entered"
{ comm -12 "$work/entered" "$work/text"; grep -E '^ring_core_' "$work/text"; } | sort -u >link/serve.order
echo "link/serve.order: $(wc -l <link/serve.order) of $(wc -l <"$work/text") functions"
