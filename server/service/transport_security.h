// Transport security of the gRPC port (docs/design.md §8): plain text, TLS, or mutual TLS.
// Certificates come from PEM files that gRPC's file-watcher provider re-reads every
// reload_interval_s: a renewed certificate serves the connections made after it is read, and
// connections already open keep theirs, so a rotation drops nothing.
#pragma once

#include <grpcpp/security/server_credentials.h>

#include <memory>
#include <string>

#include "common/status.h"

namespace ssm {

struct TlsFiles {
  std::string cert;            // --tls-cert: PEM certificate chain, the server's first; "" = no TLS
  std::string key;             // --tls-key: PEM private key of that certificate
  std::string client_ca;       // --tls-client-ca: PEM CA bundle; set: client certificates required
  int reload_interval_s = 10;  // how often the files are re-read

  bool enabled() const { return !cert.empty(); }
};

// Reads the files as the server will (OpenSSL) and says what is wrong, naming the flag: a file
// that cannot be read, no PEM certificate or key in it, a key that does not belong to the
// certificate, a client CA without a certificate. A certificate that has expired or is not yet
// valid is an error too. *summary (optional) describes the certificate for the log.
Status CheckTlsFiles(const TlsFiles& files, std::string* summary = nullptr);

// The credentials of the gRPC port: insecure without a certificate, else TLS (mutual with a
// client CA: a client without a certificate signed by it cannot connect).
std::shared_ptr<grpc::ServerCredentials> ServerCredentialsFor(const TlsFiles& files);

}  // namespace ssm
