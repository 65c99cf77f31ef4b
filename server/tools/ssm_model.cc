// ssm-model: create (random weights), inspect and validate ssmserve/v1 model directories.
//
//   ssm-model random --preset bench-m --seed 1 --out DIR [--force]
//   ssm-model random --config config.json --seed 1 --out DIR
//   ssm-model inspect DIR
//   ssm-model validate DIR
//
// Exit codes: 0 success, 1 error (message on stderr), 2 usage error.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <string>

#include "server/model/model.h"
#include "server/model/model_config.h"
#include "server/model/random_model.h"
#include "server/model/safetensors.h"

namespace ssm {
namespace {

namespace fs = std::filesystem;

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

int Fail(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.ToString().c_str());
  return kExitError;
}

// 1234567 -> "1,234,567".
std::string Grouped(int64_t n) {
  std::string digits = std::to_string(n);
  for (int i = static_cast<int>(digits.size()) - 3; i > (n < 0 ? 1 : 0); i -= 3) {
    digits.insert(i, ",");
  }
  return digits;
}

struct RandomArgs {
  std::string preset;
  std::string config_path;
  uint64_t seed = 0;
  std::string out_dir;
  bool force = false;
};

int RunRandom(const RandomArgs& args) {
  ModelConfig config;
  if (!args.preset.empty()) {
    StatusOr<ModelConfig> preset = ModelConfig::Preset(args.preset);
    if (!preset.ok()) {
      std::fprintf(stderr, "error: --preset: %s\n", preset.status().message().c_str());
      return kExitUsage;
    }
    config = *preset;
  } else {
    StatusOr<ModelConfig> loaded = ModelConfig::FromFile(args.config_path);
    if (!loaded.ok()) return Fail(loaded.status());
    config = *loaded;
  }

  std::error_code ec;
  if (fs::exists(args.out_dir, ec)) {
    if (!fs::is_directory(args.out_dir, ec)) {
      return Fail(InvalidArgumentError(args.out_dir + ": exists and is not a directory"));
    }
    if (!fs::is_empty(args.out_dir, ec) && !args.force) {
      return Fail(FailedPreconditionError(
          args.out_dir + ": directory is not empty; pass --force to overwrite the model in it"));
    }
  }

  StatusOr<std::shared_ptr<const Model>> model = MakeRandomModel(config, args.seed);
  if (!model.ok()) return Fail(model.status());
  Status saved = (*model)->Save(args.out_dir);
  if (!saved.ok()) return Fail(saved);
  std::printf("wrote %s: %s parameters, seed %llu\n  %s\n", args.out_dir.c_str(),
              Grouped((*model)->parameter_count()).c_str(),
              static_cast<unsigned long long>(args.seed), config.ToString().c_str());
  return 0;
}

int RunInspect(const std::string& dir) {
  StatusOr<std::shared_ptr<const Model>> loaded = Model::Load(dir);
  if (!loaded.ok()) return Fail(loaded.status());
  const Model& model = **loaded;
  const ModelConfig& c = model.config();
  // Re-open the header only to show the dtypes as stored (the model holds float32).
  StatusOr<std::unique_ptr<SafetensorsFile>> file =
      SafetensorsFile::Open((fs::path(dir) / kModelWeightsFile).string());
  if (!file.ok()) return Fail(file.status());

  const double gflop_per_frame = model.flops_per_frame() / 1e9;
  std::printf("model           %s\n", dir.c_str());
  std::printf("config          %s\n", c.ToString().c_str());
  std::printf("frame rate      %g frames/s\n", c.frame_rate());
  std::printf("parameters      %s (%.1f MiB as float32)\n",
              Grouped(model.parameter_count()).c_str(), model.parameter_count() * 4.0 / (1 << 20));
  std::printf("state/stream    %s bytes\n", Grouped(model.state_bytes_per_stream()).c_str());
  std::printf("compute         %.6f GFLOP/frame, %.4f GFLOP per real-time second\n",
              gflop_per_frame, gflop_per_frame * c.frame_rate());
  std::printf("tensors         %zu (in layer order)\n", (*file)->tensors().size());
  for (const TensorSpec& spec : c.ExpectedTensors()) {
    const TensorInfo* t = (*file)->Find(spec.name);  // present: Load checked the set
    std::printf("  %-44s %-5s [%s]\n", t->name.c_str(), DTypeName(t->dtype),
                fmt::format("{}", fmt::join(t->shape, ", ")).c_str());
  }
  return 0;
}

int RunValidate(const std::string& dir) {
  StatusOr<std::shared_ptr<const Model>> loaded = Model::Load(dir);
  if (!loaded.ok()) return Fail(loaded.status());
  const Model& model = **loaded;
  std::printf("OK: %s: %s parameters in %zu tensors, all finite; %s\n", dir.c_str(),
              Grouped(model.parameter_count()).c_str(), model.tensors().size(),
              model.config().ToString().c_str());
  return 0;
}

int Main(int argc, char** argv) {
  CLI::App app{
      "Create, inspect and validate ssmserve/v1 model directories "
      "(config.json + model.safetensors).",
      "ssm-model"};
  app.require_subcommand(1);

  RandomArgs random_args;
  CLI::App* random = app.add_subcommand(
      "random", "Write a model with random weights (each layer type's own initialisation).");
  CLI::Option_group* source = random->add_option_group("source", "Where the config comes from");
  source->add_option(
      "--preset", random_args.preset,
      "Benchmark preset: bench-s, bench-m, bench-l (Mamba-1 layers), or the same sizes with "
      "another layer type's defaults: bench-m-mamba2, bench-m-linear_attn, bench-m-retnet, "
      "bench-m-gla (and -s, -l)");
  source->add_option("--config", random_args.config_path, "A config.json to give random weights")
      ->check(CLI::ExistingFile);
  source->require_option(1);
  random->add_option("--seed", random_args.seed, "Random seed (same seed, same weights)")
      ->capture_default_str();
  random->add_option("--out", random_args.out_dir, "Model directory to write")->required();
  random->add_flag("--force", random_args.force, "Overwrite a model in a non-empty --out");

  std::string inspect_dir;
  CLI::App* inspect = app.add_subcommand(
      "inspect", "Print the config, size, state and compute per frame, and the tensors.");
  inspect->add_option("dir", inspect_dir, "Model directory")->required();

  std::string validate_dir;
  CLI::App* validate =
      app.add_subcommand("validate", "Load the model fully; print OK or the error (exit 0/1).");
  validate->add_option("dir", validate_dir, "Model directory")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kExitUsage;  // --help exits 0
  }
  if (random->parsed()) return RunRandom(random_args);
  if (inspect->parsed()) return RunInspect(inspect_dir);
  return RunValidate(validate_dir);
}

}  // namespace
}  // namespace ssm

int main(int argc, char** argv) { return ssm::Main(argc, argv); }
