#include "server/model/random_model.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "common/strings.h"

namespace ssm {
namespace {

constexpr double kBiasRange = 0.1;        // biases ~ U(-0.1, 0.1)
constexpr double kNormWeightRange = 0.1;  // norm weights ~ 1 + U(-0.1, 0.1), so tests see them
constexpr double kDtMin = 1e-3;           // dt ~ log-uniform in [dt_min, dt_max] (mamba_ssm)
constexpr double kDtMax = 0.1;
constexpr double kDtFloor = 1e-4;
constexpr double kALogNoise = 0.05;  // std of the noise on A_log = log(1..N)
constexpr double kDNoise = 0.05;     // std of the noise on D = 1
constexpr double kPi = 3.14159265358979323846;

// Uniform and normal variates from mt19937_64, whose output sequence the standard fixes.
class Rng {
 public:
  explicit Rng(uint64_t seed) : engine_(seed) {}

  // [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }
  double Uniform(double lo, double hi) { return lo + (hi - lo) * Uniform(); }
  // Standard normal by Box-Muller (one variate per call, nothing cached).
  double Normal() {
    const double u1 = 1.0 - Uniform();  // (0, 1]: log(u1) is finite
    const double u2 = Uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }

 private:
  std::mt19937_64 engine_;
};

// Fills one tensor according to its role, which its name gives (docs/design.md §2 names).
void Fill(const TensorSpec& spec, Rng& rng, std::vector<float>* out) {
  const std::string& name = spec.name;
  const size_t cols = out->size() / spec.shape[0];  // product of the trailing dims
  auto fill = [&](auto sample) {
    for (size_t i = 0; i < out->size(); ++i) (*out)[i] = static_cast<float>(sample(i));
  };
  if (EndsWith(name, "norm.weight") || EndsWith(name, "norm_f.weight")) {
    fill([&](size_t) { return 1.0 + rng.Uniform(-kNormWeightRange, kNormWeightRange); });
  } else if (EndsWith(name, "mixer.A_log")) {  // (E, N): A = -exp(A_log) ~ -(1..N) per row
    fill([&](size_t i) { return std::log(i % cols + 1.0) + kALogNoise * rng.Normal(); });
  } else if (EndsWith(name, "mixer.D")) {
    fill([&](size_t) { return 1.0 + kDNoise * rng.Normal(); });
  } else if (EndsWith(name, "dt_proj.bias")) {  // softplus(bias) = dt at initialisation
    fill([&](size_t) {
      const double dt =
          std::max(kDtFloor, std::exp(rng.Uniform(std::log(kDtMin), std::log(kDtMax))));
      return dt + std::log(-std::expm1(-dt));  // inverse softplus
    });
  } else if (EndsWith(name, ".weight")) {  // linear (out, in) and conv (E, 1, K): fan_in = cols
    const double bound = 1.0 / std::sqrt(static_cast<double>(cols));
    fill([&](size_t) { return rng.Uniform(-bound, bound); });
  } else {  // the other biases
    fill([&](size_t) { return rng.Uniform(-kBiasRange, kBiasRange); });
  }
}

}  // namespace

StatusOr<std::shared_ptr<const Model>> MakeRandomModel(const ModelConfig& config, uint64_t seed) {
  SSM_RETURN_IF_ERROR(config.Validate());
  Rng rng(seed);
  std::map<std::string, Tensor> tensors;
  for (const TensorSpec& spec : config.ExpectedTensors()) {  // fixed order: deterministic
    Tensor& t = tensors[spec.name];
    t.shape = spec.shape;
    t.data.resize(t.numel());
    Fill(spec, rng, &t.data);
  }
  return Model::FromTensors(config, std::move(tensors));
}

}  // namespace ssm
