#!/usr/bin/env python3
"""The broker's work per delivered message, counted instead of timed (driven by
scripts/bench-broker-instructions.sh).

Timing the broker on this VM moves by 10-15 % from run to run, more than the few per cent the
plugin's cost is to be judged by. So this counts:
- user-space instructions the broker executes per delivered message, with valgrind's callgrind
  (deterministic up to the broker's event-loop batching), split by library: Mosquitto itself,
  libc, the plugin;
- system calls, context switches and page faults of the real broker (no valgrind) per
  delivered message, from the kernel's software counters (`perf stat -e raw_syscalls:sys_enter,...`),
  which this VM does provide although it has no hardware counters.

Each configuration and scenario runs twice for the same time at a low fixed rate (so every
message is handled on its own, as at any rate below saturation): N1 and N2 messages per
publisher, the shorter count sent more slowly. Per-message figures are the difference of the two
runs over the difference of their deliveries, which leaves out start-up, the policy's load, the
connects and the work the broker does by the clock (its loop wakes every 100 ms), since both runs
last as long.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from harness import ROOT, Broker, rules, write_section
from bench_broker import SCENARIOS, acl_file

PERF_EVENTS = ["raw_syscalls:sys_enter", "context-switches", "page-faults"]


def callgrind_wrapper(run_dir: Path, mosquitto: str, out: Path) -> str:
    """A stand-in for the broker binary that runs it under callgrind, writing its counts to `out`."""
    w = run_dir / "mosquitto-under-callgrind"
    # Only the event loop is counted (not the start-up, where compiling a policy is billions of
    # instructions whose small run-to-run variation would swamp the messages), and each thread
    # apart: the main thread is the broker's per-message work, the plugin's watcher is not.
    w.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out} --collect-atstart=no "
                 f"--toggle-collect=mosquitto_main_loop --separate-threads=yes {mosquitto} \"$@\"\n")
    w.chmod(0o755)
    return str(w)


def self_cost_by_object(path: Path) -> dict[str, int]:
    """Instructions (Ir) executed in each shared object, from a callgrind output file: the
    self cost of every function, summed by its `ob=`. Calls (`calls=` lines and the cost line
    after them) are inclusive costs of the callee and are skipped."""
    names: dict[str, str] = {}
    by_ob: dict[str, int] = {}
    ob = "?"
    skip_next = False
    positions = 1
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("positions:"):
            positions = len(line.split()) - 1
        if line.startswith("cob="):
            # Names are defined where first used, which may be a call's target object.
            m = re.match(r"cob=\((\d+)\) (.*)", line)
            if m:
                names[m.group(1)] = m.group(2)
            continue
        if line.startswith("ob="):
            m = re.match(r"ob=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                ob = names.get(m.group(1), "?")
            else:
                ob = line[3:]
            continue
        if line.startswith("calls="):
            skip_next = True
            continue
        if line and (line[0].isdigit() or line[0] in "+-*"):
            if skip_next:
                skip_next = False
                continue
            fields = line.split()
            if len(fields) > positions:
                by_ob[ob] = by_ob.get(ob, 0) + int(fields[positions])
    return by_ob


def group(obj: str) -> str:
    base = os.path.basename(obj)
    if "mqtt_policy" in base:
        return "plugin"
    if "null_plugin" in base:
        return "plugin"
    if base.startswith("mosquitto"):
        return "mosquitto"
    if base.startswith("libc.") or base.startswith("libc-"):
        return "libc"
    return "other"


def loadgen_cmd(args, port: int, scenario, messages: int) -> list[str]:
    _, pubs, subs, qos = scenario
    # Every run lasts --long / --rate seconds: the shorter one sends its messages more slowly.
    rate = max(1, round(args.rate * messages / args.long))
    return [args.loadgen, "--port", str(port), "--publishers", str(pubs), "--subscribers", str(subs),
            "--qos", str(qos), "--messages", str(messages), "--rate", str(rate), "--payload", "64", "--json"]


def run(args, run_dir: Path, setup, scenario, messages: int, mode: str) -> dict:
    run_dir.mkdir(parents=True)
    out = run_dir / "callgrind.out"
    mosquitto = callgrind_wrapper(run_dir, args.mosquitto, out) if mode == "callgrind" else args.mosquitto
    broker = Broker(run_dir, mosquitto, **setup[1])
    perf = None
    try:
        if mode == "perf":
            perf_out = run_dir / "perf-stat.csv"
            perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", str(perf_out), "-e", ",".join(PERF_EVENTS),
                                     "-p", str(broker.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        res = subprocess.run(loadgen_cmd(args, broker.port, scenario, messages), capture_output=True, text=True,
                             timeout=600)
        if perf:
            perf.send_signal(2)
            perf.wait(timeout=30)
    finally:
        broker.stop()
    if res.returncode not in (0, 1):
        raise SystemExit(f"mqtt-loadgen failed on {setup[0]} / {scenario[0]}:\n{res.stderr}")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    got = {"delivered": summary["delivered"], "missing": summary["missing"]}
    if mode == "callgrind":
        main = out.with_name(out.name + "-01")  # thread 1: the broker's event loop
        for _ in range(100):
            if main.exists() and "totals:" in main.read_text(errors="replace")[-4096:]:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"callgrind wrote no complete counts to {main} ({setup[0]} / {scenario[0]})")
        groups: dict[str, int] = {}
        for obj, ir in self_cost_by_object(main).items():
            groups[group(obj)] = groups.get(group(obj), 0) + ir
        got["ir"] = groups
    else:
        counts = {}
        for line in perf_out.read_text().splitlines():
            f = line.split(",")
            if len(f) > 2 and f[2] in PERF_EVENTS:
                if not f[0].strip().isdigit():
                    raise SystemExit(f"perf stat could not count {f[2]} ({f[0]}): see {perf_out}")
                counts[f[2]] = int(f[0])
        if set(counts) != set(PERF_EVENTS):
            raise SystemExit(f"perf stat counted only {sorted(counts)}: see {perf_out}")
        got["kernel"] = counts
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    ap.add_argument("--loadgen", default=str(ROOT / "target/release/mqtt-loadgen"))
    ap.add_argument("--cli", default=str(ROOT / "target/release/mqtt-policy"))
    ap.add_argument("--plugin", default=str(ROOT / "target/release/libmqtt_policy_mosquitto.so"))
    # With a compiler the plugin runs no thread in the broker's process (README, "Threads").
    ap.add_argument("--compiler", default=str(ROOT / "target/release/mqtt-policy-compile"))
    ap.add_argument("--large", type=int, default=10_000, help="devices in the registry")
    ap.add_argument("--rate", type=int, default=200, help="messages per second per publisher")
    ap.add_argument("--short", type=int, default=200, help="messages per publisher in the shorter run")
    ap.add_argument("--long", type=int, default=1000, help="messages per publisher in the longer run")
    ap.add_argument("--write", default=str(ROOT / "BENCHMARKS.md"), help="file whose marked section gets the table ('' to skip)")
    ap.add_argument("--raw", default=str(ROOT / "target/bench-instructions.jsonl"))
    ap.add_argument("--configs", default="bare,null,nullthread,large,acl", help="of bare, null, nullthread, large, acl (bare is needed)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (callgrind files for callgrind_annotate)")
    ap.add_argument("--scenarios", default="1,2,3,4", help="which scenarios, by number (1-4)")
    args = ap.parse_args()
    if args.long <= args.short:
        raise SystemExit("--long must be more messages than --short")
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is needed (apt-get install valgrind)")

    work = Path(tempfile.mkdtemp(prefix="mqtt-policy-instr-"))
    print(f"==> work directory {work}", flush=True)
    null = work / "null_plugin.so"
    subprocess.run(["cc", "-O2", "-fPIC", "-shared", "-o", str(null), str(ROOT / "scripts/bench/null_plugin.c")], check=True)
    null_thread = work / "null_plugin_thread.so"
    subprocess.run(["cc", "-O2", "-fPIC", "-shared", "-DIDLE_THREAD", "-pthread", "-o", str(null_thread),
                    str(ROOT / "scripts/bench/null_plugin.c")], check=True)
    pdir = work / "policies"
    pdir.mkdir()
    (work / "rules.toml").write_text(rules(args.large))
    subprocess.run([args.cli, "build", str(work / "rules.toml"), "-o", str(pdir / "bench.wasm"), "--memory-mib", "128"],
                   check=True, stdout=subprocess.DEVNULL)
    (work / "acl").write_text(acl_file(args.large))
    setups = [
        ("bare", {}),
        ("plugin doing nothing (same callbacks)", {"plugin": str(null)}),
        ("the same, plus one idle thread", {"plugin": str(null_thread)}),
        (f"mqtt-policy, {args.large:,} devices", {"plugin": args.plugin, "policies": {"bench": pdir / "bench.wasm"},
                                                  "options": {"tenant": "bench", "memory_mib": 128,
                                                              "compiler": args.compiler}}),
        (f"acl_file, {args.large:,} devices", {"conf": [f"acl_file {work / 'acl'}"]}),
    ]
    keys = ["bare", "null", "nullthread", "large", "acl"]
    wanted = set(args.configs.split(","))
    if "bare" not in wanted or wanted - set(keys):
        raise SystemExit("--configs: a list of bare, null, nullthread, large, acl that includes bare")
    setups = [s for k, s in zip(keys, setups) if k in wanted]
    scenarios = [SCENARIOS[int(i) - 1] for i in args.scenarios.split(",")]
    results = {}
    n = 0
    started = time.monotonic()
    raw = Path(args.raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    with raw.open("w") as rawf:
        for scenario in scenarios:
            for setup in setups:
                for mode in ("callgrind", "perf"):
                    pair = []
                    for messages in (args.short, args.long):
                        n += 1
                        r = run(args, work / f"run-{n}", setup, scenario, messages, mode)
                        pair.append(r)
                        rawf.write(json.dumps({"setup": setup[0], "scenario": scenario[0], "mode": mode,
                                               "messages": messages, **r}) + "\n")
                        rawf.flush()
                        print(f"[{n}/{len(scenarios) * len(setups) * 4}] {scenario[0]:<26} {setup[0]:<40} {mode:<9} "
                              f"{messages:>5} msgs/publisher: delivered {r['delivered']}, missing {r['missing']}",
                              flush=True)
                    results[(setup[0], scenario[0], mode)] = pair
    elapsed = time.monotonic() - started
    table = render(args, setups, scenarios, results, elapsed)
    print("\n" + table)
    if args.write:
        write_section(Path(args.write), "bench-instructions", table)
        print(f"==> wrote the table into {args.write}; every run is in {raw}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def per_message(pair, pick) -> float:
    a, b = pair
    return (pick(b) - pick(a)) / max(b["delivered"] - a["delivered"], 1)


def render(args, setups, scenarios, results, elapsed) -> str:
    mosq = subprocess.run([args.mosquitto, "-h"], capture_output=True, text=True).stdout.splitlines()
    version = mosq[0] if mosq else "mosquitto"
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')}, {version}. Each configuration and scenario ran with "
        f"{args.short} and with {args.long} messages per publisher at {args.rate} messages/s per publisher "
        f"(64-byte payloads), the shorter run sent more slowly so that both last as long; the figures are the "
        f"difference of the two runs over the difference of their deliveries, counted on the broker's event-loop "
        f"thread. mqtt-policy runs with `plugin_opt_compiler`, so without a thread of its own in the broker's "
        f"process (the idle-thread plugin shows what one thread costs). Guest code wasmtime compiled at run time has no library name and counts as 'elsewhere' "
        f"(a few instructions per message here, where every check is answered from the decision cache). "
        f"{elapsed / 60:.0f} min in all.",
        "",
        f"Command: `scripts/bench-broker-instructions.sh --rate {args.rate} --short {args.short} --long {args.long}`",
        "",
        "User-space instructions the broker executed per delivered message (callgrind), and in brackets that "
        "over bare Mosquitto's; then where the plugin configurations' instructions went:",
        "",
        "| configuration | " + " | ".join(s[0] for s in scenarios) + " |",
        "|---|" + "---:|" * len(scenarios),
    ]
    total = lambda r: sum(r["ir"].values())
    for name, _ in setups:
        cells = []
        for s in scenarios:
            v = per_message(results[(name, s[0], "callgrind")], total)
            b = per_message(results[("bare", s[0], "callgrind")], total)
            cells.append(f"{v:,.0f}" + ("" if name == "bare" else f" ({(v / b - 1) * 100:+.1f} %)"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Of those, per delivered message, in Mosquitto / libc / the plugin's library / elsewhere:", "",
              "| configuration | " + " | ".join(s[0] for s in scenarios) + " |",
              "|---|" + "---:|" * len(scenarios)]
    for name, _ in setups:
        cells = []
        for s in scenarios:
            pair = results[(name, s[0], "callgrind")]
            parts = [per_message(pair, lambda r, g=g: r["ir"].get(g, 0)) for g in ("mosquitto", "libc", "plugin", "other")]
            cells.append(" / ".join(f"{p:,.0f}" for p in parts))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "System calls, context switches and page faults of the broker per delivered message (the real "
              "broker, no valgrind; kernel software counters with `perf stat`):", "",
              "| configuration | " + " | ".join(s[0] for s in scenarios) + " |",
              "|---|" + "---:|" * len(scenarios)]
    for name, _ in setups:
        cells = []
        for s in scenarios:
            pair = results[(name, s[0], "perf")]
            parts = [per_message(pair, lambda r, e=e: r["kernel"].get(e, 0)) for e in PERF_EVENTS]
            cells.append(" / ".join(f"{p:.2f}" for p in parts))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    missing = sum(r["missing"] for pair in results.values() for r in pair)
    lines += ["", f"Messages missing across all runs: {missing}. Every run: the JSON lines in `target/bench-instructions.jsonl`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
