#!/usr/bin/env bash
# Slowloris bench: one real `shoal` node (standalone backend, default [http] limits, a
# health listener) on loopback under 500 slow clients; prints /healthz latency on the
# health listener and on the API listener during the load, and the node's refused and
# timeout counters (see tests/src/bin/shoal_slowloris_bench.rs). Arguments go to the
# bench:
#   bash bench/slowloris.sh --clients 500 --addresses 1,50 --load-s 15 --json
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p shoal-node --bin shoal -p shoal-tests --bin shoal-slowloris-bench
exec target/release/shoal-slowloris-bench "$@"
