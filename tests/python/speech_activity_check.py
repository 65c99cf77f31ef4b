#!/usr/bin/python3
"""The shipped speech-activity model: the C++ engine (ssm-run, offline and streamed in chunks)
must equal the PyTorch model (ssm_torch, float64) loaded from the committed weights, on held-out
clips generated deterministically by the recipe's data code (espeak-ng voices and backgrounds
never used in training).

    speech_activity_check.py --bin-dir build/bin [--model models/speech-activity]
    speech_activity_check.py --bin-dir build/bin --smoke    # also: the recipe trains, exports

Checks, per clip: same frame count as the frontend formula, max|a - b| / max|b| <= 1e-4 for every
ssm-run mode; on every clip, the frame accuracy of the model is at least 0.93 (so the
committed weights are the trained ones, not random). --smoke additionally runs
`train.py --smoke` into a temporary directory, validates the result with ssm-model and compares
ssm-run with PyTorch on one clip (the recipe cannot rot unnoticed).

Exit codes: 0 passed, 1 a check failed, 77 torch, espeak-ng or sox not installed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError:
    print("SKIP: python3-torch not installed (apt-get install python3-torch)")
    sys.exit(77)
for tool in ("espeak-ng", "sox"):
    if shutil.which(tool) is None:
        print(f"SKIP: {tool} not installed (apt-get install espeak-ng sox)")
        sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
RECIPE = os.path.join(ROOT, "models", "speech-activity")
sys.path.insert(0, HERE)
sys.path.insert(0, RECIPE)
import data  # noqa: E402  (models/speech-activity/data.py)
import ssm_torch  # noqa: E402

REL_TOL = 1e-4
MIN_ACCURACY = 0.93
SEED = 31337
CHUNKS = (1, 777, 4000)
torch.set_num_threads(1)


def clips(tmp):
    """Four held-out 4 s clips: clean speech, speech in held-out brown noise at 5 dB, speech in
    music-like tones at 10 dB, speech in pink noise at 10 dB over a telephone line; and one
    noise-only clip (held-out machine noise)."""
    utts = data.heldout_utterances(6, seed=SEED)
    rng = np.random.default_rng(SEED)
    n = 4 * data.SR
    out = []
    for name, snr, kind, p, channel in (
            ("clean", "clean", "silence", 1.0, "wideband"),
            ("brown 5 dB", 5, "brown", 1.0, "wideband"),
            ("tones 10 dB", 10, "tones", 1.0, "wideband"),
            ("pink 10 dB telephone", 10, "pink", 1.0, "telephone"),
            ("machine only", None, "machine", 0.0, "wideband")):
        pcm, lab, info = data.make_clip(rng, utts, data.SYNTHETIC_NOISES, n, snr_db=snr,
                                        noise_kind=kind, speech_prob=p, augment=False,
                                        channel=channel)
        path = os.path.join(tmp, name.replace(" ", "_") + ".wav")
        data.write_wav(path, pcm)
        out.append((name, path, pcm, lab, info))
    return out


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {' '.join(cmd)}\n{p.stderr.strip()[-2000:]}")
    return p.stdout


def compare_model(bin_dir, model_dir, cases, tmp, chunks, check_accuracy):
    model = ssm_torch.load_model(model_dir, torch.float64)
    fe = model.cfg["frontend"]
    failures = []
    for name, path, pcm, lab, info in cases:
        with torch.no_grad():
            ref = model(ssm_torch.log_mel(pcm.astype(np.float64) / 32768.0, fe)).numpy()
        if ref.shape[0] != ssm_torch.n_frames(pcm.size, fe):
            failures.append(f"{name}: reference frames {ref.shape[0]}")
        for mode, chunk in [("offline", None)] + [("stream", c) for c in chunks]:
            out = os.path.join(tmp, "out.npy")
            cmd = [os.path.join(bin_dir, "ssm-run"), "--model", model_dir, "--input", path,
                   "--output", out, "--mode", mode]
            if chunk:
                cmd += ["--chunk", str(chunk)]
            label = f"{os.path.basename(model_dir)} {name} {mode}" + (f" chunk={chunk}" if chunk
                                                                      else "")
            try:
                run(cmd)
                got = np.load(out)
            except Exception as e:  # noqa: BLE001
                failures.append(f"{label}: {e}")
                print(f"FAIL {label}: {e}")
                continue
            if got.shape != ref.shape:
                ok, msg = False, f"shape {got.shape} != reference {ref.shape}"
            else:
                rel = float(np.abs(got - ref).max()) / max(1e-6, float(np.abs(ref).max()))
                ok, msg = rel <= REL_TOL and np.all(np.isfinite(got)), f"rel_err {rel:.2e}"
            print(f"{'PASS' if ok else 'FAIL'} {label}: {got.shape[0]} frames, {msg}")
            if not ok:
                failures.append(label)
        if check_accuracy:
            acc = float(np.mean((ref[:, 1] >= 0.5) == lab))
            ok = acc >= MIN_ACCURACY
            print(f"{'PASS' if ok else 'FAIL'} {name}: frame accuracy {acc:.3f} "
                  f"(speech frames {lab.mean():.2f}, >= {MIN_ACCURACY} required)")
            if not ok:
                failures.append(f"{name}: frame accuracy {acc:.3f}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--model", default=RECIPE)
    ap.add_argument("--smoke", action="store_true", help="also train and check a smoke model")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ssm_speech_activity_")
    failures = []
    try:
        cases = clips(tmp)
        print(f"{len(cases)} held-out clips: " + ", ".join(c[0] for c in cases))
        failures += compare_model(args.bin_dir, args.model, cases, tmp, CHUNKS, True)
        if args.smoke:
            smoke = os.path.join(tmp, "smoke-model")
            p = subprocess.run(["/usr/bin/python3", os.path.join(RECIPE, "train.py"), "--smoke",
                                "--out", smoke], capture_output=True, text=True, timeout=300)
            print(p.stdout.strip()[-1500:])
            if p.returncode != 0:
                failures.append(f"train.py --smoke exited {p.returncode}: {p.stderr[-2000:]}")
            else:
                v = subprocess.run([os.path.join(args.bin_dir, "ssm-model"), "validate", smoke],
                                   capture_output=True, text=True)
                print(v.stdout.strip())
                if v.returncode != 0:
                    failures.append(f"ssm-model validate: {v.stdout} {v.stderr}")
                else:
                    failures += compare_model(args.bin_dir, smoke, cases[1:2], tmp, (777,), False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"\n{len(failures)} failure(s):")
        for f in failures:
            print(f"  {f}")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
