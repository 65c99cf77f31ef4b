// Engine behaviour around the numbers: capacity, bad chunks, stream lifecycle, offline batching.
#include <cmath>

#include "tests/engine/engine_test_util.h"

namespace ssm {
namespace {

using testing::Rng;

class EngineTest : public ::testing::Test {
 protected:
  uint64_t seed_ = testing::TestSeed();
  Rng rng_{seed_};
  ModelConfig config_ = testing::SmallFrameConfig();
};

TEST_F(EngineTest, RefusesStreamsBeyondCapacityAndReusesFreedSlots) {
  auto e = testing::MakeEngine(testing::RandomModel(config_, seed_), "cpu", 3);
  std::vector<int> s;
  for (int i = 0; i < 3; ++i) s.push_back(*e->OpenStream());
  auto fourth = e->OpenStream();
  ASSERT_FALSE(fourth.ok());
  EXPECT_EQ(fourth.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(fourth.status().message().find("3"), std::string::npos) << fourth.status().message();
  e->CloseStream(s[1]);
  EXPECT_EQ(e->streams_open(), 2);
  auto again = e->OpenStream();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, s[1]);
}

// A reused slot starts from zero state: same input, same outputs as on a fresh engine.
TEST_F(EngineTest, ReopenedSlotStartsFromZeroState) {
  auto model = testing::RandomModel(config_, seed_);
  auto e = testing::MakeEngine(model, "cpu", 1);
  auto a = testing::RandomInput(rng_, config_, 40), b = testing::RandomInput(rng_, config_, 40);
  testing::RunStream(*e, a, {40});
  const auto after_reuse = testing::RunStream(*e, b, {13, 27});
  auto fresh = testing::MakeEngine(model, "cpu", 1);
  EXPECT_EQ(after_reuse, testing::RunStream(*fresh, b, {40}));
}

TEST_F(EngineTest, BadChunkFailsAloneAndLeavesItsStreamUntouched) {
  auto model = testing::RandomModel(config_, seed_);
  auto e = testing::MakeEngine(model, "cpu", 4);
  auto good = testing::RandomInput(rng_, config_, 30);
  auto bad = testing::RandomInput(rng_, config_, 10);
  bad[17] = std::nanf("");
  const int s0 = *e->OpenStream(), s1 = *e->OpenStream();
  StepResult step;
  const size_t d_in = config_.d_in;
  // s0 gets a NaN chunk, a partial frame, a closed stream and a duplicate ride along.
  e->Step({{s0, bad.data(), bad.size()},
           {s1, good.data(), 10 * d_in},
           {s0, good.data(), d_in + 1},
           {3, good.data(), d_in}},
          &step);
  ASSERT_EQ(step.chunks.size(), 4u);
  EXPECT_EQ(step.chunks[0].status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(step.chunks[0].status.message().find("nan"), std::string::npos)
      << step.chunks[0].status.message();
  EXPECT_TRUE(step.chunks[1].status.ok());
  EXPECT_EQ(step.chunks[1].frames, 10);
  EXPECT_EQ(step.chunks[2].status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(step.chunks[3].status.code(), StatusCode::kFailedPrecondition);
  std::vector<float> s1_out(step.outputs.begin() + step.chunks[1].offset,
                            step.outputs.begin() + step.chunks[1].offset + 10 * config_.d_out);
  // s0 continues as if the bad chunk was never sent; s1's first outputs equal a solo run.
  e->Step({{s0, good.data(), good.size()}}, &step);
  ASSERT_TRUE(step.chunks[0].status.ok());
  EXPECT_EQ(step.chunks[0].first_frame, 0);
  auto solo = testing::MakeEngine(model, "cpu", 1);
  const auto expected = testing::RunStream(*solo, good, {30});
  EXPECT_EQ(step.outputs, expected);
  EXPECT_EQ(s1_out, std::vector<float>(expected.begin(), expected.begin() + 10 * config_.d_out));
}

TEST_F(EngineTest, EmptyChunkProducesNoFrames) {
  auto e = testing::MakeEngine(testing::RandomModel(config_, seed_), "cpu", 1);
  const int s = *e->OpenStream();
  StepResult step;
  e->Step({{s, nullptr, 0}}, &step);
  EXPECT_TRUE(step.chunks[0].status.ok());
  EXPECT_EQ(step.chunks[0].frames, 0);
  EXPECT_TRUE(step.outputs.empty());
}

TEST_F(EngineTest, OfflineManyInputsOfDifferentLengthsEqualEachAlone) {
  auto model = testing::RandomModel(testing::SmallAudioConfig(), seed_);
  // 3 slots for 7 inputs: the offline path works in waves.
  auto e = testing::MakeEngine(model, "cpu", 3);
  std::vector<std::vector<float>> inputs;
  std::vector<std::unique_ptr<SpanSource>> sources;
  std::vector<InputSource*> ptrs;
  for (int i = 0; i < 7; ++i) {
    inputs.push_back(testing::RandomInput(rng_, model->config(), 300 + rng_.Int(0, 20000)));
    sources.push_back(std::make_unique<SpanSource>(inputs.back().data(), inputs.back().size()));
    ptrs.push_back(sources.back().get());
  }
  OfflineOptions o;
  o.segment_frames = 50;
  int progress_calls = 0;
  o.progress = [&](const std::vector<int64_t>& done) { ++progress_calls; };
  auto all = e->RunOffline(ptrs, o);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  EXPECT_GT(progress_calls, 0);
  EXPECT_EQ(e->streams_open(), 0);
  for (int i = 0; i < 7; ++i) {
    const int64_t n = int64_t(inputs[i].size());
    const int64_t frames = n < 400 ? 0 : (n - 400) / 160 + 1;
    EXPECT_EQ(int64_t((*all)[i].size()), frames * 2) << "input " << i;
    EXPECT_EQ((*all)[i], testing::RunOfflineOne(*e, inputs[i])) << "input " << i;
  }
}

TEST_F(EngineTest, OfflineReportsBadInputWithItsIndex) {
  auto e = testing::MakeEngine(testing::RandomModel(config_, seed_), "cpu", 2);
  auto a = testing::RandomInput(rng_, config_, 20), b = testing::RandomInput(rng_, config_, 20);
  b[5] = INFINITY;
  SpanSource sa(a.data(), a.size()), sb(b.data(), b.size());
  auto r = e->RunOffline({&sa, &sb}, OfflineOptions());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("input 1"), std::string::npos) << r.status().message();
  EXPECT_EQ(e->streams_open(), 0);
}

TEST(EngineOptionsTest, InvalidOptionsAreRefusedWithTheField) {
  EngineOptions o;
  o.max_streams = 0;
  EXPECT_NE(o.Validate().message().find("max_streams"), std::string::npos);
  o = EngineOptions();
  o.backend = "gpu9";
  EXPECT_NE(o.Validate().message().find("backend"), std::string::npos);
}

}  // namespace
}  // namespace ssm
