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
SET_VERSION = 2        # bumped whenever the sets change; part of their directory names
PER_CELL = 3           # eval clips per (voices, channel, background, SNR) cell
N_TUNE = 200           # tune clips
VOICES = ["synthetic", "recorded"]
CHANNELS = ["wideband", "telephone"]
# speech-free clips per channel and background kind (the music and babble false-alarm rows get
# more)
N_EMPTY = {"music": 16, "babble": 8}
N_EMPTY_OTHER = 3
GAP_MERGE = 30         # frames (300 ms)
MIN_SEG = 5            # frames (50 ms)
TOL = 20               # frames (200 ms) onset/offset tolerance


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Sets
# ----------------------------------------------------------------------------------------------

def eval_clips(rec, per_cell):
    """The held-out set: held-out espeak voices ("synthetic") and held-out recorded speakers
    ("recorded"), each wideband and over a telephone line, in every background at every SNR
    (recorded music and babble from held-out tracks and speakers), then speech-free clips."""
    synth = data.heldout_utterances(300)
    utts = {"synthetic": synth, "recorded": rec["phrases"]}
    recorded = {"music": rec["music"], "babble": rec["recordings"] + synth}
    rng = np.random.default_rng(data.EVAL_SEED + 1)
    n = int(data.EVAL_SECONDS * data.SR)
    i = 0
    for voices in VOICES:
        for channel in CHANNELS:
            for snr in data.EVAL_SNRS:
                kinds = ["silence"] if snr == "clean" else data.ALL_NOISES
                for kind in kinds:
                    for _ in range(per_cell * (2 if snr == "clean" else 1)):
                        pcm, lab, info = data.make_clip(
                            rng, utts[voices], data.ALL_NOISES, n, snr_db=snr, noise_kind=kind,
                            augment=False, recorded=recorded, channel=channel)
                        yield f"clip{i:04d}", pcm, lab, dict(info, voices=voices)
                        i += 1
    for channel in CHANNELS:
        for kind in data.ALL_NOISES + ["silence"]:
            for _ in range(N_EMPTY.get(kind, N_EMPTY_OTHER)):
                pcm, lab, info = data.make_clip(
                    rng, synth, data.ALL_NOISES, n, noise_kind=kind, speech_prob=0.0,
                    augment=False, recorded=recorded, channel=channel)
                yield f"clip{i:04d}", pcm, lab, dict(info, voices=None)
                i += 1


def tune_clips(rec):
    """Training voices (espeak and recorded), training backgrounds, either channel."""
    sp = data.split_voices()
    specs = data.speech_specs(200, TUNE_SEED, sp["train_languages"], sp["train_variants"])
    synth = data.synthesize_all(specs)
    utts = synth + rec["phrases"][:200]
    recorded = {"music": rec["music"], "babble": rec["recordings"] + synth}
    rng = np.random.default_rng(TUNE_SEED)
    n = int(data.EVAL_SECONDS * data.SR)
    for i in range(N_TUNE):
        channel = CHANNELS[rng.integers(len(CHANNELS))]
        pcm, lab, info = data.make_clip(rng, utts, data.TRAIN_NOISES, n, augment=False,
                                        recorded=recorded, channel=channel)
        yield f"clip{i:04d}", pcm, lab, info


