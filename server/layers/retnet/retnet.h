// RetNet: flash-linear-attention's `MultiScaleRetention` layer in its block, with its field and
// tensor names (docs/design.md §3.4): a fixed decay per head, rotary positions from the
// stream's own frame counter, and a swish-gated output norm.
#pragma once

#include "server/layers/gated_linear/gated_linear.h"

namespace ssm {

struct RetNetParams final : GatedLinearParams {
  bool use_output_gate = true;

  RetNetParams() {
    num_heads = 8;
    expand_k = 1.0;
    expand_v = 2.0;
  }
  std::unique_ptr<LayerParams> Clone() const override {
    return std::make_unique<RetNetParams>(*this);
  }
  std::string type() const override { return "retnet"; }
  LinearDecay decay() const override { return LinearDecay::kConstant; }
  bool output_gate() const override { return use_output_gate; }
  std::string output_norm() const override {
    return use_output_gate ? "attn.g_norm_swish_gate" : "attn.g_norm";
  }
  bool rotary() const override { return true; }
  // gamma_h = 1 - 2^(-5 - h), as log gamma.
  std::vector<float> log_gamma() const override;

 protected:
  Status ParseOwn(ConfigReader* reader) override;
  Status ValidateOwn(const std::string& path, int d_model) const override;
  void OwnJson(ConfigJson* json) const override;
  std::string OwnString() const override;
};

}  // namespace ssm
