// ssm-run: local inference without a server, offline or as a simulated stream.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>

#include "common/io/model_input.h"
#include "common/io/npy.h"
#include "server/engine/engine.h"
#include "server/tools/tool_common.h"

namespace ssm {
namespace {

struct Args {
  std::string model_dir, input, output, mode = "offline", device = "auto";
  int64_t chunk = 0;  // stream mode: input rows (frame input) or samples (audio) per chunk
  int threads = 0;
  int segment_frames = 1024;
  bool parallel_form = false;
};

int Run(const Args& args) {
  auto model = Model::Load(args.model_dir);
  if (!model.ok()) return tools::Fail(model.status());
  const ModelConfig& config = (*model)->config();
  InputSpec spec;
  spec.audio = config.frontend.is_log_mel();
  spec.d_in = config.d_in;
  spec.sample_rate = config.frontend.sample_rate;
  auto input = ReadModelInput(args.input, spec);
  if (!input.ok()) return tools::Fail(input.status());
  if (input->resampled)
    std::fprintf(stderr, "%s: resampled from %d Hz to the model's %d Hz\n", args.input.c_str(),
                 input->file_rate, config.frontend.sample_rate);

  EngineOptions options;
  options.backend = ResolveDevice(args.device);
  options.threads = args.threads;
  options.max_streams = 1;
  auto engine = Engine::Create(*model, options);
  if (!engine.ok()) return tools::Fail(engine.status());
  Engine& e = **engine;
  const std::vector<float>& values = input->values;
  const int64_t values_per_row = e.frontend().takes_samples() ? 1 : config.d_in;

  std::vector<float> outputs;
  tools::ProgressBar progress("ssm-run", double(values.size()));
  if (args.mode == "offline") {
    SpanSource source(values.data(), values.size());
    OfflineOptions offline;
    offline.segment_frames = args.segment_frames;
    offline.parallel_form = args.parallel_form;
    const double values_per_frame =
        e.frontend().takes_samples() ? config.frontend.hop_length : config.d_in;
    offline.progress = [&](const std::vector<int64_t>& done) {
      progress.Update(double(done[0]) * values_per_frame);
    };
    auto result = e.RunOffline({&source}, offline);
    if (!result.ok()) return tools::Fail(result.status());
    outputs = std::move((*result)[0]);
  } else {
    const size_t chunk_values = size_t(args.chunk) * values_per_row;
    auto stream = e.OpenStream();
    if (!stream.ok()) return tools::Fail(stream.status());
    StepResult step;
    for (size_t pos = 0; pos < values.size(); pos += chunk_values) {
      const size_t n = std::min(chunk_values, values.size() - pos);
      e.Step({{*stream, values.data() + pos, n}}, &step);
      const ChunkOutput& co = step.chunks[0];
      if (!co.status.ok())
        return tools::Fail(co.status.WithContext(fmt::format("input value {}", pos)));
      outputs.insert(outputs.end(), step.outputs.begin(), step.outputs.end());
      progress.Update(double(pos + n));
    }
    e.CloseStream(*stream);
  }
  progress.Finish();
  const int64_t frames = int64_t(outputs.size()) / config.d_out;
  Status written = WriteNpy(args.output, {frames, int64_t(config.d_out)}, outputs.data());
  if (!written.ok()) return tools::Fail(written);
  std::fprintf(stderr, "%s: %lld frames x %d outputs -> %s\n", args.input.c_str(),
               static_cast<long long>(frames), config.d_out, args.output.c_str());
  return 0;
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) {
  ssm::Args args;
  CLI::App app{
      "Runs an ssmserve model on one input file without a server and writes the outputs "
      "as a (frames, d_out) float32 .npy."};
  app.add_option("--model", args.model_dir, "Model directory (config.json + model.safetensors)")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--input", args.input,
                 "Input: WAV/FLAC (log_mel models), or .npy float32 (T, d_in) frames "
                 "(frontend none) / (n,) samples")
      ->required()
      ->check(CLI::ExistingFile);
  app.add_option("--output", args.output, "Output .npy path")->required();
  app.add_option("--mode", args.mode, "offline: whole file in segments; stream: chunk by chunk")
      ->check(CLI::IsMember({"offline", "stream"}))
      ->capture_default_str();
  app.add_option("--chunk", args.chunk,
                 "Stream mode: chunk length in input rows (frame input) or samples (audio)")
      ->check(CLI::PositiveNumber);
  app.add_option("--device", args.device,
                 "auto (cuda when a GPU is present, else cpu), cpu, cuda, or reference (the slow "
                 "scalar backend used as the truth in tests)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda", "reference"}))
      ->capture_default_str();
  app.add_option("--threads", args.threads, "Compute threads (0 = one per core)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--segment-frames", args.segment_frames, "Offline mode: frames per segment")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--parallel-form", args.parallel_form,
               "Offline mode: run layers in their parallel form where they have one (Mamba-2's "
               "chunked SSD form; equal to the recurrence within 1e-5 relative) instead of the "
               "recurrence that streaming runs");
  CLI11_PARSE(app, argc, argv);
  if (args.parallel_form && args.mode != "offline") {
    std::fprintf(stderr, "error: --parallel-form applies to --mode offline only\n");
    return 2;
  }
  if (args.mode == "stream" && args.chunk <= 0) {
    std::fprintf(stderr, "error: --mode stream needs --chunk N (N > 0)\n");
    return 2;
  }
  return ssm::Run(args);
}
