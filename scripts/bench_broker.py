#!/usr/bin/env python3
"""Mosquitto with and without mqtt-policy, side by side (driven by scripts/bench-broker.sh).

Every run starts a fresh broker on a free loopback port (through the workspace's broker harness, see
harness.py), drives it with mqtt-loadgen for a fixed time, records loadgen's JSON summary and the
broker's CPU time, and stops the broker. Rounds are
interleaved: round r runs every scenario on every configuration, in an order rotated by r, so slow
drift of the machine spreads over all configurations instead of landing on one.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import ROOT, Broker, cpu_seconds, rss_kib, rules, write_section

# (name, publishers, subscribers, qos)
SCENARIOS = [
    ("QoS 0, 2 publishers -> 1", 2, 1, 0),
    ("QoS 0, 1 -> 1", 1, 1, 0),
    ("QoS 0, 1 -> 4 fan-out", 1, 4, 0),
    ("QoS 1, 1 -> 1", 1, 1, 1),
]


def acl_file(devices: int) -> str:
    """Mosquitto's own ACL with the same rules: one user block per device, readers for the monitors."""
    out = []
    for j in range(4):
        out += [f"user loadgen-sub-{j}", "topic read devices/+/telemetry", ""]
    for i in range(devices):
        out += [f"user dev-{i}", f"topic write devices/dev-{i}/telemetry/#", ""]
    return "\n".join(out)


class Setup:
    """One broker configuration under test: a name and what `harness.Broker` gets."""

    def __init__(self, name: str, **broker):
        self.name = name
        self.broker = broker


BROKER_CPU, LOADGEN_CPU = 0, 1


def pinning(args) -> bool:
    """Whether the broker and the load generator run on separate CPUs (taskset)."""
    return not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def pinned(args, cmd: list[str], cpu: int) -> list[str]:
    """`cmd` run on `cpu` when pinning, so the broker and the load generator do not take turns on a core."""
    return ["taskset", "-c", str(cpu), *cmd] if pinning(args) else cmd


