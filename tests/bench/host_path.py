#!/usr/bin/env python3
"""The server's host path per chunk: CPU spent outside the engine's own work.

For each model and each point STREAMSxCHUNK_MS of the grid, two measurements on this machine:
  engine  ssm-bench --streams N --chunk-frames F (no network; all N chunks in one step, as fast
          as it goes): the engine's CPU microseconds per chunk at that batch, every thread.
  server  a fresh ssm-server on loopback (metrics on, as deployed) under ssm-loadgen with N
          real-time streams of CHUNK_MS chunks: the server's CPU (utime + stime of every thread,
          /proc/PID/stat, over the whole load) per answered chunk, and the load generator's own
          CPU per chunk and share of the machine (wait4 rusage).
  in-server engine  what the server itself counts for the engine over the same load, from its
          /metrics: the scheduler threads' CPU inside Engine::Step
          (ssm_engine_cpu_seconds_total) plus the worker pool's threads
          (ssm_worker_pool_cpu_seconds_total, of which ssm_worker_pool_idle_spin_seconds_total
          spinning idle between loops), per answered chunk.
host = server - in-server engine per chunk: gRPC, reactors, scheduler, the hand-off of chunks
and results; everything the process does outside its engine steps. Chunks per second per core
= 1e6 / host. The older figure, server - engine (ssm-bench), is kept beside it as "host vs
bench": it also charges the server for running the engine in smaller real-time steps than one
full batch, and goes wrong where the two run differently (at 500 streams on 2 threads the full
batch costs more per chunk than the server's steps).

Each JSON line also splits the server's CPU and context switches per chunk by thread name
(server_threads: the scheduler's and main threads are "ssm-server", gRPC's callback threads
"nexting_thread"), from /proc/PID/task.

One JSON line per point, then a markdown table (reported with the machine).

  tests/bench/host_path.py --model models/speech-activity --grid 100x100,500x100,500x20,500x500
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def read_stat(path):
    """(name, user + system CPU seconds) from a /proc stat file: a process's or a thread's."""
    with open(path) as f:
        head, fields = f.read().rsplit(")", 1)  # "pid (comm" and what follows
    fields = fields.split()
    return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    return read_stat(f"/proc/{pid}/stat")[1]


ENGINE_SERIES = ("ssm_engine_cpu_seconds_total", "ssm_worker_pool_cpu_seconds_total",
                 "ssm_worker_pool_idle_spin_seconds_total")


def thread_stats(pid):
    """{tid: (name, cpu seconds, context switches)} of every thread of process `pid` now."""
    stats = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name, cpu = read_stat(f"/proc/{pid}/task/{tid}/stat")
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                # voluntary_ctxt_switches and nonvoluntary_ctxt_switches
                switches = sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended meanwhile
        stats[tid] = (name, cpu, switches)
    return stats


def threads_per_chunk(before, after, chunks):
    """CPU us and context switches per chunk by thread name, threads alive at both ends."""
    by_name = {}
    for tid, (name, cpu, switches) in after.items():
        if tid not in before:
            continue
        d = by_name.setdefault(name, {"threads": 0, "cpu_us_per_chunk": 0.0,
                                      "switches_per_chunk": 0.0})
        d["threads"] += 1
        d["cpu_us_per_chunk"] += 1e6 * (cpu - before[tid][1]) / chunks
        d["switches_per_chunk"] += (switches - before[tid][2]) / chunks
    return {name: {k: round(v, 2) for k, v in d.items()}
            for name, d in sorted(by_name.items(), key=lambda kv: -kv[1]["cpu_us_per_chunk"])
            if d["cpu_us_per_chunk"] > 0 or d["switches_per_chunk"] > 0}


def engine_counters(metrics_address):
    """{series: value} of ENGINE_SERIES from the server's /metrics, summed over labels."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    sums = dict.fromkeys(ENGINE_SERIES, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


