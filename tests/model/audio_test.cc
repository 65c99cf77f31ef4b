// Audio files: WAV round trip, stereo down-mix, raw PCM, and bad files.
#include <gtest/gtest.h>

#include <cmath>

#include "common/io/audio_file.h"
#include "tests/model/test_files.h"

namespace ssm {
namespace {

using testing_util::LittleEndian;
using testing_util::TempDir;
using testing_util::WriteBytes;

// A canonical 44-byte-header PCM16 WAV file, written by hand (independent of libsndfile).
std::string MakeWav16(int channels, int sample_rate, const std::vector<int16_t>& interleaved) {
  const uint32_t data_bytes = interleaved.size() * 2;
  std::string data;
  for (int16_t s : interleaved) data += LittleEndian(static_cast<uint16_t>(s), 2);
  return "RIFF" + LittleEndian(36 + data_bytes, 4) + "WAVE" + "fmt " + LittleEndian(16, 4) +
         LittleEndian(1, 2) /* PCM */ + LittleEndian(channels, 2) + LittleEndian(sample_rate, 4) +
         LittleEndian(sample_rate * channels * 2, 4) /* bytes/s */ +
         LittleEndian(channels * 2, 2) /* block align */ + LittleEndian(16, 2) + "data" +
         LittleEndian(data_bytes, 4) + data;
}

TEST(AudioTest, WavRoundTripIsExactForPcm16Values) {
  TempDir dir;
  std::vector<float> samples;
  for (int k : {0, 1, -1, 1000, -32768, 32767, 12345}) samples.push_back(k / 32768.0f);
  const std::string path = dir.File("a.wav");
  ASSERT_TRUE(WriteWav(path, samples.data(), samples.size(), 16000).ok());
  StatusOr<Audio> audio = ReadAudio(path);
  ASSERT_TRUE(audio.ok()) << audio.status().ToString();
  EXPECT_EQ(audio->sample_rate, 16000);
  EXPECT_EQ(audio->channels_in_file, 1);
  EXPECT_EQ(audio->samples, samples);
}

TEST(AudioTest, WriteWavRoundsAndClips) {
  TempDir dir;
  const std::vector<float> samples = {1.5f, -2.0f, 0.3f};
  const std::string path = dir.File("clip.wav");
  ASSERT_TRUE(WriteWav(path, samples.data(), samples.size(), 8000).ok());
  StatusOr<Audio> audio = ReadAudio(path);
  ASSERT_TRUE(audio.ok()) << audio.status().ToString();
  EXPECT_EQ(audio->samples[0], 32767 / 32768.0f);
  EXPECT_EQ(audio->samples[1], -1.0f);
  EXPECT_EQ(audio->samples[2], std::nearbyint(0.3f * 32768) / 32768.0f);
}

TEST(AudioTest, StereoIsDownMixedByAveraging) {
  TempDir dir;
  const std::string path = dir.File("stereo.wav");
  // Frames (L, R): (16384, 0), (-8192, -8192), (32767, -32768).
  WriteBytes(path, MakeWav16(2, 44100, {16384, 0, -8192, -8192, 32767, -32768}));
  StatusOr<Audio> audio = ReadAudio(path);
  ASSERT_TRUE(audio.ok()) << audio.status().ToString();
  EXPECT_EQ(audio->sample_rate, 44100);
  EXPECT_EQ(audio->channels_in_file, 2);
  EXPECT_EQ(audio->samples, (std::vector<float>{0.25f, -0.25f, -0.5f / 32768.0f}));
}

TEST(AudioTest, BadFilesAndWrites) {
  TempDir dir;
  StatusOr<Audio> missing = ReadAudio(dir.File("absent.wav"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("absent.wav"), std::string::npos);

  WriteBytes(dir.File("text.wav"), "this is not audio at all, just some text bytes");
  StatusOr<Audio> garbage = ReadAudio(dir.File("text.wav"));
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(garbage.status().message().find(dir.File("text.wav") + ": cannot read as audio"),
            std::string::npos)
      << garbage.status().message();

  const std::vector<float> bad = {0.0f, NAN};
  Status nan = WriteWav(dir.File("nan.wav"), bad.data(), bad.size(), 16000);
  EXPECT_NE(nan.message().find("sample 1 is nan"), std::string::npos) << nan.message();
  EXPECT_FALSE(WriteWav(dir.File("rate.wav"), bad.data(), 1, 0).ok());
  EXPECT_FALSE(WriteWav(dir.File("no/dir/x.wav"), bad.data(), 1, 16000).ok());
}

// A FLAC file of only its STREAMINFO block, which claims 2^36 - 1 frames (fuzz finding,
// tests/fuzz/corpus/audio/regress-flac-huge-frame-count): the claim once sized the sample
// vector up front, a 275 GB allocation (std::bad_alloc, or 16 GB for the fuzzer's 4e9 frames).
TEST(AudioTest, HeaderFrameCountDoesNotSizeTheAllocation) {
  TempDir dir;
  const uint64_t fields = uint64_t(16000) << 44 | uint64_t(0) << 41 /* 1 channel */ |
                          uint64_t(15) << 36 /* 16 bits */ | ((uint64_t(1) << 36) - 1);
  std::string big_endian;
  for (int i = 7; i >= 0; --i) big_endian.push_back(static_cast<char>(fields >> (8 * i)));
  const std::string streaminfo = std::string("\x10\x00\x10\x00", 4) /* block sizes */ +
                                 std::string(6, '\0') /* frame sizes unknown */ + big_endian +
                                 std::string(16, '\0') /* MD5 */;
  ASSERT_EQ(streaminfo.size(), 34u);
  const std::string path = dir.File("claims.flac");
  WriteBytes(path, std::string("fLaC\x80\x00\x00\x22", 8) + streaminfo);
  StatusOr<Audio> audio = ReadAudio(path);  // threw std::bad_alloc before
  ASSERT_TRUE(audio.ok()) << audio.status().ToString();
  EXPECT_EQ(audio->sample_rate, 16000);
  EXPECT_TRUE(audio->samples.empty());
  EXPECT_LE(audio->samples.capacity(), size_t(1) << 20);
}

TEST(AudioTest, RawPcm) {
  TempDir dir;
  WriteBytes(dir.File("s16.raw"),
             LittleEndian(16384, 2) + LittleEndian(0x8000, 2) + LittleEndian(0x7fff, 2));
  StatusOr<std::vector<float>> s16 = ReadRawPcm(dir.File("s16.raw"), "s16le");
  ASSERT_TRUE(s16.ok()) << s16.status().ToString();
  EXPECT_EQ(*s16, (std::vector<float>{0.5f, -1.0f, 32767 / 32768.0f}));

  const std::vector<float> f = {0.25f, -3.0f};
  WriteBytes(dir.File("f32.raw"), std::string(reinterpret_cast<const char*>(f.data()), 8));
  StatusOr<std::vector<float>> f32 = ReadRawPcm(dir.File("f32.raw"), "f32le");
  ASSERT_TRUE(f32.ok()) << f32.status().ToString();
  EXPECT_EQ(*f32, f);

  WriteBytes(dir.File("odd.raw"), "abc");
  EXPECT_NE(ReadRawPcm(dir.File("odd.raw"), "s16le")
                .status()
                .message()
                .find("3 bytes is not a whole number of 2-byte s16le samples"),
            std::string::npos);
  EXPECT_NE(
      ReadRawPcm(dir.File("s16.raw"), "u8").status().message().find("expected s16le or f32le"),
      std::string::npos);
  EXPECT_EQ(ReadRawPcm(dir.File("absent.raw"), "s16le").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace ssm
