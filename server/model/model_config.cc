// Strict parsing, validation and serialisation of config.json (docs/design.md §2).
//
// FromJson checks structure and types (unknown fields, wrong JSON types, fields that belong to the
// other frontend type); Validate checks values. Both name the field by its path ("layer.d_state").
#include "server/model/model_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "server/layers/mamba/mamba.h"
#include "server/model/json_check.h"

namespace ssm {
namespace {

using Json = ConfigJson;

constexpr char kFormat[] = "ssmserve/v1";

// Sanity limits: far above any real model, low enough that shapes and byte counts cannot overflow.
constexpr int kMaxDim = kMaxConfigDim;  // d_in, d_model, d_out, n_mels, win, hop, n_fft
constexpr int kMaxLayers = 1024;
constexpr int kMaxSampleRate = 1000000;  // Hz

// Fields that only a log_mel frontend accepts.
const char* const kLogMelOnlyFields[] = {"sample_rate", "win_length", "hop_length", "n_fft",
                                         "n_mels",      "f_min",      "f_max",      "log_floor"};

Status CheckFrontendType(const std::string& type) {
  return CheckOneOf("frontend.type", type, {"log_mel", "none"});
}

Status ParseFrontend(const Json& object, FrontendConfig* f) {
  ConfigReader r(object, "frontend.");
  SSM_RETURN_IF_ERROR(r.Get("type", &f->type));
  SSM_RETURN_IF_ERROR(CheckFrontendType(f->type));
  if (f->is_log_mel()) {
    SSM_RETURN_IF_ERROR(r.Get("sample_rate", &f->sample_rate));
    SSM_RETURN_IF_ERROR(r.Get("win_length", &f->win_length));
    SSM_RETURN_IF_ERROR(r.Get("hop_length", &f->hop_length));
    SSM_RETURN_IF_ERROR(r.Get("n_fft", &f->n_fft));
    SSM_RETURN_IF_ERROR(r.Get("n_mels", &f->n_mels));
    SSM_RETURN_IF_ERROR(r.Get("f_min", &f->f_min));
    SSM_RETURN_IF_ERROR(r.Get("f_max", &f->f_max));
    SSM_RETURN_IF_ERROR(r.Get("log_floor", &f->log_floor));
    SSM_RETURN_IF_ERROR(r.Forbid("frame_rate",
                                 "not allowed with frontend.type \"log_mel\" (its frame rate is "
                                 "sample_rate / hop_length)"));
    for (const char* key : {"mean", "std"}) {
      SSM_RETURN_IF_ERROR(r.Forbid(key, "only allowed with frontend.type \"none\""));
    }
  } else {
    SSM_RETURN_IF_ERROR(r.Get("mean", &f->mean));
    SSM_RETURN_IF_ERROR(r.Get("std", &f->std));
    SSM_RETURN_IF_ERROR(r.Get("frame_rate", &f->frame_rate));
    // An empty array would silently mean "no normalisation"; omit the field for that.
    for (const char* key : {"mean", "std"}) {
      if (r.Has(key) && object[key].empty()) {
        return InvalidArgumentError(r.Path(key) + ": expected d_in numbers, found an empty array");
      }
    }
    for (const char* key : kLogMelOnlyFields) {
      SSM_RETURN_IF_ERROR(r.Forbid(key, "only allowed with frontend.type \"log_mel\""));
    }
  }
  return r.CheckNoUnknownFields();
}

// One layer section: "type" (default "mamba") selects the type, which reads the rest.
Status ParseLayer(const Json& object, const std::string& prefix, int d_model, LayerConfig* layer) {
  ConfigReader r(object, prefix);
  std::string type = "mamba";
  SSM_RETURN_IF_ERROR(r.Get("type", &type));
  SSM_ASSIGN_OR_RETURN(std::unique_ptr<LayerParams> params, NewLayerParams(type, r.Path("type")));
  SSM_RETURN_IF_ERROR(params->Parse(&r, d_model));
  SSM_RETURN_IF_ERROR(r.CheckNoUnknownFields());
  *layer = LayerConfig(std::move(params));
  return OkStatus();
}

Status ParseNorm(const Json& object, NormConfig* norm) {
  ConfigReader r(object, "norm.");
  SSM_RETURN_IF_ERROR(r.Get("type", &norm->type));
  SSM_RETURN_IF_ERROR(r.Get("eps", &norm->eps));
  return r.CheckNoUnknownFields();
}

// A per-feature array of the "none" frontend: d_in finite numbers, positive if `positive`.
Status CheckFeatureArray(const std::string& field, const std::vector<float>& values, int d_in,
                         bool positive) {
  if (values.empty()) return OkStatus();
  if (static_cast<int64_t>(values.size()) != d_in) {
    return InvalidArgumentError(
        fmt::format("{}: expected {} numbers (d_in), found {}", field, d_in, values.size()));
  }
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i]) || (positive && !(values[i] > 0))) {
      return InvalidArgumentError(fmt::format("{}[{}]: expected a {} number, found {}", field, i,
                                              positive ? "finite positive" : "finite", values[i]));
    }
  }
  return OkStatus();
}

}  // namespace

