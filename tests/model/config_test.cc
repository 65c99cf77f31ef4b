// config.json parsing: valid configs round-trip; every kind of bad field has its own message.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "server/layers/mamba/mamba.h"
#include "server/model/model_config.h"
#include "tests/model/test_files.h"

namespace ssm {
namespace {

using Json = nlohmann::json;
using testing_util::TempDir;
using testing_util::WriteBytes;

// The example of docs/design.md §2.
const char kDesignExample[] = R"({
  "format": "ssmserve/v1",
  "frontend": {"type": "log_mel", "sample_rate": 16000, "win_length": 400, "hop_length": 160,
               "n_fft": 512, "n_mels": 80, "f_min": 0.0, "f_max": 8000.0, "log_floor": 1e-10},
  "d_in": 80, "d_model": 256, "n_layer": 8,
  "layer": {"type": "mamba", "d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 16,
            "conv_bias": true, "bias": false},
  "norm": {"type": "rmsnorm", "eps": 1e-5},
  "d_out": 2, "head_activation": "softmax", "labels": ["background", "speech"]
})";

// A sensor model: no frontend, per-feature normalisation.
Json SensorConfig() {
  return Json::parse(R"({
    "format": "ssmserve/v1",
    "frontend": {"type": "none", "mean": [0.5, -1.0, 2.0], "std": [1.0, 0.25, 3.0],
                 "frame_rate": 50},
    "d_in": 3, "d_model": 32, "n_layer": 2, "d_out": 4, "head_activation": "none"
  })");
}

TEST(ModelConfigTest, DesignExampleParsesWithEveryField) {
  StatusOr<ModelConfig> c = ModelConfig::FromJson(kDesignExample);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->frontend.type, "log_mel");
  EXPECT_EQ(c->frontend.n_fft, 512);
  EXPECT_EQ(c->layer.as<MambaParams>().expand * c->d_model, 512);
  EXPECT_EQ(c->layer.as<MambaParams>().dt_rank, 16);
  EXPECT_DOUBLE_EQ(c->norm.eps, 1e-5);
  EXPECT_EQ(c->labels, (std::vector<std::string>{"background", "speech"}));
  EXPECT_DOUBLE_EQ(c->frame_rate(), 100.0);  // 16000 / 160
}

TEST(ModelConfigTest, ToJsonRoundTripsThroughFromJson) {
  for (const std::string& text : {std::string(kDesignExample), SensorConfig().dump()}) {
    StatusOr<ModelConfig> first = ModelConfig::FromJson(text);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    const std::string json = first->ToJson();
    StatusOr<ModelConfig> second = ModelConfig::FromJson(json);
    ASSERT_TRUE(second.ok()) << second.status().ToString() << "\n" << json;
    EXPECT_EQ(second->ToJson(), json);
    EXPECT_EQ(second->ToString(), first->ToString());
  }
}

TEST(ModelConfigTest, ToJsonWritesEveryField) {
  const Json j = Json::parse(ModelConfig::Preset("bench-s")->ToJson());
  for (const char* key : {"format", "frontend", "d_in", "d_model", "n_layer", "layer", "norm",
                          "d_out", "head_activation", "labels"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["frontend"].size(), 9u);  // type + 8 log-mel fields
  EXPECT_EQ(j["layer"].size(), 7u);
  EXPECT_EQ(j["norm"].size(), 2u);
}

TEST(ModelConfigTest, NoneFrontendKeepsNormalisationAndFrameRate) {
  StatusOr<ModelConfig> c = ModelConfig::FromJson(SensorConfig().dump());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->frontend.mean, (std::vector<float>{0.5f, -1.0f, 2.0f}));
  EXPECT_EQ(c->frontend.std, (std::vector<float>{1.0f, 0.25f, 3.0f}));
  EXPECT_DOUBLE_EQ(c->frame_rate(), 50.0);
  EXPECT_EQ(c->head_activation, "none");
}

