#!/usr/bin/env bash
# Kubernetes bench: 3 real control planes (tests/k8s) with 2 `shoal` replicas each, on
# loopback; prints export-to-import latency, steady-state API requests and writes per
# endpoint change (see tests/src/bin/shoal_k8s_bench.rs). Arguments go to the bench:
#   bash bench/k8s.sh --services 100 --steady-s 120 --json
# Needs the control planes built once: bash tests/k8s/build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p shoal-node --bin shoal -p shoal-tests --bin shoal-k8s-bench
exec target/release/shoal-k8s-bench "$@"
