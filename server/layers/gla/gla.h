// GLA: flash-linear-attention's `GatedLinearAttention` layer in its block, with its field and
// tensor names (docs/design.md §3.5): a data-dependent decay per key from a low-rank gate, and a
// swish-gated output norm.
#pragma once

#include "server/layers/gated_linear/gated_linear.h"

namespace ssm {

struct GlaParams final : GatedLinearParams {
  bool use_output_gate = true;
  int gate_logit_normalizer = 16;
  int gate_low_rank = 16;  // "gate_low_rank_dim"
  bool has_clamp_min = false;
  double clamp_min = 0.0;  // lower bound on the log decay, when has_clamp_min

  GlaParams() {
    num_heads = 4;
    expand_k = 0.5;
    expand_v = 1.0;
  }
  std::unique_ptr<LayerParams> Clone() const override { return std::make_unique<GlaParams>(*this); }
  std::string type() const override { return "gla"; }
  LinearDecay decay() const override { return LinearDecay::kPerKey; }
  bool output_gate() const override { return use_output_gate; }
  std::string output_norm() const override {
    return use_output_gate ? "attn.g_norm_swish_gate" : "attn.g_norm";
  }
  int gate_low_rank_dim() const override { return gate_low_rank; }
  void GateSettings(GatedLinearScanArgs* args) const override;

 protected:
  Status ParseOwn(ConfigReader* reader) override;
  Status ValidateOwn(const std::string& path, int d_model) const override;
  void OwnJson(ConfigJson* json) const override;
  std::string OwnString() const override;
};

}  // namespace ssm