TEST(ModelConfigTest, OmittedOptionalFieldsTakeDefaults) {
  StatusOr<ModelConfig> c = ModelConfig::FromJson(
      R"({"format": "ssmserve/v1", "d_in": 80, "d_model": 200, "n_layer": 3, "d_out": 5})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(c->frontend.is_log_mel());
  EXPECT_EQ(c->frontend.sample_rate, 16000);
  EXPECT_EQ(c->layer.as<MambaParams>().d_state, 16);
  EXPECT_EQ(c->layer.as<MambaParams>().d_conv, 4);
  EXPECT_EQ(c->layer.as<MambaParams>().expand, 2);
  EXPECT_EQ(c->layer.as<MambaParams>().dt_rank, 13);  // "auto": ceil(200 / 16)
  EXPECT_TRUE(c->layer.as<MambaParams>().conv_bias);
  EXPECT_FALSE(c->layer.as<MambaParams>().bias);
  EXPECT_EQ(c->head_activation, "softmax");
  EXPECT_TRUE(c->labels.empty());

  StatusOr<ModelConfig> none = ModelConfig::FromJson(
      R"({"format": "ssmserve/v1", "frontend": {"type": "none"}, "d_in": 6, "d_model": 8,
          "n_layer": 1, "d_out": 1})");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_DOUBLE_EQ(none->frame_rate(), 100.0);
  EXPECT_TRUE(none->frontend.mean.empty());
}

// One bad config: a change to a valid base config and the message it must produce.
struct BadCase {
  const char* name;
  bool sensor_base;  // SensorConfig() instead of the design example
  std::function<void(Json&)> mutate;
  std::string message;  // substring of the error
};

