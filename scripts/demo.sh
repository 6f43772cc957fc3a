#!/usr/bin/env bash
# The main job, end to end: a real Mosquitto (Debian's) loads the mqtt-policy plugin with three
# example hubs as WebAssembly policies, scripted MQTT v5 / v3.1.1 / mTLS devices connect,
# publish and subscribe, and every outcome is printed with the reason code the client saw and
# the event the plugin wrote. Then the same rules are unit-tested with `mqtt-policy test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ! have_mosquitto; then
  echo "==> installing Mosquitto from Debian's packages"
  apt_install mosquitto mosquitto-clients
fi

echo "==> installing the wasm32-wasip2 target"
rustup target add wasm32-wasip2

echo "==> building the plugin (libmqtt_policy_mosquitto.so), the demo driver and the mqtt-policy CLI"
cargo build --locked --quiet --release -p mqtt-policy-mosquitto --lib --example demo
cargo build --locked --quiet --release -p mqtt-policy-cli
out=target/demo
mkdir -p "$out"

echo; echo "==> Mosquitto + mqtt-policy, live"
./target/release/examples/demo "$out"
echo "    broker configuration used: $out/mosquitto.conf"

cli=target/release/mqtt-policy
echo; echo "==> the same rules, unit-tested on a laptop: mqtt-policy build + mqtt-policy test"
for hub in shared-hub ibm-platform dedicated-ca; do
  "$cli" build "policies/examples/$hub/rules.toml" -o "$out/$hub.wasm" | tail -n 1
  "$cli" test "$out/$hub.wasm" "policies/examples/$hub/cases.toml" | tail -n 1
done
echo; echo "==> one decision, explained"
"$cli" eval "$out/shared-hub.wasm" --tenant shared --client-id thermo-1 \
  --publish devices/thermo-1/telemetry/temp --qos 2
