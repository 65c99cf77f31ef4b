#include "server/layers/retnet/retnet.h"

#include <fmt/format.h>

#include <cmath>

namespace ssm {

std::vector<float> RetNetParams::log_gamma() const {
  std::vector<float> g(num_heads);
  for (int h = 0; h < num_heads; ++h) g[h] = float(std::log1p(-std::exp2(-5.0 - h)));
  return g;
}

Status RetNetParams::ParseOwn(ConfigReader* r) {
  return r->Get("use_output_gate", &use_output_gate);
}

// The rotation pairs the two halves of each head's keys, so head_k_dim must be even.
Status RetNetParams::ValidateOwn(const std::string& path, int d_model) const {
  if (head_k_dim(d_model) % 2 != 0)
    return InvalidArgumentError(fmt::format(
        "{}expand_k: the rotary encoding needs an even head_k_dim (d_model * expand_k / "
        "num_heads), found {}",
        path, head_k_dim(d_model)));
  return OkStatus();
}

void RetNetParams::OwnJson(ConfigJson* j) const { (*j)["use_output_gate"] = use_output_gate; }

std::string RetNetParams::OwnString() const { return use_output_gate ? " use_output_gate" : ""; }

}  // namespace ssm
