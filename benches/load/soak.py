#!/usr/bin/env python3
"""Soak: headless-dns on its Kubernetes source for a long run under endpoint churn and a steady
query load, sampling its resources every few seconds.

The machinery is the load benchmark's (`run.py`, imported): the same synthetic cluster, served by
the fake Kubernetes API server of `benches/api_feed.rs` (the test suite's list/watch server), the
same churn (`--churn-updates` endpoint address changes every second, round robin over the
Services, one EndpointSlice watch event per changed slice, with a probe timing how soon a changed
name answers its new address), the same dnsperf query mix. headless-dns runs `--source kube`, as
in a cluster, pinned to --server-cpu; dnsperf, the API server and this script to --client-cpu.

1. Starts the API server and headless-dns, waits for the first answer.
2. Capacity (unless --rate): one dnsperf run with no rate limit for 10 s, with churn running; the
   steady load is half the queries per second it reached.
3. The soak: churn and dnsperf at that fixed rate (`-Q`) for --minutes, while every --sample
   seconds it records VmRSS (/proc/<pid>/status), open file descriptors (/proc/<pid>/fd), the
   server's CPU time, and from /metrics the index size (`headless_dns_index_names`), the IXFR
   journal, the model's sizes and the error counters (dropped queries, SERVFAIL answers, watch
   errors, relists).
4. Writes the samples as CSV, an SVG of RSS (and open descriptors) over time, and a Markdown
   summary: after the first --settle minutes, how far RSS moved (max - min, as a share of the
   value at the end of the settling time), whether descriptors, the index or the journal grew,
   the error counters' increase, and dnsperf's lost queries and response codes.

    python3 benches/load/soak.py --minutes 60                 # as the issue asks
    python3 benches/load/soak.py --minutes 20 --nice -10      # shorter
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import shutil
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
import run as load  # noqa: E402  (the load benchmark's cluster, servers, churn and dnsperf parsing)

# The /metrics series sampled: column -> (metric name, label substring or None for the sum).
METRICS = {
    "index_names": ("headless_dns_index_names", None),
    "journal_bytes": ("headless_dns_ixfr_journal_bytes", None),
    "journal_versions": ("headless_dns_ixfr_journal_versions", None),
    "endpoint_slices": ("headless_dns_endpoint_slices", None),
    "pods": ("headless_dns_pods", None),
    "requests": ("headless_dns_requests_total", None),
    "servfail": ("headless_dns_responses_total", 'rcode="SERVFAIL"'),
    "dropped": ("headless_dns_dropped_total", None),
    "watch_errors": ("headless_dns_kubernetes_watch_errors_total", None),
    "relists": ("headless_dns_kubernetes_relists_total", None),
}
# Counters whose increase after the settling time is an error.
ERRORS = ["servfail", "dropped", "kernel_drops", "watch_errors", "relists"]
# Gauges that must not grow after the settling time.
STEADY = ["fds", "index_names", "journal_bytes", "journal_versions", "endpoint_slices", "pods"]


def metric(text: str, name: str, label: str | None) -> float | None:
    """The sum of the samples of `name` (whose labels contain `label`), or None if there are none."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name or (label and label not in series):
            continue
        try:
            total += float(value)
            found = True
        except ValueError:
            pass
    return total if found else None


