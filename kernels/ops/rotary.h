// Backend::Rotary: rotary position embedding of queries and keys at each stream's own frame
// positions (RetNet, docs/design.md §3.4).
#pragma once

#include "kernels/ops/batch.h"

namespace ssm {

// The frame counter of one stream, kept in its state as two floats that are exact integers:
// position = hi * 2^24 + lo, 0 <= lo < 2^24 (exact to 2^48 frames).
inline constexpr int kRotaryStateFloats = 2;

// For each row at position p (the slot's counter plus the row's index in its sequence), each
// head of q and k, and i < D/2 with D = head_dim (even), the halves rotated (non-interleaved):
//   theta_i = p * base^(-2i / D)        (in double)
//   x'_i       = x_i cos(theta_i) - x_{i+D/2} sin(theta_i)
//   x'_{i+D/2} = x_{i+D/2} cos(theta_i) + x_i sin(theta_i)
// in place; afterwards each slot's counter has advanced by its sequence's rows.
struct RotaryArgs {
  int heads = 0;     // H: q and k have H * head_dim columns
  int head_dim = 0;  // D, even
  float base = 10000.0f;
  float* q = nullptr;  // (rows, H * D), ld_q
  int ld_q = 0;
  float* k = nullptr;  // (rows, H * D), ld_k
  int ld_k = 0;
  StateView position;  // per slot kRotaryStateFloats
};

}  // namespace ssm
