// The ssmserve/v1 model configuration (config.json), see docs/design.md §2.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "server/layers/layer.h"
#include "server/layers/tensor.h"

namespace ssm {

struct FrontendConfig {
  std::string type = "log_mel";  // "log_mel" | "none"
  // log_mel only
  int sample_rate = 16000;  // Hz
  int win_length = 400;     // samples
  int hop_length = 160;     // samples
  int n_fft = 512;
  int n_mels = 80;
  double f_min = 0.0;     // Hz
  double f_max = 8000.0;  // Hz
  double log_floor = 1e-10;
  // none only
  std::vector<float> mean;    // empty or d_in values
  std::vector<float> std;     // empty or d_in values
  double frame_rate = 100.0;  // frames/s; for log_mel derived as sample_rate / hop_length

  bool is_log_mel() const { return type == "log_mel"; }
};

struct NormConfig {
  std::string type = "rmsnorm";
  double eps = 1e-5;
};

struct ModelConfig {
  std::string format = "ssmserve/v1";
  FrontendConfig frontend;
  int d_in = 80;
  int d_model = 256;
  int n_layer = 8;
  // Every layer's settings (the "layer" section), or, when `layers` is not empty, one per layer
  // (the "layers" list, for stacks of mixed types); use layer_params(i).
  LayerConfig layer;
  std::vector<LayerConfig> layers;
  NormConfig norm;
  int d_out = 2;
  std::string head_activation = "softmax";  // "none" | "sigmoid" | "softmax"
  std::vector<std::string> labels;          // empty or d_out names

  const LayerParams& layer_params(int i) const {
    return layers.empty() ? layer.params() : layers[i].params();
  }
  // The config path of layer i's section, with a trailing dot: "layer." or "layers[i].".
  std::string layer_path(int i) const;
  double frame_rate() const;  // output frames per second
  // Input values (samples, or frame floats) per second of signal.
  double input_values_per_second() const {
    return frontend.is_log_mel() ? double(frontend.sample_rate) : frame_rate() * double(d_in);
  }

  // Parses config.json text. Unknown fields, wrong types and out-of-range values are errors
  // naming the field (e.g. "layer.d_state: expected a positive integer, found -3").
  static StatusOr<ModelConfig> FromJson(const std::string& json_text);
  static StatusOr<ModelConfig> FromFile(const std::string& path);
  std::string ToJson() const;    // pretty-printed config.json
  Status Validate() const;       // cross-field checks (d_in == n_mels for log_mel, ...)
  std::string ToString() const;  // one-line summary for logs

  // Every tensor the model file must hold, with its shape.
  std::vector<TensorSpec> ExpectedTensors() const;

  // Benchmark presets (docs/design.md §5): "bench-s", "bench-m", "bench-l" with Mamba-1
  // layers, and the same sizes with another layer type's defaults as "bench-m-mamba2".
  static StatusOr<ModelConfig> Preset(const std::string& name);
};

}  // namespace ssm
