// safetensors: F32 round trip, hand-made F16/BF16 files, and one error per kind of malformed file.
#include "server/model/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "tests/model/test_files.h"

namespace ssm {
namespace {

using testing_util::BadFile;
using testing_util::ExpectEachBadFileHasItsOwnError;
using testing_util::LittleEndian;
using testing_util::ReadBytes;
using testing_util::TempDir;
using testing_util::WriteBytes;

// A safetensors file from its header text and data bytes.
std::string MakeFile(const std::string& header, const std::string& data) {
  return LittleEndian(header.size(), 8) + header + data;
}

std::string HalfWords(const std::vector<uint16_t>& words) {
  std::string out;
  for (uint16_t w : words) out += LittleEndian(w, 2);
  return out;
}

TEST(SafetensorsTest, F32RoundTrip) {
  TempDir dir;
  const std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  const std::vector<float> b = {42.0f};
  const std::string path = dir.File("t.safetensors");
  // Given out of order: the writer sorts by name.
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"z.weight", {2, 3}, a.data()},
                                {"a.bias", {1}, b.data()},
                                {"m.empty", {0, 4}, nullptr},
                                {"s.scalar", {}, b.data()}},
                               {{"note", "hello"}})
                  .ok());

  const std::string bytes = ReadBytes(path);
  uint64_t header_bytes;
  std::memcpy(&header_bytes, bytes.data(), 8);
  EXPECT_EQ((8 + header_bytes) % 8, 0u);  // data starts aligned
  EXPECT_EQ(bytes.size(), 8 + header_bytes + (6 + 1 + 0 + 1) * 4);

  StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  const std::vector<TensorInfo>& tensors = (*file)->tensors();
  ASSERT_EQ(tensors.size(), 4u);
  EXPECT_EQ(tensors[0].name, "a.bias");
  EXPECT_EQ(tensors[1].name, "m.empty");
  EXPECT_EQ(tensors[2].name, "s.scalar");
  EXPECT_EQ(tensors[3].name, "z.weight");
  EXPECT_EQ(tensors[3].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tensors[3].dtype, DType::kF32);
  EXPECT_EQ(tensors[2].shape, std::vector<int64_t>{});
  EXPECT_EQ(tensors[2].numel(), 1);
  EXPECT_EQ((*file)->metadata().at("note"), "hello");

  EXPECT_EQ(*(*file)->ReadF32("z.weight"), a);
  EXPECT_EQ(*(*file)->ReadF32("a.bias"), b);
  EXPECT_EQ(*(*file)->ReadF32("s.scalar"), b);
  EXPECT_TRUE((*file)->ReadF32("m.empty")->empty());

  StatusOr<std::vector<float>> missing = (*file)->ReadF32("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no tensor 'nope'"), std::string::npos);
  EXPECT_EQ((*file)->Find("nope"), nullptr);
}

TEST(SafetensorsTest, HeaderIsPaddedWithSpaces) {
  TempDir dir;
  const float v = 1.0f;
  // Name lengths 1..8 hit every padding amount.
  for (int len = 1; len <= 8; ++len) {
    const std::string path = dir.File("p.safetensors");
    ASSERT_TRUE(WriteSafetensors(path, {{std::string(len, 'x'), {1}, &v}}).ok());
    const std::string bytes = ReadBytes(path);
    uint64_t header_bytes;
    std::memcpy(&header_bytes, bytes.data(), 8);
    ASSERT_EQ(header_bytes % 8, 0u);
    const std::string header = bytes.substr(8, header_bytes);
    const size_t close = header.rfind('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << header;
    EXPECT_TRUE(SafetensorsFile::Open(path).ok());
  }
}

TEST(SafetensorsTest, WriterRejectsBadInput) {
  TempDir dir;
  const float v = 1.0f;
  const std::string path = dir.File("w.safetensors");
  EXPECT_NE(WriteSafetensors(path, {{"a", {1}, &v}, {"a", {1}, &v}}).message().find("given twice"),
            std::string::npos);
  EXPECT_NE(WriteSafetensors(path, {{"a", {-1}, &v}}).message().find("negative shape"),
            std::string::npos);
  EXPECT_NE(WriteSafetensors(path, {{"", {1}, &v}}).message().find("invalid tensor name"),
            std::string::npos);
  EXPECT_NE(WriteSafetensors(path, {{"a", {2}, nullptr}}).message().find("has no data"),
            std::string::npos);
  EXPECT_FALSE(WriteSafetensors(dir.File("no/such/dir/x.safetensors"), {{"a", {1}, &v}}).ok());
}

TEST(SafetensorsTest, F16IsConvertedExactlyIncludingSubnormalsInfAndNan) {
  TempDir dir;
  const std::vector<uint16_t> words = {
      0x3C00,  // 1
      0xC000,  // -2
      0x3555,  // 0.333251953125
      0x7BFF,  // 65504, the largest finite half
      0x0400,  // 2^-14, the smallest normal
      0x0001,  // 2^-24, the smallest subnormal
      0x03FF,  // 1023 * 2^-24, the largest subnormal
      0x8000,  // -0
      0x7C00,  // +inf
      0xFC00,  // -inf
      0x7E00,  // nan
  };
  const std::string header = R"({"h":{"dtype":"F16","shape":[11],"data_offsets":[0,22]}})";
  const std::string path = dir.File("f16.safetensors");
  WriteBytes(path, MakeFile(header, HalfWords(words)));  // header not 8-aligned: unaligned data

  StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ((*file)->tensors()[0].dtype, DType::kF16);
  std::vector<float> v = *(*file)->ReadF32("h");
  ASSERT_EQ(v.size(), 11u);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -2.0f);
  EXPECT_EQ(v[2], 0.333251953125f);
  EXPECT_EQ(v[3], 65504.0f);
  EXPECT_EQ(v[4], std::ldexp(1.0f, -14));
  EXPECT_EQ(v[5], std::ldexp(1.0f, -24));
  EXPECT_EQ(v[6], std::ldexp(1023.0f, -24));
  EXPECT_EQ(v[7], 0.0f);
  EXPECT_TRUE(std::signbit(v[7]));
  EXPECT_EQ(v[8], std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[9], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(v[10]));
}

