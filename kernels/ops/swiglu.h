// Backend::SwiGlu: the activation of the gated MLP that follows the mixer in the blocks of
// linear attention, RetNet and GLA (docs/design.md §3.3).
#pragma once

namespace ssm {

// out[r, c] = silu(gate[r, c]) * up[r, c].
struct SwiGluArgs {
  int cols = 0;
  const float* gate = nullptr;  // (rows, cols), ld_gate
  int ld_gate = 0;
  const float* up = nullptr;  // (rows, cols), ld_up
  int ld_up = 0;
  float* out = nullptr;  // (rows, cols), ld_out; may alias gate or up with the same ld
  int ld_out = 0;
};

}  // namespace ssm
