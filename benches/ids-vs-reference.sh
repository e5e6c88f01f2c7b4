#!/usr/bin/env bash
# GET /ids over TLS: liqo-auth against the Go stand-in of the reference, side by side
# (../shared/bench/compare-ids.sh: wrk, keep-alive and new-connection rates, alternating runs).
# Prints the figures; targets (issue 16): keep-alive ratio >= 1.5, new-connection ratio >= 1.25.
#
# usage: benches/ids-vs-reference.sh [SECONDS_PER_RUN] [ROUNDS]
# Not part of CI (it is a load test): run it by hand on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/liqo-auth-target}"
cargo build --release --locked
compare="${COMPARE_IDS:-../shared/bench/compare-ids.sh}"
exec bash "$compare" "$CARGO_TARGET_DIR/release/liqo-auth" "${1:-4}" "${2:-3}"
