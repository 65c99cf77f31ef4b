// Reads an input file in the form a model's frontend consumes.
#pragma once

#include <string>
#include <vector>

#include "kernels/base/status.h"
#include "server/model/model_config.h"

namespace ssm {

struct ModelInput {
  std::vector<float> values;  // mono samples (log_mel) or frames of d_in floats, row-major
  int64_t rows = 0;           // samples or frames
};

// log_mel models: WAV/FLAC/... (libsndfile; must be at the model's sample rate), .npy 1-D float
// samples, or .raw PCM S16LE. Frame models: .npy float32 (T, d_in).
StatusOr<ModelInput> ReadModelInput(const std::string& path, const ModelConfig& config);

}  // namespace ssm