def frame_rate(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    fe = c.get("frontend", {})
    if fe.get("type", "log_mel") == "log_mel":
        return fe.get("sample_rate", 16000) / fe.get("hop_length", 160)
    return fe.get("frame_rate", 100.0)


def engine_point(args, model, streams, chunk_frames):
    out = subprocess.run(
        [f"{args.bin_dir}/ssm-bench", "--model", model, "--streams", str(streams),
         "--chunk-frames", str(chunk_frames), "--seconds", str(args.engine_seconds), "--json"],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def server_point(args, model, streams, chunk_ms):
    server = subprocess.Popen(
        [f"{args.bin_dir}/ssm-server", "--model", model, "--listen", "127.0.0.1:0",
         "--metrics-listen", "127.0.0.1:0", "--max-streams", str(max(256, streams))] +
        args.server_arg,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = server.stdout.readline().strip().removeprefix("listening on ")
        metrics_address = server.stdout.readline().strip().removeprefix("metrics on ")
        if not address or not metrics_address:
            raise SystemExit("ssm-server did not start")
        counters_before = engine_counters(metrics_address)
        threads_before = thread_stats(server.pid)
        cpu_before = cpu_seconds(server.pid)
        t0 = time.monotonic()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            load = subprocess.Popen(
                [f"{args.bin_dir}/ssm-loadgen", "--server", address, "--streams", str(streams),
                 "--duration", str(args.duration), "--ramp-s", str(args.ramp),
                 "--chunk-ms", str(chunk_ms), "--phases", args.phases,
                 "--streams-per-call", str(args.streams_per_call), "--flush-ms", str(args.flush_ms),
                 "--json"],
                stdout=out, stderr=err, text=True)
            _, status, usage = os.wait4(load.pid, 0)  # the load generator's own CPU
            load.returncode = os.waitstatus_to_exitcode(status)
            elapsed = time.monotonic() - t0
            server_cpu = cpu_seconds(server.pid) - cpu_before
            threads_after = thread_stats(server.pid)
            counters_after = engine_counters(metrics_address)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    if load.returncode != 0:
        raise SystemExit(f"ssm-loadgen failed ({load.returncode}): {stderr.strip()[-2000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    engine = {k: counters_after[k] - counters_before[k] for k in ENGINE_SERIES}
    engine["threads"] = threads_per_chunk(threads_before, threads_after,
                                          max(1, report["chunks_answered"]))
    return report, server_cpu, usage.ru_utime + usage.ru_stime, elapsed, engine


def add_run_arguments(p, duration, engine_seconds):
    """The arguments engine_point and server_point read, on parser `p`."""
    p.add_argument("--bin-dir", default="build/bin")
    p.add_argument("--duration", type=float, default=duration, help="ssm-loadgen --duration")
    p.add_argument("--ramp", type=float, default=3, help="ssm-loadgen --ramp-s")
    p.add_argument("--engine-seconds", type=float, default=engine_seconds,
                   help="ssm-bench --seconds")
    p.add_argument("--phases", choices=("random", "even"), default="random",
                   help="ssm-loadgen --phases: random (as separate clients) or even (streams in "
                        "step, which batches better)")
    p.add_argument("--streams-per-call", type=int, default=1,
                   help="ssm-loadgen --streams-per-call: > 1 carries that many streams on each "
                        "StreamMany call")
    p.add_argument("--flush-ms", type=float, default=10,
                   help="ssm-loadgen --flush-ms (with --streams-per-call > 1)")
    p.add_argument("--server-arg", action="append", default=[],
                   help="one more ssm-server argument, e.g. --server-arg=--threads=1 (repeat)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="model directory (repeat)")
    p.add_argument("--grid", default="100x100,500x100,500x20,500x500",
                   help="points STREAMSxCHUNK_MS, comma separated")
    add_run_arguments(p, duration=15, engine_seconds=5)
    args = p.parse_args()
    points = [tuple(int(v) for v in g.split("x")) for g in args.grid.split(",")]
    cores = os.cpu_count()
    rows = []
    for model in args.model:
        rate = frame_rate(model)
        for streams, chunk_ms in points:
            chunk_frames = max(1, round(chunk_ms * rate / 1000))
            engine = engine_point(args, model, streams, chunk_frames)
            report, server_cpu, loadgen_cpu, elapsed, counted = server_point(
                args, model, streams, chunk_ms)
            chunks = max(1, report["chunks_answered"])
            server_us = 1e6 * server_cpu / chunks
            engine_us = engine["cpu_us_per_chunk"]
            in_server_us = 1e6 * (counted["ssm_engine_cpu_seconds_total"] +
                                  counted["ssm_worker_pool_cpu_seconds_total"]) / chunks
            spin_us = 1e6 * counted["ssm_worker_pool_idle_spin_seconds_total"] / chunks
            host_us = server_us - in_server_us
            row = {
                "model": model, "streams": streams, "chunk_ms": chunk_ms, "phases": args.phases,
                "streams_per_call": args.streams_per_call,
                "streams_held": report["streams_held"], "chunks": report["chunks_answered"],
                "chunks_per_s": round(chunks / elapsed, 1),
                "server_cpu_us_per_chunk": round(server_us, 1),
                "engine_cpu_us_per_chunk": round(engine_us, 1),
                "in_server_engine_cpu_us_per_chunk": round(in_server_us, 1),
                "pool_idle_spin_us_per_chunk": round(spin_us, 1),
                "host_cpu_us_per_chunk": round(host_us, 1),
                "host_vs_bench_cpu_us_per_chunk": round(server_us - engine_us, 1),
                "host_chunks_per_s_per_core": round(1e6 / host_us) if host_us > 0 else None,
                "loadgen_cpu_us_per_chunk": round(1e6 * loadgen_cpu / chunks, 1),
                "loadgen_machine_share": round(loadgen_cpu / (elapsed * cores), 3),
                "server_machine_share": round(server_cpu / (elapsed * cores), 3),
                "latency_ms": report["latency_ms"], "max_lag_ms": report["max_lag_ms"],
                "errors": report["errors"],
                "engine_realtime_streams": round(engine["realtime_streams"], 1),
                # the server's threads by name: where its CPU and its context switches go
                "server_threads": counted["threads"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    calls = ("one Stream call per stream" if args.streams_per_call <= 1 else
             f"{args.streams_per_call} streams per StreamMany call, "
             f"{args.flush_ms:g} ms flush grid")
    print(f"\n{cores} cores; server and ssm-loadgen on the same machine; {args.phases} phases; "
          f"{calls}\n")
    print("| model | streams × chunk | held | server µs/chunk | in-server engine (idle spin) "
          "| host µs/chunk | host chunks/s/core | engine alone (ssm-bench) | host vs bench "
          "| loadgen µs/chunk (share) | p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lat = r["latency_ms"]
        print(f"| {os.path.basename(r['model'].rstrip('/'))} | {r['streams']} × {r['chunk_ms']} ms "
              f"| {r['streams_held']} | {r['server_cpu_us_per_chunk']} "
              f"| {r['in_server_engine_cpu_us_per_chunk']} "
              f"({r['pool_idle_spin_us_per_chunk']}) | {r['host_cpu_us_per_chunk']} "
              f"| {r['host_chunks_per_s_per_core']} | {r['engine_cpu_us_per_chunk']} "
              f"| {r['host_vs_bench_cpu_us_per_chunk']} | {r['loadgen_cpu_us_per_chunk']} "
              f"({100 * r['loadgen_machine_share']:.0f} %) | {lat['p50']:.1f} / {lat['p99']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
