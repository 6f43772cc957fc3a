#!/usr/bin/env bash
# Bare Mosquitto vs Mosquitto + mqtt-policy (hub-rules for 10 and 10,000 devices, decision cache on
# and off) vs Mosquitto's own acl_file with the same rules, in interleaved rounds on loopback.
# Writes the medians and ratios into BENCHMARKS.md. Options go to scripts/bench_broker.py
# (--rounds N, --duration SECS, --write FILE, ...). Takes about 15 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  echo "==> installing Mosquitto from Debian's packages"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq mosquitto >/dev/null
fi
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

echo "==> building the plugin, the mqtt-policy CLI and mqtt-loadgen (release)"
cargo build --locked --quiet --release -p mqtt-policy-mosquitto --lib
cargo build --locked --quiet --release -p mqtt-policy-cli -p mqtt-loadgen --bins
exec python3 scripts/bench_broker.py "$@"
