// Mamba-2: the SSD block of mamba_ssm's `Mamba2` module, with its tensor names (docs/design.md
// §3.2). Defaults are the module's.
#pragma once

#include "server/layers/layer.h"

namespace ssm {

struct Mamba2Params final : LayerParams {
  int d_state = 128;     // N
  int d_conv = 4;        // K
  int expand = 2;        // E = expand * d_model
  int headdim = 64;      // P; H = E / P heads
  int ngroups = 1;       // G: heads share B and C in G groups
  int chunk_size = 256;  // frames per chunk of the chunked (SSD) form
  bool conv_bias = true;
  bool bias = false;  // in_proj / out_proj bias
  bool norm_before_gate = false;

  int d_inner(int d_model) const { return expand * d_model; }
  int heads(int d_model) const { return d_inner(d_model) / headdim; }
  int conv_channels(int d_model) const { return d_inner(d_model) + 2 * ngroups * d_state; }

  std::unique_ptr<LayerParams> Clone() const override {
    return std::make_unique<Mamba2Params>(*this);
  }
  std::string type() const override { return "mamba2"; }
  Status Parse(ConfigReader* reader, int d_model) override;
  Status Validate(const std::string& path, int d_model) const override;
  ConfigJson ToJson() const override;
  std::string ToString() const override;
  std::vector<TensorSpec> Tensors(const std::string& prefix, int d_model) const override;
  size_t state_floats(int d_model) const override;
  double flops_per_frame(int d_model) const override;
  bool has_parallel_form() const override { return true; }
  void InitTensor(const TensorSpec& spec, Rng* rng, std::vector<float>* out) const override;
  StatusOr<std::unique_ptr<Layer>> Create(const LayerContext& ctx) const override;
};

}  // namespace ssm
