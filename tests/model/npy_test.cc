// .npy: float32 round trips, hand-written headers of other versions and dtypes, bad files.
#include "common/io/npy.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "tests/model/test_files.h"

namespace ssm {
namespace {

using testing_util::BadFile;
using testing_util::ExpectEachBadFileHasItsOwnError;
using testing_util::LittleEndian;
using testing_util::ReadBytes;
using testing_util::TempDir;
using testing_util::WriteBytes;

// A .npy file of format `version` from its header dict and data bytes (no padding needed).
std::string MakeNpy(int version, const std::string& dict, const std::string& data) {
  const std::string header = dict + "\n";
  return std::string("\x93NUMPY", 6) + static_cast<char>(version) + '\0' +
         LittleEndian(header.size(), version == 1 ? 2 : 4) + header + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

TEST(NpyTest, Float32RoundTripForSeveralShapes) {
  TempDir dir;
  const std::vector<float> data = {1.0f, -2.5f, 3.0f, 1e-20f, 7.0f, -0.0f};
  for (const std::vector<int64_t>& shape :
       {std::vector<int64_t>{2, 3}, {6}, {1, 2, 3}, {}, {0, 4}}) {
    const std::string path = dir.File("a.npy");
    ASSERT_TRUE(WriteNpy(path, shape, data.data()).ok());
    StatusOr<NpyArray> read = ReadNpy(path);
    ASSERT_TRUE(read.ok()) << read.status().ToString();
    EXPECT_EQ(read->shape, shape);
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    EXPECT_EQ(read->data, std::vector<float>(data.begin(), data.begin() + numel));
    // numpy's layout: the preamble is padded to a multiple of 64 bytes and ends in '\n'.
    const std::string bytes = ReadBytes(path);
    const size_t preamble = bytes.size() - numel * 4;
    EXPECT_EQ(preamble % 64, 0u);
    EXPECT_EQ(bytes[preamble - 1], '\n');
  }
  ASSERT_TRUE(WriteNpy(dir.File("b.npy"), {6}, data.data()).ok());
  EXPECT_NE(ReadBytes(dir.File("b.npy")).find("'shape': (6,)"), std::string::npos);
}

TEST(NpyTest, ReadsFloat64AndVersion2Headers) {
  TempDir dir;
  const std::vector<double> f8 = {0.5, -1.25, 1e300};
  WriteBytes(dir.File("f8.npy"),
             MakeNpy(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", Bytes(f8)));
  StatusOr<NpyArray> a = ReadNpy(dir.File("f8.npy"));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(a->data[0], 0.5f);
  EXPECT_EQ(a->data[1], -1.25f);
  EXPECT_TRUE(std::isinf(a->data[2]));  // out of float range

  const std::vector<float> f4 = {1, 2, 3, 4};
  WriteBytes(
      dir.File("v2.npy"),
      MakeNpy(2, "{\"shape\": (2, 2), \"fortran_order\": False, \"descr\": \"<f4\"}", Bytes(f4)));
  StatusOr<NpyArray> b = ReadNpy(dir.File("v2.npy"));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(b->data, f4);
}

TEST(NpyTest, Int16IsPcmOnlyWhenAsked) {
  TempDir dir;
  const std::vector<int16_t> pcm = {0, 16384, -32768, 32767};
  const std::string path = dir.File("pcm.npy");
  WriteBytes(path,
             MakeNpy(1, "{'descr': '<i2', 'fortran_order': False, 'shape': (4,), }", Bytes(pcm)));
  StatusOr<NpyArray> refused = ReadNpy(path);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("unsupported dtype '<i2' (expected '<f4' or '<f8')"),
            std::string::npos)
      << refused.status().message();

  StatusOr<NpyArray> a = ReadNpy(path, {/*int16_as_pcm=*/true});
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->data, (std::vector<float>{0.0f, 0.5f, -1.0f, 32767 / 32768.0f}));
}

TEST(NpyTest, EachBadFileHasItsOwnError) {
  const std::string f4_2x3 = std::string(24, '\0');
  const char* dict_2x3 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::vector<BadFile> cases = {
      {"magic", "PK\x03\x04 not numpy at all", "not a .npy file"},
      {"version", MakeNpy(4, dict_2x3, f4_2x3), "unsupported .npy format version 4"},
      {"truncated header", std::string("\x93NUMPY\x01\x00\x40\x00{'descr'", 18),
       "truncated header"},
      {"fortran", MakeNpy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", f4_2x3),
       "fortran_order is True"},
      {"big endian",
       MakeNpy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", f4_2x3),
       "unsupported dtype '>f4'"},
      {"short data", MakeNpy(1, dict_2x3, std::string(20, '\0')),
       "shape (2, 3) of '<f4' needs 24 data bytes, the file has 20"},
      {"long data", MakeNpy(1, dict_2x3, std::string(28, '\0')),
       "shape (2, 3) of '<f4' needs 24 data bytes, the file has 28"},
      {"bad dict",
       MakeNpy(1, "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }", f4_2x3),
       "expected True or False"},
      {"bad shape",
       MakeNpy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", f4_2x3),
       "expected a non-negative integer dimension"},
      {"missing key", MakeNpy(1, "{'descr': '<f4', 'shape': (2, 3), }", f4_2x3),
       "expected the keys 'descr', 'fortran_order' and 'shape'"},
      {"unknown key", MakeNpy(1, "{'descr': '<f4', 'order': 'C', }", f4_2x3),
       "unknown key 'order'"},
  };
  ExpectEachBadFileHasItsOwnError(cases, "bad.npy",
                                  [](const std::string& path) { return ReadNpy(path).status(); });
}

TEST(NpyTest, MissingFileAndBadWrites) {
  TempDir dir;
  EXPECT_EQ(ReadNpy(dir.File("absent.npy")).status().code(), StatusCode::kNotFound);
  const float x = 1.0f;
  EXPECT_FALSE(WriteNpy(dir.File("n.npy"), {-1}, &x).ok());
  EXPECT_FALSE(WriteNpy(dir.File("no/dir/n.npy"), {1}, &x).ok());
}

}  // namespace
}  // namespace ssm
