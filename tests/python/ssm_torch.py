"""PyTorch implementation of the ssmserve/v1 model format (docs/design.md sections 2 and 3).

Shared by the outside check (tests/python/torch_reference_check.py), the speech-activity recipe
(models/speech-activity/) and its engine-equivalence test. Written from docs/design.md; it shares
no code with the C++ tree.

  - expected_tensors(cfg): the tensor names and shapes of a configuration (mamba_ssm names);
  - write_safetensors / read_safetensors / write_model_dir / read_model_dir;
  - SSMModel(cfg, dtype): input_proj -> backbone.layers[i] (norm, mixer) -> backbone.norm_f -> head,
    with the exact Mamba-1 mixer; inputs (T, d_in) or batched (B, T, d_in);
  - log_mel(samples, fe): the exact log-mel frontend, (n,) or (B, n) samples -> (.., T, n_mels).

The selective scan is the sequential recurrence H_t = exp(D_t A) H_{t-1} + (D_t s_t) B_t, one step
per frame (vectorised over batch, channels and states), with a hand-written backward pass so that
training in float32 on a CPU is practical. It is exact: the operations of the spec, in order.
"""

import json
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# Tensor names (docs/design.md section 2)
# ----------------------------------------------------------------------------------------------

def expected_tensors(cfg):
    """(name, shape) of every tensor, in the order of the docs/design.md section 2 table.

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


# ----------------------------------------------------------------------------------------------
# safetensors (F32 written; F32/F16/BF16 read)
# ----------------------------------------------------------------------------------------------

def write_safetensors(path, tensors):
    """8-byte LE header length, JSON header {name: {dtype, shape, data_offsets}}, padded with
    spaces to a multiple of 8, then the contiguous little-endian float32 data, in dict order."""
    header, blobs, offset = {}, [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(arr)),
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
    """{name: float32 numpy array}, in file order."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        if info["dtype"] == "F32":
            a = np.frombuffer(data[b:e], dtype="<f4")
        elif info["dtype"] == "F16":
            a = np.frombuffer(data[b:e], dtype="<f2").astype(np.float32)
        elif info["dtype"] == "BF16":
            a = (np.frombuffer(data[b:e], dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        out[name] = a.reshape(info["shape"]).copy()
    return out


def write_model_dir(path, cfg, tensors):
    """config.json + model.safetensors (tensors in expected_tensors order when all present)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(path, "model.safetensors"), tensors)


def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# The model (docs/design.md section 3), mamba_ssm module names
# ----------------------------------------------------------------------------------------------

def silu(x):
    return x * torch.sigmoid(x)


def softplus(x):
    return torch.logaddexp(x, torch.zeros_like(x))  # ln(1 + e^x), exact (no threshold)


class _SelectiveScan(torch.autograd.Function):
    """y_t = H_t . C_t with H_t = exp(Delta_t A) H_{t-1} + (Delta_t s_t) (x) B_t, H_{-1} = 0.

    s, delta: (Bt, T, E); A: (E, N); B, C: (Bt, T, N) -> y (Bt, T, E). The decays
    a_t = exp(Delta_t A) and inputs b_t = (Delta_t s_t) (x) B_t are formed for all t at once; the
    time loop is one multiply-add per frame, H_t = a_t H_{t-1} + b_t. The backward pass runs the
    adjoint recurrence G_t = dL/dH_t + a_{t+1} G_{t+1} from the last frame to the first; every
    other gradient is a product with the stored states. The states are held as (Bt, T, N, E),
    E innermost, so that every sum runs over a dimension that is not the innermost short N
    (torch's CPU reductions over a short innermost dimension are several times slower)."""

    @staticmethod
    def forward(ctx, s, delta, A, B, C):
        T = s.shape[1]
        At = A.t().contiguous()                                            # (N, E)
        a = torch.exp(delta.unsqueeze(2) * At)                             # (Bt, T, N, E)
        Hs = B.unsqueeze(-1) * (delta * s).unsqueeze(2)                    # b_t, then H_t
        for t in range(1, T):
            torch.addcmul(Hs[:, t], a[:, t], Hs[:, t - 1], out=Hs[:, t])
        y = (Hs * C.unsqueeze(-1)).sum(2)
        ctx.save_for_backward(s, delta, At, B, C, a, Hs)
        return y

    @staticmethod
    def backward(ctx, gy):
        s, delta, At, B, C, a, Hs = ctx.saved_tensors
        T = s.shape[1]
        gy = gy.contiguous()
        G = C.unsqueeze(-1) * gy.unsqueeze(2)                              # dL/dH_t (direct)
        for t in range(T - 2, -1, -1):
            torch.addcmul(G[:, t], a[:, t + 1], G[:, t + 1], out=G[:, t])
        gC = (Hs * gy.unsqueeze(2)).sum(-1)
        du = delta * s
        gB = (G * du.unsqueeze(2)).sum(-1)
        g_du = (G * B.unsqueeze(-1)).sum(2)
        g_delta = g_du * s
        gA = torch.zeros_like(At)
        if T > 1:
            gx = G[:, 1:] * Hs[:, :-1] * a[:, 1:]                          # dL/d(Delta_t A)
            g_delta[:, 1:] += (gx * At).sum(2)
            gA = (gx * delta[:, 1:].unsqueeze(2)).sum((0, 1))
        return g_du * delta, g_delta, gA.t(), gB, gC


def linear(layer, x):
    """layer(x) for an nn.Linear. float32 inputs go through a 1x1 conv1d (oneDNN), the same
    sum of products as F.linear; Debian's torch uses the generic reference BLAS for matmul,
    which is an order of magnitude slower for training."""
    if x.dtype != torch.float32 or x.dim() < 2 or x.shape[:-1].numel() < 1024:
        return layer(x)
    lead, d = x.shape[:-1], x.shape[-1]
    xt = x.reshape(1, -1, d).transpose(1, 2)                              # (1, d, rows)
    y = F.conv1d(xt, layer.weight[:, :, None], layer.bias)
    return y.transpose(1, 2).reshape(*lead, layer.weight.shape[0])


def selective_scan(s, delta, A, B, C):
    """H_t . C_t for all t (..., T, E), with H_t = exp(Delta_t A) H_{t-1} + (Delta_t s_t) B_t."""
    lead, (T, E), N = s.shape[:-2], s.shape[-2:], A.shape[1]
    y = _SelectiveScan.apply(s.reshape(-1, T, E).contiguous(),
                             delta.reshape(-1, T, E).contiguous(), A,
                             B.reshape(-1, T, N).contiguous(), C.reshape(-1, T, N).contiguous())
    return y.reshape(*lead, T, E)


class RMSNorm(nn.Module):
    def __init__(self, d, eps, dtype=torch.float32):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d, dtype=dtype))

    def forward(self, x):  # x * rsqrt(mean(x^2) + eps) * w
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mixer(nn.Module):
    """The Mamba-1 selective SSM exactly as written in docs/design.md section 3."""

    def __init__(self, d_model, lay, dtype=torch.float32):
        super().__init__()
        self.E = E = lay["expand"] * d_model
        self.R, self.N, self.K = lay["dt_rank"], lay["d_state"], lay["d_conv"]
        kw = dict(dtype=dtype)
        self.in_proj = nn.Linear(d_model, 2 * E, bias=lay["bias"], **kw)
        self.conv1d = nn.Conv1d(E, E, self.K, groups=E, padding=self.K - 1,
                                bias=lay["conv_bias"], **kw)
        self.x_proj = nn.Linear(E, self.R + 2 * self.N, bias=False, **kw)
        self.dt_proj = nn.Linear(self.R, E, bias=True, **kw)
        self.A_log = nn.Parameter(torch.zeros(E, self.N, **kw))
        self.D = nn.Parameter(torch.ones(E, **kw))
        self.out_proj = nn.Linear(E, d_model, bias=lay["bias"], **kw)

    def pre_scan(self, v):
        """Everything before the recurrence, for v (..., T, d_model): x, c, s, delta, A, B, C, z."""
        T = v.shape[-2]
        x, z = linear(self.in_proj, v).split([self.E, self.E], dim=-1)  # x first
        # Causal depthwise conv: padding K-1 on both sides, keep the first T outputs, so
        # output t sees x_{t-K+1} .. x_t with x_{<0} = 0 (conv1d is a cross-correlation).
        lead = x.shape[:-2]
        xc = x.reshape(-1, T, self.E).transpose(1, 2)                     # (B', E, T)
        c = self.conv1d(xc)[:, :, :T].transpose(1, 2).reshape(*lead, T, self.E)
        s = silu(c)
        dtr, B, C = linear(self.x_proj, s).split([self.R, self.N, self.N], dim=-1)
        delta = softplus(linear(self.dt_proj, dtr))                        # (..., T, E)
        A = -torch.exp(self.A_log)                                         # (E, N)
        return x, c, s, delta, A, B, C, z

    def scan(self, s, delta, A, B, C):
        """H_t = exp(Delta_t A) H_{t-1} + (Delta_t s_t) (x) B_t, H_{-1} = 0; returns H_t . C_t."""
        return selective_scan(s, delta, A, B, C)

    def forward(self, v):
        _, _, s, delta, A, B, C, z = self.pre_scan(v)
        o = (self.scan(s, delta, A, B, C) + self.D * s) * silu(z)
        return linear(self.out_proj, o)


class Block(nn.Module):
    def __init__(self, cfg, dtype=torch.float32):
        super().__init__()
        self.norm = RMSNorm(cfg["d_model"], cfg["norm"]["eps"], dtype)
        self.mixer = Mixer(cfg["d_model"], cfg["layer"], dtype)


class Backbone(nn.Module):
    def __init__(self, cfg, dtype=torch.float32):
        super().__init__()
        self.layers = nn.ModuleList([Block(cfg, dtype) for _ in range(cfg["n_layer"])])
        self.norm_f = RMSNorm(cfg["d_model"], cfg["norm"]["eps"], dtype)


class SSMModel(nn.Module):
    """u (T, d_in) or (B, T, d_in) frames after the frontend -> (.., T, d_out).

    forward(u, activation=False) returns the head's logits without head_activation (training)."""

    def __init__(self, cfg, dtype=torch.float32):
        super().__init__()
        self.cfg = cfg
        fe = cfg["frontend"]
        self.input_proj = nn.Linear(cfg["d_in"], cfg["d_model"], dtype=dtype)
        self.backbone = Backbone(cfg, dtype)
        self.head = nn.Linear(cfg["d_model"], cfg["d_out"], dtype=dtype)
        # Frame normalisation (frontend "none"): u <- (u - mean) / std, per feature.
        self.mean = torch.tensor(fe["mean"], dtype=dtype) if "mean" in fe else None
        self.std = torch.tensor(fe["std"], dtype=dtype) if "std" in fe else None

    def forward(self, u, activation=True):
        if self.mean is not None:
            u = u - self.mean
        if self.std is not None:
            u = u / self.std
        h = linear(self.input_proj, u)
        for layer in self.backbone.layers:
            h = h + layer.mixer(layer.norm(h))
        y = linear(self.head, self.backbone.norm_f(h))
        act = self.cfg["head_activation"] if activation else "none"
        if act == "sigmoid":
            y = torch.sigmoid(y)
        elif act == "softmax":
            y = torch.softmax(y, dim=-1)
        return y


def load_model(model_dir, dtype=torch.float64):
    """The model of a directory, evaluated in `dtype`; strict, so names and shapes must match."""
    cfg = read_config(model_dir)
    model = SSMModel(cfg, dtype)
    state = {k: torch.from_numpy(v).to(dtype)
             for k, v in read_safetensors(os.path.join(model_dir, "model.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


def export_tensors(model):
    """{name: float32 numpy} in expected_tensors order (the names mamba_ssm uses)."""
    sd = model.state_dict()
    return {name: sd[name].detach().to(torch.float32).cpu().numpy()
            for name, _ in expected_tensors(model.cfg)}


# ----------------------------------------------------------------------------------------------
# The exact log-mel frontend (docs/design.md section 3)
# ----------------------------------------------------------------------------------------------

def hann_periodic(win):
    i = np.arange(win, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * i / win)


def mel_filterbank(fe):
    """(n_mels, n_fft/2 + 1) HTK triangles, no area normalisation, float64."""
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


def frame_starts(T, fe):
    """First sample of each frame: frame t covers samples [t*hop, t*hop + win)."""
    return np.arange(T) * fe["hop_length"]


def log_mel(samples, fe, dtype=torch.float64):
    """samples (n,) or (B, n) (numpy or torch) -> features (.., frames, n_mels) in `dtype`.
    Frames are cut by hand: frame t is samples [t*hop, t*hop + win); no centring, padding,
    dither or pre-emphasis."""
    x = torch.as_tensor(np.asarray(samples) if not torch.is_tensor(samples) else samples)
    x = x.to(dtype)
    win, hop, nfft = fe["win_length"], fe["hop_length"], fe["n_fft"]
    T = n_frames(x.shape[-1], fe)
    if T == 0:
        return torch.zeros(*x.shape[:-1], 0, fe["n_mels"], dtype=dtype)
    frames = x.unfold(-1, win, hop)[..., :T, :]                             # (.., T, win)
    frames = frames * torch.from_numpy(hann_periodic(win)).to(dtype)
    P = torch.fft.rfft(frames, n=nfft, dim=-1).abs().pow(2)                 # zero-padded to n_fft
    E = P @ torch.from_numpy(mel_filterbank(fe)).to(dtype).t()
    return torch.log(torch.clamp(E, min=fe["log_floor"]))
