// Sample-rate conversion of whole signals (libsoxr, high quality).
#pragma once

#include <vector>

#include "common/status.h"

namespace ssm {

// Resamples mono `samples` from `in_rate` to `out_rate` Hz (libsoxr HQ, linear phase). The result
// has round(n · out_rate / in_rate) samples; equal rates return the input unchanged.
StatusOr<std::vector<float>> Resample(const std::vector<float>& samples, int in_rate, int out_rate);

}  // namespace ssm
