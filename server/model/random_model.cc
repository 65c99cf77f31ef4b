#include "server/model/random_model.h"

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "server/layers/init.h"

namespace ssm {
namespace {

// The layer a tensor name belongs to ("backbone.layers.3.mixer.D" -> 3), or -1.
int LayerIndex(const std::string& name) {
  static const std::string kPrefix = "backbone.layers.";
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return -1;
  return std::atoi(name.c_str() + kPrefix.size());
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
    const int layer = LayerIndex(spec.name);
    if (layer >= 0) {
      config.layer_params(layer).InitTensor(spec, &rng, &t.data);
    } else {
      InitDefault(spec, &rng, &t.data);
    }
  }
  return Model::FromTensors(config, std::move(tensors));
}

}  // namespace ssm