def build_sets(work, sources_dir):
    """Writes (once) work/eval-vN and work/tune-vN; returns their directories and indexes."""
    out = {}
    rec = None
    for name in ("eval", "tune"):
        d = os.path.join(work, f"{name}-v{SET_VERSION}")
        idx_path = os.path.join(d, "index.json")
        if os.path.exists(idx_path):
            with open(idx_path) as f:
                out[name] = (d, json.load(f))
            continue
        if rec is None:
            rec = data.recorded_sets(300, data.EVAL_SEED, sources_dir)
            if rec is None:
                raise SystemExit("the recorded speech and music are not fetched: run "
                                 "models/speech-activity/sources.py --fetch")
        clips = eval_clips(rec["heldout"], PER_CELL) if name == "eval" else tune_clips(
            rec["train"])
        out[name] = (d, data.save_set(d, clips))
        log(f"wrote {len(out[name][1])} {name} clips to {d}")
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
    """Every row of the report for one system: frame and segment metrics over speech clips by
    channel, voices, SNR and background; false alarms on the speech-free clips by kind."""
    preds = [s >= th for s in scores]
    res = {}

    def agg(sel):
        fc = sum((frame_counts(preds[i], labels[i]) for i in sel), np.zeros(4, int))
        sc = sum((segment_counts(preds[i], labels[i]) for i in sel), np.zeros(5, int))
        minutes = sum(labels[i].size for i in sel) / 100.0 / 60.0
        return {**prf(fc), **seg_metrics(sc, minutes), "clips": len(sel)}

    def false_alarms(sel):
        fp = sum(int(preds[i].sum()) for i in sel)
        return {"frame_fp_rate": fp / max(1, sum(preds[i].size for i in sel)),
                "clips_with_fa": sum(1 for i in sel if len(segments(preds[i]))),
                "clips": len(sel)}

    speech = [i for i, c in enumerate(index) if c["speech"]]
    up_to_0 = {"clean", 20, 10, 5, 0}
    res["all"] = agg(speech)
    for ch in CHANNELS:
        sp = [i for i in speech if index[i]["channel"] == ch]
        res[f"{ch} all"] = agg(sp)
        res[f"{ch} clean to 0 dB"] = agg([i for i in sp if index[i]["snr"] in up_to_0])
        for snr in data.EVAL_SNRS:
            res[f"{ch} snr {snr}"] = agg([i for i in sp if index[i]["snr"] == snr])
            for v in VOICES:
                res[f"{ch} {v} snr {snr}"] = agg([i for i in sp if index[i]["snr"] == snr
                                                  and index[i]["voices"] == v])
        for v in VOICES:
            res[f"{ch} {v} clean to 0 dB"] = agg([i for i in sp if index[i]["snr"] in up_to_0
                                                  and index[i]["voices"] == v])
        for kind in data.ALL_NOISES:
            res[f"{ch} noise {kind}"] = agg([i for i in sp if index[i]["noise"] == kind])
    for kind in data.RECORDED_NOISES:
        res[f"{kind} 0 to 20 dB"] = agg([i for i in speech if index[i]["noise"] == kind
                                         and index[i]["snr"] in (0, 5, 10, 20)])
    res["-5 dB"] = agg([i for i in speech if index[i]["snr"] == -5])
    empty = [i for i, c in enumerate(index) if not c["speech"]]
    groups = {"music": ["music"], "babble": ["babble"],
              "other noises": [k for k in data.ALL_NOISES if k not in data.RECORDED_NOISES],
              "silence": ["silence"]}
    for g, kinds in groups.items():
        res[f"only {g}"] = false_alarms([i for i in empty if index[i]["noise"] in kinds])
        for ch in CHANNELS:
            res[f"{ch} only {g}"] = false_alarms([i for i in empty if index[i]["noise"] in kinds
                                                  and index[i]["channel"] == ch])
    return res


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def _table(lines, head, rows):
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    lines.extend("| " + " | ".join(r) + " |" for r in rows)
    lines.append("")


