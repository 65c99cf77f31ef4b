#include "server/layers/gla/gla.h"

#include <fmt/format.h>

namespace ssm {

void GlaParams::GateSettings(GatedLinearScanArgs* a) const {
  a->gate_normalizer = float(gate_logit_normalizer);
  if (has_clamp_min) a->gate_clamp_min = float(clamp_min);
}

Status GlaParams::ParseOwn(ConfigReader* r) {
  SSM_RETURN_IF_ERROR(r->Get("use_output_gate", &use_output_gate));
  SSM_RETURN_IF_ERROR(r->Get("gate_logit_normalizer", &gate_logit_normalizer));
  SSM_RETURN_IF_ERROR(r->Get("gate_low_rank_dim", &gate_low_rank));
  has_clamp_min = r->Has("clamp_min");
  return r->Get("clamp_min", &clamp_min);
}

Status GlaParams::ValidateOwn(const std::string& path, int) const {
  SSM_RETURN_IF_ERROR(
      CheckIntRange(path + "gate_logit_normalizer", gate_logit_normalizer, 1, kMaxConfigDim));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "gate_low_rank_dim", gate_low_rank, 1, kMaxConfigDim));
  if (has_clamp_min && !(clamp_min < 0))
    return InvalidArgumentError(
        fmt::format("{}clamp_min: expected a negative number (a bound on the log decay), found {}",
                    path, clamp_min));
  return OkStatus();
}

// clamp_min is written only when set: absent means no clamp.
void GlaParams::OwnJson(ConfigJson* j) const {
  (*j)["use_output_gate"] = use_output_gate;
  (*j)["gate_logit_normalizer"] = gate_logit_normalizer;
  (*j)["gate_low_rank_dim"] = gate_low_rank;
  if (has_clamp_min) (*j)["clamp_min"] = clamp_min;
}

std::string GlaParams::OwnString() const {
  return fmt::format("{} gate_logit_normalizer={} gate_low_rank_dim={}{}",
                     use_output_gate ? " use_output_gate" : "", gate_logit_normalizer,
                     gate_low_rank,
                     has_clamp_min ? fmt::format(" clamp_min={}", clamp_min) : std::string());
}

}  // namespace ssm
