// Model: validation on build, Save/Load round trip, preset sizes, deterministic random weights.
#include "server/model/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include "server/layers/mamba/mamba.h"
#include "server/model/random_model.h"
#include "server/model/safetensors.h"
#include "tests/model/test_files.h"

namespace ssm {
namespace {

using testing_util::TempDir;
using testing_util::WriteBytes;

// A tiny log-mel model: d_in = n_mels = 8, d_model 16, 2 layers, E = 32.
ModelConfig SmallConfig() {
  ModelConfig c;
  c.frontend.n_mels = 8;
  c.d_in = 8;
  c.d_model = 16;
  c.n_layer = 2;
  c.layer.as<MambaParams>().dt_rank = 2;
  c.layer.as<MambaParams>().d_state = 4;
  c.d_out = 3;
  c.head_activation = "sigmoid";
  c.labels = {};
  return c;
}

std::map<std::string, Tensor> RandomTensors(const ModelConfig& config, uint64_t seed) {
  StatusOr<std::shared_ptr<const Model>> model = MakeRandomModel(config, seed);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return (*model)->tensors();
}

void ExpectError(const Status& status, StatusCode code, const std::string& substring) {
  EXPECT_EQ(status.code(), code) << status.ToString();
  EXPECT_NE(status.message().find(substring), std::string::npos)
      << "got: " << status.message() << "\nwant: " << substring;
}

TEST(ModelTest, SaveLoadRoundTripIsExact) {
  for (bool bias : {false, true}) {
    SCOPED_TRACE(bias ? "bias" : "no bias");
    ModelConfig config = SmallConfig();
    config.layer.as<MambaParams>().bias = bias;
    config.layer.as<MambaParams>().conv_bias = !bias;
    StatusOr<std::shared_ptr<const Model>> model = MakeRandomModel(config, 3);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    TempDir dir;
    const std::string model_dir = dir.File("nested/model");  // Save creates directories
    ASSERT_TRUE((*model)->Save(model_dir).ok());

    StatusOr<std::shared_ptr<const Model>> loaded = Model::Load(model_dir);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    EXPECT_EQ((*loaded)->config().ToJson(), config.ToJson());
    ASSERT_EQ((*loaded)->tensors().size(), (*model)->tensors().size());
    for (const auto& [name, t] : (*model)->tensors()) {
      EXPECT_EQ((*loaded)->tensor(name).shape, t.shape) << name;
      EXPECT_EQ((*loaded)->tensor(name).data, t.data) << name;
    }
  }
}

TEST(ModelTest, NoneFrontendKeepsMeanAndStd) {
  ModelConfig config = SmallConfig();
  config.frontend = FrontendConfig();
  config.frontend.type = "none";
  config.frontend.mean.assign(8, 0.5f);
  config.frontend.std.assign(8, 2.0f);
  config.frontend.frame_rate = 25;
  StatusOr<std::shared_ptr<const Model>> model = MakeRandomModel(config, 1);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->config().frontend.mean, config.frontend.mean);
  EXPECT_EQ((*model)->config().frontend.std, config.frontend.std);
  TempDir dir;
  ASSERT_TRUE((*model)->Save(dir.path()).ok());
  StatusOr<std::shared_ptr<const Model>> loaded = Model::Load(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->config().frontend.std, config.frontend.std);
  EXPECT_DOUBLE_EQ((*loaded)->config().frame_rate(), 25.0);
}

TEST(ModelTest, FromTensorsRejectsMissingTensor) {
  std::map<std::string, Tensor> tensors = RandomTensors(SmallConfig(), 1);
  tensors.erase("backbone.layers.1.mixer.D");
  ExpectError(Model::FromTensors(SmallConfig(), tensors).status(), StatusCode::kInvalidArgument,
              "missing 1 tensor(s) that the config requires: 'backbone.layers.1.mixer.D' [32]");
}

TEST(ModelTest, FromTensorsRejectsExtraTensors) {
  std::map<std::string, Tensor> tensors = RandomTensors(SmallConfig(), 1);
  tensors["backbone.layers.0.mixer.in_proj.bias"] = Tensor{{64}, std::vector<float>(64)};
  tensors["lm_head.weight"] = Tensor{{1}, {0.0f}};
  ExpectError(Model::FromTensors(SmallConfig(), tensors).status(), StatusCode::kInvalidArgument,
              "2 unexpected tensor(s) that the config does not use: "
              "'backbone.layers.0.mixer.in_proj.bias', 'lm_head.weight'");
}

TEST(ModelTest, FromTensorsReportsMissingAndExtraTogether) {
  std::map<std::string, Tensor> tensors = RandomTensors(SmallConfig(), 1);
  tensors["head.weights"] = tensors["head.weight"];  // a misnamed tensor
  tensors.erase("head.weight");
  ExpectError(Model::FromTensors(SmallConfig(), tensors).status(), StatusCode::kInvalidArgument,
              "'head.weight' [3, 16]; unexpected tensor(s) in the file: 'head.weights'");
}

TEST(ModelTest, FromTensorsRejectsWrongShape) {
  std::map<std::string, Tensor> tensors = RandomTensors(SmallConfig(), 1);
  tensors["backbone.layers.0.mixer.A_log"] = Tensor{{32, 8}, std::vector<float>(256, 1.0f)};
  ExpectError(Model::FromTensors(SmallConfig(), tensors).status(), StatusCode::kInvalidArgument,
              "tensor 'backbone.layers.0.mixer.A_log': expected shape [32, 4], found [32, 8]");
}

TEST(ModelTest, FromTensorsRejectsDataNotMatchingShape) {
  std::map<std::string, Tensor> tensors = RandomTensors(SmallConfig(), 1);
  tensors["head.bias"].data.push_back(0.0f);
  ExpectError(Model::FromTensors(SmallConfig(), tensors).status(), StatusCode::kInvalidArgument,
              "tensor 'head.bias': shape [3] needs 3 floats, data has 4");
}

TEST(ModelTest, FromTensorsRejectsNanAndInf) {
  std::map<std::string, Tensor> tensors = RandomTensors(SmallConfig(), 1);
  tensors["backbone.layers.1.mixer.x_proj.weight"].data[17] = NAN;
  ExpectError(Model::FromTensors(SmallConfig(), tensors).status(), StatusCode::kInvalidArgument,
              "tensor 'backbone.layers.1.mixer.x_proj.weight': nan at flat index 17");
  tensors = RandomTensors(SmallConfig(), 1);
  tensors["input_proj.bias"].data[2] = -INFINITY;
  ExpectError(Model::FromTensors(SmallConfig(), tensors).status(), StatusCode::kInvalidArgument,
              "tensor 'input_proj.bias': -inf at flat index 2");
}

TEST(ModelTest, FromTensorsValidatesTheConfig) {
  ModelConfig config = SmallConfig();
  config.layer.as<MambaParams>().d_conv = 0;
  ExpectError(Model::FromTensors(config, {}).status(), StatusCode::kInvalidArgument,
              "layer.d_conv: expected an integer in [1, 8], found 0");
}

// Writes a model directory whose files the test then breaks.
class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = *MakeRandomModel(SmallConfig(), 5);
    ASSERT_TRUE(model_->Save(dir_.path()).ok());
  }
  std::string Weights() const { return dir_.File(kModelWeightsFile); }
  // Rewrites model.safetensors from the model's tensors after `edit`.
  void RewriteWeights(const std::function<void(std::map<std::string, Tensor>&)>& edit) {
    std::map<std::string, Tensor> tensors = model_->tensors();
    edit(tensors);
    std::vector<NamedTensor> named;
    for (const auto& [name, t] : tensors) named.push_back({name, t.shape, t.data.data()});
    ASSERT_TRUE(WriteSafetensors(Weights(), named).ok());
  }

  TempDir dir_;
  std::shared_ptr<const Model> model_;
};

