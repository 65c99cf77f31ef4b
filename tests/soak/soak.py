#!/usr/bin/python3
"""Soak: a real ssm-server under a steady mixed load for a configurable time, checked throughout.

    soak.py --bin-dir build/bin --stubs build/clients/python/gen --duration-s 120 --streams 300

What runs at once, against one server (cpu, speech-activity model):
- ssm-loadgen: --streams real-time streams with random disconnects (--chaos-disconnect-s: each
  call is broken at random, the client library resumes it) for --duration-s. One stream in ten
  is a never-broken control; every other stream's outputs must equal its control's, frame by
  frame and bitwise; the first --verify-streams controls are checked bitwise against offline
  processing of exactly what they sent (so every compared stream is too); every frame index is
  checked for gaps and repeats.
- bad-input streams, one every --bad-every-s: a chunk before `open`, an unparseable message, a
  sequence gap, NaN samples, half a sample, an unknown model. Each must end with its own code,
  and the server must keep serving.
- ProcessFile uploads, one every --file-every-s (ssm-batch on the speech sample): each output
  must equal ssm-run's offline output bitwise.
- a sampler of the server's RSS, open file descriptors and threads (/proc) every second.

It passes when: every stream was held and answered; no frame was lost, repeated, or differed
(from its control, from offline processing); every bad input got its code; every upload was
exact; the server is still healthy; and RSS, descriptors and threads are flat: the mean of the
last tenth of the run is within --flat-tolerance (5 %) of the mean of the tenth right after the
warm-up (--warmup-s), and no sample after the warm-up exceeds the warm-up's by more than twice
that (for descriptors and threads, which move in whole units, the tolerance is at least 2). Prints a JSON report (also to --report FILE). Exit codes: 0 passed, 1 failed, 77 skipped
(python3-grpcio or the stubs missing).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

try:
    import numpy as np
    import grpc
except ImportError as e:
    print(f"SKIP: {e} (apt-get install python3-numpy python3-grpcio)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MODEL = os.path.join(ROOT, "models", "speech-activity")
SAMPLE = os.path.join(ROOT, "models", "samples", "speech.wav")


def load_stubs(stubs_dir):
    sys.path.insert(0, stubs_dir)
    # pylint: disable-next=import-outside-toplevel
    from ssmserve.v1 import ssmserve_pb2, ssmserve_pb2_grpc
    return ssmserve_pb2, ssmserve_pb2_grpc


class Sampler:
    """The server process's RSS (bytes), open descriptors and threads, once a second."""

    def __init__(self, pid):
        self.pid, self.samples = pid, []  # (seconds since start, rss, fds, threads)
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(1.0):
            try:
                status = open(f"/proc/{self.pid}/status", encoding="ascii").read()
                rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024
                threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except (OSError, AttributeError):
                return  # the server is gone: the health check reports it
            self.samples.append((time.monotonic() - self._start, rss, fds, threads))

    def stop(self):
        self._stop.set()
        self._thread.join()


def flatness(samples, warmup_s, end_s, tolerance):
    """Per series: the mean of the tenth after the warm-up vs the last tenth, and the peak."""
    span = max(end_s - warmup_s, 1.0)
    early = [s for s in samples if warmup_s <= s[0] < warmup_s + span / 10]
    late = [s for s in samples if end_s - span / 10 <= s[0] <= end_s]
    after = [s for s in samples if warmup_s <= s[0] <= end_s]
    result, ok = {}, bool(early and late)
    for index, name in ((1, "rss_bytes"), (2, "fds"), (3, "threads")):
        if not ok:
            break
        e = statistics.mean(s[index] for s in early)
        l = statistics.mean(s[index] for s in late)
        peak = max(s[index] for s in after)
        change = (l - e) / e if e else 0.0
        # Counts move in whole units (an upload's connection is one descriptor): at least 2.
        slack = tolerance * e if index == 1 else max(tolerance * e, 2)
        flat = abs(l - e) <= slack and peak <= e + 2 * slack
        result[name] = {"after_warmup": round(e, 1), "end": round(l, 1), "peak": peak,
                        "change": round(change, 4), "flat": flat}
        ok = ok and flat
    return ok, result


