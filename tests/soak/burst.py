#!/usr/bin/python3
"""After a burst the server has fallen behind on, its memory goes back to the system.

    burst.py --bin-dir build/bin [--streams 600] [--burst-s 20]

Starts ssm-server (cpu, the speech-activity model), measures its RSS after 10 s of light load
(20 streams), then runs --streams real-time streams for --burst-s: more than the machine keeps
up with, so chunks queue and the heap grows. Then, with no load for 25 s (two of the server's
10 s trim periods and some), at least 75 % of what the burst added must be resident no more.
Before the server trimmed its heap, the freed pages stayed: 413 MB resident after a burst that
ended at 83 MB once trimmed. Exit codes: 0 passed, 1 failed, 77 skipped (the burst did not grow
the RSS by 40 MB: this machine kept up with it, so there was nothing to give back).
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = os.path.join(HERE, "..", "..", "models", "speech-activity")


def rss(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) * 1024


def load(bin_dir, address, streams, seconds):
    subprocess.run([os.path.join(bin_dir, "ssm-loadgen"), "--server", address, "--streams",
                    str(streams), "--duration", str(seconds), "--ramp-s", "2"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True, help="ssm-server and ssm-loadgen")
    parser.add_argument("--streams", type=int, default=600, help="streams of the burst (600)")
    parser.add_argument("--burst-s", type=float, default=20, help="seconds of burst (20)")
    args = parser.parse_args()
    server = subprocess.Popen(
        [os.path.join(args.bin_dir, "ssm-server"), "--model", MODEL, "--listen", "127.0.0.1:0",
         "--metrics-listen", "", "--device", "cpu", "--max-streams", "2048"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        match = re.match(r"listening on (\S+):(\d+)", server.stdout.readline())
        if not match:
            print("FAIL: ssm-server did not start")
            return 1
        address = f"127.0.0.1:{match.group(2)}"
        load(args.bin_dir, address, 20, 10)
        light = rss(server.pid)
        peak = light
        burst = subprocess.Popen(
            [os.path.join(args.bin_dir, "ssm-loadgen"), "--server", address, "--streams",
             str(args.streams), "--duration", str(args.burst_s), "--ramp-s", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while burst.poll() is None:
            peak = max(peak, rss(server.pid))
            time.sleep(0.2)
        peak = max(peak, rss(server.pid))
        time.sleep(25)
        after = rss(server.pid)
        mb = 2**20
        print(f"RSS: {light / mb:.0f} MB after light load, peak {peak / mb:.0f} MB in the burst, "
              f"{after / mb:.0f} MB 25 s after it")
        if peak - light < 40 * mb:
            print("SKIP: the burst grew the RSS by less than 40 MB (the machine kept up)")
            return 77
        if after - light > 0.25 * (peak - light):
            print("FAIL: less than 75 % of the burst's memory was given back")
            return 1
        print("PASSED")
        return 0
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    sys.exit(main())
