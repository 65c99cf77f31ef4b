#!/usr/bin/env python3
"""Outside check of the ssmserve/v1 semantics against an independent PyTorch model.

Everything on the Python side is written from design.md (sections 2 and 3) alone and shares
no code with the C++ tree:

  1. Random models are built here (Mamba-style initialisation, fixed seed) and written as model
     directories: config.json in the ssmserve/v1 format and model.safetensors from the small
     writer below.
  2. A PyTorch module named like mamba_ssm (input_proj, backbone.layers[i].norm / .mixer.*,
     backbone.norm_f, head) is loaded from that file (strict, so the tensor names and shapes are
     checked too) and evaluated in float64. The mixer is the obvious recurrence, one step per
     frame; the log-mel frontend is framed by hand (torch.stft centres, the spec does not).
  3. Before comparing anything, the reference checks itself: the time loop against a
     closed-form (vectorised) scan, conv1d against the literal causal sum, the mel filterbank
     and the DFT against hand computations, the safetensors file against a re-read.
  4. `ssm-run` is run on random inputs, offline and streamed in odd chunk sizes, and its
     output must match the reference: max|a - b| / max(1e-6, max|b|) <= 1e-4, same frame count.

Configurations: a) frames, mean/std, softmax; b) frames, d_state 5, d_conv 2, expand 1, linear
biases, no conv bias, sigmoid; c) 16 kHz PCM16 WAV through the log-mel frontend, no activation;
d) frames with scan-dominated weights (see SCAN_HEAVY), so recurrence errors cannot hide.

Usage: torch_reference_check.py --bin-dir DIR [--keep-tmp]
Exit codes: 0 all passed, 1 a check failed (named in the output), 77 torch not installed.
"""

import argparse
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import wave

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("SKIP: python3-torch not installed (apt-get install python3-torch)")
    sys.exit(77)

REL_TOL = 1e-4          # C++ (float32) vs this reference (float64), relative to max|reference|
SELF_TOL = 1e-10        # reference vs its own alternative formulations (all float64)
SEED = 20240611
RUN_TIMEOUT_S = 120     # per ssm-run invocation

DTYPE = torch.float64
torch.set_num_threads(1)  # small problems; do not compete with parallel builds / ctest -j


# ----------------------------------------------------------------------------------------------
# 1. Model configurations and Mamba-style random weights
# ----------------------------------------------------------------------------------------------

def make_configs():
    """The configurations of the check, as config.json dictionaries (design.md §2)."""
    rng = np.random.default_rng(SEED + 1)
    d_in_a = 7
    cfg_a = {  # sensor frames, mean/std normalisation, softmax head
        "format": "ssmserve/v1",
        "frontend": {"type": "none",
                     "mean": [float(v) for v in rng.uniform(-1.0, 1.0, d_in_a).astype(np.float32)],
                     "std": [float(v) for v in rng.uniform(0.5, 2.0, d_in_a).astype(np.float32)]},
        "d_in": d_in_a, "d_model": 32, "n_layer": 2,
        "layer": {"type": "mamba", "d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 4,
                  "conv_bias": True, "bias": False},
        "norm": {"type": "rmsnorm", "eps": 1e-5},
        "d_out": 3, "head_activation": "softmax", "labels": ["low", "mid", "high"],
    }
    cfg_b = {  # odd small sizes, in/out_proj biases, no conv bias, sigmoid head, no normalisation
        "format": "ssmserve/v1",
        "frontend": {"type": "none"},
        "d_in": 5, "d_model": 24, "n_layer": 2,
        "layer": {"type": "mamba", "d_state": 5, "d_conv": 2, "expand": 1, "dt_rank": 3,
                  "conv_bias": False, "bias": True},
        "norm": {"type": "rmsnorm", "eps": 1e-5},
        "d_out": 4, "head_activation": "sigmoid",
    }
    cfg_c = {  # audio through the exact log-mel frontend, linear head
        "format": "ssmserve/v1",
        "frontend": {"type": "log_mel", "sample_rate": 16000, "win_length": 400,
                     "hop_length": 160, "n_fft": 512, "n_mels": 40, "f_min": 20.0,
                     "f_max": 7600.0, "log_floor": 1e-10},
        "d_in": 40, "d_model": 48, "n_layer": 3,
        "layer": {"type": "mamba", "d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 3,
                  "conv_bias": True, "bias": False},
        "norm": {"type": "rmsnorm", "eps": 1e-5},
        "d_out": 5, "head_activation": "none",
    }
    cfg_d = {  # scan-dominated weights (see init_weights): catches subtle recurrence bugs
        "format": "ssmserve/v1",
        "frontend": {"type": "none"},
        "d_in": 6, "d_model": 16, "n_layer": 2,
        "layer": {"type": "mamba", "d_state": 8, "d_conv": 3, "expand": 2, "dt_rank": 2,
                  "conv_bias": True, "bias": False},
        "norm": {"type": "rmsnorm", "eps": 1e-5},
        "d_out": 3, "head_activation": "none",
    }
    return {"a": cfg_a, "b": cfg_b, "c": cfg_c, "d": cfg_d}