class BadInputs:
    """Bad-input streams, one every `every_s`, each checked for its own status code."""

    def __init__(self, address, pb, pb_grpc, every_s):
        self.pb, self.every_s = pb, every_s
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.SsmStub(self.channel)
        self.raw = self.channel.stream_stream("/ssmserve.v1.Ssm/Stream",
                                              request_serializer=None,
                                              response_deserializer=None)
        self.sent, self.wrong = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def cases(self):
        pb = self.pb
        f32 = pb.SAMPLE_FORMAT_PCM_F32LE

        def opened(fmt=f32, model=""):
            return pb.StreamRequest(open=pb.StreamOpen(model=model, format=fmt))

        def chunk(seq, payload):
            return pb.StreamRequest(chunk=pb.StreamChunk(sequence=seq, payload=payload))

        samples = struct.pack("<1600f", *([0.01] * 1600))
        return [
            ("chunk before open", [chunk(0, samples)], grpc.StatusCode.FAILED_PRECONDITION),
            ("unparseable message", None, grpc.StatusCode.INVALID_ARGUMENT),
            ("sequence gap", [opened(), chunk(0, samples), chunk(2, samples)],
             grpc.StatusCode.INVALID_ARGUMENT),
            ("NaN samples", [opened(), chunk(0, struct.pack("<4f", 0.0, float("nan"), 0, 0))],
             grpc.StatusCode.INVALID_ARGUMENT),
            ("half a sample", [opened(pb.SAMPLE_FORMAT_PCM_S16LE), chunk(0, b"\x01\x02\x03")],
             grpc.StatusCode.INVALID_ARGUMENT),
            ("unknown model", [opened(model="no-such-model")], grpc.StatusCode.NOT_FOUND),
        ]

    def _one(self, name, requests, code):
        try:
            if requests is None:
                responses = self.raw(iter([b"\xff\xff\xff\xff not a StreamRequest"]), timeout=10)
            else:
                responses = self.stub.Stream(iter(requests), timeout=10)
            for _ in responses:
                pass
            got = grpc.StatusCode.OK
        except grpc.RpcError as e:
            got = e.code()
        self.sent += 1
        if got != code:
            self.wrong.append(f"{name}: {got.name}, expected {code.name}")

    def _run(self):
        cases = self.cases()
        i = 0
        while not self._stop.wait(self.every_s):
            self._one(*cases[i % len(cases)])
            i += 1

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.channel.close()


