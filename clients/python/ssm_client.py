#!/usr/bin/python3
"""Example ssmserve client: streams a WAV file to ssm-server and returns the model's outputs.

Needs Debian's python3-grpcio, python3-protobuf and python3-numpy (use /usr/bin/python3), and the
stubs CMake generates from proto/ssmserve/v1/ssmserve.proto (target ssm_python_stubs, built by
default into build/clients/python/gen; protobuf-compiler + protobuf-compiler-grpc).

As a library::

    import sys; sys.path.insert(0, "clients/python")
    import ssm_client
    outputs = ssm_client.stream_wav("localhost:50051", "speech.wav", chunk_ms=100)
    print(outputs.shape)  # (frames, d_out), float32
    # Counters, and no resuming (see ResumeOptions for its timeout, back-off, replay buffer):
    stats = ssm_client.StreamStats()
    outputs = ssm_client.stream_wav("localhost:50051", "speech.wav", stats=stats,
                                    resume=ssm_client.ResumeOptions(enabled=False))

From the shell::

    /usr/bin/python3 clients/python/ssm_client.py --server localhost:50051 \\
        --input models/samples/speech.wav --output out.npy
    /usr/bin/python3 clients/python/ssm_client.py --server localhost:50051 --list

The WAV file must be 16-bit PCM at the model's sample rate (resample with ssm-stream or
`sox in.wav -r 16000 out.wav`); several channels are averaged to mono, as the server's tools do.
Stubs elsewhere: --stubs DIR or the SSM_PY_STUBS environment variable.

A stream survives a broken connection (docs/design.md §7, class ResumingStream): when its call
breaks, the client resumes the stream on a new call with its resume token, re-sends the chunks
the server had not applied and drops the frames it already holds, so the outputs are those of an
unbroken stream, every frame once. It gives up after --resume-timeout-s (default 30);
--no-resume ends the stream at the first break instead. The summary line counts the resumes.

A secured server (docs/design.md §8): --tls (or --tls-ca CA.pem) for TLS, --tls-cert and
--tls-key for mutual TLS, and the API key from $SSM_API_KEY or --api-key-file; as a library,
pass security=ssm_client.Security(ca_file=..., api_key=...).
"""

import argparse
import collections
import dataclasses
import os
import random
import sys
import threading
import time
import wave

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_DEFAULT_STUBS = os.path.join(_HERE, "..", "..", "build", "clients", "python", "gen")


def _load_stubs(stubs_dir=None):
    """Imports the generated modules from stubs_dir, $SSM_PY_STUBS or the default build dir."""
    stubs_dir = stubs_dir or os.environ.get("SSM_PY_STUBS") or _DEFAULT_STUBS
    if not os.path.isfile(os.path.join(stubs_dir, "ssmserve", "v1", "ssmserve_pb2.py")):
        raise ImportError(
            f"no generated stubs in {stubs_dir}; build them with "
            "`cmake --build build --target ssm_python_stubs` or pass --stubs DIR")
    if stubs_dir not in sys.path:
        sys.path.insert(0, stubs_dir)
    # pylint: disable-next=import-outside-toplevel
    from ssmserve.v1 import ssmserve_pb2, ssmserve_pb2_grpc
    return ssmserve_pb2, ssmserve_pb2_grpc


