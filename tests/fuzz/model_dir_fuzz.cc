// A whole model directory (Model::Load: config.json and model.safetensors together) on any bytes:
// the input is a 4-byte little-endian length L, L bytes of config.json, then model.safetensors.
// Load fails with an error naming a file, or gives a model whose every weight is finite, whose
// tensors are the config's expected set, and which saved again (Save, F32) loads back with the
// same fingerprint, config and weights; FromTensors on its parts agrees too. A small model then
// runs three frames on the cpu engine: every frame comes out finite (or the chunk fails with the
// documented non-finite INTERNAL), probabilities where the head makes them.
#include <cmath>
#include <cstring>
#include <fstream>

#include "server/engine/engine.h"
#include "server/model/model.h"
#include "tests/fuzz/fuzz_util.h"

namespace ssm {
namespace {

void WriteFile(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), std::streamsize(size));
  out.close();
  FUZZ_CHECK(out.good(), "cannot write {}", path);
}

void CheckModel(const Model& m) {
  const std::vector<TensorSpec> specs = m.config().ExpectedTensors();
  FUZZ_CHECK(m.tensors().size() == specs.size(), "{} tensors for {} expected", m.tensors().size(),
             specs.size());
  int64_t params = 0;
  for (const TensorSpec& spec : specs) {
    const Tensor& t = m.tensor(spec.name);
    FUZZ_CHECK(t.shape == spec.shape, "tensor '{}'", spec.name);
    FUZZ_CHECK(int64_t(t.data.size()) == t.numel());
    for (float v : t.data) FUZZ_CHECK(std::isfinite(v), "tensor '{}' holds {}", spec.name, v);
    params += t.numel();
  }
  FUZZ_CHECK(m.parameter_count() == params);
  FUZZ_CHECK(m.state_bytes_per_stream() > 0 && m.flops_per_frame() > 0);
}

void CheckSameModel(const Model& a, const Model& b, const char* what) {
  FUZZ_CHECK(DigestsEqual(a.fingerprint(), b.fingerprint()), "{}: another fingerprint", what);
  FUZZ_CHECK(a.config().ToJson() == b.config().ToJson(), "{}: another config", what);
  FUZZ_CHECK(a.tensors().size() == b.tensors().size(), "{}", what);
  for (const auto& [name, t] : a.tensors()) {
    const Tensor& u = b.tensor(name);
    FUZZ_CHECK(t.shape == u.shape && t.data.size() == u.data.size(), "{}: tensor '{}'", what, name);
    FUZZ_CHECK(t.data.empty() || std::memcmp(t.data.data(), u.data.data(), 4 * t.data.size()) == 0,
               "{}: tensor '{}' values", what, name);
  }
}

// A model small enough to run cheaply: its weights, and a log-mel plan of at most 2^20 weights.
bool Cheap(const ModelConfig& c, int64_t parameters) {
  const FrontendConfig& f = c.frontend;
  return parameters <= (1 << 16) && c.n_layer <= 8 &&
         (!f.is_log_mel() || (f.n_fft <= 4096 && f.win_length <= 4096 && f.hop_length <= 4096 &&
                              int64_t(f.n_mels) * (f.n_fft / 2 + 1) <= (1 << 20)));
}

// Three frames through an engine on the model: each frame comes out, and a chunk that succeeds
// has finite outputs, probabilities for a softmax or sigmoid head (softmax rows sum to 1).
void CheckRuns(std::shared_ptr<const Model> model) {
  const ModelConfig& c = model->config();
  EngineOptions options;
  options.threads = 1;
  options.max_streams = 1;
  options.max_batch_frames = 2;  // three frames take two passes
  auto engine = Engine::Create(model, options);
  FUZZ_CHECK(engine.ok(), "a loaded model does not run: {}", engine.status().ToString());
  auto stream = (*engine)->OpenStream();
  FUZZ_CHECK(stream.ok());
  const size_t values = c.frontend.is_log_mel()
                            ? size_t(c.frontend.win_length) + 2 * size_t(c.frontend.hop_length)
                            : 3 * size_t(c.d_in);
  std::vector<float> input(values);
  for (size_t i = 0; i < values; ++i) input[i] = 0.5f * std::sin(0.37f * float(i));
  StepResult step;
  (*engine)->Step({{*stream, input.data(), input.size()}}, &step);
  const ChunkOutput& out = step.chunks[0];
  if (!out.status.ok()) {  // only the documented non-finite output may fail it
    FUZZ_CHECK(out.status.code() == StatusCode::kInternal, "{}", out.status.ToString());
    return;
  }
  FUZZ_CHECK(out.frames == 3 && step.outputs.size() == 3 * size_t(c.d_out), "{} frames",
             out.frames);
  for (int t = 0; t < 3; ++t) {
    double sum = 0;
    for (int k = 0; k < c.d_out; ++k) {
      const float y = step.outputs[size_t(t) * c.d_out + k];
      FUZZ_CHECK(std::isfinite(y), "output {} of frame {} is {}", k, t, y);
      if (c.head_activation != "none") FUZZ_CHECK(y >= 0 && y <= 1, "a probability of {}", y);
      sum += y;
    }
    // Rounding of a float sum of d_out terms: at most about d_out float epsilons.
    if (c.head_activation == "softmax")
      FUZZ_CHECK(std::abs(sum - 1) < 1e-5 + 1.2e-7 * c.d_out, "softmax row {} sums to {}", t, sum);
  }
}

}  // namespace
}  // namespace ssm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ssm;
  static fuzz::ScratchDir dir("model-dir");
  static const std::string saved = dir.File("saved");
  if (size < 4) return 0;
  uint32_t config_bytes;
  std::memcpy(&config_bytes, data, 4);
  if (config_bytes > size - 4) return 0;
  WriteFile(dir.File(kModelConfigFile), data + 4, config_bytes);
  WriteFile(dir.File(kModelWeightsFile), data + 4 + config_bytes, size - 4 - config_bytes);

  auto model = Model::Load(dir.path());
  if (!model.ok()) {
    const Status status = model.status();
    FUZZ_CHECK(status.code() == StatusCode::kInvalidArgument, "{}", status.ToString());
    FUZZ_CHECK(status.message().find(kModelConfigFile) != std::string::npos ||
                   status.message().find(kModelWeightsFile) != std::string::npos,
               "the error names no file: {}", status.message());
    return 0;
  }
  CheckModel(**model);
  const Status written = (*model)->Save(saved);
  FUZZ_CHECK(written.ok(), "{}", written.ToString());
  auto again = Model::Load(saved);
  FUZZ_CHECK(again.ok(), "the saved model does not load: {}", again.status().ToString());
  CheckSameModel(**model, **again, "saved and loaded");
  auto rebuilt = Model::FromTensors((*model)->config(), (*model)->tensors());
  FUZZ_CHECK(rebuilt.ok(), "{}", rebuilt.status().ToString());
  CheckSameModel(**model, **rebuilt, "FromTensors");
  if (Cheap((*model)->config(), (*model)->parameter_count())) CheckRuns(*model);
  return 0;
}
