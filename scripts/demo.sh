#!/usr/bin/env bash
# The main job, end to end: build the example policy to wasm, check it, run its cases,
# and ask it for a few decisions with reason codes and events.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing the wasm32-wasip2 target"
rustup target add wasm32-wasip2

echo "==> building the hello policy (wasm32-wasip2) and the mqtt-policy CLI"
cargo build --locked --quiet --target wasm32-wasip2 --profile wasm -p hello-policy
cargo build --locked --quiet --release -p mqtt-policy-cli
wasm=target/wasm32-wasip2/wasm/hello_policy.wasm
cli=target/release/mqtt-policy

echo; echo "==> mqtt-policy check"
"$cli" check "$wasm" --settings policies/hello/settings.toml

echo; echo "==> mqtt-policy test (the policy's unit tests)"
"$cli" test "$wasm" policies/hello/cases.toml --settings policies/hello/settings.toml --verbose

echo; echo "==> mqtt-policy eval: single decisions, explained"
"$cli" eval "$wasm" --settings policies/hello/settings.toml --client-id sensor-1 --publish devices/sensor-1/temp --qos 1 --payload-size 12
"$cli" eval "$wasm" --settings policies/hello/settings.toml --client-id sensor-1 --publish devices/sensor-2/temp --qos 1
"$cli" eval "$wasm" --settings policies/hello/settings.toml --client-id sensor-1 --publish devices/sensor-1/image --payload-size 100000
"$cli" eval "$wasm" --settings policies/hello/settings.toml --client-id sensor-1 --subscribe '#'
"$cli" eval "$wasm" --settings policies/hello/settings.toml --client-id 'bad/id'
