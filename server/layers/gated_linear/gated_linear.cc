// The shared parts of linear attention, RetNet and GLA (docs/design.md §3.3): config fields,
// tensors, state, the mixer as a sequence of backend ops, and fla's block with its gated MLP.
#include "server/layers/gated_linear/gated_linear.h"

#include <fmt/format.h>

#include <cmath>

#include "common/strings.h"
#include "kernels/ops/rotary.h"

namespace ssm {
namespace {

constexpr int kMaxHiddenRatio = 64;
constexpr size_t kMaxStateFloats = size_t(1) << 26;  // 256 MiB per stream and layer

// d_model * expand as an integer width, or an error naming the field.
Status CheckWidth(const std::string& field, int d_model, double expand) {
  const double width = d_model * expand;
  if (!(expand > 0) || width > kMaxConfigDim || std::abs(width - std::round(width)) > 1e-6 ||
      std::round(width) < 1)
    return InvalidArgumentError(fmt::format(
        "{}: expected a positive number whose product with d_model ({}) is an integer of at "
        "most {}, found {}",
        field, d_model, kMaxConfigDim, expand));
  return OkStatus();
}

class GatedLinearMixer final : public Mixer {
 public:
  GatedLinearMixer(const GatedLinearParams& p, const LayerContext& ctx) : backend_(ctx.backend) {
    const int d = ctx.d_model;
    d_model_ = d;
    H_ = p.num_heads;
    Kt_ = p.key_dim(d);
    Vt_ = p.value_dim(d);
    Kh_ = Kt_ / H_;
    Vh_ = Vt_ / H_;
    rank_ = p.gate_low_rank_dim();
    gate_ = p.output_gate();
    rotary_ = p.rotary();
    chunk_size_ = p.chunk_size;
    chunked_ = ctx.backend->Supports(Op::kGatedLinearChunkedScan);
    eps_ = ctx.norm_eps;
    in_width_ = 2 * Kt_ + Vt_ + (gate_ ? Vt_ : 0) + rank_;
    // One projection for q, k, v, g and the gate's low-rank half: rows stacked in that order.
    std::vector<float> w;
    for (const char* name : {"q_proj", "k_proj", "v_proj", "g_proj", "gk_proj.0"}) {
      const std::string t = std::string("attn.") + name + ".weight";
      if (!ctx.has(t)) continue;
      const std::vector<float>& data = ctx.tensor(t).data;
      w.insert(w.end(), data.begin(), data.end());
    }
    in_proj_ = ctx.backend->PrepareLinear(w.data(), nullptr, in_width_, d);
    if (rank_ > 0) {
      gk_proj_ =
          ctx.backend->PrepareLinear(ctx.tensor("attn.gk_proj.1.weight").data.data(),
                                     ctx.tensor("attn.gk_proj.1.bias").data.data(), Kt_, rank_);
    }
    o_proj_ =
        ctx.backend->PrepareLinear(ctx.tensor("attn.o_proj.weight").data.data(), nullptr, d, Vt_);
    const std::string norm = p.output_norm();
    if (!norm.empty()) {
      // The norm's weight is per head channel (head_v_dim), the same for every head.
      const std::vector<float>& hw = ctx.tensor(norm + ".weight").data;
      std::vector<float> tiled;
      for (int h = 0; h < H_; ++h) tiled.insert(tiled.end(), hw.begin(), hw.end());
      norm_w_ = ctx.Upload(tiled);
    }
    scan_.heads = H_;
    scan_.key_dim = Kh_;
    scan_.value_dim = Vh_;
    scan_.decay = p.decay();
    scan_.feature_map = p.feature_map();
    scan_.scale = float(1.0 / std::sqrt(double(Kh_)));
    p.GateSettings(&scan_);
    if (scan_.decay == LinearDecay::kConstant) {
      log_gamma_ = ctx.Upload(p.log_gamma());
      scan_.log_gamma = log_gamma_->data();
    }
  }

  size_t state_floats() const override {
    return size_t(H_) * Kh_ * Vh_ + (rotary_ ? kRotaryStateFloats : 0);
  }
  size_t scratch_floats_per_row() const override {
    return size_t(in_width_) + (rank_ > 0 ? size_t(Kt_) : 0) + size_t(Vt_);
  }

