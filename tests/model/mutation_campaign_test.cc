// A seeded mutation campaign over a small model's config.json and model.safetensors: byte flips,
// truncation, inserted tokens, values replaced by overflowing numbers, huge dimensions, wrong
// types or deep nesting, and duplicated keys. Every mutant must load as a model or fail with a
// clean Status naming the file, in process and through the real `ssm-model validate` and
// `ssm-run` (exit 0, or 1 with a message on stderr; never a signal, never non-finite outputs).
// The seed is printed; SSM_TEST_SEED=<seed> replays a run, SSM_CAMPAIGN_VERBOSE=1 prints each
// mutant before it is tried and the error it got.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/io/npy.h"
#include "server/model/json_check.h"
#include "server/model/model.h"
#include "tests/model/test_files.h"
#include "tests/model/test_process.h"

namespace ssm {
namespace {

using testing_util::HowItEnded;
using testing_util::JoinSafetensors;
using testing_util::ProcessResult;
using testing_util::ReadBytes;
using testing_util::RunProcess;
using testing_util::SafetensorsParts;
using testing_util::SplitSafetensors;
using testing_util::TempDir;
using testing_util::WriteBytes;

constexpr int kInProcessMutants = 2000;
constexpr int kProcessMutants = 150;  // each runs ssm-model validate and ssm-run

uint64_t CampaignSeed() {
  const char* env = std::getenv("SSM_TEST_SEED");
  const uint64_t seed = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
  std::printf("[ seed     ] SSM_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

bool Verbose() { return std::getenv("SSM_CAMPAIGN_VERBOSE") != nullptr; }

// Tokens put in place of a value or between bytes: numbers that overflow a double or float32,
// dimensions far beyond any model, integers at the edges of int32/int64/uint64, not-JSON
// spellings of NaN and infinity, wrong types and odd strings.
const char* const kTokens[] = {
    "1e999999",
    "-1e400",
    "1e308",
    "1.7976931348623157e308",
    "1.8e308",
    "3.5e38",
    "-3.5e38",
    "1e-400",
    "4.9e-324",
    "1e308*10",
    "NaN",
    "nan",
    "-Infinity",
    "Infinity",
    "inf",
    "null",
    "true",
    "false",
    "0",
    "-0",
    "-1",
    "1",
    "2",
    "7",
    "0.5",
    "65536",
    "65537",
    "1000000000",
    "1e9",
    "2147483647",
    "2147483648",
    "-2147483649",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "\"\"",
    "\"x\"",
    "\"F16\"",
    "\"BF16\"",
    "\"I64\"",
    "\"none\"",
    "\"log_mel\"",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"\xff\xfe\"",
    "[]",
    "{}",
    "[1, 2]",
    "[0, 1e400]",
    "{\"a\": 1}",
    "[[[[1]]]]",
    ",",
    ":",
    "[",
    "]",
    "{",
    "}",
    "\"",
};

// Deep nesting: balanced arrays or objects around the limit and far past it, or unclosed.
std::string Nesting(std::mt19937_64& rng) {
  const int depths[] = {63, 64, 65, 1000, 100000};
  const int depth = depths[rng() % 5];
  switch (rng() % 3) {
    case 0:
      return std::string(depth, '[') + std::string(depth, ']');
    case 1: {
      std::string s;
      for (int i = 0; i < depth; ++i) s += "{\"a\":";
      return s + "1" + std::string(depth, '}');
    }
    default:
      return std::string(depth, '[');
  }
}

// [begin, end) of every scalar token in JSON-ish text: strings (keys too), numbers, literals.
std::vector<std::pair<size_t, size_t>> ScalarTokens(const std::string& text) {
  std::vector<std::pair<size_t, size_t>> tokens;
  for (size_t i = 0; i < text.size();) {
    const char c = text[i];
    size_t end = i + 1;
    if (c == '"') {
      while (end < text.size() && text[end] != '"') end += text[end] == '\\' ? 2 : 1;
      end = std::min(end + 1, text.size());
    } else if (c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n') {
      while (end < text.size() && std::string(",]} \n\t").find(text[end]) == std::string::npos) {
        ++end;
      }
    } else {
      ++i;
      continue;
    }
    tokens.emplace_back(i, end);
    i = end;
  }
  return tokens;
}

// Makes mutants of JSON text, one edit each, and says what it did.
class TextMutator {
 public:
  explicit TextMutator(std::mt19937_64* rng) : rng_(*rng) {}

  std::string Mutate(std::string text, std::string* what) {
    if (text.empty()) return text;
    const size_t pos = rng_() % text.size();
    const std::string token =
        rng_() % 8 == 0 ? Nesting(rng_) : kTokens[rng_() % std::size(kTokens)];
    const auto tokens = ScalarTokens(text);
    switch (rng_() % 6) {
      case 0: {  // flip one bit
        const int bit = int(rng_() % 8);
        text[pos] = char(text[pos] ^ (1 << bit));
        *what = "flip bit " + std::to_string(bit) + " of byte " + std::to_string(pos);
        return text;
      }
      case 1:
        *what = "truncate to " + std::to_string(pos) + " bytes";
        return text.substr(0, pos);
      case 2:
        *what = "insert " + Short(token) + " at byte " + std::to_string(pos);
        return text.insert(pos, token);
      case 3:
      case 4: {  // replace a value (or a key) with the token
        if (tokens.empty()) return text;
        const auto [begin, end] = tokens[rng_() % tokens.size()];
        *what = "replace " + text.substr(begin, end - begin) + " by " + Short(token);
        return text.replace(begin, end - begin, token);
      }
      default: {  // the same key again in the same object, before the original
        if (tokens.empty()) return text;
        const auto [begin, end] = tokens[rng_() % tokens.size()];
        const std::string key = text.substr(begin, end - begin);
        *what = "duplicate key " + key + " with " + Short(token);
        return text.insert(begin, key + ": " + token + ", ");
      }
    }
  }

 private:
  static std::string Short(const std::string& token) {
    return token.size() <= 24
               ? token
               : token.substr(0, 12) + "...(" + std::to_string(token.size()) + " bytes)";
  }
  std::mt19937_64& rng_;
};

struct Mutant {
  std::string config;   // config.json bytes
  std::string weights;  // model.safetensors bytes
  std::string what;
};

// A mutant of the model: one edit of config.json, of the safetensors header (its length
// prefix kept right, or not), or of raw bytes anywhere in the safetensors file.
Mutant Mutate(std::mt19937_64& rng, const std::string& config, const SafetensorsParts& weights) {
  TextMutator text(&rng);
  Mutant m{config, JoinSafetensors(weights), ""};
  std::string what;
  const uint64_t kind = rng() % 20;
  if (kind < 10) {
    m.config = text.Mutate(config, &what);
    m.what = "config.json: " + what;
  } else if (kind < 18) {
    SafetensorsParts parts = weights;
    parts.header = text.Mutate(parts.header, &what);
    m.weights = JoinSafetensors(parts);
    if (kind == 17) {  // keep the old length: it no longer matches
      m.weights = JoinSafetensors(weights).substr(0, 8) + parts.header + parts.data;
      what += ", old header length";
    }
    m.what = "model.safetensors header: " + what;
  } else {
    std::string& bytes = m.weights;
    const size_t pos = rng() % bytes.size();
    if (kind == 18) {
      bytes[pos] = char(rng() % 256);
      m.what = "model.safetensors: byte " + std::to_string(pos) + " set to " +
               std::to_string(static_cast<unsigned char>(bytes[pos]));
    } else {
      bytes.resize(pos);
      m.what = "model.safetensors: truncated to " + std::to_string(pos) + " bytes";
    }
  }
  return m;
}

class MutationCampaignTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(testing_util::SaveSmallModel(base_.path()));
    config_ = ReadBytes(base_.File(kModelConfigFile));
    weights_ = SplitSafetensors(ReadBytes(base_.File(kModelWeightsFile)));
  }

  void WriteMutant(const Mutant& m) {
    WriteBytes(dir_.File(kModelConfigFile), m.config);
    WriteBytes(dir_.File(kModelWeightsFile), m.weights);
  }

  const uint64_t seed_ = CampaignSeed();
  std::mt19937_64 rng_{seed_};
  TempDir base_, dir_;
  std::string config_;
  SafetensorsParts weights_;
};

TEST_F(MutationCampaignTest, EveryMutantLoadsOrFailsWithAnErrorNamingTheFile) {
  int loaded = 0;
  for (int i = 0; i < kInProcessMutants; ++i) {
    const Mutant m = Mutate(rng_, config_, weights_);
    SCOPED_TRACE("mutant " + std::to_string(i) + ": " + m.what);
    if (Verbose()) std::printf("mutant %d: %s\n", i, m.what.c_str()), std::fflush(stdout);
    WriteMutant(m);
    StatusOr<std::shared_ptr<const Model>> model = Model::Load(dir_.path());
    if (model.ok()) {
      ++loaded;
      continue;
    }
    const std::string message = model.status().message();
    if (Verbose()) std::printf("  -> %s\n", Excerpt(message, 300).c_str());
    EXPECT_EQ(model.status().code(), StatusCode::kInvalidArgument) << message;
    const bool names_file = message.rfind(dir_.File(kModelConfigFile) + ": ", 0) == 0 ||
                            message.rfind(dir_.File(kModelWeightsFile) + ": ", 0) == 0;
    EXPECT_TRUE(names_file) << message;
    EXPECT_LT(message.size(), 2000u) << message.substr(0, 2000);
  }
  std::printf("[ campaign ] %d mutants, %d loaded, %d rejected, 0 crashed\n", kInProcessMutants,
              loaded, kInProcessMutants - loaded);
}

TEST_F(MutationCampaignTest, ToolsFailCleanlyOnEveryMutant) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the tools are not built with AddressSanitizer; model_tests runs this test";
#endif
  const std::string bin = SSM_BIN_DIR;
  for (const char* tool : {"ssm-model", "ssm-run"}) {
    if (access((bin + "/" + tool).c_str(), X_OK) != 0)
      GTEST_SKIP() << bin << "/" << tool << " is not built";
  }
  // 0.1 s of a 16 kHz tone as (n,) samples.
  std::vector<float> samples(1600);
  for (size_t i = 0; i < samples.size(); ++i) samples[i] = 0.3f * std::sin(0.07f * float(i));
  const std::string input = base_.File("input.npy"), output = dir_.File("out.npy");
  ASSERT_TRUE(WriteNpy(input, {int64_t(samples.size())}, samples.data()).ok());
  const std::string err = base_.File("stderr.txt");