TEST(ModelConfigTest, EachBadFieldHasItsOwnMessageNamingTheField) {
  const std::vector<BadCase> cases = {
      {"unknown top-level", false, [](Json& j) { j["d_modle"] = 256; },
       "d_modle: unknown field (did you mean \"d_model\"?)"},
      {"unknown frontend", false, [](Json& j) { j["frontend"]["hop_lenght"] = 160; },
       "frontend.hop_lenght: unknown field"},
      {"unknown layer", false, [](Json& j) { j["layer"]["d_stat"] = 16; },
       "layer.d_stat: unknown field"},
      {"unknown norm", false, [](Json& j) { j["norm"]["epsilon"] = 1e-5; },
       "norm.epsilon: unknown field"},
      {"missing required", false, [](Json& j) { j.erase("d_model"); },
       "d_model: required field is missing"},
      {"format", false, [](Json& j) { j["format"] = "ssmserve/v2"; },
       "format: expected \"ssmserve/v1\", found \"ssmserve/v2\""},
      {"int type", false, [](Json& j) { j["layer"]["d_state"] = "16"; },
       "layer.d_state: expected an integer, found a string (\"16\")"},
      {"int not float", false, [](Json& j) { j["d_model"] = 2.5; },
       "d_model: expected an integer, found a number (2.5)"},
      {"int overflow", false, [](Json& j) { j["d_model"] = 10000000000LL; },
       "d_model: expected a 32-bit integer, found an integer (10000000000)"},
      {"negative d_state", false, [](Json& j) { j["layer"]["d_state"] = -3; },
       "layer.d_state: expected an integer in [1, 256], found -3"},
      {"d_state too big", false, [](Json& j) { j["layer"]["d_state"] = 300; },
       "layer.d_state: expected an integer in [1, 256], found 300"},
      {"d_conv", false, [](Json& j) { j["layer"]["d_conv"] = 0; },
       "layer.d_conv: expected an integer in [1, 8], found 0"},
      {"expand", false, [](Json& j) { j["layer"]["expand"] = 0; },
       "layer.expand: expected an integer in [1, "},
      {"dt_rank", false, [](Json& j) { j["layer"]["dt_rank"] = 0; },
       "layer.dt_rank: expected an integer in [1, "},
      {"n_layer", false, [](Json& j) { j["n_layer"] = 0; }, "n_layer: expected an integer in [1, "},
      {"bool type", false, [](Json& j) { j["layer"]["conv_bias"] = "yes"; },
       "layer.conv_bias: expected true or false, found a string (\"yes\")"},
      {"layer type", false, [](Json& j) { j["layer"]["type"] = "mamba3"; },
       "layer.type: expected \"mamba\" | \"mamba2\" | \"linear_attn\" | \"retnet\" | \"gla\", "
       "found \"mamba3\""},
      {"object type", false, [](Json& j) { j["frontend"] = "log_mel"; },
       "frontend: expected an object, found a string"},
      {"frontend type", false, [](Json& j) { j["frontend"]["type"] = "mfcc"; },
       "frontend.type: expected \"log_mel\" | \"none\", found \"mfcc\""},
      {"d_in vs n_mels", false, [](Json& j) { j["d_in"] = 40; },
       "d_in: expected frontend.n_mels (80) for a log_mel frontend, found 40"},
      {"n_fft < win", false, [](Json& j) { j["frontend"]["n_fft"] = 256; },
       "frontend.n_fft: expected an integer in [frontend.win_length (400), 65536], found 256"},
      {"hop", false, [](Json& j) { j["frontend"]["hop_length"] = 0; },
       "frontend.hop_length: expected an integer in [1, "},
      {"f_max", false, [](Json& j) { j["frontend"]["f_max"] = 9000.0; },
       "frontend.f_max: expected f_min (0) < f_max <= sample_rate / 2 (8000), found 9000"},
      {"f_min", false, [](Json& j) { j["frontend"]["f_min"] = -1.0; },
       "frontend.f_min: expected 0 <= f_min"},
      {"f_min >= f_max", false,
       [](Json& j) { j["frontend"]["f_min"] = 5000.0, j["frontend"]["f_max"] = 4000.0; },
       "frontend.f_max: expected f_min (5000) < f_max"},
      {"log_floor", false, [](Json& j) { j["frontend"]["log_floor"] = 0; },
       "frontend.log_floor: expected a number > 0, found 0"},
      {"frame_rate with log_mel", false, [](Json& j) { j["frontend"]["frame_rate"] = 100; },
       "frontend.frame_rate: not allowed with frontend.type \"log_mel\""},
      {"mean with log_mel", false, [](Json& j) { j["frontend"]["mean"] = {0.0}; },
       "frontend.mean: only allowed with frontend.type \"none\""},
      {"log-mel field with none", true, [](Json& j) { j["frontend"]["n_mels"] = 3; },
       "frontend.n_mels: only allowed with frontend.type \"log_mel\""},
      {"mean length", true, [](Json& j) { j["frontend"]["mean"] = {1.0}; },
       "frontend.mean: expected 3 numbers (d_in), found 1"},
      {"mean empty", true, [](Json& j) { j["frontend"]["mean"] = Json::array(); },
       "frontend.mean: expected d_in numbers, found an empty array"},
      {"mean item type", true, [](Json& j) { j["frontend"]["mean"][1] = "x"; },
       "frontend.mean[1]: expected a number, found a string"},
      {"std positive", true, [](Json& j) { j["frontend"]["std"][2] = 0.0; },
       "frontend.std[2]: expected a finite positive number, found 0"},
      {"frame_rate", true, [](Json& j) { j["frontend"]["frame_rate"] = 0; },
       "frontend.frame_rate: expected a number > 0 (frames/s), found 0"},
      {"norm type", false, [](Json& j) { j["norm"]["type"] = "layernorm"; },
       "norm.type: expected \"rmsnorm\", found \"layernorm\""},
      {"norm eps", false, [](Json& j) { j["norm"]["eps"] = -1e-5; },
       "norm.eps: expected a number > 0, found -1e-05"},
      {"activation", false, [](Json& j) { j["head_activation"] = "relu"; },
       "head_activation: expected \"none\" | \"sigmoid\" | \"softmax\", found \"relu\""},
      {"labels count", false, [](Json& j) { j["labels"] = {"speech"}; },
       "labels: expected 2 strings (d_out), found 1"},
      {"labels type", false,
       [](Json& j) {
         j["labels"] = Json::array({1, 2});
       },
       "labels[0]: expected a string, found an integer (1)"},
  };
  std::set<std::string> messages;
  for (const BadCase& c : cases) {
    SCOPED_TRACE(c.name);
    Json j = c.sensor_base ? SensorConfig() : Json::parse(kDesignExample);
    c.mutate(j);
    StatusOr<ModelConfig> parsed = ModelConfig::FromJson(j.dump());
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(c.message), std::string::npos)
        << "got: " << parsed.status().message() << "\nwant: " << c.message;
    messages.insert(parsed.status().message());
  }
  EXPECT_EQ(messages.size(), cases.size()) << "two cases gave the same message";
}

TEST(ModelConfigTest, MalformedJsonIsAnError) {
  StatusOr<ModelConfig> c = ModelConfig::FromJson("{\"format\": ");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("invalid JSON"), std::string::npos);

  c = ModelConfig::FromJson("[1, 2]");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("config: expected a JSON object, found an array"),
            std::string::npos)
      << c.status().message();
}

