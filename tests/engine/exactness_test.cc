// The exactness contract (docs/design.md §3): streaming in any chunking equals offline processing,
// and batching with other streams never changes a stream's outputs. On the cpu backend both
// hold bitwise (every op's per-element arithmetic is independent of chunk and batch shape), but
// for offline runs in a layer's parallel form (the chunked forms of Mamba-2, linear attention,
// RetNet and GLA), which meet the contract's 1e-5 relative bound, checked for every model.
#include <algorithm>

#include "tests/engine/engine_test_util.h"

namespace ssm {
namespace {

using testing::Chunking;
using testing::NormalizedMaxError;
using testing::Rng;

constexpr double kContractMaxRelErr = 1e-5;

class ExactnessTest : public ::testing::TestWithParam<std::string> {
 protected:
  ModelConfig Config() const {
    if (GetParam() == "audio") return testing::SmallAudioConfig();
    if (GetParam() == "mamba2") return testing::SmallMamba2Config();
    if (GetParam() == "hybrid") return testing::SmallHybridConfig();
    if (GetParam() == "linear_attn") return testing::SmallLinearAttnConfig();
    if (GetParam() == "retnet") return testing::SmallRetNetConfig();
    if (GetParam() == "gla") return testing::SmallGlaConfig();
    if (GetParam() == "family") return testing::SmallFamilyConfig();
    if (GetParam().rfind("bench-", 0) == 0) return *ModelConfig::Preset(GetParam());
    return testing::SmallFrameConfig();
  }
  uint64_t seed_ = testing::TestSeed();
  Rng rng_{seed_};
  std::string Case(const std::string& what) const {
    return GetParam() + ": " + what + " (seed " + std::to_string(seed_) + ")";
  }
};

TEST_P(ExactnessTest, StreamingInAnyChunkingEqualsOffline) {
  const ModelConfig c = Config();
  auto engine = testing::MakeEngine(testing::RandomModel(c, seed_));
  const int64_t rows = c.frontend.is_log_mel() ? 16000 + rng_.Int(0, 999) : 300 + rng_.Int(0, 99);
  auto input = testing::RandomInput(rng_, c, rows);
  // Offline in the recurrence that streaming runs (the default), and in the layers' parallel
  // forms where they have one (segments of 37 frames, and whole).
  const auto recurrence = testing::RunOfflineOne(*engine, input, /*segment_frames=*/37);
  const auto offline = testing::RunOfflineOne(*engine, input, 37, /*parallel_form=*/true);
  const auto offline_whole = testing::RunOfflineOne(*engine, input, 100000, true);
  ASSERT_FALSE(offline.empty());
  const bool bitwise = !testing::HasParallelForm(c);
  for (std::string kind : {"one", "random", "whole"}) {
    if (kind == "one" && c.frontend.is_log_mel()) continue;  // covered by "tiny" below
    const int max = c.frontend.is_log_mel() ? 3000 : 97;
    const auto streamed = testing::RunStream(*engine, input, Chunking(rng_, rows, kind, max));
    ASSERT_EQ(streamed.size(), offline.size()) << Case(kind);
    EXPECT_LE(NormalizedMaxError(streamed, offline), kContractMaxRelErr) << Case(kind);
    EXPECT_LE(NormalizedMaxError(streamed, offline_whole), kContractMaxRelErr) << Case(kind);
    EXPECT_EQ(streamed, recurrence) << Case(kind + " chunking is not bitwise equal");
    if (bitwise) {
      EXPECT_EQ(streamed, offline) << Case(kind + " chunking is not bitwise equal");
    }
  }
  if (!bitwise) {
    EXPECT_NE(offline, recurrence) << Case("the parallel form did not run");
  }
  if (c.frontend.is_log_mel()) {  // sample-by-sample over the first 0.1 s
    std::vector<float> head(input.begin(), input.begin() + 1600);
    const auto one = testing::RunStream(*engine, head, Chunking(rng_, 1600, "one"));
    EXPECT_EQ(one, testing::RunOfflineOne(*engine, head)) << Case("1-sample chunks");
    EXPECT_LE(NormalizedMaxError(one, testing::RunOfflineOne(*engine, head, 1024, true)),
              kContractMaxRelErr)
        << Case("1-sample chunks");
  }
}

TEST_P(ExactnessTest, BatchingWithOtherStreamsNeverChangesOutputs) {
  const ModelConfig c = Config();
  auto engine = testing::MakeEngine(testing::RandomModel(c, seed_), "cpu", 80);
  const int n = 64;
  const int64_t base_rows = c.frontend.is_log_mel() ? 4000 : 60;
  std::vector<std::vector<float>> inputs;
  std::vector<std::vector<int64_t>> chunkings;
  for (int i = 0; i < n; ++i) {
    const int64_t rows = base_rows + rng_.Int(0, int(base_rows));
    inputs.push_back(testing::RandomInput(rng_, c, rows));
    chunkings.push_back(Chunking(rng_, rows, "random", c.frontend.is_log_mel() ? 1700 : 23));
  }
  // Solo: each stream alone.
  std::vector<std::vector<float>> solo;
  for (int i = 0; i < n; ++i) solo.push_back(testing::RunStream(*engine, inputs[i], chunkings[i]));
  // Together: every step carries the next chunk of every stream that has one left.
  const size_t per_row = engine->frontend().takes_samples() ? 1 : c.d_in;
  std::vector<int> streams(n);
  for (int i = 0; i < n; ++i) streams[i] = *engine->OpenStream();
  std::vector<size_t> next(n, 0), pos(n, 0);
  std::vector<std::vector<float>> together(n);
  StepResult step;
  for (bool more = true; more;) {
    std::vector<ChunkInput> chunks;
    std::vector<int> owner;
    for (int i = 0; i < n; ++i) {
      if (next[i] == chunkings[i].size()) continue;
      const size_t count = size_t(chunkings[i][next[i]++]) * per_row;
      chunks.push_back({streams[i], inputs[i].data() + pos[i], count});
      owner.push_back(i);
      pos[i] += count;
    }
    more = !chunks.empty();
    if (!more) break;
    engine->Step(chunks, &step);
    for (size_t k = 0; k < chunks.size(); ++k) {
      const ChunkOutput& co = step.chunks[k];
      ASSERT_TRUE(co.status.ok()) << co.status.ToString();
      EXPECT_EQ(co.first_frame, int64_t(together[owner[k]].size() / c.d_out));
      together[owner[k]].insert(together[owner[k]].end(), step.outputs.begin() + co.offset,
                                step.outputs.begin() + co.offset + size_t(co.frames) * c.d_out);
    }
  }
  for (int i = 0; i < n; ++i) {
    ASSERT_FALSE(solo[i].empty());
    EXPECT_EQ(together[i], solo[i]) << Case("stream " + std::to_string(i) + " batched with 63");
  }
}

TEST_P(ExactnessTest, PassSplittingOfLargeStepsNeverChangesOutputs) {
  const ModelConfig c = Config();
  auto model = testing::RandomModel(c, seed_);
  auto wide = testing::MakeEngine(model, "cpu", 4, 4096);
  auto narrow = testing::MakeEngine(model, "cpu", 4, 7);  // every step split into 7-row passes
  const int64_t rows = c.frontend.is_log_mel() ? 9000 : 200;
  auto input = testing::RandomInput(rng_, c, rows);
  const auto chunks = Chunking(rng_, rows, "random", c.frontend.is_log_mel() ? 2500 : 50);
  EXPECT_EQ(testing::RunStream(*narrow, input, chunks), testing::RunStream(*wide, input, chunks))
      << Case("max_batch_frames 7 vs 4096");
}

TEST_P(ExactnessTest, CpuBackendMatchesReferenceBackend) {
  const ModelConfig c = Config();
  auto model = testing::RandomModel(c, seed_);
  auto cpu = testing::MakeEngine(model, "cpu", 2);
  auto ref = testing::MakeEngine(model, "reference", 2);
  const int64_t rows = c.frontend.is_log_mel() ? 8000 : 120;
  auto input = testing::RandomInput(rng_, c, rows);
  const auto chunks = Chunking(rng_, rows, "random", c.frontend.is_log_mel() ? 2000 : 30);
  const auto a = testing::RunStream(*cpu, input, chunks);
  const auto b = testing::RunStream(*ref, input, chunks);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_LE(NormalizedMaxError(a, b), kContractMaxRelErr) << Case("cpu vs reference, whole model");
}

// The engine picks each step's threads from its work (EngineOptions::parallel_min_mflop): one
// thread, two, and a mix of both from step to step give the same outputs, bitwise.
TEST_P(ExactnessTest, StepThreadsNeverChangeOutputs) {
  const ModelConfig c = Config();
  auto model = testing::RandomModel(c, seed_);
  const int64_t rows = c.frontend.is_log_mel() ? 9000 : 240;
  auto input = testing::RandomInput(rng_, c, rows);
  const auto chunks = Chunking(rng_, rows, "random", c.frontend.is_log_mel() ? 2500 : 60);
  auto one = testing::MakeEngine(model, "cpu", 4, 2048, 0, /*threads=*/1);
  const auto expected = testing::RunStream(*one, input, chunks);
  ASSERT_FALSE(expected.empty());
  // The median chunk's estimated work as the threshold: smaller chunks on one thread, larger on
  // three.
  std::vector<int64_t> sizes = chunks;
  std::nth_element(sizes.begin(), sizes.begin() + sizes.size() / 2, sizes.end());
  const size_t values_per_row = one->frontend().takes_samples() ? 1 : one->frontend().frame_dim();
  const double mflop =
      one->StepMflop({ChunkInput{0, nullptr, size_t(sizes[sizes.size() / 2]) * values_per_row}});
  ASSERT_GT(mflop, 0);
  for (double threshold : {0.0, mflop, 1e12}) {
    auto engine = testing::MakeEngine(model, "cpu", 4, 2048, threshold, /*threads=*/3);
    EXPECT_EQ(testing::RunStream(*engine, input, chunks), expected)
        << Case("parallel_min_mflop " + std::to_string(threshold) + ", 3 threads vs 1");
  }
}

INSTANTIATE_TEST_SUITE_P(Models, ExactnessTest,
                         ::testing::Values("frames", "audio", "bench-s", "mamba2", "hybrid",
                                           "bench-s-mamba2", "linear_attn", "retnet", "gla",
                                           "family", "bench-s-linear_attn", "bench-s-retnet",
                                           "bench-s-gla"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace ssm
