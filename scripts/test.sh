#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need=()
have_mosquitto || need+=(mosquitto)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
[ -f /usr/include/mosquitto_broker.h ] || need+=(mosquitto-dev)
[ -f /usr/include/mosquitto.h ] || need+=(libmosquitto-dev)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v python3 >/dev/null || need+=(python3)
# The Python and JavaScript policies' toolchains install into a venv and with npm (tested with
# this machine kind's Node.js 20.20 and npm 11; Debian 12's own nodejs is 18).
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing from Debian's packages: ${need[*]} (the brokers the end-to-end tests start, Mosquitto's clients and the plugin and client headers)"
  apt_install "${need[@]}"
fi

echo "==> installing the wasm32-wasip2 target (policies and test guests are built for it)"
rustup target add wasm32-wasip2

echo "==> the Python and JavaScript policy toolchains (pinned, into target/toolchains; tests/fixtures/build.rs builds the policies with them)"
scripts/build-lang-policies.sh install
echo "==> the Python hello policy's rules, natively (policies/hello-py/test_hello_rules.py)"
PYTHONDONTWRITEBYTECODE=1 python3 -m unittest discover -s policies/hello-py

echo "==> no module imports another that imports it back (scripts/module_cycles.py)"
python3 scripts/module_cycles.py

echo "==> cargo test (builds every guest to wasm from current sources first)"
cargo test --workspace --all-targets --locked

echo "==> cargo build --workspace (as the demo and the measuring scripts build: without the test-only features)"
cargo build --workspace --locked