double ModelConfig::frame_rate() const {
  return frontend.is_log_mel() ? static_cast<double>(frontend.sample_rate) / frontend.hop_length
                               : frontend.frame_rate;
}

StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& json_text) {
  // First: the tree must never hold nesting that the recursive dump() in Describe would overflow
  // the stack on, and Json::parse throws on a number that overflows a double.
  SSM_RETURN_IF_ERROR(CheckJson(json_text, "config"));
  Json root;
  try {
    root = Json::parse(json_text);
  } catch (const Json::exception& e) {  // not expected after CheckJson; never let one escape
    return InvalidArgumentError(fmt::format("config: {}", e.what()));
  }
  if (!root.is_object()) return ConfigTypeError("config", "a JSON object", root);

  ModelConfig c;
  ConfigReader r(root, "");
  for (const char* key : {"format", "d_in", "d_model", "n_layer", "d_out"}) {
    SSM_RETURN_IF_ERROR(r.Required(key));
  }
  SSM_RETURN_IF_ERROR(r.Get("format", &c.format));
  // Check the format first: a different format's other fields would only give confusing errors.
  SSM_RETURN_IF_ERROR(CheckOneOf("format", c.format, {kFormat}));
  SSM_RETURN_IF_ERROR(r.Get("d_in", &c.d_in));
  SSM_RETURN_IF_ERROR(r.Get("d_model", &c.d_model));
  SSM_RETURN_IF_ERROR(r.Get("n_layer", &c.n_layer));
  SSM_RETURN_IF_ERROR(r.Get("d_out", &c.d_out));
  SSM_RETURN_IF_ERROR(r.Get("head_activation", &c.head_activation));
  SSM_RETURN_IF_ERROR(r.Get("labels", &c.labels));

  const Json* frontend = nullptr;
  SSM_RETURN_IF_ERROR(r.GetObject("frontend", &frontend));
  if (frontend != nullptr) SSM_RETURN_IF_ERROR(ParseFrontend(*frontend, &c.frontend));

  const Json* layer = nullptr;
  const Json* layers = nullptr;
  SSM_RETURN_IF_ERROR(r.GetObject("layer", &layer));
  SSM_RETURN_IF_ERROR(r.GetObjectArray("layers", &layers));
  if (layer != nullptr && layers != nullptr)
    return InvalidArgumentError(
        "layers: give either \"layer\" (the same for every layer) or \"layers\" (one per "
        "layer), not both");
  // d_model is validated below (defaults that depend on it, like dt_rank, are checked then).
  const Json no_fields = Json::object();
  SSM_RETURN_IF_ERROR(
      ParseLayer(layer != nullptr ? *layer : no_fields, "layer.", c.d_model, &c.layer));
  if (layers != nullptr) {
    if (layers->size() != size_t(std::max(c.n_layer, 0)))
      return InvalidArgumentError(fmt::format("layers: expected n_layer ({}) entries, found {}",
                                              c.n_layer, layers->size()));
    for (size_t i = 0; i < layers->size(); ++i) {
      c.layers.emplace_back();
      SSM_RETURN_IF_ERROR(
          ParseLayer((*layers)[i], fmt::format("layers[{}].", i), c.d_model, &c.layers.back()));
    }
  }

  const Json* norm = nullptr;
  SSM_RETURN_IF_ERROR(r.GetObject("norm", &norm));
  if (norm != nullptr) SSM_RETURN_IF_ERROR(ParseNorm(*norm, &c.norm));

  SSM_RETURN_IF_ERROR(r.CheckNoUnknownFields());
  SSM_RETURN_IF_ERROR(c.Validate());
  return c;
}

StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(fmt::format("{}: cannot open the model config", path));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) return InvalidArgumentError(fmt::format("{}: read error", path));
  StatusOr<ModelConfig> config = FromJson(text.str());
  if (!config.ok()) return config.status().WithContext(path);
  return config;
}

