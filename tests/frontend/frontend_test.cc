// Streaming frontends: any chunking gives the frames of the whole signal, bitwise; frame input is
// normalised and checked.
#include "server/frontend/frontend.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/log_mel.h"
#include "kernels/reference/log_mel.h"

namespace ssm {
namespace {

uint32_t TestSeed() {
  const char* env = std::getenv("SSM_TEST_SEED");
  const uint32_t seed = env ? uint32_t(std::strtoul(env, nullptr, 10)) : std::random_device{}();
  std::printf("[ seed     ] SSM_TEST_SEED=%u\n", seed);
  return seed;
}

void CpuLogMel(const LogMelPlan& plan, const float* samples, int n_frames, float* out) {
  cpu::LogMel(plan, samples, n_frames, out, 2);
}

ModelConfig LogMelConfig(int win, int hop, int n_fft = 512, int n_mels = 40) {
  ModelConfig config;
  config.frontend.type = "log_mel";
  config.frontend.win_length = win;
  config.frontend.hop_length = hop;
  config.frontend.n_fft = n_fft;
  config.frontend.n_mels = n_mels;
  config.d_in = n_mels;
  return config;
}

ModelConfig FrameConfig(int d_in, std::vector<float> mean = {}, std::vector<float> std = {}) {
  ModelConfig config;
  config.frontend.type = "none";
  config.frontend.mean = std::move(mean);
  config.frontend.std = std::move(std);
  config.d_in = d_in;
  return config;
}

std::unique_ptr<Frontend> MakeFrontend(const ModelConfig& config) {
  StatusOr<std::unique_ptr<Frontend>> frontend = CreateFrontend(config, CpuLogMel);
  EXPECT_TRUE(frontend.ok()) << frontend.status().ToString();
  return std::move(frontend).value();
}

std::vector<float> Noise(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
  std::vector<float> x(n);
  for (float& v : x) v = uniform(rng);
  return x;
}

int64_t ExpectedFrames(int64_t n, int win, int hop) { return n < win ? 0 : (n - win) / hop + 1; }

// Feeds x in chunks of the given sizes (the last one takes the rest); checks FramesFor and the
// frame count of every call on the way.
std::vector<float> Stream(const Frontend& frontend, const std::vector<float>& x,
                          const std::vector<size_t>& chunks) {
  std::unique_ptr<FrontendState> state = frontend.NewState();
  std::vector<float> frames;
  size_t pos = 0;
  for (size_t i = 0; pos < x.size(); ++i) {
    const size_t n = i < chunks.size() ? std::min(chunks[i], x.size() - pos) : x.size() - pos;
    const int64_t predicted = frontend.FramesFor(*state, n);
    const size_t before = frames.size();
    StatusOr<int> emitted = frontend.Process(state.get(), x.data() + pos, n, &frames);
    EXPECT_TRUE(emitted.ok()) << emitted.status().ToString();
    EXPECT_EQ(*emitted, predicted) << "chunk " << i;
    EXPECT_EQ(frames.size() - before, size_t(*emitted) * frontend.frame_dim());
    pos += n;
  }
  EXPECT_EQ(state->frames_emitted(), int64_t(frames.size() / std::max(frontend.frame_dim(), 1)));
  return frames;
}

bool BitwiseEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---- log_mel --------------------------------------------------------------------------------

TEST(LogMelFrontendTest, AnyChunkingGivesTheWholeSignalFramesBitwise) {
  std::mt19937 rng(TestSeed());
  // (win, hop): the shipped 400/160, hop == win, hop > win (samples skipped between frames).
  for (auto [win, hop] : {std::pair{400, 160}, std::pair{256, 256}, std::pair{200, 333}}) {
    SCOPED_TRACE("win " + std::to_string(win) + " hop " + std::to_string(hop));
    const ModelConfig config = LogMelConfig(win, hop);
    std::unique_ptr<Frontend> frontend = MakeFrontend(config);
    const std::vector<float> x = Noise(9000 + rng() % 4000, rng);

    // The truth: every frame of the whole signal straight from the kernel.
    const int64_t n_frames = ExpectedFrames(x.size(), win, hop);
    std::vector<float> whole(n_frames * config.d_in);
    LogMelParams params;
    params.win_length = win;
    params.hop_length = hop;
    params.n_mels = config.d_in;
    CpuLogMel(LogMelPlan::Make(params), x.data(), int(n_frames), whole.data());

    std::vector<size_t> random_sizes;
    for (size_t total = 0; total < x.size(); total += random_sizes.back()) {
      random_sizes.push_back(rng() % 3 == 0 ? 1 + rng() % 7 : 1 + rng() % 1500);
    }
    const std::vector<std::pair<std::string, std::vector<size_t>>> chunkings = {
        {"whole", {}},
        {"1 sample", std::vector<size_t>(x.size(), 1)},
        {"hop", std::vector<size_t>(x.size() / hop + 1, hop)},
        {"win - 1", std::vector<size_t>(x.size() / (win - 1) + 1, win - 1)},
        {"1600 (100 ms)", std::vector<size_t>(x.size() / 1600 + 1, 1600)},
        {"random", random_sizes},
    };
    for (const auto& [name, chunks] : chunkings) {
      EXPECT_TRUE(BitwiseEqual(Stream(*frontend, x, chunks), whole)) << "chunking: " << name;
    }
  }
}

TEST(LogMelFrontendTest, FrameCountFollowsTheFormula) {
  std::mt19937 rng(TestSeed());
  for (auto [win, hop] : {std::pair{400, 160}, std::pair{200, 333}}) {
    std::unique_ptr<Frontend> frontend = MakeFrontend(LogMelConfig(win, hop));
    for (int64_t n : {0, 1, win - 1, win, win + 1, win + hop - 1, win + hop, 5 * hop + win, 4321}) {
      const std::vector<float> x = Noise(n, rng);
      std::unique_ptr<FrontendState> state = frontend->NewState();
      EXPECT_EQ(frontend->FramesFor(*state, n), ExpectedFrames(n, win, hop)) << n;
      std::vector<float> frames;
      StatusOr<int> emitted = frontend->Process(state.get(), x.data(), n, &frames);
      ASSERT_TRUE(emitted.ok());
      EXPECT_EQ(*emitted, ExpectedFrames(n, win, hop))
          << "win " << win << " hop " << hop << " n " << n;
      EXPECT_EQ(state->frames_emitted(), *emitted);
    }
  }
}

TEST(LogMelFrontendTest, ShortSignalGivesNoFramesUntilTheFirstWindowIsComplete) {
  std::mt19937 rng(TestSeed());
  std::unique_ptr<Frontend> frontend = MakeFrontend(LogMelConfig(400, 160));
  const std::vector<float> x = Noise(400, rng);
  std::unique_ptr<FrontendState> state = frontend->NewState();
  std::vector<float> frames;
  EXPECT_EQ(*frontend->Process(state.get(), x.data(), 399, &frames), 0);
  EXPECT_TRUE(frames.empty());
  EXPECT_EQ(frontend->FramesFor(*state, 1), 1);
  EXPECT_EQ(frontend->FramesFor(*state, 1), 1);  // FramesFor leaves the state alone
  EXPECT_EQ(*frontend->Process(state.get(), x.data() + 399, 1, &frames), 1);
  EXPECT_EQ(frames.size(), 40u);
  EXPECT_EQ(frontend->carry_floats(), 400u);
}

TEST(LogMelFrontendTest, RejectsNonFiniteSamplesAndKeepsTheState) {
  std::mt19937 rng(TestSeed());
  std::unique_ptr<Frontend> frontend = MakeFrontend(LogMelConfig(400, 160));
  std::vector<float> x = Noise(1000, rng);
  std::unique_ptr<FrontendState> state = frontend->NewState();
  std::vector<float> frames, reference_frames;
  ASSERT_TRUE(frontend->Process(state.get(), x.data(), 300, &frames).ok());
  std::vector<float> bad(x.begin() + 300, x.end());
  bad[123] = std::numeric_limits<float>::quiet_NaN();
  StatusOr<int> result = frontend->Process(state.get(), bad.data(), bad.size(), &frames);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("123"), std::string::npos) << result.status().message();
  // The good rest of the signal continues as if the bad chunk never came.
  ASSERT_TRUE(frontend->Process(state.get(), x.data() + 300, 700, &frames).ok());
  EXPECT_TRUE(BitwiseEqual(frames, Stream(*frontend, x, {})));
}

TEST(LogMelFrontendTest, RejectsConfigsItCannotRun) {
  ModelConfig mismatch = LogMelConfig(400, 160);
  mismatch.d_in = 80;
  ModelConfig no_hop = LogMelConfig(400, 0);
  ModelConfig short_fft = LogMelConfig(400, 160, 256);
  ModelConfig unknown = LogMelConfig(400, 160);
  unknown.frontend.type = "mfcc";
  for (const auto& [config, field] : {std::pair{mismatch, "d_in"},
                                      {no_hop, "hop_length"},
                                      {short_fft, "n_fft"},
                                      {unknown, "frontend.type"}}) {
    StatusOr<std::unique_ptr<Frontend>> frontend = CreateFrontend(config, CpuLogMel);
    ASSERT_FALSE(frontend.ok()) << field;
    EXPECT_EQ(frontend.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(frontend.status().message().find(field), std::string::npos)
        << frontend.status().message();
  }
}

// ---- none (frame input) ---------------------------------------------------------------------

TEST(FrameFrontendTest, CopiesFramesAndNormalisesWithMeanAndStd) {
  std::mt19937 rng(TestSeed());
  const int d = 5;
  const std::vector<float> mean = {0.5f, -1.0f, 2.0f, 0.0f, 3.0f};
  const std::vector<float> std = {3.0f, 0.7f, 1.3f, 5.0f, 0.1f};  // not powers of 2
  const std::vector<float> x = Noise(7 * d, rng);
  struct Case {
    std::vector<float> mean, std;
  };
  for (const Case& c : {Case{{}, {}}, Case{mean, {}}, Case{{}, std}, Case{mean, std}}) {
    std::unique_ptr<Frontend> frontend = MakeFrontend(FrameConfig(d, c.mean, c.std));
    EXPECT_FALSE(frontend->takes_samples());
    EXPECT_EQ(frontend->frame_dim(), d);
    EXPECT_EQ(frontend->carry_floats(), 0u);
    // Two chunks: 3 frames then 4.
    const std::vector<float> frames = Stream(*frontend, x, {3 * d});
    ASSERT_EQ(frames.size(), x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const float m = c.mean.empty() ? 0.0f : c.mean[i % d];
      const float s = c.std.empty() ? 1.0f : c.std[i % d];
      EXPECT_EQ(frames[i], (x[i] - m) / s) << i;
    }
  }
}

TEST(FrameFrontendTest, RejectsAPartialFrame) {
  std::unique_ptr<Frontend> frontend = MakeFrontend(FrameConfig(80));
  std::unique_ptr<FrontendState> state = frontend->NewState();
  std::vector<float> x(250, 0.25f), frames;
  StatusOr<int> result = frontend->Process(state.get(), x.data(), x.size(), &frames);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("250"), std::string::npos) << result.status().message();
  EXPECT_NE(result.status().message().find("80"), std::string::npos) << result.status().message();
  EXPECT_TRUE(frames.empty());
  EXPECT_EQ(state->frames_emitted(), 0);
  EXPECT_EQ(*frontend->Process(state.get(), x.data(), 240, &frames), 3);
}

TEST(FrameFrontendTest, RejectsBadMeanOrStd) {
  const std::vector<ModelConfig> bad = {FrameConfig(3, {1, 2}), FrameConfig(3, {}, {1, 0, 1}),
                                        FrameConfig(3, {}, {1, 1, -2})};
  for (const ModelConfig& config : bad) {
    StatusOr<std::unique_ptr<Frontend>> frontend = CreateFrontend(config, nullptr);
    ASSERT_FALSE(frontend.ok());
    EXPECT_EQ(frontend.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(frontend.status().message().find("frontend."), std::string::npos);
  }
}

// Log-mel features are host code on every backend (HostLogMel): whatever the backend and its
// threads, a frame's features equal the reference's (docs/design.md section 3) to float
// rounding, and the FFT kernel's do not depend on the thread count.
TEST(HostLogMelTest, EveryBackendGetsTheReferenceFeaturesOnTheHost) {
  std::mt19937 rng(TestSeed());
  LogMelParams params;  // the shipped 400/160, 512-point FFT, 40 mels
  params.win_length = 400;
  params.hop_length = 160;
  params.n_mels = 40;
  const LogMelPlan plan = LogMelPlan::Make(params);
  const int n_frames = 37;
  const std::vector<float> x = Noise(size_t(n_frames - 1) * 160 + 400, rng);
  const size_t n = size_t(n_frames) * 40;
  std::vector<float> reference(n), one_thread(n);
  reference::LogMel(plan, x.data(), n_frames, reference.data());
  const int one = 1;
  HostLogMel("cpu", &one)(plan, x.data(), n_frames, one_thread.data());

  const std::vector<std::pair<std::string, int>> cases = {
      {"reference", 1}, {"reference", 0}, {"cpu", 3}, {"cpu", 0}, {"cuda", 2}};
  for (const auto& [backend, threads] : cases) {
    SCOPED_TRACE(backend + " with " + std::to_string(threads) + " threads");
    std::vector<float> out(n, -1.0f);
    HostLogMel(backend, &threads)(plan, x.data(), n_frames, out.data());
    for (size_t i = 0; i < n; ++i) {
      ASSERT_NEAR(out[i], reference[i], 1e-5 * std::max(1.0f, std::abs(reference[i])))
          << "frame " << i / 40 << " mel " << i % 40;
    }
    if (backend != "reference") {
      EXPECT_EQ(std::memcmp(out.data(), one_thread.data(), 4 * n), 0);
    }
  }
}

}  // namespace
}  // namespace ssm
