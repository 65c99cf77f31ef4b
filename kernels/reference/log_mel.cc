#include "kernels/reference/log_mel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace ssm::reference {

void LogMel(const LogMelPlan& plan, const float* samples, int n_frames, float* out) {
  const LogMelParams& p = plan.params;
  const int win = p.win_length, n_fft = p.n_fft, n_bins = plan.n_bins();

  // Twiddles e^{-2 pi j m / n_fft}; term (i, k) takes m = i*k mod n_fft: exact angles, no drift.
  const double kPi = 3.14159265358979323846;
  std::vector<double> cos_t(n_fft), sin_t(n_fft);
  for (int m = 0; m < n_fft; ++m) {
    cos_t[m] = std::cos(2.0 * kPi * m / n_fft);
    sin_t[m] = std::sin(2.0 * kPi * m / n_fft);
  }

  std::vector<double> x(win);         // windowed frame; samples [win, n_fft) are zero padding
  std::vector<double> power(n_bins);  // |X_k|^2
  for (int t = 0; t < n_frames; ++t) {
    const float* frame = samples + size_t(t) * p.hop_length;
    for (int i = 0; i < win; ++i) x[i] = plan.window[i] * frame[i];
    for (int k = 0; k < n_bins; ++k) {
      double re = 0, im = 0;
      for (int i = 0; i < win; ++i) {
        const int m = int(int64_t(i) * k % n_fft);
        re += x[i] * cos_t[m];
        im -= x[i] * sin_t[m];
      }
      power[k] = re * re + im * im;
    }
    for (int j = 0; j < p.n_mels; ++j) {
      const MelFilter& f = plan.filters[j];
      double sum = 0;
      for (size_t b = 0; b < f.weights.size(); ++b) sum += f.weights[b] * power[f.first_bin + b];
      out[size_t(t) * p.n_mels + j] = float(std::log(std::max(sum, p.log_floor)));
    }
  }
}

}  // namespace ssm::reference