class Uploads:
    """ProcessFile uploads (ssm-batch), one every `every_s`, each compared with offline."""

    def __init__(self, bin_dir, address, expected, tmp, every_s):
        self.bin_dir, self.address, self.expected = bin_dir, address, expected
        self.tmp, self.every_s = tmp, every_s
        self.done, self.wrong = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        n = 0
        while not self._stop.wait(self.every_s):
            out = os.path.join(self.tmp, f"upload-{n}")
            n += 1
            result = subprocess.run([os.path.join(self.bin_dir, "ssm-batch"), "--server",
                                     self.address, "--output-dir", out, SAMPLE],
                                    capture_output=True, text=True, timeout=120)
            got_path = os.path.join(out, "speech.npy")
            if result.returncode != 0 or not os.path.exists(got_path):
                self.wrong.append(f"upload {n}: exit {result.returncode}: "
                                  f"{result.stderr.strip()[-200:]}")
            elif not np.array_equal(np.load(got_path), self.expected):
                self.wrong.append(f"upload {n}: outputs differ from offline")
            self.done += 1
            shutil.rmtree(out, ignore_errors=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True, help="ssm-server, ssm-loadgen, ssm-batch, "
                        "ssm-run")
    parser.add_argument("--stubs", required=True, help="the generated Python stubs")
    parser.add_argument("--duration-s", type=float, default=120, help="seconds of load (120)")
    parser.add_argument("--streams", type=int, default=300, help="concurrent streams (300)")
    parser.add_argument("--ramp-s", type=float, default=10, help="seconds to open them (10)")
    parser.add_argument("--chaos-disconnect-s", type=float, default=5,
                        help="mean seconds between a stream's broken calls (5)")
    parser.add_argument("--verify-streams", type=int, default=8,
                        help="control streams checked against offline processing (8)")
    parser.add_argument("--bad-every-s", type=float, default=0.5, help="seconds between bad "
                        "inputs (0.5)")
    parser.add_argument("--file-every-s", type=float, default=5, help="seconds between uploads "
                        "(5)")
    parser.add_argument("--warmup-s", type=float, default=None,
                        help="seconds before resources must be flat (default: ramp + 20 %% of "
                        "the rest, at least 20 s)")
    parser.add_argument("--flat-tolerance", type=float, default=0.05, help="(0.05)")
    parser.add_argument("--report", help="also write the JSON report here")
    parser.add_argument("--server-prefix", default="",
                        help="a command that runs ssm-server, e.g. 'heaptrack -o FILE' for a heap "
                        "profile (the resource samples are then of that command's process)")
    args = parser.parse_args()
    if not os.path.isdir(args.stubs):
        print(f"SKIP: no generated stubs in {args.stubs}")
        return 77
    pb, pb_grpc = load_stubs(args.stubs)
    warmup_s = args.warmup_s
    if warmup_s is None:
        warmup_s = max(20.0, args.ramp_s + 0.2 * (args.duration_s - args.ramp_s))
    tmp = tempfile.mkdtemp(prefix="ssm-soak-")
    server = None
    report = {"streams": args.streams, "duration_s": args.duration_s, "warmup_s": warmup_s,
              "chaos_disconnect_s": args.chaos_disconnect_s}
    failures = []
    try:
        offline = os.path.join(tmp, "offline.npy")
        subprocess.run([os.path.join(args.bin_dir, "ssm-run"), "--model", MODEL, "--input",
                        SAMPLE, "--output", offline, "--device", "cpu"], check=True,
                       stdout=subprocess.DEVNULL)
        expected = np.load(offline)
        server = subprocess.Popen(
            shlex.split(args.server_prefix)
            + [os.path.join(args.bin_dir, "ssm-server"), "--model", MODEL, "--listen",
               "127.0.0.1:0", "--metrics-listen", "", "--device", "cpu",
               "--max-streams", str(max(2048, 2 * args.streams))],
            stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "server.log"), "w"),
            text=True, start_new_session=True)  # its own group: a prefix's child stops with it
        match = None
        for line in server.stdout:  # a --server-prefix may print lines of its own first
            match = re.match(r"listening on (\S+):(\d+)", line)
            if match:
                break
        if not match:
            print("FAIL: ssm-server did not start")
            return 1
        address = f"127.0.0.1:{match.group(2)}"
        sampler = Sampler(server.pid)
        bad = BadInputs(address, pb, pb_grpc, args.bad_every_s)
        uploads = Uploads(args.bin_dir, address, expected, tmp, args.file_every_s)
        start = time.monotonic()
        loadgen = subprocess.Popen(
            [os.path.join(args.bin_dir, "ssm-loadgen"), "--server", address, "--streams",
             str(args.streams), "--duration", str(args.duration_s), "--ramp-s",
             str(args.ramp_s), "--chaos-disconnect-s", str(args.chaos_disconnect_s),
             "--verify-offline", MODEL, "--verify-streams", str(args.verify_streams), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        bad.start()
        uploads.start()
        out, err = loadgen.communicate(timeout=args.duration_s + 600)
        load_end_s = min(time.monotonic() - start, args.duration_s)
        bad.stop()
        uploads.stop()
        sampler.stop()
        try:
            load = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            load = {}
            failures.append(f"ssm-loadgen gave no report (exit {loadgen.returncode}): "
                            f"{err.strip()[-300:]}")
        chaos, verified = load.get("chaos", {}), load.get("offline", {})
        report["loadgen"] = load
        if load:
            if load.get("streams_held") != args.streams:
                failures.append(f"{load.get('streams_held')} of {args.streams} streams held "
                                f"(errors {load.get('errors')})")
            if load.get("chunks_answered") != load.get("chunks_sent"):
                failures.append(f"{load.get('chunks_sent', 0) - load.get('chunks_answered', 0)} "
                                "chunks unanswered")
            for key in ("lost_frames", "duplicated_frames", "streams_differing"):
                if chaos.get(key, -1) != 0:
                    failures.append(f"chaos {key}: {chaos.get(key)}")
            if chaos.get("frames_compared", 0) <= 0:
                failures.append("no frame compared with a control")
            if load.get("frame_errors", -1) != 0:
                failures.append(f"frame-index errors: {load.get('frame_errors')}")
            if verified.get("streams_differing", -1) != 0 or verified.get("streams_verified",
                                                                          0) <= 0:
                failures.append(f"offline verification: {verified}")
        report["bad_inputs"] = {"sent": bad.sent, "wrong": bad.wrong}
        if bad.sent == 0 or bad.wrong:
            failures.append(f"bad inputs: {bad.sent} sent, wrong: {bad.wrong[:5]}")
        report["uploads"] = {"done": uploads.done, "wrong": uploads.wrong}
        if uploads.done == 0 or uploads.wrong:
            failures.append(f"uploads: {uploads.done} done, wrong: {uploads.wrong[:5]}")
        flat, resources = flatness(sampler.samples, warmup_s, load_end_s, args.flat_tolerance)
        report["resources"] = resources
        report["resource_samples"] = len(sampler.samples)
        # The trajectory, every 10 s: seconds, RSS MiB, descriptors, threads.
        report["resource_trajectory"] = [
            [round(t), round(rss / 2**20, 1), fds, threads]
            for t, rss, fds, threads in sampler.samples[::10]]
        if not flat:
            failures.append(f"resources not flat: {resources}")
        if server.poll() is not None:
            failures.append(f"ssm-server exited ({server.returncode}) during the soak")
        else:
            with grpc.insecure_channel(address) as channel:
                try:
                    pb_grpc.SsmStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
                except grpc.RpcError as e:
                    failures.append(f"ssm-server does not answer after the soak: {e.code()}")
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
    report["failures"] = failures
    report["passed"] = not failures
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    print("PASSED" if not failures else "FAILED:\n  " + "\n  ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