def report(results):
    names = list(results)
    snrs = [str(s) for s in data.EVAL_SNRS]
    lines = ["The aims (frame F1; false alarms as the share of speech-free frames marked speech):",
             ""]
    _table(lines, ["system", "wideband, clean to 0 dB", "telephone, clean to 0 dB",
                   "music 0-20 dB", "babble 0-20 dB", "-5 dB", "music only: false alarms",
                   "babble only: false alarms", "other noises only: false alarms"],
           [[n, f"**{r['wideband clean to 0 dB']['f1']:.3f}**",
             f"**{r['telephone clean to 0 dB']['f1']:.3f}**",
             f"**{r['music 0 to 20 dB']['f1']:.3f}**", f"{r['babble 0 to 20 dB']['f1']:.3f}",
             f"{r['-5 dB']['f1']:.3f}", f"**{100 * r['only music']['frame_fp_rate']:.2f} %**",
             f"{100 * r['only babble']['frame_fp_rate']:.2f} %",
             f"{100 * r['only other noises']['frame_fp_rate']:.2f} %"]
            for n, r in results.items()])
    lines += ["Every speech clip (all channels, voices and SNRs):", ""]
    _table(lines, ["system", "frame acc", "precision", "recall", "F1", "segment F1", "detection",
                   "false alarms/min"],
           [[n, f"{a['acc']:.3f}", f"{a['p']:.3f}", f"{a['r']:.3f}", f"{a['f1']:.3f}",
             f"{a['seg_f1']:.3f}", f"{a['det']:.3f}", f"{a['fa_min']:.2f}"]
            for n, a in ((n, results[n]["all"]) for n in names)])
    lines += ["Frame F1 by SNR (dB), channel and voices:", ""]
    rows = []
    for ch in CHANNELS:
        for v in VOICES:
            for n in names:
                rows.append([n, ch, v] + [f"{results[n][f'{ch} {v} snr {s}']['f1']:.3f}"
                                          for s in data.EVAL_SNRS]
                            + [f"{results[n][f'{ch} {v} clean to 0 dB']['f1']:.3f}"])
    _table(lines, ["system", "channel", "voices"] + snrs + ["clean to 0"], rows)
    lines += ["Frame F1 by background (SNR 20 to -5 dB; brown and machine noise are never "
              "trained on, and the music and babble come from held-out tracks and speakers):", ""]
    rows = [[n, ch] + [f"{results[n][f'{ch} noise {k}']['f1']:.3f}" for k in data.ALL_NOISES]
            for ch in CHANNELS for n in names]
    _table(lines, ["system", "channel"] + data.ALL_NOISES, rows)
    lines += ["Segment F1 by SNR (dB):", ""]
    rows = [[n, ch] + [f"{results[n][f'{ch} snr {s}']['seg_f1']:.3f}" for s in data.EVAL_SNRS]
            for ch in CHANNELS for n in names]
    _table(lines, ["system", "channel"] + snrs, rows)
    lines += ["Clips without speech: the share of frames wrongly marked speech, and the clips "
              "with a false-alarm segment:", ""]
    rows = []
    for ch in CHANNELS:
        for n in names:
            row = [n, ch]
            for g in ("music", "babble", "other noises", "silence"):
                e = results[n][f"{ch} only {g}"]
                row.append(f"{100 * e['frame_fp_rate']:.2f} % ({e['clips_with_fa']}/{e['clips']})")
            rows.append(row)
    _table(lines, ["system", "channel", "music", "babble", "other noises", "silence"], rows)
    return "\n".join(lines).rstrip() + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "speech-activity"))
    ap.add_argument("--work", default="/tmp/ssm-speech-activity-eval",
                    help="where the sets are written (once) and kept")
    ap.add_argument("--ssm-run", default=os.path.join(ROOT, "build", "bin", "ssm-run"))
    ap.add_argument("--sources", default=data.sources.default_cache(),
                    help="where sources.py --fetch put the packages (default %(default)s)")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=DIR",
                    help="also run the model in DIR on the same clips, in rows named "
                         "'speech-activity, LABEL' (repeatable; e.g. previous=/tmp/old-model)")
    ap.add_argument("--no-silero", action="store_true")
    ap.add_argument("--tune-model-threshold", action="store_true",
                    help="also report the model at a threshold tuned on the tune set")
    ap.add_argument("--json", help="also write all numbers to this file")
    args = ap.parse_args()
    compare = []
    for c in args.compare:
        label, sep, path = c.partition("=")
        if not sep or not label or not os.path.isfile(os.path.join(path, "config.json")):
            ap.error(f"--compare {c!r}: expected LABEL=DIR with DIR a model directory")
        compare.append((label, path))

    sets = build_sets(args.work, args.sources)
    (ev, ev_idx), (tu, tu_idx) = sets["eval"], sets["tune"]
    ev_lab, tu_lab = load_labels(ev, ev_idx), load_labels(tu, tu_idx)
    n_sp = sum(1 for c in ev_idx if c["speech"])
    log(f"eval: {len(ev_idx)} clips ({n_sp} with speech, "
        f"{sum(l.size for l in ev_lab) / 6000:.1f} min, "
        f"{np.mean(np.concatenate(ev_lab)):.3f} speech frames); tune: {len(tu_idx)} clips")

    results, thresholds = {}, {}
    log("ssmserve model (ssm-run)")
    p_model = run_model(args.ssm_run, args.model, ev, ev_idx)
    name = ("speech-activity, this model (p >= 0.5)" if compare else
            "speech-activity (ssmserve, p >= 0.5)")
    results[name] = evaluate(p_model, 0.5, ev_lab, ev_idx)
    if args.tune_model_threshold:
        # The same model at a threshold chosen on the tune set, as the baselines' are: what a
        # user who tunes the model's one knob would see.
        th, f = tune_threshold(run_model(args.ssm_run, args.model, tu, tu_idx), tu_lab,
                               np.arange(0.02, 0.99, 0.02))
        thresholds["model"] = th
        results[f"{name.split(' (')[0]} (p >= {th:.2f}, tuned)"] = evaluate(p_model, th, ev_lab,
                                                                            ev_idx)
    for label, path in compare:
        log(f"{label} model (ssm-run, {path})")
        results[f"speech-activity, {label} (p >= 0.5)"] = evaluate(
            run_model(args.ssm_run, path, ev, ev_idx), 0.5, ev_lab, ev_idx)

    log("energy baseline")
    th, f = tune_threshold(energy_db(tu, tu_idx), tu_lab, np.arange(-90.0, 0.0, 0.5))
    thresholds["energy_dbfs"] = th
    results[f"energy >= {th:.1f} dBFS (tuned)"] = evaluate(energy_db(ev, ev_idx), th, ev_lab,
                                                           ev_idx)
    if not args.no_silero:
        log("Silero VAD")
        p_sil = run_silero(ev, ev_idx)
        results["Silero VAD (p >= 0.5)"] = evaluate(p_sil, 0.5, ev_lab, ev_idx)
        th, f = tune_threshold(run_silero(tu, tu_idx), tu_lab, np.arange(0.02, 0.99, 0.02))
        thresholds["silero"] = th
        results[f"Silero VAD (p >= {th:.2f}, tuned)"] = evaluate(p_sil, th, ev_lab, ev_idx)
    print(report(results), end="")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "thresholds": thresholds}, f, indent=1)


if __name__ == "__main__":
    main()
