"""Processes on loopback for the deploy tests: the real ssm-server, polling with a deadline, and
children that die with the test (so a killed test leaves nothing behind)."""
import contextlib
import ctypes
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.request

_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(args, **kwargs):
    """Popen that is killed when this test process dies, however it dies."""
    return subprocess.Popen(args, preexec_fn=_die_with_parent, **kwargs)


def stop(proc, timeout_s=10):
    """SIGTERM, then SIGKILL after timeout_s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def free_port():
    """A loopback port that was free a moment ago (for tools that cannot take port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(what, fn, timeout_s, interval_s=0.2):
    """Calls fn until it returns a true value, and returns that; AssertionError naming `what`
    (and fn's last exception) after timeout_s."""
    deadline = time.monotonic() + timeout_s
    last_error = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - reported when the deadline passes
            last_error = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{detail}")
        time.sleep(interval_s)


def http_get(url, timeout_s=5):
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return r.read().decode()


@contextlib.contextmanager
def ssm_server(bin_dir, source_dir, log_path, flags=None, timeout_s=30):
    """Starts build/bin/ssm-server with `flags`, by default models/random-demo on 127.0.0.1
    port 0 with metrics on a port 0 too; yields (grpc "HOST:PORT", metrics "HOST:PORT"). Its
    stderr goes to log_path."""
    if flags is None:
        flags = ["--model", os.path.join(source_dir, "models", "random-demo"), "--listen",
                 "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--drain-timeout", "1"]
    args = [os.path.join(bin_dir, "ssm-server")] + flags
    if not os.access(args[0], os.X_OK):
        raise AssertionError(f"{args[0]} is missing: build first (cmake --build build)")
    with open(log_path, "w") as log:
        proc = spawn(args, stdout=subprocess.PIPE, stderr=log, text=True)
    # stdout is read on a thread so that the wait for the addresses has a deadline.
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout], daemon=True)
    reader.start()
    try:
        # "listening on HOST:PORT" then "metrics on HOST:PORT" (server/main.cc).
        addresses = {}
        deadline = time.monotonic() + timeout_s
        while len(addresses) < 2 and proc.poll() is None:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            for key in ("listening on ", "metrics on "):
                if line.startswith(key):
                    addresses[key] = line[len(key):].strip()
        if len(addresses) < 2:
            stop(proc)
            with open(log_path) as f:
                raise AssertionError("ssm-server did not print its two addresses; its log:\n" +
                                     f.read())
        yield addresses["listening on "], addresses["metrics on "]
    finally:
        stop(proc)
        reader.join(5)  # sees EOF once the server has exited
        proc.stdout.close()


def metric_names(exposition):
    """Sample names in a Prometheus text exposition (histograms: the _bucket/_sum/_count)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


@contextlib.contextmanager
def redis_server(log_path, timeout_s=10, password=None):
    """Starts Debian's redis-server on a free loopback port, in memory only (requiring
    `password` when given); yields its "HOST:PORT". AssertionError when it does not answer
    within timeout_s."""
    port = free_port()
    extra = ["--requirepass", password] if password is not None else []
    with open(log_path, "w") as log:
        proc = spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no"] + extra, stdout=log, stderr=subprocess.STDOUT)
    try:
        def answers():
            if proc.poll() is not None:
                with open(log_path) as f:
                    raise AssertionError(f"redis-server exited ({proc.returncode}):\n{f.read()}")
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                auth = b""
                if password is not None:  # AUTH as a RESP array: the password may hold spaces
                    p = password.encode()
                    auth = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(p), p)
                s.sendall(auth + b"PING\r\n")
                reply = b""
                while reply.count(b"\r\n") < (2 if auth else 1):
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    reply += chunk
                return reply.endswith(b"+PONG\r\n") and not reply.startswith(b"-")
        poll(f"redis-server on port {port} to answer PING", answers, timeout_s)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)
