#!/usr/bin/env bash
# Loopback bench: 20 `shoal` processes and 20 Serf agents doing the same work, figures
# side by side (see bench/loopback.py). Needs root for nothing; installs serf if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v serf >/dev/null 2>&1; then
    apt-get install -y serf >/dev/null
fi
cargo build --release -p shoal-node --bin shoal
exec python3 bench/loopback.py "$@"
