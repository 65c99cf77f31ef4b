#include "server/layers/init.h"

#include <algorithm>

#include "common/strings.h"

namespace ssm {
namespace {

constexpr double kBiasRange = 0.1;        // biases ~ U(-0.1, 0.1)
constexpr double kNormWeightRange = 0.1;  // norm weights ~ 1 + U(-0.1, 0.1)
constexpr double kDtMin = 1e-3;           // dt ~ log-uniform in [dt_min, dt_max] (mamba_ssm)
constexpr double kDtMax = 0.1;
constexpr double kDtFloor = 1e-4;

}  // namespace

void InitDefault(const TensorSpec& spec, Rng* rng, std::vector<float>* out) {
  const std::string& name = spec.name;
  const size_t cols = out->size() / spec.shape[0];  // product of the trailing dims
  if (EndsWith(name, "norm.weight") || EndsWith(name, "norm_f.weight") ||
      EndsWith(name, "norm_swish_gate.weight")) {
    FillWith(out, [&](size_t) { return 1.0 + rng->Uniform(-kNormWeightRange, kNormWeightRange); });
  } else if (EndsWith(name, ".weight")) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(cols));
    FillWith(out, [&](size_t) { return rng->Uniform(-bound, bound); });
  } else {
    FillWith(out, [&](size_t) { return rng->Uniform(-kBiasRange, kBiasRange); });
  }
}

double SampleDtBias(Rng* rng) {
  const double dt = std::max(kDtFloor, std::exp(rng->Uniform(std::log(kDtMin), std::log(kDtMax))));
  return dt + std::log(-std::expm1(-dt));  // inverse softplus
}

}  // namespace ssm
