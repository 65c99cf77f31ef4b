// Layer types in config.json: the Mamba-2, linear attention, RetNet and GLA sections and the
// "layers" list of mixed stacks parse, round-trip and give their tensors; each bad setting has a
// message naming its field.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <string>

#include "server/layers/gla/gla.h"
#include "server/layers/linear_attn/linear_attn.h"
#include "server/layers/mamba/mamba.h"
#include "server/layers/mamba2/mamba2.h"
#include "server/layers/retnet/retnet.h"
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
       "layer.type: expected \"mamba\" | \"mamba2\" | \"linear_attn\" | \"retnet\" | \"gla\", "
       "found \"mamba3\""},
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

// A frame model with one gated linear type (fla's defaults unless `extra` sets a field).
Json GatedLinearJson(const std::string& type, const Json& extra = Json::object()) {
  Json j = Json::parse(R"({
    "format": "ssmserve/v1", "frontend": {"type": "none"}, "d_in": 6, "d_model": 256,
    "n_layer": 2, "d_out": 2
  })");
  j["layer"] = {{"type", type}};
  for (const auto& item : extra.items()) j["layer"][item.key()] = item.value();
  return j;
}

std::map<std::string, std::vector<int64_t>> Shapes(const ModelConfig& c) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const TensorSpec& spec : c.ExpectedTensors()) shapes[spec.name] = spec.shape;
  return shapes;
}

TEST(LayerTypesTest, GatedLinearSectionsTakeFlaDefaultsAndRoundTrip) {
  StatusOr<ModelConfig> la = ModelConfig::FromJson(GatedLinearJson("linear_attn").dump());
  ASSERT_TRUE(la.ok()) << la.status().ToString();
  const auto& l = la->layer.as<LinearAttnParams>();
  EXPECT_EQ(l.num_heads, 8);
  EXPECT_EQ(l.expand_k, 1.0);
  EXPECT_EQ(l.expand_v, 1.0);
  EXPECT_EQ(l.feature_map(), FeatureMap::kEluPlusOne);
  EXPECT_EQ(l.output_norm(), "attn.norm");
  EXPECT_EQ(l.decay(), LinearDecay::kNone);
  EXPECT_EQ(l.mlp_size(256), 768);  // 256 * ceil(int(256 * 4 * 2 / 3) / 256)

  StatusOr<ModelConfig> rn = ModelConfig::FromJson(GatedLinearJson("retnet").dump());
  ASSERT_TRUE(rn.ok()) << rn.status().ToString();
  const auto& r = rn->layer.as<RetNetParams>();
  EXPECT_EQ(r.num_heads, 8);
  EXPECT_EQ(r.expand_v, 2.0);
  EXPECT_TRUE(r.use_output_gate);
  EXPECT_TRUE(r.rotary());
  ASSERT_EQ(r.log_gamma().size(), 8u);
  for (int h = 0; h < 8; ++h)  // gamma_h = 1 - 2^(-5 - h)
    EXPECT_FLOAT_EQ(std::exp(r.log_gamma()[h]), float(1 - std::exp2(-5.0 - h))) << h;

  StatusOr<ModelConfig> gl = ModelConfig::FromJson(GatedLinearJson("gla").dump());
  ASSERT_TRUE(gl.ok()) << gl.status().ToString();
  const auto& g = gl->layer.as<GlaParams>();
  EXPECT_EQ(g.num_heads, 4);
  EXPECT_EQ(g.key_dim(256), 128);  // expand_k 0.5
  EXPECT_EQ(g.gate_logit_normalizer, 16);
  EXPECT_EQ(g.gate_low_rank_dim(), 16);
  EXPECT_FALSE(g.has_clamp_min);
  EXPECT_EQ(g.decay(), LinearDecay::kPerKey);

  // Every field written and read back; a set clamp_min and an integer MLP width survive.
  for (const Json& j :
       {GatedLinearJson("linear_attn", {{"feature_map", "relu"}, {"output_norm", "identity"}}),
        GatedLinearJson("retnet", {{"use_output_gate", false}, {"num_heads", 4}}),
        GatedLinearJson("gla",
                        {{"clamp_min", -8.0}, {"intermediate_size", 96}, {"chunk_size", 16}})}) {
    StatusOr<ModelConfig> c = ModelConfig::FromJson(j.dump());
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    StatusOr<ModelConfig> again = ModelConfig::FromJson(c->ToJson());
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(again->ToJson(), c->ToJson());
    const Json written = Json::parse(c->ToJson())["layer"];
    for (const auto& item : j["layer"].items())
      EXPECT_EQ(written.at(item.key()), item.value()) << item.key();
  }
  const Json auto_width = Json::parse(gl->ToJson())["layer"];
  EXPECT_EQ(auto_width.at("intermediate_size"), "auto");
  EXPECT_FALSE(auto_width.contains("clamp_min"));  // absent: no clamp
  EXPECT_NE(gl->ToString().find("gla(num_heads=4 expand_k=0.5 expand_v=1"), std::string::npos)
      << gl->ToString();
}

