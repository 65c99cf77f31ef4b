#!/usr/bin/python3
"""Trains the speech-activity Mamba model and exports it as an ssmserve/v1 model directory.

    nice -n 5 /usr/bin/python3 models/speech-activity/train.py --out models/speech-activity
    /usr/bin/python3 models/speech-activity/train.py --smoke --out /tmp/sa-smoke   # ~1 min

Data (data.py): espeak-ng utterances of the training voices and phrases of the training
speakers' recordings (sources.py; fetch them once with `sources.py --fetch`), mixed into 4 s
clips with the training backgrounds (synthetic, recorded music, babble) at random SNRs and levels,
through random channels (telephone with codecs, low-pass, colouration, reverberation), quantised
to PCM16, through the exact log-mel
frontend of the engine (ssm_torch.log_mel, float32). Model: docs/design.md §3 (ssm_torch.SSMModel),
trained with per-frame cross-entropy on the head's logits; the exported config has a softmax head.
A fixed per-feature normalisation (mean/std of the training features) is used during training
and folded into input_proj on export, since log_mel models take the features as they are.

Deterministic: fixed seeds, fixed data, torch.set_num_threads(2); rerunning gives the same files.
"""

import argparse
import ctypes
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import data  # noqa: E402
from data import ssm_torch  # noqa: E402

SEED = 2026

CONFIG = {
    "format": "ssmserve/v1",
    "frontend": data.FRONTEND,
    "d_in": 80, "d_model": 64, "n_layer": 3,
    "layer": {"type": "mamba", "d_state": 8, "d_conv": 4, "expand": 2, "dt_rank": 4,
              "conv_bias": True, "bias": False},
    "norm": {"type": "rmsnorm", "eps": 1e-5},
    "d_out": 2, "head_activation": "softmax", "labels": ["background", "speech"],
}

# speech_prob: the share of training clips with speech (the rest hold backgrounds only)
FULL = dict(n_utt=2400, pool=3000, refresh=1000, seconds=4.0, batch=16, steps=2400,
            lr=3e-3, warmup=50, speech_prob=0.75)
