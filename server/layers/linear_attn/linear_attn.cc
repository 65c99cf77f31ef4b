#include "server/layers/linear_attn/linear_attn.h"

#include <fmt/format.h>

namespace ssm {

FeatureMap LinearAttnParams::feature_map() const {
  if (feature_map_name == "relu") return FeatureMap::kRelu;
  if (feature_map_name == "elu") return FeatureMap::kEluPlusOne;
  return FeatureMap::kIdentity;
}

Status LinearAttnParams::ParseOwn(ConfigReader* r) {
  SSM_RETURN_IF_ERROR(r->Get("feature_map", &feature_map_name));
  SSM_RETURN_IF_ERROR(r->Get("output_norm", &output_norm_name));
  for (const char* learned : {"tie_feature_map_qk", "norm_q", "norm_k", "do_feature_map_norm"})
    SSM_RETURN_IF_ERROR(r->Forbid(learned, "not supported (docs/design.md §3.3)"));
  return OkStatus();
}

// fla's learned feature maps (hedgehog, t2r, elementwise_product, dpfp) carry weights of their
// own and are not supported.
Status LinearAttnParams::ValidateOwn(const std::string& path, int) const {
  SSM_RETURN_IF_ERROR(
      CheckOneOf(path + "feature_map", feature_map_name, {"identity", "relu", "elu"}));
  return CheckOneOf(path + "output_norm", output_norm_name, {"rmsnorm", "identity"});
}

void LinearAttnParams::OwnJson(ConfigJson* j) const {
  (*j)["feature_map"] = feature_map_name;
  (*j)["output_norm"] = output_norm_name;
}

std::string LinearAttnParams::OwnString() const {
  return fmt::format(" feature_map={} output_norm={}", feature_map_name, output_norm_name);
}

}  // namespace ssm
