// Reads an input file in the form a model's frontend consumes: one reader for the local tools
// (which describe the model from its config) and the clients (from the server's ModelInfo).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace ssm {

// What a model takes, wherever its description comes from.
struct InputSpec {
  std::string model_name;  // for messages; may be empty
  bool audio = true;       // mono samples (log_mel) or frames of d_in floats (none)
  int d_in = 0;            // floats per frame
  int sample_rate = 0;     // Hz (audio)
};

struct ModelInputOptions {
  // Sample rate in Hz of headerless audio (.raw s16le, 1-D .npy samples); 0 = the model's.
  int raw_rate = 0;
};

struct ModelInput {
  std::vector<float> values;  // mono samples at the model's rate, or frames of d_in floats
  int64_t rows = 0;           // samples or frames
  int file_rate = 0;          // Hz of the file before resampling (audio only)
  bool resampled = false;     // file_rate differed from the model's rate
};

// Audio models: WAV/FLAC/... (libsndfile; down-mixed to mono), .raw PCM S16LE and 1-D .npy
// samples (at options.raw_rate); audio at another rate than the model's is resampled (libsoxr
// HQ). Frame models: .npy float32 (T, d_in). Errors name the file and what to change.
StatusOr<ModelInput> ReadModelInput(const std::string& path, const InputSpec& spec,
                                    const ModelInputOptions& options = {});

}  // namespace ssm
