// Precomputed tables of the exact log-mel frontend (docs/design.md §3): window and mel filterbank.
#pragma once

#include <vector>

namespace ssm {

struct LogMelParams {
  int sample_rate = 16000;  // Hz
  int win_length = 400;     // samples
  int hop_length = 160;     // samples
  int n_fft = 512;          // >= win_length
  int n_mels = 80;
  double f_min = 0.0;     // Hz
  double f_max = 8000.0;  // Hz
  double log_floor = 1e-10;
};

// One triangular mel filter: weights for FFT bins [first_bin, first_bin + weights.size()).
struct MelFilter {
  int first_bin = 0;
  std::vector<double> weights;
};

struct LogMelPlan {
  LogMelParams params;
  std::vector<double> window;      // (win_length) periodic Hann
  std::vector<MelFilter> filters;  // (n_mels), HTK scale, no area normalisation

  int n_bins() const { return params.n_fft / 2 + 1; }
  // Builds window and filters from params (params are assumed validated by the config).
  static LogMelPlan Make(const LogMelParams& params);
};

}  // namespace ssm
