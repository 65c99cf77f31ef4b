#!/usr/bin/python3
"""The example Python client (clients/python/ssm_client.py) against a secured ssm-server: TLS
with a CA and server certificate made here with the openssl command, and an API key made with
ssm-keys. With --tls-ca and the key (from SSM_API_KEY, then from --api-key-file) the stream
gives exactly the outputs of ssm-run offline; without the key it fails UNAUTHENTICATED, with a
wrong key too, and without --tls-ca (the server's CA is private) it cannot connect.

    security_check.py --bin-dir build/bin --stubs build/clients/python/gen

Exit codes: 0 passed, 1 a check failed, 77 python3-grpcio, openssl or the stubs are missing.
"""

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("SKIP: python3-numpy not installed (apt-get install python3-numpy)")
    sys.exit(77)
if importlib.util.find_spec("grpc") is None:
    print("SKIP: python3-grpcio not installed (apt-get install python3-grpcio)")
    sys.exit(77)
if shutil.which("openssl") is None:
    print("SKIP: the openssl command is not installed (apt-get install openssl)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CLIENT = os.path.join(ROOT, "clients", "python", "ssm_client.py")
MODEL = os.path.join(ROOT, "models", "speech-activity")
SAMPLE = os.path.join(ROOT, "models", "samples", "speech.wav")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_certs(tmp):
    """A CA and a server certificate for localhost and 127.0.0.1, valid for a day."""
    ca_key, ca = os.path.join(tmp, "ca.key"), os.path.join(tmp, "ca.pem")
    key, csr, cert = (os.path.join(tmp, n) for n in ("server.key", "server.csr", "server.pem"))
    ext = os.path.join(tmp, "san.ext")
    with open(ext, "w", encoding="ascii") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=check CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
            key, "-out", csr, "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out",
            cert, "-days", "1", "-extfile", ext)
    return ca, cert, key


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True, help="directory of ssm-server, ssm-run, ssm-keys")
    parser.add_argument("--stubs", required=True, help="directory of the generated stubs")
    args = parser.parse_args()
    if not os.path.isdir(args.stubs):
        print(f"SKIP: no generated stubs in {args.stubs}")
        return 77
    failures = []

    def check(ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    tmp = tempfile.mkdtemp(prefix="ssm-security-check-")
    server = None
    try:
        ca, cert, key = make_certs(tmp)
        made = subprocess.run([os.path.join(args.bin_dir, "ssm-keys"), "new", "py-client",
                               "--models", "speech-activity"], check=True, capture_output=True,
                              text=True).stdout
        secret = re.search(r"^secret: (\S+)$", made, re.M).group(1)
        line = re.search(r"^line: +(.+)$", made, re.M).group(1)
        keys = os.path.join(tmp, "keys")
        with open(keys, "w", encoding="ascii") as f:
            f.write(line + "\n")
        key_file = os.path.join(tmp, "api-key")
        with open(key_file, "w", encoding="ascii") as f:
            f.write(secret + "\n")
        offline = os.path.join(tmp, "offline.npy")
        subprocess.run([os.path.join(args.bin_dir, "ssm-run"), "--model", MODEL, "--input",
                        SAMPLE, "--output", offline, "--device", "cpu"], check=True,
                       stdout=subprocess.DEVNULL)
        expected = np.load(offline)

        server = subprocess.Popen(
            [os.path.join(args.bin_dir, "ssm-server"), "--model", MODEL, "--listen",
             "127.0.0.1:0", "--metrics-listen", "", "--device", "cpu", "--threads", "2",
             "--tls-cert", cert, "--tls-key", key, "--auth-keys", keys],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        match = re.match(r"listening on (\S+):(\d+)", server.stdout.readline())
        if not match:
            print("FAIL ssm-server did not start")
            return 1
        port = int(match.group(2))

        def client(output, env_key, *flags):
            env = dict(os.environ)
            env.pop("SSM_API_KEY", None)
            if env_key:
                env["SSM_API_KEY"] = env_key
            done = subprocess.run(["/usr/bin/python3", CLIENT, "--server", f"127.0.0.1:{port}",
                                   "--input", SAMPLE, "--output", output, "--stubs", args.stubs,
                                   "--timeout-s", "3", *flags],
                                  capture_output=True, text=True, env=env, timeout=60)
            return done.returncode, done.stderr

        for how, env_key, flags in (("SSM_API_KEY", secret, []),
                                    ("--api-key-file", None, ["--api-key-file", key_file])):
            out = os.path.join(tmp, f"out-{how}.npy")
            rc, err = client(out, env_key, "--tls-ca", ca, *flags)
            check(rc == 0, f"TLS stream with the key from {how} succeeds ({err.strip()[-200:]})")
            if rc == 0:
                got = np.load(out)
                check(got.shape == expected.shape and np.array_equal(got, expected),
                      f"its outputs equal ssm-run offline ({expected.shape[0]} frames)")
        rc, err = client(os.path.join(tmp, "x.npy"), None, "--tls-ca", ca)
        check(rc == 1 and "UNAUTHENTICATED" in err and "no API key" in err,
              f"without a key: UNAUTHENTICATED ({err.strip()[-160:]})")
        rc, err = client(os.path.join(tmp, "x.npy"), "ssk_wrong", "--tls-ca", ca)
        check(rc == 1 and "unknown API key" in err, f"a wrong key: refused ({err.strip()[-160:]})")
        rc, err = client(os.path.join(tmp, "x.npy"), secret)
        check(rc == 1 and "UNAVAILABLE" in err and "(a TLS server needs --tls)" in err,
              f"plain text against the TLS port: cannot connect ({err.strip()[-160:]})")
        rc, err = client(os.path.join(tmp, "x.npy"), secret, "--tls")
        check(rc == 1 and "UNAVAILABLE" in err and "--tls-ca" in err,
              f"TLS without the private CA: cannot connect ({err.strip()[-160:]})")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print("FAILED" if failures else "PASSED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
