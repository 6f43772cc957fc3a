#!/usr/bin/env bash
# RabbitMQ messages (and connects) per second with its internal backend vs the HTTP backend answered
# by mqtt-policy serve (hub-rules), on one node started by the harness, in interleaved rounds.
# Writes the medians and ratios into BENCHMARKS.md. Options go to scripts/bench_rabbitmq.py
# (--rounds N, --duration SECS, --no-storm, --write FILE, ...). About 5 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
  echo "==> installing RabbitMQ from Debian's packages"
  apt_install rabbitmq-server
fi
prepare_release_tools
exec python3 scripts/bench_rabbitmq.py "$@"
