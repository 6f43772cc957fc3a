#!/usr/bin/env bash
# Connect storm: bare Mosquitto (anonymous, and with a password_file made by Debian's
# mosquitto_passwd) vs Mosquitto + mqtt-policy with the same users (no proof, the same $7$ hashes,
# $pbkdf2-sha512$ 500 rounds, SAS tokens), in interleaved rounds on loopback. Writes the medians into
# BENCHMARKS.md. Options go to scripts/bench_connect.py (--rounds N, --duration SECS, --clients C,
# --users N, --write FILE, ...). Takes about 5 minutes with the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

prepare_release_tools
exec python3 scripts/bench_connect.py "$@"
