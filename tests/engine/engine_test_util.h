// Helpers of the engine tests: random models and inputs, and running a stream chunk by chunk.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "server/engine/engine.h"
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
  c.layer.d_state = 8;
  c.layer.d_conv = 4;
  c.layer.expand = 2;
  c.layer.dt_rank = 4;
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
  c.layer.d_state = 16;
  c.layer.dt_rank = 3;
  c.d_out = 2;
  c.head_activation = "sigmoid";
  return c;
}

inline std::shared_ptr<const Model> RandomModel(const ModelConfig& c, uint64_t seed) {
  auto m = MakeRandomModel(c, seed);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return *m;
}

inline std::unique_ptr<Engine> MakeEngine(std::shared_ptr<const Model> model,
                                          const std::string& backend = "cpu", int max_streams = 80,
                                          int max_batch_frames = 2048) {
  EngineOptions o;
  o.backend = backend;
  o.threads = 2;
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
                                        int segment_frames = 1024) {
  SpanSource src(values.data(), values.size());
  OfflineOptions o;
  o.segment_frames = segment_frames;
  auto r = e.RunOffline({&src}, o);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? (*r)[0] : std::vector<float>();
}

}  // namespace ssm::testing