std::string ModelConfig::ToJson() const {
  Json f;
  f["type"] = frontend.type;
  if (frontend.is_log_mel()) {
    f["sample_rate"] = frontend.sample_rate;
    f["win_length"] = frontend.win_length;
    f["hop_length"] = frontend.hop_length;
    f["n_fft"] = frontend.n_fft;
    f["n_mels"] = frontend.n_mels;
    f["f_min"] = frontend.f_min;
    f["f_max"] = frontend.f_max;
    f["log_floor"] = frontend.log_floor;
  } else {
    if (!frontend.mean.empty()) f["mean"] = frontend.mean;
    if (!frontend.std.empty()) f["std"] = frontend.std;
    f["frame_rate"] = frontend.frame_rate;
  }
  Json root;
  root["format"] = format;
  root["frontend"] = f;
  root["d_in"] = d_in;
  root["d_model"] = d_model;
  root["n_layer"] = n_layer;
  if (layers.empty()) {
    root["layer"] = layer->ToJson();
  } else {
    Json list = Json::array();
    for (const LayerConfig& l : layers) list.push_back(l->ToJson());
    root["layers"] = list;
  }
  root["norm"] = {{"type", norm.type}, {"eps", norm.eps}};
  root["d_out"] = d_out;
  root["head_activation"] = head_activation;
  if (!labels.empty()) root["labels"] = labels;
  return root.dump(2) + "\n";
}

Status ModelConfig::Validate() const {
  SSM_RETURN_IF_ERROR(CheckOneOf("format", format, {kFormat}));
  SSM_RETURN_IF_ERROR(CheckIntRange("d_in", d_in, 1, kMaxDim));
  SSM_RETURN_IF_ERROR(CheckIntRange("d_model", d_model, 1, kMaxDim));
  SSM_RETURN_IF_ERROR(CheckIntRange("n_layer", n_layer, 1, kMaxLayers));
  SSM_RETURN_IF_ERROR(CheckIntRange("d_out", d_out, 1, kMaxDim));

  const FrontendConfig& f = frontend;
  SSM_RETURN_IF_ERROR(CheckFrontendType(f.type));
  if (f.is_log_mel()) {
    SSM_RETURN_IF_ERROR(CheckIntRange("frontend.sample_rate", f.sample_rate, 1, kMaxSampleRate));
    SSM_RETURN_IF_ERROR(CheckIntRange("frontend.win_length", f.win_length, 1, kMaxDim));
    SSM_RETURN_IF_ERROR(CheckIntRange("frontend.hop_length", f.hop_length, 1, kMaxDim));
    if (f.n_fft < f.win_length || f.n_fft > kMaxDim) {
      return InvalidArgumentError(
          fmt::format("frontend.n_fft: expected an integer in [frontend.win_length ({}), {}], "
                      "found {}",
                      f.win_length, kMaxDim, f.n_fft));
    }
    SSM_RETURN_IF_ERROR(CheckIntRange("frontend.n_mels", f.n_mels, 1, kMaxDim));
    const double nyquist = f.sample_rate / 2.0;
    if (!(f.f_min >= 0 && f.f_min < nyquist)) {
      return InvalidArgumentError(
          fmt::format("frontend.f_min: expected 0 <= f_min < sample_rate / 2 ({}), found {}",
                      nyquist, f.f_min));
    }
    if (!(f.f_max > f.f_min && f.f_max <= nyquist)) {
      return InvalidArgumentError(fmt::format(
          "frontend.f_max: expected f_min ({}) < f_max <= sample_rate / 2 ({}), found {}", f.f_min,
          nyquist, f.f_max));
    }
    if (!(f.log_floor > 0 && std::isfinite(f.log_floor))) {
      return InvalidArgumentError(
          fmt::format("frontend.log_floor: expected a number > 0, found {}", f.log_floor));
    }
    if (d_in != f.n_mels) {
      return InvalidArgumentError(fmt::format(
          "d_in: expected frontend.n_mels ({}) for a log_mel frontend, found {}", f.n_mels, d_in));
    }
    if (!f.mean.empty() || !f.std.empty()) {
      return InvalidArgumentError("frontend.mean/std: only allowed with frontend.type \"none\"");
    }
  } else {
    SSM_RETURN_IF_ERROR(CheckFeatureArray("frontend.mean", f.mean, d_in, /*positive=*/false));
    SSM_RETURN_IF_ERROR(CheckFeatureArray("frontend.std", f.std, d_in, /*positive=*/true));
    if (!(f.frame_rate > 0 && std::isfinite(f.frame_rate))) {
      return InvalidArgumentError(fmt::format(
          "frontend.frame_rate: expected a number > 0 (frames/s), found {}", f.frame_rate));
    }
  }

  if (layers.empty()) {
    SSM_RETURN_IF_ERROR(layer->Validate("layer.", d_model));
  } else {
    if (layers.size() != size_t(n_layer))
      return InvalidArgumentError(
          fmt::format("layers: expected n_layer ({}) entries, found {}", n_layer, layers.size()));
    for (int i = 0; i < n_layer; ++i)
      SSM_RETURN_IF_ERROR(layers[i]->Validate(layer_path(i), d_model));
  }

  SSM_RETURN_IF_ERROR(CheckOneOf("norm.type", norm.type, {"rmsnorm"}));
  // The engine adds eps in float32: 1e-50 would become 0 there (0/0 on a zero row), 1e39 inf.
  const float eps32 = static_cast<float>(norm.eps);
  if (!(norm.eps > 0 && std::isfinite(norm.eps))) {
    return InvalidArgumentError(fmt::format("norm.eps: expected a number > 0, found {}", norm.eps));
  }
  if (!(eps32 > 0 && std::isfinite(eps32))) {
    return InvalidArgumentError(fmt::format(
        "norm.eps: expected a number float32 can hold (1e-45 to 3.4e38), found {}", norm.eps));
  }

  SSM_RETURN_IF_ERROR(
      CheckOneOf("head_activation", head_activation, {"none", "sigmoid", "softmax"}));
  if (!labels.empty() && static_cast<int64_t>(labels.size()) != d_out) {
    return InvalidArgumentError(
        fmt::format("labels: expected {} strings (d_out), found {}", d_out, labels.size()));
  }
  return OkStatus();
}

