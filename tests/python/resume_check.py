#!/usr/bin/python3
"""The example Python client (clients/python/ssm_client.py) survives broken connections: a real
ssm-server behind a loopback TCP proxy that cuts the client's connections mid-stream (mid-message
included, with an RST or a FIN, once with the server noticing only later) must give exactly the
outputs of an uninterrupted stream and of ssm-run offline, every frame once, and report one
resume per cut.

    resume_check.py --bin-dir build/bin --stubs build/clients/python/gen

Also checked: with --no-resume the first cut ends the stream with a clear error and no new
connection; a server that stays unreachable after a cut makes the client give up after
--resume-timeout-s with a clear error; where redis-server is installed, a server killed (-9)
mid-stream and replaced by a new one on the same state store: the client resumes from the last
checkpoint, drops the frames it already holds, and still gets exactly the offline outputs.

Exit codes: 0 passed, 1 a check failed, 77 python3-grpcio or the generated stubs are missing.
"""

import argparse
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

try:
    import numpy as np
except ImportError:
    print("SKIP: python3-numpy not installed (apt-get install python3-numpy)")
    sys.exit(77)
if importlib.util.find_spec("grpc") is None:  # the client's
    print("SKIP: python3-grpcio not installed (apt-get install python3-grpcio)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CLIENT = os.path.join(ROOT, "clients", "python", "ssm_client.py")
MODEL = os.path.join(ROOT, "models", "speech-activity")
SAMPLE = os.path.join(ROOT, "models", "samples", "speech.wav")
# Server-to-client bytes of a connection before its `opened` has surely arrived (the settings,
# GetModelInfo's answer and `opened` are about 1.7 kB); "c2s" cuts wait for them: a stream that
# breaks before its `opened` has no token to resume with.
ARMED_S2C = 2500


class Cut:
    """Closes a connection once `after` bytes have gone `direction` ("s2c": server to client,
    "c2s"), forwarding only up to that byte, so that the cut lands mid-message. The client's
    socket closes with an RST (rst) or a FIN; the server's server_delay_s later. then_refuse:
    the proxy then closes every new connection at once until retarget()."""

    def __init__(self, direction, after, rst=True, server_delay_s=0.0, then_refuse=False):
        self.direction, self.after, self.rst = direction, after, rst
        self.server_delay_s, self.then_refuse = server_delay_s, then_refuse


class CuttingProxy:
    """A loopback TCP proxy to the server. Connection i (in the order accepted) is cut as
    cuts[i] says; later ones pass through, or with refuse=True are closed at once (a server
    that is down)."""

    def __init__(self, target_port, cuts, refuse=False):
        self._target_port, self._cuts, self._refuse = target_port, list(cuts), refuse
        self.refusing = False  # a Cut's then_refuse: until retarget()
        self.connections = 0  # accepted
        self.cuts_made = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def retarget(self, port):
        """Forwards new connections to `port` from now on, and stops refusing them."""
        with self._lock:
            self._target_port, self.refusing = port, False

    def close(self):
        self._stop = True
        self._thread.join()
        self._listener.close()

    def _accept(self):
        while not self._stop:
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            with self._lock:
                index = self.connections
                self.connections += 1
                refusing, target_port = self.refusing, self._target_port
            cut = self._cuts[index] if index < len(self._cuts) else None
            if refusing or (cut is None and self._refuse):
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", target_port))
            except OSError:
                client.close()
                continue
            _Connection(self, client, server, cut)


class _Connection:
    def __init__(self, proxy, client, server, cut):
        self._proxy, self._client, self._server, self._cut = proxy, client, server, cut
        self._lock = threading.Lock()
        self._s2c = 0  # bytes forwarded to the client
        self._c2s_armed = 0  # bytes forwarded to the server once ARMED_S2C had gone the other way
        self._done = False
        threading.Thread(target=self._pump, args=(client, server, "c2s"), daemon=True).start()
        threading.Thread(target=self._pump, args=(server, client, "s2c"), daemon=True).start()

    def _pump(self, source, sink, direction):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:  # a clean end: pass the half-close on
                with self._lock:
                    if not self._done:
                        _shutdown(sink, socket.SHUT_WR)
                return
            with self._lock:
                if self._done:
                    return
                keep = self._room(direction, len(data))
                try:
                    sink.sendall(data[:keep])
                except OSError:
                    return
                if keep < len(data) or self._reached(direction):
                    self._cut_now()
                    return

    def _room(self, direction, n):
        """How many of n bytes going `direction` may pass before the cut; counts them."""
        cut = self._cut
        if direction == "s2c":
            room = cut.after - self._s2c if cut and cut.direction == "s2c" else n
            self._s2c += min(n, max(room, 0))
            return min(n, max(room, 0))
        if not cut or cut.direction != "c2s" or self._s2c < ARMED_S2C:
            return n
        room = min(n, max(cut.after - self._c2s_armed, 0))
        self._c2s_armed += room
        return room

    def _reached(self, direction):
        cut = self._cut
        if not cut or cut.direction != direction:
            return False
        return (self._s2c if direction == "s2c" else self._c2s_armed) >= cut.after

    def _cut_now(self):
        self._done = True
        with self._proxy._lock:
            self._proxy.cuts_made += 1
            self._proxy.refusing = self._proxy.refusing or self._cut.then_refuse
        _close(self._client, self._cut.rst)
        if self._cut.server_delay_s > 0:
            threading.Timer(self._cut.server_delay_s, _close, (self._server, True)).start()
        else:
            _close(self._server, self._cut.rst)


def _shutdown(sock, how):
    try:
        sock.shutdown(how)
    except OSError:
        pass


def _close(sock, rst):
    """Closes sock with an RST (SO_LINGER 0) or a FIN; wakes a thread blocked reading it."""
    if rst:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        _shutdown(sock, socket.SHUT_RD)
    else:
        _shutdown(sock, socket.SHUT_RDWR)
    sock.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis():
    """Starts a throw-away redis-server on a free port; returns (process, port)."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def start_server(bin_dir, *flags):
    """Starts ssm-server on a free port; returns (process, port)."""
    proc = subprocess.Popen(
        [os.path.join(bin_dir, "ssm-server"), "--model", MODEL, "--listen", "127.0.0.1:0",
         "--metrics-listen", "", "--device", "cpu", "--threads", "2", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.match(r"listening on (\S+):(\d+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"ssm-server did not start: first line {line!r}")
    return proc, int(match.group(2))


def client_command(port, stubs, output, *args):
    return ["/usr/bin/python3", CLIENT, "--server", f"127.0.0.1:{port}", "--input", SAMPLE,
            "--output", output, "--stubs", stubs, *args]


def run_client(port, stubs, output, *args):
    """Runs the client to 127.0.0.1:port; returns (exit code, stderr, seconds)."""
    start = time.monotonic()
    result = subprocess.run(client_command(port, stubs, output, *args),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            timeout=60)
    return result.returncode, result.stderr.strip(), time.monotonic() - start


def crash_check(bin_dir, stubs, tmp, expected, check):
    """With a state store: the server is killed (-9) mid-stream and a new one started on the
    same store; the client resumes from the last checkpoint on it, re-sends the chunks since,
    drops the frames it already holds and ends with exactly the offline outputs. Whether the
    last checkpoint lies before the frames the client holds (so that there are duplicates to
    drop) depends on timing: the client keeps to real time, so that the server (which answers a
    lone stream's chunk at once) is not far ahead of it at the crash, and up to three crashes
    are tried, until one has duplicates."""
    redis, redis_port = start_redis()
    store = ["--state-store", f"redis://127.0.0.1:{redis_port}", "--checkpoint-interval", "0.5"]
    try:
        for attempt in range(3):
            duplicates = crash_once(bin_dir, stubs, os.path.join(tmp, f"crash{attempt}.npy"),
                                    store, expected, check)
            if duplicates != 0:  # > 0, or None: a check failed
                break
        check(duplicates is not None and duplicates > 0,
              f"a resume from a checkpoint before the frames held drops the repeated ones "
              f"({duplicates} duplicate frames dropped)")
    finally:
        redis.kill()
        redis.wait()


def crash_once(bin_dir, stubs, output, store, expected, check):
    """One crash (see crash_check); returns the duplicate frames the client dropped, None when
    a check failed."""
    servers = []
    try:
        servers.append(start_server(bin_dir, *store))
        proxy = CuttingProxy(servers[0][1], [Cut("s2c", 8000, then_refuse=True)])
        client = subprocess.Popen(client_command(proxy.port, stubs, output, "--chunk-ms", "20",
                                                 "--realtime"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while proxy.cuts_made == 0 and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        servers[0][0].kill()  # a crash: its parked stream is lost, its checkpoints are not
        servers[0][0].wait()
        servers.append(start_server(bin_dir, *store))
        proxy.retarget(servers[1][1])
        _, err = client.communicate(timeout=60)
        proxy.close()
        err = err.strip()
        print(f"     crash and restart: {err}")
        match = re.search(r"(\d+) resumes .*?(\d+) duplicate frames dropped", err)
        check(client.returncode == 0 and match is not None and proxy.cuts_made == 1,
              "a stream cut as its server crashes completes on a new server")
        if client.returncode != 0 or not match:
            return None
        got = np.load(output)
        check(int(match.group(1)) == 1, f"it resumed once ({match.group(1)} resumes)")
        check(got.shape == expected.shape and np.array_equal(got, expected),
              f"its outputs equal offline processing exactly ({got.shape[0]} frames)")
        return int(match.group(2))
    finally:
        for proc, _ in servers:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin-dir", required=True, help="directory of ssm-server and ssm-run")
    parser.add_argument("--stubs", required=True, help="the client's generated stubs")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.stubs, "ssmserve", "v1", "ssmserve_pb2.py")):
        print(f"SKIP: no generated stubs in {args.stubs} (grpc_python_plugin not installed?)")
        return 77

    failures = []

    def check(ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    tmp = tempfile.mkdtemp(prefix="ssm-resume-check-")
    offline = os.path.join(tmp, "offline.npy")
    subprocess.run([os.path.join(args.bin_dir, "ssm-run"), "--model", MODEL, "--input", SAMPLE,
                    "--output", offline, "--device", "cpu"], check=True,
                   stdout=subprocess.DEVNULL)
    expected = np.load(offline)
    server, port = start_server(args.bin_dir)
    try:
        # An uninterrupted stream: the reference, equal to offline processing (bitwise on cpu).
        plain = os.path.join(tmp, "plain.npy")
        rc, err, _ = run_client(port, args.stubs, plain)
        check(rc == 0 and "0 resumes" in err, f"uninterrupted stream: {err}")
        if rc == 0:
            check(np.array_equal(np.load(plain), expected),
                  f"uninterrupted stream equals ssm-run offline ({expected.shape[0]} frames)")

        # Four cuts: mid-output (RST), mid-chunk with the server noticing 0.3 s later (the
        # resume first finds the old call attached: UNAVAILABLE, retried), mid-output (FIN),
        # mid-chunk (RST). 20 ms chunks: about 440 of them.
        cuts = [Cut("s2c", 4000, rst=True), Cut("c2s", 40000, rst=False, server_delay_s=0.3),
                Cut("s2c", 3500, rst=False), Cut("c2s", 20000, rst=True)]
        proxy = CuttingProxy(port, cuts)
        resumed = os.path.join(tmp, "resumed.npy")
        rc, err, seconds = run_client(proxy.port, args.stubs, resumed, "--chunk-ms", "20")
        proxy.close()
        print(f"     {proxy.connections} connections, {proxy.cuts_made} cuts, {seconds:.1f} s: "
              f"{err}")
        match = re.search(r"(\d+) resumes .*?(\d+) duplicate frames dropped", err)
        check(rc == 0 and match is not None, "the cut stream completes")
        if rc == 0 and match:
            got = np.load(resumed)
            check(proxy.cuts_made >= 3, f"the proxy cut the stream {proxy.cuts_made} times")
            check(int(match.group(1)) == proxy.cuts_made and int(match.group(1)) >= 1,
                  f"one resume per cut ({match.group(1)} resumes)")
            check(got.shape == expected.shape,
                  f"frames contiguous, none lost or repeated ({got.shape[0]} frames)")
            check(got.shape == expected.shape and np.array_equal(got, expected),
                  "the resumed stream's outputs equal offline processing exactly")

        # --no-resume: the first cut ends the stream, clearly, without a new connection.
        proxy = CuttingProxy(port, [Cut("s2c", 5000)])
        rc, err, _ = run_client(proxy.port, args.stubs, os.path.join(tmp, "no.npy"),
                                "--chunk-ms", "20", "--no-resume")
        proxy.close()
        print(f"     --no-resume: {err}")
        check(rc == 1 and "the stream broke" in err and "resuming is off" in err,
              "--no-resume fails at the first cut with a clear error")
        check(proxy.connections == 1, f"--no-resume opens no new connection "
              f"({proxy.connections} in all)")

        # A server that stays unreachable after the cut: the client gives up in time.
        proxy = CuttingProxy(port, [Cut("s2c", 5000)], refuse=True)
        rc, err, seconds = run_client(proxy.port, args.stubs, os.path.join(tmp, "gone.npy"),
                                      "--chunk-ms", "20", "--resume-timeout-s", "1")
        proxy.close()
        print(f"     unreachable after the cut, {seconds:.1f} s: {err}")
        check(rc == 1 and "could not be resumed within 1 s" in err,
              "an unreachable server: the client gives up after --resume-timeout-s")
        check(seconds < 10, f"and in time ({seconds:.1f} s)")
    finally:
        server.kill()
        server.wait()
    if shutil.which("redis-server"):
        crash_check(args.bin_dir, args.stubs, tmp, expected, check)
    else:
        print("skip the crash check: redis-server not installed (apt-get install redis-server)")
    shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