class ServerError(RuntimeError):
    """The server or the connection failed; .code is the gRPC status code name."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Security:
    """How to reach a secured server (docs/design.md §8): TLS with a CA file (None: the system's
    CAs), a client certificate for mutual TLS, and an API key sent as "authorization: Bearer"
    with every call. The defaults are plain text without a key."""

    def __init__(self, tls=False, ca_file=None, cert_file=None, key_file=None, server_name=None,
                 api_key=None):
        self.tls = bool(tls or ca_file or cert_file)
        self.ca_file, self.cert_file, self.key_file = ca_file, cert_file, key_file
        self.server_name, self.api_key = server_name, api_key
        if bool(cert_file) != bool(key_file):
            raise ValueError("--tls-cert and --tls-key go together")

    def metadata(self):
        """The metadata every call sends."""
        return [("authorization", "Bearer " + self.api_key)] if self.api_key else []


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def connect(address, timeout_s=5.0, security=None):
    """Returns a channel to address ("host:port") once connected; ServerError after timeout_s."""
    import grpc  # pylint: disable=import-outside-toplevel
    security = security or Security()
    options = [
        ("grpc.max_receive_message_length", 64 << 20),
        # After a lost connection gRPC waits before each new connection attempt, from 1 s
        # growing to 120 s by default; a stream resuming after a server restart would wait as
        # long, so these are the waits of a resume: 100 ms growing to 2 s.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
        # No transparent retries: a stream resumes by itself (ResumingStream).
        ("grpc.enable_retries", 0)]
    if security.tls:
        if security.server_name:
            options.append(("grpc.ssl_target_name_override", security.server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(security.ca_file) if security.ca_file else None,
            private_key=_read(security.key_file) if security.key_file else None,
            certificate_chain=_read(security.cert_file) if security.cert_file else None)
        channel = grpc.secure_channel(address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(address, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        channel.close()
        hint = ("check the address, --tls-ca (the CA that signed the server's certificate) and, "
                "for a server requiring client certificates, --tls-cert/--tls-key"
                if security.tls else
                "check that it is running and the address (a TLS server needs --tls)")
        raise ServerError("UNAVAILABLE", f"cannot reach ssm-server at {address} within "
                          f"{timeout_s:g} s; {hint}") from None
    return channel


def read_wav(path):
    """Returns (samples as float32 in [-1, 1) (s / 32768), sample rate in Hz) of a 16-bit WAV."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: {8 * w.getsampwidth()}-bit samples; this example reads "
                             "16-bit PCM WAV only (convert with sox, or use ssm-stream)")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        pcm = pcm.reshape(-1, w.getnchannels()).astype(np.float32) / 32768.0
        return pcm.mean(axis=1, dtype=np.float32) if pcm.shape[1] > 1 else pcm[:, 0], \
            w.getframerate()


# How a call ends when it broke and the server parked its stream (or has not let go of it yet,
# or drains): the stream can continue on a new call. Every other code is the server's verdict on
# the stream and ends it (NOT_FOUND: the token is unknown, used or expired; FAILED_PRECONDITION,
# INVALID_ARGUMENT, OUT_OF_RANGE, ...).
RESUMABLE_CODES = frozenset({"UNAVAILABLE", "UNKNOWN", "CANCELLED", "DEADLINE_EXCEEDED"})


@dataclasses.dataclass
class ResumeOptions:
    """When and how a broken stream is resumed (docs/design.md §7)."""

    enabled: bool = True  # False: a broken call ends the stream
    # After a break, how long to keep trying. Attempts that fail with a code of RESUMABLE_CODES
    # (e.g. the server has not noticed yet that the old call broke, or it restarts) are retried,
    # the first at once, then after backoff_s, doubling up to backoff_max_s, each +-25 % jitter.
    timeout_s: float = 30.0
    backoff_s: float = 0.05
    backoff_max_s: float = 2.0
    # The replay buffer: no new chunk is sent while this many are unanswered (0: no bound).
    max_unanswered_chunks: int = 256


@dataclasses.dataclass
class StreamStats:
    """Counters of one stream over all its calls."""

    chunks_sent: int = 0       # chunks taken from the input, each once
    replayed_chunks: int = 0   # chunks sent again from the replay buffer on a resumed call
    frames: int = 0            # output frames handed to the caller, each once
    resumes: int = 0           # broken calls the stream was resumed from
    resume_attempts: int = 0   # calls started to resume it, successful or not
    duplicate_frames: int = 0  # frames a resumed call sent again, dropped by frame index


class _Call:
    """The client's side of one Stream call of a stream."""

    def __init__(self, resume_from_frame=None):
        self.resumes = resume_from_frame is not None  # it continues the stream (resume token)
        self.resume_from_frame = resume_from_frame or 0  # frames the caller held when it started
        self.write_from = None if self.resumes else 0  # first chunk to send: opened.next_sequence
        self.opened = False
        self.ended = False    # the call is over: its request thread stops
        self.expired = False  # the resume timeout cancelled it before its `opened`
        self.rpc = None
        self.timer = None


