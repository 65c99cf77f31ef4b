#!/usr/bin/env python3
"""The most real-time streams the server holds, as a share of what the engine alone advances.

  engine  ssm-bench --streams B --chunk-frames F: the engine's real-time streams on this machine
          with nothing else running (no network, full batches).
  server  for each N of --streams, a fresh ssm-server on loopback under ssm-loadgen with N
          real-time streams of CHUNK_MS chunks, load generator on the same machine. N is held when
          every stream opened, nothing failed and the chunk latency p99 is under --p99-ms.
ratio = the largest held N / engine real-time streams. With --streams-per-call > 1 (StreamMany
calls) a chunk's p99 counts a whole --flush-ms step on top, the longest it waits to be sent.
Give N in rising order: the search stops
at the first N that is not held.

One JSON line per point, then a summary line.

  tests/bench/held_streams.py --model models/speech-activity --streams 600,700,750,800
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import host_path  # noqa: E402  (the same server and engine runs)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--streams", required=True, help="stream counts to try, rising, comma separated")
    p.add_argument("--chunk-ms", type=int, default=100)
    p.add_argument("--p99-ms", type=float, default=100, help="latency p99 a held load stays under")
    p.add_argument("--engine-streams", type=int, default=1024, help="ssm-bench --streams")
    host_path.add_run_arguments(p, duration=12, engine_seconds=3)
    args = p.parse_args()
    counts = [int(v) for v in args.streams.split(",")]
    if any(n <= 0 for n in counts) or counts != sorted(counts):
        p.error("--streams: positive counts in rising order, e.g. 600,700,800")
    if args.chunk_ms <= 0 or args.p99_ms <= 0:
        p.error("--chunk-ms and --p99-ms must be positive")

    chunk_frames = max(1, round(args.chunk_ms * host_path.frame_rate(args.model) / 1000))
    engine = host_path.engine_point(args, args.model, args.engine_streams, chunk_frames)
    engine_streams = engine["realtime_streams"]
    print(json.dumps({"engine_streams": args.engine_streams, "chunk_frames": chunk_frames,
                      "engine_realtime_streams": round(engine_streams, 1)}), flush=True)
    held = 0
    for n in counts:
        report, server_cpu, loadgen_cpu, _, _ = host_path.server_point(args, args.model, n,
                                                                       args.chunk_ms)
        chunks = max(1, report["chunks_answered"])
        # With StreamMany calls a chunk also waits for its point of the flush grid before it is
        # sent: counted against the bound as a whole grid step.
        wait = args.flush_ms if args.streams_per_call > 1 else 0
        p99 = report["latency_ms"]["p99"] + wait
        ok = report["streams_held"] == n and not report["errors"] and p99 < args.p99_ms
        print(json.dumps({
            "streams": n, "held": ok, "streams_per_call": args.streams_per_call,
            "streams_held": report["streams_held"],
            "latency_ms": report["latency_ms"], "max_lag_ms": report["max_lag_ms"],
            "errors": report["errors"],
            "server_cpu_us_per_chunk": round(1e6 * server_cpu / chunks, 1),
            "loadgen_cpu_us_per_chunk": round(1e6 * loadgen_cpu / chunks, 1)}), flush=True)
        if not ok:
            break
        held = n
    print(json.dumps({"model": args.model, "chunk_ms": args.chunk_ms, "p99_ms": args.p99_ms,
                      "largest_held": held, "engine_realtime_streams": round(engine_streams, 1),
                      "ratio": round(held / engine_streams, 3) if engine_streams > 0 else None,
                      "cores": os.cpu_count()}))


if __name__ == "__main__":
    main()
