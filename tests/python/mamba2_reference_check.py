#!/usr/bin/env python3
"""Outside check of the Mamba-2 layer type (docs/design.md §2 and §3.2) against PyTorch float64.

Everything here is written from the docs' equations alone and shares no code with the C++ tree
(only the safetensors writer and the log-mel frontend come from ssm_torch.py, and the ssm-run
runner and comparison from torch_reference_check.py):

  1. Random Mamba-2 models (mamba_ssm's initialisation: A ~ U(1, 16), dt log-uniform in
     [1e-3, 0.1], D = 1) are written as model directories in the ssmserve/v1 format.
  2. The reference is the step recurrence of Mamba2.step(), one frame at a time, in float64:
     conv over the x, B, C rows, softplus(dt + dt_bias), per head S <- exp(delta A) S +
     delta x (outer) B, y = S C + D x, the gated RMSNorm over groups of E/G channels, out_proj.
  3. The reference checks itself first: the chunked SSD form (intra-chunk masked quadratic term
     plus inter-chunk state passing, written here from the equations) must equal the step
     recurrence for several chunk sizes, with and without an initial state; conv1d against the
     literal causal sum; causality.
  4. `ssm-run` runs on random inputs, offline (in the recurrence, and with --parallel-form in
     the chunked SSD form) and streamed in odd chunk sizes, and must match:
     max|a - b| / max(1e-6, max|b|) <= 1e-4, same frame count.

Configurations: a) frames, 2 groups, d_state 16; b) frames, norm before gate, biases, no conv
bias, d_state 5, headdim 3; c) scan-heavy weights (dt in [0.05, 1], D ~ 0), so recurrence errors
cannot hide behind the D skip; d) 16 kHz audio through the log-mel frontend, default-like sizes.

Usage: mamba2_reference_check.py --bin-dir DIR [--keep-tmp]
Exit codes: 0 all passed, 1 a check failed (named in the output), 77 torch not installed.
"""

import math
import os
import sys

try:
    import numpy as np
    import torch
except ImportError:
    print("SKIP: python3-torch not installed (apt-get install python3-torch)")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ssm_torch import log_mel, write_model_dir  # noqa: E402
from torch_reference_check import REL_TOL, check_main, check_runs, write_wav  # noqa: E402

SELF_TOL = 1e-10
SEED = 20261202
DTYPE = torch.float64
torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# 1. Configurations, tensors and random weights
# ----------------------------------------------------------------------------------------------

def mamba2_layer(**kw):
    lay = {"type": "mamba2", "d_state": 16, "d_conv": 4, "expand": 2, "headdim": 8, "ngroups": 1,
           "chunk_size": 256, "conv_bias": True, "bias": False, "norm_before_gate": False}
    lay.update(kw)
    return lay


def frames_config(d_in, d_model, n_layer, layer, d_out, act):
    return {"format": "ssmserve/v1", "frontend": {"type": "none"}, "d_in": d_in,
            "d_model": d_model, "n_layer": n_layer, "layer": layer,
            "norm": {"type": "rmsnorm", "eps": 1e-5}, "d_out": d_out, "head_activation": act}


def make_configs():
    audio = frames_config(40, 64, 2, mamba2_layer(d_state=32, headdim=16), 2, "sigmoid")
    audio["frontend"] = {"type": "log_mel", "sample_rate": 16000, "win_length": 400,
                         "hop_length": 160, "n_fft": 512, "n_mels": 40, "f_min": 20.0,
                         "f_max": 7600.0, "log_floor": 1e-10}
    return {
        "a": frames_config(7, 32, 2, mamba2_layer(ngroups=2), 3, "softmax"),
        "b": frames_config(5, 24, 2, mamba2_layer(d_state=5, d_conv=2, headdim=3,
                                                  norm_before_gate=True, bias=True,
                                                  conv_bias=False), 2, "none"),
        "c": frames_config(6, 32, 3, mamba2_layer(d_state=8, d_conv=3, ngroups=4), 2, "none"),
        "d": audio,
    }


SCAN_HEAVY = {"c"}


def dims(cfg):
    lay, D = cfg["layer"], cfg["d_model"]
    E = lay["expand"] * D
    H = E // lay["headdim"]
    G, N = lay["ngroups"], lay["d_state"]
    return E, H, lay["headdim"], G, N, lay["d_conv"]


