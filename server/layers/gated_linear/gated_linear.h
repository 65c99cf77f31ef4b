// What linear attention, RetNet and GLA share (docs/design.md §3.3): flash-linear-attention's
// block (attn_norm -> attn -> add, then mlp_norm -> gated MLP -> add), q/k/v/o projections over
// num_heads heads, the gated linear recurrence (Backend::GatedLinearScan) and a per-head output
// norm. Each type is a subclass in its own folder that says which decay, gate and norm it has.
#pragma once

#include <string>

#include "server/layers/layer.h"

namespace ssm {

class GatedLinearParams : public LayerParams {
 public:
  int num_heads = 8;
  double expand_k = 1.0;       // key_dim = d_model * expand_k, over all heads
  double expand_v = 1.0;       // value_dim = d_model * expand_v
  int hidden_ratio = 4;        // the MLP's size when intermediate_size is "auto"
  int intermediate_size = -1;  // -1: "auto" (fla's rule); 0: no MLP
  int chunk_size = 64;         // frames per chunk of the chunked form

  int key_dim(int d_model) const { return int(d_model * expand_k); }
  int value_dim(int d_model) const { return int(d_model * expand_v); }
  int head_k_dim(int d_model) const { return key_dim(d_model) / num_heads; }
  int head_v_dim(int d_model) const { return value_dim(d_model) / num_heads; }
  // The gated MLP's width: intermediate_size, or for "auto" 2/3 * hidden_ratio * d_model rounded
  // up to a multiple of 256, as fla's GatedMLP; 0 when the block has no MLP.
  int mlp_size(int d_model) const;

  // ---- what a type decides ----
  virtual LinearDecay decay() const = 0;
  virtual FeatureMap feature_map() const { return FeatureMap::kIdentity; }
  virtual bool output_gate() const = 0;  // attn.g_proj and a swish gate on the output norm
  // The per-head output norm's tensor ("attn.g_norm_swish_gate"), "" for none.
  virtual std::string output_norm() const = 0;
  virtual bool rotary() const { return false; }        // RetNet's position encoding
  virtual int gate_low_rank_dim() const { return 0; }  // GLA's attn.gk_proj
  // kConstant's log decay per head (num_heads values).
  virtual std::vector<float> log_gamma() const { return {}; }
  // The gate's normaliser and clamp, for the data-dependent decays.
  virtual void GateSettings(GatedLinearScanArgs* args) const {}

  // ---- LayerParams, shared ----
  Status Parse(ConfigReader* reader, int d_model) override;
  Status Validate(const std::string& path, int d_model) const override;
  ConfigJson ToJson() const override;
  std::string ToString() const override;
  std::vector<TensorSpec> Tensors(const std::string& prefix, int d_model) const override;
  size_t state_floats(int d_model) const override;
  double flops_per_frame(int d_model) const override;
  bool has_parallel_form() const override { return true; }
  StatusOr<std::unique_ptr<Layer>> Create(const LayerContext& ctx) const override;

 protected:
  // The type's own fields, read, checked and written after the shared ones.
  virtual Status ParseOwn(ConfigReader* reader) = 0;
  virtual Status ValidateOwn(const std::string& path, int d_model) const = 0;
  virtual void OwnJson(ConfigJson* json) const = 0;
  virtual std::string OwnString() const = 0;
};

}  // namespace ssm
