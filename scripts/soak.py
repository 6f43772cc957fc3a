#!/usr/bin/env python3
"""Soak: a real Mosquitto with the plugin under steady QoS 1 load while the policy file is replaced
every second (two valid versions alternating, every fifth file corrupt), with a session mix beside it
(scripts/soak_mix.py: Last Wills of killed clients, persistent sessions receiving what was queued
while they were away, reconnect churn). Driven by scripts/soak.sh.

Passes when every acknowledged (allowed) message reached every subscriber, every will and queued
message of the mix arrived, no load client was disconnected before the end, and the broker
survived. Reports resident memory and open files over time and the worst publish-to-delivery
latency (an upper bound on any single check's time).
"""

import argparse
import collections
import os
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import soak_mix
from harness import ROOT, Broker, rss_kib, rules, write_section


def fd_count(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def deploy(dir: Path, tenant: str, data: bytes) -> None:
    tmp = dir / f".{tenant}.wasm.tmp"
    tmp.write_bytes(data)
    tmp.rename(dir / f"{tenant}.wasm")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--publishers", type=int, default=20)
    ap.add_argument("--subscribers", type=int, default=2)
    ap.add_argument("--rate", type=int, default=200, help="messages/s per publisher")
    ap.add_argument("--replace-every", type=float, default=1.0, help="seconds between policy files")
    ap.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    ap.add_argument("--loadgen", default=str(ROOT / "target/release/mqtt-loadgen"))
    ap.add_argument("--cli", default=str(ROOT / "target/release/mqtt-policy"))
    ap.add_argument("--plugin", default=str(ROOT / "target/release/libmqtt_policy_mosquitto.so"))
    ap.add_argument("--write", default=str(ROOT / "RELIABILITY.md"), help="file whose marked section gets the report ('' to skip)")
    ap.add_argument("--no-mix", action="store_true", help="without the session mix (wills, persistent sessions, churn)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mqtt-policy-soak-"))
    devices = args.publishers
    v1_rules = rules(devices) + ("" if args.no_mix else soak_mix.rules())
    v2_rules = v1_rules.replace(
        '[[device]]', '[[rule]]\neffect = "allow"\nactions = ["publish"]\ntopics = ["devices/${device.id}/status"]\n\n[[device]]', 1)
    versions = []
    for name, text in [("v1", v1_rules), ("v2", v2_rules)]:
        (work / f"{name}.toml").write_text(text)
        subprocess.run([args.cli, "build", str(work / f"{name}.toml"), "-o", str(work / f"{name}.wasm")],
                       check=True, stdout=subprocess.DEVNULL)
        versions.append((work / f"{name}.wasm").read_bytes())
    corrupt = versions[0][: len(versions[0]) // 2]
    broker = Broker(work / "broker", args.mosquitto, plugin=args.plugin, policies={"soak": work / "v1.wasm"},
                    options={"tenant": "soak"})
    pdir, events = broker.policy_dir, broker.events

    seconds = int(args.minutes * 60)
    print(f"==> soak for {seconds} s: {args.publishers} publishers x {args.rate} msg/s QoS 1 -> "
          f"{args.subscribers} subscribers; policy replaced every {args.replace_every} s (every 5th file corrupt)",
          flush=True)
    load = subprocess.Popen(
        [args.loadgen, "--port", str(broker.port), "--publishers", str(args.publishers), "--subscribers", str(args.subscribers),
         "--qos", "1", "--rate", str(args.rate), "--duration", str(seconds), "--devices", str(devices),
         "--drain-ms", "10000", "--json", "--verify"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    stop = threading.Event()
    replaced = {"valid": 0, "corrupt": 0}
    rss: list[tuple[float, int]] = []
    fds: list[int] = []
    loads: list[float] = []  # the machine's 1-minute load average: other work slows every figure
    mix = None if args.no_mix else soak_mix.Mix(broker.port)

    def replacer() -> None:
        i = 0
        while not stop.wait(args.replace_every):
            i += 1
            if i % 5 == 0:
                deploy(pdir, "soak", corrupt)
                replaced["corrupt"] += 1
            else:
                deploy(pdir, "soak", versions[i % 2])
                replaced["valid"] += 1

    def sampler() -> None:
        t0 = time.monotonic()
        while not stop.wait(10):
            if broker.alive():
                rss.append((time.monotonic() - t0, rss_kib(broker.pid)))
                fds.append(fd_count(broker.pid))
                loads.append(os.getloadavg()[0])
                if len(rss) % 6 == 0:
                    print(f"    {rss[-1][0]:.0f} s: broker RSS {rss[-1][1] / 1024:.1f} MiB, {fds[-1]} open files, "
                          f"{replaced['valid']} valid and {replaced['corrupt']} corrupt files so far", flush=True)

    threads = [threading.Thread(target=replacer), threading.Thread(target=sampler)]
    for t in threads:
        t.start()
    out, err = load.communicate()
    mixed = mix.stop() if mix else None
    stop.set()
    for t in threads:
        t.join()
    alive = broker.alive()
    end_rss = rss_kib(broker.pid) if alive else 0
    end_fds = fd_count(broker.pid) if alive else 0
    time.sleep(0.5)  # the plugin writes the last disconnect events
    broker.stop()

    evs = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    count = lambda outcome: sum(1 for e in evs if e.get("outcome") == outcome)
    load_disconnects = sum(1 for e in evs if e.get("outcome") == "disconnect"
                           and not soak_mix.is_mix_client(e.get("client_id", "")))
    clients = args.publishers + args.subscribers
    try:
        s = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"mqtt-loadgen failed (exit {load.returncode}):\n{err}", file=sys.stderr)
        return 1
    report = {
        "seconds": seconds,
        "acked": s["acked"], "expected": s["expected"], "delivered": s["delivered"],
        "missing": s["missing"], "duplicates": s["duplicates"],
        "loadgen_exit": load.returncode,
        "valid_files": replaced["valid"], "corrupt_files": replaced["corrupt"],
        "loaded_events": count("loaded"), "load_failed_events": count("load-failed"),
        "disconnect_events": load_disconnects, "clients": clients,
        "denials": sum(1 for e in evs if e.get("outcome") in ("deny", "reject", "revoke")),
        "faults": sum(1 for e in evs if e.get("severity") == "error" and e.get("outcome") != "load-failed"),
        "faults_by": sorted(collections.Counter(
            f"{e.get('outcome')} ({e.get('action')})" for e in evs
            if e.get("severity") == "error" and e.get("outcome") != "load-failed").items()),
        "rss_start_mib": rss[0][1] / 1024 if rss else 0, "rss_end_mib": end_rss / 1024,
        "rss_max_mib": max((r for _, r in rss), default=0) / 1024,
        "load_max": max(loads, default=0.0), "cpus": os.cpu_count(),
        "fds_start": fds[0] if fds else 0, "fds_max": max(fds, default=0), "fds_end": end_fds,
        "latency": s["latency"], "broker_alive": alive, "mix": mixed,
    }
    ok = (alive and load.returncode == 0 and s["missing"] == 0 and report["disconnect_events"] == clients
          and report["denials"] == 0 and report["faults"] == 0)
    if mixed:
        ok = ok and (mixed["wills_sent"] > 0 and mixed["wills_lost"] == 0 and mixed["churn_lost"] == 0
                     and mixed["queued_cycles"] > 0 and mixed["queued_received"] == mixed["queued_expected"]
                     and mixed["session_errors"] == 0 and not mixed["errors"])
    lat = s["latency"]
    mix_rows = [] if not mixed else [
        f"| mix: Last Wills of killed clients delivered | {mixed['wills_sent'] - mixed['wills_lost']:,} of {mixed['wills_sent']:,} |",
        f"| mix: messages queued for offline persistent sessions, received on reconnect | "
        f"{mixed['queued_received']:,} of {mixed['queued_expected']:,} ({mixed['queued_cycles']:,} offline/reconnect cycles) |",
        f"| mix: one-shot connect-publish-disconnect clients delivered | {mixed['churn_sent'] - mixed['churn_lost']:,} of {mixed['churn_sent']:,} |",
    ]
    text = "\n".join([
        f"Run {time.strftime('%Y-%m-%d')}: `scripts/soak.sh --minutes {args.minutes:g}` "
        f"({args.publishers} publishers x {args.rate} msg/s, QoS 1, {args.subscribers} subscribers, one tenant"
        f"{'' if not mixed else '; with the session mix of scripts/soak_mix.py'}).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| duration | {seconds} s |",
        f"| policy files written | {replaced['valid']} valid, {replaced['corrupt']} corrupt |",
        f"| `loaded` / `load-failed` events | {report['loaded_events']} / {report['load_failed_events']} |",
        f"| messages allowed (PUBACKed) | {s['acked']:,} |",
        f"| deliveries expected / received | {s['expected']:,} / {s['delivered']:,} (missing {s['missing']}, duplicates {s['duplicates']}) |",
        f"| load clients disconnected before the end | {report['disconnect_events'] - clients if report['disconnect_events'] >= clients else 'n/a'} "
        f"({report['disconnect_events']} disconnect events for {clients} clients, all at the end) |",
        *mix_rows,
        f"| denials / policy faults | {report['denials']} / {report['faults']}"
        f"{'' if not report['faults'] else ' (' + ', '.join(f'{n} {k}' for k, n in report['faults_by']) + ')'} |",
        f"| broker resident memory | {report['rss_start_mib']:.1f} MiB after 10 s, {report['rss_max_mib']:.1f} MiB at most, "
        f"{report['rss_end_mib']:.1f} MiB at the end |",
        f"| machine load average (1 min) | {report['load_max']:.1f} at most on {report['cpus']} CPUs (shared with other work) |",
        f"| broker open files | {report['fds_start']} after 10 s, {report['fds_max']} at most, {report['fds_end']} at the end |",
        f"| publish→delivery latency | p50 {lat['p50_us'] / 1000:.2f} ms, p99 {lat['p99_us'] / 1000:.2f} ms, max {lat['max_us'] / 1000:.1f} ms |",
        f"| verdict | {'PASS' if ok else 'FAIL'} |",
    ])
    print("\n" + text)
    (ROOT / "target").mkdir(exist_ok=True)
    (ROOT / "target/soak.json").write_text(json.dumps(report, indent=2))
    if args.write:
        write_section(Path(args.write), "soak", text, new_file_head="# Reliability\n")
    if not ok:
        print(f"soak FAILED; broker log and events in {work}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
