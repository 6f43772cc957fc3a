#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> installing the wasm32-wasip2 target (policies and test guests are built for it)"
rustup target add wasm32-wasip2

echo "==> cargo test (builds every guest to wasm from current sources first)"
cargo test --workspace --all-targets --locked
