#!/usr/bin/env bash
# Soak test (not part of the default test run): a real Mosquitto with the plugin under steady QoS 1
# load for 10 minutes while the policy file is replaced every second, a corrupt one among them.
# Checks allowed == delivered, no disconnects, flat memory; writes the figures into RELIABILITY.md.
# Options go to scripts/soak.py (--minutes M, --publishers N, --rate R, --write FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

prepare_release_tools
exec python3 scripts/soak.py "$@"