std::string ModelConfig::ToString() const {
  std::string front;
  if (frontend.is_log_mel()) {
    front = fmt::format("log_mel({} Hz, win {}, hop {}, n_fft {}, {} mels, {}-{} Hz)",
                        frontend.sample_rate, frontend.win_length, frontend.hop_length,
                        frontend.n_fft, frontend.n_mels, frontend.f_min, frontend.f_max);
  } else {
    front = fmt::format("none({}{} frames/s)", frontend.mean.empty() ? "" : "normalised, ",
                        frontend.frame_rate);
  }
  // A hybrid stack lists runs of equal layers: "2x mamba2(...), 1x gla(...)".
  std::string stack;
  if (layers.empty()) {
    stack = layer->ToString();
  } else {
    for (int i = 0; i < n_layer;) {
      const std::string one = layers[i]->ToString();
      int run = 1;
      while (i + run < n_layer && layers[i + run]->ToString() == one) ++run;
      stack += fmt::format("{}{}x {}", stack.empty() ? "" : ", ", run, one);
      i += run;
    }
  }
  return fmt::format("{} {} d_in={} d_model={} n_layer={} {} {}(eps={}) d_out={} {}{}", format,
                     front, d_in, d_model, n_layer, stack, norm.type, norm.eps, d_out,
                     head_activation,
                     labels.empty() ? "" : fmt::format(" [{}]", fmt::join(labels, ", ")));
}

std::string ModelConfig::layer_path(int i) const {
  return layers.empty() ? "layer." : fmt::format("layers[{}].", i);
}

std::vector<TensorSpec> ModelConfig::ExpectedTensors() const {
  const int64_t d = d_model;
  std::vector<TensorSpec> specs = {{"input_proj.weight", {d, d_in}}, {"input_proj.bias", {d}}};
  for (int i = 0; i < n_layer; ++i) {
    for (TensorSpec& spec :
         layer_params(i).Tensors(fmt::format("backbone.layers.{}.", i), d_model)) {
      specs.push_back(std::move(spec));
    }
  }
  specs.push_back({"backbone.norm_f.weight", {d}});
  specs.push_back({"head.weight", {d_out, d}});
  specs.push_back({"head.bias", {d_out}});
  return specs;
}

StatusOr<ModelConfig> ModelConfig::Preset(const std::string& name) {
  // docs/design.md §5: log-mel 16 kHz defaults, d_in 80, d_out 2; Mamba-1 layers with d_state
  // 16, d_conv 4, expand 2, or "-<type>" for another type with its defaults.
  struct Size {
    const char* name;
    int d_model;
    int n_layer;
  };
  static constexpr Size kPresets[] = {
      {"bench-s", 128, 4}, {"bench-m", 256, 8}, {"bench-l", 768, 24}};
  std::vector<std::string> names;
  for (const std::string& type : LayerTypeNames()) {
    for (const Size& p : kPresets) {
      const std::string preset = type == "mamba" ? p.name : fmt::format("{}-{}", p.name, type);
      names.push_back(preset);
      if (name != preset) continue;
      ModelConfig c;  // the struct defaults are the documented log-mel frontend
      c.d_in = 80;
      c.d_model = p.d_model;
      c.n_layer = p.n_layer;
      SSM_ASSIGN_OR_RETURN(std::unique_ptr<LayerParams> params, NewLayerParams(type, "layer.type"));
      c.layer = LayerConfig(std::move(params));
      if (type == "mamba") c.layer.as<MambaParams>().dt_rank = MambaParams::AutoDtRank(p.d_model);
      c.d_out = 2;
      c.head_activation = "softmax";
      c.labels = {"background", "speech"};
      return c;
    }
  }
  return NotFoundError(
      fmt::format("unknown preset \"{}\" (valid: {})", name, fmt::join(names, ", ")));
}

}  // namespace ssm
