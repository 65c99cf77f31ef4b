// CheckJson: the nesting limit, numbers that overflow a double, duplicate keys and the paths
// that name the value; Excerpt: how file text is quoted in messages.
#include "server/model/json_check.h"

#include <gtest/gtest.h>

#include <string>

namespace ssm {
namespace {

std::string Nested(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string NestedObjects(int depth) {
  std::string s;
  for (int i = 0; i < depth; ++i) s += "{\"k\":";
  return s + "1" + std::string(depth, '}');
}

void ExpectError(const Status& status, const std::string& message) {
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_EQ(status.message(), message);
}

TEST(CheckJsonTest, AcceptsNestingUpToTheLimit) {
  EXPECT_TRUE(CheckJson(Nested(kMaxJsonDepth), "config").ok());
  EXPECT_TRUE(CheckJson(NestedObjects(kMaxJsonDepth), "config").ok());
  // Numbers within a double's range, underflow to 0 included.
  EXPECT_TRUE(
      CheckJson(R"({"a": [1, 1.7e308, -4.9e-324, 1e-400, {"b": null}], "c": "x"})", "config").ok());
}

TEST(CheckJsonTest, RefusesNestingBeyondTheLimitNamingThePath) {
  const Status arrays = CheckJson("{\"a\": " + Nested(kMaxJsonDepth) + "}", "config");
  EXPECT_EQ(arrays.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(arrays.message().rfind("a[0][0][0]", 0), 0u) << arrays.message();
  EXPECT_NE(arrays.message().find("nested deeper than 64 levels"), std::string::npos);
  EXPECT_LT(arrays.message().size(), 160u);

  const Status objects = CheckJson(NestedObjects(kMaxJsonDepth + 1), "config");
  EXPECT_EQ(objects.message().rfind("k.k.k.k", 0), 0u) << objects.message();
  ExpectError(CheckJson(Nested(kMaxJsonDepth + 1), "header"),
              "[0][0][0][0][0][0][0][0][0][0][0][0][0]...: arrays and objects nested deeper "
              "than 64 levels (the limit for model files)");
}

TEST(CheckJsonTest, NamesTheNumberThatOverflowsByItsPath) {
  const std::string reason =
      " is out of range (numbers in model files must fit a double, magnitude up to 1.797e308)";
  ExpectError(CheckJson(R"({"layer": {"d_state": 1e999999}})", "config"),
              "layer.d_state: the number 1e999999" + reason);
  ExpectError(CheckJson(R"({"__metadata__": {"note": [0, 1, -1e400]}})", "header"),
              "__metadata__.note[2]: the number -1e400" + reason);
  ExpectError(CheckJson(R"([[1], [2, 3e400]])", "header"), "[1][1]: the number 3e400" + reason);
  ExpectError(CheckJson("1e400", "config"), "config: the number 1e400" + reason);
  // An integer too long for 64 bits is read as a double, and may overflow that too.
  ExpectError(CheckJson("{\"d\": 1" + std::string(400, '0') + "}", "config"),
              "d: the number 1" + std::string(23, '0') + "...(401 bytes)" + reason);
}

TEST(CheckJsonTest, RefusesAKeyGivenTwiceInOneObject) {
  ExpectError(CheckJson(R"({"layer": {"d_state": 4, "d_conv": 4, "d_state": 8}})", "config"),
              "layer.d_state: the key appears twice in one object");
  EXPECT_TRUE(CheckJson(R"({"a": {"x": 1}, "b": {"x": 1}})", "config").ok());
}

TEST(CheckJsonTest, SyntaxErrorsSayInvalidJson) {
  const Status status = CheckJson("{\"format\": ", "config");
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message().rfind("config: invalid JSON: ", 0), 0u) << status.message();
  EXPECT_FALSE(CheckJson("NaN", "config").ok());
  EXPECT_FALSE(CheckJson("{} {}", "config").ok());  // one value only
  EXPECT_FALSE(CheckJson("", "header").ok());
}

TEST(ExcerptTest, KeepsShortTextAndCutsLongTextOnACharacterBoundary) {
  EXPECT_EQ(Excerpt("input_proj.weight"), "input_proj.weight");
  EXPECT_EQ(Excerpt(std::string(64, 'a')), std::string(64, 'a'));
  EXPECT_EQ(Excerpt(std::string(100, 'a')), std::string(48, 'a') + "...(100 bytes)");
  // "é" is two bytes; a cut inside it moves back to before it.
  const std::string accents = std::string(47, 'a') + "\xc3\xa9" + std::string(60, 'b');
  EXPECT_EQ(Excerpt(accents), std::string(47, 'a') + "...(109 bytes)");
}

}  // namespace
}  // namespace ssm