  void Forward(const SeqBatch& batch, const float* x, float* out, StateView state,
               float* scratch) override {
    const int rows = batch.rows();
    float* proj = scratch;                                 // (rows, in_width): q k v [g] [lr]
    float* gk = proj + size_t(rows) * in_width_;           // (rows, Kt) GLA's gate logits
    float* o = gk + (rank_ > 0 ? size_t(rows) * Kt_ : 0);  // (rows, Vt)
    float* q = proj;
    float* k = proj + Kt_;
    float* v = proj + 2 * Kt_;
    float* g = proj + 2 * Kt_ + Vt_;
    backend_->Linear(*in_proj_, x, d_model_, rows, proj, in_width_);
    if (rank_ > 0) {
      backend_->Linear(*gk_proj_, proj + (in_width_ - rank_), in_width_, rows, gk, Kt_);
    }
    if (rotary_) {
      RotaryArgs rot;
      rot.heads = H_;
      rot.head_dim = Kh_;
      rot.q = q;
      rot.ld_q = in_width_;
      rot.k = k;
      rot.ld_k = in_width_;
      rot.position = {state.base + size_t(H_) * Kh_ * Vh_, state.slot_stride};
      backend_->Rotary(batch, rot);
    }
    GatedLinearScanArgs scan = scan_;
    scan.q = q;
    scan.ld_q = in_width_;
    scan.k = k;
    scan.ld_k = in_width_;
    scan.v = v;
    scan.ld_v = in_width_;
    if (rank_ > 0) {
      scan.gate = gk;
      scan.ld_gate = Kt_;
    }
    scan.state = state;  // the recurrent state first in the slot
    scan.out = o;
    scan.ld_out = Vt_;
    if (batch.offline && chunked_) {
      backend_->GatedLinearChunkedScan(batch, scan, chunk_size_);
    } else {
      backend_->GatedLinearScan(batch, scan);
    }
    if (norm_w_) {
      // rmsnorm(o) * w * swish(g), fla's FusedRMSNormGated: the norm before the gate
      const auto norm = GatedRmsNormArgs::InPlace(o, Vt_, Vh_, /*norm_before_gate=*/true, eps_,
                                                  gate_ ? g : nullptr, in_width_, norm_w_->data());
      backend_->GatedRmsNorm(norm, rows);
    }
    backend_->Linear(*o_proj_, o, Vt_, rows, out, d_model_);
  }

 private:
  Backend* backend_;
  int d_model_, H_, Kt_, Vt_, Kh_, Vh_, rank_, in_width_, chunk_size_;
  bool gate_, rotary_, chunked_;
  float eps_;
  GatedLinearScanArgs scan_;  // the settings; pointers filled per call
  std::unique_ptr<LinearWeights> in_proj_, gk_proj_, o_proj_;
  std::unique_ptr<Buffer> norm_w_, log_gamma_;
};

// fla's block: h += attn(attn_norm(h)); then, with an MLP, h += mlp(mlp_norm(h)) where
// mlp(x) = down_proj(silu(gate_proj(x)) * up_proj(x)).
class GatedLinearBlock final : public Layer {
 public:
  GatedLinearBlock(const LayerContext& ctx, int mlp_size, std::unique_ptr<Mixer> mixer)
      : backend_(ctx.backend),
        d_model_(ctx.d_model),
        mlp_size_(mlp_size),
        eps_(ctx.norm_eps),
        attn_norm_(ctx.Upload(ctx.tensor("attn_norm.weight").data)),
        mixer_(std::move(mixer)) {
    if (mlp_size_ > 0) {
      mlp_norm_ = ctx.Upload(ctx.tensor("mlp_norm.weight").data);
      std::vector<float> w = ctx.tensor("mlp.gate_proj.weight").data;
      const std::vector<float>& up = ctx.tensor("mlp.up_proj.weight").data;
      w.insert(w.end(), up.begin(), up.end());
      gate_up_ = backend_->PrepareLinear(w.data(), nullptr, 2 * mlp_size_, d_model_);
      down_ = backend_->PrepareLinear(ctx.tensor("mlp.down_proj.weight").data.data(), nullptr,
                                      d_model_, mlp_size_);
    }
  }

  size_t state_floats() const override { return mixer_->state_floats(); }
  size_t scratch_floats_per_row() const override {
    return 2 * size_t(d_model_) + std::max(mixer_->scratch_floats_per_row(), 2 * size_t(mlp_size_));
  }

