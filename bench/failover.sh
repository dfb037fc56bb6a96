#!/usr/bin/env bash
# Failover bench: runs `shoal demo` (release build) N times and prints, per run and as
# p50/max, how long after us-east's last rebel-base endpoint died the client's first
# answer came from eu-west (failover_ms), how much of that was readiness detection by
# the demo's kubelet (detection_ms, probes every 200 ms, 2 failures), and the rest:
# Shoal's share (the standalone backend's poll, the record, the import, the DNS zone).
# The target is failover <= detection + 1 s. Nothing is asserted.
#   bash bench/failover.sh [runs]      (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release -p shoal-node --bin shoal
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for i in $(seq 1 "$runs"); do
    target/release/shoal demo --dir "$work/run-$i" > "$work/run-$i.log" 2>&1 \
        || { echo "run $i failed:"; tail -20 "$work/run-$i.log"; exit 1; }
done
python3 - "$work" "$runs" <<'PY'
import json, sys, statistics
work, runs = sys.argv[1], int(sys.argv[2])
rows = [json.load(open(f"{work}/run-{i}/summary.json")) for i in range(1, runs + 1)]
print(f"{'run':>4} {'failover_ms':>12} {'detection_ms':>13} {'shoal_ms':>9} {'failback_ms':>12} {'total_s':>8}")
for i, r in enumerate(rows, 1):
    shoal = r["failover_ms"] - r["detection_ms"]
    print(f"{i:>4} {r['failover_ms']:>12} {r['detection_ms']:>13} {shoal:>9} {r['failback_ms']:>12} {r['total_ms'] / 1000:>8.1f}")
for key in ("failover_ms", "detection_ms", "failback_ms"):
    values = sorted(r[key] for r in rows)
    print(f"{key}: p50 {statistics.median(values):.0f} max {values[-1]}")
shoal = sorted(r["failover_ms"] - r["detection_ms"] for r in rows)
within = sum(1 for r in rows if r["failover_ms"] <= r["detection_ms"] + 1000)
print(f"shoal's share (failover - detection): p50 {statistics.median(shoal):.0f} max {shoal[-1]} ms; "
      f"{within}/{runs} runs within detection + 1 s")
PY
