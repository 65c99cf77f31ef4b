// An ssmserve/v1 model held in host memory: config + validated float32 weights (docs/design.md §2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/model/digest.h"
#include "server/model/model_config.h"

namespace ssm {

// The files of a model directory.
inline constexpr char kModelConfigFile[] = "config.json";
inline constexpr char kModelWeightsFile[] = "model.safetensors";

// Immutable once built, so one instance is shared by all streams (and threads) without locking.
// Every instance has passed validation: the config is valid, the tensors are exactly
// config.ExpectedTensors() with their shapes, and every weight is finite.
class Model {
 public:
  // Reads dir/config.json and dir/model.safetensors (F32, F16 or BF16; kept as float32).
  static StatusOr<std::shared_ptr<const Model>> Load(const std::string& dir);
  // Validates and wraps tensors built in memory (random models, tests, converters).
  static StatusOr<std::shared_ptr<const Model>> FromTensors(ModelConfig config,
                                                            std::map<std::string, Tensor> tensors);

  const ModelConfig& config() const { return config_; }
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }
  // The named tensor; it must be one of config().ExpectedTensors() (checked).
  const Tensor& tensor(const std::string& name) const;

  int64_t parameter_count() const;  // total elements of all tensors
  // SHA-256 of the canonical config.json (ToJson) and every tensor's name, shape and float32
  // data in name order: equal for the same model however its files were written (F16, F32),
  // different for any other weights or settings. Snapshots carry it (docs/design.md §7).
  const Digest& fingerprint() const { return fingerprint_; }
  // Recurrent state of one stream: each layer's (LayerParams::state_floats), plus win_length
  // carried samples for a log_mel frontend. Float32 bytes.
  size_t state_bytes_per_stream() const;
  // Floating-point operations to advance one stream by one frame (see model.cc for the count).
  double flops_per_frame() const;

  // Writes dir/config.json and dir/model.safetensors (F32), creating dir if needed.
  Status Save(const std::string& dir) const;

 private:
  Model(ModelConfig config, std::map<std::string, Tensor> tensors);

  ModelConfig config_;
  std::map<std::string, Tensor> tensors_;
  Digest fingerprint_;
};

}  // namespace ssm
