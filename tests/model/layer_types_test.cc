// Layer types in config.json: the Mamba-2 section and the "layers" list of mixed stacks parse,
// round-trip and give their tensors; each bad setting has a message naming its field.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "server/layers/mamba/mamba.h"
#include "server/layers/mamba2/mamba2.h"
#include "server/model/model.h"
#include "server/model/model_config.h"
#include "server/model/random_model.h"

namespace ssm {
namespace {

using Json = nlohmann::json;

// A frame model with the Mamba-2 section of the mamba_ssm defaults but d_state 64.
Json Mamba2Json() {
  return Json::parse(R"({
    "format": "ssmserve/v1", "frontend": {"type": "none"}, "d_in": 6, "d_model": 256,
    "n_layer": 2, "d_out": 2,
    "layer": {"type": "mamba2", "d_state": 64, "d_conv": 4, "expand": 2, "headdim": 64,
              "ngroups": 1, "chunk_size": 256, "conv_bias": true, "bias": false,
              "norm_before_gate": false}
  })");
}

TEST(LayerTypesTest, Mamba2SectionParsesWithItsDefaultsAndRoundTrips) {
  StatusOr<ModelConfig> c = ModelConfig::FromJson(Mamba2Json().dump());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const auto& p = c->layer.as<Mamba2Params>();
  EXPECT_EQ(p.d_state, 64);
  EXPECT_EQ(p.heads(256), 8);
  EXPECT_EQ(p.conv_channels(256), 512 + 2 * 64);
  StatusOr<ModelConfig> again = ModelConfig::FromJson(c->ToJson());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->ToJson(), c->ToJson());
  EXPECT_NE(c->ToString().find("mamba2(d_state=64 d_conv=4 expand=2 headdim=64 ngroups=1"),
            std::string::npos)
      << c->ToString();

  // Absent fields take the mamba_ssm Mamba2 defaults.
  Json j = Mamba2Json();
  j["layer"] = {{"type", "mamba2"}};
  StatusOr<ModelConfig> defaults = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(defaults.ok()) << defaults.status().ToString();
  const auto& d = defaults->layer.as<Mamba2Params>();
  EXPECT_EQ(d.d_state, 128);
  EXPECT_EQ(d.headdim, 64);
  EXPECT_EQ(d.ngroups, 1);
  EXPECT_EQ(d.chunk_size, 256);
  EXPECT_FALSE(d.norm_before_gate);
}

TEST(LayerTypesTest, Mamba2TensorsHaveTheMambaSsmNamesAndShapes) {
  ModelConfig c = *ModelConfig::FromJson(Mamba2Json().dump());
  c.layer.as<Mamba2Params>().ngroups = 2;
  c.layer.as<Mamba2Params>().bias = true;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const TensorSpec& spec : c.ExpectedTensors()) shapes[spec.name] = spec.shape;
  const std::string m = "backbone.layers.1.mixer.";
  // E = 512, G = 2, N = 64, H = 8: in_proj has 2E + 2GN + H = 1288 rows.
  EXPECT_EQ(shapes.at("backbone.layers.1.norm.weight"), (std::vector<int64_t>{256}));
  EXPECT_EQ(shapes.at(m + "in_proj.weight"), (std::vector<int64_t>{1288, 256}));
  EXPECT_EQ(shapes.at(m + "in_proj.bias"), (std::vector<int64_t>{1288}));
  EXPECT_EQ(shapes.at(m + "conv1d.weight"), (std::vector<int64_t>{768, 1, 4}));
  EXPECT_EQ(shapes.at(m + "conv1d.bias"), (std::vector<int64_t>{768}));
  EXPECT_EQ(shapes.at(m + "dt_bias"), (std::vector<int64_t>{8}));
  EXPECT_EQ(shapes.at(m + "A_log"), (std::vector<int64_t>{8}));
  EXPECT_EQ(shapes.at(m + "D"), (std::vector<int64_t>{8}));
  EXPECT_EQ(shapes.at(m + "norm.weight"), (std::vector<int64_t>{512}));
  EXPECT_EQ(shapes.at(m + "out_proj.weight"), (std::vector<int64_t>{256, 512}));
  EXPECT_EQ(shapes.at(m + "out_proj.bias"), (std::vector<int64_t>{256}));
  EXPECT_EQ(shapes.size(), 2u + 2 * 11 + 3);

  // State per stream: the conv tail (3, 768) and S (8, 64, 64) per layer; no frontend carry.
  auto model = MakeRandomModel(c, 1);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->state_bytes_per_stream(), 2 * (3 * 768 + 8 * 64 * 64) * sizeof(float));
}

