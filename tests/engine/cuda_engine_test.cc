// The exactness contract on the cuda backend: streaming equals offline, batching never changes a
// stream, and the whole model equals the reference backend. Skips without a GPU.
#include "tests/engine/engine_test_util.h"

namespace ssm {
namespace {

using testing::Chunking;
using testing::NormalizedMaxError;
using testing::Rng;

constexpr double kContractMaxRelErr = 1e-5;

class CudaEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!CudaAvailable(&why)) GTEST_SKIP() << "no CUDA here: " << why;
  }
  uint64_t seed_ = testing::TestSeed();
  Rng rng_{seed_};
};

TEST_F(CudaEngineTest, StreamingEqualsOfflineAndMatchesReference) {
  for (const ModelConfig& c :
       {testing::SmallAudioConfig(), *ModelConfig::Preset("bench-s"),
        *ModelConfig::Preset("bench-s-mamba2"), *ModelConfig::Preset("bench-s-linear_attn"),
        *ModelConfig::Preset("bench-s-retnet"), *ModelConfig::Preset("bench-s-gla")}) {
    auto model = testing::RandomModel(c, seed_);
    auto gpu = testing::MakeEngine(model, "cuda", 4);
    auto ref = testing::MakeEngine(model, "reference", 4);
    const int64_t rows = 16000 + rng_.Int(0, 999);
    auto input = testing::RandomInput(rng_, c, rows);
    const auto offline = testing::RunOfflineOne(*gpu, input, 37);
    const auto streamed = testing::RunStream(*gpu, input, Chunking(rng_, rows, "random", 3000));
    ASSERT_EQ(streamed.size(), offline.size());
    EXPECT_LE(NormalizedMaxError(streamed, offline), kContractMaxRelErr) << "seed " << seed_;
    EXPECT_EQ(streamed, offline) << "not bitwise (seed " << seed_ << ")";
    EXPECT_LE(NormalizedMaxError(offline, testing::RunOfflineOne(*ref, input)), kContractMaxRelErr)
        << "cuda vs reference (seed " << seed_ << ")";
  }
}

TEST_F(CudaEngineTest, BatchingWithOtherStreamsNeverChangesOutputs) {
  const ModelConfig c = testing::SmallAudioConfig();
  auto engine = testing::MakeEngine(testing::RandomModel(c, seed_), "cuda", 80);
  const int n = 64;
  std::vector<std::vector<float>> inputs, solo;
  for (int i = 0; i < n; ++i)
    inputs.push_back(testing::RandomInput(rng_, c, 3000 + rng_.Int(0, 3000)));
  for (int i = 0; i < n; ++i)
    solo.push_back(testing::RunStream(*engine, inputs[i], {int64_t(inputs[i].size())}));
  std::vector<int> streams;
  std::vector<ChunkInput> chunks;
  for (int i = 0; i < n; ++i) {
    streams.push_back(*engine->OpenStream());
    chunks.push_back({streams[i], inputs[i].data(), inputs[i].size()});
  }
  StepResult step;
  engine->Step(chunks, &step);
  for (int i = 0; i < n; ++i) {
    const ChunkOutput& co = step.chunks[i];
    ASSERT_TRUE(co.status.ok()) << co.status.ToString();
    std::vector<float> together(step.outputs.begin() + co.offset,
                                step.outputs.begin() + co.offset + size_t(co.frames) * c.d_out);
    EXPECT_EQ(together, solo[i]) << "stream " << i << " (seed " << seed_ << ")";
  }
}

}  // namespace
}  // namespace ssm
