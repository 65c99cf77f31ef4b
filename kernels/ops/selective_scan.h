// Backend::SelectiveScan: the Mamba-1 scan with fused softplus, D skip and SiLU gate
// (docs/design.md §3.1).
#pragma once

#include "kernels/ops/batch.h"

namespace ssm {

//   delta = softplus(dt);  H = exp(delta*A) * H + (delta*u) B;  out = (H.C + D*u) * silu(z)
struct SelectiveScanArgs {
  int channels = 0;          // E
  int d_state = 0;           // N
  const float* u = nullptr;  // (rows, E) conv output
  int ld_u = 0;
  const float* dt = nullptr;  // (rows, E) dt_proj output including its bias, before softplus
  int ld_dt = 0;
  const float* B = nullptr;  // (rows, N)
  const float* C = nullptr;  // (rows, N)
  int ld_bc = 0;             // row stride of B and C
  const float* z = nullptr;  // (rows, E) gate
  int ld_z = 0;
  const float* A = nullptr;  // (N, E): A[n * E + e] = -exp(A_log[e, n])
  const float* D = nullptr;  // (E)
  StateView state;           // per slot (N, E): H[n * E + e]
  float* out = nullptr;      // (rows, E)
  int ld_out = 0;
};

}  // namespace ssm
