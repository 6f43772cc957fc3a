"""The session mix of the soak (scripts/soak.py): Last Wills, persistent sessions and reconnect
churn next to the load generator's steady traffic, with Debian's mosquitto_sub and mosquitto_pub as
the clients. Every message the mix sends is allowed by its rules, so every one must arrive:

- wills: a client with a Last Will (QoS 1) subscribes, then its process is SIGKILLed (the socket
  closes without DISCONNECT); the broker must deliver the will to the watcher;
- persistent: a clean-session-0 client subscribes and leaves, 5 QoS 1 messages are published for
  it while it is offline, it reconnects and must receive all 5 (its session outlived the
  connection, across the policy reloads of the soak);
- churn: one-shot clients connect, publish one QoS 1 message, disconnect; the watcher must get it.
"""

import os
import select
import subprocess
import threading
import time

KINDS = {"will": 4, "pers": 4, "churn": 4}


def rules() -> str:
    """Hub rules for the mix's clients (appended to the load generator's)."""
    out = ["", "# The session mix of scripts/soak_mix.py: wills, persistent sessions, reconnect churn."]
    for actions, topic, kind in [
        ('["publish"]', "mix/${device.id}/#", "mixer"),
        ('["subscribe", "delivery"]', "mix/${device.id}/cmd/#", "mixer"),
        ('["publish"]', "mix/+/cmd/#", "mix-app"),
        ('["subscribe", "delivery"]', "mix/+/status", "mix-app"),
    ]:
        out += ["[[rule]]", 'effect = "allow"', f"actions = {actions}", f'topics = ["{topic}"]', f'types = ["{kind}"]', ""]
    for name in ["mix-app", "mix-watch"]:
        out += ["[[device]]", f'id = "{name}"', 'type = "mix-app"', ""]
    for kind, n in KINDS.items():
        for i in range(n):
            out += ["[[device]]", f'id = "{kind}-{i}"', 'type = "mixer"', ""]
    return "\n".join(out)


def is_mix_client(client_id: str) -> bool:
    return client_id.startswith(("mix-", *(f"{k}-" for k in KINDS)))


class Mix:
    """Runs the mix against a broker on `port` until `stop()`; `report()` counts what was lost."""

    def __init__(self, port: int):
        self.port = str(port)
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.status_seen: set[str] = set()
        self.wills_sent: list[str] = []
        self.churn_sent: list[str] = []
        self.queued = {"cycles": 0, "expected": 0, "received": 0, "session_errors": 0}
        self.errors: list[str] = []
        self.watcher = subprocess.Popen(
            self.base("mosquitto_sub", "mix-watch") + ["-q", "1", "-t", "mix/+/status", "-v"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self.watch, daemon=True).start()
        time.sleep(1.0)  # subscribed before the first will
        self.threads = [threading.Thread(target=f) for f in (self.wills, self.persistent, self.churn)]
        for t in self.threads:
            t.start()

    def base(self, tool: str, client_id: str) -> list[str]:
        return [tool, "-h", "127.0.0.1", "-p", self.port, "-V", "311", "-i", client_id]

    def watch(self) -> None:
        for line in self.watcher.stdout:
            parts = line.strip().split(" ", 1)
            if len(parts) == 2:
                with self.lock:
                    self.status_seen.add(parts[1])

    def fail(self, what: str) -> None:
        with self.lock:
            if len(self.errors) < 20:
                self.errors.append(what)

    def wills(self) -> None:
        n = 0
        while not self.halt.wait(1.0):
            k = n % KINDS["will"]
            payload = f"will-{k}-{n}"
            cmd = self.base("mosquitto_sub", f"will-{k}") + [
                "-q", "1", "-t", f"mix/will-{k}/cmd/#", "-d",
                "--will-topic", f"mix/will-{k}/status", "--will-payload", payload, "--will-qos", "1"]
            # Line-buffered: mosquitto_sub buffers its debug output fully when stdout is a pipe.
            p = subprocess.Popen(["stdbuf", "-oL", *cmd], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            seen, subscribed = b"", False
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not subscribed:
                ready, _, _ = select.select([p.stdout], [], [], 0.5)
                if ready:
                    chunk = os.read(p.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    seen += chunk
                    subscribed = b"SUBACK" in seen
            p.kill()  # the process dies: no DISCONNECT, the broker sends the will
            p.wait()
            if subscribed:
                with self.lock:
                    self.wills_sent.append(payload)
            else:
                self.fail(f"will client will-{k} never got its SUBACK")
            n += 1

    def persistent(self) -> None:
        n = 0
        while not self.halt.wait(2.0):
            k = n % KINDS["pers"]
            cid, topic = f"pers-{k}", f"mix/pers-{k}/cmd/#"
            session = self.base("mosquitto_sub", cid) + ["-c", "-q", "1", "-t", topic]
            if subprocess.run(session + ["-E"], capture_output=True, timeout=30).returncode != 0:
                self.fail(f"{cid} could not subscribe")
                n += 1
                continue
            payloads = [f"{cid}-{n}-{j}" for j in range(5)]
            pub = subprocess.run(self.base("mosquitto_pub", "mix-app") + ["-q", "1", "-t", f"mix/{cid}/cmd/run", "-l"],
                                 input="\n".join(payloads) + "\n", capture_output=True, text=True, timeout=30)
            if pub.returncode != 0:
                self.fail(f"queueing for {cid} failed: {pub.stderr.strip()}")
                n += 1
                continue
            back = subprocess.run(session + ["-C", "5", "-W", "10"], capture_output=True, text=True, timeout=30)
            got = set(back.stdout.split())
            with self.lock:
                self.queued["cycles"] += 1
                self.queued["expected"] += len(payloads)
                self.queued["received"] += len(got & set(payloads))
                if back.returncode != 0:
                    self.queued["session_errors"] += 1
            n += 1

    def churn(self) -> None:
        n = 0
        while not self.halt.wait(0.2):
            k = n % KINDS["churn"]
            payload = f"churn-{k}-{n}"
            r = subprocess.run(self.base("mosquitto_pub", f"churn-{k}") + ["-q", "1", "-t", f"mix/churn-{k}/status",
                                                                            "-m", payload], capture_output=True, timeout=30)
            if r.returncode == 0:
                with self.lock:
                    self.churn_sent.append(payload)
            else:
                self.fail(f"churn publish {payload} failed")
            n += 1

    def stop(self) -> dict:
        """Stops the mix, waits for stragglers, and returns its counts."""
        self.halt.set()
        for t in self.threads:
            t.join()
        time.sleep(3)
        self.watcher.terminate()
        self.watcher.wait()
        with self.lock:
            wills_lost = [w for w in self.wills_sent if w not in self.status_seen]
            churn_lost = [c for c in self.churn_sent if c not in self.status_seen]
            return {
                "wills_sent": len(self.wills_sent), "wills_lost": len(wills_lost),
                "churn_sent": len(self.churn_sent), "churn_lost": len(churn_lost),
                "queued_cycles": self.queued["cycles"], "queued_expected": self.queued["expected"],
                "queued_received": self.queued["received"], "session_errors": self.queued["session_errors"],
                "errors": self.errors, "lost_examples": (wills_lost + churn_lost)[:10],
            }
