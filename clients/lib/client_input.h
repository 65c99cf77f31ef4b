// Reads an input file for a served model: audio resampled to the model's rate, or feature frames.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/base/status.h"
#include "ssmserve/v1/ssmserve.pb.h"

namespace ssm::client {

struct ClientInputOptions {
  // Sample rate in Hz of headerless inputs (.raw s16le, 1-D .npy samples); 0 = the model's rate.
  int raw_rate = 0;
};

struct ClientInput {
  std::vector<float> values;  // mono samples at the model's rate, or frames of d_in floats
  int64_t rows = 0;           // samples (audio models) or frames (frontend none)
  int file_rate = 0;          // Hz of the file before resampling (audio models only)
  bool resampled = false;     // file_rate differed from the model's rate
  // PCM_S16LE carries `values` without loss (16-bit source, not resampled): see
  // FitsPcmS16Exactly. Tools use it to choose the wire format.
  bool fits_s16 = false;
  bool is_audio() const { return file_rate > 0; }
};

// Audio models (frontend log_mel): WAV/FLAC/... (libsndfile; down-mixed to mono), .raw PCM S16LE
// and 1-D .npy samples (at options.raw_rate). Frame models (frontend none): .npy float32
// (T, d_in). Audio at another rate than the model's is resampled (libsoxr HQ). Errors name the
// file and what to change.
StatusOr<ClientInput> ReadClientInput(const std::string& path, const ssmserve::v1::ModelInfo& model,
                                      const ClientInputOptions& options = {});

}  // namespace ssm::client
