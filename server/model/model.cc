#include "server/model/model.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "server/model/json_check.h"
#include "server/model/safetensors.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxNamesListed = 6;  // in "missing/unexpected tensors" messages

std::string ShapeString(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// "a, b, c and 4 more".
std::string ListNames(const std::vector<std::string>& names) {
  std::vector<std::string> shown(names.begin(),
                                 names.begin() + std::min(names.size(), kMaxNamesListed));
  std::string list = fmt::format("{}", fmt::join(shown, ", "));
  if (names.size() > shown.size()) list += fmt::format(" and {} more", names.size() - shown.size());
  return list;
}

// Checks that `shapes` (tensor name -> shape) is exactly the config's expected set.
Status CheckTensorSet(const ModelConfig& config,
                      const std::map<std::string, std::vector<int64_t>>& shapes) {
  const std::vector<TensorSpec> specs = config.ExpectedTensors();
  std::set<std::string> expected;
  std::vector<std::string> missing;
  for (const TensorSpec& spec : specs) {
    expected.insert(spec.name);
    if (!shapes.count(spec.name)) {
      missing.push_back(fmt::format("'{}' {}", spec.name, ShapeString(spec.shape)));
    }
  }
  std::vector<std::string> extra;
  for (const auto& [name, shape] : shapes) {
    if (!expected.count(name)) extra.push_back(fmt::format("'{}'", Excerpt(name)));
  }
  // Reported together: a missing and an extra tensor often are one misnamed tensor.
  if (!missing.empty()) {
    std::string message = fmt::format("missing {} tensor(s) that the config requires: {}",
                                      missing.size(), ListNames(missing));
    if (!extra.empty()) message += "; unexpected tensor(s) in the file: " + ListNames(extra);
    return InvalidArgumentError(message);
  }
  if (!extra.empty()) {
    return InvalidArgumentError(
        fmt::format("{} unexpected tensor(s) that the config does not use: {} (check n_layer and "
                    "the layer settings, e.g. bias and conv_bias)",
                    extra.size(), ListNames(extra)));
  }
  for (const TensorSpec& spec : specs) {
    const std::vector<int64_t>& shape = shapes.at(spec.name);
    if (shape != spec.shape) {
      return InvalidArgumentError(fmt::format("tensor '{}': expected shape {}, found {}", spec.name,
                                              ShapeString(spec.shape), ShapeString(shape)));
    }
  }
  return OkStatus();
}

Status CheckFinite(const std::string& name, const std::vector<float>& data) {
  for (size_t i = 0; i < data.size(); ++i) {
    if (!std::isfinite(data[i])) {
      return InvalidArgumentError(
          fmt::format("tensor '{}': {} at flat index {}", name, data[i], i));
    }
  }
  return OkStatus();
}

}  // namespace

StatusOr<std::shared_ptr<const Model>> Model::Load(const std::string& dir) {
  std::error_code ec;  // the throwing overload would end the program on e.g. EACCES
  if (!fs::is_directory(dir, ec)) {
    return NotFoundError(fmt::format("{}: model directory does not exist", dir));
  }
  SSM_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(fs::path(dir) / kModelConfigFile));
  SSM_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                       SafetensorsFile::Open(fs::path(dir) / kModelWeightsFile));

  // Check names and shapes from the header before reading any data.
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const TensorInfo& info : file->tensors()) shapes[info.name] = info.shape;
  SSM_RETURN_IF_ERROR(CheckTensorSet(config, shapes).WithContext(file->path()));

  std::map<std::string, Tensor> tensors;
  for (const TensorInfo& info : file->tensors()) {
    Tensor& t = tensors[info.name];
    t.shape = info.shape;
    SSM_ASSIGN_OR_RETURN(t.data, file->ReadF32(info.name));
    SSM_RETURN_IF_ERROR(CheckFinite(info.name, t.data).WithContext(file->path()));
  }
  return std::shared_ptr<const Model>(new Model(std::move(config), std::move(tensors)));
}

StatusOr<std::shared_ptr<const Model>> Model::FromTensors(ModelConfig config,
                                                          std::map<std::string, Tensor> tensors) {
  SSM_RETURN_IF_ERROR(config.Validate());
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, t] : tensors) {
    if (static_cast<int64_t>(t.data.size()) != t.numel()) {
      return InvalidArgumentError(fmt::format("tensor '{}': shape {} needs {} floats, data has {}",
                                              name, ShapeString(t.shape), t.numel(),
                                              t.data.size()));
    }
    shapes[name] = t.shape;
  }
  SSM_RETURN_IF_ERROR(CheckTensorSet(config, shapes));
  for (const auto& [name, t] : tensors) SSM_RETURN_IF_ERROR(CheckFinite(name, t.data));
  return std::shared_ptr<const Model>(new Model(std::move(config), std::move(tensors)));
}

Model::Model(ModelConfig config, std::map<std::string, Tensor> tensors)
    : config_(std::move(config)), tensors_(std::move(tensors)) {
  Sha256 hash;
  const std::string json = config_.ToJson();
  const uint64_t json_bytes = json.size();
  hash.Update("ssmserve-model-fingerprint-v1", 29).Update(&json_bytes, 8).Update(json);
  for (const auto& [name, tensor] : tensors_) {  // std::map: name order
    const uint64_t name_bytes = name.size(), rank = tensor.shape.size();
    hash.Update(&name_bytes, 8).Update(name).Update(&rank, 8);
    hash.Update(tensor.shape.data(), tensor.shape.size() * sizeof(int64_t));
    hash.Update(tensor.data.data(), tensor.data.size() * sizeof(float));
  }
  fingerprint_ = hash.Final();
}

const Tensor& Model::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  SSM_CHECK_MSG(it != tensors_.end(), "no tensor " + name);
  return it->second;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, t] : tensors_) n += t.numel();
  return n;
}

size_t Model::state_bytes_per_stream() const {
  size_t floats = config_.frontend.is_log_mel() ? config_.frontend.win_length : 0;
  for (int i = 0; i < config_.n_layer; ++i)
    floats += config_.layer_params(i).state_floats(config_.d_model);
  return floats * sizeof(float);
}

// Counted per frame (one multiply-add = 2 FLOPs): input_proj and head, 2 * in * out each, and
// each layer's own count (its flops_per_frame). Norms, activations and the frontend are
// O(d_model) and left out.
double Model::flops_per_frame() const {
  const ModelConfig& c = config_;
  double flops = 2.0 * c.d_in * c.d_model + 2.0 * c.d_model * c.d_out;
  for (int i = 0; i < c.n_layer; ++i) flops += c.layer_params(i).flops_per_frame(c.d_model);
  return flops;
}

Status Model::Save(const std::string& dir) const {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return InternalError(fmt::format("{}: cannot create directory ({})", dir, ec.message()));

  const std::string config_path = fs::path(dir) / kModelConfigFile;
  std::ofstream out(config_path, std::ios::binary | std::ios::trunc);
  out << config_.ToJson();
  out.close();
  if (!out) return InternalError(fmt::format("{}: write failed", config_path));

  std::vector<NamedTensor> named;
  for (const auto& [name, t] : tensors_) named.push_back({name, t.shape, t.data.data()});
  return WriteSafetensors(fs::path(dir) / kModelWeightsFile, named);
}

}  // namespace ssm
