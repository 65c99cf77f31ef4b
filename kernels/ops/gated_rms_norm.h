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
};

}  // namespace ssm