def expected_tensors(cfg):
    """(name, shape) in the order of the docs/design.md §2 Mamba-2 table (mamba_ssm names)."""
    D, lay = cfg["d_model"], cfg["layer"]
    E, H, P, G, N, K = dims(cfg)
    conv = E + 2 * G * N
    out = [("input_proj.weight", (D, cfg["d_in"])), ("input_proj.bias", (D,))]
    for i in range(cfg["n_layer"]):
        L, m = f"backbone.layers.{i}.", f"backbone.layers.{i}.mixer."
        out.append((L + "norm.weight", (D,)))
        out.append((m + "in_proj.weight", (E + conv + H, D)))
        if lay["bias"]:
            out.append((m + "in_proj.bias", (E + conv + H,)))
        out.append((m + "conv1d.weight", (conv, 1, K)))
        if lay["conv_bias"]:
            out.append((m + "conv1d.bias", (conv,)))
        out += [(m + "dt_bias", (H,)), (m + "A_log", (H,)), (m + "D", (H,)),
                (m + "norm.weight", (E,)), (m + "out_proj.weight", (D, E))]
        if lay["bias"]:
            out.append((m + "out_proj.bias", (D,)))
    out += [("backbone.norm_f.weight", (D,)), ("head.weight", (cfg["d_out"], D)),
            ("head.bias", (cfg["d_out"],))]
    return out


def init_weights(cfg, seed, scan_heavy=False):
    rng = np.random.default_rng(seed)
    shapes = dict(expected_tensors(cfg))
    dt_min, dt_max = (0.05, 1.0) if scan_heavy else (1e-3, 0.1)
    t = {}
    for name, shape in shapes.items():
        if name.endswith("A_log"):
            v = np.log(rng.uniform(1.0, 16.0, shape))
        elif name.endswith("mixer.D"):
            v = (0.0 if scan_heavy else 1.0) + rng.uniform(-0.1, 0.1, shape)
        elif name.endswith("dt_bias"):
            dt = np.exp(rng.uniform(math.log(dt_min), math.log(dt_max), shape))
            v = dt + np.log(-np.expm1(-dt))
        elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
            v = 1.0 + rng.uniform(-0.2, 0.2, shape)
        else:
            w_shape = shapes[name.rsplit(".", 1)[0] + ".weight"]
            bound = 1.0 / math.sqrt(int(np.prod(w_shape[1:])))
            v = rng.uniform(-bound, bound, shape)
            if scan_heavy and name.endswith("in_proj.weight"):
                v = 3.0 * v
        t[name] = np.ascontiguousarray(v, dtype=np.float32)
    return t


# ----------------------------------------------------------------------------------------------
# 2. The reference: docs/design.md §3.2, float64
# ----------------------------------------------------------------------------------------------

def silu(x):
    return x * torch.sigmoid(x)