# Configurations whose weights are made scan-dominated. With the Mamba initialisation (small dt,
# D ~ 1) the skip term D*s dominates the mixer output: dropping the H.C term altogether changes
# the outputs of a/b/c by only ~1e-3..1e-4 relative, and an off-by-one in the recurrence (using
# H_{t-1} for o_t) by ~1e-5 for b and c, i.e. below the tolerance. Config d uses larger dt, a
# small D and larger B/C so that such an error moves the outputs by ~1e-1.
SCAN_HEAVY = {"d"}


def expected_tensors(cfg):
    """(name, shape) of every tensor, in the order of the design.md §2 table.

    conv1d.bias exists only with conv_bias (as in mamba_ssm, where nn.Conv1d(bias=conv_bias)),
    in_proj/out_proj biases only with bias.
    """
    D, lay = cfg["d_model"], cfg["layer"]
    E, R, N, K = lay["expand"] * D, lay["dt_rank"], lay["d_state"], lay["d_conv"]
    out = [("input_proj.weight", (D, cfg["d_in"])), ("input_proj.bias", (D,))]
    for i in range(cfg["n_layer"]):
        L = f"backbone.layers.{i}."
        out.append((L + "norm.weight", (D,)))
        out.append((L + "mixer.in_proj.weight", (2 * E, D)))
        if lay["bias"]:
            out.append((L + "mixer.in_proj.bias", (2 * E,)))
        out.append((L + "mixer.conv1d.weight", (E, 1, K)))
        if lay["conv_bias"]:
            out.append((L + "mixer.conv1d.bias", (E,)))
        out.append((L + "mixer.x_proj.weight", (R + 2 * N, E)))
        out.append((L + "mixer.dt_proj.weight", (E, R)))
        out.append((L + "mixer.dt_proj.bias", (E,)))
        out.append((L + "mixer.A_log", (E, N)))
        out.append((L + "mixer.D", (E,)))
        out.append((L + "mixer.out_proj.weight", (D, E)))
        if lay["bias"]:
            out.append((L + "mixer.out_proj.bias", (D,)))
    out.append(("backbone.norm_f.weight", (D,)))
    out.append(("head.weight", (cfg["d_out"], D)))
    out.append(("head.bias", (cfg["d_out"],)))
    return out


