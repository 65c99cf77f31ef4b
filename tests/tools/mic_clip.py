#!/usr/bin/python3
"""Test helpers for ssm-mic (tests/tools/mic_test.sh).

  mic_clip.py make DIR                   clip16.raw (16 kHz s16le) and edges.json
  mic_clip.py frames-equal MIC STREAM    ssm-mic --jsonl-frames lines == ssm-stream .jsonl
  mic_clip.py segments MIC EDGES TOL_S   ssm-mic's segments match the true edges within TOL_S
  mic_clip.py wav WAV RATE RAW           the recording holds RAW (s16le) at RATE Hz, exactly
  mic_clip.py summary MIC KEY VALUE      the summary line's KEY equals VALUE (as JSON)
"""
import json
import subprocess
import sys
import wave

import numpy as np

RATE = 16000
# Silence before, between and after the two utterances, seconds.
LEAD_S, GAP_S, TAIL_S = 1.0, 1.2, 1.0
PHRASES = ["the quick brown fox jumps over the lazy dog", "please call me back tomorrow morning"]
ENVELOPE_WINDOW_S = 0.010  # RMS window of the clean speech envelope
ENVELOPE_FLOOR_DB = -35.0  # below the loudest window: not speech (as models/speech-activity labels)
MAX_PAUSE_S = 0.25         # longest pause allowed inside a phrase
NOISE_RMS = 0.002          # faint background noise (about -54 dBFS), fixed seed


def read_wav(path):
    with wave.open(path) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            sys.exit(f"{path}: expected mono 16-bit PCM")
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")


def speech(phrase, workdir, index):
    """One utterance from espeak-ng at 16 kHz, trimmed to its envelope: float samples."""
    raw = f"{workdir}/utterance{index}.espeak.wav"
    out = f"{workdir}/utterance{index}.wav"
    subprocess.run(["espeak-ng", "-w", raw, phrase], check=True)
    subprocess.run(["sox", raw, "-r", str(RATE), "-c", "1", "-b", "16", out], check=True)
    rate, s16 = read_wav(out)
    assert rate == RATE, rate
    x = s16.astype(np.float64) / 32768.0
    first, last = active_range(x)
    # Pauses inside a phrase must stay shorter than ssm-mic's --min-silence-ms (300).
    active, n = envelope_active(x[first:last])
    pause = longest_run(~active) * n / RATE
    if pause >= MAX_PAUSE_S:
        sys.exit(f"'{phrase}' has a {pause:.2f} s pause; phrases must pause < {MAX_PAUSE_S} s")
    return x[first:last]


def longest_run(flags):
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def envelope_active(x):
    """Per 10 ms window: True where the RMS is within ENVELOPE_FLOOR_DB of the loudest."""
    n = int(RATE * ENVELOPE_WINDOW_S)
    windows = x[: len(x) // n * n].reshape(-1, n)
    rms = np.sqrt((windows ** 2).mean(axis=1))
    return rms > rms.max() * 10 ** (ENVELOPE_FLOOR_DB / 20), n


def active_range(x):
    active, n = envelope_active(x)
    idx = np.flatnonzero(active)
    return idx[0] * n, (idx[-1] + 1) * n


def make(workdir):
    parts = [speech(p, workdir, i) for i, p in enumerate(PHRASES)]
    silence = lambda s: np.zeros(int(round(s * RATE)))
    clean = np.concatenate([silence(LEAD_S), parts[0], silence(GAP_S), parts[1], silence(TAIL_S)])
    # Each phrase was trimmed to its clean envelope, so the true edges are where it was placed.
    edges, t = [], len(silence(LEAD_S))
    for part in parts:
        edges.append([t / RATE, (t + len(part)) / RATE])
        t += len(part) + len(silence(GAP_S))
    noise = np.random.default_rng(1).normal(0, NOISE_RMS, len(clean))
    s16 = np.clip(np.rint((clean + noise) * 32768), -32768, 32767).astype("<i2")
    s16.tofile(f"{workdir}/clip16.raw")
    json.dump({"duration_s": len(s16) / RATE, "samples": len(s16), "segments": edges},
              open(f"{workdir}/edges.json", "w"))
    print(f"clip {len(s16) / RATE:.3f} s, speech {edges}")


def lines(path, kind=None):
    out = []
    for number, text in enumerate(open(path), 1):
        try:
            line = json.loads(text)
        except json.JSONDecodeError:
            sys.exit(f"{path}:{number}: not JSON: {text[:80]!r}")
        if kind is None or line.get("type") == kind:
            out.append(line)
    return out


def frames_equal(mic_path, stream_path):
    mic = lines(mic_path, "frame")
    stream = lines(stream_path)
    if not mic:
        sys.exit(f"{mic_path}: no frame lines")
    if len(mic) != len(stream):
        sys.exit(f"ssm-mic gave {len(mic)} frames, ssm-stream {len(stream)}")
    for m, s in zip(mic, stream):
        if m["frame"] != s["frame"] or m["outputs"] != s["outputs"]:
            sys.exit(f"frame {s['frame']}: ssm-mic {m['frame']} {m['outputs']}, "
                     f"ssm-stream {s['outputs']}")
    print(f"{len(mic)} frames equal")


def segments(mic_path, edges_path, tolerance_s):
    found = [[s["start_s"], s["end_s"]] for s in lines(mic_path, "segment")]
    truth = json.load(open(edges_path))["segments"]
    print(f"true speech {truth}\nssm-mic     {found}")
    if len(found) != len(truth):
        sys.exit(f"ssm-mic found {len(found)} segments, the clip has {len(truth)}")
    for (fs, fe), (ts, te) in zip(found, truth):
        if abs(fs - ts) > tolerance_s or abs(fe - te) > tolerance_s:
            sys.exit(f"segment {fs:.3f}-{fe:.3f} s is more than {tolerance_s} s off the true "
                     f"{ts:.3f}-{te:.3f} s")


def wav_matches(wav_path, rate, raw_path):
    got_rate, got = read_wav(wav_path)
    want = np.fromfile(raw_path, "<i2")
    if got_rate != rate:
        sys.exit(f"{wav_path}: {got_rate} Hz, expected {rate}")
    if len(got) != len(want):
        sys.exit(f"{wav_path}: {len(got)} samples, expected {len(want)}")
    if not np.array_equal(got, want):
        sys.exit(f"{wav_path}: samples differ from {raw_path} from index "
                 f"{np.flatnonzero(got != want)[0]}")
    print(f"{wav_path}: {len(got)} samples at {rate} Hz, equal to the input")


def summary(mic_path, key, value):
    found = lines(mic_path, "summary")
    if len(found) != 1:
        sys.exit(f"{mic_path}: {len(found)} summary lines, expected 1")
    if found[0].get(key) != json.loads(value):
        sys.exit(f"{mic_path}: summary {key} is {found[0].get(key)!r}, expected {value}")


if __name__ == "__main__":
    commands = {"make": make, "frames-equal": frames_equal, "wav": wav_matches,
                "segments": lambda m, e, t: segments(m, e, float(t)), "summary": summary}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    args = sys.argv[2:]
    if sys.argv[1] == "wav":
        args[1] = int(args[1])
    commands[sys.argv[1]](*args)
