#include "server/layers/block.h"

#include <fmt/format.h>

#include <cmath>

namespace ssm {
namespace {

class PreNormBlock final : public Layer {
 public:
  PreNormBlock(const LayerContext& ctx, std::unique_ptr<Mixer> mixer)
      : backend_(ctx.backend),
        d_model_(ctx.d_model),
        eps_(ctx.norm_eps),
        norm_w_(ctx.Upload(ctx.tensor("norm.weight").data)),
        mixer_(std::move(mixer)) {}

  size_t state_floats() const override { return mixer_->state_floats(); }
  size_t scratch_floats_per_row() const override {
    return 2 * size_t(d_model_) + mixer_->scratch_floats_per_row();
  }

  void Forward(const SeqBatch& batch, float* h, StateView state, float* scratch) override {
    const int rows = batch.rows();
    float* hn = scratch;                          // (rows, d_model) normed input
    float* mix = hn + size_t(rows) * d_model_;    // (rows, d_model) mixer output
    float* rest = mix + size_t(rows) * d_model_;  // the mixer's own scratch
    backend_->RmsNorm(h, norm_w_->data(), rows, d_model_, eps_, hn);
    mixer_->Forward(batch, hn, mix, state, rest);
    backend_->Add(h, mix, size_t(rows) * d_model_);
  }

 private:
  Backend* backend_;
  int d_model_;
  float eps_;
  std::unique_ptr<Buffer> norm_w_;
  std::unique_ptr<Mixer> mixer_;
};

}  // namespace

const Tensor& LayerContext::tensor(const std::string& name) const {
  auto it = tensors->find(prefix + name);
  SSM_CHECK_MSG(it != tensors->end(), "no tensor " + prefix + name);
  return it->second;
}

const float* LayerContext::optional(const std::string& name) const {
  auto it = tensors->find(prefix + name);
  return it == tensors->end() ? nullptr : it->second.data.data();
}

std::unique_ptr<Buffer> LayerContext::Upload(const std::vector<float>& host) const {
  auto buf = backend->Allocate(host.size());
  backend->CopyToBackend(buf->data(), host.data(), host.size());
  return buf;
}

StatusOr<std::unique_ptr<Layer>> MakePreNormBlock(const LayerContext& ctx,
                                                  std::unique_ptr<Mixer> mixer) {
  return std::unique_ptr<Layer>(new PreNormBlock(ctx, std::move(mixer)));
}

ConvWeights UploadConv(const LayerContext& ctx, int channels, int kernel) {
  ConvWeights conv;
  conv.w = ctx.Upload(ChannelsLast(ctx.tensor("mixer.conv1d.weight").data, channels, kernel));
  conv.bias = ctx.Upload(ctx.has("mixer.conv1d.bias") ? ctx.tensor("mixer.conv1d.bias").data
                                                      : std::vector<float>(channels, 0.0f));
  return conv;
}

std::vector<float> NegExp(std::vector<float> a_log) {
  for (float& a : a_log) a = -std::exp(a);
  return a_log;
}

std::vector<float> ChannelsLast(const std::vector<float>& w, int channels, int inner) {
  std::vector<float> t(w.size());
  for (int c = 0; c < channels; ++c)
    for (int i = 0; i < inner; ++i) t[size_t(i) * channels + c] = w[size_t(c) * inner + i];
  return t;
}

}  // namespace ssm