TEST(ModelConfigTest, ValidateChecksConfigsBuiltInCode) {
  ModelConfig c = *ModelConfig::Preset("bench-s");
  EXPECT_TRUE(c.Validate().ok());
  c.frontend.type = "none";
  c.frontend.std.assign(80, 1.0f);
  c.frontend.std[7] = NAN;
  Status s = c.Validate();
  EXPECT_NE(s.message().find("frontend.std[7]"), std::string::npos) << s.message();
  c = *ModelConfig::Preset("bench-s");
  c.norm.eps = NAN;
  EXPECT_NE(c.Validate().message().find("norm.eps"), std::string::npos);
}

TEST(ModelConfigTest, FromFileNamesTheFile) {
  TempDir dir;
  StatusOr<ModelConfig> missing = ModelConfig::FromFile(dir.File("nope.json"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir.File("nope.json")), std::string::npos);

  Json j = Json::parse(kDesignExample);
  j["layer"]["d_conv"] = 9;
  WriteBytes(dir.File("config.json"), j.dump());
  StatusOr<ModelConfig> bad = ModelConfig::FromFile(dir.File("config.json"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            dir.File("config.json") + ": layer.d_conv: expected an integer in [1, 8], found 9");

  WriteBytes(dir.File("good.json"), kDesignExample);
  EXPECT_TRUE(ModelConfig::FromFile(dir.File("good.json")).ok());
}

TEST(ModelConfigTest, PresetsHaveTheDocumentedShapes) {
  struct Expected {
    const char* name;
    int d_model, n_layer, dt_rank;
  };
  for (const Expected& e : {Expected{"bench-s", 128, 4, 8}, Expected{"bench-m", 256, 8, 16},
                            Expected{"bench-l", 768, 24, 48}}) {
    SCOPED_TRACE(e.name);
    StatusOr<ModelConfig> c = ModelConfig::Preset(e.name);
    ASSERT_TRUE(c.ok());
    EXPECT_TRUE(c->Validate().ok());
    EXPECT_EQ(c->d_model, e.d_model);
    EXPECT_EQ(c->n_layer, e.n_layer);
    EXPECT_EQ(c->layer.as<MambaParams>().dt_rank, e.dt_rank);
    EXPECT_EQ(c->d_in, 80);
    EXPECT_TRUE(c->frontend.is_log_mel());
    EXPECT_EQ(c->frontend.sample_rate, 16000);
    EXPECT_EQ(c->layer.as<MambaParams>().d_state, 16);
    EXPECT_EQ(c->layer.as<MambaParams>().d_conv, 4);
    EXPECT_EQ(c->layer.as<MambaParams>().expand, 2);
    EXPECT_EQ(c->d_out, 2);
    EXPECT_EQ(c->head_activation, "softmax");
    EXPECT_EQ(c->labels, (std::vector<std::string>{"background", "speech"}));
  }
  StatusOr<ModelConfig> unknown = ModelConfig::Preset("bench-xl");
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.status().code(), StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("bench-s, bench-m, bench-l"), std::string::npos);
}

TEST(ModelConfigTest, ExpectedTensorsFollowTheBiasFlags) {
  ModelConfig c = *ModelConfig::Preset("bench-s");  // conv_bias, no bias, 4 layers
  std::vector<TensorSpec> specs = c.ExpectedTensors();
  ASSERT_EQ(specs.size(), 2u + 4 * 10 + 3);
  EXPECT_EQ(specs.front().name, "input_proj.weight");
  EXPECT_EQ(specs.front().shape, (std::vector<int64_t>{128, 80}));
  EXPECT_EQ(specs[3].name, "backbone.layers.0.mixer.in_proj.weight");
  EXPECT_EQ(specs[3].shape, (std::vector<int64_t>{512, 128}));
  EXPECT_EQ(specs[4].name, "backbone.layers.0.mixer.conv1d.weight");
  EXPECT_EQ(specs[4].shape, (std::vector<int64_t>{256, 1, 4}));
  EXPECT_EQ(specs[6].name, "backbone.layers.0.mixer.x_proj.weight");
  EXPECT_EQ(specs[6].shape, (std::vector<int64_t>{8 + 32, 256}));
  EXPECT_EQ(specs.back().name, "head.bias");

  c.layer.as<MambaParams>().bias = true;
  EXPECT_EQ(c.ExpectedTensors().size(), 2u + 4 * 12 + 3);
  c.layer.as<MambaParams>().conv_bias = false;
  EXPECT_EQ(c.ExpectedTensors().size(), 2u + 4 * 11 + 3);
}

}  // namespace
}  // namespace ssm
