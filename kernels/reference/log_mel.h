// Reference log-mel features: docs/design.md §3's exact definition in double, the truth in tests.
#pragma once

#include "kernels/base/log_mel_plan.h"

namespace ssm::reference {

// out[t, j] = ln(max(sum_k filter_j[k] * |DFT_n_fft(window * frame_t)[k]|^2, log_floor)), where
// frame t is samples[t * hop, t * hop + win); out: (n_frames, n_mels) row-major. A direct DFT.
void LogMel(const LogMelPlan& plan, const float* samples, int n_frames, float* out);

}  // namespace ssm::reference
