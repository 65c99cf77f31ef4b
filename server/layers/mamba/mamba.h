// Mamba-1: the selective SSM block of mamba_ssm's `Mamba` module (docs/design.md §3.1).
#pragma once

#include "server/layers/layer.h"

namespace ssm {

struct MambaParams final : LayerParams {
  int d_state = 16;  // N
  int d_conv = 4;    // K
  int expand = 2;    // E = expand * d_model
  int dt_rank = 16;  // R; "auto" in mamba_ssm is ceil(d_model / 16), the default when absent
  bool conv_bias = true;
  bool bias = false;  // in_proj / out_proj bias

  static int AutoDtRank(int d_model) { return d_model / 16 + (d_model % 16 != 0 ? 1 : 0); }

  std::unique_ptr<LayerParams> Clone() const override {
    return std::make_unique<MambaParams>(*this);
  }
  std::string type() const override { return "mamba"; }
  Status Parse(ConfigReader* reader, int d_model) override;
  Status Validate(const std::string& path, int d_model) const override;
  ConfigJson ToJson() const override;
  std::string ToString() const override;
  std::vector<TensorSpec> Tensors(const std::string& prefix, int d_model) const override;
  size_t state_floats(int d_model) const override;
  double flops_per_frame(int d_model) const override;
  void InitTensor(const TensorSpec& spec, Rng* rng, std::vector<float>* out) const override;
  StatusOr<std::unique_ptr<Layer>> Create(const LayerContext& ctx) const override;
};

}  // namespace ssm
