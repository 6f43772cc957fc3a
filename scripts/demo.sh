#!/usr/bin/env bash
# The main job, end to end (until the Mosquitto adapter lands, decisions are asked of the
# policies through the CLI, not a broker): build the example policies to wasm, check them,
# run their cases, and explain single decisions with reason codes and events.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing the wasm32-wasip2 target"
rustup target add wasm32-wasip2

echo "==> building the hello policy (wasm32-wasip2) and the mqtt-policy CLI (embeds the hub-rules policy)"
cargo build --locked --quiet --target wasm32-wasip2 --profile wasm -p hello-policy
cargo build --locked --quiet --release -p mqtt-policy-cli
wasm=target/wasm32-wasip2/wasm/hello_policy.wasm
cli=target/release/mqtt-policy
out=target/demo
mkdir -p "$out"

echo; echo "==> the hello policy: check, its cases, single decisions"
"$cli" check "$wasm" --settings policies/hello/settings.toml
"$cli" test "$wasm" policies/hello/cases.toml --settings policies/hello/settings.toml --verbose
"$cli" eval "$wasm" --settings policies/hello/settings.toml --client-id sensor-1 --publish devices/sensor-2/temp --qos 1

for hub in shared-hub ibm-platform dedicated-ca; do
  echo; echo "==> hub rules: policies/examples/$hub (build, then every case)"
  "$cli" build "policies/examples/$hub/rules.toml" -o "$out/$hub.wasm"
  "$cli" test "$out/$hub.wasm" "policies/examples/$hub/cases.toml" --verbose
done

echo; echo "==> one decision, explained, with its event"
"$cli" eval "$out/ibm-platform.wasm" --tenant acme --client-id d:acme:sensor:s1 \
  --publish iot-2/type/sensor/id/s1/evt/status/fmt/json --qos 1 --retain
"$cli" eval "$out/shared-hub.wasm" --tenant shared --client-id thermo-1 \
  --publish devices/thermo-1/telemetry/temp --qos 2
