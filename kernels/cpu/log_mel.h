// Fast log-mel features for the cpu backend: an FFT in double per frame, frames across threads.
#pragma once

#include "kernels/base/log_mel_plan.h"

namespace ssm::cpu {

// reference::LogMel's contract (docs/design.md §3) with an FFT instead of the direct DFT: out is
// (n_frames, n_mels), frame t reads samples[t * hop, t * hop + win). Frames are split over
// `threads` threads of the worker pool (<= 0: all cores; 1: the caller's alone). A frame's features
// depend only on its samples, bitwise (not on n_frames, threads or where the frame sits in memory).
// Safe to call concurrently.
void LogMel(const LogMelPlan& plan, const float* samples, int n_frames, float* out, int threads);

}  // namespace ssm::cpu
