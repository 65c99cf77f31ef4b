// Temporary directories, raw-byte file helpers and a small model on disk, shared by the model and
// io tests.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "server/layers/mamba/mamba.h"
#include "server/model/model.h"
#include "server/model/random_model.h"

namespace ssm::testing_util {

// A fresh directory under the test temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "/ssm_model_test_XXXXXX";
    const char* made = mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr) << "mkdtemp " << pattern;
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// `value` as `bytes` little-endian bytes.
inline std::string LittleEndian(uint64_t value, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
  return out;
}

// A safetensors file's header text and data bytes, and the file made from them again (the
// 8-byte length always matches the header given).
struct SafetensorsParts {
  std::string header;
  std::string data;
};
inline SafetensorsParts SplitSafetensors(const std::string& file) {
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0 && file.size() >= 8; --i) {
    header_bytes = (header_bytes << 8) | static_cast<unsigned char>(file[i]);
  }
  EXPECT_LE(8 + header_bytes, file.size());
  return {file.substr(8, header_bytes), file.substr(8 + header_bytes)};
}
inline std::string JoinSafetensors(const SafetensorsParts& parts) {
  return LittleEndian(parts.header.size(), 8) + parts.header + parts.data;
}

// Saves a small valid log-mel model (d_in 8, d_model 16, one layer, d_out 2) into `dir`.
inline void SaveSmallModel(const std::string& dir, uint64_t seed = 1) {
  ModelConfig c;
  c.frontend.n_mels = 8;
  c.d_in = 8;
  c.d_model = 16;
  c.n_layer = 1;
  c.layer.as<MambaParams>().dt_rank = 2;
  c.layer.as<MambaParams>().d_state = 4;
  c.d_out = 2;
  StatusOr<std::shared_ptr<const Model>> model = MakeRandomModel(c, seed);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ASSERT_TRUE((*model)->Save(dir).ok());
}

// A malformed file and the text its error must contain.
struct BadFile {
  const char* name;
  std::string bytes;
  std::string message;
};

// Writes each case to `file_name` in a fresh directory and opens it with `open` (path -> Status):
// each must fail with INVALID_ARGUMENT, a message that starts with the path and contains the
// case's text, and no two cases may share a message.
template <typename OpenFn>
void ExpectEachBadFileHasItsOwnError(const std::vector<BadFile>& cases,
                                     const std::string& file_name, OpenFn open) {
  TempDir dir;
  std::set<std::string> messages;
  for (const BadFile& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir.File(file_name);
    WriteBytes(path, c.bytes);
    const Status status = open(path);
    ASSERT_FALSE(status.ok());
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message().rfind(path + ": ", 0), 0u) << status.message();
    EXPECT_NE(status.message().find(c.message), std::string::npos)
        << "got: " << status.message() << "\nwant: " << c.message;
    messages.insert(status.message());
  }
  EXPECT_EQ(messages.size(), cases.size());
}

}  // namespace ssm::testing_util