def softplus(x):
    return torch.logaddexp(x, torch.zeros_like(x))


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class Mamba2Ref:
    """One Mamba-2 mixer with its weights as float64 tensors."""

    def __init__(self, cfg, w, i):
        self.E, self.H, self.P, self.G, self.N, self.K = dims(cfg)
        lay, m = cfg["layer"], f"backbone.layers.{i}.mixer."
        self.norm_before_gate = lay["norm_before_gate"]
        self.eps = cfg["norm"]["eps"]
        g = lambda n: torch.tensor(w[m + n], dtype=DTYPE) if (m + n) in w else None  # noqa: E731
        self.in_w, self.in_b = g("in_proj.weight"), g("in_proj.bias")
        self.conv_w, self.conv_b = g("conv1d.weight")[:, 0, :], g("conv1d.bias")
        self.dt_bias, self.A, self.D = g("dt_bias"), -torch.exp(g("A_log")), g("D")
        self.norm_w = g("norm.weight")
        self.out_w, self.out_b = g("out_proj.weight"), g("out_proj.bias")

    def project(self, v):
        """z, xBC (before the conv), dt for frames v (T, d_model)."""
        p = v @ self.in_w.T + (self.in_b if self.in_b is not None else 0)
        E, conv = self.E, self.E + 2 * self.G * self.N
        return p[:, :E], p[:, E:E + conv], p[:, E + conv:]

    def conv(self, xbc):
        """silu of the causal depthwise conv; frames before 0 are 0 (torch conv1d, padded)."""
        T = xbc.shape[0]
        y = torch.nn.functional.conv1d(xbc.T[None], self.conv_w[:, None, :],
                                       self.conv_b, padding=self.K - 1, groups=xbc.shape[1])
        return silu(y[0, :, :T].T)

    def split(self, xbc):
        E, GN, T = self.E, self.G * self.N, xbc.shape[0]
        x = xbc[:, :E].reshape(T, self.H, self.P)
        B = xbc[:, E:E + GN].reshape(T, self.G, self.N)
        C = xbc[:, E + GN:].reshape(T, self.G, self.N)
        rep = self.H // self.G  # head h reads group h // rep
        return x, B.repeat_interleave(rep, 1), C.repeat_interleave(rep, 1)

    def scan_step(self, x, B, C, delta, S=None):
        """The recurrence, frame by frame: y (T, H, P) and the final S (H, P, N)."""
        T = x.shape[0]
        S = torch.zeros(self.H, self.P, self.N, dtype=DTYPE) if S is None else S.clone()
        ys = []
        for t in range(T):
            decay = torch.exp(delta[t] * self.A)                                  # (H)
            S = decay[:, None, None] * S + (delta[t][:, None] * x[t])[:, :, None] * B[t][:, None]
            ys.append(torch.einsum("hpn,hn->hp", S, C[t]))
        return torch.stack(ys), S

    def scan_chunked(self, x, B, C, delta, L, S0=None):
        """The chunked SSD form with chunks of L frames: within a chunk, y_t = sum_{s<=t}
        (C_t . B_s) exp(cum_t - cum_s) delta_s x_s plus C_t . (exp(cum_t) S_in); between
        chunks, S_out = exp(cum_L) S_in + sum_s exp(cum_L - cum_s) delta_s x_s (outer) B_s."""
        T = x.shape[0]
        S = torch.zeros(self.H, self.P, self.N, dtype=DTYPE) if S0 is None else S0.clone()
        ys = []
        for c0 in range(0, T, L):
            xs, Bs, Cs, ds = x[c0:c0 + L], B[c0:c0 + L], C[c0:c0 + L], delta[c0:c0 + L]
            n = xs.shape[0]
            cum = torch.cumsum(ds * self.A, 0)                                      # (n, H)
            seg = cum[:, None, :] - cum[None, :, :]                                 # [t, s, h]
            mask = torch.tril(torch.ones(n, n, dtype=torch.bool))[:, :, None]
            decay = torch.where(mask, torch.exp(torch.where(mask, seg, torch.zeros_like(seg))),
                                torch.zeros_like(seg))
            cb = torch.einsum("thn,shn->tsh", Cs, Bs)
            y_diag = torch.einsum("tsh,tsh,sh,shp->thp", cb, decay, ds, xs)
            y_off = torch.einsum("thn,hpn,th->thp", Cs, S, torch.exp(cum))
            ys.append(y_diag + y_off)
            w_end = torch.exp(cum[-1][None, :] - cum) * ds                          # (n, H)
            S = torch.exp(cum[-1])[:, None, None] * S + torch.einsum("sh,shp,shn->hpn", w_end,
                                                                      xs, Bs)
        return torch.cat(ys), S

    def forward(self, v):
        z, xbc, dt = self.project(v)
        x, B, C = self.split(self.conv(xbc))
        delta = softplus(dt + self.dt_bias)
        y, _ = self.scan_step(x, B, C, delta)
        y = (y + self.D[None, :, None] * x).reshape(v.shape[0], self.E)
        T, gs = v.shape[0], self.E // self.G
        if self.norm_before_gate:
            y = rmsnorm(y.reshape(T, self.G, gs), self.norm_w.reshape(self.G, gs),
                        self.eps).reshape(T, self.E) * silu(z)
        else:
            y = rmsnorm((y * silu(z)).reshape(T, self.G, gs), self.norm_w.reshape(self.G, gs),
                        self.eps).reshape(T, self.E)
        return y @ self.out_w.T + (self.out_b if self.out_b is not None else 0)


class ModelRef:
    def __init__(self, cfg, w):
        g = lambda n: torch.tensor(w[n], dtype=DTYPE)  # noqa: E731
        self.cfg, self.eps = cfg, cfg["norm"]["eps"]
        self.in_w, self.in_b = g("input_proj.weight"), g("input_proj.bias")
        self.norms = [g(f"backbone.layers.{i}.norm.weight") for i in range(cfg["n_layer"])]
        self.mixers = [Mamba2Ref(cfg, w, i) for i in range(cfg["n_layer"])]
        self.norm_f = g("backbone.norm_f.weight")
        self.head_w, self.head_b = g("head.weight"), g("head.bias")

    def __call__(self, u):
        h = u @ self.in_w.T + self.in_b
        for norm, mixer in zip(self.norms, self.mixers):
            h = h + mixer.forward(rmsnorm(h, norm, self.eps))
        y = rmsnorm(h, self.norm_f, self.eps) @ self.head_w.T + self.head_b
        act = self.cfg["head_activation"]
        if act == "softmax":
            return torch.softmax(y, -1)
        if act == "sigmoid":
            return torch.sigmoid(y)
        return y