TEST(LayerTypesTest, RandomMamba2WeightsFollowTheMambaSsmInitialisation) {
  ModelConfig c = *ModelConfig::FromJson(Mamba2Json().dump());
  auto a = MakeRandomModel(c, 5), b = MakeRandomModel(c, 5), other = MakeRandomModel(c, 6);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  EXPECT_TRUE(DigestsEqual((*a)->fingerprint(), (*b)->fingerprint()));
  EXPECT_FALSE(DigestsEqual((*a)->fingerprint(), (*other)->fingerprint()));
  const std::string m = "backbone.layers.0.mixer.";
  std::set<float> distinct;
  for (float v : (*a)->tensor(m + "A_log").data) {  // A = exp(A_log) in [1, 16]
    EXPECT_GE(v, 0.0f);
    EXPECT_LE(v, std::log(16.0f));
    distinct.insert(v);
  }
  EXPECT_GT(distinct.size(), 4u);
  for (float v : (*a)->tensor(m + "dt_bias").data) {  // softplus(dt_bias) in [1e-4, 0.1]
    const double dt = std::log1p(std::exp(double(v)));
    EXPECT_GE(dt, 0.9e-4);
    EXPECT_LE(dt, 0.1001);
  }
  for (float v : (*a)->tensor(m + "D").data) EXPECT_NEAR(v, 1.0, 0.3);
}

TEST(LayerTypesTest, LayersListGivesEachLayerItsOwnType) {
  Json j = Mamba2Json();
  j.erase("layer");
  j["n_layer"] = 3;
  j["layers"] = Json::parse(R"([{"type": "mamba", "d_state": 8},
                                {"type": "mamba2", "d_state": 16, "headdim": 32},
                                {"d_conv": 2}])");
  StatusOr<ModelConfig> c = ModelConfig::FromJson(j.dump());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->layer_params(0).type(), "mamba");
  EXPECT_EQ(c->layer_params(1).type(), "mamba2");
  EXPECT_EQ(c->layer_params(2).type(), "mamba");          // "type" defaults to "mamba"
  EXPECT_EQ(c->layers[0].as<MambaParams>().dt_rank, 16);  // "auto": ceil(256 / 16)
  EXPECT_EQ(c->layers[2].as<MambaParams>().d_conv, 2);
  std::set<std::string> names;
  for (const TensorSpec& spec : c->ExpectedTensors()) names.insert(spec.name);
  EXPECT_TRUE(names.count("backbone.layers.0.mixer.x_proj.weight"));
  EXPECT_TRUE(names.count("backbone.layers.1.mixer.dt_bias"));
  EXPECT_FALSE(names.count("backbone.layers.1.mixer.x_proj.weight"));
  EXPECT_TRUE(names.count("backbone.layers.2.mixer.dt_proj.bias"));
  StatusOr<ModelConfig> again = ModelConfig::FromJson(c->ToJson());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->ToJson(), c->ToJson());
  EXPECT_NE(c->ToString().find("1x mamba(d_state=8"), std::string::npos) << c->ToString();
  EXPECT_NE(c->ToString().find(", 1x mamba2(d_state=16"), std::string::npos) << c->ToString();
}