  void Forward(const SeqBatch& batch, float* h, StateView state, float* scratch) override {
    const int rows = batch.rows();
    const size_t n = size_t(rows) * d_model_;
    float* hn = scratch;    // (rows, d_model) normed input
    float* mix = hn + n;    // (rows, d_model) attn or MLP output
    float* rest = mix + n;  // the mixer's scratch, then the MLP's (rows, 2 * mlp_size)
    backend_->RmsNorm(h, attn_norm_->data(), rows, d_model_, eps_, hn);
    mixer_->Forward(batch, hn, mix, state, rest);
    backend_->Add(h, mix, n);
    if (mlp_size_ == 0) return;
    backend_->RmsNorm(h, mlp_norm_->data(), rows, d_model_, eps_, hn);
    backend_->Linear(*gate_up_, hn, d_model_, rows, rest, 2 * mlp_size_);
    SwiGluArgs act;
    act.cols = mlp_size_;
    act.gate = rest;
    act.ld_gate = 2 * mlp_size_;
    act.up = rest + mlp_size_;
    act.ld_up = 2 * mlp_size_;
    act.out = rest;  // over the gate half
    act.ld_out = 2 * mlp_size_;
    backend_->SwiGlu(act, rows);
    backend_->Linear(*down_, rest, 2 * mlp_size_, rows, mix, d_model_);
    backend_->Add(h, mix, n);
  }

 private:
  Backend* backend_;
  int d_model_, mlp_size_;
  float eps_;
  std::unique_ptr<Buffer> attn_norm_, mlp_norm_;
  std::unique_ptr<LinearWeights> gate_up_, down_;
  std::unique_ptr<Mixer> mixer_;
};

}  // namespace

int GatedLinearParams::mlp_size(int d_model) const {
  if (intermediate_size >= 0) return intermediate_size;
  const int size = int(double(d_model) * hidden_ratio * 2 / 3);
  return 256 * ((size + 255) / 256);
}

Status GatedLinearParams::Parse(ConfigReader* r, int) {
  SSM_RETURN_IF_ERROR(r->Get("num_heads", &num_heads));
  SSM_RETURN_IF_ERROR(r->Get("expand_k", &expand_k));
  SSM_RETURN_IF_ERROR(r->Get("expand_v", &expand_v));
  SSM_RETURN_IF_ERROR(r->Get("hidden_ratio", &hidden_ratio));
  if (r->Has("intermediate_size") && r->object()["intermediate_size"].is_string()) {
    std::string value;
    SSM_RETURN_IF_ERROR(r->Get("intermediate_size", &value));
    if (value != "auto")
      return InvalidArgumentError(fmt::format("{}: expected \"auto\" or an integer, found \"{}\"",
                                              r->Path("intermediate_size"), value));
    intermediate_size = -1;
  } else {
    SSM_RETURN_IF_ERROR(r->Get("intermediate_size", &intermediate_size));
  }
  SSM_RETURN_IF_ERROR(r->Get("chunk_size", &chunk_size));
  return ParseOwn(r);
}

Status GatedLinearParams::Validate(const std::string& path, int d_model) const {
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "num_heads", num_heads, 1, kMaxConfigDim));
  SSM_RETURN_IF_ERROR(CheckWidth(path + "expand_k", d_model, expand_k));
  SSM_RETURN_IF_ERROR(CheckWidth(path + "expand_v", d_model, expand_v));
  for (const auto& [field, width] : {std::pair<const char*, int>{"key_dim", key_dim(d_model)},
                                     {"value_dim", value_dim(d_model)}}) {
    if (width % num_heads != 0)
      return InvalidArgumentError(
          fmt::format("{}num_heads: expected a divisor of {} (d_model * expand_{}, {}), found {}",
                      path, field, field[0], width, num_heads));
  }
  if (size_t(num_heads) * head_k_dim(d_model) * head_v_dim(d_model) > kMaxStateFloats)
    return InvalidArgumentError(fmt::format(
        "{}num_heads: the state of {} heads of {} x {} exceeds {} floats per stream; use more "
        "heads or smaller expand_k / expand_v",
        path, num_heads, head_v_dim(d_model), head_k_dim(d_model), kMaxStateFloats));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "hidden_ratio", hidden_ratio, 1, kMaxHiddenRatio));
  if (intermediate_size != -1)
    SSM_RETURN_IF_ERROR(
        CheckIntRange(path + "intermediate_size", intermediate_size, 0, kMaxConfigDim));
  SSM_RETURN_IF_ERROR(CheckIntRange(path + "chunk_size", chunk_size, 1, kMaxConfigDim));
  return ValidateOwn(path, d_model);
}

