// Linear attention: flash-linear-attention's `LinearAttention` layer in its block, with its
// field and tensor names (docs/design.md §3.3). The state is an undecayed sum.
#pragma once

#include "server/layers/gated_linear/gated_linear.h"

namespace ssm {

struct LinearAttnParams final : GatedLinearParams {
  std::string feature_map_name = "elu";      // "identity" | "relu" | "elu" (elu(x) + 1)
  std::string output_norm_name = "rmsnorm";  // "rmsnorm" | "identity"

  LinearAttnParams() {
    num_heads = 8;
    expand_k = 1.0;
    expand_v = 1.0;
  }
  std::unique_ptr<LayerParams> Clone() const override {
    return std::make_unique<LinearAttnParams>(*this);
  }
  std::string type() const override { return "linear_attn"; }
  LinearDecay decay() const override { return LinearDecay::kNone; }
  FeatureMap feature_map() const override;
  bool output_gate() const override { return false; }
  std::string output_norm() const override {
    return output_norm_name == "rmsnorm" ? "attn.norm" : "";
  }

 protected:
  Status ParseOwn(ConfigReader* reader) override;
  Status ValidateOwn(const std::string& path, int d_model) const override;
  void OwnJson(ConfigJson* json) const override;
  std::string OwnString() const override;
};

}  // namespace ssm
