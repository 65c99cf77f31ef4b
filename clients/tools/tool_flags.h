// Command-line flags the client tools share, registered with the same names, help and checks.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace ssm::tools {

// --server (required), --model, --format and --connect-timeout-s.
inline void AddServerFlags(CLI::App& app, std::string* server, std::string* model,
                           std::string* format, double* connect_timeout_s) {
  app.add_option("--server", *server, "Server address HOST:PORT")->required();
  app.add_option("--model", *model, "Model name (default: the server's default model)");
  app.add_option("--format", *format,
                 "Audio wire format: s16, f32, or auto (s16 when that is lossless, else f32)")
      ->check(CLI::IsMember({"auto", "s16", "f32"}))
      ->capture_default_str();
  app.add_option("--connect-timeout-s", *connect_timeout_s,
                 "Give up if the server is unreachable for this long")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

// --raw-rate: the sample rate of headerless audio inputs.
inline void AddRawRateFlag(CLI::App& app, int* raw_rate) {
  app.add_option("--raw-rate", *raw_rate,
                 "Sample rate (Hz) of .raw and .npy audio inputs (default: the model's)")
      ->check(CLI::PositiveNumber);
}

}  // namespace ssm::tools
