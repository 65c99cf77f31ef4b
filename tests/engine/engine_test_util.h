// Helpers of the engine tests: random models and inputs, and running a stream chunk by chunk.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "server/engine/engine.h"
#include "server/layers/gla/gla.h"
#include "server/layers/linear_attn/linear_attn.h"
#include "server/layers/mamba/mamba.h"
#include "server/layers/mamba2/mamba2.h"
#include "server/layers/retnet/retnet.h"
#include "server/model/random_model.h"
#include "tests/kernels/op_test_util.h"

namespace ssm::testing {

// A small frame-input model (frontend none) with mean/std normalisation.
inline ModelConfig SmallFrameConfig(int d_in = 6, int d_model = 32, int n_layer = 2) {
  ModelConfig c;
  c.frontend.type = "none";
  c.frontend.mean.assign(d_in, 0.1f);
  c.frontend.std.assign(d_in, 1.5f);
  c.d_in = d_in;
  c.d_model = d_model;
  c.n_layer = n_layer;
  c.layer.as<MambaParams>().d_state = 8;
  c.layer.as<MambaParams>().d_conv = 4;
  c.layer.as<MambaParams>().expand = 2;
  c.layer.as<MambaParams>().dt_rank = 4;
  c.d_out = 3;
  c.head_activation = "softmax";
  return c;
}

// A small log-mel model: 16 kHz, 25 ms windows, 10 ms hop, 40 mels.
inline ModelConfig SmallAudioConfig() {
  ModelConfig c;
  c.frontend.type = "log_mel";
  c.frontend.n_mels = 40;
  c.d_in = 40;
  c.d_model = 48;
  c.n_layer = 2;
  c.layer.as<MambaParams>().d_state = 16;
  c.layer.as<MambaParams>().dt_rank = 3;
  c.d_out = 2;
  c.head_activation = "sigmoid";
  return c;
}

// SmallFrameConfig with `p` for every layer.
template <typename Params>
ModelConfig SmallFrameConfigWith(const Params& p) {
  ModelConfig c = SmallFrameConfig();
  c.layer = LayerConfig(p.Clone());
  return c;
}

// SmallFrameConfig with Mamba-2 layers: 4 heads of 16 channels in 2 groups, d_state 12 (not a
// multiple of any packet width), d_conv 3.
inline ModelConfig SmallMamba2Config() {
  Mamba2Params p;
  p.d_state = 12;
  p.d_conv = 3;
  p.headdim = 16;
  p.ngroups = 2;
  return SmallFrameConfigWith(p);
}

// SmallFrameConfig with linear attention layers: 4 heads of 8 keys and 8 values, elu + 1, an
// MLP of 48, chunks of 16 frames in the chunked form.
inline ModelConfig SmallLinearAttnConfig() {
  LinearAttnParams p;
  p.num_heads = 4;
  p.intermediate_size = 48;
  p.chunk_size = 16;
  return SmallFrameConfigWith(p);
}

// SmallFrameConfig with RetNet layers: 2 heads of 16 keys and 32 values, an MLP of 40.
inline ModelConfig SmallRetNetConfig() {
  RetNetParams p;
  p.num_heads = 2;
  p.intermediate_size = 40;
  p.chunk_size = 16;
  return SmallFrameConfigWith(p);
}

// SmallFrameConfig with GLA layers: 2 heads of 8 keys and 16 values, a gate of rank 4, no MLP.
inline ModelConfig SmallGlaConfig() {
  GlaParams p;
  p.num_heads = 2;
  p.gate_low_rank = 4;
  p.intermediate_size = 0;
  p.chunk_size = 16;
  return SmallFrameConfigWith(p);
}

// Every layer type in one "layers" list, with the variants the small configs above do not
// take: GLA with an MLP, clamp_min and a normaliser of 8; RetNet without its output gate; linear
// attention with relu and no output norm.
inline ModelConfig SmallFamilyConfig() {
  ModelConfig c = SmallFrameConfig();
  c.n_layer = 5;
  c.layers.push_back(c.layer);
  c.layers.push_back(SmallMamba2Config().layer);
  GlaParams gla = SmallGlaConfig().layer.as<GlaParams>();
  gla.intermediate_size = 24;
  gla.has_clamp_min = true;
  gla.clamp_min = -0.02;
  gla.gate_logit_normalizer = 8;
  c.layers.push_back(LayerConfig(gla.Clone()));
  RetNetParams retnet = SmallRetNetConfig().layer.as<RetNetParams>();
  retnet.use_output_gate = false;
  c.layers.push_back(LayerConfig(retnet.Clone()));
  LinearAttnParams linear = SmallLinearAttnConfig().layer.as<LinearAttnParams>();
  linear.feature_map_name = "relu";
  linear.output_norm_name = "identity";
  c.layers.push_back(LayerConfig(linear.Clone()));
  return c;
}

// A stack of mixed types (the "layers" list): Mamba-1, Mamba-2 with the gate after the norm,
// Mamba-2 with biases.
inline ModelConfig SmallHybridConfig() {
  ModelConfig c = SmallFrameConfig();
  c.n_layer = 3;
  c.layers.push_back(c.layer);
  Mamba2Params p;
  p.d_state = 8;
  p.headdim = 8;
  p.norm_before_gate = true;
  c.layers.push_back(LayerConfig(p.Clone()));
  p.norm_before_gate = false;
  p.bias = true;
  p.conv_bias = false;
  p.ngroups = 4;
  c.layers.push_back(LayerConfig(p.Clone()));
  return c;
}

// Whether offline runs of `c` take a layer's parallel form (then equal to streaming to 1e-5
// relative, not bitwise).
inline bool HasParallelForm(const ModelConfig& c) {
  for (int i = 0; i < c.n_layer; ++i)
    if (c.layer_params(i).has_parallel_form()) return true;
  return false;
}

inline std::shared_ptr<const Model> RandomModel(const ModelConfig& c, uint64_t seed) {
  auto m = MakeRandomModel(c, seed);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return *m;
}

// Every step on 2 threads unless parallel_min_mflop says otherwise (EngineOptions), so that the
// tests' small models still run the parallel paths.
inline std::unique_ptr<Engine> MakeEngine(std::shared_ptr<const Model> model,
                                          const std::string& backend = "cpu", int max_streams = 80,
                                          int max_batch_frames = 2048,
                                          double parallel_min_mflop = 0, int threads = 2) {
  EngineOptions o;
  o.backend = backend;
  o.threads = threads;
  o.parallel_min_mflop = parallel_min_mflop;
  o.max_streams = max_streams;
  o.max_batch_frames = max_batch_frames;
  auto e = Engine::Create(std::move(model), o);
  EXPECT_TRUE(e.ok()) << e.status().ToString();
  return std::move(*e);
}

// Random input: audio-like samples in [-0.5, 0.5] with a tone, or normal frames.
inline std::vector<float> RandomInput(Rng& rng, const ModelConfig& c, int64_t rows) {
  if (c.frontend.is_log_mel()) {
    auto v = rng.Uniform(size_t(rows), -0.3f, 0.3f);
    for (size_t i = 0; i < v.size(); ++i) v[i] += 0.2f * std::sin(0.05f * float(i));
    return v;
  }
  return rng.Normal(size_t(rows) * c.d_in, 2.0f);
}

// Chunk sizes (in rows) that sum to `rows`: "one" = 1 each, "random" = 1..max, "whole".
inline std::vector<int64_t> Chunking(Rng& rng, int64_t rows, const std::string& kind,
                                     int max = 97) {
  std::vector<int64_t> sizes;
  if (kind == "whole") return {rows};
  for (int64_t done = 0; done < rows;) {
    const int64_t n = kind == "one" ? 1 : std::min<int64_t>(rng.Int(1, max), rows - done);
    sizes.push_back(n);
    done += n;
  }
  return sizes;
}

// Streams `values` through a fresh stream of `e` in the given chunks (rows); returns outputs.
inline std::vector<float> RunStream(Engine& e, const std::vector<float>& values,
                                    const std::vector<int64_t>& chunks) {
  const size_t per_row = e.frontend().takes_samples() ? 1 : e.frontend().frame_dim();
  auto stream = e.OpenStream();
  EXPECT_TRUE(stream.ok()) << stream.status().ToString();
  std::vector<float> out;
  StepResult step;
  size_t pos = 0;
  for (int64_t rows : chunks) {
    e.Step({{*stream, values.data() + pos, size_t(rows) * per_row}}, &step);
    EXPECT_TRUE(step.chunks[0].status.ok()) << step.chunks[0].status.ToString();
    out.insert(out.end(), step.outputs.begin(), step.outputs.end());
    pos += size_t(rows) * per_row;
  }
  e.CloseStream(*stream);
  return out;
}

inline std::vector<float> RunOfflineOne(Engine& e, const std::vector<float>& values,
                                        int segment_frames = 1024, bool parallel_form = false) {
  SpanSource src(values.data(), values.size());
  OfflineOptions o;
  o.segment_frames = segment_frames;
  o.parallel_form = parallel_form;
  auto r = e.RunOffline({&src}, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? (*r)[0] : std::vector<float>();
}

}  // namespace ssm::testing
