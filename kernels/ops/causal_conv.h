// Backend::CausalConv: causal depthwise conv1d with carried tail, fused with SiLU
// (docs/design.md §3.1, §3.2).
#pragma once

#include "kernels/ops/batch.h"

namespace ssm {

//   out[t, c] = silu(bias[c] + sum_k w[k, c] * x[t - K + 1 + k, c])
// where rows before the chunk come from the slot's tail, which is updated to the last K-1 inputs.
struct CausalConvArgs {
  int channels = 0;          // C (E for Mamba-1, E + 2GN for Mamba-2)
  int kernel = 0;            // K (d_conv)
  const float* x = nullptr;  // (rows, C), ld_x
  int ld_x = 0;
  const float* w = nullptr;     // (K, C): w[k * C + c] = conv1d.weight[c, 0, k]
  const float* bias = nullptr;  // (C)
  StateView tail;               // per slot (K-1, C), oldest row first
  float* out = nullptr;         // (rows, C), ld_out
  int ld_out = 0;
};

}  // namespace ssm