def sample(pid: int, http_port: int, started: float) -> dict:
    row = {"t_s": round(time.monotonic() - started, 1)}
    status = Path(f"/proc/{pid}/status").read_text()
    row["rss_kib"] = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    row["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    row["cpu_s"] = round(load.cpu_seconds(pid), 2)
    try:
        with urllib.request.urlopen(f"http://{load.LOOPBACK}:{http_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        text = ""
    for column, (name, label) in METRICS.items():
        row[column] = metric(text, name, label)
    row["kernel_drops"] = udp_drops(pid)
    return row


def udp_drops(pid: int) -> int | None:
    """Queries the kernel dropped before the server read them (its UDP sockets' receive queues
    were full): the `drops` column of /proc/<pid>/net/udp and udp6 for the sockets the process
    holds. The server cannot count these itself; a client only sees a timeout."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    total, found = 0, False
    for table in ("udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 13 and fields[9] in inodes:
                total += int(fields[12])
                found = True
    return total if found else None


def dnsperf_cmd(args, port: int, queries: Path, seconds: int, rate: int | None) -> list[str]:
    cmd = [
        *load.nice_prefix(args.nice), "taskset", "-c", args.client_cpu,
        "dnsperf", "-s", load.LOOPBACK, "-p", str(port), "-d", str(queries), "-l", str(seconds),
        "-e", "-t", "2", "-c", "4", "-T", "1", "-q", "200",
    ]  # fmt: skip
    return cmd + (["-Q", str(rate)] if rate else [])


def write_svg(path: Path, rows: list[dict], settle_s: float, title: str) -> None:
    """RSS (MiB, left axis) and open descriptors (right axis) against minutes, drawn by hand."""
    w, h, left, right, top, bottom = 760, 340, 70, 70, 40, 50
    pw, ph = w - left - right, h - top - bottom
    t_max = max(r["t_s"] for r in rows) or 1
    rss = [r["rss_kib"] / 1024 for r in rows]
    fds = [r["fds"] for r in rows]
    r_lo, r_hi = min(rss), max(rss)
    pad = max(1.0, (r_hi - r_lo) * 0.2)
    r_lo, r_hi = max(0.0, r_lo - pad), r_hi + pad
    f_hi = max(fds) * 1.25 or 1

    def x(t: float) -> float:
        return left + t / t_max * pw

    def y_rss(v: float) -> float:
        return top + ph - (v - r_lo) / (r_hi - r_lo) * ph

    def y_fd(v: float) -> float:
        return top + ph - v / f_hi * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">{title}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>',
        f'<rect x="{left}" y="{top}" width="{x(settle_s) - left:.1f}" height="{ph}" fill="#eee"/>',
        f'<text x="{left + 4}" y="{top + 14}" fill="#777">settling</text>',
    ]
    for i in range(5):
        v = r_lo + (r_hi - r_lo) * i / 4
        y = y_rss(v)
        out.append(f'<line x1="{left - 4}" y1="{y:.1f}" x2="{left}" y2="{y:.1f}" stroke="#333"/>')
        out.append(f'<text x="{left - 7}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}</text>')
        fv = f_hi * i / 4
        out.append(f'<text x="{left + pw + 7}" y="{y_fd(fv) + 4:.1f}" fill="#d95f02">{fv:.0f}</text>')
    minutes = t_max / 60
    step = max(1, round(minutes / 10))
    for m in range(0, int(minutes) + 1, step):
        xx = x(m * 60)
        out.append(f'<line x1="{xx:.1f}" y1="{top + ph}" x2="{xx:.1f}" y2="{top + ph + 4}" stroke="#333"/>')
        out.append(f'<text x="{xx:.1f}" y="{top + ph + 17}" text-anchor="middle">{m}</text>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">minutes</text>')
    out.append(
        f'<text x="16" y="{top + ph / 2}" transform="rotate(-90 16 {top + ph / 2})" text-anchor="middle" '
        'fill="#2b7bb9">RSS (MiB)</text>'
    )
    out.append(
        f'<text x="{w - 14}" y="{top + ph / 2}" transform="rotate(90 {w - 14} {top + ph / 2})" '
        'text-anchor="middle" fill="#d95f02">open file descriptors</text>'
    )
    fd_points = " ".join(f"{x(r['t_s']):.1f},{y_fd(r['fds']):.1f}" for r in rows)
    out.append(f'<polyline points="{fd_points}" fill="none" stroke="#d95f02" stroke-width="1.5"/>')
    rss_points = " ".join(f"{x(r['t_s']):.1f},{y_rss(v):.1f}" for r, v in zip(rows, rss))
    out.append(f'<polyline points="{rss_points}" fill="none" stroke="#2b7bb9" stroke-width="2"/>')
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def summarize(args, rows: list[dict], perf: load.Perf, churn: load.Churn, rate: int, capacity: float | None) -> list[str]:
    settle_s = args.settle * 60
    after = [r for r in rows if r["t_s"] >= settle_s]
    if not after:
        return ["Too short to say anything after the settling time."]
    base = after[0]
    rss = [r["rss_kib"] for r in after]
    moved = (max(rss) - min(rss)) / base["rss_kib"] * 100
    drift = (after[-1]["rss_kib"] - base["rss_kib"]) / base["rss_kib"] * 100
    lines = [
        f"- Steady load: {rate:,} QPS"
        + (f" (half of {capacity:,.0f} QPS, the max measured under churn at the start)" if capacity else "")
        + f"; dnsperf answered {perf.completed:,} of {perf.sent:,} queries ({perf.qps:,.0f} QPS), "
        f"**{perf.lost:,} lost**; response codes "
        + ", ".join(f"{c} {n:,}" for c, n in perf.rcodes.items())
        + " (NXDOMAIN is a tenth of the query mix by design).",
        f"- Churn: {churn.changes:,} endpoint address changes in {churn.rewrites:,} batches "
        f"(~{churn.changes / max(1e-9, rows[-1]['t_s']):,.0f}/s over the run); a changed name answered its new "
        f"address p50 {load.percentile(sorted(churn.visible), 50) * 1e3:.0f} ms, max "
        f"{(max(churn.visible) if churn.visible else float('nan')) * 1e3:.0f} ms after the API server applied it "
        f"({churn.unseen} batches not seen).",
        f"- RSS after the first {args.settle:g} minutes: {base['rss_kib'] / 1024:.1f} MiB at {base['t_s'] / 60:.1f} min, "
        f"min {min(rss) / 1024:.1f}, max {max(rss) / 1024:.1f}, last {after[-1]['rss_kib'] / 1024:.1f} MiB: "
        f"**moved {moved:.1f} %** (max - min over the value at {args.settle:g} min; target < 5 %), "
        f"end - start {drift:+.1f} %.",
    ]
    for column in STEADY:
        values = [r[column] for r in after if r[column] is not None]
        if values:
            # A gauge that moves with the churn (the journal, the reverse zone's empty non-terminals)
            # is steady if its last quarter is no higher on average than its first.
            q = max(1, len(values) // 4)
            first, last = sum(values[:q]) / q, sum(values[-q:]) / q
            grew = last > first * 1.05 if first else last > 0
            lines.append(
                f"- {column}: {values[0]:,.0f} at {args.settle:g} min, min {min(values):,.0f}, max {max(values):,.0f}, "
                f"last {values[-1]:,.0f}; mean of the last quarter {last:,.0f} against {first:,.0f} in the first"
                f"{' (**grew**)' if grew else ''}."
            )
    errors = []
    for column in ERRORS:
        first = next((r[column] for r in rows if r[column] is not None), None)
        last = next((r[column] for r in reversed(rows) if r[column] is not None), None)
        if first is not None and last is not None:
            errors.append(f"{column} +{last - first:,.0f}")
    lines.append("- Error counters over the whole run (first sample to last): " + ", ".join(errors) + ".")
    cpu = rows[-1]["cpu_s"] - base["cpu_s"]
    span = rows[-1]["t_s"] - base["t_s"]
    if span > 0:
        lines.append(f"- Server CPU after settling: {cpu / span * 100:.0f} % of one core.")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60, help="length of the soak [60]")
    ap.add_argument("--settle", type=float, default=5, help="minutes excluded from the steadiness figures [5]")
    ap.add_argument("--sample", type=float, default=10, help="seconds between samples [10]")
    ap.add_argument("--rate", type=int, default=0, help="steady QPS (0: half the max measured under churn) [0]")
    load.common_arguments(ap)
    ap.add_argument("--churn-updates", type=int, default=1000, help="endpoint changes per second [1000]")
    ap.add_argument(
        "--api-feed", type=Path, help="the api_feed bench executable (default: cargo bench --bench api_feed --no-run)"
    )
    ap.add_argument("--csv", type=Path, default=Path("soak.csv"), help="samples [soak.csv]")
    ap.add_argument("--svg", type=Path, default=Path("soak.svg"), help="RSS over time [soak.svg]")
    ap.add_argument("--summary", type=Path, default=Path("soak.md"), help="Markdown summary [soak.md]")
    args = ap.parse_args()
    os.sched_setaffinity(0, load.cpu_list(args.client_cpu))
    if args.api_feed:
        load.api_feed_binary = lambda: args.api_feed
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "headless-dns"], cwd=load.REPO, check=True)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="hdns-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    yaml = work / "cluster.yaml"
    load.write_atomic(
        yaml, load.namespaces_yaml(args.services) + "".join(load.service_yaml(i, args.pods) for i in range(args.services))
    )
    queries = work / "queries.txt"
    queries.write_text(load.query_file(args.services, args.pods, args.queries))
    feed = load.ApiFeed(yaml, work, args.client_cpu)
    port, http_port = load.free_port(), load.free_port()
    server = load.headless_server(args.binary, yaml, port, http_port, work, kubeconfig=feed.kubeconfig)
    churn = load.ApiChurn(feed, args.services, args.pods, args.churn_updates, 1.0, port)
    perf_proc = None
    started_at = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    try:
        server.start(args.server_cpu, args.nice)
        first = load.wait_first_answer(server, load.pod_name(args.services - 1, args.pods - 1), 120)
        print(f"== headless-dns (API) answering after {first * 1e3:.0f} ms", flush=True)
        churn.start()
        rate, capacity = args.rate, None
        if not rate:
            out = subprocess.run(
                dnsperf_cmd(args, port, queries, 10, None), capture_output=True, text=True, check=True
            ).stdout
            capacity = load.parse_dnsperf(out, False).qps
            rate = int(capacity / 2) // 1000 * 1000
            print(f"== capacity under churn {capacity:,.0f} QPS: soak at {rate:,} QPS", flush=True)
        seconds = int(args.minutes * 60)
        perf_out = work / "dnsperf.out"
        with open(perf_out, "w") as f:
            perf_proc = subprocess.Popen(dnsperf_cmd(args, port, queries, seconds, rate), stdout=f, stderr=subprocess.STDOUT)
        started = time.monotonic()
        rows = []
        with open(args.csv, "w", newline="") as f:
            writer = None
            next_at = started
            while perf_proc.poll() is None:
                row = sample(server.pid, http_port, started)
                rows.append(row)
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
                f.flush()
                if len(rows) % 6 == 1:
                    print(
                        f"   {row['t_s'] / 60:5.1f} min: RSS {row['rss_kib'] / 1024:.1f} MiB, {row['fds']} fds, "
                        f"{row['index_names']} names, {churn.changes:,} changes",
                        flush=True,
                    )
                next_at += args.sample
                while perf_proc.poll() is None and time.monotonic() < next_at:
                    time.sleep(0.2)
            row = sample(server.pid, http_port, started)
            rows.append(row)
            writer.writerow(row)
        perf = load.parse_dnsperf(perf_out.read_text(), False)
        churn.stop()
        lines = [
            f"Soak of {args.minutes:g} minutes started {started_at}: `python3 benches/load/soak.py "
            + " ".join(sys.argv[1:])
            + "`.",
            "",
            *summarize(args, rows, perf, churn, rate, capacity),
            "",
        ]
        args.summary.write_text("\n".join(lines))
        write_svg(
            args.svg,
            rows,
            args.settle * 60,
            f"headless-dns soak: {args.churn_updates:,} endpoint changes/s, {rate:,} QPS ({started_at})",
        )
        print("\n".join(lines))
        print(f"== wrote {args.csv}, {args.svg}, {args.summary}")
    finally:
        if perf_proc and perf_proc.poll() is None:
            perf_proc.terminate()
            perf_proc.wait()
        if churn.is_alive():
            churn.stop()
        server.stop()
        feed.stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
