// Reads an input file for a served model (common/io/model_input.h reads it; this adds what the
// wire format choice needs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
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

// ReadModelInput for the model the server described: audio at another rate than the model's is
// resampled; errors name the file and what to change.
StatusOr<ClientInput> ReadClientInput(const std::string& path, const ssmserve::v1::ModelInfo& model,
                                      const ClientInputOptions& options = {});

}  // namespace ssm::client
