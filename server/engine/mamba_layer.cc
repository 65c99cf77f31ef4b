// The Mamba-1 mixer of docs/design.md §3 as a sequence of backend ops.
#include <cmath>
#include <string>
#include <vector>

#include "server/engine/layer.h"

namespace ssm {
namespace {

// Host (E, N) or (E, 1, K) weights transposed to the channel-innermost layout the ops take.
std::vector<float> ChannelsLast(const std::vector<float>& w, int channels, int inner) {
  std::vector<float> t(w.size());
  for (int e = 0; e < channels; ++e)
    for (int i = 0; i < inner; ++i) t[size_t(i) * channels + e] = w[size_t(e) * inner + i];
  return t;
}

class MambaLayer final : public Layer {
 public:
  MambaLayer(const Model& model, int index, Backend* backend) : backend_(backend) {
    const ModelConfig& c = model.config();
    d_model_ = c.d_model;
    E_ = c.d_inner();
    N_ = c.layer.d_state;
    K_ = c.layer.d_conv;
    R_ = c.layer.dt_rank;
    const std::string p = "backbone.layers." + std::to_string(index) + ".mixer.";
    auto t = [&](const std::string& name) -> const std::vector<float>& {
      return model.tensor(p + name).data;
    };
    auto bias_or_null = [&](const std::string& name) {
      return model.tensors().count(p + name) ? model.tensor(p + name).data.data() : nullptr;
    };
    in_proj_ = backend->PrepareLinear(t("in_proj.weight").data(), bias_or_null("in_proj.bias"),
                                      2 * E_, d_model_);
    x_proj_ = backend->PrepareLinear(t("x_proj.weight").data(), nullptr, R_ + 2 * N_, E_);
    dt_proj_ = backend->PrepareLinear(t("dt_proj.weight").data(), t("dt_proj.bias").data(), E_, R_);
    out_proj_ = backend->PrepareLinear(t("out_proj.weight").data(), bias_or_null("out_proj.bias"),
                                       d_model_, E_);
    conv_w_ = Upload(ChannelsLast(t("conv1d.weight"), E_, K_));
    conv_b_ = Upload(model.tensors().count(p + "conv1d.bias") ? t("conv1d.bias")
                                                              : std::vector<float>(E_, 0.0f));
    std::vector<float> A = t("A_log");
    for (float& a : A) a = -std::exp(a);
    A_ = Upload(ChannelsLast(A, E_, N_));
    D_ = Upload(t("D"));
  }

  size_t state_floats() const override { return size_t(K_ - 1) * E_ + size_t(N_) * E_; }
  size_t scratch_floats_per_row() const override { return 5 * size_t(E_) + R_ + 2 * N_; }

  void Forward(const SeqBatch& batch, const float* x, float* out, StateView state,
               float* scratch) override {
    const int rows = batch.rows(), w_xdbl = R_ + 2 * N_;
    float* xz = scratch;                       // (rows, 2E): [x | z]
    float* s = xz + size_t(rows) * 2 * E_;     // (rows, E): silu(conv(x))
    float* xdbl = s + size_t(rows) * E_;       // (rows, R + 2N): [dt_r | B | C]
    float* dt = xdbl + size_t(rows) * w_xdbl;  // (rows, E)
    float* y = dt + size_t(rows) * E_;         // (rows, E)
    backend_->Linear(*in_proj_, x, d_model_, rows, xz, 2 * E_);

    CausalConvArgs conv;
    conv.channels = E_;
    conv.kernel = K_;
    conv.x = xz;
    conv.ld_x = 2 * E_;
    conv.w = conv_w_->data();
    conv.bias = conv_b_->data();
    conv.tail = state;  // tail first in the slot
    conv.out = s;
    conv.ld_out = E_;
    backend_->CausalConv(batch, conv);

    backend_->Linear(*x_proj_, s, E_, rows, xdbl, w_xdbl);
    backend_->Linear(*dt_proj_, xdbl, w_xdbl, rows, dt, E_);

    SelectiveScanArgs scan;
    scan.channels = E_;
    scan.d_state = N_;
    scan.u = s;
    scan.ld_u = E_;
    scan.dt = dt;
    scan.ld_dt = E_;
    scan.B = xdbl + R_;
    scan.C = xdbl + R_ + N_;
    scan.ld_bc = w_xdbl;
    scan.z = xz + E_;
    scan.ld_z = 2 * E_;
    scan.A = A_->data();
    scan.D = D_->data();
    scan.state = {state.base + size_t(K_ - 1) * E_, state.slot_stride};  // H after the tail
    scan.out = y;
    scan.ld_out = E_;
    backend_->SelectiveScan(batch, scan);

    backend_->Linear(*out_proj_, y, E_, rows, out, d_model_);
  }

 private:
  std::unique_ptr<Buffer> Upload(const std::vector<float>& host) {
    auto buf = backend_->Allocate(host.size());
    backend_->CopyToBackend(buf->data(), host.data(), host.size());
    return buf;
  }

  Backend* backend_;
  int d_model_, E_, N_, K_, R_;
  std::unique_ptr<LinearWeights> in_proj_, x_proj_, dt_proj_, out_proj_;
  std::unique_ptr<Buffer> conv_w_, conv_b_, A_, D_;  // (K, E), (E), (N, E), (E)
};

}  // namespace

StatusOr<std::unique_ptr<Layer>> CreateLayer(const Model& model, int index, Backend* backend) {
  const std::string& type = model.config().layer.type;
  if (type == "mamba") return std::unique_ptr<Layer>(new MambaLayer(model, index, backend));
  return UnimplementedError("layer.type \"" + type + "\" is not supported by this engine");
}

}  // namespace ssm