def run_once(args, run_dir: Path, setup: Setup, scenario) -> dict:
    name, pubs, subs, qos = scenario
    broker = Broker(run_dir, args.mosquitto, cpu=BROKER_CPU if pinning(args) else None, **setup.broker)
    try:
        cpu0 = cpu_seconds(broker.pid)
        cmd = [
            args.loadgen, "--port", str(broker.port), "--publishers", str(pubs), "--subscribers", str(subs),
            "--qos", str(qos), "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--payload", "64", "--json", "--cpu-of", str(broker.pid),
        ]
        if args.rate:
            # The offered rate is the scenario's total: each publisher sends its share.
            cmd += ["--rate", str(max(1, args.rate // pubs))]
        out = subprocess.run(pinned(args, cmd, LOADGEN_CPU), capture_output=True, text=True, timeout=args.duration + args.warmup + 120)
        cpu1 = cpu_seconds(broker.pid)
        rss = rss_kib(broker.pid)
    finally:
        alive = broker.alive()
        broker.stop()
    if not alive:
        raise SystemExit(f"mosquitto ({setup.name}) died during '{name}'; see {broker.log}")
    if out.returncode not in (0, 1):
        raise SystemExit(f"mqtt-loadgen failed on {setup.name} / {name}:\n{out.stderr}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    summary["broker_cpu_s"] = cpu1 - cpu0
    summary["broker_rss_kib"] = rss
    return summary


def per_message(run: dict) -> float:
    """Broker CPU µs per delivery in the measured window (mqtt-loadgen --cpu-of)."""
    return run["cpu_of_measured_secs"] / max(run["measured_deliveries"], 1) * 1e6


def fmt_rate(x: float) -> str:
    return f"{x / 1000:,.1f}k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mosquitto", default=shutil.which("mosquitto") or "/usr/sbin/mosquitto")
    ap.add_argument("--loadgen", default=str(ROOT / "target/release/mqtt-loadgen"))
    ap.add_argument("--cli", default=str(ROOT / "target/release/mqtt-policy"))
    ap.add_argument("--plugin", default=str(ROOT / "target/release/libmqtt_policy_mosquitto.so"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=6, help="seconds measured per run")
    ap.add_argument("--warmup", type=int, default=1, help="seconds per run left out of the rates")
    ap.add_argument("--large", type=int, default=10_000, help="devices in the large registry")
    ap.add_argument("--small", type=int, default=10, help="devices in the small registry")
    ap.add_argument("--write", default=str(ROOT / "BENCHMARKS.md"), help="file whose marked section gets the table ('' to skip)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the broker to CPU 0 and the load generator to CPU 1")
    ap.add_argument("--raw", default=str(ROOT / "target/bench-broker.jsonl"), help="every run's summary, one JSON line each")
    ap.add_argument("--rate", type=int, default=0,
                    help="messages per second offered in all per scenario (0: as fast as the broker takes them); "
                         "at a fixed rate the broker CPU per message is steadier than at saturation")
    ap.add_argument("--configs", default="bare,small,large,nocache,acl",
                    help="which configurations to run, of bare, null (a plugin with the same callbacks that does "
                         "nothing), small, large, nocache (large, cache off), acl")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mqtt-policy-bench-"))
    print(f"==> work directory {work}", flush=True)
    wanted = set(args.configs.split(","))
    unknown = wanted - {"bare", "null", "small", "large", "nocache", "acl"}
    if unknown:
        raise SystemExit(f"--configs: unknown configuration(s) {', '.join(sorted(unknown))}")
    if "bare" not in wanted:
        raise SystemExit("--configs: bare is needed, every ratio is over it")
    setups = [Setup("bare")]
    if "null" in wanted:
        # What Mosquitto spends because a plugin is registered at all: the floor of any plugin.
        lib = work / "null_plugin.so"
        subprocess.run(["cc", "-O2", "-fPIC", "-shared", "-o", str(lib), str(ROOT / "scripts/bench/null_plugin.c")],
                       check=True)
        setups.append(Setup("plugin doing nothing (same callbacks)", plugin=str(lib)))
    for key, n, cache in [("small", args.small, "on"), ("large", args.large, "on"), ("nocache", args.large, "off")]:
        if key not in wanted:
            continue
        pdir = work / f"policies-{n}"
        if not pdir.exists():
            pdir.mkdir()
            (work / f"rules-{n}.toml").write_text(rules(n))
            t = time.monotonic()
            subprocess.run([args.cli, "build", str(work / f"rules-{n}.toml"), "-o", str(pdir / "bench.wasm"),
                            "--memory-mib", "128"], check=True, stdout=subprocess.DEVNULL)
            print(f"    built the hub-rules policy for {n:,} devices in {time.monotonic() - t:.1f} s", flush=True)
        label = f"mqtt-policy, {n:,} devices" + ("" if cache == "on" else ", decision cache off")
        setups.append(Setup(label, plugin=args.plugin, policies={"bench": pdir / "bench.wasm"},
                            options={"tenant": "bench", "memory_mib": 128, "decision_cache": cache,
                                     # With a compiler the plugin runs no thread (README, "Threads").
                                     "compiler": str(ROOT / "target/release/mqtt-policy-compile")}))
    if "acl" in wanted:
        (work / "acl").write_text(acl_file(args.large))
        setups.append(Setup(f"acl_file, {args.large:,} devices", conf=[f"acl_file {work / 'acl'}"]))

    results: dict[tuple[str, str], list[dict]] = {}
    raw = Path(args.raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    total = args.rounds * len(SCENARIOS) * len(setups)
    done = 0
    started = time.monotonic()
    with raw.open("w") as rawf:
        for r in range(args.rounds):
            for scenario in SCENARIOS:
                order = setups[r % len(setups):] + setups[: r % len(setups)]
                for setup in order:
                    s = run_once(args, work / f"run-{done}", setup, scenario)
                    results.setdefault((setup.name, scenario[0]), []).append(s)
                    rawf.write(json.dumps({"round": r, "setup": setup.name, "scenario": scenario[0], **s}) + "\n")
                    done += 1
                    print(f"[{done}/{total}] round {r + 1} {scenario[0]:<26} {setup.name:<44} "
                          f"sent {fmt_rate(s['sent_per_sec']):>8}/s delivered {fmt_rate(s['delivered_per_sec']):>8}/s "
                          f"missing {s['missing']} broker CPU {s['broker_cpu_s']:.2f} s", flush=True)
    elapsed = time.monotonic() - started

    table = render(args, setups, results, elapsed)
    print("\n" + table)
    if args.write:
        path = Path(args.write)
        write_section(path, "bench-broker-rate" if args.rate else "bench-broker", table)
        print(f"==> wrote the table into {path}; every run is in {raw}")
    shutil.rmtree(work, ignore_errors=True)


def render(args, setups, results, elapsed) -> str:
    def med(name, scen, key):
        return statistics.median(x[key] for x in results[(name, scen)])

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run([args.mosquitto, "-h"], capture_output=True, text=True).stdout.splitlines()[0]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs ({cpu}), {version}. "
        f"{args.rounds} interleaved rounds of {args.duration} s per run (+{args.warmup} s warm-up), "
        f"64-byte payloads, {elapsed / 60:.0f} min in all, "
        + (f"{args.rate:,} messages/s offered per scenario. " if args.rate else "publishers as fast as the broker takes them. ")
        + ("Broker pinned to CPU 0 and load generator to CPU 1 (taskset)." if pinning(args) else "No CPU pinning."),
        "",
        "Command: `scripts/bench-broker.sh"
        + (f" --rounds {args.rounds}" if args.rounds != 3 else "")
        + (f" --duration {args.duration}" if args.duration != 6 else "")
        + (f" --rate {args.rate}" if args.rate else "")
        + (f" --configs {args.configs}" if args.configs != "bare,small,large,nocache,acl" else "")
        + (" --no-pin" if args.no_pin else "") + "`",
        "",
        "Deliveries per second received by the subscribers (median of the rounds; in brackets, that median "
        "over bare Mosquitto's median), then the spread (lowest-highest) of each configuration's rounds.",
        "",
    ]
    header = "| configuration | " + " | ".join(s[0] for s in SCENARIOS) + " |"
    lines += [header, "|---|" + "---:|" * len(SCENARIOS)]
    for setup in setups:
        cells = []
        for scen in SCENARIOS:
            d = med(setup.name, scen[0], "delivered_per_sec")
            base = med("bare", scen[0], "delivered_per_sec")
            cells.append(f"{fmt_rate(d)}/s ({d / base:.0%})" if setup.name != "bare" else f"{fmt_rate(d)}/s")
        lines.append(f"| {setup.name} | " + " | ".join(cells) + " |")
    lines += ["", "Spread of the rounds (deliveries/s, lowest-highest):", "", header, "|---|" + "---:|" * len(SCENARIOS)]
    for setup in setups:
        cells = []
        for scen in SCENARIOS:
            xs = [x["delivered_per_sec"] for x in results[(setup.name, scen[0])]]
            cells.append(f"{fmt_rate(min(xs))}-{fmt_rate(max(xs))}")
        lines.append(f"| {setup.name} | " + " | ".join(cells) + " |")
    lines += ["", "Broker CPU (the time its threads ran) per delivered message (median), from the end of the warm-up to "
              "the last publish (so loading the policy at the first connect is left out), and the publishers' send rate:", "",
              header, "|---|" + "---:|" * len(SCENARIOS)]
    for setup in setups:
        cells = []
        for scen in SCENARIOS:
            per = statistics.median(per_message(x) for x in results[(setup.name, scen[0])])
            sent = med(setup.name, scen[0], "sent_per_sec")
            cells.append(f"{per:.2f} µs, sent {fmt_rate(sent)}/s")
        lines.append(f"| {setup.name} | " + " | ".join(cells) + " |")
    missing = sum(x["missing"] for runs in results.values() for x in runs if x["qos"] == 1)
    lines += ["", f"QoS 1 messages missing across all runs: {missing}. Every round's runs: the JSON lines in `{Path(args.raw).relative_to(ROOT) if Path(args.raw).is_relative_to(ROOT) else args.raw}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
