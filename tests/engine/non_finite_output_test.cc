// Finite weights or inputs that overflow float32: the chunk fails with INTERNAL, its stream
// refuses later chunks, the other streams of the batch are unaffected, and ssm-run exits with a
// clean error. No NaN or inf is ever returned as an output.
#include <cmath>
#include <fstream>
#include <limits>
#include <string>

#include "common/io/npy.h"
#include "tests/engine/engine_test_util.h"
#include "tests/model/test_process.h"

namespace ssm {
namespace {

using testing::Rng;

class NonFiniteOutputTest : public ::testing::Test {
 protected:
  // A valid model (every weight finite) whose final norm weights are float32's largest value:
  // any normalised feature above 1 in magnitude (every frame has one) becomes inf, and the head
  // turns it into inf or NaN outputs.
  std::shared_ptr<const Model> HugeWeightModel() {
    const ModelConfig c = testing::SmallFrameConfig();
    std::map<std::string, Tensor> tensors = testing::RandomModel(c, seed_)->tensors();
    for (float& w : tensors["backbone.norm_f.weight"].data) w = std::numeric_limits<float>::max();
    auto model = Model::FromTensors(c, std::move(tensors));
    EXPECT_TRUE(model.ok()) << model.status().ToString();
    return *model;
  }

  uint64_t seed_ = testing::TestSeed();
  Rng rng_{seed_};
};

TEST_F(NonFiniteOutputTest, HugeFiniteWeightsFailTheChunkAndTheStream) {
  SCOPED_TRACE("SSM_TEST_SEED=" + std::to_string(seed_));
  const auto model = HugeWeightModel();
  for (const char* backend : {"reference", "cpu"}) {
    SCOPED_TRACE(backend);
    auto e = testing::MakeEngine(model, backend, 2);
    const auto input = testing::RandomInput(rng_, model->config(), 12);
    const int s = *e->OpenStream();
    StepResult step;
    e->Step({{s, input.data(), input.size()}}, &step);
    const Status& status = step.chunks[0].status;
    EXPECT_EQ(status.code(), StatusCode::kInternal) << status.ToString();
    EXPECT_NE(status.message().find("non-finite output"), std::string::npos) << status.message();
    EXPECT_NE(status.message().find("at frame 0, output 0"), std::string::npos) << status.message();

    // The stream's state went through the overflow: it refuses more input until reopened.
    e->Step({{s, input.data(), input.size()}}, &step);
    EXPECT_EQ(step.chunks[0].status.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(step.chunks[0].status.message().find("open a new stream"), std::string::npos)
        << step.chunks[0].status.message();
    // Nor can it be kept for a resume.
    auto snapshot = e->SnapshotStream(s);
    ASSERT_FALSE(snapshot.ok());
    EXPECT_EQ(snapshot.status().code(), StatusCode::kFailedPrecondition);
    e->CloseStream(s);
    const int again = *e->OpenStream();
    EXPECT_EQ(again, s);
    e->Step({{again, nullptr, 0}}, &step);
    EXPECT_TRUE(step.chunks[0].status.ok()) << "a reopened slot starts clean";
    e->CloseStream(again);

    // The offline path reports it with the input's index and frees its slots.
    SpanSource source(input.data(), input.size());
    auto offline = e->RunOffline({&source}, OfflineOptions());
    ASSERT_FALSE(offline.ok());
    EXPECT_EQ(offline.status().code(), StatusCode::kInternal);
    EXPECT_EQ(offline.status().message().rfind("input 0: the model produced a non-finite", 0), 0u)
        << offline.status().message();
    EXPECT_EQ(e->streams_open(), 0);
  }
}

// An input that overflows float32 in the frontend's normalisation (x / std with std 1e-37)
// fails its own stream at the frame where it happens; a stream beside it in the batch is exact.
TEST_F(NonFiniteOutputTest, OverflowingInputFailsOnlyItsStreamAtItsFrame) {
  SCOPED_TRACE("SSM_TEST_SEED=" + std::to_string(seed_));
  ModelConfig c = testing::SmallFrameConfig();
  c.frontend.std[0] = 1e-37f;  // feature 0 must then stay at its mean, 0.1
  const auto model = testing::RandomModel(c, seed_);
  auto e = testing::MakeEngine(model, "cpu", 2);
  const int frames = 10, overflow_frame = 6;
  auto calm = testing::RandomInput(rng_, c, frames);
  for (int t = 0; t < frames; ++t) calm[size_t(t) * c.d_in] = 0.1f;
  auto wild = calm;
  wild[size_t(overflow_frame) * c.d_in] = 100.0f;  // (100 - 0.1) / 1e-37 = inf in float32

  const int a = *e->OpenStream(), b = *e->OpenStream();
  StepResult step;
  e->Step({{a, calm.data(), calm.size()}, {b, wild.data(), wild.size()}}, &step);
  ASSERT_TRUE(step.chunks[0].status.ok()) << step.chunks[0].status.ToString();
  EXPECT_EQ(step.chunks[1].status.code(), StatusCode::kInternal);
  EXPECT_NE(step.chunks[1].status.message().find("at frame " + std::to_string(overflow_frame)),
            std::string::npos)
      << step.chunks[1].status.message();
  const std::vector<float> a_out(step.outputs.begin(),
                                 step.outputs.begin() + size_t(frames) * c.d_out);
  auto solo = testing::MakeEngine(model, "cpu", 1);
  EXPECT_EQ(a_out, testing::RunStream(*solo, calm, {frames}));
}

TEST_F(NonFiniteOutputTest, SsmRunExitsWithACleanError) {
  const std::string bin = SSM_BIN_DIR;
  if (access((bin + "/ssm-run").c_str(), X_OK) != 0) GTEST_SKIP() << bin << "/ssm-run is not built";
  testing_util::TempDir dir;
  const auto model = HugeWeightModel();
  ASSERT_TRUE(model->Save(dir.File("model")).ok());
  const auto frames = testing::RandomInput(rng_, model->config(), 20);
  const std::string input = dir.File("in.npy"), output = dir.File("out.npy");
  ASSERT_TRUE(WriteNpy(input, {20, model->config().d_in}, frames.data()).ok());
  for (const std::vector<std::string>& mode :
       {std::vector<std::string>{"--mode", "offline"},
        std::vector<std::string>{"--mode", "stream", "--chunk", "7"}}) {
    SCOPED_TRACE(mode[1]);
    std::vector<std::string> argv = {bin + "/ssm-run", "--model",  dir.File("model"),
                                     "--input",        input,      "--output",
                                     output,           "--device", "cpu"};
    argv.insert(argv.end(), mode.begin(), mode.end());
    const testing_util::ProcessResult r = testing_util::RunProcess(argv, dir.File("err.txt"));
    EXPECT_EQ(r.exit_code, 1) << testing_util::HowItEnded(r) << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find("non-finite output"), std::string::npos) << r.err;
    EXPECT_FALSE(std::ifstream(output).good()) << "no output file is written";
  }
}

}  // namespace
}  // namespace ssm
