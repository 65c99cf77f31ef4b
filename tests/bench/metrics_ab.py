#!/usr/bin/env python3
"""A/B of ssm-server with metrics on and off under ssm-loadgen.

Runs PAIRS pairs of runs, the order alternating (on, off / off, on / ...). Each run starts a
fresh ssm-server (on: --metrics-listen 127.0.0.1:0, with /metrics scraped once a second as an
open dashboard or Prometheus would; off: --metrics-listen ""), runs ssm-loadgen --json against
it, and reads the server's CPU time (utime + stime in /proc/PID/stat) just before and after the
load. Prints one JSON line per run, then medians and ranges: server CPU microseconds per answered
chunk, the per-pair ratio on/off, and the client's latency p50/p99.

  tests/bench/metrics_ab.py --model models/random-demo --streams 200 --duration 20 --pairs 5
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import threading
import urllib.request

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def scrape_every_second(port, stop):
    while not stop.wait(1.0):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            r.read()


def one_run(args, metrics_on):
    server = subprocess.Popen(
        [f"{args.bin_dir}/ssm-server", "--model", args.model, "--listen", "127.0.0.1:0",
         "--threads", str(args.threads), "--max-streams", str(max(256, args.streams)),
         "--metrics-listen", "127.0.0.1:0" if metrics_on else ""],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = server.stdout.readline().strip().removeprefix("listening on ")
        stop = threading.Event()
        scraper = None
        if metrics_on:
            metrics_port = int(server.stdout.readline().strip().rsplit(":", 1)[1])
            scraper = threading.Thread(target=scrape_every_second, args=(metrics_port, stop))
            scraper.start()
        cpu_before = cpu_seconds(server.pid)
        load = subprocess.run(
            [f"{args.bin_dir}/ssm-loadgen", "--server", address, "--streams", str(args.streams),
             "--duration", str(args.duration), "--ramp-s", "1", "--chunk-ms", "100", "--json"],
            capture_output=True, text=True, check=True)
        cpu = cpu_seconds(server.pid) - cpu_before
        stop.set()
        if scraper is not None:
            scraper.join()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    report = json.loads(load.stdout)
    if report["streams_held"] != args.streams or report["errors"]:
        raise SystemExit(f"run failed: {load.stdout}")
    return {
        "metrics": "on" if metrics_on else "off",
        "server_cpu_s": round(cpu, 2),
        "chunks": report["chunks_answered"],
        "cpu_us_per_chunk": round(1e6 * cpu / report["chunks_answered"], 2),
        "p50_ms": report["latency_ms"]["p50"],
        "p99_ms": report["latency_ms"]["p99"],
    }


def summary(values):
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", default="build/bin")
    parser.add_argument("--model", default="models/random-demo")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="ssm-server --threads")
    args = parser.parse_args()

    runs = {"on": [], "off": []}
    ratios = []
    for pair in range(args.pairs):
        order = [True, False] if pair % 2 == 0 else [False, True]
        result = {}
        for metrics_on in order:
            r = one_run(args, metrics_on)
            print(json.dumps(r), flush=True)
            runs[r["metrics"]].append(r)
            result[r["metrics"]] = r
        ratios.append(result["on"]["cpu_us_per_chunk"] / result["off"]["cpu_us_per_chunk"])

    print(f"\n{args.pairs} pairs, {args.streams} streams x {args.duration:g} s, "
          "median (min–max):")
    for name, rs in runs.items():
        cpu = summary([r["cpu_us_per_chunk"] for r in rs])
        print(f"metrics {name:3}: server CPU us/chunk {cpu}"
              f", p50 ms {summary([r['p50_ms'] for r in rs])}"
              f", p99 ms {summary([r['p99_ms'] for r in rs])}")
    print(f"CPU per chunk, on/off per pair: {summary(ratios)}")


if __name__ == "__main__":
    main()