class ResumingStream:
    """One live stream over as many Stream calls as breaks make necessary (docs/design.md §7).

    `payloads` yields the chunks' payload bytes; it may block (to pace them at real time, say)
    and is consumed on gRPC's request thread. run() returns the outputs as a list of float32
    (frames, d_out) arrays, every frame once and in order, and raises ServerError when the stream
    fails or cannot be resumed.

    When a call breaks, the stream is resumed on a new call with the latest resume token and the
    number of frames held; the server says which chunk it needs next (opened.next_sequence) and
    the client re-sends from there, from its replay buffer. That buffer keeps each chunk until
    the server has answered it, and when the server checkpoints (opened.checkpoint_interval_ms >
    0) until a checkpoint holds it (output.checkpointed_sequence): a server that crashed resumes
    from its last checkpoint, repeats frames the client has, and those are dropped.
    """

    def __init__(self, stub, pb, open_request, payloads, resume=None, stats=None, metadata=()):
        self._stub, self._pb = stub, pb
        self._metadata = list(metadata)  # sent with every call (the API key)
        self._open = open_request  # the StreamOpen of the first call
        self._payloads = iter(payloads)
        self._resume = resume or ResumeOptions()
        self.stats = stats if stats is not None else StreamStats()
        self.opened = None  # the first call's StreamOpened
        self._rows, self._frames = [], 0  # outputs handed to the caller, and their frames
        self._cv = threading.Condition()  # guards what follows; wakes waiting request threads
        self._pull_lock = threading.Lock()  # one request thread at a time takes from payloads
        self._buffer = collections.deque()  # the replay buffer: (sequence, payload)
        self._sent = 0  # chunks taken from payloads
        self._input_ended = False
        self._input_error = None  # what payloads raised: the stream ends with it
        self._answered = 0  # chunks 0 .. _answered - 1 have all their outputs
        self._checkpoints = False  # the server checkpoints the stream
        self._checkpointed = 0  # chunks 0 .. _checkpointed - 1 are in a checkpoint
        self._token = ""  # the latest resume token

    def run(self):
        """Streams until the input has ended and every output has arrived; returns the rows."""
        broken, attempts, deadline = None, 0, None  # of the resume under way
        call = self._start_call(resume=False)
        while True:
            error = self._finish(call)
            if self._input_error is not None:
                raise self._input_error
            if error is None:
                return self._rows
            if not call.resumes and not call.opened:
                raise error  # the stream never opened: there is nothing to resume
            if call.opened:  # a running call broke
                self._check_resumable(error)
                broken, attempts = error, 0
                deadline = time.monotonic() + self._resume.timeout_s
            elif call.expired:
                raise self._give_up(broken, attempts, ServerError(
                    "DEADLINE_EXCEEDED", "the server did not answer the last attempt"))
            elif error.code not in RESUMABLE_CODES:
                raise ServerError(error.code, f"the stream broke ({broken}) and resuming it "
                                  f"failed: {error.message}")
            else:  # the attempt is retried after the back-off
                backoff = min(self._resume.backoff_max_s,
                              self._resume.backoff_s * 2 ** min(attempts - 1, 30))
                time.sleep(max(0.0, min(backoff * random.uniform(0.75, 1.25),
                                        deadline - time.monotonic())))
                if time.monotonic() >= deadline:
                    raise self._give_up(broken, attempts, error)
            attempts += 1
            self.stats.resume_attempts += 1
            call = self._start_call(resume=True, deadline=deadline)

    def _check_resumable(self, error):
        """Raises the error a running call broke with unless the stream can be resumed."""
        if error.code not in RESUMABLE_CODES:
            raise error
        if not self._resume.enabled:
            raise ServerError(error.code, f"the stream broke ({error.message}); resuming is off")
        if not self._token:
            raise ServerError(error.code, f"{error.message} (the stream cannot be resumed: the "
                              "server gave no resume token, it keeps no broken streams)")

    def _give_up(self, broken, attempts, last):
        return ServerError(last.code, f"the stream broke ({broken}) and could not be resumed "
                           f"within {self._resume.timeout_s:g} s ({attempts} attempt"
                           f"{'' if attempts == 1 else 's'}); last error: {last}")

    def _start_call(self, resume, deadline=None):
        """Starts a call: the stream's first, or one that resumes it."""
        open_request = self._pb.StreamOpen()
        open_request.CopyFrom(self._open)
        with self._cv:
            call = _Call(self._frames if resume else None)
            if resume:
                open_request.resume_token = self._token
                open_request.resume_from_frame = self._frames
        call.rpc = self._stub.Stream(self._requests(call, open_request),
                                     metadata=self._metadata)
        if deadline is not None:  # an attempt the server never answers ends at the deadline
            call.timer = threading.Timer(max(0.0, deadline - time.monotonic()),
                                         self._expire, (call,))
            call.timer.daemon = True
            call.timer.start()
        return call

    def _expire(self, call):
        with self._cv:
            if call.opened or call.ended:
                return
            call.expired = True
        call.rpc.cancel()

    def _finish(self, call):
        """Reads the call's responses until it ends; None when it ended cleanly, else the
        ServerError it ended with. Raises ServerError for a response the stream cannot take."""
        import grpc  # pylint: disable=import-outside-toplevel
        try:
            for response in call.rpc:
                if response.HasField("opened"):
                    self._on_opened(call, response.opened)
                elif response.HasField("output"):
                    self._on_output(call, response.output)
            if not call.opened:
                return ServerError("INTERNAL", "the server ended the call without opening it")
            return None
        except grpc.RpcError as e:
            # A draining server that saved the stream names its token in the trailing metadata.
            token = dict(e.trailing_metadata() or ()).get("ssm-resume-token")
            with self._cv:
                self._token = token or self._token
            return ServerError(e.code().name, e.details())
        except ServerError:
            call.rpc.cancel()
            raise
        finally:
            if call.timer:
                call.timer.cancel()
            with self._cv:
                call.ended = True
                self._cv.notify_all()

    def _on_opened(self, call, opened):
        with self._cv:
            call.opened = True
            self._token = opened.resume_token
            self._checkpoints = opened.checkpoint_interval_ms > 0
            if not call.resumes:
                self.opened = opened
                return
            # The server applied chunks 0 .. n-1 (a checkpoint's, after a crash: maybe fewer
            # than it answered) and re-sends the frames from resume_from_frame it holds.
            n = opened.next_sequence
            oldest = self._buffer[0][0] if self._buffer else self._sent
            if not opened.resumed:
                raise ServerError("FAILED_PRECONDITION", "the server opened a new stream "
                                  "instead of resuming this one")
            if n > self._sent:
                raise ServerError("DATA_LOSS", f"the server resumed the stream at chunk {n}, "
                                  f"but only {self._sent} chunks were sent")
            if n < oldest:
                raise ServerError("DATA_LOSS", f"the server resumed the stream at chunk {n}, "
                                  f"but the replay buffer holds chunks {oldest} to "
                                  f"{self._sent - 1} only; the stream cannot continue")
            self._answered = max(self._answered, n)
            call.write_from = n
            self.stats.resumes += 1
            self._cv.notify_all()

    def _on_output(self, call, out):
        with self._cv:
            self._answered = max(self._answered, min(out.sequence + 1, self._sent))
            if self._checkpoints:
                self._checkpointed = max(self._checkpointed, out.checkpointed_sequence)
            self._trim()
            self._cv.notify_all()
        if out.frames <= 0:
            return
        if len(out.values) != out.frames * out.d_out:
            raise ServerError("INTERNAL", f"response for chunk {out.sequence} holds "
                              f"{len(out.values)} values, not {out.frames} x {out.d_out}")
        rows = np.asarray(out.values, dtype=np.float32).reshape(out.frames, out.d_out)
        first = out.first_frame
        if call.resumes and first < call.resume_from_frame:  # frames the caller has already
            duplicates = min(out.frames, call.resume_from_frame - first)
            rows, first = rows[duplicates:], first + duplicates
            self.stats.duplicate_frames += duplicates
            if len(rows) == 0:
                return
        if first != self._frames:
            raise ServerError("INTERNAL", f"response for chunk {out.sequence} starts at frame "
                              f"{first}, expected {self._frames} (frames "
                              f"{'skipped' if first > self._frames else 'repeated'})")
        self._rows.append(rows)
        self._frames += len(rows)
        self.stats.frames = self._frames

    def _trim(self):
        """Drops from the replay buffer the chunks no resume can ask for again."""
        keep_from = self._answered
        if self._checkpoints:  # a crash resumes from the last checkpoint
            keep_from = min(keep_from, self._checkpointed)
        while self._buffer and self._buffer[0][0] < keep_from:
            self._buffer.popleft()

    def _requests(self, call, open_request):
        """The requests of one call: `open`, then the chunks from call.write_from on, until the
        input ends (the half-close) or the call is over."""
        yield self._pb.StreamRequest(open=open_request)
        with self._cv:  # a resumed call starts where its `opened` says
            self._cv.wait_for(lambda: call.ended or call.write_from is not None)
            sequence = call.write_from
        while True:
            payload = self._chunk(call, sequence)
            if payload is None:
                return
            yield self._pb.StreamRequest(chunk=self._pb.StreamChunk(sequence=sequence,
                                                                    payload=payload))
            sequence += 1

    def _chunk(self, call, sequence):
        """The payload of chunk `sequence` for `call`: from the replay buffer if it was taken
        before, else the next one from payloads once few enough chunks are unanswered. None at
        the end of the input or once the call is over."""
        limit = self._resume.max_unanswered_chunks if self._resume.enabled else 0
        while True:
            with self._cv:
                self._cv.wait_for(lambda: call.ended or sequence < self._sent or
                                  self._input_ended or not limit or
                                  self._sent - self._answered < limit)
                if call.ended:
                    return None
                if sequence < self._sent:
                    self.stats.replayed_chunks += 1
                    return self._buffer[sequence - self._buffer[0][0]][1]
                if self._input_ended:
                    return None
            with self._pull_lock:  # without _cv: payloads may block
                with self._cv:
                    if sequence < self._sent:
                        continue  # the request thread of an earlier call took it: buffered
                try:
                    payload = next(self._payloads, None)
                except Exception as e:  # pylint: disable=broad-except
                    payload, self._input_error = None, e  # run() raises it
                with self._cv:
                    if payload is None:
                        self._input_ended = True
                    else:
                        self._sent += 1
                        self.stats.chunks_sent += 1
                        if self._resume.enabled:
                            self._buffer.append((sequence, payload))
                    self._cv.notify_all()
                return payload