def init_weights(cfg, seed, scan_heavy=False):
    """Random float32 weights initialised the way mamba_ssm initialises a fresh Mamba block
    (scan_heavy: dt in [0.05, 1], D ~ U(+-0.1), x_proj weights x3; see SCAN_HEAVY)."""
    dt_min, dt_max = (0.05, 1.0) if scan_heavy else (1e-3, 0.1)
    rng = np.random.default_rng(seed)
    N = cfg["layer"]["d_state"]
    shapes = dict(expected_tensors(cfg))
    t = {}
    for name, shape in shapes.items():
        if name.endswith("A_log"):
            # S4D-real: A = -(1..N) per channel; a little noise so the channels differ.
            a = np.log(np.arange(1, N + 1, dtype=np.float64))[None, :].repeat(shape[0], 0)
            v = a + rng.uniform(-0.1, 0.1, shape)
        elif name.endswith("mixer.D"):
            v = (0.0 if scan_heavy else 1.0) + rng.uniform(-0.1, 0.1, shape)
        elif name.endswith("dt_proj.bias"):
            # dt log-uniform in [dt_min, dt_max]; the bias is its inverse softplus.
            dt = np.exp(rng.uniform(math.log(dt_min), math.log(dt_max), shape))
            v = dt + np.log(-np.expm1(-dt))
        elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
            v = 1.0 + rng.uniform(-0.2, 0.2, shape)
        else:
            # nn.Linear / nn.Conv1d default: U(+-1/sqrt(fan_in)) for weight and bias, fan_in
            # from the owning weight (Linear: in_features; depthwise conv1d: 1 * K).
            w_shape = shapes[name.rsplit(".", 1)[0] + ".weight"]
            bound = 1.0 / math.sqrt(int(np.prod(w_shape[1:])))
            v = rng.uniform(-bound, bound, shape)
            if scan_heavy and name.endswith("x_proj.weight"):
                v = 3.0 * v
        t[name] = np.ascontiguousarray(v, dtype=np.float32)
    return t


# ----------------------------------------------------------------------------------------------
# 2. safetensors writer (and a reader, used to load the reference from the very same file)
# ----------------------------------------------------------------------------------------------

