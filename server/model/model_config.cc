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

#include "server/model/json_check.h"

namespace ssm {
namespace {

using Json = nlohmann::ordered_json;

constexpr char kFormat[] = "ssmserve/v1";

// Sanity limits: far above any real model, low enough that shapes and byte counts cannot overflow.
constexpr int kMaxDim = 1 << 16;  // d_in, d_model, d_out, dt_rank, n_mels, win, hop, n_fft
constexpr int kMaxLayers = 1024;
constexpr int kMaxExpand = 64;
constexpr int kMaxDState = 256;
constexpr int kMaxDConv = 8;
constexpr int kMaxSampleRate = 1000000;  // Hz
constexpr int kIntMax = std::numeric_limits<int>::max();

// Fields that only a log_mel frontend accepts.
const char* const kLogMelOnlyFields[] = {"sample_rate", "win_length", "hop_length", "n_fft",
                                         "n_mels",      "f_min",      "f_max",      "log_floor"};

// "a string (\"abc\")": what a JSON value is, for "found ..." in messages.
std::string Describe(const Json& v) {
  std::string text = v.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return text;
    case Json::value_t::string:
      return "a string (" + text + ")";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "an integer (" + text + ")";
    case Json::value_t::number_float:
      return "a number (" + text + ")";
    case Json::value_t::array:
      return "an array (" + text + ")";
    case Json::value_t::object:
      return "an object (" + text + ")";
    default:
      return text;
  }
}

Status TypeError(const std::string& path, const char* expected, const Json& found) {
  return InvalidArgumentError(
      fmt::format("{}: expected {}, found {}", path, expected, Describe(found)));
}

// Levenshtein distance, to suggest the field a typo meant.
size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// Reads the members of one JSON object into struct fields. An absent optional member leaves the
// struct's default; every key asked for is remembered so that leftovers are reported as unknown.
class ObjectReader {
 public:
  ObjectReader(const Json& object, std::string prefix)
      : object_(object), prefix_(std::move(prefix)) {}

  std::string Path(const std::string& key) const { return prefix_ + key; }
  bool Has(const char* key) const { return object_.contains(key); }

  Status Required(const char* key) {
    known_.insert(key);
    if (!Has(key)) return InvalidArgumentError(Path(key) + ": required field is missing");
    return OkStatus();
  }

  Status Get(const char* key, int* out) {
    const Json* v = Find(key);
    if (v == nullptr) return OkStatus();
    if (!v->is_number_integer()) return TypeError(Path(key), "an integer", *v);
    const bool fits = v->is_number_unsigned()
                          ? v->get<uint64_t>() <= static_cast<uint64_t>(kIntMax)
                          : v->get<int64_t>() >= std::numeric_limits<int>::min();
    if (!fits) return TypeError(Path(key), "a 32-bit integer", *v);
    *out = v->get<int>();
    return OkStatus();
  }
  Status Get(const char* key, double* out) {
    return GetScalar(key, &Json::is_number, "a number", out);
  }
  Status Get(const char* key, bool* out) {
    return GetScalar(key, &Json::is_boolean, "true or false", out);
  }
  Status Get(const char* key, std::string* out) {
    return GetScalar(key, &Json::is_string, "a string", out);
  }
  Status Get(const char* key, std::vector<float>* out) {
    return GetArray(key, &Json::is_number, "a number", "an array of numbers", out);
  }
  Status Get(const char* key, std::vector<std::string>* out) {
    return GetArray(key, &Json::is_string, "a string", "an array of strings", out);
  }

  // A nested object; *out stays null when the member is absent.
  Status GetObject(const char* key, const Json** out) {
    const Json* v = Find(key);
    if (v == nullptr) return OkStatus();
    if (!v->is_object()) return TypeError(Path(key), "an object", *v);
    *out = v;
    return OkStatus();
  }

  // A member that is a known field, but not allowed here (`reason` says why).
  Status Forbid(const char* key, const std::string& reason) {
    known_.insert(key);
    if (Has(key)) return InvalidArgumentError(fmt::format("{}: {}", Path(key), reason));
    return OkStatus();
  }

