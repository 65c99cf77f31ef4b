// Model files with extreme JSON: numbers that overflow a double and arrays nested 100,000 deep,
// in config.json and in the safetensors header, give errors naming the file and the field.
#include <gtest/gtest.h>

#include <string>

#include "server/model/model.h"
#include "tests/model/test_files.h"

namespace ssm {
namespace {

using testing_util::JoinSafetensors;
using testing_util::ReadBytes;
using testing_util::SafetensorsParts;
using testing_util::SplitSafetensors;
using testing_util::TempDir;
using testing_util::WriteBytes;

constexpr int kIssueDepth = 100000;  // the nesting of the reported crash

std::string DeepArray(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// A small valid model saved into a fresh directory, whose files the tests then edit.
class JsonLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(testing_util::SaveSmallModel(dir_.path()));
    config_text_ = ReadBytes(config_path());
    weights_ = SplitSafetensors(ReadBytes(weights_path()));
  }

  std::string config_path() const { return dir_.File(kModelConfigFile); }
  std::string weights_path() const { return dir_.File(kModelWeightsFile); }

  // config.json with the value of top-level field `key` replaced by `value`.
  void WriteConfigWith(const std::string& key, const std::string& value) {
    const std::string quoted = "\"" + key + "\": ";
    const size_t at = config_text_.find(quoted);
    ASSERT_NE(at, std::string::npos) << key;
    const size_t begin = at + quoted.size(), end = config_text_.find_first_of(",\n", begin);
    WriteBytes(config_path(), config_text_.substr(0, begin) + value + config_text_.substr(end));
  }
  // config.json with one more top-level member `"key": value` (an unknown field).
  void WriteConfigWithExtra(const std::string& key, const std::string& value) {
    WriteBytes(config_path(), "{\"" + key + "\": " + value + "," + config_text_.substr(1));
  }
  // model.safetensors whose header has `member` (e.g. "\"__metadata__\": {...}") first.
  void WriteHeaderWith(const std::string& member) {
    SafetensorsParts parts = weights_;
    parts.header = "{" + member + "," + parts.header.substr(1);
    WriteBytes(weights_path(), JoinSafetensors(parts));
  }

  // Loads the model: it must fail with INVALID_ARGUMENT and a message that starts with the
  // file's path, then names the field and contains `reason`.
  void ExpectLoadError(const std::string& file, const std::string& field,
                       const std::string& reason) {
    StatusOr<std::shared_ptr<const Model>> loaded = Model::Load(dir_.path());
    ASSERT_FALSE(loaded.ok());
    const std::string message = loaded.status().message();
    EXPECT_EQ(loaded.status().code(), StatusCode::kInvalidArgument) << message;
    EXPECT_EQ(message.rfind(file + ": " + field, 0), 0u) << message;
    EXPECT_NE(message.find(reason), std::string::npos) << message;
    EXPECT_LT(message.size(), 400u) << "the message quotes too much of the file";
  }

  TempDir dir_;
  std::string config_text_;
  SafetensorsParts weights_;
};

TEST_F(JsonLimitsTest, TheUneditedModelLoads) { EXPECT_TRUE(Model::Load(dir_.path()).ok()); }

TEST_F(JsonLimitsTest, ConfigNumberThatOverflowsADoubleNamesTheField) {
  WriteConfigWith("d_model", "1e999999");
  ExpectLoadError(config_path(), "d_model: ", "1e999999 is out of range");
  WriteConfigWith("d_model", "-1e400");
  ExpectLoadError(config_path(), "d_model: ", "-1e400 is out of range");
}

TEST_F(JsonLimitsTest, UnusedConfigFieldThatOverflowsADoubleNamesTheField) {
  WriteConfigWithExtra("unused", "1e400");
  ExpectLoadError(config_path(), "unused: ", "1e400 is out of range");
}

TEST_F(JsonLimitsTest, DeeplyNestedConfigValueNamesTheField) {
  WriteConfigWith("d_model", DeepArray(kIssueDepth));
  ExpectLoadError(config_path(), "d_model[0][0]", "nested deeper than 64");
  WriteConfigWithExtra("unused", DeepArray(kIssueDepth));
  ExpectLoadError(config_path(), "unused[0][0]", "nested deeper than 64");
}

TEST_F(JsonLimitsTest, SafetensorsHeaderNumberThatOverflowsADoubleNamesTheField) {
  WriteHeaderWith("\"__metadata__\": {\"note\": 1e400}");
  ExpectLoadError(weights_path(), "__metadata__.note: ", "1e400 is out of range");
  WriteHeaderWith(
      "\"extra\": {\"dtype\": \"F32\", \"shape\": [1e999999], \"data_offsets\": [0, 0]}");
  ExpectLoadError(weights_path(), "extra.shape[0]: ", "1e999999 is out of range");
}

TEST_F(JsonLimitsTest, DeeplyNestedSafetensorsMetadataNamesTheField) {
  WriteHeaderWith("\"__metadata__\": {\"note\": " + DeepArray(kIssueDepth) + "}");
  ExpectLoadError(weights_path(), "__metadata__.note[0][0]", "nested deeper than 64");
}

// Dimensions at the config's limits are valid numbers, but the small file cannot hold such a
// model: the tensor set is checked against the header before any weight is read or allocated.
TEST_F(JsonLimitsTest, HugeDimensionsAreRejectedBeforeReadingWeights) {
  WriteConfigWith("d_model", "1000000000");
  ExpectLoadError(config_path(),
                  "d_model: ", "expected an integer in [1, 65536], found 1000000000");
  WriteConfigWith("d_model", "1e9");
  ExpectLoadError(config_path(), "d_model: ", "expected an integer, found a number (1000000000.0)");
  WriteConfigWith("d_model", "65536");
  ExpectLoadError(weights_path(), "tensor 'input_proj.weight': ", "expected shape [65536, 8]");
  // A header that claims a 16 GiB tensor in a few bytes of data.
  WriteHeaderWith(
      "\"extra\": {\"dtype\": \"F32\", \"shape\": [65536, 65536], \"data_offsets\": [0, 4]}");
  ExpectLoadError(weights_path(), "tensor 'extra': data_offsets [0, 4] span 4 bytes",
                  "needs more than the whole data section");
}

}  // namespace
}  // namespace ssm