# ----------------------------------------------------------------------------------------------
# 3. Self-checks
# ----------------------------------------------------------------------------------------------

def self_check(cfgs):
    problems = []

    def expect(ok, what):
        print(f"  self-check {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            problems.append(what)

    torch.manual_seed(SEED)
    for key in ("a", "b", "c"):
        cfg = cfgs[key]
        model = ModelRef(cfg, init_weights(cfg, SEED + 10, key in SCAN_HEAVY))
        mixer = model.mixers[0]
        chunk_err = conv_err = 0.0
        for T in (1, 2, 9, 37):
            v = torch.randn(T, cfg["d_model"], dtype=DTYPE)
            z, xbc, dt = mixer.project(v)
            lit = torch.stack([silu((mixer.conv_b if mixer.conv_b is not None else 0) +
                                    sum(mixer.conv_w[:, k] * xbc[t - mixer.K + 1 + k]
                                        for k in range(mixer.K) if t - mixer.K + 1 + k >= 0))
                               for t in range(T)])
            conv_err = max(conv_err, (lit - mixer.conv(xbc)).abs().max().item())
            x, B, C = mixer.split(mixer.conv(xbc))
            delta = softplus(dt + mixer.dt_bias)
            S0 = torch.randn(mixer.H, mixer.P, mixer.N, dtype=DTYPE)
            for init in (None, S0):
                y1, s1 = mixer.scan_step(x, B, C, delta, init)
                for L in (1, 4, 7, 64):
                    y2, s2 = mixer.scan_chunked(x, B, C, delta, L, init)
                    scale = max(y1.abs().max().item(), 1e-30)
                    chunk_err = max(chunk_err, (y1 - y2).abs().max().item() / scale,
                                    (s1 - s2).abs().max().item() / s1.abs().max().item())
        expect(conv_err < SELF_TOL, f"[{key}] conv1d == causal sum (err {conv_err:.1e})")
        expect(chunk_err < SELF_TOL, f"[{key}] chunked SSD == step recurrence, chunks 1/4/7/64, "
                                     f"with and without an initial state (rel err {chunk_err:.1e})")
        u = torch.randn(23, cfg["d_in"], dtype=DTYPE)
        err = (model(u)[:11] - model(u[:11])).abs().max().item()
        expect(err < SELF_TOL, f"[{key}] prefix outputs equal (causal), err {err:.1e}")
    return problems


# ----------------------------------------------------------------------------------------------
# 4. ssm-run against the reference
# ----------------------------------------------------------------------------------------------

def run_cases(bin_dir, tmp, cfgs):
    print(f"ssm-run vs reference (max|a-b| / max(1e-6, max|ref|) <= {REL_TOL:g}):")
    rng = np.random.default_rng(SEED + 3)
    failures = []
    for i, key in enumerate(sorted(cfgs)):
        cfg = cfgs[key]
        d = os.path.join(tmp, f"model_{key}")
        w = init_weights(cfg, SEED + 100 + i, key in SCAN_HEAVY)
        write_model_dir(d, cfg, w)
        model = ModelRef(cfg, w)
        if cfg["frontend"]["type"] == "none":
            inputs = []
            for T, chunks in ((1, [1]), (37, [1, 5]), (400, [7, 64])):
                u = rng.standard_normal((T, cfg["d_in"])).astype(np.float32)
                path = os.path.join(tmp, f"in_{key}_T{T}.npy")
                np.save(path, u)
                with torch.no_grad():
                    ref = model(torch.from_numpy(u).to(DTYPE)).numpy()
                inputs.append((f"T={T}", path, ref, chunks))
        else:
            fe = cfg["frontend"]
            n = 24037
            t = np.arange(n) / fe["sample_rate"]
            x = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * 440.0 * t)
            pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
            path = os.path.join(tmp, f"in_{key}.wav")
            write_wav(path, pcm, fe["sample_rate"])
            with torch.no_grad():
                ref = model(log_mel(pcm.astype(np.float64) / 32768.0, fe)).numpy()
            inputs = [(f"{n} samples", path, ref, [777, 1601])]
        for name, path, ref, chunks in inputs:
            runs = ([("offline", None, []), ("offline", None, ["--parallel-form"])] +
                    [("stream", c, []) for c in chunks])
            check_runs(bin_dir, d, path, ref, runs, tmp, f"[{key}] {name}", failures)
    return failures


def main():
    return check_main(__doc__, "mamba2_check_", "Mamba-2", make_configs, self_check, run_cases)


if __name__ == "__main__":
    sys.exit(main())
