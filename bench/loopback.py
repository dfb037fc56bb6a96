#!/usr/bin/env python3
"""Loopback bench: N `shoal` processes, then N HashiCorp Serf agents, doing the same
work, with the figures printed side by side. Targets are printed, never asserted.

Work, for both systems:
  1. join N members on 127.0.0.1 and wait until everyone sees everyone;
  2. idle: after SETTLE_S seconds more (connections made, the join's repairs done, and
     anything on a timer of a minute or so, such as an idle timeout, has fired once),
     loopback bytes per node per second over IDLE_S seconds (the `lo` interface's
     counters: nothing else should talk on loopback meanwhile);
  3. change: one member changes what it advertises (Shoal: an endpoint of an exported
     service; Serf: a tag), CHANGES times; latency until every other member has it;
  4. failure: kill -9 one member; time until every other member drops it (Shoal:
     its endpoints leave the imports; Serf: the member is `failed`).

Shoal uses the `lan` preset (1 s probes, 1.5 s suspicion, 0.5 s withdrawal grace); Serf
uses its `lan` profile (1 s probes).
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

N = int(os.environ.get("N", "20"))
CHANGES = int(os.environ.get("CHANGES", "20"))
IDLE_S = float(os.environ.get("IDLE_S", "20"))
SETTLE_S = float(os.environ.get("SETTLE_S", "90"))
DEADLINE_S = 60.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOAL = os.environ.get("SHOAL", os.path.join(ROOT, "target", "release", "shoal"))


# Ports handed out so far: the kernel may offer a just-closed port again, and two
# processes given the same port would leave one of them dead at start.
_TAKEN = set()


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _TAKEN:
            _TAKEN.add(port)
            return port


def free_udp_port():
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def lo_bytes():
    with open("/sys/class/net/lo/statistics/tx_bytes") as f:
        return int(f.read())


def wait_until(what, check, deadline_s=DEADLINE_S, poll_s=0.002):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(poll_s)
    raise SystemExit(f"bench: timed out waiting for {what}")


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


# ----- Shoal -----

SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: bench, namespace: default}}
spec:
  type: ClusterIP
  clusterIP: 10.96.0.1
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: bench, namespace: default, creationTimestamp: "2026-01-01T00:00:00Z"}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: bench-1
  namespace: default
  labels: {{kubernetes.io/service-name: bench}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints:
- addresses: ["10.0.{hi}.{lo}"]
  conditions: {{ready: true, serving: true, terminating: false}}
"""


def http_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return json.loads(r.read())


def shoal_config(name, quic, api, seeds):
    seed_text = "".join(
        f'\n[[seeds]]\ncluster = "{s}"\nreplica = 0\naddr = "127.0.0.1:{p}"\n'
        for s, p in seeds
    )
    return f"""cluster = "{name}"
replica = 0
preset = "lan"
listen = "127.0.0.1:{quic}"
data_dir = "data"
members_expected = {N}
{seed_text}
[tls]
ca = "../certs/ca.crt"
cert = "../certs/{name}.crt"
key = "../certs/{name}.key"
clusterset_dir = "../certs"

[http]
listen = "127.0.0.1:{api}"

[backend]
kind = "standalone"
dir = "standalone"
poll_ms = 10

[log]
filter = "warn"
"""


def imports_of(api):
    try:
        return {f"{i['namespace']}/{i['name']}": i for i in http_json(api, "/v1/imports")}
    except OSError:
        return None


def run_shoal(work):
    certs = os.path.join(work, "certs")
    subprocess.run([SHOAL, "certs", "init", "--dir", certs], check=True, stdout=subprocess.DEVNULL)
    names = [f"c{i:02d}" for i in range(N)]
    for n in names:
        subprocess.run([SHOAL, "certs", "issue", "--ca", certs, "--cluster", n],
                       check=True, stdout=subprocess.DEVNULL)
    quic = [free_udp_port() for _ in names]
    api = [free_port() for _ in names]
    procs = []
    for i, n in enumerate(names):
        d = os.path.join(work, n)
        os.makedirs(os.path.join(d, "standalone", "in"))
        seeds = [(names[j], quic[j]) for j in range(min(3, N)) if j != i]
        with open(os.path.join(d, "shoal.toml"), "w") as f:
            f.write(shoal_config(n, quic[i], api[i], seeds))
        if i == 0:
            with open(os.path.join(d, "standalone", "in", "bench.yaml"), "w") as f:
                f.write(SERVICE.format(hi=0, lo=1))
        log = open(os.path.join(d, "shoal.log"), "w")
        procs.append(subprocess.Popen([SHOAL, "run", "--config", os.path.join(d, "shoal.toml")],
                                      stdout=log, stderr=log))
    try:
        return measure_shoal(work, names, api, procs)
    finally:
        for p in procs:
            p.kill()
            p.wait()