def stream_wav(address, path, model="", chunk_ms=100, realtime=False, timeout_s=5.0,
               stubs_dir=None, resume=None, stats=None, security=None):
    """Streams the WAV file at path through the Stream rpc; returns float32 (frames, d_out).

    A broken connection is survived as ResumeOptions `resume` says (default: resume within
    30 s); `stats`, a StreamStats, receives the stream's counters. Raises ServerError (with the
    server's message) when the stream fails or cannot be resumed, ValueError for a file this
    example cannot read or whose rate differs from the model's. `security`: a Security.
    """
    import grpc  # pylint: disable=import-outside-toplevel
    pb, pb_grpc = _load_stubs(stubs_dir)
    samples, rate = read_wav(path)
    security = security or Security()
    channel = connect(address, timeout_s, security)
    try:
        stub = pb_grpc.SsmStub(channel)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(name=model), timeout=timeout_s,
                                 metadata=security.metadata())
        if info.frontend != "log_mel":
            raise ValueError(f"model '{info.name}' takes feature frames, not audio")
        if rate != info.sample_rate:
            raise ValueError(f"{path}: {rate} Hz, but model '{info.name}' expects "
                             f"{info.sample_rate} Hz; resample it first")
        # 16-bit samples travel as PCM_S16LE unchanged; averaged channels need float32.
        exact = np.array_equal(np.round(samples * 32768.0) / 32768.0, samples)
        fmt = pb.SAMPLE_FORMAT_PCM_S16LE if exact else pb.SAMPLE_FORMAT_PCM_F32LE
        chunk = max(1, rate * chunk_ms // 1000)

        def payloads():
            start = time.monotonic()
            for pos in range(0, len(samples), chunk):
                piece = samples[pos:pos + chunk]
                if realtime:  # send a chunk once it "has been recorded"
                    time.sleep(max(0.0, start + (pos + len(piece)) / rate - time.monotonic()))
                yield (np.round(piece * 32768.0).astype("<i2").tobytes() if exact
                       else piece.astype("<f4").tobytes())

        open_request = pb.StreamOpen(model=info.name, format=fmt, sample_rate=rate,
                                     label="ssm_client.py")
        rows = ResumingStream(stub, pb, open_request, payloads(), resume, stats,
                              security.metadata()).run()
        return np.concatenate(rows) if rows else np.zeros((0, info.d_out), np.float32)
    except grpc.RpcError as e:
        raise ServerError(e.code().name, e.details()) from None
    finally:
        channel.close()


def list_models(address, timeout_s=5.0, stubs_dir=None, security=None):
    """Returns the server's ListModelsResponse."""
    import grpc  # pylint: disable=import-outside-toplevel
    pb, pb_grpc = _load_stubs(stubs_dir)
    security = security or Security()
    channel = connect(address, timeout_s, security)
    try:
        return pb_grpc.SsmStub(channel).ListModels(pb.ListModelsRequest(), timeout=timeout_s,
                                                   metadata=security.metadata())
    except grpc.RpcError as e:
        raise ServerError(e.code().name, e.details()) from None
    finally:
        channel.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Streams a 16-bit WAV file to ssm-server and "
                                     "writes the outputs as a float32 (frames, d_out) .npy.")
    parser.add_argument("--server", required=True, help="server address HOST:PORT")
    parser.add_argument("--model", default="", help="model name (default: the server's default)")
    parser.add_argument("--input", help="16-bit PCM WAV at the model's sample rate")
    parser.add_argument("--output", help="output .npy")
    parser.add_argument("--chunk-ms", type=int, default=100, help="chunk length, ms (default 100)")
    parser.add_argument("--realtime", action="store_true", help="pace chunks at real time")
    parser.add_argument("--timeout-s", type=float, default=5.0,
                        help="connect and query deadline, seconds (default 5)")
    parser.add_argument("--resume-timeout-s", type=float, default=30.0,
                        help="after a broken connection, how long to try to resume the stream, "
                        "seconds (default 30)")
    parser.add_argument("--no-resume", action="store_true",
                        help="end the stream when its connection breaks instead of resuming it")
    parser.add_argument("--stubs", help="directory of the generated stubs")
    parser.add_argument("--list", action="store_true", help="list the server's models and exit")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, trusting the system's CAs (implied by --tls-ca "
                        "and --tls-cert)")
    parser.add_argument("--tls-ca", help="PEM CA certificates the server's certificate must "
                        "chain to")
    parser.add_argument("--tls-cert", help="PEM client certificate (a server requiring one)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--tls-server-name",
                        help="name to check the server's certificate against")
    parser.add_argument("--api-key-file",
                        help="file holding the API key (default: $SSM_API_KEY, if set)")
    args = parser.parse_args(argv)
    try:
        api_key = os.environ.get("SSM_API_KEY") or None
        if args.api_key_file:
            api_key = _read(args.api_key_file).decode().strip()
            if not api_key:
                parser.error(f"--api-key-file {args.api_key_file}: no key in it")
        security = Security(args.tls, args.tls_ca, args.tls_cert, args.tls_key,
                            args.tls_server_name, api_key)
        if args.list:
            response = list_models(args.server, args.timeout_s, args.stubs, security)
            for m in response.models:
                mark = " (default)" if m.name == response.default_model else ""
                print(f"{m.name}{mark}: {m.frontend}, d_in {m.d_in}, d_out {m.d_out}, "
                      f"{m.frame_rate:g} frames/s, labels {list(m.labels)}")
            return 0
        if not args.input or not args.output:
            parser.error("--input and --output are required (or --list)")
        if args.chunk_ms <= 0:
            parser.error("--chunk-ms must be positive")
        if args.resume_timeout_s <= 0:
            parser.error("--resume-timeout-s must be positive (--no-resume turns resuming off)")
        stats = StreamStats()
        outputs = stream_wav(args.server, args.input, args.model, args.chunk_ms, args.realtime,
                             args.timeout_s, args.stubs,
                             ResumeOptions(enabled=not args.no_resume,
                                           timeout_s=args.resume_timeout_s), stats, security)
        np.save(args.output, outputs)
        print(f"{args.input}: {outputs.shape[0]} frames x {outputs.shape[1]} outputs -> "
              f"{args.output}; {stats.resumes} resumes ({stats.resume_attempts} attempts), "
              f"{stats.duplicate_frames} duplicate frames dropped, {stats.replayed_chunks} "
              "chunks re-sent", file=sys.stderr)
        return 0
    except (ServerError, ValueError, ImportError, OSError, wave.Error) as e:
        print(f"ssm_client.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
