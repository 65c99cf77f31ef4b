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

From the shell::

    /usr/bin/python3 clients/python/ssm_client.py --server localhost:50051 \\
        --input models/samples/speech.wav --output out.npy
    /usr/bin/python3 clients/python/ssm_client.py --server localhost:50051 --list

The WAV file must be 16-bit PCM at the model's sample rate (resample with ssm-stream or
`sox in.wav -r 16000 out.wav`); several channels are averaged to mono, as the server's tools do.
Stubs elsewhere: --stubs DIR or the SSM_PY_STUBS environment variable.
"""

import argparse
import os
import sys
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


def connect(address, timeout_s=5.0):
    """Returns a channel to address ("host:port") once connected; ServerError after timeout_s."""
    import grpc  # pylint: disable=import-outside-toplevel
    channel = grpc.insecure_channel(address, options=[
        ("grpc.max_receive_message_length", 64 << 20)])
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        channel.close()
        raise ServerError("UNAVAILABLE", f"cannot reach ssm-server at {address} within "
                          f"{timeout_s:g} s; check that it is running and the address") from None
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


def stream_wav(address, path, model="", chunk_ms=100, realtime=False, timeout_s=5.0,
               stubs_dir=None):
    """Streams the WAV file at path through the Stream rpc; returns float32 (frames, d_out).

    Raises ServerError (with the server's message) on any gRPC error, ValueError for a file
    this example cannot read or whose rate differs from the model's.
    """
    import grpc  # pylint: disable=import-outside-toplevel
    pb, pb_grpc = _load_stubs(stubs_dir)
    samples, rate = read_wav(path)
    channel = connect(address, timeout_s)
    try:
        stub = pb_grpc.SsmStub(channel)
        info = stub.GetModelInfo(pb.GetModelInfoRequest(name=model), timeout=timeout_s)
        if info.frontend != "log_mel":
            raise ValueError(f"model '{info.name}' takes feature frames, not audio")
        if rate != info.sample_rate:
            raise ValueError(f"{path}: {rate} Hz, but model '{info.name}' expects "
                             f"{info.sample_rate} Hz; resample it first")
        # 16-bit samples travel as PCM_S16LE unchanged; averaged channels need float32.
        exact = np.array_equal(np.round(samples * 32768.0) / 32768.0, samples)
        fmt = pb.SAMPLE_FORMAT_PCM_S16LE if exact else pb.SAMPLE_FORMAT_PCM_F32LE
        chunk = max(1, rate * chunk_ms // 1000)

        def requests():
            yield pb.StreamRequest(open=pb.StreamOpen(model=info.name, format=fmt,
                                                      sample_rate=rate, label="ssm_client.py"))
            start = time.monotonic()
            for seq, pos in enumerate(range(0, len(samples), chunk)):
                piece = samples[pos:pos + chunk]
                if realtime:  # send a chunk once it "has been recorded"
                    time.sleep(max(0.0, start + (pos + len(piece)) / rate - time.monotonic()))
                payload = (np.round(piece * 32768.0).astype("<i2").tobytes() if exact
                           else piece.astype("<f4").tobytes())
                yield pb.StreamRequest(chunk=pb.StreamChunk(sequence=seq, payload=payload))

        rows, next_frame = [], 0
        for response in stub.Stream(requests()):
            if not response.HasField("output") or response.output.frames == 0:
                continue
            out = response.output
            if out.first_frame != next_frame:
                raise ServerError("INTERNAL", f"response starts at frame {out.first_frame}, "
                                  f"expected {next_frame}")
            rows.append(np.asarray(out.values, dtype=np.float32).reshape(out.frames, out.d_out))
            next_frame += out.frames
        return np.concatenate(rows) if rows else np.zeros((0, info.d_out), np.float32)
    except grpc.RpcError as e:
        raise ServerError(e.code().name, e.details()) from None
    finally:
        channel.close()


def list_models(address, timeout_s=5.0, stubs_dir=None):
    """Returns the server's ListModelsResponse."""
    import grpc  # pylint: disable=import-outside-toplevel
    pb, pb_grpc = _load_stubs(stubs_dir)
    channel = connect(address, timeout_s)
    try:
        return pb_grpc.SsmStub(channel).ListModels(pb.ListModelsRequest(), timeout=timeout_s)
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
    parser.add_argument("--stubs", help="directory of the generated stubs")
    parser.add_argument("--list", action="store_true", help="list the server's models and exit")
    args = parser.parse_args(argv)
    try:
        if args.list:
            response = list_models(args.server, args.timeout_s, args.stubs)
            for m in response.models:
                mark = " (default)" if m.name == response.default_model else ""
                print(f"{m.name}{mark}: {m.frontend}, d_in {m.d_in}, d_out {m.d_out}, "
                      f"{m.frame_rate:g} frames/s, labels {list(m.labels)}")
            return 0
        if not args.input or not args.output:
            parser.error("--input and --output are required (or --list)")
        if args.chunk_ms <= 0:
            parser.error("--chunk-ms must be positive")
        outputs = stream_wav(args.server, args.input, args.model, args.chunk_ms, args.realtime,
                             args.timeout_s, args.stubs)
        np.save(args.output, outputs)
        print(f"{args.input}: {outputs.shape[0]} frames x {outputs.shape[1]} outputs -> "
              f"{args.output}", file=sys.stderr)
        return 0
    except (ServerError, ValueError, ImportError, OSError, wave.Error) as e:
        print(f"ssm_client.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
