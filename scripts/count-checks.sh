#!/usr/bin/env bash
# Instructions per uncached check through the component against the same hub-rules check in
# native Rust, and the floor of a component call (the misbehave fixture's publish check for an
# ordinary topic: a session lookup, one string match, allow), counted under
# valgrind's callgrind: two runs of host/core/examples/check_counts.rs (N1 and N2 checks of
# each kind), per check = the difference over N2 - N1, which leaves out loading and the first
# call. Prints a table; about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

command -v valgrind >/dev/null || apt_install valgrind
cargo build --locked --quiet --release -p mqtt-policy-host --example check_counts
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n1=200 n2=1200
for n in $n1 $n2; do
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" target/release/examples/check_counts "$n" 2>/dev/null
  callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$work/cg.$n" > "$work/ann.$n"
done
python3 - "$work" "$n1" "$n2" <<'PY'
import re, sys
work, n1, n2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def costs(n):
    d = {}
    for line in open(f"{work}/ann.{n}"):
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*:check_counts::(\w+) ", line)
        if m:
            d[m.group(2)] = d.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return d
a, b = costs(n1), costs(n2)
per = {k: (b[k] - a[k]) / (n2 - n1) for k in b if k in a}
rows = [("publish", "component_publish", "native_publish"), ("delivery", "component_delivery", "native_delivery")]
print("| check (uncached) | component | native | ratio |")
print("|---|---:|---:|---:|")
for name, comp, nat in rows:
    print(f"| {name} | {per[comp]:,.0f} | {per[nat]:,.0f} | {per[comp] / per[nat]:.1f}x |")
print(f"| floor: a publish check that only allows (misbehave fixture) | {per['floor_publish']:,.0f} | | |")
PY
