// NumPy .npy files: read float arrays (feature inputs), write float32 arrays (model outputs).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace ssm {

// A C-order array converted to float32.
struct NpyArray {
  std::vector<int64_t> shape;  // () for a scalar
  std::vector<float> data;     // product of shape floats, row-major
};

struct NpyReadOptions {
  // Accept '<i2' (int16) data as PCM audio, converted as s / 32768. Off: int16 is an error, so a
  // feature file of integers is not silently rescaled.
  bool int16_as_pcm = false;
};

// Reads a format version 1, 2 or 3 .npy file of dtype '<f4' or '<f8' (and '<i2', see above),
// C order. Errors name the file and what was found.
StatusOr<NpyArray> ReadNpy(const std::string& path, const NpyReadOptions& options = {});

// Writes `data` (product of `shape` floats, row-major) as a version 1 '<f4' C-order .npy file.
Status WriteNpy(const std::string& path, const std::vector<int64_t>& shape, const float* data);

}  // namespace ssm