SMOKE = dict(n_utt=24, pool=32, refresh=16, seconds=2.0, batch=8, steps=12, lr=3e-3, warmup=3,
             speech_prob=0.75)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def init_mamba(model, cfg, gen):
    """The mamba_ssm initialisation: dt log-uniform in [1e-3, 0.1] (bias = inverse softplus),
    dt_proj.weight U(+-dt_rank^-0.5), A = -(1..N), D = 1, out_proj scaled by 1/sqrt(n_layer);
    other linear/conv layers keep PyTorch's defaults (drawn from `gen`)."""
    R, N = cfg["layer"]["dt_rank"], cfg["layer"]["d_state"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and not name.endswith("A_log"):
                fan_in = int(np.prod(p.shape[1:]))
                b = 1.0 / math.sqrt(fan_in)
                p.uniform_(-b, b, generator=gen)
            elif name.endswith("bias") and "dt_proj" not in name:
                p.zero_()
        for layer in model.backbone.layers:
            m = layer.mixer
            m.dt_proj.weight.uniform_(-R ** -0.5, R ** -0.5, generator=gen)
            u = torch.rand(m.E, generator=gen)
            dt = torch.exp(u * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            m.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            m.A_log.copy_(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(m.E, 1))
            m.D.fill_(1.0)
            m.out_proj.weight.div_(math.sqrt(cfg["n_layer"]))


def make_pool(rng, utts, n, seconds, noises, recorded, speech_prob):
    """n training clips: (features (n, T, 80) float32, labels (n, T) int64)."""
    ns = int(seconds * data.SR)
    pcms, labs = [], []
    for _ in range(n):
        pcm, lab, _ = data.make_clip(rng, utts, noises, ns, recorded=recorded,
                                     speech_prob=speech_prob)
        pcms.append(pcm)
        labs.append(lab)
    x = torch.from_numpy(np.stack([data.pcm_to_float(p) for p in pcms]))
    feats = torch.cat([ssm_torch.log_mel(x[i:i + 256], data.FRONTEND, torch.float32)
                       for i in range(0, n, 256)])
    return feats, torch.from_numpy(np.stack(labs).astype(np.int64))


def fold_normalisation(tensors, mean, std):
    """input_proj((u - mean) / std) == input_proj'(u) with W' = W / std, b' = b - W' mean."""
    W = tensors["input_proj.weight"].astype(np.float64) / std[None, :]
    b = tensors["input_proj.bias"].astype(np.float64) - W @ mean
    tensors["input_proj.weight"] = W.astype(np.float32)
    tensors["input_proj.bias"] = b.astype(np.float32)
    return tensors


def keep_freed_memory():
    """Large tensors (a layer's states are ~40 MB a batch) are freed and allocated again every
    step; glibc returns such blocks to the kernel (mmap, trimming), and every reuse then faults
    its pages in afresh, which made the elementwise products of the scan several times slower.
    Keep the memory in the heap instead (M_MMAP_MAX = 0, M_TRIM_THRESHOLD = INT_MAX)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-4, 0)
    libc.mallopt(-1, 2 ** 31 - 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="model directory to write")
    ap.add_argument("--smoke", action="store_true", help="tiny data, few steps (recipe check)")
    ap.add_argument("--steps", type=int, help="override the number of steps")
    ap.add_argument("--sources", default=data.sources.default_cache(),
                    help="where sources.py --fetch put the packages (default %(default)s)")
    args = ap.parse_args()
    hp = dict(SMOKE if args.smoke else FULL)
    if args.steps:
        hp["steps"] = args.steps
    keep_freed_memory()
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    t0 = time.time()

    sp = data.split_voices()
    specs = data.speech_specs(hp["n_utt"], SEED, sp["train_languages"], sp["train_variants"])
    synth = data.synthesize_all(specs)
    log(f"{len(synth)} synthetic utterances ({sum(u.size for u in synth) / data.SR / 60:.1f} min) "
        f"from {len(sp['train_languages'])} languages x {len(sp['train_variants'])} variants")
    sets = data.recorded_sets(hp["n_utt"], SEED, args.sources, sides=("train",))
    if sets is not None:
        tr = sets["train"]
        utts = synth + tr["phrases"]
        recorded = {"music": tr["music"], "babble": tr["recordings"] + synth}
        # the recorded backgrounds (music, babble) are drawn twice as often as each synthetic
        # kind: they are where the false alarms were
        noises = data.SYNTHETIC_NOISES + 2 * data.RECORDED_NOISES
        log(f"{len(tr['phrases'])} recorded phrases from {len(tr['recordings'])} recordings, "
            f"{len(tr['music'])} music tracks")
    elif args.smoke:
        # the packages are not fetched: the recipe check runs on synthetic speech and
        # backgrounds only (the recorded kinds are left out)
        utts, recorded, noises = synth, None, data.SYNTHETIC_NOISES
        log("recorded sources not fetched: smoke run on synthetic data only")
    else:
        raise SystemExit("the recorded speech and music are not fetched: run "
                         "models/speech-activity/sources.py --fetch (about 645 MB from Debian's "
                         "package mirror)")
    feats, labels = make_pool(rng, utts, hp["pool"], hp["seconds"], noises, recorded,
                              hp["speech_prob"])
    mean = feats.mean((0, 1)).double().numpy()
    std = feats.std((0, 1)).double().clamp(min=1e-3).numpy()
    mean_t, std_t = torch.from_numpy(mean).float(), torch.from_numpy(std).float()
    log(f"pool {tuple(feats.shape)}, speech frames {labels.float().mean():.3f}, "
        f"{time.time() - t0:.0f}s")

    model = ssm_torch.SSMModel(CONFIG, torch.float32)
    init_mamba(model, CONFIG, gen)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.endswith("A_log") else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=hp["lr"], betas=(0.9, 0.99))
    steps, bs = hp["steps"], hp["batch"]

    def lr_at(s):
        if s < hp["warmup"]:
            return hp["lr"] * (s + 1) / hp["warmup"]
        p = (s - hp["warmup"]) / max(1, steps - hp["warmup"])
        return hp["lr"] * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * p)))

    order = rng.permutation(feats.shape[0])
    cursor = 0
    run_loss = run_acc = None
    t_train = time.time()
    for step in range(steps):
        if cursor + bs > len(order):
            # refresh part of the pool with new clips (new noise, placements, levels), reshuffle
            k = hp["refresh"]
            f_new, l_new = make_pool(rng, utts, k, hp["seconds"], noises, recorded,
                                     hp["speech_prob"])
            idx = torch.from_numpy(rng.choice(feats.shape[0], k, replace=False))
            feats[idx], labels[idx] = f_new, l_new
            order = rng.permutation(feats.shape[0])
            cursor = 0
        idx = torch.from_numpy(order[cursor:cursor + bs])
        cursor += bs
        u = (feats[idx] - mean_t) / std_t
        y = labels[idx]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(u, activation=False)
        loss = F.cross_entropy(logits.reshape(-1, 2), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc = (logits.argmax(-1) == y).float().mean().item()
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        run_acc = acc if run_acc is None else 0.98 * run_acc + 0.02 * acc
        if step % 50 == 0 or step == steps - 1:
            el = time.time() - t_train
            log(f"step {step}/{steps} loss {run_loss:.4f} acc {run_acc:.4f} lr {lr_at(step):.2e} "
                f"{el / (step + 1):.3f}s/step, eta {el / (step + 1) * (steps - step - 1):.0f}s")

    model.eval()
    tensors = fold_normalisation(ssm_torch.export_tensors(model), mean, std)
    ssm_torch.write_model_dir(args.out, CONFIG, tensors)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump({"seed": SEED, "hyperparameters": hp, "utterances": len(utts),
                   "recorded_sources": sets is not None,
                   "final_running_loss": round(run_loss, 5),
                   "final_running_frame_accuracy": round(run_acc, 5),
                   "torch": torch.__version__}, f, indent=1)
        f.write("\n")
    log(f"wrote {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
