// Backend::GatedRmsNorm: RMSNorm over groups of channels with a SiLU gate (Mamba-2's output
// norm, docs/design.md §3.2).
#pragma once

namespace ssm {

// Per row, per group of group_size channels (w indexed by channel):
//   gate_first (norm_before_gate false): out = rmsnorm(x * silu(z)) * w
//   norm first (norm_before_gate true):  out = rmsnorm(x) * w * silu(z)
//   no gate (z null):                    out = rmsnorm(x) * w
// where rmsnorm(v) = v * rsqrt(mean over the group of v^2 + eps).
struct GatedRmsNormArgs {
  int channels = 0;    // C
  int group_size = 0;  // dividing C
  bool norm_before_gate = false;
  float eps = 1e-5f;
  const float* x = nullptr;  // (rows, C), ld_x
  int ld_x = 0;
  const float* z = nullptr;  // (rows, C), ld_z; nullptr: no gate
  int ld_z = 0;
  const float* w = nullptr;  // (C)
  float* out = nullptr;      // (rows, C), ld_out; may alias x when ld_out == ld_x
  int ld_out = 0;

  // The norm in place on x (rows, C) with leading dimension C, gated by z (nullptr: no gate).
  static GatedRmsNormArgs InPlace(float* x, int channels, int group_size, bool norm_before_gate,
                                  float eps, const float* z, int ld_z, const float* w) {
    GatedRmsNormArgs a;
    a.channels = channels;
    a.group_size = group_size;
    a.norm_before_gate = norm_before_gate;
    a.eps = eps;
    a.x = x;
    a.ld_x = channels;
    a.z = z;
    a.ld_z = ld_z;
    a.w = w;
    a.out = x;
    a.ld_out = channels;
    return a;
  }
};

}  // namespace ssm
