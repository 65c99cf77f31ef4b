// The ssmserve/v1 model configuration (config.json), see docs/design.md §2.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

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

struct LayerConfig {
  std::string type = "mamba";
  int d_state = 16;  // N
  int d_conv = 4;    // K
  int expand = 2;
  int dt_rank = 16;  // R
  bool conv_bias = true;
  bool bias = false;  // in_proj / out_proj bias
};

struct NormConfig {
  std::string type = "rmsnorm";
  double eps = 1e-5;
};

// Expected tensor: name and shape, in the mamba_ssm layout.
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

struct ModelConfig {
  std::string format = "ssmserve/v1";
  FrontendConfig frontend;
  int d_in = 80;
  int d_model = 256;
  int n_layer = 8;
  LayerConfig layer;
  NormConfig norm;
  int d_out = 2;
  std::string head_activation = "softmax";  // "none" | "sigmoid" | "softmax"
  std::vector<std::string> labels;          // empty or d_out names

  int d_inner() const { return layer.expand * d_model; }  // E
  double frame_rate() const;                              // output frames per second
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

  // Benchmark presets (docs/design.md §5): "bench-s", "bench-m", "bench-l".
  static StatusOr<ModelConfig> Preset(const std::string& name);
};

}  // namespace ssm
