#!/usr/bin/env python3
"""The server's host path per chunk: CPU spent outside the engine's own work.

For each model and each point STREAMSxCHUNK_MS of the grid, two measurements on this machine:
  engine  ssm-bench --streams N --chunk-frames F (no network; all N chunks in one step, as fast
          as it goes): the engine's CPU microseconds per chunk at that batch, every thread.
  server  a fresh ssm-server on loopback (metrics on, as deployed) under ssm-loadgen with N
          real-time streams of CHUNK_MS chunks: the server's CPU (utime + stime of every thread,
          /proc/PID/stat, over the whole load) per answered chunk, and the load generator's own
          CPU per chunk and share of the machine (wait4 rusage).
host = server - engine per chunk: gRPC, reactors, scheduler, frontend hand-off, and the cost of
running the engine in the smaller real-time batches (waking the worker pool and spinning between
steps) instead of one full batch. Chunks per second per core = 1e6 / host.

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

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


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
        if not address:
            raise SystemExit("ssm-server did not start")
        cpu_before = cpu_seconds(server.pid)
        t0 = time.monotonic()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            load = subprocess.Popen(
                [f"{args.bin_dir}/ssm-loadgen", "--server", address, "--streams", str(streams),
                 "--duration", str(args.duration), "--ramp-s", str(args.ramp),
                 "--chunk-ms", str(chunk_ms), "--json"],
                stdout=out, stderr=err, text=True)
            _, status, usage = os.wait4(load.pid, 0)  # the load generator's own CPU
            load.returncode = os.waitstatus_to_exitcode(status)
            elapsed = time.monotonic() - t0
            server_cpu = cpu_seconds(server.pid) - cpu_before
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    if load.returncode != 0:
        raise SystemExit(f"ssm-loadgen failed ({load.returncode}): {stderr.strip()[-2000:]}")
    report = json.loads(stdout.strip().splitlines()[-1])
    return report, server_cpu, usage.ru_utime + usage.ru_stime, elapsed


def add_run_arguments(p, duration, engine_seconds):
    """The arguments engine_point and server_point read, on parser `p`."""
    p.add_argument("--bin-dir", default="build/bin")
    p.add_argument("--duration", type=float, default=duration, help="ssm-loadgen --duration")
    p.add_argument("--ramp", type=float, default=3, help="ssm-loadgen --ramp-s")
    p.add_argument("--engine-seconds", type=float, default=engine_seconds,
                   help="ssm-bench --seconds")
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
            report, server_cpu, loadgen_cpu, elapsed = server_point(args, model, streams,
                                                                    chunk_ms)
            chunks = max(1, report["chunks_answered"])
            server_us = 1e6 * server_cpu / chunks
            engine_us = engine["cpu_us_per_chunk"]
            host_us = server_us - engine_us
            row = {
                "model": model, "streams": streams, "chunk_ms": chunk_ms,
                "streams_held": report["streams_held"], "chunks": report["chunks_answered"],
                "chunks_per_s": round(chunks / elapsed, 1),
                "server_cpu_us_per_chunk": round(server_us, 1),
                "engine_cpu_us_per_chunk": round(engine_us, 1),
                "host_cpu_us_per_chunk": round(host_us, 1),
                "host_chunks_per_s_per_core": round(1e6 / host_us) if host_us > 0 else None,
                "loadgen_cpu_us_per_chunk": round(1e6 * loadgen_cpu / chunks, 1),
                "loadgen_machine_share": round(loadgen_cpu / (elapsed * cores), 3),
                "server_machine_share": round(server_cpu / (elapsed * cores), 3),
                "latency_ms": report["latency_ms"], "max_lag_ms": report["max_lag_ms"],
                "errors": report["errors"],
                "engine_realtime_streams": round(engine["realtime_streams"], 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{cores} cores; server and ssm-loadgen on the same machine\n")
    print("| model | streams × chunk | held | server µs/chunk | engine µs/chunk | host µs/chunk "
          "| host chunks/s/core | loadgen µs/chunk (share) | p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lat = r["latency_ms"]
        print(f"| {os.path.basename(r['model'].rstrip('/'))} | {r['streams']} × {r['chunk_ms']} ms "
              f"| {r['streams_held']} | {r['server_cpu_us_per_chunk']} "
              f"| {r['engine_cpu_us_per_chunk']} | {r['host_cpu_us_per_chunk']} "
              f"| {r['host_chunks_per_s_per_core']} | {r['loadgen_cpu_us_per_chunk']} "
              f"({100 * r['loadgen_machine_share']:.0f} %) | {lat['p50']:.1f} / {lat['p99']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
