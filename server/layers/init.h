// Random initial weights for `ssm-model random` and tests: a seeded generator whose sequence
// every standard library reproduces, and the initialisations the layer types share.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "server/layers/tensor.h"

namespace ssm {

// Uniform and normal variates from mt19937_64, whose output sequence the standard fixes (the
// std:: distributions are not, so they are not used).
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  // [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  // Standard normal by Box-Muller (one variate per call, nothing cached).
  double Normal() {
    constexpr double kPi = 3.14159265358979323846;
    const double u1 = 1.0 - Uniform();  // (0, 1]: log(u1) is finite
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }

 private:
  std::mt19937_64 engine_;
};

// Fills every value of `out` from sample(i), in index order.
template <typename Sample>
void FillWith(std::vector<float>* out, Sample sample) {
  for (size_t i = 0; i < out->size(); ++i) (*out)[i] = static_cast<float>(sample(i));
}

// The initialisation of a tensor without a special role, by its name:
//   norm weights ("...norm.weight", "...norm_f.weight", "...norm_swish_gate.weight"):
//     1 + U(-0.1, 0.1), so tests see them;
//   other weights (linear (out, in), conv (C, 1, K)): U(±1/sqrt(fan_in)), fan_in = numel / dim 0;
//   biases: U(-0.1, 0.1).
void InitDefault(const TensorSpec& spec, Rng* rng, std::vector<float>* out);

// Mamba's dt initialisation: dt log-uniform in [1e-3, 0.1] (floored at 1e-4), stored as the
// bias whose softplus is dt.
double SampleDtBias(Rng* rng);

}  // namespace ssm