TEST(LayerTypesTest, GatedLinearTensorsHaveFlaNamesAndShapes) {
  const std::string L = "backbone.layers.1.";
  {
    // GLA at d_model 256: K_t 128, V_t 256, 4 heads of 32 x 64, r 16, MLP 768.
    ModelConfig c = *ModelConfig::FromJson(GatedLinearJson("gla").dump());
    const auto shapes = Shapes(c);
    EXPECT_EQ(shapes.at(L + "attn_norm.weight"), (std::vector<int64_t>{256}));
    EXPECT_EQ(shapes.at(L + "attn.q_proj.weight"), (std::vector<int64_t>{128, 256}));
    EXPECT_EQ(shapes.at(L + "attn.k_proj.weight"), (std::vector<int64_t>{128, 256}));
    EXPECT_EQ(shapes.at(L + "attn.v_proj.weight"), (std::vector<int64_t>{256, 256}));
    EXPECT_EQ(shapes.at(L + "attn.g_proj.weight"), (std::vector<int64_t>{256, 256}));
    EXPECT_EQ(shapes.at(L + "attn.gk_proj.0.weight"), (std::vector<int64_t>{16, 256}));
    EXPECT_EQ(shapes.at(L + "attn.gk_proj.1.weight"), (std::vector<int64_t>{128, 16}));
    EXPECT_EQ(shapes.at(L + "attn.gk_proj.1.bias"), (std::vector<int64_t>{128}));
    EXPECT_EQ(shapes.at(L + "attn.g_norm_swish_gate.weight"), (std::vector<int64_t>{64}));
    EXPECT_EQ(shapes.at(L + "attn.o_proj.weight"), (std::vector<int64_t>{256, 256}));
    EXPECT_EQ(shapes.at(L + "mlp_norm.weight"), (std::vector<int64_t>{256}));
    EXPECT_EQ(shapes.at(L + "mlp.gate_proj.weight"), (std::vector<int64_t>{768, 256}));
    EXPECT_EQ(shapes.at(L + "mlp.up_proj.weight"), (std::vector<int64_t>{768, 256}));
    EXPECT_EQ(shapes.at(L + "mlp.down_proj.weight"), (std::vector<int64_t>{256, 768}));
    EXPECT_EQ(shapes.size(), 5u + 2 * 14);  // input_proj 2, norm_f 1, head 2
    auto model = MakeRandomModel(c, 1);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    EXPECT_EQ((*model)->state_bytes_per_stream(), 2 * (4 * 32 * 64) * sizeof(float));
  }
  {
    // RetNet without the gate and without MLP: g_norm, no g_proj; S (8, 64, 32) plus the
    // frame counter.
    ModelConfig c = *ModelConfig::FromJson(
        GatedLinearJson("retnet", {{"use_output_gate", false}, {"intermediate_size", 0}}).dump());
    const auto shapes = Shapes(c);
    EXPECT_EQ(shapes.at(L + "attn.v_proj.weight"), (std::vector<int64_t>{512, 256}));
    EXPECT_EQ(shapes.at(L + "attn.g_norm.weight"), (std::vector<int64_t>{64}));
    EXPECT_EQ(shapes.count(L + "attn.g_proj.weight"), 0u);
    EXPECT_EQ(shapes.count(L + "mlp_norm.weight"), 0u);
    EXPECT_EQ(shapes.at(L + "attn.o_proj.weight"), (std::vector<int64_t>{256, 512}));
    EXPECT_EQ(shapes.size(), 5u + 2 * 6);
    auto model = MakeRandomModel(c, 1);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    EXPECT_EQ((*model)->state_bytes_per_stream(),
              2 * (8 * 32 * 64 + kRotaryStateFloats) * sizeof(float));
  }
  {
    // Linear attention with output_norm "identity": no norm tensor.
    ModelConfig c = *ModelConfig::FromJson(
        GatedLinearJson("linear_attn", {{"output_norm", "identity"}}).dump());
    const auto shapes = Shapes(c);
    EXPECT_EQ(shapes.count(L + "attn.norm.weight"), 0u);
    EXPECT_EQ(shapes.at(L + "attn.q_proj.weight"), (std::vector<int64_t>{256, 256}));
    EXPECT_EQ(shapes.size(), 5u + 2 * 9);
    ModelConfig normed = *ModelConfig::FromJson(GatedLinearJson("linear_attn").dump());
    EXPECT_EQ(Shapes(normed).at(L + "attn.norm.weight"), (std::vector<int64_t>{32}));
  }
}

