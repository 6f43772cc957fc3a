#!/usr/bin/env bash
# The broker's work per delivered message counted, not timed: user-space instructions under
# valgrind's callgrind (split into Mosquitto, libc and the plugin) and the kernel's system-call,
# context-switch and page-fault counts, for bare Mosquitto, a plugin doing nothing, mqtt-policy
# (hub-rules, 10,000 devices) and acl_file. Writes the tables into BENCHMARKS.md. Options go to
# scripts/bench_instructions.py (--rate, --short, --long, --write FILE). About 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

command -v valgrind >/dev/null || apt_install valgrind
command -v perf >/dev/null || apt_install linux-perf
prepare_release_tools
exec python3 scripts/bench_instructions.py "$@"
