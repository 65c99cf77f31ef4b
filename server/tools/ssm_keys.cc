// ssm-keys: makes and checks entries of ssm-server's --auth-keys file (docs/design.md §8).
//   ssm-keys new ID [--models a,b] [--max-streams N] [--max-opens-per-minute N]
//       prints a new secret (once: only its hash is kept) and the line for the keys file
//   ssm-keys cert ID --subject "CN=...,O=..." [...]   a line naming a client certificate
//   ssm-keys hash                                      the line's hash of a secret read on stdin
//   ssm-keys check FILE                                parses a keys file as the server does
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "server/service/api_keys.h"

namespace {

struct Limits {
  std::string models = "*";
  int max_streams = 0, max_opens = 0;
};

void AddLimitFlags(CLI::App* cmd, Limits* limits) {
  cmd->add_option("--models", limits->models,
                  "Comma-separated model names the key may use, or * for every model")
      ->capture_default_str();
  cmd->add_option("--max-streams", limits->max_streams,
                  "Calls open at once (Stream and ProcessFile); 0 = no limit")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
  cmd->add_option("--max-opens-per-minute", limits->max_opens,
                  "Calls opened in any minute; 0 = no limit")
      ->check(CLI::Range(0, 1000000))
      ->capture_default_str();
}

// The entry's line, checked by parsing it back as the server will; exits 2 on a bad field.
int PrintLine(const ssm::KeyEntry& entry, const Limits& limits, FILE* out) {
  const std::string line = entry.id + " " + ssm::CredentialField(entry) + " " + limits.models +
                           " " +
                           (limits.max_streams > 0 ? std::to_string(limits.max_streams) : "-") +
                           " " + (limits.max_opens > 0 ? std::to_string(limits.max_opens) : "-");
  auto parsed = ssm::ParseKeyFile(line, "the new line");
  if (!parsed.ok()) {
    std::fprintf(stderr, "error: %s\n", parsed.status().message().c_str());
    return 2;
  }
  std::fprintf(out, "%s\n", ssm::FormatKeyLine(parsed->front()).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Makes and checks entries of ssm-server's --auth-keys file"};
  app.require_subcommand(1);
  std::string id, subject, file;
  Limits limits;

  CLI::App* make = app.add_subcommand(
      "new", "Print a new secret (shown once; give it to the client) and its keys-file line");
  make->add_option("id", id, "Key id (letters, digits, . _ -), named in logs and metrics")
      ->required();
  AddLimitFlags(make, &limits);

  CLI::App* cert = app.add_subcommand(
      "cert", "Print a keys-file line naming a client certificate's subject (mutual TLS)");
  cert->add_option("id", id, "Key id")->required();
  cert->add_option("--subject", subject,
                   "The certificate's subject, RFC 2253, e.g. \"CN=camera-7,O=Example\" "
                   "(openssl x509 -noout -subject -nameopt RFC2253 -in client.pem)")
      ->required();
  AddLimitFlags(cert, &limits);

  CLI::App* hash = app.add_subcommand(
      "hash", "Print the sha256: credential of a secret read from stdin (one line)");
  CLI::App* check = app.add_subcommand("check", "Parse a keys file as ssm-server does");
  check->add_option("file", file, "The keys file")->required()->check(CLI::ExistingFile);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (make->parsed()) {
    auto secret = ssm::NewSecret();
    if (!secret.ok()) {
      std::fprintf(stderr, "error: %s\n", secret.status().message().c_str());
      return 1;
    }
    ssm::KeyEntry entry;
    entry.id = id;
    entry.secret_hash = ssm::SecretHash(*secret);
    std::fprintf(stderr,
                 "The secret below is shown once; the server keeps only its hash. Give it to "
                 "the client (it sends \"authorization: Bearer SECRET\"; the tools read it from "
                 "SSM_API_KEY or --api-key-file), then add the line to the keys file.\n");
    std::printf("secret: %s\n", secret->c_str());
    std::printf("line:   ");
    return PrintLine(entry, limits, stdout);
  }
  if (cert->parsed()) {
    ssm::KeyEntry entry;
    entry.id = id;
    entry.kind = ssm::KeyEntry::Kind::kCertSubject;
    entry.subject = subject;
    return PrintLine(entry, limits, stdout);
  }
  if (hash->parsed()) {
    std::string secret;
    std::getline(std::cin, secret);
    while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
    if (secret.empty()) {
      std::fprintf(stderr, "error: no secret on stdin\n");
      return 2;
    }
    std::printf("sha256:%s\n", ssm::Hex(ssm::SecretHash(secret)).c_str());
    return 0;
  }
  std::ifstream in(file, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  auto parsed = ssm::ParseKeyFile(text.str(), file);
  if (!parsed.ok()) {
    std::fprintf(stderr, "error: %s\n", parsed.status().message().c_str());
    return 1;
  }
  std::printf("%s: %zu keys, valid\n", file.c_str(), parsed->size());
  for (const ssm::KeyEntry& e : *parsed)
    std::printf(
        "  %s: %s, %s, max streams %s, opens per minute %s\n", e.id.c_str(),
        e.kind == ssm::KeyEntry::Kind::kSecret ? "secret" : ("certificate " + e.subject).c_str(),
        e.ModelsText().c_str(), e.max_streams ? std::to_string(e.max_streams).c_str() : "unlimited",
        e.max_opens_per_minute ? std::to_string(e.max_opens_per_minute).c_str() : "unlimited");
  return 0;
}
