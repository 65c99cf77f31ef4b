// The libsoxr settings of every resampler in the project (ssm::Resample, whole signals, and
// client::StreamResampler, chunk by chunk): one place, so both give the same samples.
#pragma once

#include <soxr.h>

#include <string>

#include "common/status.h"

namespace ssm {

// Mono float32 in and out.
inline soxr_io_spec_t SoxrIoSpec() { return soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I); }
// High quality, linear phase.
inline soxr_quality_spec_t SoxrQualitySpec() { return soxr_quality_spec(SOXR_HQ, 0); }

// INVALID_ARGUMENT naming both rates unless both are positive.
inline Status CheckResampleRates(int in_rate, int out_rate) {
  if (in_rate > 0 && out_rate > 0) return OkStatus();
  return InvalidArgumentError("cannot resample from " + std::to_string(in_rate) + " Hz to " +
                              std::to_string(out_rate) + " Hz: rates must be positive");
}

}  // namespace ssm
