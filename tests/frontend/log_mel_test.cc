// Log-mel features (docs/design.md §3): the plan's tables against the formulas, the reference vs an
// independent long-double DFT, and the cpu kernel against the reference.
#include "kernels/cpu/log_mel.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "kernels/base/log_mel_plan.h"
#include "kernels/reference/log_mel.h"

namespace ssm {
namespace {

constexpr long double kPiL = 3.141592653589793238462643383279502884L;

// cpu vs reference. Features are natural logs, so an absolute error in a feature is the relative
// error of its mel energy, the quantity both compute; features far from 0 (ln(1e-10) = -23 at the
// floor) are compared relative to their own size, like the float rounding of the value itself:
// |cpu - ref| <= kCpuMaxErr * max(1, |ref|). The design's contract is 1e-5.
constexpr double kCpuMaxErr = 1e-5;
// reference (double, rounded to float) vs the long-double test DFT: float rounding and a little.
constexpr double kRefMaxErr = 2e-7;

// Normalised error of one feature, as above.
double FeatureError(float got, double want) {
  return std::abs(got - want) / std::max(1.0, std::abs(want));
}

// A fresh seed per run, printed so that a failure can be replayed with SSM_TEST_SEED=<seed>.
uint32_t TestSeed() {
  const char* env = std::getenv("SSM_TEST_SEED");
  const uint32_t seed = env ? uint32_t(std::strtoul(env, nullptr, 10)) : std::random_device{}();
  std::printf("[ seed     ] SSM_TEST_SEED=%u\n", seed);
  return seed;
}

LogMelParams Params(int sample_rate, int win, int hop, int n_fft, int n_mels, double f_min,
                    double f_max) {
  LogMelParams p;
  p.sample_rate = sample_rate;
  p.win_length = win;
  p.hop_length = hop;
  p.n_fft = n_fft;
  p.n_mels = n_mels;
  p.f_min = f_min;
  p.f_max = f_max;
  return p;
}

std::string Describe(const LogMelParams& p) {
  return "sr " + std::to_string(p.sample_rate) + " win " + std::to_string(p.win_length) + " hop " +
         std::to_string(p.hop_length) + " n_fft " + std::to_string(p.n_fft) + " n_mels " +
         std::to_string(p.n_mels) + " f " + std::to_string(p.f_min) + ".." +
         std::to_string(p.f_max);
}

// Samples for n_frames frames: Gaussian noise of the given rms, clipped to full scale [-1, 1].
std::vector<float> Noise(const LogMelParams& p, int n_frames, double rms, std::mt19937& rng) {
  std::normal_distribution<double> normal(0.0, rms);
  std::vector<float> x(size_t(n_frames - 1) * p.hop_length + p.win_length);
  for (float& v : x) v = float(std::clamp(normal(rng), -1.0, 1.0));
  return x;
}

// The filter weight of docs/design.md §3 at bin k, straight from the formulas, in long double.
long double FormulaWeight(const LogMelParams& p, int j, int k) {
  const auto mel = [](long double f) { return 2595.0L * std::log10(1.0L + f / 700.0L); };
  const auto hz = [](long double m) { return 700.0L * (std::pow(10.0L, m / 2595.0L) - 1.0L); };
  long double f[3];
  for (int i = 0; i < 3; ++i) {
    f[i] = hz(mel(p.f_min) + (mel(p.f_max) - mel(p.f_min)) * (j + i) / (p.n_mels + 1));
  }
  const long double freq = (long double)k * p.sample_rate / p.n_fft;
  return std::max(0.0L, std::min((freq - f[0]) / (f[1] - f[0]), (f[2] - freq) / (f[2] - f[1])));
}

double PlanWeight(const LogMelPlan& plan, int j, int k) {
  const MelFilter& f = plan.filters[j];
  const int b = k - f.first_bin;
  return b >= 0 && b < int(f.weights.size()) ? f.weights[b] : 0.0;
}

// ---- the plan -------------------------------------------------------------------------------

TEST(LogMelPlanTest, WindowIsPeriodicHann) {
  const LogMelPlan plan = LogMelPlan::Make(Params(16000, 400, 160, 512, 80, 0, 8000));
  ASSERT_EQ(plan.window.size(), 400u);
  EXPECT_EQ(plan.window[0], 0.0);
  EXPECT_NEAR(plan.window[100], 0.5, 1e-15);  // quarter period
  EXPECT_NEAR(plan.window[200], 1.0, 1e-15);  // half period: periodic, not symmetric, Hann
  for (int i = 1; i < 400; ++i) EXPECT_NEAR(plan.window[i], plan.window[400 - i], 1e-15) << i;
}

TEST(LogMelPlanTest, FiltersMatchHandComputedValues) {
  // 16 kHz, n_fft 512 (31.25 Hz bins), 80 mels over 0..8000 Hz; values worked out separately.
  const LogMelPlan plan = LogMelPlan::Make(Params(16000, 400, 160, 512, 80, 0, 8000));
  ASSERT_EQ(plan.filters.size(), 80u);
  struct Expected {
    int filter, first_bin, n_bins;
    std::vector<double> leading_weights;
  };
  const Expected cases[] = {
      {0, 1, 1, {0.5998987898474759}},  // corners 0, 22.12, 44.94 Hz: only bin 1 (31.25 Hz)
      {1, 1, 2, {0.40010121015252403, 0.2540032627857972}},
      {40, 56, 5, {0.26437358635434033, 0.6713869686997849, 0.9240012176141162}},
      {79, 240, 16, {0.09613597415859194, 0.21710248164215357}},  // ends before 8000 Hz (bin 256)
  };
  for (const Expected& e : cases) {
    SCOPED_TRACE("filter " + std::to_string(e.filter));
    const MelFilter& f = plan.filters[e.filter];
    EXPECT_EQ(f.first_bin, e.first_bin);
    ASSERT_EQ(int(f.weights.size()), e.n_bins);
    for (size_t b = 0; b < e.leading_weights.size(); ++b) {
      EXPECT_NEAR(f.weights[b], e.leading_weights[b], 1e-12) << "bin " << f.first_bin + b;
    }
  }
}

TEST(LogMelPlanTest, FiltersMatchFormulaOnEveryBin) {
  for (const LogMelParams& p :
       {Params(16000, 400, 160, 512, 80, 0, 8000), Params(16000, 200, 80, 256, 40, 50, 7000),
        Params(22050, 1024, 256, 2048, 128, 20, 11025),
        Params(8000, 200, 80, 255, 23, 100, 3500)}) {
    SCOPED_TRACE(Describe(p));
    const LogMelPlan plan = LogMelPlan::Make(p);
    ASSERT_EQ(int(plan.filters.size()), p.n_mels);
    for (int j = 0; j < p.n_mels; ++j) {
      const MelFilter& f = plan.filters[j];
      // Stored tight: the range starts and ends on nonzero weights and fits the spectrum.
      if (!f.weights.empty()) {
        EXPECT_GT(f.weights.front(), 0.0) << j;
        EXPECT_GT(f.weights.back(), 0.0) << j;
        EXPECT_LE(f.first_bin + int(f.weights.size()), plan.n_bins()) << j;
      }
      for (int k = 0; k < plan.n_bins(); ++k) {
        EXPECT_NEAR(PlanWeight(plan, j, k), double(FormulaWeight(p, j, k)), 1e-12)
            << "filter " << j << " bin " << k;
      }
    }
  }
}

TEST(LogMelPlanTest, NeighbouringFiltersSumToOneBetweenOuterPeaks) {
  // HTK triangles without area normalisation form a partition of unity between the first and the
  // last peak: a property of the construction, not a re-run of it.
  const LogMelParams p = Params(16000, 400, 160, 512, 80, 0, 8000);
  const LogMelPlan plan = LogMelPlan::Make(p);
  const auto mel = [](double f) { return 2595.0 * std::log10(1.0 + f / 700.0); };
  const auto hz = [](double m) { return 700.0 * (std::pow(10.0, m / 2595.0) - 1.0); };
  const double first_peak = hz(mel(p.f_max) * 1 / (p.n_mels + 1));
  const double last_peak = hz(mel(p.f_max) * p.n_mels / (p.n_mels + 1));
  int checked = 0;
  for (int k = 0; k < plan.n_bins(); ++k) {
    const double freq = double(k) * p.sample_rate / p.n_fft;
    if (freq < first_peak || freq > last_peak) continue;
    double sum = 0;
    for (int j = 0; j < p.n_mels; ++j) sum += PlanWeight(plan, j, k);
    EXPECT_NEAR(sum, 1.0, 1e-12) << "bin " << k;
    ++checked;
  }
  EXPECT_GT(checked, 200);
}

TEST(LogMelPlanTest, FilterNarrowerThanABinIsEmptyAndGivesTheFloor) {
  // 250 Hz bins: the lowest mel filters fall between two bins.
  LogMelParams p = Params(16000, 64, 32, 64, 40, 0, 8000);
  p.log_floor = 1e-6;
  const LogMelPlan plan = LogMelPlan::Make(p);
  ASSERT_TRUE(plan.filters[0].weights.empty());
  std::mt19937 rng(TestSeed());
  const std::vector<float> x = Noise(p, 3, 0.3, rng);
  std::vector<float> ref(3 * 40), cpu(3 * 40);
  reference::LogMel(plan, x.data(), 3, ref.data());
  cpu::LogMel(plan, x.data(), 3, cpu.data(), 1);
  for (int t = 0; t < 3; ++t) {
    EXPECT_FLOAT_EQ(ref[t * 40], std::log(1e-6f));
    EXPECT_FLOAT_EQ(cpu[t * 40], std::log(1e-6f));
  }
}

// ---- the reference --------------------------------------------------------------------------

// docs/design.md §3 written out independently: window, DFT and filters from the formulas (long
// double).
std::vector<long double> IndependentLogMel(const LogMelParams& p, const float* frame) {
  const int n_bins = p.n_fft / 2 + 1;
  std::vector<long double> power(n_bins);
  for (int k = 0; k < n_bins; ++k) {
    std::complex<long double> sum = 0;
    for (int i = 0; i < p.win_length; ++i) {
      const long double w = 0.5L - 0.5L * std::cos(2 * kPiL * i / p.win_length);
      sum += w * (long double)frame[i] * std::polar(1.0L, -2 * kPiL * i * k / p.n_fft);
    }
    power[k] = std::norm(sum);
  }
  std::vector<long double> features(p.n_mels);
  for (int j = 0; j < p.n_mels; ++j) {
    long double energy = 0;
    for (int k = 0; k < n_bins; ++k) energy += FormulaWeight(p, j, k) * power[k];
    features[j] = std::log(std::max(energy, (long double)p.log_floor));
  }
  return features;
}

TEST(ReferenceLogMelTest, MatchesIndependentLongDoubleDft) {
  std::mt19937 rng(TestSeed());
  for (const LogMelParams& p :
       {Params(16000, 400, 160, 512, 80, 0, 8000), Params(16000, 200, 80, 256, 40, 50, 7000),
        Params(8000, 240, 300, 255, 23, 100, 3500)}) {
    SCOPED_TRACE(Describe(p));
    const LogMelPlan plan = LogMelPlan::Make(p);
    const int n_frames = 3;
    const std::vector<float> x = Noise(p, n_frames, 0.2, rng);
    std::vector<float> out(size_t(n_frames) * p.n_mels);
    reference::LogMel(plan, x.data(), n_frames, out.data());
    for (int t = 0; t < n_frames; ++t) {
      const std::vector<long double> want = IndependentLogMel(p, x.data() + t * p.hop_length);
      for (int j = 0; j < p.n_mels; ++j) {
        EXPECT_LE(FeatureError(out[t * p.n_mels + j], double(want[j])), kRefMaxErr)
            << "frame " << t << " mel " << j << ": " << out[t * p.n_mels + j] << " vs "
            << double(want[j]);
      }
    }
  }
}

// ---- the cpu kernel -------------------------------------------------------------------------

// Largest normalised cpu-vs-reference error over all features.
double CpuVsReferenceError(const LogMelPlan& plan, const std::vector<float>& x, int n_frames,
                           int threads) {
  const int n_mels = plan.params.n_mels;
  std::vector<float> ref(size_t(n_frames) * n_mels), cpu(ref.size());
  reference::LogMel(plan, x.data(), n_frames, ref.data());
  cpu::LogMel(plan, x.data(), n_frames, cpu.data(), threads);
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, FeatureError(cpu[i], ref[i]));
  return worst;
}

TEST(CpuLogMelTest, MatchesReferenceOnRealAndOddShapes) {
  std::mt19937 rng(TestSeed());
  struct Case {
    LogMelParams params;
    int n_frames;
  };
  const Case cases[] = {
      {Params(16000, 400, 160, 512, 80, 0, 8000), 1},  // the shipped frontend
      {Params(16000, 400, 160, 512, 80, 0, 8000), 157},
      {Params(16000, 200, 80, 256, 40, 50, 7000), 1},  // odd sizes, f_min > 0, f_max < sr/2
      {Params(16000, 200, 80, 256, 40, 50, 7000), 93},
      {Params(22050, 1024, 256, 1024, 128, 20, 11025), 9},  // win == n_fft
      {Params(8000, 240, 300, 255, 23, 100, 3500), 11},     // odd n_fft, hop > win
      {Params(16000, 200, 160, 250, 40, 0, 8000), 7},       // n_fft % 4 == 2
  };
  for (const Case& c : cases) {
    const LogMelPlan plan = LogMelPlan::Make(c.params);
    for (double rms : {0.5, 0.05, 1e-4}) {  // loud (clipping at full scale) to quiet
      SCOPED_TRACE(Describe(c.params) + " frames " + std::to_string(c.n_frames) + " rms " +
                   std::to_string(rms));
      const std::vector<float> x = Noise(c.params, c.n_frames, rms, rng);
      EXPECT_LE(CpuVsReferenceError(plan, x, c.n_frames, 3), kCpuMaxErr);
    }
  }
}

TEST(CpuLogMelTest, MatchesReferenceAroundTheLogFloor) {
  // Mel energies ~ win * rms^2 * (sum of weights) / 2.7: rms 1e-6 puts them around 1e-10, so some
  // features are clamped and some are just above the floor; rms 1e-8 clamps them all.
  std::mt19937 rng(TestSeed());
  const LogMelParams p = Params(16000, 400, 160, 512, 80, 0, 8000);
  const LogMelPlan plan = LogMelPlan::Make(p);
  for (double rms : {3e-6, 1e-6, 3e-7, 1e-8}) {
    SCOPED_TRACE("rms " + std::to_string(rms));
    const std::vector<float> x = Noise(p, 40, rms, rng);
    EXPECT_LE(CpuVsReferenceError(plan, x, 40, 2), kCpuMaxErr);
  }
  std::vector<float> out(40 * 80);
  cpu::LogMel(plan, Noise(p, 40, 1e-8, rng).data(), 40, out.data(), 1);
  for (float v : out) ASSERT_FLOAT_EQ(v, std::log(1e-10f));
}

TEST(CpuLogMelTest, MatchesReferenceOnBandsFarBelowTheLoudestOne) {
  // The case a float FFT gets wrong: its rounding error is relative to the frame's total energy,
  // so quiet bands next to a loud tone or DC offset lose digits (1.5e-3 measured for the tone).
  std::mt19937 rng(TestSeed());
  std::normal_distribution<double> normal;
  const LogMelParams p = Params(16000, 400, 160, 512, 80, 0, 8000);
  const LogMelPlan plan = LogMelPlan::Make(p);
  const int n_frames = 30;
  std::vector<float> tone(size_t(n_frames - 1) * p.hop_length + p.win_length), dc(tone.size());
  for (size_t i = 0; i < tone.size(); ++i) {
    tone[i] = float(0.9 * std::sin(2 * kPiL * 440 * i / p.sample_rate) + 1e-5 * normal(rng));
    dc[i] = float(0.5 + 1e-4 * normal(rng));
  }
  EXPECT_LE(CpuVsReferenceError(plan, tone, n_frames, 2), kCpuMaxErr) << "440 Hz tone";
  EXPECT_LE(CpuVsReferenceError(plan, dc, n_frames, 2), kCpuMaxErr) << "DC offset";
}

TEST(CpuLogMelTest, FrameResultIsBitwiseIndependentOfBatchThreadsAndAlignment) {
  std::mt19937 rng(TestSeed());
  const LogMelParams p = Params(16000, 400, 160, 512, 80, 0, 8000);
  const LogMelPlan plan = LogMelPlan::Make(p);
  const int n_frames = 37;
  const std::vector<float> x = Noise(p, n_frames, 0.1, rng);
  std::vector<float> batched(n_frames * 80), threaded(n_frames * 80);
  cpu::LogMel(plan, x.data(), n_frames, batched.data(), 1);
  cpu::LogMel(plan, x.data(), n_frames, threaded.data(), 4);
  EXPECT_EQ(0, std::memcmp(batched.data(), threaded.data(), batched.size() * sizeof(float)));
  for (int t = 0; t < n_frames; ++t) {
    // The frame alone, copied to a buffer offset by t floats (varying alignment).
    std::vector<float> copy(t + p.win_length);
    std::copy_n(x.data() + t * p.hop_length, p.win_length, copy.data() + t);
    float single[80];
    cpu::LogMel(plan, copy.data() + t, 1, single, 1);
    EXPECT_EQ(0, std::memcmp(single, batched.data() + t * 80, sizeof(single))) << "frame " << t;
  }
}

TEST(CpuLogMelTest, ConcurrentCallsWithDifferentPlansAgree) {
  std::mt19937 rng(TestSeed());
  const LogMelPlan plans[] = {LogMelPlan::Make(Params(16000, 400, 160, 512, 80, 0, 8000)),
                              LogMelPlan::Make(Params(16000, 200, 80, 256, 40, 50, 7000))};
  std::vector<float> inputs[2], serial[2];
  for (int i = 0; i < 2; ++i) {
    inputs[i] = Noise(plans[i].params, 50, 0.1, rng);
    serial[i].resize(50 * plans[i].params.n_mels);
    cpu::LogMel(plans[i], inputs[i].data(), 50, serial[i].data(), 1);
  }
  std::vector<std::thread> threads;
  std::vector<std::vector<float>> outs(8);
  for (int c = 0; c < 8; ++c) {
    threads.emplace_back([&, c] {
      const int i = c % 2;
      outs[c].resize(serial[i].size());
      for (int rep = 0; rep < 20; ++rep) {
        cpu::LogMel(plans[i], inputs[i].data(), 50, outs[c].data(), 1 + rep % 2);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  for (int c = 0; c < 8; ++c) EXPECT_EQ(outs[c], serial[c % 2]) << "caller " << c;
}

}  // namespace
}  // namespace ssm
