#!/usr/bin/env bash
# The main job for clusters, from a fresh machine: installs Debian's rabbitmq-server, starts three
# RabbitMQ nodes clustered on this machine (loopback ports, one Erlang cookie, rabbitmq_mqtt and
# rabbitmq_auth_backend_http enabled) with one `mqtt-policy serve` beside each, runs scripted MQTT
# 3.1.1 clients on all three nodes, prints every outcome with the event behind it, stops everything
# it started, and exits non-zero on any outcome that differs from the expected one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "==> installing RabbitMQ from Debian's packages"
  apt_install rabbitmq-server
fi
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true

# The workspace's test build (one feature set: a `-p` build would rebuild wasmtime).
echo "==> building mqtt-policy and the demo driver"
cargo build --locked --quiet --workspace --all-targets

echo
./target/debug/examples/cluster_demo
