// Layer types: what one layer of the residual stack is, in one place per type.
//
// A type lives in its own folder (server/layers/<type>/) and is one LayerParams subclass: its
// config section (parse, checks, JSON, summary), its tensors and their shapes, its state size
// and FLOPs per frame, its random initialisation and Create, which builds the runnable Layer
// on a backend. registry.cc lists the types; nothing else in the engine names one.
// docs/design.md §2 and §3 give every type's tensors and equations.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "kernels/backend.h"
#include "server/layers/config_reader.h"
#include "server/layers/init.h"
#include "server/layers/tensor.h"

namespace ssm {

// A sequence mixer: the part of a block that carries state along the stream.
class Mixer {
 public:
  virtual ~Mixer() = default;
  // Floats of recurrent state per stream (conv tail, SSM state, ...): fixed by the config.
  virtual size_t state_floats() const = 0;
  // Floats of backend scratch memory Forward needs per batch row.
  virtual size_t scratch_floats_per_row() const = 0;
  // out = Mixer(x) for every row of the varlen batch, advancing each sequence's state in its
  // slot. x, out: (rows, d_model) in backend memory; state: this layer's slice of the pool.
  virtual void Forward(const SeqBatch& batch, const float* x, float* out, StateView state,
                       float* scratch) = 0;
};

// One whole residual block of the stack, ready to run: h <- h + Block(h).
class Layer {
 public:
  virtual ~Layer() = default;
  virtual size_t state_floats() const = 0;
  virtual size_t scratch_floats_per_row() const = 0;
  // h: (rows, d_model) residual stream in backend memory, updated in place.
  virtual void Forward(const SeqBatch& batch, float* h, StateView state, float* scratch) = 0;
};

// What Create needs besides the settings.
struct LayerContext {
  const TensorMap* tensors = nullptr;  // the model's tensors, checked against Tensors()
  std::string prefix;                  // "backbone.layers.{i}."
  int d_model = 0;
  float norm_eps = 1e-5f;      // the model's norm.eps
  Backend* backend = nullptr;  // must outlive the layer

  const Tensor& tensor(const std::string& name) const;  // prefix + name; must exist
  bool has(const std::string& name) const { return tensors->count(prefix + name) > 0; }
  // prefix + name's data, or nullptr when the model has no such tensor (an optional bias).
  const float* optional(const std::string& name) const;
  // A host vector copied into a new backend buffer.
  std::unique_ptr<Buffer> Upload(const std::vector<float>& host) const;
};

// One layer's settings: a "layer" section of config.json (or one entry of "layers").
class LayerParams {
 public:
  virtual ~LayerParams() = default;
  virtual std::unique_ptr<LayerParams> Clone() const = 0;
  virtual std::string type() const = 0;

  // Reads the section's fields other than "type" (the caller checks for unknown fields).
  // d_model resolves defaults that depend on it (mamba's dt_rank "auto").
  virtual Status Parse(ConfigReader* reader, int d_model) = 0;
  // Value checks; field names in errors start with `path` ("layer.", "layers[2].").
  virtual Status Validate(const std::string& path, int d_model) const = 0;
  // The section, "type" first, every field written.
  virtual ConfigJson ToJson() const = 0;
  // One-line summary, e.g. "mamba(d_state=16 d_conv=4 expand=2 dt_rank=16 conv_bias)".
  virtual std::string ToString() const = 0;

  // Every tensor of one layer, names starting with `prefix` ("backbone.layers.{i}.").
  virtual std::vector<TensorSpec> Tensors(const std::string& prefix, int d_model) const = 0;
  // Recurrent state floats per stream, and FLOPs to advance one stream by one frame.
  virtual size_t state_floats(int d_model) const = 0;
  virtual double flops_per_frame(int d_model) const = 0;
  // Whether offline runs take a parallel form (e.g. Mamba-2's chunked SSD form) whose float32
  // rounding differs from the recurrence that streaming runs: offline outputs then equal
  // streamed ones to the exactness contract's bound, not bitwise (docs/design.md §3).
  virtual bool has_parallel_form() const { return false; }
  // Random initial values of one of Tensors(); the default is InitDefault.
  virtual void InitTensor(const TensorSpec& spec, Rng* rng, std::vector<float>* out) const {
    InitDefault(spec, rng, out);
  }
  // The runnable layer with its weights prepared on ctx.backend. UNIMPLEMENTED naming the op
  // when the backend lacks a kernel this type needs.
  virtual StatusOr<std::unique_ptr<Layer>> Create(const LayerContext& ctx) const = 0;
};

// The layer types this build knows, in the order the docs list them.
std::vector<std::string> LayerTypeNames();
// A type's settings with its defaults; INVALID_ARGUMENT naming `field` for an unknown type.
StatusOr<std::unique_ptr<LayerParams>> NewLayerParams(const std::string& type,
                                                      const std::string& field);

// A value holding one layer's settings, copyable like the rest of ModelConfig.
class LayerConfig {
 public:
  LayerConfig();  // "mamba" with its defaults
  explicit LayerConfig(std::unique_ptr<LayerParams> params) : params_(std::move(params)) {}
  LayerConfig(const LayerConfig& other) : params_(other.params_->Clone()) {}
  LayerConfig& operator=(const LayerConfig& other) {
    if (this != &other) params_ = other.params_->Clone();
    return *this;
  }

  std::string type() const { return params_->type(); }
  const LayerParams& params() const { return *params_; }
  const LayerParams* operator->() const { return params_.get(); }
  // The settings as their type (checked): config.layer.as<MambaParams>().d_state = 8.
  template <typename T>
  T& as() {
    T* p = dynamic_cast<T*>(params_.get());
    SSM_CHECK_MSG(p != nullptr, "layer settings of type " + type() + " asked for as another type");
    return *p;
  }
  template <typename T>
  const T& as() const {
    return const_cast<LayerConfig*>(this)->as<T>();
  }

 private:
  std::unique_ptr<LayerParams> params_;
};

}  // namespace ssm
