// config.json parsing (server/model/model_config.*, json_check.*) on any text:
// - CheckJson is the gate before nlohmann's parser: text it passes never makes the parser throw;
// - FromJson fails with INVALID_ARGUMENT and a message, or gives a config that validates, whose
//   ToJson parses back to the same config (ToJson is a fixed point), and whose expected tensors
//   are the documented list with positive dimensions;
// - Excerpt quotes the text whole when short, else a prefix cut on a UTF-8 boundary.
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "server/layers/gated_linear/gated_linear.h"
#include "server/layers/mamba/mamba.h"
#include "server/layers/mamba2/mamba2.h"
#include "server/model/json_check.h"
#include "server/model/model_config.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

void CheckExcerpt(const std::string& text) {
  const std::string e = Excerpt(text, 64);
  if (text.size() <= 64) {
    FUZZ_CHECK(e == text);
    return;
  }
  const size_t dots = e.rfind("...(");
  FUZZ_CHECK(dots != std::string::npos && dots <= 48, "excerpt {}", e);
  FUZZ_CHECK(text.compare(0, dots, e, 0, dots) == 0, "the excerpt is not the text's start");
  FUZZ_CHECK((static_cast<unsigned char>(text[dots]) & 0xc0) != 0x80 || dots == 0,
             "the excerpt cuts a UTF-8 sequence");
  FUZZ_CHECK(e.substr(dots) == fmt::format("...({} bytes)", text.size()));
}

void CheckConfig(const ModelConfig& c) {
  const Status valid = c.Validate();
  FUZZ_CHECK(valid.ok(), "FromJson accepted a config Validate refuses: {}", valid.ToString());
  FUZZ_CHECK(!c.ToString().empty());
  const std::string json = c.ToJson();
  auto again = ModelConfig::FromJson(json);
  FUZZ_CHECK(again.ok(), "ToJson does not parse back: {}\n{}", again.status().ToString(), json);
  FUZZ_CHECK(again->ToJson() == json, "ToJson is not a fixed point:\n{}\n{}", json,
             again->ToJson());
  FUZZ_CHECK(again->frame_rate() == c.frame_rate());

  const std::vector<TensorSpec> specs = c.ExpectedTensors();
  // The documented count per layer type (docs/design.md §2): its fixed tensors plus the two
  // linear biases and the conv bias when asked for.
  size_t expected = 5;
  for (int i = 0; i < c.n_layer; ++i) {
    const LayerParams& p = c.layer_params(i);
    if (const auto* m = dynamic_cast<const MambaParams*>(&p)) {
      expected += 9 + (m->bias ? 2 : 0) + (m->conv_bias ? 1 : 0);
    } else if (const auto* m2 = dynamic_cast<const Mamba2Params*>(&p)) {
      expected += 8 + (m2->bias ? 2 : 0) + (m2->conv_bias ? 1 : 0);
    } else if (const auto* g = dynamic_cast<const GatedLinearParams*>(&p)) {
      // attn_norm, q, k, v, o; g_proj with the output gate; GLA's three gk_proj tensors; the
      // output norm unless "identity"; the MLP's norm and three projections unless it is absent.
      expected += 5 + (g->output_gate() ? 1 : 0) + (g->gate_low_rank_dim() > 0 ? 3 : 0) +
                  (g->output_norm().empty() ? 0 : 1) + (g->mlp_size(c.d_model) > 0 ? 4 : 0);
    } else {
      FUZZ_CHECK(false, "layer type {} has no documented tensor count here", p.type());
    }
  }
  FUZZ_CHECK(specs.size() == expected, "{} tensors, expected {}", specs.size(), expected);
  std::set<std::string> names;
  for (const TensorSpec& s : specs) {
    FUZZ_CHECK(names.insert(s.name).second, "tensor '{}' twice", s.name);
    for (int64_t d : s.shape) FUZZ_CHECK(d > 0, "tensor '{}' has dimension {}", s.name, d);
  }
}

}  // namespace
}  // namespace ssm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ssm;
  const std::string text(reinterpret_cast<const char*>(data), size);
  CheckExcerpt(text);

  const Status checked = CheckJson(text, "config");
  FUZZ_CHECK(checked.ok() || checked.code() == StatusCode::kInvalidArgument);
  bool threw = false;
  try {
    (void)nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    threw = true;
  }
  FUZZ_CHECK(!(checked.ok() && threw), "CheckJson passed text that nlohmann cannot parse");

  auto config = ModelConfig::FromJson(text);
  if (!config.ok()) {
    FUZZ_CHECK(config.status().code() == StatusCode::kInvalidArgument, "{}",
               config.status().ToString());
    FUZZ_CHECK(!config.status().message().empty());
    return 0;
  }
  FUZZ_CHECK(checked.ok(), "FromJson accepted text CheckJson refuses: {}", checked.ToString());
  CheckConfig(*config);
  return 0;
}