TEST(LayerTypesTest, EachBadGatedLinearSettingNamesItsField) {
  struct Bad {
    std::string type;
    Json extra;
    std::string message;
  };
  const std::vector<Bad> cases = {
      {"gla",
       {{"num_heads", 3}},
       "layer.num_heads: expected a divisor of key_dim (d_model * expand_k, 128), found 3"},
      {"linear_attn",
       {{"num_heads", 512}},
       "layer.num_heads: expected a divisor of key_dim (d_model * expand_k, 256), found 512"},
      {"retnet",
       {{"expand_v", 1.5}, {"num_heads", 256}},
       "layer.num_heads: expected a divisor of value_dim (d_model * expand_v, 384), found 256"},
      {"gla",
       {{"expand_k", 0.3}},
       "layer.expand_k: expected a positive number whose product with d_model (256) is an "
       "integer of at most 65536, found 0.3"},
      {"gla", {{"expand_v", 0}}, "layer.expand_v: expected a positive number"},
      {"retnet",
       {{"num_heads", 256}},
       "layer.expand_k: the rotary encoding needs an even head_k_dim (d_model * expand_k / "
       "num_heads), found 1"},
      {"linear_attn",
       {{"feature_map", "hedgehog"}},
       "layer.feature_map: expected \"identity\" | \"relu\" | \"elu\", found \"hedgehog\""},
      {"linear_attn",
       {{"output_norm", "layernorm"}},
       "layer.output_norm: expected \"rmsnorm\" | \"identity\", found \"layernorm\""},
      {"linear_attn", {{"norm_q", true}}, "layer.norm_q: not supported"},
      {"linear_attn", {{"do_feature_map_norm", false}}, "layer.do_feature_map_norm: not supported"},
      {"linear_attn", {{"tie_feature_map_qk", true}}, "layer.tie_feature_map_qk: not supported"},
      {"gla",
       {{"clamp_min", 0.5}},
       "layer.clamp_min: expected a negative number (a bound on the log decay), found 0.5"},
      {"gla",
       {{"gate_low_rank_dim", 0}},
       "layer.gate_low_rank_dim: expected an integer in [1, 65536], found 0"},
      {"gla",
       {{"gate_logit_normalizer", 0}},
       "layer.gate_logit_normalizer: expected an integer in [1, 65536], found 0"},
      {"gla",
       {{"intermediate_size", "big"}},
       "layer.intermediate_size: expected \"auto\" or an integer, found \"big\""},
      {"retnet",
       {{"intermediate_size", -3}},
       "layer.intermediate_size: expected an integer in [0, 65536], found -3"},
      {"retnet",
       {{"hidden_ratio", 0}},
       "layer.hidden_ratio: expected an integer in [1, 64], found 0"},
      {"retnet",
       {{"chunk_size", 0}},
       "layer.chunk_size: expected an integer in [1, 65536], found 0"},
      {"retnet", {{"gate_low_rank_dim", 16}}, "layer.gate_low_rank_dim: unknown field"},
      {"gla", {{"feature_map", "elu"}}, "layer.feature_map: unknown field"},
      {"linear_attn", {{"use_output_gate", true}}, "layer.use_output_gate: unknown field"},
      {"gla", {{"d_state", 16}}, "layer.d_state: unknown field"},
      {"retnet",
       {{"num_heads", 1}, {"expand_k", 64}, {"expand_v", 64}},
       "layer.num_heads: the state of 1 heads of 16384 x 16384 exceeds 67108864 floats"},
  };
  for (const Bad& bad : cases) {
    StatusOr<ModelConfig> c = ModelConfig::FromJson(GatedLinearJson(bad.type, bad.extra).dump());
    ASSERT_FALSE(c.ok()) << bad.message;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find(bad.message), std::string::npos)
        << "expected: " << bad.message << "\n   found: " << c.status().message();
  }
}