TEST_F(ModelDirTest, LoadNamesTheFileOfEachError) {
  RewriteWeights([](auto& t) { t.erase("backbone.norm_f.weight"); });
  ExpectError(Model::Load(dir_.path()).status(), StatusCode::kInvalidArgument,
              Weights() +
                  ": missing 1 tensor(s) that the config requires: "
                  "'backbone.norm_f.weight' [16]");

  RewriteWeights([](auto& t) { t["extra"] = Tensor{{2}, {1.0f, 2.0f}}; });
  ExpectError(Model::Load(dir_.path()).status(), StatusCode::kInvalidArgument,
              Weights() + ": 1 unexpected tensor(s) that the config does not use: 'extra'");

  RewriteWeights([](auto& t) { t["head.bias"] = Tensor{{1, 3}, {1.0f, 2.0f, 3.0f}}; });
  ExpectError(Model::Load(dir_.path()).status(), StatusCode::kInvalidArgument,
              Weights() + ": tensor 'head.bias': expected shape [3], found [1, 3]");

  RewriteWeights([](auto& t) { t["head.weight"].data[40] = NAN; });
  ExpectError(Model::Load(dir_.path()).status(), StatusCode::kInvalidArgument,
              Weights() + ": tensor 'head.weight': nan at flat index 40");
}

TEST_F(ModelDirTest, LoadRejectsUnknownConfigField) {
  std::string json = model_->config().ToJson();
  json.insert(json.find('{') + 1, "\"dmodel\": 16,");
  WriteBytes(dir_.File(kModelConfigFile), json);
  ExpectError(Model::Load(dir_.path()).status(), StatusCode::kInvalidArgument,
              dir_.File(kModelConfigFile) + ": dmodel: unknown field (did you mean \"d_model\"?)");
}

TEST_F(ModelDirTest, LoadReportsMissingFilesAsNotFound) {
  std::filesystem::remove(Weights());
  ExpectError(Model::Load(dir_.path()).status(), StatusCode::kNotFound, Weights());
  std::filesystem::remove(dir_.File(kModelConfigFile));
  ExpectError(Model::Load(dir_.path()).status(), StatusCode::kNotFound,
              dir_.File(kModelConfigFile));
  ExpectError(Model::Load(dir_.File("absent")).status(), StatusCode::kNotFound,
              "model directory does not exist");
}

