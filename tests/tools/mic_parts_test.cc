// The parts of ssm-mic that need no sound card: the down-mix, the streaming resampler (equal to
// whole-signal resampling in any split), the speech segmenter, and the WAV recorder.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "clients/lib/audio_capture.h"
#include "clients/lib/speech_segments.h"
#include "clients/lib/stream_resampler.h"
#include "clients/lib/wav_recorder.h"
#include "common/io/audio_file.h"
#include "common/io/resample.h"

namespace ssm::client {
namespace {

std::vector<float> Noise(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.2f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

TEST(DownmixTest, MonoIsExactAndChannelsAreAveraged) {
  const std::vector<int16_t> mono = {-32768, -1, 0, 1, 32767};
  std::vector<float> out(mono.size());
  DownmixS16(mono.data(), mono.size(), 1, out.data());
  for (size_t i = 0; i < mono.size(); ++i) EXPECT_EQ(out[i], float(mono[i]) / 32768.0f);

  const std::vector<int16_t> stereo = {100, 100, -32768, 32767, 1000, 0, 7, 8};  // 4 frames
  out.assign(4, 0);
  DownmixS16(stereo.data(), 4, 2, out.data());
  EXPECT_EQ(out[0], 100.0f / 32768.0f);  // equal channels: exact
  EXPECT_FLOAT_EQ(out[1], -0.5f / 32768.0f);
  EXPECT_FLOAT_EQ(out[2], 500.0f / 32768.0f);
  EXPECT_FLOAT_EQ(out[3], 7.5f / 32768.0f);

  const std::vector<int16_t> four = {4, 8, 12, 16};  // 1 frame of 4 channels
  DownmixS16(four.data(), 1, 4, out.data());
  EXPECT_EQ(out[0], 10.0f / 32768.0f);
}

// Feeds `x` in pieces of `piece` samples, then flushes.
std::vector<float> ResampleInPieces(const std::vector<float>& x, int in_rate, int out_rate,
                                    size_t piece) {
  auto resampler = StreamResampler::Create(in_rate, out_rate);
  EXPECT_TRUE(resampler.ok()) << resampler.status().ToString();
  std::vector<float> out;
  for (size_t i = 0; i < x.size(); i += piece)
    EXPECT_TRUE((*resampler)->Process(x.data() + i, std::min(piece, x.size() - i), &out).ok());
  EXPECT_TRUE((*resampler)->Flush(&out).ok());
  return out;
}

TEST(StreamResamplerTest, AnySplitGivesTheWholeSignalResampleBitForBit) {
  for (const auto& [in_rate, out_rate] : std::vector<std::pair<int, int>>{
           {48000, 16000}, {44100, 16000}, {8000, 16000}, {22050, 16000}, {16000, 16000}}) {
    const std::vector<float> x = Noise(size_t(in_rate) * 2 + 77, uint32_t(in_rate));
    auto whole = Resample(x, in_rate, out_rate);
    ASSERT_TRUE(whole.ok());
    for (size_t piece : {size_t(1), size_t(441), size_t(4800), x.size()}) {
      const std::vector<float> pieces = ResampleInPieces(x, in_rate, out_rate, piece);
      ASSERT_EQ(pieces.size(), whole->size()) << in_rate << " Hz, pieces of " << piece;
      for (size_t i = 0; i < pieces.size(); ++i)
        ASSERT_EQ(pieces[i], (*whole)[i])
            << in_rate << " Hz, pieces of " << piece << ", sample " << i;
    }
  }
}

TEST(StreamResamplerTest, BadRatesAndProcessAfterFlushAreErrors) {
  EXPECT_EQ(StreamResampler::Create(0, 16000).status().code(), StatusCode::kInvalidArgument);
  auto resampler = StreamResampler::Create(48000, 16000);
  ASSERT_TRUE(resampler.ok());
  std::vector<float> out;
  ASSERT_TRUE((*resampler)->Flush(&out).ok());
  const float x = 0;
  EXPECT_EQ((*resampler)->Process(&x, 1, &out).code(), StatusCode::kFailedPrecondition);
}

// Runs `probabilities` through a segmenter at 100 frames/s.
std::vector<SpeechSegment> Segments(const std::vector<float>& probabilities,
                                    double min_speech_s = 0.03, double min_silence_s = 0.05) {
  SegmenterOptions options;
  options.min_speech_s = min_speech_s;
  options.min_silence_s = min_silence_s;
  EXPECT_TRUE(options.Validate().ok());
  SpeechSegmenter segmenter(options);
  std::vector<SpeechSegment> found;
  for (float p : probabilities)
    if (auto s = segmenter.Push(p)) found.push_back(*s);
  if (auto s = segmenter.Finish()) found.push_back(*s);
  return found;
}

// Frames from a pattern: '#' = 0.9 (speech), '.' = 0.1.
std::vector<float> Pattern(const std::string& pattern) {
  std::vector<float> p;
  for (char c : pattern) p.push_back(c == '#' ? 0.9f : 0.1f);
  return p;
}

TEST(SpeechSegmenterTest, SegmentsStartAtTheFirstAndEndAfterTheLastSpeechFrame) {
  // min speech 3 frames, min silence 5 frames.
  const auto found = Segments(Pattern("..#####......####.........."));
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].first_frame, 2);
  EXPECT_EQ(found[0].end_frame, 7);
  EXPECT_DOUBLE_EQ(found[0].start_s, 0.02);
  EXPECT_DOUBLE_EQ(found[0].end_s, 0.07);
  EXPECT_EQ(found[1].first_frame, 13);
  EXPECT_EQ(found[1].end_frame, 17);
}

TEST(SpeechSegmenterTest, ShortBurstsAreDroppedAndShortPausesBridged) {
  const auto found = Segments(Pattern("..##....#.....#####...####..........##"));
  ASSERT_EQ(found.size(), 1u);  // "##" and "#" too short; the 3-frame pause bridged
  EXPECT_EQ(found[0].first_frame, 14);
  EXPECT_EQ(found[0].end_frame, 26);
}

TEST(SpeechSegmenterTest, MeanAndPeakCoverTheSegmentsFrames) {
  const auto found = Segments({0.1f, 0.6f, 0.8f, 1.0f, 0.2f, 0.7f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].first_frame, 1);
  EXPECT_EQ(found[0].end_frame, 6);  // the 0.2 frame is a bridged pause
  EXPECT_NEAR(found[0].mean_probability, (0.6 + 0.8 + 1.0 + 0.2 + 0.7) / 5, 1e-6);
  EXPECT_FLOAT_EQ(float(found[0].peak_probability), 1.0f);
}

TEST(SpeechSegmenterTest, FinishClosesAnOpenSegmentAtItsLastSpeechFrame) {
  const auto found = Segments(Pattern("....######.."));
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].first_frame, 4);
  EXPECT_EQ(found[0].end_frame, 10);
  EXPECT_TRUE(Segments(Pattern("....##")).empty());  // shorter than min speech
}