TEST(LayerTypesTest, AGatedLinearTensorOfTheWrongShapeIsNamed) {
  ModelConfig c = *ModelConfig::FromJson(GatedLinearJson("gla").dump());
  auto good = MakeRandomModel(c, 2);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  for (const auto& [name, shape] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"backbone.layers.0.attn.gk_proj.1.bias", {64}},
           {"backbone.layers.1.attn.g_norm_swish_gate.weight", {256}},  // d_model, not head_v_dim
           {"backbone.layers.1.mlp.down_proj.weight", {768, 256}}}) {
    std::map<std::string, Tensor> tensors = (*good)->tensors();
    Tensor& t = tensors.at(name);
    const std::vector<int64_t> expected = t.shape;
    t.shape = shape;
    t.data.resize(size_t(
        std::accumulate(shape.begin(), shape.end(), int64_t(1), std::multiplies<int64_t>())));
    auto bad = Model::FromTensors(c, tensors);
    ASSERT_FALSE(bad.ok()) << name;
    EXPECT_NE(bad.status().message().find("tensor '" + name + "': expected shape"),
              std::string::npos)
        << bad.status().message();
  }
}

TEST(LayerTypesTest, RandomGatedLinearWeightsAreSeededAndNormsStartNearOne) {
  ModelConfig c = *ModelConfig::FromJson(GatedLinearJson("gla").dump());
  auto a = MakeRandomModel(c, 5), b = MakeRandomModel(c, 5), other = MakeRandomModel(c, 6);
  ASSERT_TRUE(a.ok() && b.ok() && other.ok());
  EXPECT_TRUE(DigestsEqual((*a)->fingerprint(), (*b)->fingerprint()));
  EXPECT_FALSE(DigestsEqual((*a)->fingerprint(), (*other)->fingerprint()));
  for (const char* norm : {"attn_norm.weight", "mlp_norm.weight", "attn.g_norm_swish_gate.weight"})
    for (float v : (*a)->tensor(std::string("backbone.layers.0.") + norm).data)
      EXPECT_NEAR(v, 1.0f, 0.1001) << norm;  // 1 + U(-0.1, 0.1), as every norm weight
  std::set<float> distinct;
  for (float v : (*a)->tensor("backbone.layers.0.attn.q_proj.weight").data) distinct.insert(v);
  EXPECT_GT(distinct.size(), 1000u);
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
  for (const char* type : {"linear_attn", "retnet", "gla"}) {
    for (const char* size : {"s", "m", "l"}) {
      const std::string name = std::string("bench-") + size + "-" + type;
      StatusOr<ModelConfig> c = ModelConfig::Preset(name);
      ASSERT_TRUE(c.ok()) << name << ": " << c.status().ToString();
      EXPECT_EQ(c->layer.type(), type);
      EXPECT_TRUE(c->Validate().ok()) << name;
    }
  }
  // bench-m-gla: fla's GLA defaults at 256 x 8, MLP included.
  const ModelConfig gla = *ModelConfig::Preset("bench-m-gla");
  EXPECT_EQ(gla.d_model, 256);
  EXPECT_EQ(gla.n_layer, 8);
  EXPECT_EQ(gla.layer.as<GlaParams>().num_heads, 4);
  EXPECT_EQ(gla.layer.as<GlaParams>().mlp_size(256), 768);
  StatusOr<ModelConfig> unknown = ModelConfig::Preset("bench-m-rwkv7");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("bench-m-mamba2"), std::string::npos);
  EXPECT_NE(unknown.status().message().find("bench-m-gla"), std::string::npos);
}

}  // namespace
}  // namespace ssm
