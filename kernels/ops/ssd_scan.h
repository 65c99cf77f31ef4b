// Backend::SsdScan: the Mamba-2 state-space recurrence, one scalar decay per head
// (docs/design.md §3.2).
#pragma once

#include "kernels/ops/batch.h"

namespace ssm {

// For each row and head h (P = head_dim channels of x, group g = h / (heads / groups)):
//   delta = softplus(dt[h] + dt_bias[h])
//   S_h   = exp(delta * A[h]) * S_h + delta * x_h (outer) B_g      S_h: (P, N)
//   out_h = S_h . C_g + D[h] * x_h
// The gate and the norm are not part of it (Backend::GatedRmsNorm follows).
//
// Backend::SsdChunkedScan computes the same from the same arguments in the chunked (SSD) form,
// chunks of `chunk` rows of each sequence in turn, a = delta * A, cum_t = sum of a over the
// chunk's rows up to t, S_in the state before the chunk:
//   out_t = sum_{s<=t} exp(cum_t - cum_s) delta_s (C_t . B_s) x_s + exp(cum_t) S_in . C_t
//           + D x_t
//   S_out = exp(cum_last) S_in + sum_s exp(cum_last - cum_s) delta_s x_s (outer) B_s
// It equals the recurrence in exact arithmetic; in float32 to the exactness contract's bound.
struct SsdScanArgs {
  int heads = 0;             // H
  int head_dim = 0;          // P
  int groups = 0;            // G, dividing H
  int d_state = 0;           // N
  const float* x = nullptr;  // (rows, H * P): head h's channels at [h * P, (h + 1) * P)
  int ld_x = 0;
  const float* B = nullptr;   // (rows, G * N): group g's at [g * N, (g + 1) * N)
  const float* C = nullptr;   // (rows, G * N)
  int ld_bc = 0;              // row stride of B and C
  const float* dt = nullptr;  // (rows, H) before the bias and softplus
  int ld_dt = 0;
  const float* dt_bias = nullptr;  // (H)
  const float* A = nullptr;        // (H): A[h] = -exp(A_log[h])
  const float* D = nullptr;        // (H)
  StateView state;                 // per slot (H, P, N): S[(h * P + p) * N + n]
  float* out = nullptr;            // (rows, H * P)
  int ld_out = 0;
};

}  // namespace ssm