def measure_shoal(work, names, api, procs):
    t0 = time.monotonic()

    def everyone_imports():
        for name, p in zip(names, procs):
            if p.poll() is not None:
                raise SystemExit(f"bench: {name} exited at start; see {work}/{name}/shoal.log")
        for port in api[1:]:
            imps = imports_of(port)
            if not imps or "default/bench" not in imps:
                return False
        return True

    wait_until("every node to import default/bench", everyone_imports, poll_s=0.05)
    joined_s = time.monotonic() - t0
    time.sleep(SETTLE_S)
    b0 = lo_bytes()
    time.sleep(IDLE_S)
    idle = (lo_bytes() - b0) / N / IDLE_S

    outs = [os.path.join(work, n, "standalone", "out") for n in names[1:]]
    latencies = []
    for k in range(1, CHANGES + 1):
        marker = f"10.0.{k // 250 + 1}.{k % 250 + 1}"
        path = os.path.join(work, names[0], "standalone", "in", "bench.yaml")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(SERVICE.format(hi=k // 250 + 1, lo=k % 250 + 1))
        start = time.monotonic()
        os.rename(tmp, path)
        pending = set(range(len(outs)))
        arrival = {}

        def all_arrived():
            for i in list(pending):
                if has_marker(outs[i], marker):
                    arrival[i] = time.monotonic() - start
                    pending.discard(i)
            return not pending

        wait_until(f"change {k} everywhere", all_arrived, poll_s=0.0005)
        latencies.append(max(arrival.values()) * 1000)
        time.sleep(0.2)

    victim = len(names) - 1
    with open(os.path.join(work, names[victim], "standalone", "in", "bench2.yaml"), "w") as f:
        f.write(SERVICE.replace("name: bench", "name: victim")
                .replace("bench-1", "victim-1")
                .replace("service-name: bench", "service-name: victim")
                .format(hi=99, lo=99))
    wait_until("every node to import default/victim",
               lambda: all("default/victim" in (imports_of(p) or {}) for p in api[:-1]),
               poll_s=0.05)
    start = time.monotonic()
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait()
    wait_until("the killed cluster to be withdrawn everywhere",
               lambda: all("default/victim" not in (imports_of(p) or {"default/victim": 1})
                           for p in api[:-1]),
               poll_s=0.02)
    withdrawal = time.monotonic() - start
    return {"joined_s": joined_s, "idle_bytes_per_node_s": idle, "change_ms": latencies,
            "failure_s": withdrawal}


def has_marker(out_dir, marker):
    try:
        for name in os.listdir(out_dir):
            if name.startswith("endpointslice") and "bench" in name:
                with open(os.path.join(out_dir, name)) as f:
                    if marker in f.read():
                        return True
    except OSError:
        pass
    return False


# ----- Serf -----

class SerfAgent:
    def __init__(self, i, bind, rpc, join):
        self.name = f"s{i:02d}"
        self.rpc = rpc
        args = ["serf", "agent", "-node", self.name, "-bind", f"127.0.0.1:{bind}",
                "-rpc-addr", f"127.0.0.1:{rpc}", "-profile", "lan", "-log-level", "info"]
        if join:
            args += ["-join", f"127.0.0.1:{join}"]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.events = []  # (monotonic time, line)
        self.lock = threading.Lock()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.events.append((time.monotonic(), line))

    def seen(self, needle, since):
        with self.lock:
            for t, line in self.events:
                if t >= since and needle in line:
                    return t
        return None

    def members(self):
        out = subprocess.run(["serf", "members", "-rpc-addr", f"127.0.0.1:{self.rpc}",
                              "-format", "json"], capture_output=True, text=True)
        if out.returncode != 0:
            return []
        return json.loads(out.stdout).get("members", [])


def run_serf():
    binds = [free_udp_port() for _ in range(N)]
    rpcs = [free_port() for _ in range(N)]
    agents = []
    try:
        agents.append(SerfAgent(0, binds[0], rpcs[0], None))
        # An agent whose -join fails at start exits: let the first one listen first.
        wait_until("the first Serf agent", lambda: agents[0].members(), poll_s=0.05)
        for i in range(1, N):
            agents.append(SerfAgent(i, binds[i], rpcs[i], binds[0]))
        t0 = time.monotonic()
        wait_until("every Serf agent to see everyone",
                   lambda: all(len([m for m in a.members() if m["status"] == "alive"]) == N
                               for a in agents), poll_s=0.2)
        joined_s = time.monotonic() - t0
        time.sleep(SETTLE_S)
        b0 = lo_bytes()
        time.sleep(IDLE_S)
        idle = (lo_bytes() - b0) / N / IDLE_S

        latencies = []
        for k in range(1, CHANGES + 1):
            start = time.monotonic()
            subprocess.run(["serf", "tags", "-rpc-addr", f"127.0.0.1:{rpcs[0]}", "-set",
                            f"endpoint=10.0.0.{k}"], check=True, capture_output=True)
            # Every other agent logs the member update of s00 when the tag reaches it.
            wait_until(f"tag {k} everywhere",
                       lambda: all(a.seen("EventMemberUpdate: s00", start) for a in agents[1:]),
                       poll_s=0.0005)
            latencies.append(max(a.seen("EventMemberUpdate: s00", start) - start
                                 for a in agents[1:]) * 1000)
            time.sleep(0.2)

        victim = agents[-1]
        start = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        wait_until("the killed agent to be failed everywhere",
                   lambda: all(a.seen(f"EventMemberFailed: {victim.name}", start)
                               for a in agents[:-1]), poll_s=0.01)
        failure = max(a.seen(f"EventMemberFailed: {victim.name}", start)
                      for a in agents[:-1]) - start
        return {"joined_s": joined_s, "idle_bytes_per_node_s": idle, "change_ms": latencies,
                "failure_s": failure}
    finally:
        for a in agents:
            a.proc.kill()
            a.proc.wait()


def main():
    if os.environ.get("ONLY") == "shoal":  # Shoal's half only, printed raw
        work = tempfile.mkdtemp(prefix="shoal-bench-")
        print(run_shoal(work))
        return
    if shutil.which("serf") is None:
        raise SystemExit("bench: serf is not installed (Debian package `serf`)")
    work = tempfile.mkdtemp(prefix="shoal-bench-")
    print(f"loopback bench: N = {N}, {CHANGES} changes, idle window {IDLE_S:.0f} s after "
          f"{SETTLE_S:.0f} s to settle; work dir {work}")
    shoal = run_shoal(work)
    serf = run_serf()
    rows = [("Shoal (QUIC + mTLS, lan preset)", shoal), ("Serf 0.9 (lan profile)", serf)]
    print(f"{'':34} {'join s':>7} {'idle B/node/s':>14} {'change p50 ms':>14} "
          f"{'p99 ms':>8} {'max ms':>8} {'kill -> gone s':>15}")
    for label, r in rows:
        c = r["change_ms"]
        print(f"{label:34} {r['joined_s']:7.1f} {r['idle_bytes_per_node_s']:14.0f} "
              f"{statistics.median(c):14.1f} {pct(c, 99):8.1f} {max(c):8.1f} {r['failure_s']:15.2f}")
    print("targets (printed, never asserted): change p99 <= 100 ms at N = 20; idle traffic per "
          "node below Serf's; a killed cluster withdrawn in <= 5 s")
    print("Shoal's change latency counts from the file rename in the origin's standalone in/ "
          "directory (its 10 ms poll included) to the EndpointSlice file in every other "
          "cluster's out/ directory; Serf's from `serf tags` to each agent's member-update log line.")


if __name__ == "__main__":
    main()
