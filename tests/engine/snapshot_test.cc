// Stream snapshots through the engine: a stream snapshotted at any point and restored (into the
// same engine, a fresh one, or one on another backend) continues with exactly the outputs of the
// uninterrupted stream; every mismatch fails closed with its own error.
#include "server/engine/snapshot.h"

#include <gtest/gtest.h>

#include <cstring>

#include "tests/engine/engine_test_util.h"

namespace ssm {
namespace {

using testing::Rng;

// Steps `rows` rows of `values` from row `*pos` through `stream`; appends its outputs to *out.
void StepRows(Engine& e, int stream, const std::vector<float>& values, int64_t rows, size_t* pos,
              std::vector<float>* out) {
  const size_t per_row = e.frontend().takes_samples() ? 1 : e.frontend().frame_dim();
  StepResult step;
  e.Step({{stream, values.data() + *pos, size_t(rows) * per_row}}, &step);
  ASSERT_TRUE(step.chunks[0].status.ok()) << step.chunks[0].status.ToString();
  out->insert(out->end(), step.outputs.begin(), step.outputs.end());
  *pos += size_t(rows) * per_row;
}

// Models: frame input, log-mel input, Mamba-2 layers, a mixed stack, each gated linear type
// (RetNet's state holds its frame counter), and a stack of every type.
class SnapshotTest : public ::testing::TestWithParam<std::string> {
 protected:
  bool audio() const { return GetParam() == "LogMel"; }
  ModelConfig Config() const {
    if (audio()) return testing::SmallAudioConfig();
    if (GetParam() == "Mamba2") return testing::SmallMamba2Config();
    if (GetParam() == "Hybrid") return testing::SmallHybridConfig();
    if (GetParam() == "LinearAttn") return testing::SmallLinearAttnConfig();
    if (GetParam() == "RetNet") return testing::SmallRetNetConfig();
    if (GetParam() == "Gla") return testing::SmallGlaConfig();
    if (GetParam() == "Family") return testing::SmallFamilyConfig();
    return testing::SmallFrameConfig();
  }
  Rng rng_{testing::TestSeed()};
};

TEST_P(SnapshotTest, RestoredStreamContinuesBitwiseAtEveryCut) {
  auto model = testing::RandomModel(Config(), 31);
  auto engine = testing::MakeEngine(model);
  auto other = testing::MakeEngine(model);  // a second server with the same model
  const int64_t rows = audio() ? 6000 : 200;
  const auto values = testing::RandomInput(rng_, model->config(), rows);
  const auto chunks = testing::Chunking(rng_, rows, "random", audio() ? 700 : 17);
  const auto expected = testing::RunStream(*engine, values, chunks);
  ASSERT_FALSE(expected.empty());

  for (size_t cut = 0; cut <= chunks.size(); cut += std::max<size_t>(1, chunks.size() / 7)) {
    SCOPED_TRACE("cut after chunk " + std::to_string(cut));
    auto stream = engine->OpenStream();
    ASSERT_TRUE(stream.ok());
    std::vector<float> out;
    size_t pos = 0;
    for (size_t i = 0; i < cut; ++i)
      ASSERT_NO_FATAL_FAILURE(StepRows(*engine, *stream, values, chunks[i], &pos, &out));
    auto snapshot = engine->SnapshotStream(*stream);
    ASSERT_TRUE(snapshot.ok()) << snapshot.status().ToString();
    EXPECT_EQ(snapshot->frontend.frames, engine->frames_emitted(*stream));
    engine->CloseStream(*stream);
    // Through the bytes, as a parked or stored stream travels.
    snapshot->next_sequence = cut;
    snapshot->held_first_frame = snapshot->frontend.frames;
    auto decoded = DecodeSnapshot(EncodeSnapshot(*snapshot));
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_EQ(decoded->next_sequence, cut);
    auto restored = other->RestoreStream(*decoded);
    ASSERT_TRUE(restored.ok()) << restored.status().ToString();
    EXPECT_EQ(other->frames_emitted(*restored), snapshot->frontend.frames);
    for (size_t i = cut; i < chunks.size(); ++i)
      ASSERT_NO_FATAL_FAILURE(StepRows(*other, *restored, values, chunks[i], &pos, &out));
    other->CloseStream(*restored);
    EXPECT_EQ(out, expected);  // bitwise
  }
}

TEST_P(SnapshotTest, RestoresAcrossBackendsWithinTolerance) {
  auto model = testing::RandomModel(Config(), 32);
  auto cpu = testing::MakeEngine(model, "cpu");
  auto reference = testing::MakeEngine(model, "reference");
  const int64_t rows = audio() ? 4000 : 120;
  const auto values = testing::RandomInput(rng_, model->config(), rows);
  const auto expected = testing::RunStream(*reference, values, {rows / 2, rows - rows / 2});
  auto stream = cpu->OpenStream();
  ASSERT_TRUE(stream.ok());
  std::vector<float> out;
  size_t pos = 0;
  ASSERT_NO_FATAL_FAILURE(StepRows(*cpu, *stream, values, rows / 2, &pos, &out));
  auto snapshot = cpu->SnapshotStream(*stream);
  ASSERT_TRUE(snapshot.ok());
  EXPECT_EQ(snapshot->backend, "cpu");
  auto restored = reference->RestoreStream(*snapshot);
  ASSERT_TRUE(restored.ok()) << restored.status().ToString();
  ASSERT_NO_FATAL_FAILURE(StepRows(*reference, *restored, values, rows - rows / 2, &pos, &out));
  ASSERT_EQ(out.size(), expected.size());
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_NEAR(out[i], expected[i], 1e-5 * std::max(1.0f, std::abs(expected[i]))) << i;
}

INSTANTIATE_TEST_SUITE_P(Models, SnapshotTest,
                         ::testing::Values("Frames", "LogMel", "Mamba2", "Hybrid", "LinearAttn",
                                           "RetNet", "Gla", "Family"),
                         [](const auto& info) { return info.param; });

TEST(SnapshotRestoreTest, AnotherModelsSnapshotFailsNamingBothFingerprints) {
  auto a = testing::RandomModel(testing::SmallAudioConfig(), 1);
  auto b = testing::RandomModel(testing::SmallAudioConfig(), 2);  // same shapes, other weights
  EXPECT_FALSE(DigestsEqual(a->fingerprint(), b->fingerprint()));
  auto ea = testing::MakeEngine(a), eb = testing::MakeEngine(b);
  auto stream = ea->OpenStream();
  ASSERT_TRUE(stream.ok());
  auto snapshot = ea->SnapshotStream(*stream);
  ASSERT_TRUE(snapshot.ok());
  auto restored = eb->RestoreStream(*snapshot);
  ASSERT_FALSE(restored.ok());
  EXPECT_EQ(restored.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(restored.status().message().find(Hex(a->fingerprint(), 16)), std::string::npos)
      << restored.status().message();
  EXPECT_NE(restored.status().message().find(Hex(b->fingerprint(), 16)), std::string::npos);
  EXPECT_EQ(eb->streams_open(), 0);  // nothing was taken
}

TEST(SnapshotRestoreTest, SnapshotsThatDoNotFitTheModelFailWithDataLoss) {
  auto model = testing::RandomModel(testing::SmallAudioConfig(), 3);
  auto engine = testing::MakeEngine(model);
  auto stream = engine->OpenStream();
  ASSERT_TRUE(stream.ok());
  auto good = engine->SnapshotStream(*stream);
  ASSERT_TRUE(good.ok());
  struct Case {
    const char* what;
    std::function<void(StreamSnapshot*)> mutate;
    StatusCode code;
  };
  const std::vector<Case> cases = {
      {"a layer fewer", [](StreamSnapshot* s) { s->layers.pop_back(); }, StatusCode::kDataLoss},
      {"a layer too short", [](StreamSnapshot* s) { s->layers[0].pop_back(); },
       StatusCode::kDataLoss},
      {"a non-finite state", [](StreamSnapshot* s) { s->layers[1][3] = NAN; },
       StatusCode::kDataLoss},
      {"too many pending samples", [](StreamSnapshot* s) { s->frontend.pending.assign(400, 0.0f); },
       StatusCode::kDataLoss},
      {"negative frames", [](StreamSnapshot* s) { s->frontend.frames = -1; },
       StatusCode::kDataLoss},
      {"frames near int64's end", [](StreamSnapshot* s) { s->frontend.frames = INT64_MAX - 5; },
       StatusCode::kDataLoss},
      {"another d_out", [](StreamSnapshot* s) { s->d_out = 3; }, StatusCode::kDataLoss},
      {"other precision", [](StreamSnapshot* s) { s->precision = "bf16"; },
       StatusCode::kFailedPrecondition},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    StreamSnapshot s = *good;
    c.mutate(&s);
    auto restored = engine->RestoreStream(s);
    ASSERT_FALSE(restored.ok());
    EXPECT_EQ(restored.status().code(), c.code) << restored.status().ToString();
    EXPECT_EQ(engine->streams_open(), 1);  // only the original stream
  }
}

TEST(SnapshotRestoreTest, ClosedStreamHasNoSnapshot) {
  auto model = testing::RandomModel(testing::SmallFrameConfig(), 4);
  auto engine = testing::MakeEngine(model);
  auto closed = engine->SnapshotStream(5);
  ASSERT_FALSE(closed.ok());
  EXPECT_EQ(closed.status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace ssm
