// Random weights for any config: benchmark models and test fixtures.
#pragma once

#include <cstdint>
#include <memory>

#include "common/status.h"
#include "server/model/model.h"
#include "server/model/model_config.h"

namespace ssm {

// A valid model with each layer type's initial weights (LayerParams::InitTensor). Deterministic:
// the same config and seed give the same weights with any standard library (std::mt19937_64 is
// specified exactly; the std:: distributions are not, so they are not used). A "none" frontend
// keeps the config's mean/std.
StatusOr<std::shared_ptr<const Model>> MakeRandomModel(const ModelConfig& config, uint64_t seed);

}  // namespace ssm
