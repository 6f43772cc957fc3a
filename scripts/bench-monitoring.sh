#!/bin/bash
# Connects per second with IBM-style monitoring off, on, and on with its state file: a connect storm
# (mqtt-loadgen, 8 clients, 5 s after 1 s warm-up) against Debian's Mosquitto with the plugin and a
# 16-device hub-rules policy with [monitoring], ROUNDS interleaved rounds (default 3).
# Uses the debug build the test suite leaves in target/ (cargo test --workspace --all-targets).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-3}
plugin=$root/target/debug/deps/libmqtt_policy_mosquitto.so
work=$(mktemp -d /tmp/bench-monitoring.XXXXXX)
trap 'rm -rf "$work"' EXIT
{
    printf '[hub]\norg = "acme"\n\n[monitoring]\n\n[identity]\nauthentication = "none"\n\n'
    for i in $(seq 0 15); do printf '[[device]]\nid = "dev-%d"\ntype = "sensor"\n\n' "$i"; done
} > "$work/rules.toml"
for i in $(seq 0 15); do echo "dev-$i"; done > "$work/ids.tsv"
"$root/target/debug/mqtt-policy" build "$work/rules.toml" -o "$work/acme.wasm" > /dev/null
port=$((29000 + RANDOM % 1000))
run() {
    local mode=$1 d=$work/$1 extra=""
    mkdir -p "$d/p" && cp "$work/acme.wasm" "$d/p/"
    [ "$mode" = on ] && extra="plugin_opt_monitoring ibm"
    [ "$mode" = state ] && extra=$'plugin_opt_monitoring ibm\nplugin_opt_monitoring_state '"$d/state"
    port=$((port + 1))
    printf 'listener %d 127.0.0.1\nallow_anonymous false\npersistence false\nuser root\nlog_dest none\nplugin %s\nplugin_opt_policy_dir %s\nplugin_opt_tenant acme\nplugin_opt_events none\n%s\n' \
        "$port" "$plugin" "$d/p" "$extra" > "$d/m.conf"
    mosquitto -c "$d/m.conf" 2>/dev/null & local pid=$!
    for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.2; done
    "$root/target/debug/mqtt-loadgen" --port "$port" --connect-storm --clients 8 --duration 5 --warmup 1 \
        --credentials "$work/ids.tsv" --json |
        python3 -c "import json,sys; r=json.load(sys.stdin); print('$mode', round(r['connects_per_sec']), 'connects/s, p50', r['latency']['p50_us'], 'us, p99', r['latency']['p99_us'], 'us, errors', r['errors'])"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
for _ in $(seq "$rounds"); do run off; run on; run state; done
