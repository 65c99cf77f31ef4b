// Command-line flags the client tools share, registered with the same names, help and checks.
#pragma once

#include <CLI/CLI.hpp>
#include <fstream>
#include <sstream>
#include <string>

#include "clients/lib/ssm_client.h"

namespace ssm::tools {

// --server (required), --model, --format, --connect-timeout-s, and how to reach a secured server:
// --tls, --tls-ca, --tls-cert, --tls-key, --tls-server-name, --api-key-file and --api-key (or
// the environment variable SSM_API_KEY).
inline void AddServerFlags(CLI::App& app, std::string* server, std::string* model,
                           std::string* format, client::ConnectOptions* connect) {
  double* connect_timeout_s = &connect->connect_timeout_s;
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
  client::TlsClientOptions* tls = &connect->tls;
  app.add_flag("--tls", tls->enabled,
               "Connect with TLS, trusting the system's CAs (implied by --tls-ca and --tls-cert)");
  app.add_option("--tls-ca", tls->ca_file,
                 "PEM CA certificates the server's certificate must chain to")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", tls->cert_file,
                 "PEM client certificate, for a server that requires one (mutual TLS)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", tls->key_file, "PEM private key of --tls-cert")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-server-name", tls->server_name,
                 "Name to check the server's certificate against (default: the --server host)");
  app.add_option("--api-key", connect->api_key,
                 "API key (sent as authorization: Bearer); prefer SSM_API_KEY or --api-key-file, "
                 "since a command line is visible to other users of the machine")
      ->envname("SSM_API_KEY");
  app.add_option_function<std::string>(
         "--api-key-file",
         [connect](const std::string& path) {
           std::ifstream in(path);
           std::stringstream text;
           text << in.rdbuf();
           std::string key = text.str();
           while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' '))
             key.pop_back();
           if (!in || key.empty())
             throw CLI::ValidationError("--api-key-file", path + ": cannot read a key from it");
           connect->api_key = key;
         },
         "File holding the API key (its first line)")
      ->check(CLI::ExistingFile);
}

// --raw-rate: the sample rate of headerless audio inputs.
inline void AddRawRateFlag(CLI::App& app, int* raw_rate) {
  app.add_option("--raw-rate", *raw_rate,
                 "Sample rate (Hz) of .raw and .npy audio inputs (default: the model's)")
      ->check(CLI::PositiveNumber);
}

}  // namespace ssm::tools
