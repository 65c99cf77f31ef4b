// Backend::GatedLinearScan: the gated linear recurrence shared by linear attention, RetNet and
// GLA (docs/design.md §3.3-3.5), one state matrix per head and four ways to decay it.
#pragma once

#include "kernels/ops/batch.h"

namespace ssm {

// How the state decays before each frame's update.
enum class LinearDecay {
  kNone,      // linear attention: S is a plain sum
  kConstant,  // RetNet: one fixed log decay per head, log_gamma[h]
  kPerHead,   // a data-dependent scalar per head and frame, from gate (rows, H)
  kPerKey,    // GLA: one per head, key and frame, from gate (rows, H * K)
};

// The feature map applied to queries and keys as they are read (linear attention's).
enum class FeatureMap {
  kIdentity,
  kRelu,        // max(x, 0)
  kEluPlusOne,  // elu(x) + 1
};

// For each row and head h, with K = key_dim and V = value_dim floats per head:
//   q' = scale * phi(q_h),  k' = phi(k_h)                          phi: feature_map
//   a  = 0 (kNone), log_gamma[h] (kConstant), or, from the gate logits of the row (one per head,
//        or one per head and key): max(logsigmoid(gate) / gate_normalizer, gate_clamp_min)
//   S_h[v][k] = exp(a_k) * S_h[v][k] + v_h[v] * k'_k                S_h: (V, K), value-major
//   out_h[v]  = sum_k S_h[v][k] * q'_k
// The update comes before the read-out, so a frame sees its own key and value.
//
// Backend::GatedLinearChunkedScan computes the same in the chunked form, chunks of `chunk` rows
// of each sequence in turn, G_t = the sum of a over the chunk's rows up to t (per key), S_in the
// state before the chunk:
//   out_t[v] = sum_{u<=t} (sum_k q'_tk k'_uk exp(G_tk - G_uk)) v_u[v]
//              + sum_k S_in[v][k] q'_tk exp(G_tk)
//   S_out[v][k] = exp(G_last,k) S_in[v][k] + sum_u exp(G_last,k - G_uk) k'_uk v_u[v]
// It equals the recurrence in exact arithmetic; in float32 to the exactness contract's bound.
struct GatedLinearScanArgs {
  int heads = 0;      // H
  int key_dim = 0;    // K per head
  int value_dim = 0;  // V per head
  LinearDecay decay = LinearDecay::kNone;
  FeatureMap feature_map = FeatureMap::kIdentity;
  float scale = 1.0f;
  const float* q = nullptr;  // (rows, H * K): head h's at [h * K, (h + 1) * K)
  int ld_q = 0;
  const float* k = nullptr;  // (rows, H * K)
  int ld_k = 0;
  const float* v = nullptr;  // (rows, H * V)
  int ld_v = 0;
  const float* log_gamma = nullptr;  // kConstant: (H), each < 0
  const float* gate = nullptr;       // kPerHead: (rows, H); kPerKey: (rows, H * K)
  int ld_gate = 0;
  float gate_normalizer = 1.0f;                    // > 0
  float gate_clamp_min = -3.4028234663852886e38f;  // no clamp unless set
  StateView state;                                 // per slot (H, V, K): S[(h * V + v) * K + k]
  float* out = nullptr;                            // (rows, H * V)
  int ld_out = 0;
};

}  // namespace ssm
