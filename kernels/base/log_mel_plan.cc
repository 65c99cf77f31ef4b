#include "kernels/base/log_mel_plan.h"

#include <algorithm>
#include <cmath>

namespace ssm {
namespace {

constexpr double kPi = 3.14159265358979323846;

double HzToMel(double hz) { return 2595.0 * std::log10(1.0 + hz / 700.0); }
double MelToHz(double mel) { return 700.0 * (std::pow(10.0, mel / 2595.0) - 1.0); }

// Weight of the triangle with corners lo < mid < hi (Hz) at frequency f (docs/design.md §3).
double TriangleWeight(double lo, double mid, double hi, double f) {
  return std::max(0.0, std::min((f - lo) / (mid - lo), (hi - f) / (hi - mid)));
}

}  // namespace

LogMelPlan LogMelPlan::Make(const LogMelParams& params) {
  LogMelPlan plan;
  plan.params = params;

  // Periodic Hann: w[win] would be w[0] = 0, so frames overlap-add to a constant at hop = win/2.
  const int win = params.win_length;
  plan.window.resize(win);
  for (int i = 0; i < win; ++i) plan.window[i] = 0.5 - 0.5 * std::cos(2.0 * kPi * i / win);

  // n_mels + 2 corner frequencies (Hz), equally spaced in mel from f_min to f_max.
  const int n_mels = params.n_mels;
  const double mel_lo = HzToMel(params.f_min);
  const double mel_hi = HzToMel(params.f_max);
  std::vector<double> corner(n_mels + 2);
  for (int i = 0; i < n_mels + 2; ++i) {
    corner[i] = MelToHz(mel_lo + (mel_hi - mel_lo) * i / (n_mels + 1));
  }
  // The ends are f_min and f_max exactly (the mel round trip is off by ulps): a bin at f_max
  // gets weight 0 as the formula says, not 1e-16.
  corner.front() = params.f_min;
  corner.back() = params.f_max;

  // Dense weights per filter, then kept sparse over the nonzero bins (a triangle is positive on
  // one open interval, so they are contiguous). A filter narrower than a bin may have none.
  const int n_bins = plan.n_bins();
  const double bin_hz = double(params.sample_rate) / params.n_fft;
  plan.filters.resize(n_mels);
  for (int j = 0; j < n_mels; ++j) {
    MelFilter& filter = plan.filters[j];
    for (int k = 0; k < n_bins; ++k) {
      const double w = TriangleWeight(corner[j], corner[j + 1], corner[j + 2], k * bin_hz);
      if (w <= 0.0) continue;
      if (filter.weights.empty()) filter.first_bin = k;
      filter.weights.resize(k - filter.first_bin + 1, 0.0);
      filter.weights.back() = w;
    }
  }
  return plan;
}

}  // namespace ssm
