// The layer types this build knows. Adding a type: its folder, and one line here.
#include <fmt/format.h>

#include "server/layers/gla/gla.h"
#include "server/layers/layer.h"
#include "server/layers/linear_attn/linear_attn.h"
#include "server/layers/mamba/mamba.h"
#include "server/layers/mamba2/mamba2.h"
#include "server/layers/retnet/retnet.h"

namespace ssm {
namespace {

struct LayerTypeEntry {
  const char* type;
  std::unique_ptr<LayerParams> (*make)();
};

template <typename T>
std::unique_ptr<LayerParams> Make() {
  return std::make_unique<T>();
}

constexpr LayerTypeEntry kLayerTypes[] = {
    {"mamba", Make<MambaParams>},
    {"mamba2", Make<Mamba2Params>},
    {"linear_attn", Make<LinearAttnParams>},
    {"retnet", Make<RetNetParams>},
    {"gla", Make<GlaParams>},
};

}  // namespace

std::vector<std::string> LayerTypeNames() {
  std::vector<std::string> names;
  for (const LayerTypeEntry& e : kLayerTypes) names.push_back(e.type);
  return names;
}

StatusOr<std::unique_ptr<LayerParams>> NewLayerParams(const std::string& type,
                                                      const std::string& field) {
  for (const LayerTypeEntry& e : kLayerTypes) {
    if (type == e.type) return e.make();
  }
  SSM_RETURN_IF_ERROR(CheckOneOf(field, type, LayerTypeNames()));
  return InternalError("unreachable");
}

LayerConfig::LayerConfig() : params_(std::make_unique<MambaParams>()) {}

}  // namespace ssm