def write_safetensors(path, tensors):
    """8-byte LE header length, JSON header {name: {dtype, shape, data_offsets}}, padded with
    spaces to a multiple of 8, then the contiguous little-endian data."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"]).copy()
    return out


def write_model_dir(path, cfg, tensors):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_safetensors(os.path.join(path, "model.safetensors"), tensors)


# ----------------------------------------------------------------------------------------------
# 3. The reference model (design.md §3), float64, mamba_ssm module names
# ----------------------------------------------------------------------------------------------

def silu(x):
    return x * torch.sigmoid(x)


def softplus(x):
    return torch.logaddexp(x, torch.zeros_like(x))  # ln(1 + e^x), exact (no threshold)


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(d, dtype=DTYPE))

    def forward(self, x):  # x * rsqrt(mean(x^2) + eps) * w
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mixer(nn.Module):
    """The Mamba-1 selective SSM exactly as written in design.md §3, one frame at a time."""

    def __init__(self, d_model, lay):
        super().__init__()
        self.E = E = lay["expand"] * d_model
        self.R, self.N, self.K = lay["dt_rank"], lay["d_state"], lay["d_conv"]
        kw = dict(dtype=DTYPE)
        self.in_proj = nn.Linear(d_model, 2 * E, bias=lay["bias"], **kw)
        self.conv1d = nn.Conv1d(E, E, self.K, groups=E, padding=self.K - 1,
                                bias=lay["conv_bias"], **kw)
        self.x_proj = nn.Linear(E, self.R + 2 * self.N, bias=False, **kw)
        self.dt_proj = nn.Linear(self.R, E, bias=True, **kw)
        self.A_log = nn.Parameter(torch.empty(E, self.N, **kw))
        self.D = nn.Parameter(torch.empty(E, **kw))
        self.out_proj = nn.Linear(E, d_model, bias=lay["bias"], **kw)

    def pre_scan(self, v):
        """Everything before the recurrence: returns s, delta, A, B, C, z (all per frame)."""
        T = v.shape[0]
        x, z = self.in_proj(v).split([self.E, self.E], dim=-1)          # x first
        # Causal depthwise conv: padding K-1 on both sides, keep the first T outputs, so
        # output t sees x_{t-K+1} .. x_t with x_{<0} = 0 (conv1d is a cross-correlation).
        c = self.conv1d(x.t().unsqueeze(0))[0, :, :T].t()
        s = silu(c)
        dtr, B, C = self.x_proj(s).split([self.R, self.N, self.N], dim=-1)
        delta = softplus(self.dt_proj(dtr))                                # (T, E)
        A = -torch.exp(self.A_log)                                         # (E, N)
        return x, c, s, delta, A, B, C, z

    def scan(self, s, delta, A, B, C):
        """H_t = exp(Delta_t A) H_{t-1} + (Delta_t s_t) (x) B_t, H_{-1} = 0; returns H_t . C_t."""
        H = torch.zeros(self.E, self.N, dtype=DTYPE)
        ys = []
        for t in range(s.shape[0]):
            H = torch.exp(delta[t, :, None] * A) * H + (delta[t] * s[t])[:, None] * B[t][None, :]
            ys.append(H @ C[t])
        return torch.stack(ys) if ys else torch.zeros(0, self.E, dtype=DTYPE)

    def forward(self, v):
        _, _, s, delta, A, B, C, z = self.pre_scan(v)
        o = (self.scan(s, delta, A, B, C) + self.D * s) * silu(z)
        return self.out_proj(o)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm = RMSNorm(cfg["d_model"], cfg["norm"]["eps"])
        self.mixer = Mixer(cfg["d_model"], cfg["layer"])


class Backbone(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg["n_layer"])])
        self.norm_f = RMSNorm(cfg["d_model"], cfg["norm"]["eps"])


class SSMModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        fe = cfg["frontend"]
        self.input_proj = nn.Linear(cfg["d_in"], cfg["d_model"], dtype=DTYPE)
        self.backbone = Backbone(cfg)
        self.head = nn.Linear(cfg["d_model"], cfg["d_out"], dtype=DTYPE)
        # Frame normalisation (frontend "none"): u <- (u - mean) / std, per feature.
        self.mean = torch.tensor(fe["mean"], dtype=DTYPE) if "mean" in fe else None
        self.std = torch.tensor(fe["std"], dtype=DTYPE) if "std" in fe else None

    def forward(self, u):  # u: (T, d_in) frames after the frontend
        if self.mean is not None:
            u = u - self.mean
        if self.std is not None:
            u = u / self.std
        h = self.input_proj(u)
        for layer in self.backbone.layers:
            h = h + layer.mixer(layer.norm(h))
        y = self.head(self.backbone.norm_f(h))
        act = self.cfg["head_activation"]
        if act == "sigmoid":
            y = torch.sigmoid(y)
        elif act == "softmax":
            y = torch.softmax(y, dim=-1)
        return y


def load_reference(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    model = SSMModel(cfg)
    state = {k: torch.from_numpy(v).to(DTYPE)
             for k, v in read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    model.load_state_dict(state, strict=True)  # names and shapes must match the module exactly
    model.eval()
    return model


# ----------------------------------------------------------------------------------------------
# 4. The exact log-mel frontend (design.md §3), float64
# ----------------------------------------------------------------------------------------------

def hann_periodic(win):
    i = np.arange(win, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * i / win)


def mel_filterbank(fe):
    """(n_mels, n_fft/2 + 1) HTK triangles, no area normalisation."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)
    m = np.linspace(mel(fe["f_min"]), mel(fe["f_max"]), fe["n_mels"] + 2)
    f = 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    freqs = np.arange(fe["n_fft"] // 2 + 1) * fe["sample_rate"] / fe["n_fft"]
    W = np.zeros((fe["n_mels"], freqs.size))
    for j in range(fe["n_mels"]):
        rise = (freqs - f[j]) / (f[j + 1] - f[j])
        fall = (f[j + 2] - freqs) / (f[j + 2] - f[j + 1])
        W[j] = np.maximum(0.0, np.minimum(rise, fall))
    return W


def n_frames(n_samples, fe):
    if n_samples < fe["win_length"]:
        return 0
    return (n_samples - fe["win_length"]) // fe["hop_length"] + 1


def log_mel(samples, fe):
    """samples: float64 (n,) -> features (frames, n_mels). Frames are cut by hand: frame t is
    samples [t*hop, t*hop + win); no centring, padding, dither or pre-emphasis."""
    win, hop, nfft = fe["win_length"], fe["hop_length"], fe["n_fft"]
    T = n_frames(samples.size, fe)
    if T == 0:
        return torch.zeros(0, fe["n_mels"], dtype=DTYPE)
    idx = np.arange(T)[:, None] * hop + np.arange(win)[None, :]
    frames = torch.from_numpy(samples[idx] * hann_periodic(win))            # (T, win)
    frames = F.pad(frames, (0, nfft - win))                                 # zero-pad to n_fft
    P = torch.fft.rfft(frames, n=nfft, dim=-1).abs().pow(2)                 # (T, nfft/2+1)
    E = P @ torch.from_numpy(mel_filterbank(fe)).t()
    return torch.log(torch.clamp(E, min=fe["log_floor"]))


# ----------------------------------------------------------------------------------------------
# 5. Self-checks of the reference (so that a mismatch with C++ points at C++, or at the spec)
# ----------------------------------------------------------------------------------------------

def scan_closed_form(s, delta, A, B, C):
    """H_t = sum_{tau<=t} exp(sum_{tau<sig<=t} Delta_sig A) (Delta_tau s_tau) (x) B_tau, computed
    for all t at once (O(T^2)); H_t . C_t must equal the time loop's."""
    T = s.shape[0]
    cum = torch.cumsum(delta[:, :, None] * A[None], dim=0)                  # (T, E, N)
    diff = cum[:, None] - cum[None, :]                                     # [t, tau]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))[:, :, None, None]
    decay = torch.where(mask, torch.exp(torch.where(mask, diff, torch.zeros_like(diff))),
                        torch.zeros_like(diff))
    inp = (delta * s)[:, :, None] * B[:, None, :]                            # (T, E, N)
    H = torch.einsum("tuen,uen->ten", decay, inp)
    return torch.einsum("ten,tn->te", H, C)


def self_check(tmp):
    problems = []

    def expect(ok, what):
        print(f"  self-check {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            problems.append(what)

    torch.manual_seed(SEED)
    cfgs = make_configs()
    for key in ("a", "b", "d"):
        cfg = cfgs[key]
        d = os.path.join(tmp, f"selfcheck_{key}")
        tensors = init_weights(cfg, SEED + 10, key in SCAN_HEAVY)
        write_model_dir(d, cfg, tensors)
        back = read_safetensors(os.path.join(d, "model.safetensors"))
        expect(list(back) == [n for n, _ in expected_tensors(cfg)] and
               all(np.array_equal(back[n], tensors[n]) for n in tensors),
               f"[{key}] safetensors file re-reads to the written tensors")
        with open(os.path.join(d, "model.safetensors"), "rb") as f:
            (hl,) = struct.unpack("<Q", f.read(8))
        expect(hl % 8 == 0, f"[{key}] safetensors header length {hl} is a multiple of 8")
        model = load_reference(d)
        conv_err = scan_err = 0.0
        for mixer in (layer.mixer for layer in model.backbone.layers):
            for T in (1, 2, 9, 37):
                v = torch.randn(T, cfg["d_model"], dtype=DTYPE)
                x, c, s, delta, A, B, C, _ = mixer.pre_scan(v)
                # conv1d with padding K-1 == the literal causal sum of design.md §3
                w = mixer.conv1d.weight[:, 0, :]
                b = (mixer.conv1d.bias if mixer.conv1d.bias is not None
                     else torch.zeros(mixer.E, dtype=DTYPE))
                lit = torch.stack([b + sum(w[:, k] * x[t - mixer.K + 1 + k]
                                           for k in range(mixer.K) if t - mixer.K + 1 + k >= 0)
                                   for t in range(T)])
                conv_err = max(conv_err, (lit - c).abs().max().item())
                # time loop == closed form (the SSM term alone, relative to its own size)
                y1, y2 = mixer.scan(s, delta, A, B, C), scan_closed_form(s, delta, A, B, C)
                scan_err = max(scan_err, ((y1 - y2).abs().max() / y2.abs().max()).item())
        expect(conv_err < SELF_TOL, f"[{key}] conv1d == causal sum, T=1,2,9,37 (err {conv_err:.1e})")
        expect(scan_err < SELF_TOL,
               f"[{key}] scan loop == closed form, T=1,2,9,37 (rel err {scan_err:.1e})")
        # The model is causal: outputs for a prefix do not depend on what follows.
        u = torch.randn(23, cfg["d_in"], dtype=DTYPE)
        full, pre = model(u), model(u[:11])
        err = (full[:11] - pre).abs().max().item()
        expect(err < SELF_TOL, f"[{key}] prefix outputs equal (causal), err {err:.1e}")

    # Log-mel: filterbank against a scalar hand computation with the math module.
    fe = cfgs["c"]["frontend"]
    W = mel_filterbank(fe)

    def hand_weight(j, k):
        mel0 = 2595.0 * math.log10(1.0 + fe["f_min"] / 700.0)
        mel1 = 2595.0 * math.log10(1.0 + fe["f_max"] / 700.0)
        fj = [700.0 * (10.0 ** ((mel0 + i * (mel1 - mel0) / (fe["n_mels"] + 1)) / 2595.0) - 1.0)
              for i in (j, j + 1, j + 2)]
        f = k * fe["sample_rate"] / fe["n_fft"]
        return max(0.0, min((f - fj[0]) / (fj[1] - fj[0]), (fj[2] - f) / (fj[2] - fj[1])))

    worst = max(abs(W[j, k] - hand_weight(j, k))
                for j in range(fe["n_mels"]) for k in range(fe["n_fft"] // 2 + 1))
    expect(worst < 1e-12, f"mel filterbank == scalar hand computation (err {worst:.1e})")
    expect(all(W[j].max() > 0 for j in range(fe["n_mels"])), "every mel filter covers a bin")
    # filter 0, first bin above f_min=20 Hz: bin 1 (31.25 Hz) is on the rising edge of filter 0.
    expect(0.0 < W[0, 1] < 1.0 and W[0, 0] == 0.0, "filter 0 rises from f_min (bin 0 weight 0)")
    expect(np.all(W[:, -1] == 0.0), "no weight at Nyquist when f_max < sr/2")

    # Framing, window and DFT against a direct sum for one frame.
    rng = np.random.default_rng(SEED + 2)
    sig = rng.standard_normal(957)                               # 4 frames: (957-400)//160 + 1
    feats = log_mel(sig, fe).numpy()
    expect(feats.shape == (4, fe["n_mels"]), f"957 samples give 4 frames ({feats.shape})")
    t = 3
    seg = sig[t * 160: t * 160 + 400] * np.array(
        [0.5 - 0.5 * math.cos(2 * math.pi * i / 400) for i in range(400)])
    k = np.arange(257)[:, None]
    i = np.arange(400)[None, :]
    P = np.abs((seg[None, :] * np.exp(-2j * np.pi * i * k / 512)).sum(1)) ** 2
    direct = np.log(np.maximum(W @ P, fe["log_floor"]))
    err = np.abs(direct - feats[t]).max()
    expect(err < 1e-9, f"log-mel frame 3 == direct DFT sum (err {err:.1e})")
    # A pure tone lands in the band whose centre is nearest to it.
    tone = np.sin(2 * np.pi * 1000.0 * np.arange(4000) / 16000.0)
    band = int(np.argmax(log_mel(tone, fe).numpy()[5]))
    m = np.linspace(2595 * math.log10(1 + 20 / 700), 2595 * math.log10(1 + 7600 / 700), 42)
    centres = 700 * (10 ** (m[1:-1] / 2595) - 1)
    expect(band == int(np.argmin(np.abs(centres - 1000.0))), f"1 kHz tone peaks in band {band}")
    # Silence hits the floor exactly: ln(1e-10).
    sil = log_mel(np.zeros(800), fe).numpy()
    expect(np.all(sil == math.log(1e-10)), "silence gives ln(log_floor)")
    return problems


# ----------------------------------------------------------------------------------------------
# 6. Inputs, ssm-run, comparison
# ----------------------------------------------------------------------------------------------

def write_wav(path, pcm16, sample_rate):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm16.astype("<i2").tobytes())


def make_audio(n, sr, rng, silence=None):
    """Noise plus a few tones (and optionally a stretch of digital silence), as PCM16."""
    t = np.arange(n) / sr
    x = 0.05 * rng.standard_normal(n)
    for f, a in ((220.0, 0.2), (1000.0, 0.15), (3150.0, 0.1), (7000.0, 0.05)):
        x += a * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    if silence is not None:
        x[silence[0]:silence[1]] = 0.0
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def run_ssm(bin_dir, model_dir, inp, out, mode, chunk=None):
    cmd = [os.path.join(bin_dir, "ssm-run"), "--model", model_dir, "--input", inp,
           "--output", out, "--mode", mode]
    if chunk is not None:
        cmd += ["--chunk", str(chunk)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {RUN_TIMEOUT_S}s: {' '.join(cmd)}"
    if p.returncode != 0:
        return None, (f"exit {p.returncode}: {' '.join(cmd)}\n"
                      f"    stderr: {p.stderr.strip()[-2000:]}")
    try:
        a = np.load(out)
    except Exception as e:  # noqa: BLE001 - report any unreadable output
        return None, f"cannot read {out}: {e}"
    if a.dtype != np.float32 or a.ndim != 2:
        return None, f"output {out} is {a.dtype} {a.shape}, expected float32 (frames, d_out)"
    return a, None


def compare(got, ref):
    """(ok, message) for ssm-run output `got` vs the float64 reference `ref`."""
    if got.shape != ref.shape:
        return False, f"shape {got.shape} != reference {ref.shape}"
    if ref.size == 0:
        return True, "0 frames"
    if not np.all(np.isfinite(got)):
        return False, "non-finite values in output"
    diff = np.abs(got.astype(np.float64) - ref)
    scale = max(1e-6, float(np.abs(ref).max()))
    rel = float(diff.max()) / scale
    where = np.unravel_index(int(np.argmax(diff)), diff.shape)
    msg = (f"frames {got.shape[0]}/{ref.shape[0]}, rel_err {rel:.2e} "
           f"(max|ref| {scale:.3g}, worst at frame {where[0]} out {where[1]})")
    return rel <= REL_TOL, msg


def build_cases(tmp):
    """Writes models and inputs; returns [(config key, model dir, input path, name, ref, runs)]
    where runs is a list of (mode, chunk)."""
    cfgs = make_configs()
    rng = np.random.default_rng(SEED + 3)
    cases = []
    for i, key in enumerate(("a", "b", "c", "d")):
        d = os.path.join(tmp, f"model_{key}")
        write_model_dir(d, cfgs[key], init_weights(cfgs[key], SEED + 100 + i, key in SCAN_HEAVY))
    frame_inputs = {"a": ((1, [1]), (37, [1, 5]), (500, [7, 64])),
                    "b": ((1, [1]), (37, [1, 5]), (500, [7, 64])),
                    "d": ((64, [1, 3]), (300, [11]))}
    for key, inputs in frame_inputs.items():
        cfg = cfgs[key]
        d = os.path.join(tmp, f"model_{key}")
        model = load_reference(d)
        for T, chunks in inputs:
            # Frames around the configured normalisation, so (u - mean)/std is O(1).
            u = rng.standard_normal((T, cfg["d_in"]))
            fe = cfg["frontend"]
            if "std" in fe:
                u = u * np.array(fe["std"]) + np.array(fe["mean"])
            u = u.astype(np.float32)
            path = os.path.join(tmp, f"in_{key}_T{T}.npy")
            np.save(path, u)
            with torch.no_grad():
                ref = model(torch.from_numpy(u).to(DTYPE)).numpy()
            runs = [("offline", None)] + [("stream", c) for c in chunks]
            cases.append((key, d, path, f"T={T}", ref, runs))
    cfg = cfgs["c"]
    fe = cfg["frontend"]
    d = os.path.join(tmp, "model_c")
    model = load_reference(d)
    sr = fe["sample_rate"]
    audio = [
        # 957 samples: exactly 4 frames plus 77 unconsumed samples; streamed one sample at a time.
        ("short 957 samples", make_audio(957, sr, rng), [1, 37]),
        # ~3 s with 0.3 s of digital silence (features clamp to ln(log_floor)).
        ("3.0s 48123 samples", make_audio(48123, sr, rng, silence=(20000, 24800)),
         [777, 1600, 1601]),
    ]
    for j, (name, pcm, chunks) in enumerate(audio):
        path = os.path.join(tmp, f"in_c_{j}.wav")
        write_wav(path, pcm, sr)
        samples = pcm.astype(np.float64) / 32768.0            # PCM S16 -> float: s / 32768
        with torch.no_grad():
            ref = model(log_mel(samples, fe)).numpy()
        assert ref.shape[0] == n_frames(pcm.size, fe)
        runs = [("offline", None)] + [("stream", c) for c in chunks]
        cases.append(("c", d, path, name, ref, runs))
    return cases


def run_cases(bin_dir, tmp):
    """Runs ssm-run on every case, prints one line per run; returns the failed labels."""
    print(f"ssm-run vs reference (max|a-b| / max(1e-6, max|ref|) <= {REL_TOL:g}):")
    failures = []
    for key, d, inp, name, ref, runs in build_cases(tmp):
        offline = None
        for mode, chunk in runs:
            label = f"[{key}] {name} {mode}" + (f" chunk={chunk}" if chunk else "")
            out = os.path.join(tmp, "out.npy")
            if os.path.exists(out):
                os.remove(out)
            got, err = run_ssm(bin_dir, d, inp, out, mode, chunk)
            if err:
                ok, msg = False, err
            else:
                ok, msg = compare(got, ref)
                if mode == "offline":
                    offline = got
                elif offline is not None and offline.shape == got.shape and got.size:
                    # Information only (the equivalence tests own that contract): ssm-run's
                    # stream vs its own offline output, which design.md bounds by 1e-5.
                    rel = (float(np.abs(got - offline).max()) /
                           max(1e-6, float(np.abs(offline).max())))
                    msg += f"; vs offline {rel:.1e}"
            print(f"{'PASS' if ok else 'FAIL'} {label}: {msg}")
            if not ok:
                failures.append(label)
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", required=True, help="directory holding ssm-run")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="ssm_torch_ref_")
    failures = []
    try:
        print(f"torch {torch.__version__}, numpy {np.__version__}, work dir {tmp}")
        print("reference self-checks:")
        failures += [f"self-check: {p}" for p in self_check(tmp)]
        if failures:
            print("the reference itself is inconsistent; not comparing with ssm-run")
        else:
            exe = os.path.join(args.bin_dir, "ssm-run")
            if not os.access(exe, os.X_OK):
                failures.append(f"ssm-run not found or not executable at {exe}")
            else:
                failures += run_cases(args.bin_dir, tmp)
    finally:
        if args.keep_tmp:
            print(f"kept {tmp}")
        else:
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