  int clean_errors = 0;
  for (int i = 0; i < kProcessMutants; ++i) {
    const Mutant m = Mutate(rng_, config_, weights_);
    SCOPED_TRACE("mutant " + std::to_string(i) + ": " + m.what);
    WriteMutant(m);
    std::remove(output.c_str());
    const std::vector<std::vector<std::string>> commands = {
        {bin + "/ssm-model", "validate", dir_.path()},
        {bin + "/ssm-run", "--model", dir_.path(), "--input", input, "--output", output, "--device",
         "cpu", "--threads", "1"}};
    for (const auto& argv : commands) {
      const ProcessResult r = RunProcess(argv, err);
      ASSERT_TRUE(r.started) << argv[0];
      EXPECT_EQ(r.signal, 0) << argv[0] << " " << HowItEnded(r) << "\n" << r.err;
      EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1) << argv[0] << " " << HowItEnded(r);
      if (r.exit_code == 1) {
        ++clean_errors;
        EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << argv[0] << ": " << r.err;
      }
    }
    if (std::ifstream(output).good()) {  // ssm-run succeeded: its outputs must be finite
      StatusOr<NpyArray> out = ReadNpy(output);
      ASSERT_TRUE(out.ok()) << out.status().ToString();
      for (float v : out->data) ASSERT_TRUE(std::isfinite(v)) << "ssm-run wrote " << v;
    }
  }
  std::printf(
      "[ campaign ] %d mutants through ssm-model validate and ssm-run: %d clean errors, "
      "0 signals\n",
      kProcessMutants, clean_errors);
}

}  // namespace
}  // namespace ssm