ConfigJson GatedLinearParams::ToJson() const {
  ConfigJson j = {
      {"type", type()}, {"num_heads", num_heads}, {"expand_k", expand_k}, {"expand_v", expand_v}};
  OwnJson(&j);
  j["hidden_ratio"] = hidden_ratio;
  if (intermediate_size < 0) {
    j["intermediate_size"] = "auto";
  } else {
    j["intermediate_size"] = intermediate_size;
  }
  j["chunk_size"] = chunk_size;
  return j;
}

std::string GatedLinearParams::ToString() const {
  return fmt::format(
      "{}(num_heads={} expand_k={} expand_v={}{} intermediate_size={} "
      "chunk_size={})",
      type(), num_heads, expand_k, expand_v, OwnString(),
      intermediate_size < 0 ? std::string("auto") : std::to_string(intermediate_size), chunk_size);
}

std::vector<TensorSpec> GatedLinearParams::Tensors(const std::string& prefix, int d_model) const {
  const int64_t d = d_model, kt = key_dim(d_model), vt = value_dim(d_model),
                vh = head_v_dim(d_model), r = gate_low_rank_dim(), i = mlp_size(d_model);
  const std::string a = prefix + "attn.";
  std::vector<TensorSpec> specs;
  specs.push_back({prefix + "attn_norm.weight", {d}});
  specs.push_back({a + "q_proj.weight", {kt, d}});
  specs.push_back({a + "k_proj.weight", {kt, d}});
  specs.push_back({a + "v_proj.weight", {vt, d}});
  if (output_gate()) specs.push_back({a + "g_proj.weight", {vt, d}});
  if (r > 0) {
    specs.push_back({a + "gk_proj.0.weight", {r, d}});
    specs.push_back({a + "gk_proj.1.weight", {kt, r}});
    specs.push_back({a + "gk_proj.1.bias", {kt}});
  }
  if (!output_norm().empty()) specs.push_back({prefix + output_norm() + ".weight", {vh}});
  specs.push_back({a + "o_proj.weight", {d, vt}});
  if (i > 0) {
    specs.push_back({prefix + "mlp_norm.weight", {d}});
    specs.push_back({prefix + "mlp.gate_proj.weight", {i, d}});
    specs.push_back({prefix + "mlp.up_proj.weight", {i, d}});
    specs.push_back({prefix + "mlp.down_proj.weight", {d, i}});
  }
  return specs;
}

// S (num_heads, head_v_dim, head_k_dim), then RetNet's frame counter.
size_t GatedLinearParams::state_floats(int d_model) const {
  return size_t(num_heads) * head_k_dim(d_model) * head_v_dim(d_model) +
         (rotary() ? kRotaryStateFloats : 0);
}

// Counted per frame (one multiply-add = 2 FLOPs): the projections, 2 * in * out each; the
// recurrence, 4 * key_dim * head_v_dim (the decayed state plus k v, and the read-out by q); the
// MLP, 6 * d_model * its width. Norms, gates, feature maps and the rotation are O(width).
double GatedLinearParams::flops_per_frame(int d_model) const {
  const double d = d_model, kt = key_dim(d_model), vt = value_dim(d_model),
               vh = head_v_dim(d_model), r = gate_low_rank_dim(), i = mlp_size(d_model);
  const double in = 2 * kt + vt + (output_gate() ? vt : 0) + r;
  return 2.0 * d * in + 2.0 * r * kt + 2.0 * vt * d + 4.0 * kt * vh + 6.0 * d * i;
}

StatusOr<std::unique_ptr<Layer>> GatedLinearParams::Create(const LayerContext& ctx) const {
  const std::string what = "layer type \"" + type() + "\"";
  SSM_RETURN_IF_ERROR(RequireOps(*ctx.backend, {Op::kGatedLinearScan, Op::kGatedRmsNorm}, what));
  if (rotary()) SSM_RETURN_IF_ERROR(RequireOps(*ctx.backend, {Op::kRotary}, what));
  if (mlp_size(ctx.d_model) > 0) SSM_RETURN_IF_ERROR(RequireOps(*ctx.backend, {Op::kSwiGlu}, what));
  return std::unique_ptr<Layer>(new GatedLinearBlock(
      ctx, mlp_size(ctx.d_model), std::make_unique<GatedLinearMixer>(*this, ctx)));
}

}  // namespace ssm