TEST(LayerTypesTest, EachBadLayerSettingNamesItsField) {
  struct Bad {
    std::function<void(Json&)> mutate;
    std::string message;
  };
  const std::vector<Bad> cases = {
      {[](Json& j) { j["layer"]["headdim"] = 48; },
       "layer.headdim: expected a divisor of expand * d_model (512), found 48"},
      {[](Json& j) { j["layer"]["ngroups"] = 3; },
       "layer.ngroups: expected a divisor of the number of heads (8 = expand * d_model / "
       "headdim), found 3"},
      {[](Json& j) { j["layer"]["headdim"] = 0; },
       "layer.headdim: expected an integer in [1, 65536], found 0"},
      {[](Json& j) { j["layer"]["chunk_size"] = 0; },
       "layer.chunk_size: expected an integer in [1, 65536], found 0"},
      {[](Json& j) { j["layer"]["d_state"] = 257; },
       "layer.d_state: expected an integer in [1, 256], found 257"},
      {[](Json& j) { j["layer"]["norm_before_gate"] = 1; },
       "layer.norm_before_gate: expected true or false, found an integer (1)"},
      {[](Json& j) { j["layer"]["dt_rank"] = 4; },  // a Mamba-1 field
       "layer.dt_rank: unknown field"},
      {[](Json& j) { j["layer"]["type"] = "mamba3"; },
       "layer.type: expected \"mamba\" | \"mamba2\", found \"mamba3\""},
      {[](Json& j) {
         j["layers"] = Json::array({j["layer"], j["layer"]});
       },
       "layers: give either \"layer\" (the same for every layer) or \"layers\" (one per layer), "
       "not both"},
      {[](Json& j) {
         j["layers"] = Json::array({j["layer"]});
         j.erase("layer");
       },
       "layers: expected n_layer (2) entries, found 1"},
      {[](Json& j) {
         j["layers"] = Json::array({j["layer"], j["layer"]});
         j["layers"][1]["headdim"] = 100;
         j.erase("layer");
       },
       "layers[1].headdim: expected a divisor of expand * d_model (512), found 100"},
      {[](Json& j) {
         j["layers"] = Json::array({j["layer"], 7});
         j.erase("layer");
       },
       "layers[1]: expected an object, found an integer (7)"},
  };
  for (const Bad& bad : cases) {
    Json j = Mamba2Json();
    bad.mutate(j);
    StatusOr<ModelConfig> c = ModelConfig::FromJson(j.dump());
    ASSERT_FALSE(c.ok()) << bad.message;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(bad.message), std::string::npos)
        << "expected: " << bad.message << "\n   found: " << c.status().message();
  }
}

TEST(LayerTypesTest, AMamba2TensorOfTheWrongShapeIsNamed) {
  ModelConfig c = *ModelConfig::FromJson(Mamba2Json().dump());
  auto good = MakeRandomModel(c, 2);
  ASSERT_TRUE(good.ok());
  std::map<std::string, Tensor> tensors = (*good)->tensors();
  Tensor& a_log = tensors.at("backbone.layers.1.mixer.A_log");
  a_log.shape = {8, 1};  // Mamba-1's (E, N) habit
  auto bad = Model::FromTensors(c, tensors);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "tensor 'backbone.layers.1.mixer.A_log': expected shape [8], found [8, 1]");
}

TEST(LayerTypesTest, PresetsExistForEveryLayerType) {
  for (const char* name : {"bench-s-mamba2", "bench-m-mamba2", "bench-l-mamba2"}) {
    StatusOr<ModelConfig> c = ModelConfig::Preset(name);
    ASSERT_TRUE(c.ok()) << name << ": " << c.status().ToString();
    EXPECT_EQ(c->layer.type(), "mamba2");
    EXPECT_EQ(c->layer.as<Mamba2Params>().d_state, 128);  // the mamba_ssm default
    EXPECT_TRUE(c->Validate().ok()) << name;
  }
  EXPECT_EQ(ModelConfig::Preset("bench-m-mamba2")->d_model, 256);
  StatusOr<ModelConfig> unknown = ModelConfig::Preset("bench-m-gla");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("bench-m-mamba2"), std::string::npos);
}

}  // namespace
}  // namespace ssm
