#!/usr/bin/env python3
"""Outside check of linear attention, RetNet and GLA (docs/design.md §2 and §3.3-3.5) against
PyTorch float64.

Everything here is written from the docs' equations alone and shares no code with the C++ tree
(the safetensors writer comes from ssm_torch.py; the ssm-run runner, comparison, config
skeleton and the plain functions from the two other outside checks):

  1. Random models of each type (fla's block: attn_norm -> attn -> add, then mlp_norm -> gated
     MLP -> add) are written as model directories in the ssmserve/v1 format.
  2. The reference runs each layer frame by frame in float64: q, k, v (and g, and GLA's
     low-rank gate) projections; the feature map (linear attention); the rotation of q and k at
     the frame's position (RetNet); per head S <- diag(exp(a)) S + k v^T, o = S^T (q / sqrt(K));
     the per-head output norm with its swish gate; o_proj; the MLP.
  3. The reference checks itself first: the chunked form (intra-chunk masked product plus the
     carried state, written here from the equations) equals the recurrence for several chunk
     sizes, with and without an initial state; the rotation keeps norms and makes q_m . k_n
     depend on m - n only; causality.
  4. `ssm-run` runs on random inputs, offline (in the recurrence, and with --parallel-form in
     the chunked form) and streamed in odd chunk sizes, and must match:
     max|a - b| / max(1e-6, max|b|) <= 1e-4, same frame count.

Usage: gated_linear_reference_check.py --bin-dir DIR [--keep-tmp]
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
from mamba2_reference_check import frames_config, rmsnorm, silu  # noqa: E402
from ssm_torch import write_model_dir  # noqa: E402
from torch_reference_check import REL_TOL, check_main, check_runs  # noqa: E402

SELF_TOL = 1e-10
SEED = 20261203
DTYPE = torch.float64
torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# 1. Configurations, tensors and random weights
# ----------------------------------------------------------------------------------------------

DEFAULTS = {
    "linear_attn": {"num_heads": 8, "expand_k": 1.0, "expand_v": 1.0, "feature_map": "elu",
                    "output_norm": "rmsnorm"},
    "retnet": {"num_heads": 8, "expand_k": 1.0, "expand_v": 2.0, "use_output_gate": True},
    "gla": {"num_heads": 4, "expand_k": 0.5, "expand_v": 1.0, "use_output_gate": True,
            "gate_logit_normalizer": 16, "gate_low_rank_dim": 16},
}


def layer(kind, **kw):
    lay = {"type": kind, **DEFAULTS[kind], "hidden_ratio": 4, "intermediate_size": "auto",
           "chunk_size": 64}
    lay.update(kw)
    return lay


def make_configs():
    return {
        "la_a": frames_config(7, 32, 2, layer("linear_attn", num_heads=4, intermediate_size=48,
                                              chunk_size=16), 3, "softmax"),
        "la_b": frames_config(5, 24, 2, layer("linear_attn", num_heads=3, expand_v=2.0,
                                              feature_map="relu", output_norm="identity",
                                              intermediate_size=0), 2, "none"),
        "ret_a": frames_config(6, 32, 2, layer("retnet", num_heads=2), 2, "none"),
        "ret_b": frames_config(6, 32, 2, layer("retnet", num_heads=4, expand_k=0.5,
                                               use_output_gate=False, intermediate_size=24,
                                               chunk_size=7), 3, "softmax"),
        "gla_a": frames_config(7, 32, 2, layer("gla", num_heads=2, gate_low_rank_dim=4,
                                               intermediate_size=40, chunk_size=16), 2, "none"),
        "gla_b": frames_config(5, 32, 3, layer("gla", num_heads=2, gate_low_rank_dim=6,
                                               gate_logit_normalizer=4, clamp_min=-0.3,
                                               use_output_gate=False, intermediate_size=0),
                               2, "sigmoid"),
    }


def dims(cfg):
    lay, D = cfg["layer"], cfg["d_model"]
    H = lay["num_heads"]
    Kt, Vt = round(D * lay["expand_k"]), round(D * lay["expand_v"])
    return H, Kt, Vt, Kt // H, Vt // H


def mlp_size(cfg):
    lay, D = cfg["layer"], cfg["d_model"]
    if lay["intermediate_size"] != "auto":
        return lay["intermediate_size"]
    return 256 * ((int(D * lay["hidden_ratio"] * 2 / 3) + 255) // 256)


def gated(lay):
    return lay["type"] != "linear_attn" and lay["use_output_gate"]


def output_norm(lay):
    if lay["type"] == "linear_attn":
        return "attn.norm" if lay["output_norm"] == "rmsnorm" else None
    return "attn.g_norm_swish_gate" if lay["use_output_gate"] else "attn.g_norm"


def expected_tensors(cfg):
    """(name, shape) in the order of the docs/design.md §2 table (fla names)."""
    D, lay = cfg["d_model"], cfg["layer"]
    H, Kt, Vt, K, V = dims(cfg)
    out = [("input_proj.weight", (D, cfg["d_in"])), ("input_proj.bias", (D,))]
    for i in range(cfg["n_layer"]):
        L, a = f"backbone.layers.{i}.", f"backbone.layers.{i}.attn."
        out += [(L + "attn_norm.weight", (D,)), (a + "q_proj.weight", (Kt, D)),
                (a + "k_proj.weight", (Kt, D)), (a + "v_proj.weight", (Vt, D))]
        if gated(lay):
            out.append((a + "g_proj.weight", (Vt, D)))
        if lay["type"] == "gla":
            r = lay["gate_low_rank_dim"]
            out += [(a + "gk_proj.0.weight", (r, D)), (a + "gk_proj.1.weight", (Kt, r)),
                    (a + "gk_proj.1.bias", (Kt,))]
        if output_norm(lay):
            out.append((L + output_norm(lay) + ".weight", (V,)))
        out.append((a + "o_proj.weight", (D, Vt)))
        n = mlp_size(cfg)
        if n:
            out += [(L + "mlp_norm.weight", (D,)), (L + "mlp.gate_proj.weight", (n, D)),
                    (L + "mlp.up_proj.weight", (n, D)), (L + "mlp.down_proj.weight", (D, n))]
    out += [("backbone.norm_f.weight", (D,)), ("head.weight", (cfg["d_out"], D)),
            ("head.bias", (cfg["d_out"],))]
    return out


def init_weights(cfg, seed):
    rng = np.random.default_rng(seed)
    shapes = dict(expected_tensors(cfg))
    t = {}
    for name, shape in shapes.items():
        if "norm" in name.rsplit(".", 1)[0].rsplit(".", 1)[-1]:
            v = 1.0 + rng.uniform(-0.2, 0.2, shape)
        else:
            w_shape = shapes[name.rsplit(".", 1)[0] + ".weight"]
            bound = 1.0 / math.sqrt(int(np.prod(w_shape[1:])))
            v = rng.uniform(-bound, bound, shape)
        t[name] = np.ascontiguousarray(v, dtype=np.float32)
    return t


# ----------------------------------------------------------------------------------------------
# 2. The reference: docs/design.md §3.3-3.5, float64
# ----------------------------------------------------------------------------------------------

def feature_map(name, x):
    if name == "relu":
        return torch.relu(x)
    if name == "elu":
        return torch.nn.functional.elu(x) + 1
    return x


def rotate(x, positions, base=10000.0):
    """x (T, H, D) with the halves of each head rotated by positions (T) * base^(-2i/D)."""
    D = x.shape[-1]
    half = D // 2
    inv = base ** (-2.0 * torch.arange(half, dtype=DTYPE) / D)
    theta = positions.to(DTYPE)[:, None] * inv[None, :]              # (T, half)
    c, s = torch.cos(theta)[:, None, :], torch.sin(theta)[:, None, :]
    x0, x1 = x[..., :half], x[..., half:]
    return torch.cat([x0 * c - x1 * s, x1 * c + x0 * s], -1)


class AttnRef:
    """One layer's mixer with its weights as float64 tensors."""

    def __init__(self, cfg, w, i):
        self.lay = lay = cfg["layer"]
        self.H, self.Kt, self.Vt, self.K, self.V = dims(cfg)
        self.eps = cfg["norm"]["eps"]
        L, a = f"backbone.layers.{i}.", f"backbone.layers.{i}.attn."
        g = lambda n: torch.tensor(w[n], dtype=DTYPE) if n in w else None  # noqa: E731
        self.wq, self.wk, self.wv = g(a + "q_proj.weight"), g(a + "k_proj.weight"), \
            g(a + "v_proj.weight")
        self.wg, self.wo = g(a + "g_proj.weight"), g(a + "o_proj.weight")
        self.gk0, self.gk1, self.gk1_b = g(a + "gk_proj.0.weight"), g(a + "gk_proj.1.weight"), \
            g(a + "gk_proj.1.bias")
        self.norm_w = g(L + output_norm(lay) + ".weight") if output_norm(lay) else None
        if lay["type"] == "retnet":  # gamma_h = 1 - 2^(-5-h)
            self.log_gamma = torch.log1p(-torch.pow(2.0, -5.0 - torch.arange(self.H,
                                                                              dtype=DTYPE)))

    def inputs(self, x, start=0):
        """q (scaled), k, v (T, H, K|V) and the log decay a (T, H, K) for frames x at positions
        start, start + 1, ..."""
        T, H = x.shape[0], self.H
        q = (x @ self.wq.T).reshape(T, H, self.K)
        k = (x @ self.wk.T).reshape(T, H, self.K)
        v = (x @ self.wv.T).reshape(T, H, self.V)
        kind = self.lay["type"]
        if kind == "linear_attn":
            q, k = feature_map(self.lay["feature_map"], q), feature_map(self.lay["feature_map"], k)
            a = torch.zeros(T, H, self.K, dtype=DTYPE)
        elif kind == "retnet":
            pos = torch.arange(start, start + T)
            q, k = rotate(q, pos), rotate(k, pos)
            a = self.log_gamma[None, :, None].expand(T, H, self.K)
        else:
            logits = ((x @ self.gk0.T) @ self.gk1.T + self.gk1_b).reshape(T, H, self.K)
            a = torch.nn.functional.logsigmoid(logits) / self.lay["gate_logit_normalizer"]
            if "clamp_min" in self.lay:
                a = torch.clamp_min(a, self.lay["clamp_min"])
        return q / math.sqrt(self.K), k, v, a

    def scan_step(self, q, k, v, a, S=None):
        """The recurrence frame by frame: o (T, H, V) and the final S (H, K, V)."""
        S = torch.zeros(self.H, self.K, self.V, dtype=DTYPE) if S is None else S.clone()
        os_ = []
        for t in range(q.shape[0]):
            S = torch.exp(a[t])[:, :, None] * S + k[t][:, :, None] * v[t][:, None, :]
            os_.append(torch.einsum("hkv,hk->hv", S, q[t]))
        return torch.stack(os_), S

    def scan_chunked(self, q, k, v, a, L, S0=None):
        """The chunked form, chunks of L frames: o_t = sum_{u<=t} (sum_k q_tk k_uk
        exp(G_tk - G_uk)) v_u + (q_t exp(G_t)) . S_in; S_out = exp(G_end) S_in +
        sum_u (exp(G_end - G_u) k_u) v_u^T, with G the cumulative log decay in the chunk."""
        S = torch.zeros(self.H, self.K, self.V, dtype=DTYPE) if S0 is None else S0.clone()
        os_ = []
        for c0 in range(0, q.shape[0], L):
            qs, ks, vs, G = q[c0:c0 + L], k[c0:c0 + L], v[c0:c0 + L], torch.cumsum(a[c0:c0 + L], 0)
            n = qs.shape[0]
            diff = G[:, None] - G[None, :]                                   # [t, u, h, k]
            mask = torch.tril(torch.ones(n, n, dtype=torch.bool))[:, :, None, None]
            decay = torch.where(mask, torch.exp(torch.where(mask, diff, torch.zeros_like(diff))),
                                torch.zeros_like(diff))
            A = torch.einsum("thk,uhk,tuhk->tuh", qs, ks, decay)
            o = torch.einsum("tuh,uhv->thv", A, vs) + torch.einsum("thk,hkv->thv",
                                                                   qs * torch.exp(G), S)
            os_.append(o)
            S = torch.exp(G[-1])[:, :, None] * S + torch.einsum("uhk,uhv->hkv",
                                                                torch.exp(G[-1] - G) * ks, vs)
        return torch.cat(os_), S

    def forward(self, x):
        T = x.shape[0]
        o, _ = self.scan_step(*self.inputs(x))
        if self.norm_w is not None:
            o = rmsnorm(o, self.norm_w, self.eps)
        o = o.reshape(T, self.Vt)
        if self.wg is not None:
            o = o * silu(x @ self.wg.T)
        return o @ self.wo.T