  // Every member not asked for is an unknown field; suggests the nearest known name.
  Status CheckNoUnknownFields() const {
    for (const auto& item : object_.items()) {
      if (known_.count(item.key())) continue;
      std::string message = Path(Excerpt(item.key())) + ": unknown field";
      const std::string* nearest = nullptr;
      size_t best = 3;  // suggest only close matches (distance <= 2)
      for (const std::string& k : known_) {
        const size_t d = EditDistance(item.key(), k);
        if (d < best) best = d, nearest = &k;
      }
      if (nearest != nullptr) message += fmt::format(" (did you mean \"{}\"?)", *nearest);
      return InvalidArgumentError(message);
    }
    return OkStatus();
  }

 private:
  using TypeCheck = bool (Json::*)() const noexcept;

  // A member whose JSON type `is_type` accepts; `expected` names that type in errors.
  template <typename T>
  Status GetScalar(const char* key, TypeCheck is_type, const char* expected, T* out) {
    const Json* v = Find(key);
    if (v == nullptr) return OkStatus();
    if (!(v->*is_type)()) return TypeError(Path(key), expected, *v);
    *out = v->get<T>();
    return OkStatus();
  }

  // An array member whose items `is_item` accepts.
  template <typename T>
  Status GetArray(const char* key, TypeCheck is_item, const char* item_expected,
                  const char* array_expected, std::vector<T>* out) {
    const Json* v = Find(key);
    if (v == nullptr) return OkStatus();
    if (!v->is_array()) return TypeError(Path(key), array_expected, *v);
    out->clear();
    for (size_t i = 0; i < v->size(); ++i) {
      const Json& item = (*v)[i];
      if (!(item.*is_item)()) {
        return TypeError(fmt::format("{}[{}]", Path(key), i), item_expected, item);
      }
      out->push_back(item.get<T>());
    }
    return OkStatus();
  }

  const Json* Find(const char* key) {
    known_.insert(key);
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }

