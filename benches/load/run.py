#!/usr/bin/env python3
"""Load benchmark: headless-dns against Knot DNS and NSD with dnsperf, on 127.0.0.1 only.

One synthetic cluster (S headless Services x P StatefulSet Pods, one named port each) is written
both as Kubernetes YAML (for headless-dns's file source) and as the same records in an RFC 1035
zone file for `cluster.local` (for Knot and NSD). Each server is started in turn, pinned to one
CPU (`taskset -c 0`), with one UDP worker; dnsperf runs pinned to the other CPU (`taskset -c 1`),
as does this script. For each server the script reports:

  start->first answer  process start until a query for a Pod name gets NOERROR with an answer
  max QPS              dnsperf with no rate limit, enough outstanding queries to keep the server busy
  server CPU           utime+stime of every process of the server (/proc/<pid>/stat) over that run
  queries per CPU-s    completed queries / server CPU seconds during the max-QPS run
  p50/p99/p99.9        latency at a fixed rate (-Q, default 20,000 QPS), from dnsperf -v per-query lines
  RSS, PSS             after the runs: VmRSS and Pss (smaps_rollup) summed over the server's processes

and, with --churn, the same for headless-dns on the Kubernetes source (a fake API server) without
and with ~1,000 endpoint address changes per second delivered as watch events: --churn-pairs
alternating pairs, the median pair's drop reported (back-to-back runs on a shared machine drift by
more than churn costs), both at max QPS and at an equal offered load (--churn-equal-rate; the API
server shares dnsperf's CPU, so at max QPS churn also lowers what dnsperf offers). --churn-file
does the same through the file source (atomic rewrites).

Python 3.11 standard library only. Needs dnsperf, knot and nsd (Debian packages of those names),
taskset (util-linux), and a release build of headless-dns (built here unless --skip-build).

    sudo apt-get install -y dnsperf knot nsd
    python3 benches/load/run.py              # S=1000, P=10
    python3 benches/load/run.py --large      # S=10000, P=10
    python3 benches/load/run.py --churn      # adds headless-dns under churn
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ZONE = "cluster.local"
SERVICES_PER_NS = 100  # as benches/support/mod.rs
LOOPBACK = "127.0.0.1"  # every server listens here and nowhere else; dnsperf only queries here


# ---------------------------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------------------------


def ip(i: int, p: int, gen: int = 0) -> str:
    """Endpoint p of Service i, generation gen (as benches/support/mod.rs::ip)."""
    n = ((gen & 3) << 30) | (i << 13) | p
    v = ((10 << 24) + n) & 0xFFFFFFFF
    return socket.inet_ntoa(struct.pack("!I", v))


def ns_of(i: int) -> str:
    return f"ns-{i // SERVICES_PER_NS}"


def svc_name(i: int) -> str:
    return f"svc-{i}.{ns_of(i)}.svc.{ZONE}"


def pod_name(i: int, p: int) -> str:
    return f"web-{p}.{svc_name(i)}"


def srv_name(i: int) -> str:
    return f"_web._tcp.{svc_name(i)}"


def service_yaml(i: int, pods: int, gens: list[int] | None = None) -> str:
    """A headless Service and its EndpointSlice (<= 100 endpoints per slice, as the controller)."""
    ns = ns_of(i)
    out = [
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\nspec:\n"
        f"  clusterIP: None\n  clusterIPs: [None]\n  selector: {{app: svc-{i}}}\n  ports:\n"
        f"  - name: web\n    port: 80\n    protocol: TCP\n---\n"
    ]
    for s in range(0, (pods + 99) // 100):
        out.append(
            f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
            f"  name: svc-{i}-{s:05x}\n  namespace: {ns}\n  labels:\n"
            f"    kubernetes.io/service-name: svc-{i}\naddressType: IPv4\n"
            f"ports:\n- name: web\n  port: 80\n  protocol: TCP\nendpoints:\n"
        )
        for p in range(s * 100, min(pods, (s + 1) * 100)):
            g = gens[p] if gens else 0
            out.append(
                f"- addresses: [{ip(i, p, g)}]\n  hostname: web-{p}\n"
                f"  conditions: {{ready: true, serving: true, terminating: false}}\n"
                f"  targetRef: {{kind: Pod, name: web-{p}, namespace: {ns}}}\n"
            )
        out.append("---\n")
    return "".join(out)


def namespaces_yaml(services: int) -> str:
    return "".join(
        f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{k}\n---\n"
        for k in range((services + SERVICES_PER_NS - 1) // SERVICES_PER_NS)
    )


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def zone_file(services: int, pods: int) -> str:
    """The same A and SRV records for cluster.local, plus SOA and NS (and the NS's address)."""
    weight = max(1, 100 // pods)
    out = [
        f"$ORIGIN {ZONE}.\n$TTL 5\n",
        f"@ 5 IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 1\n",
        f"@ 5 IN NS ns.dns.{ZONE}.\n",
        "ns.dns 5 IN A 127.0.0.1\n",
    ]
    for i in range(services):
        rel = f"svc-{i}.{ns_of(i)}.svc"
        for p in range(pods):
            out.append(f"{rel} 5 IN A {ip(i, p)}\n")
        for p in range(pods):
            out.append(f"web-{p}.{rel} 5 IN A {ip(i, p)}\n")
        for p in range(pods):
            out.append(f"_web._tcp.{rel} 5 IN SRV 0 {weight} 80 web-{p}.{rel}.{ZONE}.\n")
    return "".join(out)


REVERSE_ZONE = "10.in-addr.arpa"


def reverse_zone_file(services: int, pods: int) -> str:
    """The PTR record headless-dns derives for every endpoint (`--ptr all`, the default), so that
    every server holds the same records: `<d>.<c>.<b>.10.in-addr.arpa PTR <pod name>`."""
    out = [
        f"$ORIGIN {REVERSE_ZONE}.\n$TTL 5\n",
        f"@ 5 IN SOA ns.dns.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 86400 1\n",
        f"@ 5 IN NS ns.dns.{ZONE}.\n",
    ]
    for i in range(services):
        for p in range(pods):
            a, b, c, d = ip(i, p).split(".")
            out.append(f"{d}.{c}.{b} 5 IN PTR {pod_name(i, p)}.\n")
    return "".join(out)


# ndots:5 search-path misses of a Pod in namespace <ns>: every external name is tried as
# <name>.<ns>.svc.<zone>, <name>.svc.<zone>, <name>.<zone> before the name itself.
EXTERNAL = [
    "api.example.com",
    "www.google.com",
    "s3.amazonaws.com",
    "registry-1.docker.io",
    "login.microsoftonline.com",
    "metadata.google.internal",
    "github.com",
    "pypi.org",
]


def query_file(services: int, pods: int, count: int, seed: int = 1) -> str:
    """dnsperf input: 60 % Pod names (A), 20 % headless Service names (A), 10 % SRV, 10 % in-zone
    NXDOMAIN shaped like ndots:5 search-path misses (A and AAAA, as glibc asks both)."""
    rnd = random.Random(seed)
    lines = []
    for _ in range(count):
        r = rnd.random()
        i = rnd.randrange(services)
        if r < 0.6:
            lines.append(f"{pod_name(i, rnd.randrange(pods))} A")
        elif r < 0.8:
            lines.append(f"{svc_name(i)} A")
        elif r < 0.9:
            lines.append(f"{srv_name(i)} SRV")
        else:
            suffix = rnd.choice([f"{ns_of(i)}.svc.{ZONE}", f"svc.{ZONE}", ZONE])
            lines.append(f"{rnd.choice(EXTERNAL)}.{suffix} {rnd.choice(['A', 'AAAA'])}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# A tiny DNS client (stdlib only)
# ---------------------------------------------------------------------------------------------


def dns_query(name: str, qtype: int = 1, qid: int = 0x4242) -> bytes:
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", qtype, 1)


def skip_name(msg: bytes, at: int) -> int:
    while True:
        n = msg[at]
        if n & 0xC0 == 0xC0:
            return at + 2
        if n == 0:
            return at + 1
        at += 1 + n


def first_a(msg: bytes) -> tuple[int, str | None]:
    """(rcode, first A record's address or None)."""
    rcode = msg[3] & 0xF
    qd, an = struct.unpack("!HH", msg[4:8])
    at = 12
    for _ in range(qd):
        at = skip_name(msg, at) + 4
    for _ in range(an):
        at = skip_name(msg, at)
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", msg[at : at + 10])
        at += 10
        if rtype == 1 and rdlen == 4:
            return rcode, socket.inet_ntoa(msg[at : at + 4])
        at += rdlen
    return rcode, None


def ask_a(port: int, name: str, timeout: float = 0.05) -> tuple[int, str | None] | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        qid = random.randrange(65536)
        try:
            s.sendto(dns_query(name, 1, qid), (LOOPBACK, port))
            while True:
                msg, _ = s.recvfrom(65535)
                if len(msg) >= 12 and struct.unpack("!H", msg[:2])[0] == qid:
                    return first_a(msg)
        except (socket.timeout, ConnectionRefusedError, OSError):
            return None


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((LOOPBACK, 0))
            port = u.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind((LOOPBACK, port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


# ---------------------------------------------------------------------------------------------
# Process accounting
# ---------------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_tree(root: int) -> list[int]:
    """root and all its descendants (NSD forks its serving and xfrd processes)."""
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def cpu_seconds(root: int) -> float:
    """utime+stime (all threads) of root and its descendants."""
    total = 0
    for pid in proc_tree(root):
        try:
            f = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = f[f.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def memory_kib(root: int) -> tuple[int, int]:
    """(sum of VmRSS, sum of Pss) over root and its descendants, in KiB."""
    rss = pss = 0
    for pid in proc_tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


# ---------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------


def nice_prefix(nice: int) -> list[str]:
    """`nice -n N` (N < 0 needs root): priority over other work on a shared machine."""
    return ["nice", "-n", str(nice)] if nice else []


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    log: Path
    proc: subprocess.Popen | None = None
    started_at: float = 0.0

    def start(self, cpu: str, nice: int = 0) -> None:
        self.log_file = open(self.log, "w")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [*nice_prefix(nice), "taskset", "-c", str(cpu), *self.cmd],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def headless_server(
    binary: Path, yaml: Path, port: int, http_port: int, work: Path, workers: int = 1,
    name: str = "headless-dns", extra: list[str] | None = None, kubeconfig: Path | None = None,
) -> Server:  # fmt: skip
    source = ["--source", "kube", "--kubeconfig", str(kubeconfig)] if kubeconfig else ["--source", f"file:{yaml}"]
    return Server(
        f"{name} (API)" if kubeconfig else name,
        [
            str(binary),
            "serve",
            *source,
            "--listen",
            f"{LOOPBACK}:{port}",
            "--http",
            f"{LOOPBACK}:{http_port}",
            "--udp-workers",
            str(workers),
            # Never forward: the benchmark must send nothing beyond loopback (the default
            # upstream is /etc/resolv.conf, and the loop probe would go there).
            "--upstream",
            "none",
            "--lameduck",
            "0s",
            "--log-level",
            "warn",
            *(extra or []),
        ],
        port,
        work / ("headless-dns-api.log" if kubeconfig else "headless-dns.log"),
    )


def knot_server(zonefile: Path, port: int, work: Path, workers: int = 1) -> Server:
    reverse = zonefile.with_name(f"{REVERSE_ZONE}.zone")
    d = work / "knot"
    for sub in ("run", "db", "zones"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    conf = d / "knot.conf"
    conf.write_text(
        f"""server:
    rundir: "{d / 'run'}"
    listen: {LOOPBACK}@{port}
    udp-workers: {workers}
    tcp-workers: 1
    background-workers: 1

control:
    listen: "{d / 'run' / 'knot.sock'}"

log:
  - target: stderr
    any: warning

database:
    storage: "{d / 'db'}"

template:
  - id: default
    storage: "{d / 'zones'}"
    semantic-checks: off
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none

zone:
  - domain: {ZONE}
    file: "{zonefile}"
  - domain: {REVERSE_ZONE}
    file: "{reverse}"
"""
    )
    # No mod-rrl is configured: Knot 3.2 rate-limits only through that module.
    return Server("knot", ["knotd", "-c", str(conf)], port, work / "knot.log")


def nsd_server(zonefile: Path, port: int, work: Path, workers: int = 1) -> Server:
    reverse = zonefile.with_name(f"{REVERSE_ZONE}.zone")
    d = work / "nsd"
    d.mkdir(parents=True, exist_ok=True)
    conf = d / "nsd.conf"
    conf.write_text(
        f"""server:
    server-count: {workers}
    ip-address: {LOOPBACK}@{port}
    do-ip6: no
    username: ""
    chroot: ""
    database: ""
    zonesdir: "{d}"
    zonelistfile: "{d / 'zone.list'}"
    xfrdfile: "{d / 'xfrd.state'}"
    xfrdir: "{d}"
    pidfile: "{d / 'nsd.pid'}"
    logfile: "{d / 'nsd-internal.log'}"
    verbosity: 0
    hide-version: yes
    # Rate limiting off (Debian builds NSD with --enable-ratelimit, on by default at 200 QPS).
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0

remote-control:
    control-enable: no

zone:
    name: "{ZONE}"
    zonefile: "{zonefile}"

zone:
    name: "{REVERSE_ZONE}"
    zonefile: "{reverse}"
"""
    )
    return Server("nsd", ["nsd", "-d", "-c", str(conf)], port, work / "nsd.log")


def wait_first_answer(server: Server, probe: str, timeout: float) -> float:
    """Seconds from process start until `probe` A gets NOERROR with an address."""
    deadline = server.started_at + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}; see {server.log}")
        got = ask_a(server.port, probe, timeout=0.02)
        if got and got[0] == 0 and got[1]:
            return time.monotonic() - server.started_at
        time.sleep(0.002)
    raise RuntimeError(f"{server.name} did not answer {probe} within {timeout}s; see {server.log}")


# ---------------------------------------------------------------------------------------------
# dnsperf
# ---------------------------------------------------------------------------------------------


@dataclass
class Perf:
    sent: int = 0
    completed: int = 0
    lost: int = 0
    qps: float = 0.0
    avg_latency_ms: float = 0.0
    rcodes: dict = field(default_factory=dict)
    avg_request: float = 0.0
    avg_response: float = 0.0
    latencies: list = field(default_factory=list)
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    server_core_busy_s: float = 0.0


def parse_dnsperf(out: str, verbose: bool) -> Perf:
    p = Perf()

    def num(pattern: str, cast=float, default=0):
        m = re.search(pattern, out)
        return cast(m.group(1)) if m else default

    p.sent = num(r"Queries sent:\s+(\d+)", int)
    p.completed = num(r"Queries completed:\s+(\d+)", int)
    p.lost = num(r"Queries lost:\s+(\d+)", int)
    p.qps = num(r"Queries per second:\s+([\d.]+)")
    p.seconds = num(r"Run time \(s\):\s+([\d.]+)")
    p.avg_latency_ms = num(r"Average Latency \(s\):\s+([\d.]+)") * 1e3
    m = re.search(r"Average packet size:\s+request (\d+), response (\d+)", out)
    if m:
        p.avg_request, p.avg_response = float(m.group(1)), float(m.group(2))
    m = re.search(r"Response codes:\s+(.*)", out)
    if m:
        for code, n in re.findall(r"([A-Z]+) (\d+)", m.group(1)):
            p.rcodes[code] = int(n)
    if verbose:
        # "> NOERROR web-0.svc-1.ns-0.svc.cluster.local A 0.000081"
        for line in out.splitlines():
            if line.startswith("> ") and not line.startswith("> T "):
                try:
                    p.latencies.append(float(line.rsplit(None, 1)[1]))
                except (ValueError, IndexError):
                    pass
    return p


def dnsperf(
    args, port: int, queries: Path, seconds: int, rate: int | None = None, verbose: bool = False, tcp: bool = False
) -> Perf:
    """Runs dnsperf pinned to the client CPU; its output goes to a file (reading a pipe would cost
    this script CPU on dnsperf's core). Records dnsperf's own CPU use (from wait4's rusage) and the
    CPU time everything else took on the server's CPU (/proc/stat) while it ran. With `tcp`, over
    TCP (`-m tcp`): --tcp-clients connections, --tcp-outstanding queries in flight over them, so
    each connection carries many pipelined queries."""
    clients, outstanding = (args.tcp_clients, args.tcp_outstanding) if tcp else (args.clients, args.outstanding)
    cmd = [
        *nice_prefix(args.nice), "taskset", "-c", args.client_cpu,
        "dnsperf", "-s", LOOPBACK, "-p", str(port), "-d", str(queries),
        "-l", str(seconds), "-e", "-t", "2",
        "-c", str(clients), "-T", str(args.threads), "-q", str(outstanding),
    ]  # fmt: skip
    if tcp:
        cmd += ["-m", "tcp"]
    if rate:
        cmd += ["-Q", str(rate)]
    if verbose:
        cmd += ["-v"]
    out_path = args.work / "dnsperf.out"
    with open(out_path, "w") as out:
        busy0 = cpu_busy(args.server_cpu)
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        busy1 = cpu_busy(args.server_cpu)
    text = out_path.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"dnsperf failed ({proc.returncode}): {text[-2000:]}")
    perf = parse_dnsperf(text, verbose)
    perf.client_cpu_s = usage.ru_utime + usage.ru_stime
    perf.server_core_busy_s = busy1 - busy0
    return perf


def cpu_list(spec: str) -> set[int]:
    """A taskset CPU list ("0", "0,1", "0-3") as a set."""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def cpu_busy(cpus: str) -> float:
    """Seconds the CPUs in the list `cpus` have spent not idle since boot (/proc/stat)."""
    wanted = {f"cpu{c}" for c in cpu_list(cpus)}
    total, found = 0.0, False
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:
            v = [int(x) for x in fields[1:]]
            idle = v[3] + v[4]  # idle, iowait
            total += (sum(v[:8]) - idle) / CLK_TCK
            found = True
    return total if found else float("nan")


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# ---------------------------------------------------------------------------------------------
# Churn (headless-dns, file source)
# ---------------------------------------------------------------------------------------------


class Churn(threading.Thread):
    """Rewrites the YAML every `interval` seconds with `updates` endpoint address changes (one
    endpoint in each of `updates` Services, round robin), by atomic rename. A second thread
    measures, for each rewrite, how long until one of its changed Pod names answers the new
    address."""

    def __init__(self, yaml: Path, services: int, pods: int, updates: int, interval: float, port: int):
        super().__init__(daemon=True)
        self.yaml, self.services, self.pods = yaml, services, pods
        self.updates, self.interval, self.port = min(updates, services * pods), interval, port
        self.gens = [[0] * pods for _ in range(services)]
        self.chunks = [service_yaml(i, pods) for i in range(services)] if yaml else []
        self.head = namespaces_yaml(services) if yaml else ""
        self.stop_event = threading.Event()
        self.rewrites = 0
        self.changes = 0
        self.write_seconds: list[float] = []
        self.visible: list[float] = []
        self.unseen = 0
        self.next_service = 0
        self.tick = 0
        self.pending: list[tuple[float, str, str]] = []  # (written at, name, address wanted)
        self.lock = threading.Lock()
        self.prober = threading.Thread(target=self.probe, daemon=True)

    def run(self) -> None:
        self.prober.start()
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            t = time.monotonic()
            changed = []
            for _ in range(self.updates):
                i = self.next_service
                self.next_service = (self.next_service + 1) % self.services
                if i == 0:
                    self.tick += 1
                p = self.tick % self.pods
                self.gens[i][p] = (self.gens[i][p] + 1) % 4
                changed.append((i, p))
            self.apply(changed)
            written = time.monotonic()
            self.write_seconds.append(written - t)
            self.rewrites += 1
            self.changes += len(changed)
            i, p = changed[len(changed) // 2]
            with self.lock:
                self.pending.append((written, pod_name(i, p), ip(i, p, self.gens[i][p])))
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            else:
                next_at = time.monotonic()

    def apply(self, changed: list[tuple[int, int]]) -> None:
        """Makes the changed endpoints (Service i, Pod p, at self.gens) visible to the server."""
        for i in {i for i, _ in changed}:
            self.chunks[i] = service_yaml(i, self.pods, self.gens[i])
        write_atomic(self.yaml, self.head + "".join(self.chunks))

    def probe(self) -> None:
        while not self.stop_event.is_set():
            with self.lock:
                head = self.pending[0] if self.pending else None
            if head:
                written, name, want = head
                got = ask_a(self.port, name, timeout=0.05)
                now = time.monotonic()
                if (got and got[1] == want) or now - written > 30:
                    if got and got[1] == want:
                        self.visible.append(now - written)
                    else:
                        self.unseen += 1
                    with self.lock:
                        self.pending.pop(0)
                    continue
            time.sleep(0.005)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(30)
        self.prober.join(5)
        self.unseen += len(self.pending)


class ApiFeed:
    """The fake Kubernetes API server of `benches/api_feed.rs`, serving the generated cluster to
    headless-dns's Kubernetes source (`--source kube`), and changing EndpointSlices on request."""

    def __init__(self, yaml: Path, work: Path, cpu: int):
        self.kubeconfig = work / "kubeconfig.yaml"
        self.log = open(work / "api_feed.log", "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(cpu), str(api_feed_binary()), "--yaml", str(yaml), "--kubeconfig", str(self.kubeconfig)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"api_feed did not start (see {work / 'api_feed.log'}): {line!r}")
        print(f"== fake Kubernetes API: {line.strip()}", flush=True)

    def change(self, changes: list[tuple[int, int, str]]) -> None:
        """Sets endpoint p of Service i to an address; each changed slice is one watch event."""
        items = [f"{ns_of(i)}/svc-{i}-{p // 100:05x}/{p % 100}/{addr}" for i, p, addr in changes]
        self.proc.stdin.write(" ".join(items) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply.startswith("OK"):
            raise RuntimeError(f"api_feed: {reply!r}")

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)
        self.log.close()


def api_feed_binary() -> Path:
    """Builds benches/api_feed.rs and returns its executable."""
    out = subprocess.run(
        ["cargo", "bench", "--bench", "api_feed", "--no-run", "--message-format", "json"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "api_feed" and msg.get("executable"):
            return Path(msg["executable"])
    raise RuntimeError("cargo did not report the api_feed executable")


class ApiChurn(Churn):
    """The same changes as Churn, delivered as EndpointSlice watch events by the fake API server."""

    def __init__(self, feed: ApiFeed, services: int, pods: int, updates: int, interval: float, port: int):
        self.feed = feed
        super().__init__(None, services, pods, updates, interval, port)

    def apply(self, changed: list[tuple[int, int]]) -> None:
        self.feed.change([(i, p, ip(i, p, self.gens[i][p])) for i, p in changed])


# ---------------------------------------------------------------------------------------------
# One server's measurements
# ---------------------------------------------------------------------------------------------


def measure(args, server: Server, queries: Path, probe: str, churn: Churn | None = None, equal_rate: int | None = None) -> dict:
    """One server's runs: max QPS, then the fixed --rate for latency; with `equal_rate` (the churn
    pairs) also a run at that rate, which both runs of a pair offer alike; 0 means 80 % of this
    run's max QPS, rounded down to a thousand."""
    print(f"== {server.name}{' + churn' if churn else ''}: starting on CPU {args.server_cpu}", flush=True)
    server.start(args.server_cpu, args.nice)
    try:
        first = wait_first_answer(server, probe, args.start_timeout)
        print(f"   first answer after {first * 1e3:.0f} ms", flush=True)
        # Warm up (page in the zone, fill caches) before measuring.
        dnsperf(args, server.port, queries, args.warmup)
        if churn:
            churn.start()
            time.sleep(min(2.0, args.duration / 4))  # let a rewrite or two land first
        peak, cpu, other = max_run(args, server, queries, "max")
        equal = None
        if equal_rate == 0:
            equal_rate = int(peak.qps * 0.8) // 1000 * 1000
        if equal_rate:
            equal, equal_cpu = charged(args, server, queries, rate=equal_rate)
            print(
                f"   at {equal_rate:,} QPS: {equal.qps:,.0f} QPS achieved, server CPU {equal_cpu:.2f} s, "
                f"{equal.completed / equal_cpu if equal_cpu > 0 else float('nan'):,.0f} queries per CPU-second",
                flush=True,
            )
        lat, rate_cpu = charged(args, server, queries, rate=args.rate, verbose=True)
        rss, pss = memory_kib(server.pid)
        result = {
            "server": server.name + (" + churn" if churn else ""),
            "first_answer_ms": first * 1e3,
            **figures(peak, cpu, other, lat, rate_cpu),
            "max_sent": peak.sent,
            "avg_response_bytes": peak.avg_response,
            "avg_request_bytes": peak.avg_request,
            "rate": args.rate,
            "rss_mib": rss / 1024,
            "pss_mib": pss / 1024,
            "processes": len(proc_tree(server.pid)),
        }
        if equal:
            result["equal_rate"] = equal_rate
            result["equal_rate_qps_achieved"] = equal.qps
            result["equal_rate_lost"] = equal.lost
            result["equal_rate_server_cpu_s"] = equal_cpu
            result["equal_rate_queries_per_cpu_s"] = equal.completed / equal_cpu if equal_cpu > 0 else float("nan")
        print(
            f"   at {args.rate:,} QPS: p50 {result['p50_us']:.0f} us, p99 {result['p99_us']:.0f} us "
            f"({result['latency_samples']:,} samples, {lat.lost} lost); RSS {result['rss_mib']:.1f} MiB, PSS {result['pss_mib']:.1f} MiB",
            flush=True,
        )
        if args.tcp and not churn:
            result.update(measure_tcp(args, server, queries))
            result["tcp_udp"] = result["tcp_queries_per_cpu_s"] / result["queries_per_cpu_s"]
        if churn:
            churn.stop()
            v = sorted(churn.visible)
            result["churn"] = {
                "rewrites": churn.rewrites,
                "endpoint_changes": churn.changes,
                "interval_s": churn.interval,
                "changes_per_s": churn.changes / max(1e-9, churn.rewrites * churn.interval),
                "visible_p50_ms": percentile(v, 50) * 1e3,
                "visible_max_ms": (v[-1] if v else float("nan")) * 1e3,
                "not_visible": churn.unseen,
                "rewrite_s_p50": percentile(sorted(churn.write_seconds), 50),
                "via": "api" if isinstance(churn, ApiChurn) else "file",
            }
            c = result["churn"]
            print(
                f"   churn: {c['rewrites']} rewrites, {c['endpoint_changes']:,} endpoint changes; "
                f"write->answer p50 {c['visible_p50_ms']:.0f} ms, max {c['visible_max_ms']:.0f} ms",
                flush=True,
            )
        return result
    finally:
        if churn and churn.is_alive():
            churn.stop()
        server.stop()


def charged(args, server: Server, queries: Path, **dnsperf_args) -> tuple[Perf, float]:
    """One dnsperf run of --duration seconds against `server`, and the server's CPU seconds over it."""
    cpu0 = cpu_seconds(server.pid)
    perf = dnsperf(args, server.port, queries, args.duration, **dnsperf_args)
    return perf, cpu_seconds(server.pid) - cpu0


def max_run(args, server: Server, queries: Path, label: str, tcp: bool = False) -> tuple[Perf, float, float]:
    """The max-QPS run: dnsperf with no rate limit; returns it with the server's CPU seconds and
    the CPU seconds other work took on the server's CPU meanwhile."""
    peak, cpu = charged(args, server, queries, tcp=tcp)
    other = max(0.0, peak.server_core_busy_s - cpu)
    print(
        f"   {label}: {peak.qps:,.0f} QPS, {peak.completed:,} completed, {peak.lost:,} lost; "
        f"server CPU {cpu:.2f} s, dnsperf CPU {peak.client_cpu_s:.2f} s, other work on the server's CPU "
        f"{other:.2f} s, over {peak.seconds:.1f} s: "
        f"{peak.completed / cpu if cpu > 0 else float('nan'):,.0f} queries per server CPU-second",
        flush=True,
    )
    return peak, cpu, other


def figures(peak: Perf, cpu: float, other: float, lat: Perf, rate_cpu: float, prefix: str = "") -> dict:
    """A server's figures from its max-QPS run (`peak`, with the server's CPU seconds and other
    work's on its CPU) and its fixed-rate run (`lat`, with the server's CPU seconds), keys
    prefixed with `prefix`."""
    lats = sorted(lat.latencies)
    per_run = lambda v: v / peak.seconds if peak.seconds else float("nan")  # noqa: E731
    out = {
        "max_qps": peak.qps,
        "max_completed": peak.completed,
        "max_lost": peak.lost,
        "server_cpu_s": cpu,
        "run_s": peak.seconds,
        "server_cpu_util": per_run(cpu),
        "client_cpu_util": per_run(peak.client_cpu_s),
        "other_on_server_cpu_util": per_run(other),
        "queries_per_cpu_s": peak.completed / cpu if cpu > 0 else float("nan"),
        "rcodes": peak.rcodes,
        "rate_qps_achieved": lat.qps,
        "rate_lost": lat.lost,
        "rate_server_cpu_util": rate_cpu / lat.seconds if lat.seconds else float("nan"),
        "p50_us": percentile(lats, 50) * 1e6,
        "p99_us": percentile(lats, 99) * 1e6,
        "p999_us": percentile(lats, 99.9) * 1e6,
        "latency_samples": len(lats),
    }
    return {prefix + k: v for k, v in out.items()}


def measure_tcp(args, server: Server, queries: Path) -> dict:
    """The same runs over TCP (--tcp): a warm-up, max QPS and the fixed rate, each dnsperf run on
    --tcp-clients connections with --tcp-outstanding queries pipelined over them."""
    dnsperf(args, server.port, queries, args.warmup, tcp=True)
    peak, cpu, other = max_run(args, server, queries, "TCP max", tcp=True)
    lat, rate_cpu = charged(args, server, queries, rate=args.rate, verbose=True, tcp=True)
    out = figures(peak, cpu, other, lat, rate_cpu, prefix="tcp_")
    print(
        f"   TCP at {args.rate:,} QPS: p50 {out['tcp_p50_us']:.0f} us, p99 {out['tcp_p99_us']:.0f} us "
        f"({out['tcp_latency_samples']:,} samples, {lat.lost} lost)",
        flush=True,
    )
    return out


def best_of(args, run) -> dict:
    """Runs one server's measurements --repeat times and keeps the run in which other work took
    the least of the server's CPU (the others are kept under "discarded")."""
    runs = [run() for _ in range(args.repeat)]
    runs.sort(key=lambda r: r["other_on_server_cpu_util"])
    best = runs[0]
    if len(runs) > 1:
        best["discarded"] = runs[1:]
    return best


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def machine(binary: Path, built_here: bool) -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break

    def version(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not found"

    def git_rev() -> str:
        try:
            r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
            return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        except OSError:
            return "unknown"

    dnsperf_version = "unknown"
    try:
        r = subprocess.run(["dnsperf", "-h"], capture_output=True, text=True)
        m = re.search(r"Version ([\d.]+)", r.stdout + r.stderr)
        dnsperf_version = m.group(1) if m else "unknown"
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": os.uname().release,
        "knot": version(["knotd", "--version"]),
        "nsd": version(["nsd", "-v"]),
        "dnsperf": dnsperf_version,
        "headless_dns": git_rev()
        if built_here
        else f"binary built {binary_time(binary)} (--skip-build; HEAD is {git_rev()})",
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
    }


def binary_time(binary: Path) -> str:
    try:
        return dt.datetime.fromtimestamp(binary.stat().st_mtime, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except OSError:
        return "unknown"


def fmt_ratio(value: float, knot: float | None) -> str:
    if not knot or knot != knot or value != value:
        return ""
    return f" ({value / knot:.2f}×)"


def summary(results: list[dict]) -> list[str]:
    """With --rounds: the median of each server's runs, and ratios against the first server."""
    names = list(dict.fromkeys(r["server"] for r in results))
    keys = [("max_qps", "max QPS"), ("queries_per_cpu_s", "queries per server CPU-second"),
            ("rate_server_cpu_util", "server CPU at fixed rate"), ("p50_us", "p50 µs"), ("p99_us", "p99 µs")]  # fmt: skip
    if all("tcp_queries_per_cpu_s" in r for r in results):
        keys += [("tcp_queries_per_cpu_s", "TCP queries per server CPU-second"), ("tcp_udp", "TCP / UDP per CPU-second"),
                 ("tcp_p99_us", "TCP p99 µs")]  # fmt: skip
    med = {n: {k: statistics.median(r[k] for r in results if r["server"] == n) for k, _ in keys} for n in names}
    out = [
        f"Median over rounds (ratio against {names[0]}):",
        "",
        "| server | runs | " + " | ".join(label for _, label in keys) + " |",
        "|---|---:|" + "---:|" * len(keys),
    ]
    for n in names:
        runs = sum(1 for r in results if r["server"] == n)
        cells = [f"{med[n][k]:,.2f}" if k in ("rate_server_cpu_util", "tcp_udp") else f"{med[n][k]:,.0f}" for k, _ in keys]
        cells = [f"{c} ({med[n][k] / med[names[0]][k]:.2f}×)" for c, (k, _) in zip(cells, keys)]
        out.append(f"| {n} | {runs} | " + " | ".join(cells) + " |")
    return out


def write_results(args, env: dict, results: list[dict], dnsperf_flags: str) -> None:
    knot = next((r for r in results if r["server"] == "knot"), None)
    k = lambda key: knot[key] if knot else None  # noqa: E731
    lines = [
        "# Load benchmark results",
        "",
        f"Generated by `python3 benches/load/run.py{' ' + ' '.join(args.argv) if args.argv else ''}` on {env['date']}.",
        "",
        f"- Machine: {env['cpu']}, {env['cores']} cores, Linux {env['kernel']}; load average before the run "
        f"{' '.join(env['loadavg_before'])} (other work on the machine makes the figures noisier).",
        f"- Servers: headless-dns {env['headless_dns']} (release build), {env['knot']}, {env['nsd']} "
        f"(Debian packages); dnsperf {env['dnsperf']}.",
        f"- Cluster: {args.services:,} headless Services × {args.pods} Pods = {args.services * args.pods:,} endpoints; "
        f"queries: {args.queries:,}-line file, 60 % Pod A, 20 % Service A, 10 % SRV, 10 % in-zone NXDOMAIN "
        f"(ndots:5 search-path misses, A and AAAA).",
        f"- Each server pinned to CPU {args.server_cpu} (`taskset -c {args.server_cpu}`) with {args.udp_workers} UDP "
        f"worker(s); dnsperf and this script pinned to CPU {args.client_cpu}. Only 127.0.0.1."
        + (f" Variants: {'; '.join(f'`{k}` = `{v}`' for k, v in args.variants.items())}." if args.variants else ""),
        f"- dnsperf: `{dnsperf_flags}`; max QPS with no rate limit for {args.duration} s after a {args.warmup} s "
        f"warm-up; latency at `-Q {args.rate}` for {args.duration} s with `-v` (per-query latencies).",
        f"- Each server measured {args.repeat} time(s); the run in which other work took the least of the server's "
        f"CPU is reported (all runs are in the JSON below)."
        + (f" The list of servers was run {args.rounds} times in turn (rounds alternate the servers)." if args.rounds > 1 else "")
        + (f" Servers and dnsperf ran under `nice -n {args.nice}` to keep other work on the machine off their CPUs." if args.nice else ""),
        "",
        "| server | max QPS | CPU: server / dnsperf¹ / other on server's CPU | queries per server CPU-second "
        f"| server CPU at {args.rate // 1000}k QPS | p50 / p99 / p99.9 at {args.rate // 1000}k QPS "
        "| RSS (PSS) after load | start → first answer | avg response |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "round" in r:  # ratios against Knot of the same round
            knot = next((x for x in results if x["server"] == "knot" and x.get("round") == r["round"]), None)
        lines.append(
            f"| {r['server']}{' #' + str(r['round']) if 'round' in r else ''} "
            f"| {r['max_qps']:,.0f}{fmt_ratio(r['max_qps'], k('max_qps'))} "
            f"| {r['server_cpu_util'] * 100:.0f} % / {r['client_cpu_util'] * 100:.0f} % / "
            f"{r['other_on_server_cpu_util'] * 100:.0f} % "
            f"| {r['queries_per_cpu_s']:,.0f}{fmt_ratio(r['queries_per_cpu_s'], k('queries_per_cpu_s'))} "
            f"| {r['rate_server_cpu_util'] * 100:.0f} %{fmt_ratio(r['rate_server_cpu_util'], k('rate_server_cpu_util'))} "
            f"| {r['p50_us']:.0f} / {r['p99_us']:.0f} / {r['p999_us']:.0f} µs "
            f"| {r['rss_mib']:.1f} ({r['pss_mib']:.1f}) MiB{fmt_ratio(r['rss_mib'], k('rss_mib'))} "
            f"| {r['first_answer_ms']:.0f} ms{fmt_ratio(r['first_answer_ms'], k('first_answer_ms'))} "
            f"| {r['avg_response_bytes']:.0f} B |"
        )
    lines += [
        "",
        "Ratios in parentheses are against Knot DNS. CPU shares are of the max-QPS run's duration; ¹ dnsperf's "
        "share comes from its rusage and includes reading the query file and waiting out `-t` at the end, so it "
        "can pass 100 %.",
        "",
    ]
    tcp = [r for r in results if "tcp_queries_per_cpu_s" in r]
    if tcp:
        lines += [
            f"Over TCP (`--tcp`: `dnsperf -m tcp -c {args.tcp_clients} -q {args.tcp_outstanding}`, i.e. "
            f"{args.tcp_clients} connections with up to {args.tcp_outstanding} queries pipelined over them), "
            "measured right after the UDP runs of the same server process; ratios in parentheses against Knot DNS:",
            "",
            "| server | TCP max QPS | CPU: server / dnsperf / other | TCP queries per server CPU-second "
            f"| TCP ÷ UDP per CPU-second | server CPU at {args.rate // 1000}k QPS "
            f"| TCP p50 / p99 / p99.9 at {args.rate // 1000}k QPS | lost (max / rate) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in tcp:
            if "round" in r:
                knot = next((x for x in results if x["server"] == "knot" and x.get("round") == r["round"]), None)
            lines.append(
                f"| {r['server']}{' #' + str(r['round']) if 'round' in r else ''} "
                f"| {r['tcp_max_qps']:,.0f}{fmt_ratio(r['tcp_max_qps'], k('tcp_max_qps'))} "
                f"| {r['tcp_server_cpu_util'] * 100:.0f} % / {r['tcp_client_cpu_util'] * 100:.0f} % / "
                f"{r['tcp_other_on_server_cpu_util'] * 100:.0f} % "
                f"| {r['tcp_queries_per_cpu_s']:,.0f}{fmt_ratio(r['tcp_queries_per_cpu_s'], k('tcp_queries_per_cpu_s'))} "
                f"| {r['tcp_udp']:.2f} "
                f"| {r['tcp_rate_server_cpu_util'] * 100:.0f} %{fmt_ratio(r['tcp_rate_server_cpu_util'], k('tcp_rate_server_cpu_util'))} "
                f"| {r['tcp_p50_us']:.0f} / {r['tcp_p99_us']:.0f}{fmt_ratio(r['tcp_p99_us'], k('tcp_p99_us'))} / {r['tcp_p999_us']:.0f} µs "
                f"| {r['tcp_max_lost']:,} / {r['tcp_rate_lost']:,} |"
            )
        lines.append("")
    if args.rounds > 1:
        lines += summary(results) + [""]
    lost = [r for r in results if r["max_lost"] or r["rate_lost"]]
    for r in lost:
        lines.append(f"- {r['server']}: {r['max_lost']:,} queries lost in the max-QPS run, {r['rate_lost']:,} at the fixed rate.")
    for r in results:
        lines.append(f"- {r['server']} response codes (max-QPS run): " + ", ".join(f"{c} {n:,}" for c, n in r["rcodes"].items()))
    churned = [r for r in results if "churn" in r]
    if churned:
        lines += ["", "## Churn (headless-dns)", ""]
        for r in churned:
            c = r["churn"]
            base = next((b for b in results if b["server"] + " + churn" == r["server"]), None)
            drop = (
                f" Queries per server CPU-second: {r['queries_per_cpu_s']:,.0f} against {base['queries_per_cpu_s']:,.0f} "
                f"without churn in this run ({(r['queries_per_cpu_s'] / base['queries_per_cpu_s'] - 1) * 100:+.1f} %)."
                if base
                else ""
            )
            if len(c.get("pair_drops_pct", [])) > 1:
                drops = ", ".join(f"{d:+.1f} %" for d in c["pair_drops_pct"])
                drop += (
                    f" Runs without and with churn alternated {len(c['pair_drops_pct'])} times; the drops of the "
                    f"pairs were {drops}, and the table shows the median pair."
                )
            if c.get("equal_rate_pair_drops_pct"):
                eq = c["equal_rate_pair_drops_pct"]
                drop += (
                    f" At an equal offered load (both runs of each pair at 80 % of that pair's max QPS without churn; "
                    f"here {r['equal_rate']:,} QPS, {r['equal_rate_qps_achieved']:,.0f} achieved under churn), where the "
                    f"load generator's loss of CPU to the API server does not lower what the server is offered: "
                    f"queries per server CPU-second {r['equal_rate_queries_per_cpu_s']:,.0f} against "
                    f"{base['equal_rate_queries_per_cpu_s']:,.0f} in that pair; the drops of the pairs were "
                    + ", ".join(f"{d:+.1f} %" for d in eq)
                    + f", median {eq[len(eq) // 2]:+.1f} %."
                    if base and "equal_rate_queries_per_cpu_s" in base
                    else ""
                )
            per = c["endpoint_changes"] // max(1, c["rewrites"])
            if c.get("via") == "api":
                how = (
                    f"- Kubernetes source (`--source kube`, kube-rs watchers) fed by the fake API server of "
                    f"`benches/api_feed.rs` on the client's CPU: every {c['interval_s']:g} s, {per:,} endpoint address "
                    f"changes, round robin over the Services, written as one EndpointSlice update (watch event) per "
                    f"changed slice: "
                    f"{c['endpoint_changes']:,} changes, ~{c['changes_per_s']:,.0f} changes/s. From the API server "
                    f"applying a batch to the first query answering one of its changed Pods' new address: "
                    f"p50 {c['visible_p50_ms']:.1f} ms, max {c['visible_max_ms']:.1f} ms (probe resolution ~5 ms; "
                    f"{c['not_visible']} batches not seen before the run ended)."
                )
            else:
                how = (
                    f"- File source: the YAML file was rewritten (write to a temporary file, rename over) every "
                    f"{c['interval_s']:g} s with {per:,} endpoint address changes: {c['rewrites']} rewrites, "
                    f"{c['endpoint_changes']:,} changes, ~{c['changes_per_s']:,.0f} changes/s. From the rename to the "
                    f"first query answering a changed Pod's new address: p50 {c['visible_p50_ms']:.0f} ms, max "
                    f"{c['visible_max_ms']:.0f} ms ({c['not_visible']} rewrites not seen before the run ended). The file "
                    f"source polls every 250 ms, waits 300 ms for the file to settle, then re-reads and re-parses the "
                    f"whole file, so this measures the file path, not the writer."
                )
            lines.append(how + drop)
    lines += [
        "",
        f"![QPS per CPU-second and RSS per server]({Path(args.svg).name})",
        "",
        "<details><summary>Raw figures (JSON)</summary>",
        "",
        "```json",
        json.dumps({"environment": env, "results": results}, indent=1),
        "```",
        "",
        "</details>",
        "",
    ]
    Path(args.results).write_text("\n".join(lines))


def write_svg(path: Path, results: list[dict], title: str) -> None:
    """Two bar charts side by side: queries per server CPU-second, and RSS after load."""
    colors = {"headless-dns": "#2b7bb9", "knot": "#d95f02", "nsd": "#1b9e77"}
    panels = [
        ("Queries per server CPU-second", "queries_per_cpu_s", lambda v: f"{v:,.0f}"),
        ("RSS after load (MiB)", "rss_mib", lambda v: f"{v:,.1f}"),
    ]
    bar_h, gap, label_w, panel_w, top = 26, 10, 150, 300, 60
    height = top + len(results) * (bar_h + gap) + 40
    width = len(panels) * (label_w + panel_w + 40) + 20
    esc = lambda s: s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")  # noqa: E731
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="20" y="24" font-size="15" font-weight="bold">{esc(title)}</text>',
    ]
    for n, (heading, key, fmt) in enumerate(panels):
        x0 = 20 + n * (label_w + panel_w + 40)
        vmax = max((r[key] for r in results if r[key] == r[key]), default=1) or 1
        out.append(f'<text x="{x0}" y="{top - 12}" font-weight="bold">{esc(heading)}</text>')
        for j, r in enumerate(results):
            y = top + j * (bar_h + gap)
            w = 0 if r[key] != r[key] else r[key] / vmax * (panel_w - 70)
            color = colors.get(r["server"].split(" ")[0], "#7570b3")
            if "churn" in r:
                color = "#7570b3"
            out.append(f'<text x="{x0 + label_w - 8}" y="{y + bar_h * 0.68}" text-anchor="end">{esc(r["server"])}</text>')
            out.append(f'<rect x="{x0 + label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
            out.append(f'<text x="{x0 + label_w + w + 5:.1f}" y="{y + bar_h * 0.68}">{esc(fmt(r[key]))}</text>')
        out.append(
            f'<line x1="{x0 + label_w}" y1="{top - 4}" x2="{x0 + label_w}" '
            f'y2="{top + len(results) * (bar_h + gap) - gap + 4}" stroke="#333"/>'
        )
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


# ---------------------------------------------------------------------------------------------


def common_arguments(ap: argparse.ArgumentParser) -> None:
    """The options this script shares with soak.py: the cluster, the query file, the CPUs, nice,
    the binary and the working directory."""
    ap.add_argument("--services", type=int, default=1000, help="headless Services (S) [1000]")
    ap.add_argument("--pods", type=int, default=10, help="Pods per Service (P) [10]")
    ap.add_argument("--queries", type=int, default=200_000, help="lines in the query file [200000]")
    ap.add_argument(
        "--nice", type=int, default=0, help="run servers and dnsperf under nice -n N (e.g. -10, as root) [0: off]"
    )
    ap.add_argument("--server-cpu", default="0", help="CPU list for the server (taskset -c syntax) [0]")
    ap.add_argument("--client-cpu", default="1", help="CPU list for dnsperf and this script [1]")
    ap.add_argument("--binary", type=Path, default=REPO / "target" / "release" / "headless-dns")
    ap.add_argument("--skip-build", action="store_true", help="do not run cargo build --release")
    ap.add_argument("--workdir", type=Path, help="keep generated files here (default: a temporary directory, removed)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(ap)
    ap.add_argument("--large", action="store_true", help="S=10000, P=10")
    ap.add_argument("--servers", default="headless-dns,knot,nsd", help="comma-separated subset, in order")
    ap.add_argument(
        "--churn",
        action="store_true",
        help="also run headless-dns on the Kubernetes source (a fake API server, benches/api_feed.rs), "
        "without and then with endpoint churn delivered as watch events",
    )
    ap.add_argument(
        "--churn-pairs", type=int, default=3, help="alternating runs without and with churn; the median pair is reported [3]"
    )
    ap.add_argument(
        "--churn-equal-rate",
        type=int,
        default=0,
        help="QPS both runs of a churn pair also get (0: 80%% of the pair's max QPS without churn) [0]",
    )
    ap.add_argument("--churn-file", action="store_true", help="also run headless-dns while the YAML file churns")
    ap.add_argument("--churn-updates", type=int, default=1000, help="endpoint changes per rewrite [1000]")
    ap.add_argument("--churn-interval", type=float, default=1.0, help="seconds between rewrites [1.0]")
    ap.add_argument("--duration", type=int, default=10, help="seconds per dnsperf run [10]")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of warm-up load [2]")
    ap.add_argument("--rate", type=int, default=20000, help="QPS of the latency run [20000]")
    ap.add_argument("--clients", type=int, default=4, help="dnsperf -c [4]")
    ap.add_argument("--threads", type=int, default=1, help="dnsperf -T [1]")
    ap.add_argument("--outstanding", type=int, default=200, help="dnsperf -q [200]")
    ap.add_argument(
        "--tcp",
        action="store_true",
        help="also measure each server over TCP (dnsperf -m tcp), queries pipelined on a few connections",
    )
    ap.add_argument("--tcp-clients", type=int, default=4, help="dnsperf -c over TCP: connections [4]")
    ap.add_argument("--tcp-outstanding", type=int, default=200, help="dnsperf -q over TCP: queries in flight [200]")
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per server; the least disturbed one is reported [1]"
    )
    ap.add_argument("--udp-workers", type=int, default=1, help="UDP workers of every server [1]")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=BINARY [ARGS]",
        help="another headless-dns binary and/or extra flags, run as server headless-dns@LABEL "
        "(e.g. --variant 'main=/tmp/hdns-main' --variant 'b64=target/release/headless-dns --udp-batch 64')",
    )
    ap.add_argument(
        "--rounds", type=int, default=1, help="run the whole list of servers N times in turn, reporting every run [1]"
    )
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--svg", type=Path, default=HERE / "results.svg")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    if args.large:
        args.services, args.pods = 10_000, 10
    if args.pods > 8192 or args.services > 1 << 17:
        ap.error("at most 131072 Services of at most 8192 Pods (the address plan)")

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for tool in ["dnsperf", "taskset"] + [{"knot": "knotd", "nsd": "nsd"}[s] for s in servers if s in ("knot", "nsd")]:
        if not shutil.which(tool):
            print(f"{tool} not found: sudo apt-get install -y dnsperf knot nsd", file=sys.stderr)
            return 2
    if max(cpu_list(args.server_cpu) | cpu_list(args.client_cpu)) >= (os.cpu_count() or 1):
        ap.error(f"this machine has {os.cpu_count()} CPUs")
    args.variants = {}
    for v in args.variant:
        label, _, cmd = v.partition("=")
        if not label or not cmd:
            ap.error(f"--variant {v!r}: expected LABEL=BINARY [ARGS]")
        args.variants[label] = cmd
    # This script (the churn writer and the probes included) stays off the server's CPU.
    os.sched_setaffinity(0, cpu_list(args.client_cpu))

    if "headless-dns" in servers and not args.skip_build:
        print("== cargo build --release", flush=True)
        subprocess.run(["cargo", "build", "--release", "--bin", "headless-dns"], cwd=REPO, check=True)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="hdns-load-"))
    work.mkdir(parents=True, exist_ok=True)
    args.work = work
    try:
        t = time.monotonic()
        yaml = work / "cluster.yaml"
        write_atomic(yaml, namespaces_yaml(args.services) + "".join(service_yaml(i, args.pods) for i in range(args.services)))
        zonefile = work / f"{ZONE}.zone"
        zonefile.write_text(zone_file(args.services, args.pods))
        zonefile.with_name(f"{REVERSE_ZONE}.zone").write_text(reverse_zone_file(args.services, args.pods))
        queries = work / "queries.txt"
        queries.write_text(query_file(args.services, args.pods, args.queries))
        print(
            f"== generated {args.services:,} Services × {args.pods} Pods in {time.monotonic() - t:.1f} s: "
            f"{yaml.stat().st_size / 2**20:.1f} MiB YAML, {zonefile.stat().st_size / 2**20:.1f} MiB zone file, "
            f"{args.queries:,} queries ({work})",
            flush=True,
        )
        env = machine(args.binary, "headless-dns" in servers and not args.skip_build)
        probe = pod_name(args.services - 1, args.pods - 1)  # the last record loaded
        results = []
        for round_ in range(1, args.rounds + 1):
            for name in servers:
                port = free_port()
                if name == "headless-dns":
                    server = headless_server(args.binary, yaml, port, free_port(), work, args.udp_workers)
                elif name.startswith("headless-dns@") and name.split("@", 1)[1] in args.variants:
                    binary, *extra = shlex.split(args.variants[name.split("@", 1)[1]])
                    server = headless_server(Path(binary), yaml, port, free_port(), work, args.udp_workers, name, extra)
                elif name == "knot":
                    server = knot_server(zonefile, port, work, args.udp_workers)
                elif name == "nsd":
                    server = nsd_server(zonefile, port, work, args.udp_workers)
                else:
                    ap.error(f"unknown server {name} (variants need --variant LABEL=...)")
                result = best_of(args, lambda: measure(args, server, queries, probe))
                if args.rounds > 1:
                    result["round"] = round_
                results.append(result)
        if args.churn:
            feed = ApiFeed(yaml, work, args.client_cpu)
            try:
                port = free_port()
                server = headless_server(
                    args.binary, yaml, port, free_port(), work, args.udp_workers, kubeconfig=feed.kubeconfig
                )

                def api_churned(rate: int) -> dict:
                    churn = ApiChurn(feed, args.services, args.pods, args.churn_updates, args.churn_interval, port)
                    return measure(args, server, queries, probe, churn, equal_rate=rate)

                # Runs without and with churn alternate, and each pair gives one drop: on a shared
                # machine the throughput of back-to-back runs drifts by more than churn costs.
                # The API server shares dnsperf's CPU, so under churn dnsperf offers fewer queries
                # at max QPS, and a server that is not saturated answers them with less batching:
                # the max-QPS drop charges the load generator's loss to the server. Each pair
                # therefore also offers both runs the same rate, --churn-equal-rate (default: 80 %
                # of the pair's max QPS without churn, which dnsperf sustains under churn too).
                pairs = []
                for _ in range(args.churn_pairs):
                    base = best_of(args, lambda: measure(args, server, queries, probe, equal_rate=args.churn_equal_rate))
                    rate = base["equal_rate"]
                    churned = best_of(args, lambda: api_churned(rate))
                    drop = (churned["queries_per_cpu_s"] / base["queries_per_cpu_s"] - 1) * 100
                    equal_drop = (churned["equal_rate_queries_per_cpu_s"] / base["equal_rate_queries_per_cpu_s"] - 1) * 100
                    pairs.append((drop, base, churned, equal_drop))
                    print(
                        f"   pair {len(pairs)}: queries per CPU-second {drop:+.1f} % under churn at max QPS, "
                        f"{equal_drop:+.1f} % at an equal {rate:,} QPS",
                        flush=True,
                    )
                equal_drops = sorted(p[3] for p in pairs)
                pairs.sort(key=lambda p: p[0])
                drop, base, churned, _ = pairs[len(pairs) // 2]
                churned["churn"]["pair_drops_pct"] = [round(p[0], 1) for p in pairs]
                churned["churn"]["equal_rate_pair_drops_pct"] = [round(d, 1) for d in equal_drops]
                results += [base, churned]
            finally:
                feed.stop()
        if args.churn_file:
            port = free_port()
            churn_yaml = work / "churn.yaml"
            shutil.copyfile(yaml, churn_yaml)
            server = headless_server(args.binary, churn_yaml, port, free_port(), work, args.udp_workers)

            def churned() -> dict:
                shutil.copyfile(yaml, churn_yaml)
                churn = Churn(churn_yaml, args.services, args.pods, args.churn_updates, args.churn_interval, port)
                return measure(args, server, queries, probe, churn)

            results.append(best_of(args, churned))
        flags = f"dnsperf -s 127.0.0.1 -e -t 2 -c {args.clients} -T {args.threads} -q {args.outstanding} -l {args.duration}"
        write_results(args, env, results, flags)
        write_svg(args.svg, results, f"{args.services:,} headless Services × {args.pods} Pods, one CPU per server ({env['date']})")
        print(f"== wrote {args.results} and {args.svg}", flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
