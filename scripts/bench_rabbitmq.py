#!/usr/bin/env python3
"""RabbitMQ with its internal backend vs the HTTP backend answered by `mqtt-policy serve` (hub-rules),
in one run on one node (driven by scripts/bench-rabbitmq.sh).

One RabbitMQ node and one `mqtt-policy serve` beside it are started by the workspace's harness
(`mqtt-testrabbit`, the same code `host/cli/tests/rabbitmq.rs` starts them with): loopback ports, a
generated rabbitmq.conf with `auth_backends.1 = http` pointing at the service, virtual host `bench`.
The same users are created for the internal backend with `rabbitmqctl import_definitions` (password
hashes, permissions, topic permissions as strict as the policy's rules), and the hub-rules policy holds
the same clients with the same password. Between runs the node's `auth_backends` is switched with
`rabbitmqctl eval` (RabbitMQ reads it at every login), so both backends are measured on the same node,
in interleaved rounds: round r runs every scenario on both backends, in an order rotated by r.

Every run is checked: the service's `/metrics` count of allowed connects must grow by the run's
connections with the HTTP backend and stay still with the internal one.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from harness import ROOT, cpu_seconds, rules, write_section

# (name, publishers, subscribers, qos, messages/s offered in all or 0 for as fast as acknowledged).
# QoS 1 publishers wait for PUBACKs (a window of 100), so RabbitMQ sets their pace: the rate is its
# throughput. QoS 0 has no such brake: unpaced publishers fill the subscribers' queues faster than
# RabbitMQ delivers (seconds of latency, deliveries still arriving after the run), so QoS 0 is
# offered a fixed rate it can carry and what differs is the node's CPU time per delivery.
SCENARIOS = [
    ("QoS 1, 1 -> 1", 1, 1, 1, 0),
    ("QoS 1, 2 publishers -> 1", 2, 1, 1, 0),
    ("QoS 1, 1 -> 4 fan-out", 1, 4, 1, 0),
    ("QoS 0, 2 publishers -> 1 at 4,000/s", 2, 1, 0, 4000),
]
BACKENDS = {"internal": "rabbit_auth_backend_internal", "http": "rabbit_auth_backend_http"}
VHOST = "bench"
DEVICES = 8  # publishers and storm clients are dev-0..dev-7; subscribers loadgen-sub-0..3 (harness.rules)


class Node:
    """`mqtt-testrabbit`: the node and the service; `ctl(args)` runs rabbitmqctl; `stop()` ends both."""

    def __init__(self, tool: str, cli: str, work: Path, policy: Path):
        cmd = [tool, "--dir", str(work), "--serve", cli, "--policy", f"{VHOST}={policy}", "--vhost", VHOST]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise SystemExit(f"mqtt-testrabbit could not start RabbitMQ (exit {self.proc.returncode}); see {work}")
        info = json.loads(line)
        self.port, self.pid, self.serve_pid, self.serve_port = (
            info["mqtt_port"], info["pid"], info["serve_pid"], info["serve_port"])

    def ctl(self, *args: str) -> str:
        self.proc.stdin.write(json.dumps(list(args)) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if not answer["ok"]:
            raise SystemExit(f"rabbitmqctl {args} failed: {answer['output']}")
        return answer["output"]

    def backend(self, name: str) -> None:
        out = self.ctl("eval", f"application:set_env(rabbit, auth_backends, [{BACKENDS[name]}]), "
                               "application:get_env(rabbit, auth_backends).")
        assert BACKENDS[name] in out, out

    def connects_allowed(self) -> int:
        """The service's allowed connects so far (its /metrics)."""
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.serve_port}/metrics", timeout=10).read().decode()
        total = 0
        for line in body.splitlines():
            if line.startswith("mqtt_policy_decisions_total{") and 'kind="connect"' in line and 'outcome="allow"' in line:
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def stop(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def rabbit_hash(password: str) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt ++ sha256(salt ++ password)), 4-byte salt."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(password: str) -> dict:
    """The internal backend's users: the same clients, rights as strict as the policy's rules."""
    users, perms, topics = [], [], []
    names = [(f"dev-{i}", r"^devices\.{username}\.telemetry$", "^$") for i in range(DEVICES)]
    names += [(f"loadgen-sub-{j}", "^$", r"^devices\.\*\.telemetry$") for j in range(4)]
    for name, write, read in names:
        users.append({"name": name, "password_hash": rabbit_hash(password),
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""})
        perms.append({"user": name, "vhost": VHOST, "configure": ".*", "write": ".*", "read": ".*"})
        topics.append({"user": name, "vhost": VHOST, "exchange": "amq.topic", "write": write, "read": read})
    return {"users": users, "vhosts": [{"name": VHOST}], "permissions": perms, "topic_permissions": topics}