TEST(SpeechSegmenterTest, ThresholdIsInclusiveAndOptionsAreValidated) {
  const auto found = Segments({0.5f, 0.5f, 0.5f}, 0.0, 0.0);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].end_frame, 3);
  SegmenterOptions bad;
  bad.threshold = 0;
  EXPECT_NE(bad.Validate().message().find("threshold"), std::string::npos);
  bad = SegmenterOptions();
  bad.min_silence_s = -1;
  EXPECT_NE(bad.Validate().message().find("min_silence_s"), std::string::npos);
}

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/mic_parts_" + std::to_string(getpid()) + "_" + name;
}

TEST(WavRecorderTest, SixteenBitSamplesReadBackExactlyAcrossWrites) {
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 67 % 65536) - 32768) / 32768.0f;
  const std::string path = TempPath("s16.wav");
  auto recorder = WavRecorder::Create(path, 48000, /*pcm16=*/true);
  ASSERT_TRUE(recorder.ok()) << recorder.status().ToString();
  ASSERT_TRUE((*recorder)->Write(x.data(), 300).ok());
  ASSERT_TRUE((*recorder)->Write(x.data() + 300, 700).ok());
  EXPECT_EQ((*recorder)->samples_written(), 1000);
  ASSERT_TRUE((*recorder)->Close().ok());
  auto audio = ReadAudio(path);
  ASSERT_TRUE(audio.ok()) << audio.status().ToString();
  EXPECT_EQ(audio->sample_rate, 48000);
  EXPECT_EQ(audio->samples, x);
  std::remove(path.c_str());
}

TEST(WavRecorderTest, FloatFilesKeepEveryValueAndBadPathsAreErrors) {
  const std::vector<float> x = Noise(500, 3);
  const std::string path = TempPath("f32.wav");
  auto recorder = WavRecorder::Create(path, 44100, /*pcm16=*/false);
  ASSERT_TRUE(recorder.ok());
  ASSERT_TRUE((*recorder)->Write(x.data(), x.size()).ok());
  ASSERT_TRUE((*recorder)->Close().ok());
  auto audio = ReadAudio(path);
  ASSERT_TRUE(audio.ok());
  EXPECT_EQ(audio->samples, x);
  std::remove(path.c_str());
  auto bad = WavRecorder::Create("/nonexistent-dir/x.wav", 16000, true);
  EXPECT_NE(bad.status().message().find("/nonexistent-dir/x.wav"), std::string::npos);
}

}  // namespace
}  // namespace ssm::client