TEST_F(ModelDirTest, LoadRejectsCorruptWeights) {
  WriteBytes(Weights(), "garbage");
  ExpectError(Model::Load(dir_.path()).status(), StatusCode::kInvalidArgument,
              Weights() + ": file is 7 bytes");
}

TEST(ModelDeathTest, UnknownTensorNameIsABug) {
  std::shared_ptr<const Model> model = *MakeRandomModel(SmallConfig(), 1);
  EXPECT_DEATH(model->tensor("nope"), "no tensor nope");
}

TEST(ModelTest, BenchPresetsHaveTheDocumentedSizes) {
  // Counts from docs/design.md §2 shapes, computed independently of the code.
  struct Expected {
    const char* name;
    int64_t parameters;
    size_t state_bytes;
    double flops;
  };
  for (const Expected& e :
       {Expected{"bench-s", 477186, 79424, 1028608}, Expected{"bench-m", 3525634, 312896, 7349248},
        Expected{"bench-l", 90584066, 2803264, 183856128}}) {
    SCOPED_TRACE(e.name);
    const ModelConfig config = *ModelConfig::Preset(e.name);
    int64_t from_specs = 0;
    for (const TensorSpec& spec : config.ExpectedTensors()) {
      int64_t n = 1;
      for (int64_t d : spec.shape) n *= d;
      from_specs += n;
    }
    EXPECT_EQ(from_specs, e.parameters);
    if (std::string(e.name) == "bench-l") continue;  // 360 MB: too big to build in a unit test
    std::shared_ptr<const Model> model = *MakeRandomModel(config, 1);
    EXPECT_EQ(model->parameter_count(), e.parameters);
    EXPECT_EQ(model->state_bytes_per_stream(), e.state_bytes);
    EXPECT_DOUBLE_EQ(model->flops_per_frame(), e.flops);
    EXPECT_EQ(model->tensor("backbone.layers.0.mixer.x_proj.weight").shape.size(), 2u);
  }
}

TEST(ModelTest, RandomModelsAreDeterministicPerSeed) {
  const auto a = RandomTensors(SmallConfig(), 42);
  const auto b = RandomTensors(SmallConfig(), 42);
  const auto c = RandomTensors(SmallConfig(), 43);
  for (const auto& [name, t] : a) {
    EXPECT_EQ(t.data, b.at(name).data) << name;
    EXPECT_NE(t.data, c.at(name).data) << name;
  }
}

TEST(ModelTest, RandomWeightsArePinned) {
  // input_proj.weight is U(-1/sqrt(8), 1/sqrt(8)) from the first draws of mt19937_64(42): exact
  // arithmetic only, so these values must not change with the platform or standard library.
  const std::map<std::string, Tensor> tensors = RandomTensors(SmallConfig(), 42);
  const std::vector<float>& w = tensors.at("input_proj.weight").data;
  EXPECT_FLOAT_EQ(w[0], 0.180422202f);
  EXPECT_FLOAT_EQ(w[1], 0.0983100384f);
  EXPECT_FLOAT_EQ(w[127], -0.14784728f);
}

TEST(ModelTest, RandomModelsLookLikeMamba) {
  const ModelConfig config = SmallConfig();
  const auto t = RandomTensors(config, 7);
  const int e = config.layer.as<MambaParams>().expand * config.d_model,
            n = config.layer.as<MambaParams>().d_state;
  for (int layer = 0; layer < config.n_layer; ++layer) {
    const std::string m = "backbone.layers." + std::to_string(layer) + ".mixer.";
    const std::vector<float>& a_log = t.at(m + "A_log").data;  // (E, N) ~ log(1..N)
    for (int i = 0; i < e; ++i) {
      for (int j = 0; j < n; ++j) EXPECT_NEAR(a_log[i * n + j], std::log(j + 1.0), 0.3);
    }
    for (float d : t.at(m + "D").data) EXPECT_NEAR(d, 1.0, 0.3);
    for (float b : t.at(m + "dt_proj.bias").data) {
      const double dt = std::log1p(std::exp(b));  // softplus
      EXPECT_GE(dt, 1e-3 * 0.999);
      EXPECT_LE(dt, 0.1 * 1.001);
    }
    const double bound = 1.0 / std::sqrt(static_cast<double>(config.d_model));
    for (float w : t.at(m + "in_proj.weight").data) EXPECT_LE(std::abs(w), bound);
    const std::vector<float>& conv = t.at(m + "conv1d.weight").data;
    for (float w : conv) EXPECT_LE(std::abs(w), 0.5);  // 1 / sqrt(d_conv)
  }
  bool all_ones = true;
  for (float w : t.at("backbone.norm_f.weight").data) {
    EXPECT_NEAR(w, 1.0, 0.1);
    all_ones = all_ones && w == 1.0f;
  }
  EXPECT_FALSE(all_ones) << "norm weights should differ from 1 so tests exercise them";
}

}  // namespace
}  // namespace ssm