class ModelRef:
    def __init__(self, cfg, w):
        g = lambda n: torch.tensor(w[n], dtype=DTYPE)  # noqa: E731
        self.cfg, self.eps = cfg, cfg["norm"]["eps"]
        self.in_w, self.in_b = g("input_proj.weight"), g("input_proj.bias")
        self.blocks = []
        for i in range(cfg["n_layer"]):
            L = f"backbone.layers.{i}."
            mlp = None
            if mlp_size(cfg):
                mlp = [g(L + n) for n in ("mlp_norm.weight", "mlp.gate_proj.weight",
                                          "mlp.up_proj.weight", "mlp.down_proj.weight")]
            self.blocks.append((g(L + "attn_norm.weight"), AttnRef(cfg, w, i), mlp))
        self.norm_f = g("backbone.norm_f.weight")
        self.head_w, self.head_b = g("head.weight"), g("head.bias")

    def __call__(self, u):
        h = u @ self.in_w.T + self.in_b
        for attn_norm, attn, mlp in self.blocks:
            h = h + attn.forward(rmsnorm(h, attn_norm, self.eps))
            if mlp:
                norm, wg, wu, wd = mlp
                x = rmsnorm(h, norm, self.eps)
                h = h + (silu(x @ wg.T) * (x @ wu.T)) @ wd.T
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
    for key in sorted(cfgs):
        cfg = cfgs[key]
        model = ModelRef(cfg, init_weights(cfg, SEED + 10))
        attn = model.blocks[0][1]
        chunk_err = 0.0
        for T in (1, 2, 9, 37):
            q, k, v, a = attn.inputs(torch.randn(T, cfg["d_model"], dtype=DTYPE), start=5)
            S0 = torch.randn(attn.H, attn.K, attn.V, dtype=DTYPE)
            for init in (None, S0):
                o1, s1 = attn.scan_step(q, k, v, a, init)
                for L in (1, 4, 7, 64):
                    o2, s2 = attn.scan_chunked(q, k, v, a, L, init)
                    scale = max(o1.abs().max().item(), 1e-30)
                    chunk_err = max(chunk_err, (o1 - o2).abs().max().item() / scale,
                                    (s1 - s2).abs().max().item() / s1.abs().max().item())
        expect(chunk_err < SELF_TOL, f"[{key}] chunked form == recurrence, chunks 1/4/7/64, "
                                     f"with and without an initial state (rel err {chunk_err:.1e})")
        u = torch.randn(23, cfg["d_in"], dtype=DTYPE)
        err = (model(u)[:11] - model(u[:11])).abs().max().item()
        expect(err < SELF_TOL, f"[{key}] prefix outputs equal (causal), err {err:.1e}")
    x = torch.randn(6, 3, 8, dtype=DTYPE)
    y = torch.randn(6, 3, 8, dtype=DTYPE)
    pos = torch.tensor([0, 1, 7, 100, 12345, 16777219])
    rx, ry = rotate(x, pos), rotate(y, pos + 5)
    norm_err = (rx.norm(dim=-1) - x.norm(dim=-1)).abs().max().item()
    expect(norm_err < SELF_TOL, f"rotation keeps norms (err {norm_err:.1e})")
    dots = torch.einsum("thd,thd->th", rx, ry)  # q at p, k at p + 5: the same for every p
    ref = torch.einsum("thd,thd->th", rotate(x, torch.zeros(6, dtype=torch.long)),
                       rotate(y, torch.full((6,), 5)))
    rel_err = (dots - ref).abs().max().item()
    expect(rel_err < 1e-8, f"rotated q_m . k_n depends on m - n only (err {rel_err:.1e})")
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
        w = init_weights(cfg, SEED + 100 + i)
        write_model_dir(d, cfg, w)
        model = ModelRef(cfg, w)
        for T, chunks in ((1, [1]), (37, [1, 5]), (700, [7, 64, 333])):
            u = rng.standard_normal((T, cfg["d_in"])).astype(np.float32)
            path = os.path.join(tmp, f"in_{key}_T{T}.npy")
            np.save(path, u)
            with torch.no_grad():
                ref = model(torch.from_numpy(u).to(DTYPE)).numpy()
            runs = ([("offline", None, []), ("offline", None, ["--parallel-form"])] +
                    [("stream", c, []) for c in chunks])
            check_runs(bin_dir, d, path, ref, runs, tmp, f"[{key}] T={T}", failures)
    return failures


def main():
    return check_main(__doc__, "gated_linear_check_", "linear attention, RetNet and GLA",
                      make_configs, self_check, run_cases)


if __name__ == "__main__":
    sys.exit(main())