def policy_document(password_hash: str) -> str:
    """harness.rules (per-device publish rules, monitors that read all), each client with the password."""
    doc = rules(DEVICES).replace('authentication = "none"', 'authentication = "required"')
    doc = doc.replace("# The load generator's clients present no credentials.", "# Every client proves the bench password.")
    return re.sub(r'^(id = "[^"]+")$', lambda m: f'{m.group(1)}\npassword-hash = "{password_hash}"', doc, flags=re.M)


def run_once(args, node: Node, backend: str, scenario, password: str) -> dict:
    name, pubs, subs, qos, rate = scenario
    node.backend(backend)
    allowed0 = node.connects_allowed()
    load0 = os.getloadavg()[0]
    serve0 = cpu_seconds(node.serve_pid)
    cmd = [args.loadgen, "--port", str(node.port), "--publishers", str(pubs), "--subscribers", str(subs),
           "--qos", str(qos), "--duration", str(args.duration), "--warmup", str(args.warmup),
           "--payload", "64", "--password", password, "--json", "--cpu-of", str(node.pid)]
    if rate:
        cmd += ["--rate", str(rate // pubs)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 120)
    serve1 = cpu_seconds(node.serve_pid)
    load1 = os.getloadavg()[0]
    if out.returncode not in (0, 1):
        raise SystemExit(f"mqtt-loadgen failed on {backend} / {name}:\n{out.stderr}")
    s = json.loads(out.stdout.strip().splitlines()[-1])
    grew = node.connects_allowed() - allowed0
    want = pubs + subs if backend == "http" else 0
    # RabbitMQ asks user_path twice per login; the service answers the second from the first.
    if grew < want or (backend == "internal" and grew != 0):
        raise SystemExit(f"{backend} / {name}: the service allowed {grew} connects, expected {want}")
    s["serve_cpu_s"] = serve1 - serve0
    s["load"] = [load0, load1]
    # Let the node finish with this run's queues before the next one.
    time.sleep(1)
    return s


def storm_once(args, node: Node, backend: str, creds: Path) -> dict:
    node.backend(backend)
    load0 = os.getloadavg()[0]
    cpu0, serve0 = cpu_seconds(node.pid), cpu_seconds(node.serve_pid)
    cmd = [args.loadgen, "--port", str(node.port), "--connect-storm", "--clients", str(args.clients),
           "--duration", str(args.duration), "--warmup", str(args.warmup), "--credentials", str(creds), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 120)
    cpu1, serve1 = cpu_seconds(node.pid), cpu_seconds(node.serve_pid)
    if out.returncode != 0:
        raise SystemExit(f"mqtt-loadgen --connect-storm failed on {backend}:\n{out.stderr}")
    s = json.loads(out.stdout.strip().splitlines()[-1])
    s["broker_cpu_s"], s["serve_cpu_s"] = cpu1 - cpu0, serve1 - serve0
    s["load"] = [load0, os.getloadavg()[0]]
    return s


def k(x: float) -> str:
    return f"{x / 1000:,.2f}k" if x >= 1000 else f"{x:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tool", default=str(ROOT / "target/release/mqtt-testrabbit"))
    ap.add_argument("--loadgen", default=str(ROOT / "target/release/mqtt-loadgen"))
    ap.add_argument("--cli", default=str(ROOT / "target/release/mqtt-policy"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds measured per run")
    ap.add_argument("--warmup", type=int, default=1, help="seconds per run left out of the rates")
    ap.add_argument("--clients", type=int, default=DEVICES, choices=range(1, DEVICES + 1), metavar=f"1..{DEVICES}",
                    help="concurrent clients of the connect storm (each its own user)")
    ap.add_argument("--no-storm", action="store_true", help="skip the connect storms")
    ap.add_argument("--write", default=str(ROOT / "BENCHMARKS.md"), help="file whose marked section gets the tables ('' to skip)")
    ap.add_argument("--raw", default=str(ROOT / "target/bench-rabbitmq.jsonl"), help="every run, one JSON line each")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mqtt-policy-bench-rabbitmq-"))
    print(f"==> work directory {work}", flush=True)
    password = secrets.token_urlsafe(15)
    hashed = subprocess.run([args.cli, "hash"], input=password + "\n", capture_output=True, text=True, check=True).stdout.strip()
    (work / "rules.toml").write_text(policy_document(hashed))
    policy = work / "bench.wasm"
    subprocess.run([args.cli, "build", str(work / "rules.toml"), "-o", str(policy)], check=True, stdout=subprocess.DEVNULL)
    (work / "definitions.json").write_text(json.dumps(definitions(password)))
    creds = work / "credentials.tsv"
    creds.write_text("".join(f"dev-{i}\tdev-{i}\t{password}\n" for i in range(DEVICES)))

    t = time.monotonic()
    node = Node(args.tool, args.cli, work / "node", policy)
    print(f"==> RabbitMQ up in {time.monotonic() - t:.0f} s (MQTT port {node.port})", flush=True)
    results: dict[tuple[str, str], list[dict]] = {}
    storms: dict[str, list[dict]] = {}
    started = time.monotonic()
    raw = Path(args.raw)
    raw.parent.mkdir(parents=True, exist_ok=True)
    try:
        node.ctl("import_definitions", str(work / "definitions.json"))
        version = node.ctl("eval", "rabbit_misc:version().").strip().strip('"')
        # The node's first runs after boot are slower and leave queues behind (its code loads, its
        # schedulers warm up): one short run per backend first, left out.
        for backend in BACKENDS:
            run_once(argparse.Namespace(**{**vars(args), "duration": 2, "warmup": 0}), node, backend, SCENARIOS[0], password)
        with raw.open("w") as rawf:
            for r in range(args.rounds):
                order = list(BACKENDS) if r % 2 == 0 else list(reversed(BACKENDS))
                for scenario in SCENARIOS:
                    for backend in order:
                        s = run_once(args, node, backend, scenario, password)
                        results.setdefault((backend, scenario[0]), []).append(s)
                        rawf.write(json.dumps({"round": r, "backend": backend, "scenario": scenario[0], **s}) + "\n")
                        print(f"round {r + 1} {scenario[0]:<26} {backend:<9} delivered {k(s['delivered_per_sec']):>8}/s "
                              f"missing {s['missing']} load {s['load'][0]:.1f}", flush=True)
                if not args.no_storm:
                    for backend in order:
                        s = storm_once(args, node, backend, creds)
                        storms.setdefault(backend, []).append(s)
                        rawf.write(json.dumps({"round": r, "backend": backend, "scenario": "connect storm", **s}) + "\n")
                        print(f"round {r + 1} connect storm              {backend:<9} {k(s['connects_per_sec']):>8} connects/s "
                              f"refused {s.get('refused', 0)} load {s['load'][0]:.1f}", flush=True)
    finally:
        node.stop()
    elapsed = time.monotonic() - started
    table = render(args, results, storms, elapsed, version)
    print("\n" + table)
    if args.write:
        write_section(Path(args.write), "bench-rabbitmq", table)
        print(f"==> wrote the tables into {args.write}; every run is in {raw}")
    shutil.rmtree(work, ignore_errors=True)


def render(args, results, storms, elapsed, version) -> str:
    loads = [l for runs in list(results.values()) + list(storms.values()) for x in runs for l in x["load"]]
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "")
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs ({cpu}), RabbitMQ {version} (Debian), one node. "
        f"{args.rounds} interleaved rounds of {args.duration} s per run (+{args.warmup} s warm-up), 64-byte payloads, "
        f"QoS 1 publishers as fast as their PUBACKs come back (window 100), QoS 0 at the offered rate named, "
        f"{elapsed / 60:.0f} min in all; no CPU pinning (the Erlang VM "
        f"uses both cores). 1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f} "
        "(other builds were running).",
        "",
        "Command: `scripts/bench-rabbitmq.sh"
        + (f" --rounds {args.rounds}" if args.rounds != 3 else "")
        + (f" --duration {args.duration}" if args.duration != 5 else "")
        + (" --no-storm" if args.no_storm else "") + "`",
        "",
        "Deliveries per second received by the subscribers (median of the rounds, then the spread lowest-highest), "
        "the HTTP backend's median over the internal backend's, and the node's CPU time (user+system) per delivery "
        "in the measured window (`mqtt-loadgen --cpu-of`, medians) with its ratio. `serve` CPU: the service's "
        "CPU time over the whole HTTP run (connects included), median.",
        "",
        "| scenario | internal backend | HTTP backend (`serve`) | HTTP / internal | node CPU per delivery, internal / HTTP | ratio | `serve` CPU per run |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def per(x):
        return x["cpu_of_measured_secs"] / max(x["measured_deliveries"], 1) * 1e6

    for name, *_ in SCENARIOS:
        cells = []
        meds, cpus = {}, {}
        for backend in BACKENDS:
            xs = [x["delivered_per_sec"] for x in results[(backend, name)]]
            meds[backend] = statistics.median(xs)
            cpus[backend] = statistics.median(per(x) for x in results[(backend, name)])
            cells.append(f"{k(meds[backend])}/s ({k(min(xs))}-{k(max(xs))})")
        serve = statistics.median(x["serve_cpu_s"] for x in results[("http", name)])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {meds['http'] / meds['internal']:.2f} | "
                     f"{cpus['internal']:.1f} / {cpus['http']:.1f} µs | {cpus['http'] / cpus['internal']:.2f} | {serve * 1000:.0f} ms |")
    missing = {b: sum(x["missing"] for (b2, _), runs in results.items() if b2 == b for x in runs) for b in BACKENDS}
    lines += ["", "Messages not delivered within the 2 s drain after a run, over all runs: "
              + ", ".join(f"{b} {n:,}" for b, n in missing.items())
              + " (RabbitMQ acknowledges a QoS 1 publish once it is queued, so a subscriber that falls behind "
              "shows here, not in the publishers' rate)."]
    if storms:
        lines += [
            "",
            f"Connect storm (`mqtt-loadgen --connect-storm`, {args.clients} clients, CONNECT with user name and password "
            "-> CONNACK -> DISCONNECT): accepted connects per second (median, spread), and the CPU time per connect "
            "of the node and of the service:",
            "",
            "| backend | connects/s | HTTP / internal | node CPU per connect | serve CPU per connect |",
            "|---|---:|---:|---:|---:|",
        ]
        base = statistics.median(x["connects_per_sec"] for x in storms["internal"])
        for backend in BACKENDS:
            xs = [x["connects_per_sec"] for x in storms[backend]]
            per = statistics.median(x["broker_cpu_s"] / max(x["accepted"], 1) * 1e6 for x in storms[backend])
            sper = statistics.median(x["serve_cpu_s"] / max(x["accepted"], 1) * 1e6 for x in storms[backend])
            lines.append(f"| {backend} | {k(statistics.median(xs))} ({k(min(xs))}-{k(max(xs))}) | "
                         f"{statistics.median(xs) / base:.2f} | {per:.0f} µs | {sper:.0f} µs |")
    lines += ["", f"Every run: the JSON lines in `{Path(args.raw).relative_to(ROOT) if Path(args.raw).is_relative_to(ROOT) else args.raw}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
