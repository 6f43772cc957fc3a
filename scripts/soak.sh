#!/usr/bin/env bash
# Soak test (not part of the default test run): a real Mosquitto with the plugin under steady QoS 1
# load for 10 minutes while the policy file is replaced every second, a corrupt one among them.
# Checks allowed == delivered, no disconnects, flat memory; writes the figures into RELIABILITY.md.
# Options go to scripts/soak.py (--minutes M, --publishers N, --rate R, --write FILE).
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
exec python3 scripts/soak.py "$@"
