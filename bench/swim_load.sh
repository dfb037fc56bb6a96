#!/usr/bin/env bash
# SWIM under backend load: a standalone mesh of 3 real `shoal` processes on loopback;
# the peers time every SWIM ping to c0 until its ack while c0's backend chews a
# 100,000-deep file and 2,000 exports. Prints ack latency p50/p99/max (bucket upper
# bounds) for a quiet window and during the load, c0's refuted suspicions, the peers'
# suspicions and withdrawals, the time to import everything, and c0's peak RSS (see
# tests/src/bin/shoal_swim_load_bench.rs). Nothing is asserted. Arguments go to the
# bench:
#   bash bench/swim_load.sh --quiet-s 20 --exports 2000 --json
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p shoal-node --bin shoal -p shoal-tests --bin shoal-swim-load-bench
export SHOAL_BIN="$PWD/target/release/shoal"
exec target/release/shoal-swim-load-bench "$@"