TEST(SafetensorsTest, BF16IsConvertedExactlyIncludingSubnormalsInfAndNan) {
  TempDir dir;
  const std::vector<uint16_t> words = {
      0x3F80,  // 1
      0xC040,  // -3
      0x4049,  // 3.140625
      0x0001,  // 2^-133, a float32 subnormal
      0x7F80,  // +inf
      0xFF80,  // -inf
      0x7FC0,  // nan
  };
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[7,1],"data_offsets":[0,14]}})";
  const std::string path = dir.File("bf16.safetensors");
  WriteBytes(path, MakeFile(header, HalfWords(words)));

  StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ((*file)->tensors()[0].dtype, DType::kBF16);
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  std::vector<float> v = *(*file)->ReadF32("b");
  ASSERT_EQ(v.size(), 7u);
  EXPECT_EQ(v[0], 1.0f);
  EXPECT_EQ(v[1], -3.0f);
  EXPECT_EQ(v[2], 3.140625f);
  EXPECT_EQ(v[3], std::ldexp(1.0f, -133));
  EXPECT_EQ(v[4], std::numeric_limits<float>::infinity());
  EXPECT_EQ(v[5], -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(v[6]));
}

// One malformed file and the message it must produce.
TEST(SafetensorsTest, EachMalformedFileHasItsOwnError) {
  const std::string eight(8, '\0');
  auto one = [](const std::string& entry) { return "{\"w\":" + entry + "}"; };
  const std::vector<BadFile> cases = {
      {"short file", "abcde", "file is 5 bytes, shorter than the 8-byte header length"},
      {"header beyond file", LittleEndian(1000, 8) + "{}",
       "header length 1000 exceeds the file (2 bytes after the 8-byte length)"},
      {"absurd header", LittleEndian(uint64_t{1} << 40, 8) + "{}",
       "header length 1099511627776 is larger than the"},
      {"not json", MakeFile("{\"w\": [", ""), "header: invalid JSON"},
      {"not object", MakeFile("[1, 2]", ""), "header: expected a JSON object, found [1,2]"},
      {"entry not object", MakeFile(one("3"), ""), "tensor 'w': expected an object, found 3"},
      {"missing dtype", MakeFile(one(R"({"shape":[2],"data_offsets":[0,8]})"), eight),
       "tensor 'w': missing \"dtype\""},
      {"missing shape", MakeFile(one(R"({"dtype":"F32","data_offsets":[0,8]})"), eight),
       "tensor 'w': missing \"shape\""},
      {"missing offsets", MakeFile(one(R"({"dtype":"F32","shape":[2]})"), eight),
       "tensor 'w': missing \"data_offsets\""},
      {"unsupported dtype",
       MakeFile(one(R"({"dtype":"F64","shape":[1],"data_offsets":[0,8]})"), eight),
       "tensor 'w': unsupported dtype \"F64\" (expected F32, F16 or BF16)"},
      {"negative shape",
       MakeFile(one(R"({"dtype":"F32","shape":[2,-1],"data_offsets":[0,8]})"), eight),
       "tensor 'w': shape[1]: expected a non-negative integer, found -1"},
      {"offsets form", MakeFile(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})"), eight),
       "tensor 'w': data_offsets: expected [begin, end]"},
      {"end before begin",
       MakeFile(one(R"({"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), eight),
       "tensor 'w': data_offsets [8, 0]: end is before begin"},
      {"offsets past data",
       MakeFile(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"), eight),
       "tensor 'w': data_offsets [0, 16]: extend past the end of the data section (8 bytes)"},
      {"byte length", MakeFile(one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), eight),
       "tensor 'w': data_offsets [0, 8] span 8 bytes, but shape [3] of F32 needs 12"},
      {"overlap",
       MakeFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                std::string(12, '\0')),
       "tensor 'b' (bytes [4, 12)) overlaps tensor 'a' (bytes [0, 8))"},
      {"hole",
       MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                std::string(12, '\0')),
       "bytes [4, 8) of the data section belong to no tensor (a hole before tensor 'b')"},
      {"trailing bytes",
       MakeFile(one(R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})"), eight),
       "bytes [4, 8) at the end of the data section belong to no tensor"},
      {"metadata value", MakeFile(R"({"__metadata__":{"k":1}})", ""),
       "__metadata__.k: expected a string, found 1"},
  };
  ExpectEachBadFileHasItsOwnError(cases, "bad.safetensors", [](const std::string& path) {
    return SafetensorsFile::Open(path).status();
  });
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  TempDir dir;
  StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open(dir.File("absent.safetensors"));
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kNotFound);
  EXPECT_NE(file.status().message().find("absent.safetensors"), std::string::npos);
  EXPECT_FALSE(SafetensorsFile::Open(dir.path()).ok());  // a directory
}

TEST(SafetensorsTest, EmptyDataSectionWithNoTensorsIsValid) {
  TempDir dir;
  const std::string path = dir.File("empty.safetensors");
  WriteBytes(path, MakeFile("{}      ", ""));
  StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_TRUE((*file)->tensors().empty());
}

}  // namespace
}  // namespace ssm
