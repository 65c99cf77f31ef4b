// The --auth-keys file format (server/service/api_keys.h): what parses, what each bad line is
// told, and that the lines ssm-keys prints read back as the same entries.
#include "server/service/api_keys.h"

#include <gtest/gtest.h>

namespace ssm {
namespace {

const std::string kHash(64, 'a');

TEST(ApiKeysTest, ParsesSecretsSubjectsModelsLimitsQuotesAndComments) {
  const std::string text =
      "# a comment line\n"
      "\n"
      "alice  sha256:" +
      kHash +
      "  vad,demo  10  60   # trailing comment\n"
      "cam-7\tsubject:\"CN=camera 7,O=Example \\\"Org\\\"\"\t*\t-\t-\r\n";
  auto keys = ParseKeyFile(text, "keys");
  ASSERT_TRUE(keys.ok()) << keys.status().ToString();
  ASSERT_EQ(keys->size(), 2u);
  const KeyEntry& alice = (*keys)[0];
  EXPECT_EQ(alice.id, "alice");
  EXPECT_EQ(alice.kind, KeyEntry::Kind::kSecret);
  EXPECT_EQ(Hex(alice.secret_hash), kHash);
  EXPECT_EQ(alice.models, (std::vector<std::string>{"vad", "demo"}));
  EXPECT_TRUE(alice.MayUse("demo"));
  EXPECT_FALSE(alice.MayUse("other"));
  EXPECT_EQ(alice.max_streams, 10);
  EXPECT_EQ(alice.max_opens_per_minute, 60);
  EXPECT_EQ(alice.line, 3);
  const KeyEntry& cam = (*keys)[1];
  EXPECT_EQ(cam.kind, KeyEntry::Kind::kCertSubject);
  EXPECT_EQ(cam.subject, "CN=camera 7,O=Example \"Org\"");
  EXPECT_TRUE(cam.models.empty());
  EXPECT_TRUE(cam.MayUse("anything"));
  EXPECT_EQ(cam.max_streams, 0);
  // Each entry's printed line reads back as itself.
  for (const KeyEntry& e : *keys) {
    auto again = ParseKeyFile(FormatKeyLine(e), "line");
    ASSERT_TRUE(again.ok()) << FormatKeyLine(e) << ": " << again.status().ToString();
    EXPECT_EQ(FormatKeyLine(again->front()), FormatKeyLine(e));
    EXPECT_TRUE(again->front().SameCredential(e));
  }
  EXPECT_TRUE(ParseKeyFile("# nobody\n", "empty")->empty());
}

TEST(ApiKeysTest, EachBadLineNamesItsLineAndWhatIsExpected) {
  const std::string good = "ok sha256:" + kHash + " * - -\n";
  struct Case {
    std::string line;
    std::string message;
  } cases[] = {
      {"alice sha256:" + kHash + " * 1", "4 fields; expected 5"},
      {"al!ce sha256:" + kHash + " * 1 1", "only letters, digits"},
      {std::string(65, 'a') + " sha256:" + kHash + " * 1 1", "1 to 64 characters"},
      {"alice sha256:1234 * 1 1", "expects 64 hex digits, got 4"},
      {"alice sha256:" + std::string(63, 'a') + "g * 1 1", "\"g\" is not a hex digit"},
      {"alice s3cret * 1 1", "credential must be sha256:HEX"},
      {"alice subject: * 1 1", "subject: expects a certificate subject"},
      {"alice sha256:" + kHash + " vad,,demo 1 1", "expected * or comma-separated"},
      {"alice sha256:" + kHash + " * 0 1", "MAX_STREAMS \"0\": expected a whole number from 1"},
      {"alice sha256:" + kHash + " * 1 ten", "OPENS_PER_MINUTE \"ten\""},
      {"alice sha256:" + kHash + " * 1 2000000", "OPENS_PER_MINUTE \"2000000\""},
      {"alice subject:\"CN=x * 1 1", "a quote is not closed"},
      {"ok sha256:" + std::string(64, 'b') + " * 1 1", "key id \"ok\" appears twice"},
      {"other sha256:" + kHash + " * 1 1", "has the credential of an earlier line"},
  };
  for (const Case& c : cases) {
    auto parsed = ParseKeyFile(good + c.line + "\n", "keys.txt");
    ASSERT_FALSE(parsed.ok()) << c.line;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find("keys.txt line 2: "), std::string::npos)
        << parsed.status().message();
    EXPECT_NE(parsed.status().message().find(c.message), std::string::npos)
        << c.line << " -> " << parsed.status().message();
  }
  EXPECT_FALSE(ParseKeyFile(std::string("a\0b", 3), "nul").ok());
}

TEST(ApiKeysTest, SecretsAreRandomAndOnlyTheirHashIsWritten) {
  auto a = NewSecret();
  auto b = NewSecret();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_EQ(a->rfind("ssk_", 0), 0u);
  EXPECT_EQ(a->size(), 4u + 43u);  // 256 bits, base64url without padding
  KeyEntry e;
  e.id = "k";
  e.secret_hash = SecretHash(*a);
  const std::string line = FormatKeyLine(e);
  EXPECT_EQ(line.find(*a), std::string::npos);
  EXPECT_NE(line.find("sha256:" + Hex(SecretHash(*a))), std::string::npos);
}

}  // namespace
}  // namespace ssm
