#!/usr/bin/env bash
# Bare Mosquitto vs Mosquitto + mqtt-policy (hub-rules for 10 and 10,000 devices, decision cache on
# and off) vs Mosquitto's own acl_file with the same rules, in interleaved rounds on loopback.
# Writes the medians and ratios into BENCHMARKS.md. Options go to scripts/bench_broker.py
# (--rounds N, --duration SECS, --write FILE, ...). Takes about 15 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

prepare_release_tools
exec python3 scripts/bench_broker.py "$@"