  const Json& object_;
  std::string prefix_;
  std::set<std::string> known_;
};

// "frontend.type: expected "log_mel" | "none", found "mfcc"".
Status CheckOneOf(const std::string& field, const std::string& value,
                  std::initializer_list<const char*> allowed) {
  std::string list;
  for (const char* a : allowed) {
    if (value == a) return OkStatus();
    list += fmt::format("{}\"{}\"", list.empty() ? "" : " | ", a);
  }
  return InvalidArgumentError(
      fmt::format("{}: expected {}, found \"{}\"", field, list, Excerpt(value)));
}

Status CheckFrontendType(const std::string& type) {
  return CheckOneOf("frontend.type", type, {"log_mel", "none"});
}

// mamba_ssm's dt_rank="auto": ceil(d_model / 16).
int AutoDtRank(int d_model) { return d_model / 16 + (d_model % 16 != 0 ? 1 : 0); }

Status ParseFrontend(const Json& object, FrontendConfig* f) {
  ObjectReader r(object, "frontend.");
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

Status ParseLayer(const Json& object, LayerConfig* layer, bool* has_dt_rank) {
  ObjectReader r(object, "layer.");
  SSM_RETURN_IF_ERROR(r.Get("type", &layer->type));
  SSM_RETURN_IF_ERROR(r.Get("d_state", &layer->d_state));
  SSM_RETURN_IF_ERROR(r.Get("d_conv", &layer->d_conv));
  SSM_RETURN_IF_ERROR(r.Get("expand", &layer->expand));
  SSM_RETURN_IF_ERROR(r.Get("dt_rank", &layer->dt_rank));
  SSM_RETURN_IF_ERROR(r.Get("conv_bias", &layer->conv_bias));
  SSM_RETURN_IF_ERROR(r.Get("bias", &layer->bias));
  *has_dt_rank = r.Has("dt_rank");
  return r.CheckNoUnknownFields();
}

Status ParseNorm(const Json& object, NormConfig* norm) {
  ObjectReader r(object, "norm.");
  SSM_RETURN_IF_ERROR(r.Get("type", &norm->type));
  SSM_RETURN_IF_ERROR(r.Get("eps", &norm->eps));
  return r.CheckNoUnknownFields();
}

Status CheckIntRange(const std::string& field, int64_t value, int64_t lo, int64_t hi) {
  if (value < lo || value > hi) {
    return InvalidArgumentError(
        fmt::format("{}: expected an integer in [{}, {}], found {}", field, lo, hi, value));
  }
  return OkStatus();
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
  if (!root.is_object()) return TypeError("config", "a JSON object", root);

  ModelConfig c;
  ObjectReader r(root, "");
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
  bool has_dt_rank = false;
  SSM_RETURN_IF_ERROR(r.GetObject("layer", &layer));
  if (layer != nullptr) SSM_RETURN_IF_ERROR(ParseLayer(*layer, &c.layer, &has_dt_rank));
  if (!has_dt_rank) c.layer.dt_rank = AutoDtRank(c.d_model);  // d_model is validated below

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
  root["layer"] = {{"type", layer.type},       {"d_state", layer.d_state},
                   {"d_conv", layer.d_conv},   {"expand", layer.expand},
                   {"dt_rank", layer.dt_rank}, {"conv_bias", layer.conv_bias},
                   {"bias", layer.bias}};
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

  SSM_RETURN_IF_ERROR(CheckOneOf("layer.type", layer.type, {"mamba"}));
  SSM_RETURN_IF_ERROR(CheckIntRange("layer.d_state", layer.d_state, 1, kMaxDState));
  SSM_RETURN_IF_ERROR(CheckIntRange("layer.d_conv", layer.d_conv, 1, kMaxDConv));
  SSM_RETURN_IF_ERROR(CheckIntRange("layer.expand", layer.expand, 1, kMaxExpand));
  SSM_RETURN_IF_ERROR(CheckIntRange("layer.dt_rank", layer.dt_rank, 1, kMaxDim));

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
  return fmt::format(
      "{} {} d_in={} d_model={} n_layer={} {}(d_state={} d_conv={} expand={} dt_rank={}{}{}) "
      "{}(eps={}) d_out={} {}{}",
      format, front, d_in, d_model, n_layer, layer.type, layer.d_state, layer.d_conv, layer.expand,
      layer.dt_rank, layer.conv_bias ? " conv_bias" : "", layer.bias ? " bias" : "", norm.type,
      norm.eps, d_out, head_activation,
      labels.empty() ? "" : fmt::format(" [{}]", fmt::join(labels, ", ")));
}

std::vector<TensorSpec> ModelConfig::ExpectedTensors() const {
  const int64_t d = d_model, e = d_inner(), n = layer.d_state, r = layer.dt_rank;
  std::vector<TensorSpec> specs = {{"input_proj.weight", {d, d_in}}, {"input_proj.bias", {d}}};
  for (int i = 0; i < n_layer; ++i) {
    const std::string l = fmt::format("backbone.layers.{}.", i);
    const std::string m = l + "mixer.";
    specs.push_back({l + "norm.weight", {d}});
    specs.push_back({m + "in_proj.weight", {2 * e, d}});
    if (layer.bias) specs.push_back({m + "in_proj.bias", {2 * e}});
    specs.push_back({m + "conv1d.weight", {e, 1, layer.d_conv}});
    if (layer.conv_bias) specs.push_back({m + "conv1d.bias", {e}});
    specs.push_back({m + "x_proj.weight", {r + 2 * n, e}});
    specs.push_back({m + "dt_proj.weight", {e, r}});
    specs.push_back({m + "dt_proj.bias", {e}});
    specs.push_back({m + "A_log", {e, n}});
    specs.push_back({m + "D", {e}});
    specs.push_back({m + "out_proj.weight", {d, e}});
    if (layer.bias) specs.push_back({m + "out_proj.bias", {d}});
  }
  specs.push_back({"backbone.norm_f.weight", {d}});
  specs.push_back({"head.weight", {d_out, d}});
  specs.push_back({"head.bias", {d_out}});
  return specs;
}

StatusOr<ModelConfig> ModelConfig::Preset(const std::string& name) {
  // docs/design.md §5: log-mel 16 kHz defaults, d_in 80, d_state 16, d_conv 4, expand 2, d_out 2.
  struct Size {
    const char* name;
    int d_model;
    int n_layer;
  };
  static constexpr Size kPresets[] = {
      {"bench-s", 128, 4}, {"bench-m", 256, 8}, {"bench-l", 768, 24}};
  std::vector<std::string> names;
  for (const Size& p : kPresets) {
    names.push_back(p.name);
    if (name != p.name) continue;
    ModelConfig c;  // the struct defaults are the documented log-mel frontend and Mamba layer
    c.d_in = 80;
    c.d_model = p.d_model;
    c.n_layer = p.n_layer;
    c.layer.dt_rank = AutoDtRank(p.d_model);
    c.d_out = 2;
    c.head_activation = "softmax";
    c.labels = {"background", "speech"};
    return c;
  }
  return NotFoundError(
      fmt::format("unknown preset \"{}\" (valid: {})", name, fmt::join(names, ", ")));
}

}  // namespace ssm
