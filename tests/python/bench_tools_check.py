#!/usr/bin/env python3
"""The host-path benchmark scripts (tests/bench/host_path.py, held_streams.py) run end to end.

A small load (a few streams, about two seconds each) on the real ssm-server, ssm-loadgen and
ssm-bench of --bin-dir with the shipped default model; checks that every point is reported with
consistent figures, that a light load counts as held, and that a load which cannot be held
(p99 limit far below any real latency) stops the search. Speed is not judged here.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "speech-activity")
SHORT = ["--duration", "2", "--ramp", "0.5", "--engine-seconds", "0.5"]


def run(script, args):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "bench", script)] + args,
                         capture_output=True, text=True, timeout=240)
    if out.returncode != 0:
        raise SystemExit(f"{script} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def expect(cond, what):
    if not cond:
        raise SystemExit(f"FAIL: {what}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin-dir", required=True)
    args = p.parse_args()
    bins = ["--bin-dir", args.bin_dir]

    rows = run("host_path.py", bins + ["--model", MODEL, "--grid", "4x100"] + SHORT)
    expect(len(rows) == 1, f"host_path.py: one row for one point, got {len(rows)}")
    r = rows[0]
    expect(r["streams"] == 4 and r["chunk_ms"] == 100, f"host_path.py: the point asked for: {r}")
    expect(r["streams_held"] == 4 and r["chunks"] > 0 and not r["errors"],
           f"host_path.py: 4 streams answered without errors: {r}")
    expect(r["server_cpu_us_per_chunk"] > 0 and r["engine_cpu_us_per_chunk"] > 0,
           f"host_path.py: positive CPU figures: {r}")
    expect(0 < r["in_server_engine_cpu_us_per_chunk"] <= r["server_cpu_us_per_chunk"] + 20,
           f"host_path.py: the engine's CPU the server counts, within the server's: {r}")
    expect(0 <= r["pool_idle_spin_us_per_chunk"] <= r["in_server_engine_cpu_us_per_chunk"] + 1,
           f"host_path.py: the pool's idle spin, within the engine's CPU: {r}")
    expect(abs(r["host_cpu_us_per_chunk"] -
               (r["server_cpu_us_per_chunk"] - r["in_server_engine_cpu_us_per_chunk"])) < 0.2,
           f"host_path.py: host = server - in-server engine: {r}")
    # /proc counts CPU in clock ticks per thread: each thread's figure may be a tick short, and
    # threads that came and went during the run count only in the process's.
    threads = r["server_threads"]
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK") / r["chunks"]
    slack = tick_us * (sum(t["threads"] for t in threads.values()) + 3)
    threads_us = sum(t["cpu_us_per_chunk"] for t in threads.values())
    server_us = r["server_cpu_us_per_chunk"]
    expect(threads and abs(threads_us - server_us) <= 0.1 * server_us + slack,
           f"host_path.py: the threads' CPU adds up to the server's: {r}")
    expect(abs(r["host_vs_bench_cpu_us_per_chunk"] -
               (r["server_cpu_us_per_chunk"] - r["engine_cpu_us_per_chunk"])) < 0.2,
           f"host_path.py: host vs bench = server - engine alone: {r}")

    # A generous p99 limit: other tests may share the machine, and speed is not judged here.
    lines = run("held_streams.py", bins + ["--model", MODEL, "--streams", "2,4", "--p99-ms",
                                           "2000", "--engine-streams", "8"] + SHORT)
    expect(len(lines) == 4, f"held_streams.py: engine, two points, summary; got {lines}")
    engine, points, summary = lines[0], lines[1:3], lines[3]
    expect(engine["engine_realtime_streams"] > 0, f"held_streams.py: engine figure: {engine}")
    expect([q["streams"] for q in points] == [2, 4], f"held_streams.py: points: {points}")
    expect(all(q["held"] and q["latency_ms"]["p99"] < 2000 for q in points),
           f"held_streams.py: 2 and 4 streams are held: {points}")
    expect(summary["largest_held"] == 4, f"held_streams.py: largest held: {summary}")
    expect(abs(summary["ratio"] - 4 / summary["engine_realtime_streams"]) < 1e-3,
           f"held_streams.py: ratio = held / engine: {summary}")

    lines = run("held_streams.py", bins + ["--model", MODEL, "--streams", "2,4", "--p99-ms",
                                           "0.001", "--engine-streams", "8"] + SHORT)
    expect(len(lines) == 3 and not lines[1]["held"] and lines[2]["largest_held"] == 0,
           f"held_streams.py: a p99 limit no load meets stops at the first point: {lines}")
    print("bench tools check: OK")


if __name__ == "__main__":
    main()
