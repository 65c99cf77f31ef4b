#!/usr/bin/python3
"""Evaluates the speech-activity model on held-out voices and backgrounds, next to an energy
threshold baseline and Silero VAD, and prints the tables of models/speech-activity/README.md.

    /usr/bin/python3 models/speech-activity/evaluate.py [--model models/speech-activity]
        [--work /tmp/ssm-speech-activity-eval] [--ssm-run build/bin/ssm-run] [--no-silero]

Sets (data.py, deterministic):
  - eval: held-out languages (any variant, most of them held out too), 8 s clips; every
    background (training ones and the held-out brown and machine noise) at SNR 20, 10, 5, 0, -5 dB,
    plus clean speech, plus noise-only and silent clips;
  - tune: training voices and training backgrounds (never the eval voices or held-out noises),
    used only to choose the energy baseline's threshold and the tuned Silero threshold.

Systems: the ssmserve model run by the C++ engine (build/bin/ssm-run, offline; speech when
p(speech) >= 0.5); energy: frame energy in dBFS over the frontend's frame (Hann window) >=
a threshold tuned for frame F1 on the tune set; Silero VAD (eval/silero.js, 512-sample windows;
each 10 ms frame takes the probability of the window that contains the frame's centre sample),
at its recommended threshold 0.5 and at a threshold tuned like the energy baseline.

Metrics: frame accuracy, precision, recall, F1 (speech is the positive class), pooled over all
frames of a set; segment metrics on runs of speech frames after the same post-processing for
every system and the reference (gaps < 300 ms merged, runs < 50 ms dropped): segment F1 where a
detected segment matches a reference segment (one to one) when onset and offset both lie within
200 ms; detection rate (reference segments overlapped by any detected speech); false alarms per
minute (detected segments overlapping no reference segment, per minute of audio).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import data  # noqa: E402

TUNE_SEED = 4242
PER_CELL = 8           # eval clips per (background, SNR) cell
N_TUNE = 160           # tune clips
GAP_MERGE = 30         # frames (300 ms)
MIN_SEG = 5            # frames (50 ms)
TOL = 20               # frames (200 ms) onset/offset tolerance


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Sets
# ----------------------------------------------------------------------------------------------

def build_sets(work):
    """Writes (once) work/eval and work/tune; returns their indexes."""
    out = {}
    for name in ("eval", "tune"):
        d = os.path.join(work, name)
        idx_path = os.path.join(d, "index.json")
        if os.path.exists(idx_path):
            with open(idx_path) as f:
                out[name] = json.load(f)
            continue
        if name == "eval":
            utts = data.heldout_utterances(300)
            clips = data.eval_clips(PER_CELL, utts)
        else:
            sp = data.split_voices()
            specs = data.speech_specs(200, TUNE_SEED, sp["train_languages"], sp["train_variants"])
            utts = data.synthesize_all(specs)
            rng = np.random.default_rng(TUNE_SEED)
            n = int(data.EVAL_SECONDS * data.SR)
            clips = ((f"clip{i:04d}",) + data.make_clip(rng, utts, data.TRAIN_NOISES, n)
                     for i in range(N_TUNE))
        out[name] = data.save_set(d, clips)
        log(f"wrote {len(out[name])} {name} clips to {d}")
    return out


def load_labels(d, index):
    return [np.load(os.path.join(d, c["name"] + ".labels.npy")) for c in index]


# ----------------------------------------------------------------------------------------------
# Systems
# ----------------------------------------------------------------------------------------------

def run_model(ssm_run, model, d, index):
    """p(speech) per frame from the C++ engine (offline mode)."""
    probs = []
    out = os.path.join(d, "_out.npy")
    for c in index:
        subprocess.run([ssm_run, "--model", model, "--input", os.path.join(d, c["name"] + ".wav"),
                        "--output", out, "--threads", "1"], check=True, capture_output=True)
        probs.append(np.load(out)[:, 1].astype(np.float64))
    os.remove(out)
    return probs


def energy_db(d, index):
    """Frame energy (dBFS, Hann window over the frontend's frame span) per frame."""
    out = []
    for c in index:
        x = data.pcm_to_float(data.read_wav(os.path.join(d, c["name"] + ".wav")))
        e = data.frame_energy(x) / np.sum(data._HANN ** 2)
        out.append(10 * np.log10(e + 1e-12))
    return out


def run_silero(d, index, window=512):
    """Silero's window probabilities mapped to the 10 ms frames: frame t (samples
    [160t, 160t + 400)) takes the window containing its centre sample 160t + 200."""
    lst = os.path.join(d, "_silero_list.txt")
    res = os.path.join(d, f"_silero_{window}.json")
    paths = [os.path.join(d, c["name"] + ".wav") for c in index]
    with open(lst, "w") as f:
        f.write("\n".join(paths) + "\n")
    subprocess.run(["node", os.path.join(HERE, "eval", "silero.js"), lst, res, "--window",
                    str(window)], check=True, cwd=os.path.join(HERE, "eval"), stdout=sys.stderr)
    with open(res) as f:
        probs = json.load(f)["probs"]
    out = []
    for p in paths:
        w = np.asarray(probs[p], dtype=np.float64)
        n = data.read_wav(p).size
        T = data.ssm_torch.n_frames(n, data.FRONTEND)
        centre = np.arange(T) * data.HOP + data.WIN // 2
        out.append(w[np.minimum(centre // window, w.size - 1)])
    return out


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------

def frame_counts(pred, ref):
    tp = int(np.sum(pred & ref))
    fp = int(np.sum(pred & ~ref))
    fn = int(np.sum(~pred & ref))
    tn = int(np.sum(~pred & ~ref))
    return np.array([tp, fp, fn, tn])


def prf(c):
    tp, fp, fn, tn = c
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"acc": (tp + tn) / max(1, c.sum()), "p": p, "r": r, "f1": f}


def segments(mask):
    """Runs of True after merging gaps < GAP_MERGE and dropping runs < MIN_SEG: [(on, off))."""
    m = mask.astype(bool).copy()
    on = np.flatnonzero(m)
    if on.size:
        for a, b in zip(on[:-1], on[1:]):
            if 1 < b - a < GAP_MERGE:
                m[a:b] = True
    segs, t, T = [], 0, m.size
    while t < T:
        if m[t]:
            e = t
            while e < T and m[e]:
                e += 1
            if e - t >= MIN_SEG:
                segs.append((t, e))
            t = e
        else:
            t += 1
    return segs


def segment_counts(pred, ref):
    """[matched, n_hyp, n_ref, detected_refs, false_alarm_segments]."""
    H, R = segments(pred), segments(ref)
    used = set()
    matched = 0
    for (ro, rf) in R:
        for j, (ho, hf) in enumerate(H):
            if j not in used and abs(ho - ro) <= TOL and abs(hf - rf) <= TOL:
                used.add(j)
                matched += 1
                break
    detected = sum(1 for (ro, rf) in R if pred[ro:rf].any())
    fa = sum(1 for (ho, hf) in H if not ref[ho:hf].any())
    return np.array([matched, len(H), len(R), detected, fa])


def seg_metrics(c, minutes):
    m, nh, nr, det, fa = c
    p = m / nh if nh else 1.0
    r = m / nr if nr else 1.0
    return {"seg_f1": 2 * p * r / (p + r) if p + r else 0.0,
            "det": det / nr if nr else 1.0, "fa_min": fa / minutes}


def tune_threshold(scores, labels, grid):
    best = None
    for th in grid:
        c = sum(frame_counts(s >= th, l) for s, l in zip(scores, labels))
        f = prf(c)["f1"]
        if best is None or f > best[1]:
            best = (th, f)
    return best


def evaluate(scores, th, labels, index):
    preds = [s >= th for s in scores]
    res = {}

    def agg(sel):
        fc = sum((frame_counts(preds[i], labels[i]) for i in sel), np.zeros(4, int))
        sc = sum((segment_counts(preds[i], labels[i]) for i in sel), np.zeros(5, int))
        minutes = sum(labels[i].size for i in sel) / 100.0 / 60.0
        return {**prf(fc), **seg_metrics(sc, minutes), "clips": len(sel)}

    speech = [i for i, c in enumerate(index) if c["speech"]]
    res["all"] = agg(speech)
    # the SNR range (clean to 0 dB); -5 dB is an extra stress condition
    res["clean to 0 dB"] = agg([i for i in speech if index[i]["snr"] != -5])
    for snr in data.EVAL_SNRS:
        res[f"snr {snr}"] = agg([i for i in speech if index[i]["snr"] == snr])
    for kind in data.ALL_NOISES:
        res[f"noise {kind}"] = agg([i for i in speech if index[i]["noise"] == kind])
    res["seen noises"] = agg([i for i in speech if index[i]["noise"] in data.TRAIN_NOISES])
    res["held-out noises"] = agg([i for i in speech if index[i]["noise"] in data.HELDOUT_NOISES])
    empty = [i for i, c in enumerate(index) if not c["speech"]]
    fp = sum(int(preds[i].sum()) for i in empty)
    nfr = sum(preds[i].size for i in empty)
    res["no-speech clips"] = {"frame_fp_rate": fp / max(1, nfr),
                              "clips_with_fa": sum(1 for i in empty if len(segments(preds[i]))),
                              "clips": len(empty)}
    return res


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def report(results, index):
    names = list(results)
    lines = []
    lines.append("| system | frame acc | precision | recall | F1 | F1 clean to 0 dB | segment F1 "
                 "| detection | false alarms/min |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for n in names:
        a, b = results[n]["all"], results[n]["clean to 0 dB"]
        lines.append(f"| {n} | {a['acc']:.3f} | {a['p']:.3f} | {a['r']:.3f} | **{a['f1']:.3f}** "
                     f"| **{b['f1']:.3f}** | {a['seg_f1']:.3f} | {a['det']:.3f} "
                     f"| {a['fa_min']:.2f} |")
    lines.append("")
    cols = [f"snr {s}" for s in data.EVAL_SNRS]
    lines.append("Frame F1 by SNR (dB):")
    lines.append("")
    lines.append("| system | " + " | ".join(c[4:] for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{results[n][c]['f1']:.3f}" for c in cols) + " |")
    lines.append("")
    cols = [f"noise {k}" for k in data.ALL_NOISES] + ["seen noises", "held-out noises"]
    lines.append("Frame F1 by background (SNR 20 to -5 dB; brown and machine are held out):")
    lines.append("")
    lines.append("| system | " + " | ".join(c.replace("noise ", "") for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{results[n][c]['f1']:.3f}" for c in cols) + " |")
    lines.append("")
    lines.append("Segment F1 by SNR (dB):")
    lines.append("")
    cols = [f"snr {s}" for s in data.EVAL_SNRS]
    lines.append("| system | " + " | ".join(c[4:] for c in cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{results[n][c]['seg_f1']:.3f}" for c in cols)
                     + " |")
    lines.append("")
    lines.append("Clips without speech (noise only and digital silence):")
    lines.append("")
    lines.append("| system | frames wrongly speech | clips with a false alarm |")
    lines.append("|---|---|---|")
    for n in names:
        e = results[n]["no-speech clips"]
        lines.append(f"| {n} | {e['frame_fp_rate']:.4f} | {e['clips_with_fa']} / {e['clips']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "speech-activity"))
    ap.add_argument("--work", default="/tmp/ssm-speech-activity-eval")
    ap.add_argument("--ssm-run", default=os.path.join(ROOT, "build", "bin", "ssm-run"))
    ap.add_argument("--no-silero", action="store_true")
    ap.add_argument("--json", help="also write all numbers to this file")
    args = ap.parse_args()

    sets = build_sets(args.work)
    ev, tu = os.path.join(args.work, "eval"), os.path.join(args.work, "tune")
    ev_lab, tu_lab = load_labels(ev, sets["eval"]), load_labels(tu, sets["tune"])
    n_sp = sum(1 for c in sets["eval"] if c["speech"])
    log(f"eval: {len(sets['eval'])} clips ({n_sp} with speech, "
        f"{sum(l.size for l in ev_lab) / 6000:.1f} min, "
        f"{np.mean(np.concatenate(ev_lab)):.3f} speech frames); tune: {len(sets['tune'])} clips")

    results, thresholds = {}, {}
    log("ssmserve model (ssm-run)")
    p_model = run_model(args.ssm_run, args.model, ev, sets["eval"])
    results["speech-activity (ssmserve, p >= 0.5)"] = evaluate(p_model, 0.5, ev_lab, sets["eval"])

    log("energy baseline")
    th, f = tune_threshold(energy_db(tu, sets["tune"]), tu_lab, np.arange(-90.0, 0.0, 0.5))
    thresholds["energy_dbfs"] = th
    results[f"energy >= {th:.1f} dBFS (tuned)"] = evaluate(energy_db(ev, sets["eval"]), th,
                                                           ev_lab, sets["eval"])
    if not args.no_silero:
        log("Silero VAD")
        p_sil = run_silero(ev, sets["eval"])
        results["Silero VAD (p >= 0.5)"] = evaluate(p_sil, 0.5, ev_lab, sets["eval"])
        th, f = tune_threshold(run_silero(tu, sets["tune"]), tu_lab, np.arange(0.02, 0.99, 0.02))
        thresholds["silero"] = th
        results[f"Silero VAD (p >= {th:.2f}, tuned)"] = evaluate(p_sil, th, ev_lab, sets["eval"])
    print(report(results, sets["eval"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "thresholds": thresholds}, f, indent=1)


if __name__ == "__main__":
    main()
